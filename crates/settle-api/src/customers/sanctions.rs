//! Sanctions list files, parsed into list entries (pure: text in, entries out).
//!
//! - `ofac-sdn-csv`: Treasury's legacy CSV release, a directory holding
//!   `sdn.csv` (`ent_num, SDN_Name, SDN_Type, Program, Title, Call_Sign,
//!   Vess_type, Tonnage, GRT, Vess_flag, Vess_owner, Remarks`), `alt.csv`
//!   (`ent_num, alt_num, alt_type, alt_name, alt_remarks`) and `add.csv`
//!   (`ent_num, add_num, address, city/state/postal, country, add_remarks`).
//!   No header row; `-0-` is null; the files end with a SUB (0x1A) byte.
//!   The year of birth comes from `DOB …` in the remarks; countries from
//!   the addresses and `nationality …` in the remarks.
//! - `internal-csv`: the fintech's own watchlist, with a header:
//!   `reference,name,aliases,date_of_birth,country` (aliases separated by `;`).

use settle_store::customers::SanctionsEntryRecord;
use std::collections::BTreeMap;
use std::path::Path;

/// The largest list file we read (OFAC's sdn.csv is a few MiB).
pub const MAX_LIST_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// The most entries a list may hold.
pub const MAX_LIST_ENTRIES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{file} line {line}: {message}")]
    Invalid { file: String, line: u64, message: String },
    #[error("{0} is larger than the list file limit")]
    TooLarge(String),
}

/// A list format `settle sanctions load` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    OfacSdnCsv,
    InternalCsv,
}

impl ListFormat {
    pub fn parse(text: &str) -> Option<ListFormat> {
        match text {
            "ofac-sdn-csv" => Some(ListFormat::OfacSdnCsv),
            "internal-csv" => Some(ListFormat::InternalCsv),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListFormat::OfacSdnCsv => "ofac-sdn-csv",
            ListFormat::InternalCsv => "internal-csv",
        }
    }

    /// The list's source: a new snapshot replaces the previous one of the same source.
    pub fn source(self) -> &'static str {
        match self {
            ListFormat::OfacSdnCsv => "ofac_sdn",
            ListFormat::InternalCsv => "internal",
        }
    }
}

fn read(path: &Path) -> Result<String, ListError> {
    let io = |cause| ListError::Io { path: path.display().to_string(), cause };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_LIST_FILE_BYTES {
        return Err(ListError::TooLarge(path.display().to_string()));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    // Treasury's files are mostly ASCII; anything else is read leniently.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn value(field: Option<&str>) -> Option<String> {
    let v = field?.trim();
    (!v.is_empty() && v != "-0-").then(|| v.to_owned())
}

fn records(file: &str, text: &str, has_header: bool) -> Result<Vec<(u64, csv::StringRecord)>, ListError> {
    let cleaned: String = text.chars().filter(|c| *c != '\u{1a}').collect();
    let mut reader = csv::ReaderBuilder::new().has_headers(has_header).flexible(true).from_reader(cleaned.as_bytes());
    let mut out = Vec::new();
    for r in reader.records() {
        let r = r.map_err(|e| ListError::Invalid { file: file.to_owned(), line: e.position().map_or(0, csv::Position::line), message: e.to_string() })?;
        if r.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let line = r.position().map_or(0, csv::Position::line);
        out.push((line, r));
        if out.len() > MAX_LIST_ENTRIES * 4 {
            return Err(ListError::Invalid { file: file.to_owned(), line, message: String::from("too many records") });
        }
    }
    Ok(out)
}

/// The first year after `DOB` in remarks (`DOB 14 Jul 1972`, `DOB circa 1960`, `DOB 1958`).
pub fn birth_year(remarks: &str) -> Option<i64> {
    let at = remarks.find("DOB ")?;
    let rest = &remarks[at + 4..];
    let end = rest.find(';').unwrap_or(rest.len());
    rest[..end].split(|c: char| !c.is_ascii_digit()).find(|t| t.len() == 4).and_then(|t| t.parse::<i64>().ok()).filter(|y| (1800..=2100).contains(y))
}

/// Parses an OFAC SDN legacy CSV directory.
pub fn parse_ofac_dir(dir: &Path) -> Result<Vec<SanctionsEntryRecord>, ListError> {
    let sdn = read(&dir.join("sdn.csv"))?;
    let alt_path = dir.join("alt.csv");
    let add_path = dir.join("add.csv");
    let alt = if alt_path.exists() { read(&alt_path)? } else { String::new() };
    let add = if add_path.exists() { read(&add_path)? } else { String::new() };
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, r) in records("alt.csv", &alt, false)? {
        if let (Some(ent), Some(name)) = (value(r.get(0)), value(r.get(3))) {
            aliases.entry(ent).or_default().push(name);
        }
    }
    let mut countries: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, r) in records("add.csv", &add, false)? {
        if let (Some(ent), Some(country)) = (value(r.get(0)), value(r.get(4))) {
            let list = countries.entry(ent).or_default();
            if !list.contains(&country) {
                list.push(country);
            }
        }
    }
    let mut out = Vec::new();
    for (line, r) in records("sdn.csv", &sdn, false)? {
        let bad = |message: &str| ListError::Invalid { file: String::from("sdn.csv"), line, message: message.to_owned() };
        let ent = value(r.get(0)).ok_or_else(|| bad("ent_num is missing"))?;
        if !ent.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("ent_num is not a number (is this the legacy CSV release, without a header?)"));
        }
        let name = value(r.get(1)).ok_or_else(|| bad("SDN_Name is missing"))?;
        let remarks = value(r.get(11)).unwrap_or_default();
        let mut names = vec![name];
        names.extend(aliases.remove(&ent).unwrap_or_default());
        let mut c = countries.remove(&ent).unwrap_or_default();
        if let Some(at) = remarks.find("nationality ") {
            let rest = &remarks[at + "nationality ".len()..];
            let n = rest[..rest.find(';').unwrap_or(rest.len())].trim().trim_end_matches('.').to_owned();
            if !n.is_empty() && !c.contains(&n) {
                c.push(n);
            }
        }
        out.push(SanctionsEntryRecord {
            position: out.len() as i64,
            reference: ent,
            names,
            birth_year: birth_year(&remarks),
            countries: c,
            programs: value(r.get(3)).unwrap_or_default(),
        });
        if out.len() > MAX_LIST_ENTRIES {
            return Err(bad("the list has more entries than the limit"));
        }
    }
    if out.is_empty() {
        return Err(ListError::Invalid { file: String::from("sdn.csv"), line: 0, message: String::from("no entries") });
    }
    Ok(out)
}

