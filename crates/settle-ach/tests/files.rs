//! Real NACHA files from moov-io/ach (see `tests/data/README.md`): parsed,
//! written back byte for byte, and their returns and NOCs read.

use settle_ach::nacha::{self, AccountType, Direction, Originator, OutgoingEntry, ParseErrorKind, SecCode};
use settle_ach::routing::RoutingNumber;

fn sample(name: &str) -> String {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).expect("sample file")
}

#[test]
fn sample_files_round_trip_byte_for_byte() {
    for name in ["ppd-debit.ach", "cor-example.ach", "return-WEB.ach"] {
        let text = sample(name);
        let file = nacha::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(file.write(), text, "{name}");
    }
}

#[test]
fn a_ppd_debit_reads_as_a_debit_with_its_totals() {
    let file = nacha::parse(&sample("ppd-debit.ach")).expect("parse");
    let (batch, entry) = file.entries().next().expect("one entry");
    assert_eq!(batch.sec_code, "PPD");
    assert_eq!(entry.transaction_code, 27);
    assert!(entry.is_debit());
    assert_eq!(entry.amount_minor, 100_000_000);
    assert_eq!(entry.trace_number, "121042880000001");
    assert_eq!(file.control.total_debit_minor, 100_000_000);
}

#[test]
fn returns_carry_their_reason_and_original_trace() {
    let file = nacha::parse(&sample("return-WEB.ach")).expect("parse");
    let returns: Vec<_> =
        file.entries().filter_map(|(_, e)| e.return_addenda().map(|r| (r.reason_code.clone(), r.original_trace_number.clone(), e.amount_minor))).collect();
    assert_eq!(returns, vec![("R01".to_string(), "091400600000001".to_string(), 12354), ("R03".to_string(), "091400600000003".to_string(), 4565)]);
}

#[test]
fn a_notification_of_change_carries_the_corrected_data() {
    let file = nacha::parse(&sample("cor-example.ach")).expect("parse");
    let (batch, entry) = file.entries().next().expect("entry");
    assert_eq!(batch.sec_code, "COR");
    let change = entry.change_addenda().expect("98 addenda");
    assert_eq!(change.change_code, "C01");
    assert_eq!(change.original_trace_number, "121042880000001");
    assert_eq!(change.corrected_data.trim(), "1918171614");
}

#[test]
fn errors_name_the_line() {
    let text = sample("ppd-debit.ach");
    // A short record on line 3.
    let broken = text.replacen("62723138010412345678 ", "62723138010412345678", 1);
    assert_eq!(nacha::parse(&broken).map(|_| ()).map_err(|e| (e.line, e.kind)), Err((3, ParseErrorKind::RecordLength { found: 93 })));
    // A wrong amount on line 3 makes the batch control (line 4) disagree.
    let broken = text.replacen("0100000000", "0100000001", 1);
    let error = nacha::parse(&broken).expect_err("mismatch");
    assert_eq!(error.line, 4);
    assert!(matches!(error.kind, ParseErrorKind::ControlMismatch { field: "total debit", .. }), "{error}");
    assert_eq!(error.to_string(), "line 4: total debit says 100000000 but the records add up to 100000001");
    // A record type out of place.
    let broken = text.replacen("\n8225", "\n5225", 1);
    assert!(nacha::parse(&broken).is_err());
    assert_eq!(nacha::parse("").map_err(|e| e.kind), Err(ParseErrorKind::Empty));
    assert_eq!(nacha::parse("1é").map_err(|e| (e.line, e.kind)), Err((1, ParseErrorKind::NotAscii)));
}

