//! Tax identifiers, validated by their issuers' rules.
//!
//! - US SSN: area not 000, 666 or 900–999; group not 00; serial not 0000.
//! - US ITIN: starts with 9; the group (digits 4–5) is 50–65, 70–88, 90–92 or 94–99.
//! - US EIN: a two-digit prefix the IRS assigns (the list below).
//! - EU VAT numbers: the country prefix and that country's format, with the
//!   check digits verified for DE (ISO 7064 MOD 11,10), FR (key over the
//!   SIREN), NL (mod 11, or mod 97 for the post-2020 numbers), IT (Luhn),
//!   ES (NIF/NIE letter or CIF control) and BE (97 − n mod 97); other EU
//!   countries are checked by shape only.
//!
//! Values are stored compact (`123456789`, `DE136695976`) and rendered in
//! their usual form. Errors never echo the value.

use super::Invalid;

/// The kind of tax identifier; chooses the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaxIdType {
    UsSsn,
    UsItin,
    UsEin,
    EuVat,
}

impl TaxIdType {
    pub fn parse(text: &str) -> Option<TaxIdType> {
        match text {
            "us_ssn" => Some(TaxIdType::UsSsn),
            "us_itin" => Some(TaxIdType::UsItin),
            "us_ein" => Some(TaxIdType::UsEin),
            "eu_vat" => Some(TaxIdType::EuVat),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaxIdType::UsSsn => "us_ssn",
            TaxIdType::UsItin => "us_itin",
            TaxIdType::UsEin => "us_ein",
            TaxIdType::EuVat => "eu_vat",
        }
    }
}

/// A validated tax id, stored compact.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaxId {
    #[serde(rename = "type")]
    pub kind: TaxIdType,
    pub value: String,
}

impl std::fmt::Debug for TaxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaxId({}, <redacted>)", self.kind.as_str())
    }
}

impl TaxId {
    /// The usual written form (`123-45-6789`, `12-3456789`, `DE136695976`).
    pub fn display(&self) -> String {
        let v = &self.value;
        match self.kind {
            TaxIdType::UsSsn | TaxIdType::UsItin if v.len() == 9 => format!("{}-{}-{}", &v[..3], &v[3..5], &v[5..]),
            TaxIdType::UsEin if v.len() == 9 => format!("{}-{}", &v[..2], &v[2..]),
            _ => v.clone(),
        }
    }

    /// The last four characters, which keys without the PII scope may see.
    pub fn last4(&self) -> String {
        let chars: Vec<char> = self.value.chars().collect();
        chars[chars.len().saturating_sub(4)..].iter().collect()
    }
}

/// The IRS's EIN prefixes.
const EIN_PREFIXES: &[u8] = &[
    1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16, 20, 21, 22, 23, 24, 25, 26, 27, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
    50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 71, 72, 73, 74, 75, 76, 77, 80, 81, 82, 83, 84, 85, 86, 87, 88, 90, 91, 92, 93,
    94, 95, 98, 99,
];

fn nine_digits(value: &str, what: &str) -> Result<String, Invalid> {
    let compact: String = value.chars().filter(|c| *c != '-' && *c != ' ').collect();
    if compact.len() == 9 && compact.bytes().all(|b| b.is_ascii_digit()) { Ok(compact) } else { Err(Invalid::new(format!("must be a {what} of 9 digits"))) }
}

fn num(s: &str) -> u32 {
    s.bytes().fold(0u32, |n, b| n.saturating_mul(10).saturating_add(u32::from(b.wrapping_sub(b'0'))))
}

