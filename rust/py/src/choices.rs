//! String options (`metric`, `sampling_strategy`, `init`, `weighting`) parsed once, as PyO3
//! extracts the argument, into the core's enums (polars' `Wrap<T>: FromPyObject`), with one
//! wording for every refusal: "metric must be 'dot' or 'cosine' (aliases: 'ip', ...), got 'l2'".

use negmine_core::batches::Weighting;
use negmine_core::kmeans::{Init, KMeansMetric};
use negmine_core::Metric;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors::{InvalidArgumentError, InvalidTypeError};

/// A core enum parsed from its Python name.
#[derive(Clone, Copy)]
pub struct Wrap<T>(pub T);

/// A core enum that Python spells as a string.
pub trait Choice: Copy + PartialEq + 'static {
    /// The argument's name, for messages.
    const ARGUMENT: &'static str;
    /// The canonical names, each with its value.
    const NAMES: &'static [(&'static str, Self)];
    /// Other documented spellings.
    const ALIASES: &'static [(&'static str, Self)] = &[];

    /// The canonical name of `self`.
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(name, _)| name)
    }
}

/// `'a' or 'b'`, `one of 'a', 'b' or 'c'`.
fn listing<T>(names: &[(&str, T)]) -> String {
    let quoted: Vec<String> = names.iter().map(|(n, _)| format!("'{n}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if rest.len() >= 2 => format!("one of {} or {last}", rest.join(", ")),
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest[0]),
        _ => quoted.join(""),
    }
}

impl<'py, T: Choice> FromPyObject<'_, 'py> for Wrap<T> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let name = T::ARGUMENT;
        let Ok(text) = obj.cast::<PyString>() else {
            return Err(InvalidTypeError::new_err(format!(
                "{name} must be a string, {}; got {} {}",
                listing(T::NAMES),
                obj.get_type().name()?,
                obj.repr()?
            )));
        };
        let text = text.to_cow()?;
        if let Some((_, value)) = T::NAMES.iter().chain(T::ALIASES).find(|(n, _)| *n == text) {
            return Ok(Wrap(*value));
        }
        let aliases = if T::ALIASES.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = T::ALIASES.iter().map(|(n, _)| format!("'{n}'")).collect();
            format!(" (aliases: {})", quoted.join(", "))
        };
        Err(InvalidArgumentError::new_err(format!(
            "{name} must be {}{aliases}, got {}",
            listing(T::NAMES),
            obj.repr()?
        )))
    }
}

impl Choice for Metric {
    const ARGUMENT: &'static str = "metric";
    const NAMES: &'static [(&'static str, Self)] =
        &[("dot", Metric::Dot), ("cosine", Metric::Cosine)];
    // faiss' `ip`, the short `cos`.
    const ALIASES: &'static [(&'static str, Self)] = &[
        ("ip", Metric::Dot),
        ("inner_product", Metric::Dot),
        ("cos", Metric::Cosine),
    ];
}

/// `mine`'s `sampling_strategy`; SimANS takes its parameters from their own arguments.
#[derive(Clone, Copy, PartialEq)]
pub enum Strategy {
    Top,
    Random,
    Simans,
}

impl Choice for Strategy {
    const ARGUMENT: &'static str = "sampling_strategy";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("top", Strategy::Top),
        ("random", Strategy::Random),
        ("simans", Strategy::Simans),
    ];
}

impl Choice for KMeansMetric {
    const ARGUMENT: &'static str = "metric";
    const NAMES: &'static [(&'static str, Self)] =
        &[("cosine", KMeansMetric::Cosine), ("l2", KMeansMetric::L2)];
}

impl Choice for Init {
    const ARGUMENT: &'static str = "init";
    const NAMES: &'static [(&'static str, Self)] =
        &[("k-means++", Init::PlusPlus), ("random", Init::Random)];
}

impl Choice for Weighting {
    const ARGUMENT: &'static str = "weighting";
    const NAMES: &'static [(&'static str, Self)] =
        &[("uniform", Weighting::Uniform), ("size", Weighting::Size)];
}
