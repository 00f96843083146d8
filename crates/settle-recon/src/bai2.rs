//! BAI2 (ANSI X9.121) balance and transaction reports.
//!
//! Records: `01` file header, `02` group header (as-of date, currency),
//! `03` account identifier with summary and balance amounts, `16`
//! transaction detail, `88` continuation of the record before it, `49`
//! account trailer, `98` group trailer, `99` file trailer. One record per
//! physical line, ending in `/` (a detail's free text, last in its record,
//! may itself contain `,` and `/`).
//!
//! The trailers are checked, as a bank's own receiving system would: each
//! `49` control total is the algebraic sum of the amounts in its `03` (and
//! `88`) and `16` records and its record count counts them; `98` sums its
//! `49`s and counts its records and accounts; `99` sums the `98`s and counts
//! groups and records. Any difference is an error naming the trailer's line.
//!
//! Several `03` records for one account (one per day) are read as one
//! statement; `03` records for different accounts are refused (one file per
//! bank account). Type codes 100–399 are credits, 400–699 debits; other
//! detail codes (loans, custom) are refused as unsupported. Balances: opening
//! is type `010` (opening ledger), else `040` (opening available); closing
//! is `015` (closing ledger), else `045` (closing available). Amounts have
//! implied decimals per the currency's exponent; the currency defaults to the
//! group's, and the group's to USD, as the specification says.

use crate::amount::{parse_implied, parse_yymmdd};
use crate::model::{Direction, Format, ParseError, Position, References, Statement, StatementLine};
use settle_core::money::Currency;
use time::Date;

struct Record {
    line: usize,
    fields: Vec<String>,
    /// Physical lines (the record and its `88` continuations): trailers count these.
    physical_lines: usize,
}

fn records(content: &str) -> Result<Vec<Record>, ParseError> {
    let mut out: Vec<Record> = Vec::new();
    for (index, raw) in content.split('\n').enumerate() {
        let line_no = index + 1;
        let line = raw.trim_end_matches('\r').trim_end();
        if line.is_empty() {
            continue;
        }
        let body = line.strip_suffix('/').unwrap_or(line);
        let fields: Vec<String> = body.split(',').map(str::to_owned).collect();
        let code = fields.first().map(String::as_str).unwrap_or("");
        if code == "88" {
            let previous = out.last_mut().ok_or_else(|| ParseError::invalid(Position::Line(line_no), "88 continuation with no record before it"))?;
            previous.fields.extend(fields.into_iter().skip(1));
            previous.physical_lines += 1;
            continue;
        }
        if !matches!(code, "01" | "02" | "03" | "16" | "49" | "98" | "99") {
            return Err(ParseError::invalid(Position::Line(line_no), format!("{code:?} is not a BAI2 record code (01, 02, 03, 16, 49, 88, 98, 99)")));
        }
        out.push(Record { line: line_no, fields, physical_lines: 1 });
    }
    Ok(out)
}

fn get<'a>(r: &'a Record, i: usize, name: &'static str) -> Result<&'a str, ParseError> {
    r.fields.get(i).map(|s| s.trim()).ok_or_else(|| ParseError::field(Position::Line(r.line), name, format!("record {} has no field {}", r.fields[0], i + 1)))
}

fn number(r: &Record, i: usize, name: &'static str) -> Result<i64, ParseError> {
    let text = get(r, i, name)?;
    parse_implied(text).map_err(|m| ParseError::field(Position::Line(r.line), name, m))
}

/// How many fields follow a funds type (`S`: three amounts; `V`: date and
/// time; `D`: a count then that many day/amount pairs). Returns the extra
/// amounts (they count in control totals), the value date, and the fields used.
fn funds(r: &Record, at: usize) -> Result<(Vec<i64>, Option<Date>, usize), ParseError> {
    let kind = r.fields.get(at).map(|s| s.trim()).unwrap_or("");
    let pos = Position::Line(r.line);
    match kind {
        "" | "0" | "1" | "2" | "Z" => Ok((Vec::new(), None, 1)),
        "S" => {
            let mut amounts = Vec::new();
            for i in 1..=3 {
                let text = get(r, at + i, "funds_type")?;
                if !text.is_empty() {
                    amounts.push(parse_implied(text).map_err(|m| ParseError::field(pos.clone(), "funds_type", m))?);
                }
            }
            Ok((amounts, None, 4))
        }
        "V" => {
            let date = get(r, at + 1, "value_date")?;
            let date = parse_yymmdd(date).map_err(|m| ParseError::field(pos.clone(), "value_date", m))?;
            Ok((Vec::new(), Some(date), 3))
        }
        "D" => {
            let count = get(r, at + 1, "funds_type")?;
            let count: usize = count.parse().map_err(|_| ParseError::field(pos.clone(), "funds_type", format!("{count:?} is not a distribution count")))?;
            if count > 100 {
                return Err(ParseError::field(pos, "funds_type", "more than 100 availability distributions"));
            }
            let mut amounts = Vec::new();
            for k in 0..count {
                let text = get(r, at + 3 + 2 * k, "funds_type")?;
                amounts.push(parse_implied(text).map_err(|m| ParseError::field(pos.clone(), "funds_type", m))?);
            }
            Ok((amounts, None, 2 + 2 * count))
        }
        other => Err(ParseError::field(pos, "funds_type", format!("{other:?} is not a funds type (0, 1, 2, S, V, D, Z)"))),
    }
}

