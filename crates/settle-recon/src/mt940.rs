//! SWIFT MT940 customer statements.
//!
//! Quirks handled, all seen in banks' real files:
//! - Lines before the first `:20:` (bank headers such as `ABNANL2A` / `940`,
//!   explanatory text, `{1:…}{2:…}{4:` block headers) and `-` / `-}`
//!   message separators are skipped.
//! - A file may hold several messages (one per day, or pages `:60M:` /
//!   `:62M:`). They are read as one statement when they are for one account
//!   and currency, each page's opening balance equals the previous page's
//!   closing balance, and each page adds up: `:60F:` + lines = `:62F:`.
//!   Anything else is an error naming the line.
//! - `:86:` may span several lines, or repeat; its text becomes the line's
//!   description. German `?20…?33` sub-fields give the counterparty.
//! - `:61:` booking date (MMDD) may fall in the year after or before the
//!   value date (a statement across New Year).

use crate::amount::{make_date, parse_decimal, parse_yymmdd};
use crate::model::{Direction, Format, ParseError, Position, References, Statement, StatementLine};
use settle_core::money::Currency;
use time::Date;

/// One field: its tag, the line it starts on, and its text (continuation lines joined by `\n`).
struct Field {
    tag: String,
    line: usize,
    text: String,
}

/// Splits the file into fields, grouped by message (a `:20:` starts one).
fn messages(content: &str) -> Vec<Vec<Field>> {
    let mut messages: Vec<Vec<Field>> = Vec::new();
    let mut started = false;
    for (index, raw) in content.split('\n').enumerate() {
        let line_no = index + 1;
        let line = raw.trim_end_matches('\r');
        let trimmed = line.trim();
        if trimmed == "-" || trimmed == "-}" || trimmed.starts_with("-}{") || (trimmed.is_empty()) {
            continue;
        }
        // `{4:` may precede the first tag on the same line.
        let line = match line.rfind("{4:") {
            Some(at) => &line[at + 3..],
            None => line,
        };
        if let Some(tag) = tag_of(line) {
            if tag == "20" {
                started = true;
                messages.push(Vec::new());
            }
            if let Some(message) = messages.last_mut() {
                let text = line[tag.len() + 2..].to_owned();
                message.push(Field { tag: tag.to_owned(), line: line_no, text });
            }
        } else if started && let Some(field) = messages.last_mut().and_then(|m| m.last_mut()) {
            field.text.push('\n');
            field.text.push_str(line);
        }
    }
    messages
}

/// `:61:` → `61`; `:28C:` → `28C`; anything else → `None`.
fn tag_of(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(':')?;
    let end = rest.find(':')?;
    let tag = &rest[..end];
    let ok = (2..=3).contains(&tag.len()) && tag.as_bytes()[..2].iter().all(u8::is_ascii_digit) && tag.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then_some(tag)
}

/// `C110522EUR3236,28` → (signed minor, date, currency).
fn balance(field: &Field) -> Result<(i64, Date, Currency), ParseError> {
    let at = Position::Line(field.line);
    let text = field.text.trim();
    let err = |m: String| ParseError::field(at.clone(), "balance", format!(":{}: {m}", field.tag));
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'C') => (1, &text[1..]),
        Some(b'D') => (-1, &text[1..]),
        _ => return Err(err(format!("{text:?} must start with C or D"))),
    };
    let date = rest.get(..6).ok_or_else(|| err(String::from("too short")))?;
    let date = parse_yymmdd(date).map_err(err)?;
    let code = rest.get(6..9).ok_or_else(|| err(String::from("no currency")))?;
    let currency = Currency::parse(code).ok_or_else(|| err(format!("{code:?} is not an ISO 4217 currency")))?;
    let amount = parse_decimal(&rest[9..], currency, ',').map_err(err)?;
    Ok((sign * amount, date, currency))
}

/// The `?NN` sub-fields of a German-style `:86:` (`166?00SEPA-GUTSCHRIFT?20…?32NAME`).
fn subfields(text: &str) -> Option<Vec<(String, String)>> {
    let flat: String = text.split('\n').collect();
    let body = flat.get(3..)?;
    if !flat.get(..3)?.bytes().all(|b| b.is_ascii_digit()) || !body.starts_with('?') {
        return None;
    }
    let mut out = Vec::new();
    for part in body.split('?').skip(1) {
        if part.len() >= 2 && part.is_char_boundary(2) {
            out.push((part[..2].to_owned(), part[2..].trim().to_owned()));
        }
    }
    Some(out)
}

fn clean(text: &str) -> Option<String> {
    let joined = text.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    let collapsed = joined.split_whitespace().collect::<Vec<_>>().join(" ");
    (!collapsed.is_empty()).then_some(collapsed)
}

