//! Countries (ISO 3166-1 alpha-2), regions (ISO 3166-2 subdivisions where
//! we know them: US states and territories, Canadian provinces), postal
//! codes (checked and formatted for US, CA, GB, DE, FR, NL; other countries
//! get a generic shape check) and whole addresses.

use super::{Invalid, MAX_TEXT_CHARS, clean_text};

/// The 249 officially assigned ISO 3166-1 alpha-2 codes.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL \
GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR \
LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK \
PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR \
TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// US states, the District of Columbia and the territories with ISO 3166-2 codes.
const US_REGIONS: &str = "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK OR PA \
RI SC SD TN TX UT VT VA WA WV WI WY DC AS GU MP PR UM VI";
/// Canadian provinces and territories.
const CA_REGIONS: &str = "AB BC MB NB NL NS NT NU ON PE QC SK YT";

/// A country code, upper-cased, one of ISO 3166-1 alpha-2.
pub fn parse_country(value: &str) -> Result<String, Invalid> {
    let code = value.trim().to_ascii_uppercase();
    if code.len() == 2 && code.is_ascii() && COUNTRIES.split(' ').any(|c| c == code) {
        Ok(code)
    } else {
        Err(Invalid::new("must be an ISO 3166-1 alpha-2 country code, such as US or DE"))
    }
}

/// True when the EU's VAT system covers the country (VAT prefixes use `EL` for Greece).
pub fn is_eu(country: &str) -> bool {
    "AT BE BG CY CZ DE DK EE EL GR ES FI FR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split(' ').any(|c| c == country)
}

/// A region of `country`: for the US and Canada, an ISO 3166-2 code (`CA`
/// or `US-CA` are both accepted and stored as `US-CA`); elsewhere a cleaned
/// free-text name, since we do not hold those countries' subdivision lists.
pub fn parse_region(value: &str, country: &str) -> Result<String, Invalid> {
    let list = match country {
        "US" => US_REGIONS,
        "CA" => CA_REGIONS,
        _ => return clean_text(value, MAX_TEXT_CHARS),
    };
    let upper = value.trim().to_ascii_uppercase();
    let code = upper.strip_prefix(&format!("{country}-")).unwrap_or(&upper);
    if code.len() == 2 && list.split(' ').any(|c| c == code) {
        Ok(format!("{country}-{code}"))
    } else {
        Err(Invalid::new(format!("must be an ISO 3166-2 subdivision code of {country}, such as {country}-{}", &list[..2])))
    }
}

/// A postal code of `country`, checked and formatted by that country's rules.
pub fn parse_postal_code(value: &str, country: &str) -> Result<String, Invalid> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace() && *c != '-').collect::<String>().to_ascii_uppercase();
    let digits = |n: usize| compact.len() == n && compact.bytes().all(|b| b.is_ascii_digit());
    match country {
        "US" => {
            if digits(5) {
                Ok(compact)
            } else if digits(9) {
                Ok(format!("{}-{}", &compact[..5], &compact[5..]))
            } else {
                Err(Invalid::new("must be a US ZIP code: 5 digits or ZIP+4 (12345-6789)"))
            }
        }
        "DE" | "FR" if digits(5) => Ok(compact),
        "DE" | "FR" => Err(Invalid::new(format!("must be a {country} postal code of 5 digits"))),
        "CA" => {
            let b = compact.as_bytes();
            // Letters D, F, I, O, Q, U never appear; W and Z never lead.
            let letter = |c: u8| c.is_ascii_uppercase() && !b"DFIOQU".contains(&c);
            let ok = b.len() == 6
                && letter(b[0])
                && !b"WZ".contains(&b[0])
                && b[1].is_ascii_digit()
                && letter(b[2])
                && b[3].is_ascii_digit()
                && letter(b[4])
                && b[5].is_ascii_digit();
            if ok { Ok(format!("{} {}", &compact[..3], &compact[3..])) } else { Err(Invalid::new("must be a Canadian postal code, such as K1A 0B1")) }
        }
        "NL" => {
            let b = compact.as_bytes();
            let ok = b.len() == 6
                && b[0] != b'0'
                && b[..4].iter().all(u8::is_ascii_digit)
                && b[4..].iter().all(u8::is_ascii_uppercase)
                && !matches!(&compact[4..], "SA" | "SD" | "SS");
            if ok { Ok(format!("{} {}", &compact[..4], &compact[4..])) } else { Err(Invalid::new("must be a Dutch postal code, such as 1012 AB")) }
        }
        "GB" => gb_postcode(&compact).ok_or_else(|| Invalid::new("must be a UK postcode, such as SW1A 1AA")),
        _ => {
            let ok = (2..=10).contains(&compact.len()) && compact.bytes().all(|b| b.is_ascii_alphanumeric());
            if ok { Ok(value.trim().to_ascii_uppercase()) } else { Err(Invalid::new("must be 2 to 10 letters or digits")) }
        }
    }
}

/// UK postcodes: an outward code (A9, A99, AA9, AA99, A9A, AA9A) and an
/// inward code (9AA), or the special GIR 0AA.
fn gb_postcode(compact: &str) -> Option<String> {
    if compact == "GIR0AA" {
        return Some(String::from("GIR 0AA"));
    }
    if !(5..=7).contains(&compact.len()) || !compact.is_ascii() {
        return None;
    }
    let (outward, inward) = compact.split_at(compact.len() - 3);
    let i = inward.as_bytes();
    // The inward code's letters exclude C, I, K, M, O and V.
    let inward_ok = i[0].is_ascii_digit() && i[1..].iter().all(|c| c.is_ascii_uppercase() && !b"CIKMOV".contains(c));
    let shape: String = outward
        .bytes()
        .map(|b| {
            if b.is_ascii_digit() {
                '9'
            } else if b.is_ascii_uppercase() {
                'A'
            } else {
                '?'
            }
        })
        .collect();
    let outward_ok = matches!(shape.as_str(), "A9" | "A99" | "AA9" | "AA99" | "A9A" | "AA9A");
    (inward_ok && outward_ok).then(|| format!("{outward} {inward}"))
}