fn add(total: i64, v: i64, at: usize) -> Result<i64, ParseError> {
    total.checked_add(v).ok_or_else(|| ParseError::invalid(Position::Line(at), "a control total overflows"))
}

fn check(at: usize, what: &str, stated: i64, computed: i64) -> Result<(), ParseError> {
    if stated == computed {
        Ok(())
    } else {
        Err(ParseError::Inconsistent { at: Position::Line(at), message: format!("{what}: the trailer says {stated}, the records add up to {computed}") })
    }
}

fn direction_of(code: &str, at: usize) -> Result<Direction, ParseError> {
    let n: u16 = code.parse().map_err(|_| ParseError::field(Position::Line(at), "type_code", format!("{code:?} is not a type code")))?;
    match n {
        100..=399 => Ok(Direction::Credit),
        400..=699 => Ok(Direction::Debit),
        _ => Err(ParseError::Unsupported {
            at: Position::Line(at),
            message: format!("detail type code {n} is neither a credit (100–399) nor a debit (400–699)"),
        }),
    }
}

pub fn parse(content: &str) -> Result<Statement, ParseError> {
    let records = records(content)?;
    let first = records.first().ok_or(ParseError::Empty)?;
    if first.fields[0] != "01" {
        return Err(ParseError::invalid(Position::Line(first.line), "a BAI2 file starts with a 01 file header"));
    }
    let mut account: Option<String> = None;
    let mut currency: Option<Currency> = None;
    let mut opening: Option<i64> = None;
    let mut closing: Option<i64> = None;
    let mut dates: Vec<Date> = Vec::new();
    let mut lines: Vec<StatementLine> = Vec::new();

    let mut group_currency: Option<Currency> = None;
    let mut group_date: Option<Date> = None;
    let mut in_account: Option<Currency> = None;
    let (mut account_total, mut account_records) = (0i64, 0i64);
    let (mut group_total, mut group_records, mut group_accounts) = (0i64, 0i64, 0i64);
    let (mut file_total, mut file_records, mut file_groups) = (0i64, 0i64, 0i64);
    let mut in_group = false;
    let mut finished = false;

    for r in &records {
        let n = r.physical_lines as i64;
        if finished {
            return Err(ParseError::invalid(Position::Line(r.line), "records after the 99 file trailer"));
        }
        file_records += n;
        let code = r.fields[0].as_str();
        match code {
            "01" if r.line != first.line => {
                return Err(ParseError::invalid(Position::Line(r.line), "a second 01 file header"));
            }
            "01" => {}
            "02" => {
                if in_group {
                    return Err(ParseError::invalid(Position::Line(r.line), "02 group header inside a group (missing 98)"));
                }
                in_group = true;
                group_total = 0;
                group_records = n;
                group_accounts = 0;
                let date = get(r, 4, "as_of_date")?;
                group_date = Some(parse_yymmdd(date).map_err(|m| ParseError::field(Position::Line(r.line), "as_of_date", m))?);
                let code = r.fields.get(6).map(|s| s.trim()).unwrap_or("");
                group_currency = if code.is_empty() {
                    None
                } else {
                    Some(
                        Currency::parse(code)
                            .ok_or_else(|| ParseError::field(Position::Line(r.line), "currency", format!("{code:?} is not an ISO 4217 currency")))?,
                    )
                };
            }
            "03" => {
                if !in_group || in_account.is_some() {
                    return Err(ParseError::invalid(Position::Line(r.line), "03 account record outside a group, or before the previous account's 49"));
                }
                let account_number = get(r, 1, "account")?.to_owned();
                if account_number.is_empty() {
                    return Err(ParseError::field(Position::Line(r.line), "account", "the account number is empty"));
                }
                match &account {
                    Some(a) if *a != account_number => {
                        return Err(ParseError::invalid(Position::Line(r.line), "a second bank account in one file; import one file per account"));
                    }
                    _ => account = Some(account_number),
                }
                let code = r.fields.get(2).map(|s| s.trim()).unwrap_or("");
                let cur = if code.is_empty() { group_currency.or(Currency::parse("USD")) } else { Currency::parse(code) }
                    .ok_or_else(|| ParseError::field(Position::Line(r.line), "currency", format!("{code:?} is not an ISO 4217 currency")))?;
                match currency {
                    Some(c) if c != cur => return Err(ParseError::field(Position::Line(r.line), "currency", format!("{cur} differs from the earlier {c}"))),
                    _ => currency = Some(cur),
                }
                in_account = Some(cur);
                account_total = 0;
                account_records = n;
                group_accounts += 1;
                if let Some(d) = group_date {
                    dates.push(d);
                }
                let (mut day_opening, mut day_available_opening, mut day_closing, mut day_available_closing) = (None, None, None, None);
                let mut i = 3;
                while i < r.fields.len() {
                    let type_code = r.fields[i].trim();
                    if type_code.is_empty() && r.fields[i..].iter().all(|f| f.trim().is_empty()) {
                        break;
                    }
                    let amount_text = get(r, i + 1, "amount")?;
                    let amount = if amount_text.is_empty() { 0 } else { number(r, i + 1, "amount")? };
                    account_total = add(account_total, amount, r.line)?;
                    // Field i+2 is the item count; i+3 the funds type.
                    let (extra, _, used) = funds(r, i + 3)?;
                    for e in extra {
                        account_total = add(account_total, e, r.line)?;
                    }
                    match type_code {
                        "010" => day_opening = Some(amount),
                        "040" => day_available_opening = Some(amount),
                        "015" => day_closing = Some(amount),
                        "045" => day_available_closing = Some(amount),
                        _ => {}
                    }
                    i += 3 + used;
                }
                if opening.is_none() {
                    opening = day_opening.or(day_available_opening);
                }
                if let Some(c) = day_closing.or(day_available_closing) {
                    closing = Some(c);
                }
            }
            "16" => {
                let cur = in_account.ok_or_else(|| ParseError::invalid(Position::Line(r.line), "16 detail outside an account (before its 03)"))?;
                account_records += n;
                let type_code = get(r, 1, "type_code")?;
                let direction = direction_of(type_code, r.line)?;
                let amount_text = get(r, 2, "amount")?;
                let amount = if amount_text.is_empty() { 0 } else { number(r, 2, "amount")? };
                if amount < 0 {
                    return Err(ParseError::field(Position::Line(r.line), "amount", "detail amounts are unsigned"));
                }
                account_total = add(account_total, amount, r.line)?;
                let (extra, value_date, used) = funds(r, 3)?;
                for e in extra {
                    account_total = add(account_total, e, r.line)?;
                }
                let after = 3 + used;
                let some = |t: Option<&String>| t.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
                let bank_reference = some(r.fields.get(after));
                let customer_reference = some(r.fields.get(after + 1));
                let text = r.fields.get(after + 2..).map(|rest| rest.join(",")).unwrap_or_default();
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                let booking_date = group_date.ok_or_else(|| ParseError::invalid(Position::Line(r.line), "no as-of date"))?;
                lines.push(StatementLine {
                    booking_date,
                    value_date,
                    amount_minor: if direction == Direction::Credit { amount } else { -amount },
                    currency: cur,
                    direction,
                    references: References { end_to_end_id: None, bank_reference, customer_reference },
                    counterparty_name: None,
                    counterparty_account: None,
                    description: (!text.is_empty()).then_some(text),
                    position: Position::Line(r.line),
                });
                continue;
            }
            "49" => {
                if in_account.is_none() {
                    return Err(ParseError::invalid(Position::Line(r.line), "49 account trailer without an account"));
                }
                account_records += n;
                check(r.line, "account control total (49)", number(r, 1, "control_total")?, account_total)?;
                check(r.line, "account record count (49)", number(r, 2, "record_count")?, account_records)?;
                group_total = add(group_total, account_total, r.line)?;
                group_records += account_records;
                in_account = None;
                continue;
            }
            "98" => {
                if !in_group || in_account.is_some() {
                    return Err(ParseError::invalid(Position::Line(r.line), "98 group trailer outside a group, or before the account's 49"));
                }
                group_records += n;
                check(r.line, "group control total (98)", number(r, 1, "control_total")?, group_total)?;
                check(r.line, "group account count (98)", number(r, 2, "account_count")?, group_accounts)?;
                check(r.line, "group record count (98)", number(r, 3, "record_count")?, group_records)?;
                file_total = add(file_total, group_total, r.line)?;
                file_groups += 1;
                in_group = false;
                continue;
            }
            "99" => {
                if in_group {
                    return Err(ParseError::invalid(Position::Line(r.line), "99 file trailer before the group's 98"));
                }
                check(r.line, "file control total (99)", number(r, 1, "control_total")?, file_total)?;
                check(r.line, "file group count (99)", number(r, 2, "group_count")?, file_groups)?;
                check(r.line, "file record count (99)", number(r, 3, "record_count")?, file_records)?;
                finished = true;
                continue;
            }
            _ => {}
        }
    }
    let last = records.last().map_or(1, |r| r.line);
    if !finished {
        return Err(ParseError::invalid(Position::Line(last), "the file ends without its 99 file trailer (truncated?)"));
    }
    let account = account.ok_or_else(|| ParseError::invalid(Position::Line(last), "no 03 account record"))?;
    let currency = currency.ok_or_else(|| ParseError::invalid(Position::Line(last), "no currency"))?;
    Ok(Statement {
        format: Format::Bai2,
        statement_id: None,
        account,
        currency,
        opening_balance_minor: opening,
        closing_balance_minor: closing,
        period_start: dates.iter().min().copied(),
        period_end: dates.iter().max().copied(),
        lines,
    })
}
