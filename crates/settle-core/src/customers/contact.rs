//! Email addresses and phone numbers.
//!
//! Phones are stored in E.164 (`+14155552671`). We keep a small,
//! documented table of calling codes with the length of their national
//! numbers rather than linking a full metadata library (whose build cost
//! on this project was judged too high for what it adds): numbers of the
//! listed countries are checked by length (and NANP's area and exchange
//! rules); numbers of other countries are accepted in international form
//! (`+` and 8 to 15 digits) only. A national number (no `+`) needs a
//! country from the table (the customer's address or nationality).

use super::Invalid;

/// Longest email address (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// An email address with its domain lower-cased (the local part is the
/// mailbox owner's and may be case-sensitive, so it is kept as given).
pub fn parse_email(value: &str) -> Result<String, Invalid> {
    let value = value.trim();
    let bad = || Invalid::new("must be an email address such as name@example.com");
    if value.len() > MAX_EMAIL_BYTES || !value.is_ascii() || value.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(bad());
    }
    let (local, domain) = value.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty() || local.len() > 64 || local.contains('@') || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(bad());
    }
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok =
        |l: &&str| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(bad());
    }
    Ok(format!("{local}@{domain}"))
}

/// The masked form shown to keys without `customers:pii:read`: the first
/// character of the mailbox and the domain (`j***@example.com`).
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => String::from("***"),
    }
}

/// A country's calling code and national significant number length.
struct Dialing {
    country: &'static str,
    code: &'static str,
    min: usize,
    max: usize,
}

/// The countries whose numbers we check by length (others: shape only).
const DIALING: &[Dialing] = &[
    Dialing { country: "US", code: "1", min: 10, max: 10 },
    Dialing { country: "CA", code: "1", min: 10, max: 10 },
    Dialing { country: "GB", code: "44", min: 9, max: 10 },
    Dialing { country: "DE", code: "49", min: 6, max: 13 },
    Dialing { country: "FR", code: "33", min: 9, max: 9 },
    Dialing { country: "NL", code: "31", min: 9, max: 9 },
    Dialing { country: "BE", code: "32", min: 8, max: 9 },
    Dialing { country: "ES", code: "34", min: 9, max: 9 },
    Dialing { country: "IT", code: "39", min: 6, max: 11 },
    Dialing { country: "IE", code: "353", min: 7, max: 9 },
    Dialing { country: "PT", code: "351", min: 9, max: 9 },
    Dialing { country: "AT", code: "43", min: 4, max: 13 },
    Dialing { country: "CH", code: "41", min: 9, max: 9 },
    Dialing { country: "SE", code: "46", min: 7, max: 13 },
    Dialing { country: "PL", code: "48", min: 9, max: 9 },
    Dialing { country: "AU", code: "61", min: 9, max: 9 },
    Dialing { country: "IN", code: "91", min: 10, max: 10 },
    Dialing { country: "MX", code: "52", min: 10, max: 10 },
    Dialing { country: "BR", code: "55", min: 10, max: 11 },
    Dialing { country: "JP", code: "81", min: 9, max: 10 },
];

fn check_national(code: &str, national: &str) -> Result<(), Invalid> {
    let Some(rule) = DIALING.iter().find(|d| d.code == code) else { return Ok(()) };
    if !(rule.min..=rule.max).contains(&national.len()) {
        return Err(Invalid::new(format!("is not a valid +{code} number: the national number has {} to {} digits", rule.min, rule.max)));
    }
    if code == "1" {
        // NANP: area code and exchange start with 2–9.
        let b = national.as_bytes();
        if b[0] < b'2' || b[3] < b'2' {
            return Err(Invalid::new("is not a valid +1 number: area code and exchange cannot start with 0 or 1"));
        }
    }
    Ok(())
}