fn statement_line(field: &Field, currency: Currency) -> Result<StatementLine, ParseError> {
    let at = Position::Line(field.line);
    let err = |m: String| ParseError::field(at.clone(), "statement_line", format!(":61: {m}"));
    let mut lines = field.text.split('\n');
    let first = lines.next().unwrap_or("").trim_end();
    let supplementary = clean(&lines.collect::<Vec<_>>().join("\n"));
    let value_date = parse_yymmdd(first.get(..6).ok_or_else(|| err(String::from("too short for a value date")))?).map_err(err)?;
    let mut rest = &first[6..];
    let mut booking_date = value_date;
    if rest.len() >= 4 && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
        let month = rest[..2].parse::<u8>().unwrap_or(0);
        let day = rest[2..4].parse::<u8>().unwrap_or(0);
        // The entry date has no year: take the value date's, moved by one
        // when the two straddle New Year.
        let mut year = value_date.year();
        let value_month = u8::from(value_date.month());
        if month == 1 && value_month == 12 {
            year += 1;
        } else if month == 12 && value_month == 1 {
            year -= 1;
        }
        booking_date = make_date(year, month, day).ok_or_else(|| err(format!("entry date {:?} is not a calendar date", &rest[..4])))?;
        rest = &rest[4..];
    }
    let (direction, after_mark) = if let Some(r) = rest.strip_prefix("RC") {
        (Direction::Debit, r)
    } else if let Some(r) = rest.strip_prefix("RD") {
        (Direction::Credit, r)
    } else if let Some(r) = rest.strip_prefix("EC").or_else(|| rest.strip_prefix('C')) {
        (Direction::Credit, r)
    } else if let Some(r) = rest.strip_prefix("ED").or_else(|| rest.strip_prefix('D')) {
        (Direction::Debit, r)
    } else {
        return Err(err(format!("{rest:?}: a debit/credit mark (C, D, RC, RD) was expected after the dates")));
    };
    // An optional funds code: the third letter of the currency code.
    let after_funds = match after_mark.as_bytes().first() {
        Some(b) if b.is_ascii_alphabetic() => &after_mark[1..],
        _ => after_mark,
    };
    let amount_len = after_funds.bytes().take_while(|b| b.is_ascii_digit() || *b == b',').count();
    let amount = parse_decimal(&after_funds[..amount_len], currency, ',').map_err(err)?;
    let rest = &after_funds[amount_len..];
    // Transaction type: N, F or S and three characters.
    if rest.len() < 4 || !matches!(rest.as_bytes()[0], b'N' | b'F' | b'S') || !rest.is_char_boundary(4) {
        return Err(err(format!("{rest:?}: a transaction type (N, F or S and 3 characters) was expected after the amount")));
    }
    let refs = &rest[4..];
    let (customer, bank) = match refs.split_once("//") {
        Some((c, b)) => (c, Some(b)),
        None => (refs, None),
    };
    let some = |t: &str| {
        let t = t.trim();
        (!t.is_empty() && t != "NONREF").then(|| t.to_owned())
    };
    let signed = match direction {
        Direction::Credit => amount,
        Direction::Debit => -amount,
    };
    Ok(StatementLine {
        booking_date,
        value_date: Some(value_date),
        amount_minor: signed,
        currency,
        direction,
        references: References { end_to_end_id: None, bank_reference: bank.and_then(some), customer_reference: some(customer) },
        counterparty_name: None,
        counterparty_account: None,
        description: supplementary,
        position: at,
    })
}