/// Parses an internal watchlist CSV file.
pub fn parse_internal_csv(path: &Path) -> Result<Vec<SanctionsEntryRecord>, ListError> {
    let text = read(path)?;
    let mut out = Vec::new();
    for (line, r) in records("watchlist", &text, true)? {
        let bad = |message: &str| ListError::Invalid { file: path.display().to_string(), line, message: message.to_owned() };
        let reference = value(r.get(0)).ok_or_else(|| bad("reference is missing"))?;
        let name = value(r.get(1)).ok_or_else(|| bad("name is missing"))?;
        let mut names = vec![name];
        names.extend(r.get(2).unwrap_or("").split(';').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned));
        let birth = value(r.get(3)).and_then(|d| d.get(..4).and_then(|y| y.parse::<i64>().ok()));
        out.push(SanctionsEntryRecord {
            position: out.len() as i64,
            reference,
            names,
            birth_year: birth,
            countries: value(r.get(4)).into_iter().collect(),
            programs: String::from("internal"),
        });
        if out.len() > MAX_LIST_ENTRIES {
            return Err(bad("the list has more entries than the limit"));
        }
    }
    Ok(out)
}

/// Parses a list of `format` at `path` (a directory for OFAC, a file for internal lists).
pub fn parse(format: ListFormat, path: &Path) -> Result<Vec<SanctionsEntryRecord>, ListError> {
    match format {
        ListFormat::OfacSdnCsv => parse_ofac_dir(path),
        ListFormat::InternalCsv => parse_internal_csv(path),
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn ofac_legacy_csv_is_read_with_aliases_countries_and_birth_years() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sdn.csv"),
            "36,\"AEROCARIBBEAN AIRLINES\",-0- ,\"CUBA\",-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- \r\n\
             2674,\"ABU ZUBAIDA\",\"individual\",\"SDGT\",-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,\"DOB 12 Mar 1971; POB Riyadh, Saudi Arabia; nationality Saudi Arabia.\"\r\n\x1a",
        )
        .unwrap();
        std::fs::write(dir.path().join("alt.csv"), "2674,1,\"aka\",\"ABU ZUBAYDAH\",-0- \r\n2674,2,\"aka\",\"HUSAYN, Zayn al-Abidin Muhammad\",-0- \r\n")
            .unwrap();
        std::fs::write(dir.path().join("add.csv"), "36,25,-0- ,\"Havana\",\"Cuba\",-0- \r\n").unwrap();
        let entries = parse_ofac_dir(dir.path()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].countries, vec!["Cuba"]);
        assert_eq!(entries[1].names, vec!["ABU ZUBAIDA", "ABU ZUBAYDAH", "HUSAYN, Zayn al-Abidin Muhammad"]);
        assert_eq!(entries[1].birth_year, Some(1971));
        assert_eq!(entries[1].countries, vec!["Saudi Arabia"]);
        assert_eq!(entries[1].programs, "SDGT");
    }

    #[test]
    fn a_file_with_a_header_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sdn.csv"), "ent_num,SDN_Name\n1,X\n").unwrap();
        let e = parse_ofac_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn birth_years_come_from_remarks() {
        assert_eq!(birth_year("DOB 14 Jul 1972; POB Iraq"), Some(1972));
        assert_eq!(birth_year("DOB circa 1960"), Some(1960));
        assert_eq!(birth_year("Passport 1234567"), None);
    }
}
