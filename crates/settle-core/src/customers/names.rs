//! Names keep the person's own characters (Unicode NFC) for display and
//! correspondence, and get a separate ASCII transliteration that screening
//! compares (sanctions lists are published in Latin script).

use super::{Invalid, clean_text};

/// Longest name part, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// A name part, cleaned: trimmed, NFC, no control characters, 1–100 characters,
/// with at least one letter.
pub fn parse_name(value: &str) -> Result<String, Invalid> {
    let name = clean_text(value, MAX_NAME_CHARS)?;
    if !name.chars().any(char::is_alphabetic) {
        return Err(Invalid::new("must contain at least one letter"));
    }
    Ok(name)
}

/// The ASCII form used for screening: transliterated ("Мария" → "Mariia",
/// "Müller" → "Muller"), lower-case, punctuation turned into spaces.
pub fn transliterate(name: &str) -> String {
    let ascii = deunicode::deunicode(name);
    let mapped: String = ascii.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { ' ' }).collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_keep_their_characters_and_transliterate_for_screening() {
        assert_eq!(parse_name("  Zoë  ").as_deref(), Ok("Zoë"));
        assert_eq!(parse_name("Мария").as_deref(), Ok("Мария"));
        assert!(parse_name("1234").is_err());
        assert_eq!(transliterate("Müller-Lüdenscheidt"), "muller ludenscheidt");
        assert_eq!(transliterate("Мария"), "mariia");
        assert_eq!(transliterate("O'Brien, Seán"), "o brien sean");
    }

    proptest! {
        #[test]
        fn name_parsing_never_panics(s in any::<String>()) {
            let _ = parse_name(&s);
            let t = transliterate(&s);
            prop_assert!(t.is_ascii());
        }
    }
}