pub fn parse_tax_id(kind: TaxIdType, value: &str) -> Result<TaxId, Invalid> {
    let value = match kind {
        TaxIdType::UsSsn => {
            let v = nine_digits(value, "US SSN")?;
            let (area, group, serial) = (num(&v[..3]), num(&v[3..5]), num(&v[5..]));
            if area == 0 || area == 666 || area >= 900 {
                return Err(Invalid::new("is not a valid SSN: the area number (first 3 digits) is never 000, 666 or 900–999"));
            }
            if group == 0 || serial == 0 {
                return Err(Invalid::new("is not a valid SSN: the group (digits 4–5) and serial (last 4) are never all zeros"));
            }
            v
        }
        TaxIdType::UsItin => {
            let v = nine_digits(value, "US ITIN")?;
            let group = num(&v[3..5]);
            if !v.starts_with('9') || !matches!(group, 50..=65 | 70..=88 | 90..=92 | 94..=99) {
                return Err(Invalid::new("is not a valid ITIN: it starts with 9 and digits 4–5 are 50–65, 70–88, 90–92 or 94–99"));
            }
            v
        }
        TaxIdType::UsEin => {
            let v = nine_digits(value, "US EIN")?;
            let prefix = num(&v[..2]);
            if !EIN_PREFIXES.iter().any(|p| u32::from(*p) == prefix) {
                return Err(Invalid::new("is not a valid EIN: its first two digits are not a prefix the IRS assigns"));
            }
            v
        }
        TaxIdType::EuVat => parse_vat(value)?,
    };
    Ok(TaxId { kind, value })
}

/// An EU VAT number with its country prefix (`DE136695976`).
fn parse_vat(value: &str) -> Result<String, Invalid> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace() && *c != '-' && *c != '.').collect::<String>().to_ascii_uppercase();
    if !compact.is_ascii() || compact.len() < 4 || compact.len() > 16 {
        return Err(Invalid::new("must be an EU VAT number with its country prefix, such as DE136695976"));
    }
    let (country, rest) = compact.split_at(2);
    if !super::geo::is_eu(country) {
        return Err(Invalid::new("must start with an EU VAT country prefix (AT, BE, … EL for Greece)"));
    }
    let digits = |n: usize| rest.len() == n && rest.bytes().all(|b| b.is_ascii_digit());
    let checked = match country {
        "DE" => digits(9) && de_check(rest),
        "FR" => fr_check(rest),
        "NL" => nl_check(rest),
        "IT" => digits(11) && luhn(rest),
        "ES" => es_check(rest),
        "BE" => digits(10) && (rest.starts_with('0') || rest.starts_with('1')) && 97 - num(&rest[..8]) % 97 == num(&rest[8..]),
        _ => (2..=12).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric()),
    };
    if checked { Ok(compact) } else { Err(Invalid::new(format!("is not a valid {country} VAT number (format or check digits)"))) }
}

/// ISO 7064 MOD 11,10 over the first 8 digits.
fn de_check(d: &str) -> bool {
    let b = d.as_bytes();
    let mut product = 10u32;
    for &c in &b[..8] {
        let mut sum = (u32::from(c - b'0') + product) % 10;
        if sum == 0 {
            sum = 10;
        }
        product = (2 * sum) % 11;
    }
    let check = (11 - product) % 10;
    check == u32::from(b[8] - b'0')
}

/// Two key characters then the 9-digit SIREN; numeric keys are (12 + 3 × (SIREN mod 97)) mod 97.
fn fr_check(rest: &str) -> bool {
    if rest.len() != 11 || !rest[2..].bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let key = &rest[..2];
    if key.bytes().all(|b| b.is_ascii_digit()) {
        (12 + 3 * (num(&rest[2..]) % 97)) % 97 == num(key)
    } else {
        // Alphanumeric keys (newer numbers) have no published check: shape only.
        key.bytes().all(|b| b.is_ascii_alphanumeric() && b != b'O' && b != b'I')
    }
}

/// Nine digits, `B`, two digits: the old mod-11 check or the mod-97 check of sole traders' numbers.
fn nl_check(rest: &str) -> bool {
    let b = rest.as_bytes();
    if b.len() != 12 || b[9] != b'B' || !b[..9].iter().all(u8::is_ascii_digit) || !b[10..].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let weighted: u32 = b[..8].iter().zip((2..=9).rev()).map(|(c, w)| u32::from(c - b'0') * w).sum();
    let mod11 = weighted % 11 == u32::from(b[8] - b'0');
    // mod 97 over "NL" + number with letters as 10 + position (N=23, L=21, B=11).
    let text = format!("2321{}11{}", &rest[..9], &rest[10..]);
    let mod97 = text.bytes().fold(0u32, |r, c| (r * 10 + u32::from(c - b'0')) % 97) == 1;
    mod11 || mod97
}