/// A phone number in E.164. `default_country` (ISO alpha-2) reads a
/// national number (a leading trunk `0` is dropped, except in Italy).
pub fn parse_phone(value: &str, default_country: Option<&str>) -> Result<String, Invalid> {
    let trimmed = value.trim();
    if trimmed.len() > 40 || !trimmed.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c)) {
        return Err(Invalid::new("must be a phone number of digits, spaces, dashes, dots and parentheses, ideally in E.164 (+14155552671)"));
    }
    let international = trimmed.starts_with('+') || trimmed.starts_with("00");
    let mut digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    if trimmed.starts_with("00") {
        digits.drain(..2);
    }
    if international {
        if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(Invalid::new("must have 8 to 15 digits in international form"));
        }
        let known = (1..=3).filter_map(|n| digits.get(..n)).find(|cc| DIALING.iter().any(|d| d.code == *cc));
        if let Some(cc) = known {
            check_national(cc, &digits[cc.len()..])?;
        }
        return Ok(format!("+{digits}"));
    }
    let country = default_country.ok_or_else(|| Invalid::new("must start with + and the country calling code (no country is known to read it as national)"))?;
    let rule = DIALING.iter().find(|d| d.country == country).ok_or_else(|| Invalid::new(format!("must be in international form (+…) for {country}")))?;
    let national = if rule.code == "1" {
        digits.strip_prefix('1').filter(|d| d.len() == 10).unwrap_or(&digits).to_owned()
    } else if rule.code == "39" {
        digits
    } else {
        digits.strip_prefix('0').unwrap_or(&digits).to_owned()
    };
    check_national(rule.code, &national)?;
    Ok(format!("+{}{national}", rule.code))
}

/// The masked form: the calling code's first digit and the last two digits.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    let n = chars.len();
    if n < 5 {
        return String::from("***");
    }
    chars[..2].iter().chain(std::iter::repeat_n(&'*', n - 4)).chain(&chars[n - 2..]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_get_a_lower_case_domain() {
        assert_eq!(parse_email(" Jane.Doe@Example.COM ").as_deref(), Ok("Jane.Doe@example.com"));
        for bad in ["jane", "jane@", "@example.com", "jane@example", "ja ne@example.com", "jane@exa_mple.com", "jane..doe@example.com", "jané@example.com"] {
            assert!(parse_email(bad).is_err(), "{bad}");
        }
        assert_eq!(mask_email("jane@example.com"), "j***@example.com");
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(parse_phone("+1 (415) 555-2671", None).as_deref(), Ok("+14155552671"));
        assert_eq!(parse_phone("(415) 555-2671", Some("US")).as_deref(), Ok("+14155552671"));
        assert_eq!(parse_phone("020 7946 0958", Some("GB")).as_deref(), Ok("+442079460958"));
        assert_eq!(parse_phone("0044 20 7946 0958", None).as_deref(), Ok("+442079460958"));
        assert_eq!(parse_phone("030 901820", Some("DE")).as_deref(), Ok("+4930901820"));
        assert_eq!(parse_phone("06 12 34 56 78", Some("FR")).as_deref(), Ok("+33612345678"));
        assert_eq!(parse_phone("+86 10 1234 5678", None).as_deref(), Ok("+861012345678"));
        assert!(parse_phone("+1 015 555 2671", None).is_err(), "NANP area codes do not start with 0");
        assert!(parse_phone("+33 6 12 34 56", None).is_err(), "French numbers have 9 digits");
        assert!(parse_phone("415 555 2671", None).is_err(), "a national number needs a country");
        assert!(parse_phone("+1 415 555 2671 ext 4", None).is_err());
        assert_eq!(mask_phone("+14155552671"), "+1********71");
    }

    proptest! {
        #[test]
        fn contact_parsers_never_panic(s in any::<String>(), c in proptest::option::of("[A-Z]{2}")) {
            let _ = parse_email(&s);
            let _ = parse_phone(&s, c.as_deref());
            let _ = mask_email(&s);
            let _ = mask_phone(&s);
        }

        #[test]
        fn parsed_phones_are_e164(s in "\\+?[0-9 ()-]{0,20}") {
            if let Ok(p) = parse_phone(&s, Some("US")) {
                prop_assert!(p.starts_with('+') && p[1..].bytes().all(|b| b.is_ascii_digit()) && p.len() <= 16);
            }
        }
    }
}
