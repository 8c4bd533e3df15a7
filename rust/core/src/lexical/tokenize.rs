//! The tokenizer of the lexical index: a plain Unicode word splitter with lowercasing.

/// The tokens of `text`: maximal runs of characters for which `char::is_alphanumeric` holds
/// (Unicode `Alphabetic` or `Numeric`), each lowercased by `str::to_lowercase` (full Unicode
/// case mapping: `"Straße"` stays `"straße"`, `"İ"` becomes `"i̇"`).
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::tokens;

    fn all(text: &str) -> Vec<String> {
        tokens(text).collect()
    }

    #[test]
    fn splits_on_non_alphanumerics_and_lowercases() {
        assert_eq!(
            all("Hello, World! x2 a_b"),
            ["hello", "world", "x2", "a", "b"]
        );
        assert_eq!(
            all("  ÉCOLE naïve Straße 東京 ٣"),
            ["école", "naïve", "straße", "東京", "٣"]
        );
        assert!(all(" .,;- ").is_empty());
    }
}