#[test]
fn a_built_file_parses_back_with_correct_controls() {
    let originator = Originator {
        immediate_destination: RoutingNumber::parse("231380104").expect("routing"),
        immediate_destination_name: "Federal Reserve Bank".into(),
        immediate_origin: "121042882".into(),
        immediate_origin_name: "My Bank Name".into(),
        company_name: "Settle Sandbox".into(),
        company_identification: "1234567890".into(),
        odfi: RoutingNumber::parse("121042882").expect("routing"),
    };
    let entry = |direction, sec, amount_minor, trace_sequence, addenda: Option<&str>| OutgoingEntry {
        direction,
        account_type: AccountType::Checking,
        routing_number: RoutingNumber::parse("231380104").expect("routing"),
        account_number: "12345678".into(),
        amount_minor,
        individual_identification: "pay_01".into(),
        individual_name: "Jane Doe".into(),
        sec_code: sec,
        company_entry_description: "PAYROLL".into(),
        effective_date: "261201".into(),
        addenda: addenda.map(str::to_string),
        trace_sequence,
        prenote: false,
        dishonor: None,
    };
    let entries = [
        entry(Direction::Credit, SecCode::Ppd, 15_000, 1, None),
        entry(Direction::Debit, SecCode::Web, 2_500, 2, Some("invoice 42")),
        entry(Direction::Credit, SecCode::Ppd, 1, 3, None),
    ];
    let file = nacha::build_file(&originator, ("261130", "1030"), 'A', &entries).expect("build");
    let text = file.write();
    assert!(text.lines().all(|l| l.len() == 94));
    assert_eq!(text.lines().count() % 10, 0);
    let parsed = nacha::parse(&text).expect("parses");
    assert_eq!(parsed, file);
    assert_eq!(parsed.batches.len(), 2, "PPD and WEB are separate batches");
    assert_eq!(parsed.batches[0].header.service_class_code, 220);
    assert_eq!(parsed.batches[1].header.service_class_code, 225);
    assert_eq!(parsed.control.total_credit_minor, 15_001);
    assert_eq!(parsed.control.total_debit_minor, 2_500);
    assert_eq!(parsed.control.entry_hash, 3 * 23_138_010);
    assert_eq!(parsed.control.entry_addenda_count, 4);
    let traces: Vec<_> = parsed.entries().map(|(_, e)| e.trace_number.clone()).collect();
    assert_eq!(traces, ["121042880000001", "121042880000003", "121042880000002"]);
    let returned = parsed.returned_with("R01").expect("returns").write();
    let returns = nacha::parse(&returned).expect("the return file parses with its controls");
    assert!(returns.entries().all(|(_, e)| e.return_addenda().map(|r| r.reason_code.as_str()) == Some("R01")));
    assert_eq!(returns.control.entry_addenda_count, 6);
    // A dishonored return (R68, untimely) of the debit's R01: its own batch, the return's transaction code, a 99 addenda.
    let mut dishonored = entry(Direction::Debit, SecCode::Web, 2_500, 4, Some("invoice 42"));
    dishonored.dishonor = Some(nacha::Dishonor {
        dishonor_code: "R68".into(),
        original_trace_number: "121042880000002".into(),
        return_trace_number: "231380100000009".into(),
        return_settlement_date: "".into(),
        return_reason_code: "R01".into(),
    });
    let with_dishonor = [entries[1].clone(), dishonored];
    let text = nacha::build_file(&originator, ("261130", "1030"), 'B', &with_dishonor).expect("build").write();
    let parsed = nacha::parse(&text).expect("a file with a dishonored return parses with its controls");
    assert_eq!(parsed.batches.len(), 2, "a dishonored return is never batched with payments");
    let (_, e) = parsed.entries().nth(1).expect("the dishonor");
    assert_eq!(e.transaction_code, 26);
    let addenda = e.return_addenda().expect("a 99 addenda");
    assert_eq!((addenda.reason_code.as_str(), addenda.original_trace_number.as_str()), ("R68", "121042880000002"));
    assert_eq!(&addenda.information[3..18], "231380100000009");
    assert_eq!(&addenda.information[21..23], "01");
    assert_eq!(addenda.trace_number, e.trace_number);
    assert_eq!(nacha::file_id_modifier(0), Some('A'));
    assert_eq!(nacha::file_id_modifier(26), Some('0'));
    assert_eq!(nacha::file_id_modifier(36), None);
    // Prenotes: zero-dollar entries with the prenote codes (23 credit, 28 debit checking; 33, 38 savings), batched like any entry.
    let mut credit_prenote = entry(Direction::Credit, SecCode::Ppd, 0, 5, None);
    credit_prenote.prenote = true;
    let mut debit_prenote = entry(Direction::Debit, SecCode::Ppd, 0, 6, None);
    debit_prenote.prenote = true;
    debit_prenote.account_type = AccountType::Savings;
    let text = nacha::build_file(&originator, ("261130", "1030"), 'C', &[entries[0].clone(), credit_prenote.clone(), debit_prenote]).expect("build").write();
    let parsed = nacha::parse(&text).expect("a file with prenotes parses with its controls");
    assert_eq!(parsed.batches.len(), 1, "prenotes share the batch of live entries with the same SEC code, description and date");
    let codes: Vec<(u32, i64)> = parsed.entries().map(|(_, e)| (e.transaction_code, e.amount_minor)).collect();
    assert_eq!(codes, [(22, 15_000), (23, 0), (38, 0)]);
    assert_eq!(parsed.batches[0].header.service_class_code, 200, "a debit prenote makes the batch mixed");
    credit_prenote.amount_minor = 1;
    assert!(matches!(nacha::build_file(&originator, ("261130", "1030"), 'D', &[credit_prenote]), Err(nacha::BuildFileError::Amount { index: 0 })));
}
