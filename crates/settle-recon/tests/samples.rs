//! The parsers on real sample files (see `samples/README.md`) and on
//! malformed variants of them: amounts, dates and references as the files
//! say, and every fault reported with its line or element, never a panic.

#![expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

use settle_recon::{Direction, Format, ParseError, Position, Statement, parse};

fn sample(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/samples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn read(format: Format, name: &str) -> Statement {
    parse(format, &sample(name), None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[track_caller]
fn error(format: Format, text: &str) -> ParseError {
    match parse(format, text, None) {
        Ok(s) => panic!("expected an error, parsed {} lines", s.lines.len()),
        Err(e) => e,
    }
}

#[test]
fn bai2_sample_reads_both_days_of_the_account_with_directions_from_type_codes() {
    let s = read(Format::Bai2, "bai2-moov-sample1.txt");
    assert_eq!(s.account, "10200123456");
    assert_eq!(s.currency.code(), "CAD");
    assert_eq!(s.lines.len(), 17);
    // 16,409,000000000002500,V,060316,,,,RETURNED CHEQUE
    let first = &s.lines[0];
    assert_eq!((first.amount_minor, first.direction), (-2500, Direction::Debit));
    assert_eq!(first.description.as_deref(), Some("RETURNED CHEQUE"));
    assert_eq!(first.booking_date.to_string(), "2006-03-17");
    assert_eq!(first.value_date.map(|d| d.to_string()).as_deref(), Some("2006-03-16"));
    assert_eq!(first.position, Position::Line(5));
    // 16,108,000000000203500,... TFR 1020 0345678: a credit.
    assert_eq!((s.lines[3].amount_minor, s.lines[3].direction), (203_500, Direction::Credit));
    let (credits, debits) = s.totals().unwrap();
    assert_eq!((credits, debits), (208_500 + 111_500, 208_500 + 111_500));
    assert_eq!((s.opening_balance_minor, s.closing_balance_minor), (Some(0), Some(0)));
}

#[test]
fn bai2_spec_example_defaults_to_usd_and_reads_references() {
    let s = read(Format::Bai2, "bai2-moov-spec-section3.txt");
    assert_eq!((s.account.as_str(), s.currency.code()), ("0975312468", "USD"));
    assert_eq!(s.opening_balance_minor, Some(500_000));
    assert_eq!(s.lines.len(), 1);
    let l = &s.lines[0];
    assert_eq!((l.amount_minor, l.direction), (1_500_000, Direction::Credit));
    assert_eq!(l.references.bank_reference.as_deref(), Some("DD1620"));
    assert_eq!(l.description.as_deref(), Some("DEALER PAYMENTS"));
    assert_eq!(l.booking_date.to_string(), "2004-06-20");
}

#[test]
fn bai2_trailer_mismatches_name_their_line() {
    let good = sample("bai2-moov-sample1.txt");
    // The first account trailer's control total, one cent off.
    let e = error(Format::Bai2, &good.replace("49,+00000000000834000,14/", "49,+00000000000834001,14/"));
    assert!(matches!(&e, ParseError::Inconsistent { at: Position::Line(16), .. }), "{e}");
    assert!(e.to_string().contains("834001") && e.to_string().contains("834000"), "{e}");
    // A record count that does not count the records.
    let e = error(Format::Bai2, &good.replace("98,+00000000001280000,2,25/", "98,+00000000001280000,2,24/"));
    assert!(matches!(e, ParseError::Inconsistent { at: Position::Line(26), .. }), "{e}");
    // A detail amount changed without fixing the trailer.
    let e = error(Format::Bai2, &good.replace("16,409,000000000090000,V,060316,,,,RTN-UNKNOWN", "16,409,000000000090100,V,060316,,,,RTN-UNKNOWN"));
    assert!(matches!(e, ParseError::Inconsistent { at: Position::Line(16), .. }), "{e}");
    // Truncated: no file trailer.
    let truncated: String = good.lines().take(20).collect::<Vec<_>>().join("\n");
    let e = error(Format::Bai2, &truncated);
    assert!(e.to_string().contains("99 file trailer"), "{e}");
    // A date that is not one.
    let e = error(Format::Bai2, &good.replace("02,12345,0004,1,060317", "02,12345,0004,1,061317"));
    assert!(matches!(e, ParseError::InvalidField { at: Position::Line(2), field: "as_of_date", .. }), "{e}");
    // An unknown record code.
    let e = error(Format::Bai2, &good.replace("16,108,000000000002500,V,060316,,,,MACLEOD", "17,108,000000000002500,V,060316,,,,MACLEOD"));
    assert!(matches!(e, ParseError::Invalid { at: Position::Line(9), .. }), "{e}");
}

#[test]
fn mt940_danske_example_reads_three_days_as_one_statement() {
    let s = read(Format::Mt940, "mt940-danske-dk-example.sta");
    assert_eq!(s.account, "DABADKKK/1234567890");
    assert_eq!(s.currency.code(), "DKK");
    assert_eq!(s.statement_id.as_deref(), Some("3996-1234567890"));
    assert_eq!(s.opening_balance_minor, Some(247_892_670));
    assert_eq!(s.closing_balance_minor, Some(141_591_538));
    assert_eq!(s.period_start.map(|d| d.to_string()).as_deref(), Some("2009-09-24"));
    assert_eq!(s.period_end.map(|d| d.to_string()).as_deref(), Some("2009-10-02"));
    assert_eq!(s.lines.len(), 7 + 3 + 16);
    let first = &s.lines[0];
    assert_eq!((first.amount_minor, first.direction), (-82_941_978, Direction::Debit));
    assert_eq!(first.references.customer_reference.as_deref(), Some("Dansken"));
    assert_eq!(first.booking_date.to_string(), "2009-09-29");
    // `:61:0910010930DK2214,00NCHGGebyrer ifolge//nota`: value 2009-10-01, booked 09-30.
    let fee = &s.lines[1];
    assert_eq!(fee.value_date.map(|d| d.to_string()).as_deref(), Some("2009-10-01"));
    assert_eq!(fee.booking_date.to_string(), "2009-09-30");
    assert_eq!(fee.references.bank_reference.as_deref(), Some("nota"));
    assert_eq!(fee.description.as_deref(), Some("Gebyrer ifolge nota"));
    let credit = &s.lines[5];
    assert_eq!((credit.amount_minor, credit.direction), (200_000, Direction::Credit));
    assert_eq!(credit.position, Position::Line(22));
}

#[test]
fn mt940_with_a_closing_balance_that_does_not_add_up_is_refused_at_the_62f_line() {
    let e = error(Format::Mt940, &sample("mt940-sparkasse-buxtehude.sta"));
    assert!(matches!(e, ParseError::Inconsistent { at: Position::Line(22), .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("13523.09") && text.contains("13423.09"), "{text}");
    // Fixed, the same file reads: three debits with their German texts.
    let fixed = sample("mt940-sparkasse-buxtehude.sta").replace(":62F:C181127EUR13523,09", ":62F:C181127EUR13423,09");
    let s = parse(Format::Mt940, &fixed, None).unwrap();
    assert_eq!(s.lines.iter().map(|l| l.amount_minor).collect::<Vec<_>>(), vec![-11_935, -1669, -500]);
    assert!(s.lines[2].description.as_deref().unwrap().contains("ümläuté"));
}

#[test]
fn mt940_faults_name_their_line() {
    let good = sample("mt940-danske-dk-example.sta");
    let e = error(Format::Mt940, &good.replace(":61:0909250925DK281,25NMSC", ":61:0909250925XK281,25NMSC"));
    assert!(matches!(e, ParseError::InvalidField { at: Position::Line(17), .. }), "{e}");
    let e = error(Format::Mt940, &good.replace(":60F:C090930DKK1654095,16", ":60F:C090930DKK1654095,17"));
    assert!(matches!(e, ParseError::Inconsistent { at: Position::Line(33), .. }), "{e}");
    let e = error(Format::Mt940, &good.replace(":60F:C090924DKK2478926,70", ":60F:C090924XXX2478926,70"));
    assert!(matches!(e, ParseError::InvalidField { at: Position::Line(9), field: "balance", .. }), "{e}");
    let e = error(Format::Mt940, &good.replace("0909290929DK829419,78", "0909310929DK829419,78"));
    assert!(matches!(e, ParseError::InvalidField { at: Position::Line(14), .. }), "{e}");
    let e = error(Format::Mt940, &good.replace(":25:DABADKKK/1234567890\n:28C:00002", ":25:DABADKKK/999\n:28C:00002"));
    assert!(matches!(e, ParseError::Invalid { at: Position::Line(31), .. }), "{e}");
    let e = error(Format::Mt940, "hello\nworld\n");
    assert!(e.to_string().contains(":20:"), "{e}");
}

#[test]
fn camt053_sample_reads_amount_references_and_counterparty() {
    let s = read(Format::Camt053, "camt053-genkgo-v2-minimal.xml");
    assert_eq!((s.account.as_str(), s.currency.code()), ("NL26VAYB8060476890", "EUR"));
    assert_eq!(s.statement_id.as_deref(), Some("253EURNL26VAYB8060476890"));
    assert_eq!(s.opening_balance_minor, Some(1815));
    // The closing balance is in SEK: ignored, not converted, not checked.
    assert_eq!(s.closing_balance_minor, None);
    assert_eq!(s.lines.len(), 1);
    let l = &s.lines[0];
    assert_eq!((l.amount_minor, l.direction), (885, Direction::Credit));
    assert_eq!(l.booking_date.to_string(), "2014-12-31");
    assert_eq!(l.value_date.map(|d| d.to_string()).as_deref(), Some("2015-01-02"));
    assert_eq!(l.references.customer_reference.as_deref(), Some("4654654654654654"));
    assert_eq!(l.counterparty_name.as_deref(), Some("NAME NAME"));
    assert_eq!(l.counterparty_account.as_deref(), Some("NL56AGDH9619008421"));
    assert_eq!(l.position, Position::Element(String::from("/Document[1]/BkToCstmrStmt[1]/Stmt[1]/Ntry[1] (line 90)")));
}

#[test]
fn camt054_sample_reads_the_batch_entry_as_one_line() {
    let s = read(Format::Camt054, "camt054-genkgo-v2.xml");
    assert_eq!((s.account.as_str(), s.currency.code()), ("CH2801234000123456789", "SEK"));
    assert_eq!(s.lines.len(), 1);
    let l = &s.lines[0];
    assert_eq!((l.amount_minor, l.direction), (-20_000_000, Direction::Debit));
    assert_eq!(l.booking_date.to_string(), "2007-10-18");
    assert_eq!(l.references.end_to_end_id.as_deref(), Some("MUELL/FINP/RA12345"));
    assert_eq!(l.references.bank_reference.as_deref(), Some("AAAASESS-FP-ACCR001"));
    assert_eq!(l.references.customer_reference.as_deref(), Some("ISR ref number V1"));
    assert_eq!(l.description.as_deref(), Some("Unstructured Remittance Information V1 ISR ref number V2"));
}

#[test]
fn camt_faults_name_their_element() {
    let good = sample("camt053-genkgo-v2-minimal.xml");
    let e = error(Format::Camt053, &good.replace("<Amt Ccy=\"EUR\">8.85</Amt>", "<Amt Ccy=\"EUR\">8.855</Amt>"));
    assert!(matches!(&e, ParseError::InvalidField { field: "amount", .. }), "{e}");
    assert!(e.to_string().contains("/Stmt[1]/Ntry[1]/Amt[1] (line 91)"), "{e}");
    let e = error(
        Format::Camt053,
        &good.replace("<CdtDbtInd>CRDT</CdtDbtInd>\n                <RvslInd>", "<CdtDbtInd>CREDIT</CdtDbtInd>\n                <RvslInd>"),
    );
    assert!(matches!(e, ParseError::InvalidField { field: "direction", .. }), "{e}");
    let e = error(Format::Camt053, &good.replace("</Ntry>", "</Ntri>"));
    assert!(matches!(&e, ParseError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("line 169") && e.to_string().contains("Ntry"), "{e}");
    let e = error(Format::Camt053, &good[..good.len() / 2]);
    assert!(e.to_string().contains("truncated"), "{e}");
    // A camt.054 sent as camt.053.
    let e = error(Format::Camt053, &sample("camt054-genkgo-v2.xml"));
    assert!(matches!(e, ParseError::Unsupported { .. }), "{e}");
    // In EUR, the sample's closing balance is 18.15 + 8.85: one cent more must be refused.
    let e = error(
        Format::Camt053,
        &good.replace("<Amt Ccy=\"SEK\">27.00</Amt>\n                <CdtDbtInd>DBIT", "<Amt Ccy=\"EUR\">27.01</Amt>\n                <CdtDbtInd>CRDT"),
    );
    assert!(matches!(e, ParseError::Inconsistent { .. }), "{e}");
    let fixed = good.replace("<Amt Ccy=\"SEK\">27.00</Amt>\n                <CdtDbtInd>DBIT", "<Amt Ccy=\"EUR\">27.00</Amt>\n                <CdtDbtInd>CRDT");
    assert_eq!(parse(Format::Camt053, &fixed, None).unwrap().closing_balance_minor, Some(2700));
}

#[test]
fn csv_default_profile_reads_signed_amounts() {
    let text =
        "date,amount,currency,reference,counterparty,description\n2026-11-02,125.00,USD,INV-1,ACME Corp,invoice 1\n2026-11-03,-40.5,USD,,Landlord,rent\n";
    let s = parse(Format::Csv, text, None).unwrap();
    assert_eq!(s.lines.iter().map(|l| l.amount_minor).collect::<Vec<_>>(), vec![12_500, -4050]);
    assert_eq!(s.lines[0].references.customer_reference.as_deref(), Some("INV-1"));
    assert_eq!(s.lines[1].position, Position::Line(3));
    let e = parse(Format::Csv, &text.replace("-40.5", "-40.555"), None).unwrap_err();
    assert!(matches!(e, ParseError::InvalidField { at: Position::Line(3), field: "amount", .. }), "{e}");
    let e = parse(Format::Csv, &text.replace("2026-11-03", "2026-02-30"), None).unwrap_err();
    assert!(matches!(e, ParseError::InvalidField { at: Position::Line(3), field: "date", .. }), "{e}");
}

#[test]
fn csv_profile_reads_a_european_export_with_split_columns() {
    let profile: settle_recon::csv::CsvProfile = serde_json::from_str(
        r#"{"delimiter": ";", "skip_lines": 2, "date_column": "Buchungstag", "date_format": "DD.MM.YYYY",
            "amount_column": null, "credit_column": "Haben", "debit_column": "Soll", "decimal_separator": ",",
            "thousands_separator": ".", "currency": "EUR", "currency_column": null, "reference_column": "Referenz",
            "counterparty_column": "Name", "description_column": "Text", "account": "DE89370400440532013000"}"#,
    )
    .unwrap();
    let text = "Kontoauszug\nKonto DE89370400440532013000\nBuchungstag;Name;Text;Referenz;Soll;Haben\n01.11.2026;Miete GmbH;Miete;R-7;1.200,00;\n02.11.2026;Kunde AG;Rechnung 9;R-9;;3.450,10\n";
    let s = parse(Format::Csv, text, Some(&profile)).unwrap();
    assert_eq!(s.account, "DE89370400440532013000");
    assert_eq!(s.lines.iter().map(|l| l.amount_minor).collect::<Vec<_>>(), vec![-120_000, 345_010]);
    assert_eq!(s.lines[1].position, Position::Line(5));
    assert_eq!(s.lines[0].counterparty_name.as_deref(), Some("Miete GmbH"));
}

#[test]
fn fingerprints_ignore_layout_and_see_content() {
    let text = sample("mt940-danske-dk-example.sta");
    let a = parse(Format::Mt940, &text, None).unwrap();
    let b = parse(Format::Mt940, &text.replace('\n', "\r\n"), None).unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    let c = parse(Format::Mt940, &text.replace("NTRFDansken", "NTRFDanskex"), None).unwrap();
    assert_ne!(a.fingerprint(), c.fingerprint());
    assert_eq!(a.fingerprint().len(), 64);
}

#[test]
fn empty_and_oversized_files_are_refused_plainly() {
    for format in Format::ALL {
        assert_eq!(parse(format, "  \n", None), Err(ParseError::Empty));
    }
    let big = "x".repeat(settle_recon::MAX_STATEMENT_BYTES + 1);
    assert!(matches!(parse(Format::Mt940, &big, None), Err(ParseError::TooLarge { .. })));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            for format in Format::ALL {
                let _ = parse(format, &text, None);
            }
        }

        #[test]
        fn mutated_samples_never_panic(cut in 0usize..3000, byte in any::<u8>(), which in 0usize..6) {
            let names = ["bai2-moov-sample1.txt", "bai2-moov-spec-section3.txt", "mt940-danske-dk-example.sta",
                "mt940-sparkasse-buxtehude.sta", "camt053-genkgo-v2-minimal.xml", "camt054-genkgo-v2.xml"];
            let formats = [Format::Bai2, Format::Bai2, Format::Mt940, Format::Mt940, Format::Camt053, Format::Camt054];
            let mut bytes = sample(names[which]).into_bytes();
            let at = cut % bytes.len().max(1);
            bytes[at] = byte;
            let truncated = &bytes[..at.max(1)];
            for candidate in [&bytes[..], truncated] {
                let text = String::from_utf8_lossy(candidate);
                let _ = parse(formats[which], &text, None);
                let _ = parse(Format::Csv, &text, None);
            }
        }
    }
}