/// Adds `:86:` information to the line it follows.
fn add_information(line: &mut StatementLine, text: &str) {
    if let Some(subs) = subfields(text) {
        let get = |codes: &[&str]| {
            let joined = subs.iter().filter(|(c, _)| codes.contains(&c.as_str())).map(|(_, v)| v.as_str()).collect::<Vec<_>>().join("");
            (!joined.is_empty()).then_some(joined)
        };
        line.counterparty_name = get(&["32", "33"]).or(line.counterparty_name.take());
        line.counterparty_account = get(&["31"]).or(line.counterparty_account.take());
        let purpose = get(&["20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "60", "61", "62", "63"]);
        if let Some(p) = purpose {
            // SEPA end-to-end references travel in the purpose as `EREF+…`.
            if let Some(eref) = p.split("EREF+").nth(1) {
                let mut eref: &str = eref.split_whitespace().next().unwrap_or("");
                for keyword in ["KREF+", "MREF+", "CRED+", "DEBT+", "SVWZ+", "ABWA+", "ABWE+", "IBAN+", "BIC+"] {
                    if let Some((head, _)) = eref.split_once(keyword) {
                        eref = head;
                    }
                }
                if !eref.is_empty() && eref != "NOTPROVIDED" {
                    line.references.end_to_end_id = Some(eref.to_owned());
                }
            }
            line.description = Some(p);
        }
        return;
    }
    if let Some(info) = clean(text) {
        line.description = Some(match line.description.take() {
            Some(existing) => format!("{existing} {info}"),
            None => info,
        });
    }
}

pub fn parse(content: &str) -> Result<Statement, ParseError> {
    let messages = messages(content);
    if messages.is_empty() {
        return Err(ParseError::invalid(Position::Line(1), "no :20: tag found: this is not an MT940 statement"));
    }
    let mut account: Option<(String, usize)> = None;
    let mut statement_id: Option<String> = None;
    let mut currency: Option<Currency> = None;
    let mut first_opening: Option<(i64, Date)> = None;
    let mut last_closing: Option<(i64, Date, usize)> = None;
    let mut lines: Vec<StatementLine> = Vec::new();
    for message in &messages {
        let start = message.first().map_or(1, |f| f.line);
        let mut opening: Option<(i64, Date, usize)> = None;
        let mut closing: Option<(i64, Date, usize)> = None;
        let mut sum: i64 = 0;
        let mut current: Option<usize> = None;
        for field in message {
            let at = Position::Line(field.line);
            match field.tag.as_str() {
                "20" if statement_id.is_none() => statement_id = clean(&field.text),
                "20" => {}
                "25" => {
                    let text = clean(&field.text).ok_or_else(|| ParseError::field(at.clone(), "account", ":25: is empty"))?;
                    match &account {
                        Some((a, first)) if *a != text => {
                            return Err(ParseError::invalid(at, format!(":25: names another account than line {first}; import one file per account")));
                        }
                        Some(_) => {}
                        None => account = Some((text, field.line)),
                    }
                }
                "60F" | "60M" => {
                    let (amount, date, cur) = balance(field)?;
                    match currency {
                        Some(c) if c != cur => {
                            return Err(ParseError::field(at, "currency", format!(":{}: is in {cur}, the statement in {c}", field.tag)));
                        }
                        _ => currency = Some(cur),
                    }
                    if let Some((previous, _, line)) = last_closing
                        && previous != amount
                    {
                        return Err(ParseError::Inconsistent {
                            at,
                            message: format!(
                                "opening balance {} {cur} does not continue the closing balance {} {cur} of line {line}: a statement is missing",
                                crate::amount::format_minor(amount, cur),
                                crate::amount::format_minor(previous, cur)
                            ),
                        });
                    }
                    if first_opening.is_none() {
                        first_opening = Some((amount, date));
                    }
                    opening = Some((amount, date, field.line));
                }
                "61" => {
                    let cur = currency.ok_or_else(|| ParseError::invalid(at.clone(), ":61: before the opening balance (:60F:)"))?;
                    let line = statement_line(field, cur)?;
                    sum = sum.checked_add(line.amount_minor).ok_or_else(|| ParseError::invalid(at.clone(), "the lines' sum overflows"))?;
                    lines.push(line);
                    current = Some(lines.len() - 1);
                }
                "86" => {
                    if let Some(i) = current
                        && let Some(line) = lines.get_mut(i)
                    {
                        add_information(line, &field.text);
                    }
                }
                "62F" | "62M" => {
                    let (amount, date, cur) = balance(field)?;
                    if currency.is_some_and(|c| c != cur) {
                        return Err(ParseError::field(at, "currency", format!(":{}: is in {cur}, the statement is not", field.tag)));
                    }
                    closing = Some((amount, date, field.line));
                    current = None;
                }
                _ => {}
            }
        }
        let cur = currency.ok_or_else(|| ParseError::invalid(Position::Line(start), "the message has no opening balance (:60F: or :60M:)"))?;
        let (open, _, _) = opening.ok_or_else(|| ParseError::invalid(Position::Line(start), "the message has no opening balance (:60F: or :60M:)"))?;
        let (close, close_date, close_line) =
            closing.ok_or_else(|| ParseError::invalid(Position::Line(start), "the message has no closing balance (:62F: or :62M:)"))?;
        let expected = open.checked_add(sum).ok_or_else(|| ParseError::invalid(Position::Line(close_line), "the balance overflows"))?;
        if expected != close {
            let f = |v: i64| crate::amount::format_minor(v, cur);
            return Err(ParseError::Inconsistent {
                at: Position::Line(close_line),
                message: format!(
                    "closing balance {} {cur} does not equal the opening balance {} plus the lines' sum {} = {}",
                    f(close),
                    f(open),
                    f(sum),
                    f(expected)
                ),
            });
        }
        last_closing = Some((close, close_date, close_line));
    }
    let (account, _) = account.ok_or_else(|| ParseError::invalid(Position::Line(1), "no account (:25:)"))?;
    let currency = currency.ok_or_else(|| ParseError::invalid(Position::Line(1), "no opening balance (:60F:)"))?;
    Ok(Statement {
        format: Format::Mt940,
        statement_id,
        account,
        currency,
        opening_balance_minor: first_opening.map(|(a, _)| a),
        closing_balance_minor: last_closing.map(|(a, _, _)| a),
        period_start: first_opening.map(|(_, d)| d),
        period_end: last_closing.map(|(_, d, _)| d),
        lines,
    })
}
