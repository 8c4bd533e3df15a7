//! Options set by name from a caller's values (`declare_options!`): each field's type checked
//! with an error naming the option, the rules between options left to `validate`.

use negmine_core::choice::Choice;
use negmine_core::mine::{MineOptions, Sampling};
use negmine_core::options::{Given, Value};
use negmine_core::{Error, Metric};

fn set(name: &str, value: Value) -> Result<MineOptions, Error> {
    let mut opts = MineOptions::default();
    opts.set(name, &Given::new(value))?;
    Ok(opts)
}

fn refused(result: Result<MineOptions, Error>, type_error: bool, needle: &str) {
    match result {
        Err(Error::InvalidType(m)) if type_error => assert!(m.contains(needle), "{m}"),
        Err(Error::InvalidArgument(m)) if !type_error => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a refusal naming {needle}, got {other:?}"),
    }
}

#[test]
fn every_declared_option_can_be_set_by_name() {
    let opts = MineOptions::default();
    assert_eq!(MineOptions::NAMES.len(), 16);
    assert_eq!(MineOptions::NAMES[0], "num_negatives");
    for name in MineOptions::NAMES {
        let value = match *name {
            "metric" => Value::Text("ip".into()),
            "sampling_strategy" => Value::Text("simans".into()),
            "simans_a" | "simans_b" => Value::Float(0.5),
            _ => Value::Int(7),
        };
        let mut o = opts.clone();
        o.set(name, &Given::new(value)).unwrap();
    }
    let o = set("metric", Value::Text("ip".into())).unwrap();
    assert_eq!(o.metric, Metric::Dot);
    let o = set("sampling_strategy", Value::Text("random".into())).unwrap();
    assert_eq!(o.sampling_strategy, Sampling::Random);
    assert_eq!(set("range_max", Value::Int(9)).unwrap().range_max, Some(9));
    assert_eq!(set("range_max", Value::None).unwrap().range_max, None);
    assert_eq!(
        set("max_score", Value::Int(1)).unwrap().max_score,
        Some(1.0)
    );
    assert_eq!(
        set("seed", Value::Int((1 << 64) - 1)).unwrap().seed,
        u64::MAX
    );
}

#[test]
fn a_value_of_the_wrong_type_is_a_type_error_naming_the_option() {
    refused(
        set("num_negatives", Value::Float(2.0)),
        true,
        "num_negatives must be an integer",
    );
    refused(
        set("num_negatives", Value::Bool(true)),
        true,
        "num_negatives",
    );
    refused(set("num_negatives", Value::None), true, "num_negatives");
    refused(
        set("max_score", Value::Text("1".into())),
        true,
        "max_score must be a number",
    );
    refused(set("simans_a", Value::Bool(false)), true, "simans_a");
    refused(
        set("metric", Value::Int(3)),
        true,
        "metric must be a string",
    );
    refused(set("colour", Value::Int(3)), true, "no option \"colour\"");
}

#[test]
fn a_value_the_type_cannot_hold_is_a_value_error_naming_the_option() {
    refused(
        set("range_min", Value::Int(-1)),
        false,
        "range_min must be non-negative",
    );
    refused(
        set("range_min", Value::Int(1 << 64)),
        false,
        "range_min must be at most",
    );
    refused(
        set("seed", Value::Int(-1)),
        false,
        "seed must be in [0, 2**64)",
    );
    refused(set("seed", Value::Int(1 << 64)), false, "seed");
    refused(
        set("max_score", Value::Float(1e39)),
        false,
        "max_score is past the float32 range",
    );
    refused(
        set("max_score", Value::Float(f64::NAN)),
        false,
        "max_score must be a finite",
    );
    refused(
        set("metric", Value::Text("l2".into())),
        false,
        "aliases: 'ip'",
    );
    let big = Given {
        value: Value::Other,
        type_name: "int".into(),
        repr: "2**200".into(),
    };
    let mut opts = MineOptions::default();
    refused(
        opts.set("seed", &big).map(|_| opts),
        false,
        "seed is out of range",
    );
}

#[test]
fn the_rules_between_options_are_validate_s() {
    let mut opts = set("simans_b", Value::Float(0.0)).unwrap();
    opts.simans_b = f32::NAN;
    refused(
        opts.validate().map(|_| MineOptions::default()),
        false,
        "simans_b",
    );
    let opts = MineOptions {
        query_dup_threshold: Some(1.5),
        ..MineOptions::default()
    };
    refused(
        opts.validate().map(|_| MineOptions::default()),
        false,
        "query_dup_threshold",
    );
    assert_eq!(Sampling::parse("top", "'top'").unwrap(), Sampling::Top);
}

#[test]
fn the_table_lists_every_option_with_its_default_type_and_help() {
    let table = MineOptions::table();
    let names: Vec<&str> = table.iter().map(|spec| spec.name).collect();
    assert_eq!(names, MineOptions::NAMES);
    let defaults = MineOptions::default();
    for spec in &table {
        assert!(
            !spec.help.is_empty() && !spec.help.contains("  "),
            "{spec:?}"
        );
        // The default, given back by name, is the struct's default.
        let mut opts = MineOptions::default();
        opts.set(spec.name, &Given::new(spec.default.clone()))
            .unwrap();
        assert_eq!(
            format!("{opts:?}"),
            format!("{defaults:?}"),
            "{}",
            spec.name
        );
        let expected_kind = match spec.default {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Text(_) => "str",
            _ => spec.kind,
        };
        assert_eq!(spec.kind, expected_kind, "{}", spec.name);
        assert_eq!(
            spec.optional,
            spec.default == Value::None || spec.name == "record_removed"
        );
    }
    let metric = &table[1];
    assert_eq!(
        (metric.kind, metric.choices.clone()),
        ("str", vec!["dot", "cosine"])
    );
    assert_eq!(metric.default, Value::Text("cosine".into()));
    let range_max = table.iter().find(|s| s.name == "range_max").unwrap();
    assert_eq!((range_max.kind, range_max.optional), ("int", true));
    let simans_a = table.iter().find(|s| s.name == "simans_a").unwrap();
    assert_eq!(simans_a.default, Value::Float(1.0));
}
