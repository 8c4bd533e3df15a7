//! Option structs declared from one list ([`declare_options!`]): the struct, its defaults, the
//! names in order, and setting an option by name from a caller's value ([`Given`]), so that a
//! binding builds the struct from keyword arguments without restating a field.
//!
//! Setting checks the value's type and what the field's type can hold (a count is a
//! non-negative integer, a score a finite float32); the rules between values are each struct's
//! own `validate`.

use crate::choice::Choice;
use crate::error::{Error, Result};

/// A caller's value, as the binding read it, before it meets the option's type.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    /// An integer of any size the caller's language has (wider ones arrive as [`Value::Other`]).
    Int(i128),
    Float(f64),
    Text(String),
    /// Anything else (a list, an object...).
    Other,
}

/// One option's value and how to quote it in a refusal.
#[derive(Clone, Debug)]
pub struct Given {
    pub value: Value,
    /// The value's type, in the caller's terms (`float`, `str`, `numpy.int64`...).
    pub type_name: String,
    /// The value as the caller would write it (`2.0`, `'l2'`).
    pub repr: String,
}

impl Given {
    /// A value given from Rust (tests, examples): quoted by its Rust debug form.
    pub fn new(value: Value) -> Self {
        let (type_name, repr) = match &value {
            Value::None => ("None", "None".to_string()),
            Value::Bool(b) => ("bool", b.to_string()),
            Value::Int(i) => ("int", i.to_string()),
            Value::Float(f) => ("float", format!("{f:?}")),
            Value::Text(t) => ("str", format!("{t:?}")),
            Value::Other => ("object", "?".to_string()),
        };
        Given {
            value,
            type_name: type_name.to_string(),
            repr,
        }
    }

    fn shown(&self) -> String {
        format!("{} {}", self.type_name, self.repr)
    }
}

/// A field type an option can be set to from a [`Given`] value.
pub trait FromGiven: Sized {
    fn from_given(name: &str, given: &Given) -> Result<Self>;
}

impl<T: FromGiven> FromGiven for Option<T> {
    fn from_given(name: &str, given: &Given) -> Result<Self> {
        match given.value {
            Value::None => Ok(None),
            _ => T::from_given(name, given).map(Some),
        }
    }
}

fn integer(name: &str, given: &Given) -> Result<i128> {
    match given.value {
        Value::Int(i) => Ok(i),
        Value::Other if given.type_name == "int" => Err(Error::invalid(format!(
            "{name} is out of range, got {}",
            given.repr
        ))),
        _ => Err(Error::InvalidType(format!(
            "{name} must be an integer, got {}",
            given.shown()
        ))),
    }
}

impl FromGiven for usize {
    fn from_given(name: &str, given: &Given) -> Result<Self> {
        let i = integer(name, given)?;
        if i < 0 {
            return Err(Error::invalid(format!(
                "{name} must be non-negative, got {i}"
            )));
        }
        usize::try_from(i)
            .map_err(|_| Error::invalid(format!("{name} must be at most {}, got {i}", usize::MAX)))
    }
}

impl FromGiven for u64 {
    fn from_given(name: &str, given: &Given) -> Result<Self> {
        let i = integer(name, given)?;
        u64::try_from(i)
            .map_err(|_| Error::invalid(format!("{name} must be in [0, 2**64), got {i}")))
    }
}

impl FromGiven for f32 {
    fn from_given(name: &str, given: &Given) -> Result<Self> {
        let wide = match given.value {
            Value::Float(f) => f,
            Value::Int(i) => i as f64,
            _ => {
                return Err(Error::InvalidType(format!(
                    "{name} must be a number, got {}",
                    given.shown()
                )))
            }
        };
        if !wide.is_finite() {
            return Err(Error::invalid(format!(
                "{name} must be a finite number, got {}",
                given.repr
            )));
        }
        let narrow = wide as f32;
        if narrow.is_infinite() {
            return Err(Error::invalid(format!(
                "{name} is past the float32 range, got {}",
                given.repr
            )));
        }
        Ok(narrow)
    }
}

/// String options ([`Choice`] enums) by their names and aliases.
impl<T: Choice> FromGiven for T {
    fn from_given(_name: &str, given: &Given) -> Result<Self> {
        match &given.value {
            Value::Text(text) => T::parse(text, &given.repr),
            _ => Err(T::not_a_string(&given.shown())),
        }
    }
}