fn luhn(d: &str) -> bool {
    let sum: u32 = d
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let x = u32::from(c - b'0');
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Spanish NIF (DNI: 8 digits and a letter), NIE (X/Y/Z, 7 digits, letter) or CIF (letter, 7 digits, control).
fn es_check(rest: &str) -> bool {
    const LETTERS: &[u8] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let b = rest.as_bytes();
    if b.len() != 9 || !b[1..8].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let letter_for = |n: u32| LETTERS[(n % 23) as usize];
    match b[0] {
        b'0'..=b'9' => b[..8].iter().all(u8::is_ascii_digit) && letter_for(num(&rest[..8])) == b[8],
        b'X' | b'Y' | b'Z' => {
            let lead = u32::from(b[0] - b'X');
            letter_for(lead * 10_000_000 + num(&rest[1..8])) == b[8]
        }
        b'A'..=b'H' | b'J' | b'N' | b'P' | b'Q' | b'R' | b'S' | b'U' | b'V' | b'W' => {
            let d: Vec<u32> = b[1..8].iter().map(|c| u32::from(c - b'0')).collect();
            let even: u32 = d[1] + d[3] + d[5];
            let odd: u32 = [d[0], d[2], d[4], d[6]].iter().map(|x| (x * 2) / 10 + (x * 2) % 10).sum();
            let control = (10 - (even + odd) % 10) % 10;
            b[8] == b'0' + control as u8 || b[8] == b"JABCDEFGHI"[control as usize]
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(kind: TaxIdType, v: &str) -> bool {
        parse_tax_id(kind, v).is_ok()
    }

    #[test]
    fn ssn_rules() {
        assert_eq!(parse_tax_id(TaxIdType::UsSsn, "123-45-6789").map(|t| t.display()), Ok(String::from("123-45-6789")));
        for bad in ["000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000", "12-345-678", "123456789012"] {
            assert!(!ok(TaxIdType::UsSsn, bad), "{bad}");
        }
    }

    #[test]
    fn itin_and_ein_rules() {
        assert!(ok(TaxIdType::UsItin, "912-70-1234"));
        assert!(ok(TaxIdType::UsItin, "999-94-1234"));
        assert!(!ok(TaxIdType::UsItin, "912-93-1234"), "group 93 is not issued");
        assert!(!ok(TaxIdType::UsItin, "812-70-1234"));
        assert_eq!(parse_tax_id(TaxIdType::UsEin, "123456789").map(|t| t.display()), Ok(String::from("12-3456789")));
        assert!(!ok(TaxIdType::UsEin, "07-3456789"));
        assert!(!ok(TaxIdType::UsEin, "89-3456789"));
    }

    #[test]
    fn eu_vat_check_digits() {
        for good in [
            "DE136695976",
            "DE 811 569 869",
            "FR40303265045",
            "NL123456782B01",
            "IT00743110157",
            "ES12345678Z",
            "ESX1234567L",
            "ESA28015865",
            "BE0411905847",
            "BE 0403.019.261",
            "ATU12345678",
        ] {
            assert!(ok(TaxIdType::EuVat, good), "{good} should be valid");
        }
        for bad in ["DE136695977", "FR41303265045", "NL123456783B01", "IT00743110158", "ES12345678A", "ESA28015866", "BE0411905848", "US123456789", "DE12"] {
            assert!(!ok(TaxIdType::EuVat, bad), "{bad} should be refused");
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_value() {
        let e = parse_tax_id(TaxIdType::UsSsn, "666-12-3456").err().map(|e| e.message).unwrap_or_default();
        assert!(!e.contains("666-12") && !e.contains("3456"));
        let t = parse_tax_id(TaxIdType::UsSsn, "123-45-6789").unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{t:?}").contains("6789"));
        assert_eq!(t.last4(), "6789");
    }

    proptest! {
        #[test]
        fn tax_id_parsing_never_panics(s in any::<String>(), digits in "[0-9A-Z -]{0,16}") {
            for kind in [TaxIdType::UsSsn, TaxIdType::UsItin, TaxIdType::UsEin, TaxIdType::EuVat] {
                let _ = parse_tax_id(kind, &s);
                let _ = parse_tax_id(kind, &digits);
                for c in ["DE", "FR", "NL", "IT", "ES", "BE", "AT"] {
                    let _ = parse_tax_id(kind, &format!("{c}{digits}"));
                }
            }
        }
    }
}
