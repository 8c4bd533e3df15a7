//! Enums that callers spell as strings (`metric`, `sampling_strategy`, `init`, `weighting`):
//! their names, documented aliases and one wording for every refusal, e.g. "metric must be
//! 'dot' or 'cosine' (aliases: 'ip', 'inner_product', 'cos'), got 'l2'".

use crate::error::{Error, Result};

/// An enum with a string spelling.
pub trait Choice: Copy + PartialEq + 'static {
    /// The option's name, for messages.
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

    /// The value named `text` (a canonical name or an alias); `shown` is how the caller's
    /// value is quoted in the refusal.
    fn parse(text: &str, shown: &str) -> Result<Self> {
        if let Some((_, value)) = Self::NAMES
            .iter()
            .chain(Self::ALIASES)
            .find(|(n, _)| *n == text)
        {
            return Ok(*value);
        }
        let aliases = if Self::ALIASES.is_empty() {
            String::new()
        } else {
            format!(" (aliases: {})", quoted(Self::ALIASES).join(", "))
        };
        Err(Error::invalid(format!(
            "{} must be {}{aliases}, got {shown}",
            Self::ARGUMENT,
            listing::<Self>()
        )))
    }

    /// The refusal of a value that is not a string at all (`shown`: its type and value).
    fn not_a_string(shown: &str) -> Error {
        Error::InvalidType(format!(
            "{} must be a string, {}; got {shown}",
            Self::ARGUMENT,
            listing::<Self>()
        ))
    }
}

fn quoted<T>(names: &[(&str, T)]) -> Vec<String> {
    names.iter().map(|(n, _)| format!("'{n}'")).collect()
}

/// `'a' or 'b'`, `one of 'a', 'b' or 'c'`.
fn listing<T: Choice>() -> String {
    let quoted = quoted(T::NAMES);
    match quoted.split_last() {
        Some((last, rest)) if rest.len() >= 2 => format!("one of {} or {last}", rest.join(", ")),
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest[0]),
        _ => quoted.join(""),
    }
}