/// An option's type as a caller sees it: its kind (`int`, `float`, `str`), whether it takes
/// `None`, the names a string option takes, and a value of it as the caller would give it.
pub trait OptionType: FromGiven {
    const KIND: &'static str;
    const OPTIONAL: bool = false;
    fn to_value(&self) -> Value;
    fn choices() -> Vec<&'static str> {
        Vec::new()
    }
}

impl OptionType for usize {
    const KIND: &'static str = "int";
    fn to_value(&self) -> Value {
        Value::Int(*self as i128)
    }
}

impl OptionType for u64 {
    const KIND: &'static str = "int";
    fn to_value(&self) -> Value {
        Value::Int(i128::from(*self))
    }
}

impl OptionType for f32 {
    const KIND: &'static str = "float";
    fn to_value(&self) -> Value {
        Value::Float(f64::from(*self))
    }
}

impl<T: Choice> OptionType for T {
    const KIND: &'static str = "str";
    fn to_value(&self) -> Value {
        Value::Text(self.name().to_string())
    }
    fn choices() -> Vec<&'static str> {
        T::NAMES.iter().map(|(name, _)| *name).collect()
    }
}

impl<T: OptionType> OptionType for Option<T> {
    const KIND: &'static str = T::KIND;
    const OPTIONAL: bool = true;
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::None, T::to_value)
    }
    fn choices() -> Vec<&'static str> {
        T::choices()
    }
}

/// One row of an options struct's table: what a binding needs to offer the option (a keyword
/// argument, a command-line flag) without restating it.
#[derive(Clone, Debug, PartialEq)]
pub struct OptionSpec {
    pub name: &'static str,
    /// `int`, `float` or `str`.
    pub kind: &'static str,
    /// Whether `None` is a value of it.
    pub optional: bool,
    /// A string option's canonical names (its aliases are accepted too).
    pub choices: Vec<&'static str>,
    pub default: Value,
    /// The field's doc comment, on one line.
    pub help: String,
}

/// A field's doc comment lines as one line of help.
pub fn help_text(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Declares an options struct from one list of `field: Type = default`, each with a doc
/// comment (its help): the struct with public fields, `Default`, `NAMES` (the fields in
/// order), `set(name, given)` and `table()` (name, type, default and help of each). Fields
/// after the `;` are tuning knobs: in the struct and its default, never set by name nor
/// listed.
macro_rules! declare_options {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[doc = $doc:literal])+ $field:ident: $ty:ty = $default:expr,)*
            ;
            $($(#[doc = $kdoc:literal])* $knob:ident: $kty:ty = $kdefault:expr,)*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[doc = $doc])+ pub $field: $ty,)*
            $($(#[doc = $kdoc])* pub $knob: $kty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* $($knob: $kdefault,)* }
            }
        }

        impl $name {
            /// The options' names, in the order they are declared.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Sets the option `name` from a caller's value, checking that the value fits the
            /// option's type; the rules between options are checked by `validate`.
            pub fn set(&mut self, name: &str, given: &$crate::options::Given) -> $crate::Result<()> {
                $(
                    if name == stringify!($field) {
                        self.$field = $crate::options::FromGiven::from_given(name, given)?;
                        return Ok(());
                    }
                )*
                Err($crate::Error::InvalidType(format!(
                    "{} has no option {name:?}; the options are {}",
                    stringify!($name),
                    Self::NAMES.join(", ")
                )))
            }

            /// Every option's name, type, default and help, in the order they are declared.
            pub fn table() -> Vec<$crate::options::OptionSpec> {
                let defaults = Self::default();
                vec![$(
                    $crate::options::OptionSpec {
                        name: stringify!($field),
                        kind: <$ty as $crate::options::OptionType>::KIND,
                        optional: <$ty as $crate::options::OptionType>::OPTIONAL,
                        choices: <$ty as $crate::options::OptionType>::choices(),
                        default: $crate::options::OptionType::to_value(&defaults.$field),
                        help: $crate::options::help_text(&[$($doc),+]),
                    },
                )*]
            }
        }
    };
}

pub(crate) use declare_options;