/// A postal address, normalized.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Address {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: String,
}

/// An address as it arrives; every field is checked, and the first fault is
/// reported with the field's name.
#[derive(Clone, Debug, Default)]
pub struct AddressInput<'a> {
    pub line1: Option<&'a str>,
    pub line2: Option<&'a str>,
    pub city: Option<&'a str>,
    pub region: Option<&'a str>,
    pub postal_code: Option<&'a str>,
    pub country: Option<&'a str>,
}

/// Parses an address; on error, the field at fault (`line1`, `country`, …) and why.
pub fn parse_address(input: &AddressInput<'_>) -> Result<Address, (&'static str, Invalid)> {
    let country = parse_country(input.country.ok_or(("country", Invalid::new("is required")))?).map_err(|e| ("country", e))?;
    let line1 = clean_text(input.line1.ok_or(("line1", Invalid::new("is required")))?, MAX_TEXT_CHARS).map_err(|e| ("line1", e))?;
    let line2 = input.line2.map(|l| clean_text(l, MAX_TEXT_CHARS)).transpose().map_err(|e| ("line2", e))?;
    let city = clean_text(input.city.ok_or(("city", Invalid::new("is required")))?, MAX_TEXT_CHARS).map_err(|e| ("city", e))?;
    let region = match input.region {
        Some(r) => Some(parse_region(r, &country).map_err(|e| ("region", e))?),
        None if country == "US" || country == "CA" => return Err(("region", Invalid::new(format!("is required for {country} addresses")))),
        None => None,
    };
    let postal_code = match input.postal_code {
        Some(p) => Some(parse_postal_code(p, &country).map_err(|e| ("postal_code", e))?),
        None if matches!(country.as_str(), "US" | "CA" | "GB" | "DE" | "FR" | "NL") => {
            return Err(("postal_code", Invalid::new(format!("is required for {country} addresses"))));
        }
        None => None,
    };
    Ok(Address { line1, line2, city, region, postal_code, country })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn countries_are_iso_alpha_2() {
        assert_eq!(parse_country(" de ").as_deref(), Ok("DE"));
        assert_eq!(COUNTRIES.split(' ').count(), 249);
        assert!(parse_country("XX").is_err());
        assert!(parse_country("DEU").is_err());
        assert!(parse_country("UK").is_err(), "UK is not ISO 3166-1; GB is");
    }

    #[test]
    fn regions_are_iso_3166_2_for_us_and_canada() {
        assert_eq!(parse_region("ca", "US").as_deref(), Ok("US-CA"));
        assert_eq!(parse_region("US-NY", "US").as_deref(), Ok("US-NY"));
        assert_eq!(parse_region("QC", "CA").as_deref(), Ok("CA-QC"));
        assert!(parse_region("XX", "US").is_err());
        assert!(parse_region("NY", "CA").is_err());
        assert_eq!(parse_region(" Bayern ", "DE").as_deref(), Ok("Bayern"));
    }

    #[test]
    fn postal_codes_are_checked_and_formatted_per_country() {
        let ok = |v: &str, c: &str| parse_postal_code(v, c).unwrap_or_else(|e| panic!("{v} {c}: {e}"));
        assert_eq!(ok("94103", "US"), "94103");
        assert_eq!(ok("941031234", "US"), "94103-1234");
        assert_eq!(ok("94103-1234", "US"), "94103-1234");
        assert_eq!(ok("k1a0b1", "CA"), "K1A 0B1");
        assert_eq!(ok("sw1a1aa", "GB"), "SW1A 1AA");
        assert_eq!(ok("M1 1AE", "GB"), "M1 1AE");
        assert_eq!(ok("10115", "DE"), "10115");
        assert_eq!(ok("75008", "FR"), "75008");
        assert_eq!(ok("1012ab", "NL"), "1012 AB");
        for (v, c) in
            [("9410", "US"), ("941031", "US"), ("D1A 0B1", "CA"), ("W1A 0B1", "CA"), ("SW1A 1CA", "GB"), ("1011", "DE"), ("0123 AB", "NL"), ("1012 SS", "NL")]
        {
            assert!(parse_postal_code(v, c).is_err(), "{v} {c} should be refused");
        }
    }

    #[test]
    fn us_addresses_need_a_state_and_zip() {
        let input = AddressInput {
            line1: Some("1 Main St"),
            city: Some("Springfield"),
            country: Some("us"),
            region: Some("IL"),
            postal_code: Some("62701"),
            ..Default::default()
        };
        let a = parse_address(&input).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((a.country.as_str(), a.region.as_deref()), ("US", Some("US-IL")));
        let missing = AddressInput { region: None, ..input.clone() };
        assert_eq!(parse_address(&missing).map_err(|e| e.0), Err("region"));
        let bad_zip = AddressInput { postal_code: Some("6270"), ..input };
        assert_eq!(parse_address(&bad_zip).map_err(|e| e.0), Err("postal_code"));
    }

    proptest! {
        #[test]
        fn geo_parsers_never_panic(s in any::<String>(), c in "[A-Z]{2}") {
            let _ = parse_country(&s);
            let _ = parse_region(&s, &c);
            let _ = parse_postal_code(&s, &c);
            for c in ["US", "CA", "GB", "NL", "DE", "FR"] {
                let _ = parse_postal_code(&s, c);
                let _ = parse_region(&s, c);
            }
        }
    }
}
