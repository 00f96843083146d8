//! ISO 20022 camt.053 (BankToCustomerStatement) and camt.054
//! (BankToCustomerDebitCreditNotification), any version (001.02 to 001.13:
//! the elements read here kept their names; namespaces are ignored).
//!
//! The XML is read by `quick-xml` into a small tree (bounded in depth), then
//! walked. Quirks handled:
//! - One entry (`Ntry`) is one statement line: its amount is what moved on
//!   the account. A batch entry with several `TxDtls` keeps the first
//!   end-to-end id that is not `NOTPROVIDED`, the first creditor reference,
//!   and joins the remittance texts.
//! - Only booked entries (`Sts` `BOOK`, or `<Sts><Cd>BOOK</Cd></Sts>` from
//!   version 8) are read; pending and information-only entries are skipped.
//! - Dates come as `Dt` or `DtTm`; the date part of `DtTm` is used as written.
//! - The statement's currency is `Acct/Ccy`, else the first entry's. A
//!   balance in another currency is ignored (some banks add converted
//!   balances); an entry in another currency is an error.
//! - Opening balance: `OPBD`, else `PRCD`; closing: `CLBD`. When both are
//!   present, opening plus the entries must equal closing.
//! - Several `Stmt` / `Ntfctn` for one account are read as one statement;
//!   different accounts are refused (one file per account).
//! - The counterparty of a credit is the debtor, of a debit the creditor
//!   (`Nm` directly or inside `Pty`, as versions differ).

use crate::amount::{parse_decimal, parse_iso_date};
use crate::model::{Direction, Format, ParseError, Position, References, Statement, StatementLine};
use quick_xml::events::Event;
use settle_core::money::Currency;
use time::Date;

/// Deeper nesting than any camt message has; a bound so hostile input cannot recurse without end.
const MAX_DEPTH: usize = 64;

/// An element: its local name, text, attributes we need (`Ccy`), children,
/// and where it is (line, path) for error messages.
#[derive(Default)]
struct Node {
    name: String,
    text: String,
    ccy: Option<String>,
    children: Vec<Node>,
    line: usize,
    path: String,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, name| node.child(name))
    }

    fn text_at(&self, path: &[&str]) -> Option<String> {
        self.at(path).map(|n| n.text.trim().to_owned()).filter(|t| !t.is_empty())
    }

    fn position(&self) -> Position {
        Position::Element(format!("{} (line {})", self.path, self.line))
    }
}

fn line_of(content: &str, offset: u64) -> usize {
    let end = usize::try_from(offset).unwrap_or(usize::MAX).min(content.len());
    content.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// Reads the document into a tree. Errors name the line and the element being read.
fn tree(content: &str) -> Result<Node, ParseError> {
    let mut reader = quick_xml::Reader::from_str(content);
    let mut stack: Vec<Node> = vec![Node { name: String::new(), path: String::new(), ..Node::default() }];
    let here = |stack: &Vec<Node>| stack.last().map(|n| n.path.clone()).filter(|p| !p.is_empty()).unwrap_or_else(|| String::from("/"));
    loop {
        let offset = reader.buffer_position();
        let event = reader.read_event().map_err(|e| {
            let line = line_of(content, reader.error_position());
            ParseError::invalid(Position::Element(format!("{} (line {line})", here(&stack))), format!("not well-formed XML: {e}"))
        })?;
        match event {
            Event::Start(e) => {
                if stack.len() > MAX_DEPTH {
                    return Err(ParseError::invalid(Position::Element(here(&stack)), format!("elements nested deeper than {MAX_DEPTH}")));
                }
                stack.push(open(content, &stack, &e, offset)?);
            }
            Event::Empty(e) => {
                let node = open(content, &stack, &e, offset)?;
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(node);
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| ParseError::invalid(Position::Line(line_of(content, offset)), "unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Err(ParseError::invalid(Position::Line(line_of(content, offset)), "unbalanced end tag")),
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| ParseError::invalid(Position::Element(here(&stack)), format!("undecodable text: {e}")))?;
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&text);
                }
            }
            Event::CData(t) => {
                let text = t.decode().map_err(|e| ParseError::invalid(Position::Element(here(&stack)), format!("undecodable text: {e}")))?;
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| ParseError::invalid(Position::Element(here(&stack)), format!("undecodable reference: {e}")))?;
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => quick_xml::escape::resolve_predefined_entity(&name)
                        .map(str::to_owned)
                        .ok_or_else(|| ParseError::invalid(Position::Element(here(&stack)), format!("unknown entity &{name};")))?,
                    Err(e) => return Err(ParseError::invalid(Position::Element(here(&stack)), format!("bad character reference: {e}"))),
                };
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if stack.len() != 1 {
        return Err(ParseError::invalid(Position::Element(here(&stack)), "the document ends inside this element (truncated?)"));
    }
    let root = stack.pop().unwrap_or_default();
    if root.children.len() != 1 {
        return Err(ParseError::invalid(Position::Line(1), "an XML document has exactly one root element"));
    }
    Ok(root.children.into_iter().next().unwrap_or_default())
}

fn open(content: &str, stack: &[Node], e: &quick_xml::events::BytesStart<'_>, offset: u64) -> Result<Node, ParseError> {
    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    let parent = stack.last();
    let index = parent.map_or(0, |p| p.children.iter().filter(|c| c.name == name).count()) + 1;
    let path = format!("{}/{}[{index}]", parent.map(|p| p.path.as_str()).unwrap_or(""), name);
    let mut ccy = None;
    for attribute in e.attributes() {
        let attribute = attribute.map_err(|err| ParseError::invalid(Position::Element(path.clone()), format!("bad attribute: {err}")))?;
        if attribute.key.local_name().as_ref() == b"Ccy" {
            let value = attribute.unescape_value().map_err(|err| ParseError::invalid(Position::Element(path.clone()), format!("bad attribute: {err}")))?;
            ccy = Some(value.into_owned());
        }
    }
    Ok(Node { name, text: String::new(), ccy, children: Vec::new(), line: line_of(content, offset), path })
}

/// `Amt Ccy="EUR"` and a sibling `CdtDbtInd`: a signed amount in its currency.
fn amount(parent: &Node) -> Result<(i64, Currency, Direction), ParseError> {
    let amt = parent.child("Amt").ok_or_else(|| ParseError::invalid(parent.position(), "no Amt"))?;
    let code = amt.ccy.as_deref().ok_or_else(|| ParseError::field(amt.position(), "currency", "Amt has no Ccy attribute"))?;
    let currency = Currency::parse(code).ok_or_else(|| ParseError::field(amt.position(), "currency", format!("{code:?} is not an ISO 4217 currency")))?;
    let minor = parse_decimal(&amt.text, currency, '.').map_err(|m| ParseError::field(amt.position(), "amount", m))?;
    let indicator = parent.child("CdtDbtInd").ok_or_else(|| ParseError::invalid(parent.position(), "no CdtDbtInd"))?;
    let direction = match indicator.text.trim() {
        "CRDT" => Direction::Credit,
        "DBIT" => Direction::Debit,
        other => return Err(ParseError::field(indicator.position(), "direction", format!("{other:?} is not CRDT or DBIT"))),
    };
    Ok((if direction == Direction::Credit { minor } else { -minor }, currency, direction))
}

/// A `Dt` or `DtTm` child of `node`.
fn date(node: &Node, field: &'static str) -> Result<Date, ParseError> {
    let inner = node.child("Dt").or_else(|| node.child("DtTm")).ok_or_else(|| ParseError::field(node.position(), field, "no Dt or DtTm"))?;
    parse_iso_date(&inner.text).map_err(|m| ParseError::field(inner.position(), field, m))
}

fn account_id(acct: &Node) -> Option<String> {
    acct.text_at(&["Id", "IBAN"]).or_else(|| acct.text_at(&["Id", "Othr", "Id"]))
}

fn party_name(parties: &Node, role: &str) -> Option<String> {
    let p = parties.child(role)?;
    p.text_at(&["Nm"]).or_else(|| p.text_at(&["Pty", "Nm"]))
}

fn entry(ntry: &Node, currency: Currency) -> Result<Option<StatementLine>, ParseError> {
    let status = ntry.child("Sts").map(|s| s.text_at(&["Cd"]).unwrap_or_else(|| s.text.trim().to_owned()));
    if status.as_deref().is_some_and(|s| s != "BOOK") {
        return Ok(None);
    }
    let (minor, cur, direction) = amount(ntry)?;
    if cur != currency {
        return Err(ParseError::field(ntry.position(), "currency", format!("the entry is in {cur}, the statement in {currency}")));
    }
    let booking = ntry.child("BookgDt").ok_or_else(|| ParseError::invalid(ntry.position(), "no BookgDt"))?;
    let booking_date = date(booking, "booking_date")?;
    let value_date = ntry.child("ValDt").map(|v| date(v, "value_date")).transpose()?;
    let details: Vec<&Node> = ntry.child("NtryDtls").map(|d| d.all("TxDtls").collect()).unwrap_or_default();
    let first = |f: &dyn Fn(&Node) -> Option<String>| details.iter().find_map(|d| f(d));
    let end_to_end_id = first(&|d| d.text_at(&["Refs", "EndToEndId"]).filter(|r| r != "NOTPROVIDED"));
    let bank_reference = ntry.text_at(&["AcctSvcrRef"]).or_else(|| first(&|d| d.text_at(&["Refs", "AcctSvcrRef"]))).or_else(|| ntry.text_at(&["NtryRef"]));
    let customer_reference = first(&|d| d.child("RmtInf").and_then(|r| r.all("Strd").find_map(|s| s.text_at(&["CdtrRefInf", "Ref"]))))
        .or_else(|| first(&|d| d.text_at(&["Refs", "InstrId"])));
    let (role, account_role) = match direction {
        Direction::Credit => ("Dbtr", "DbtrAcct"),
        Direction::Debit => ("Cdtr", "CdtrAcct"),
    };
    let counterparty_name = first(&|d| d.child("RltdPties").and_then(|p| party_name(p, role)));
    let counterparty_account = first(&|d| d.at(&["RltdPties", account_role]).and_then(account_id));
    let texts: Vec<String> = details
        .iter()
        .flat_map(|d| d.child("RmtInf").into_iter().flat_map(|r| r.all("Ustrd").map(|u| u.text.trim().to_owned())))
        .filter(|t| !t.is_empty())
        .collect();
    let description = if texts.is_empty() { ntry.text_at(&["AddtlNtryInf"]).or_else(|| first(&|d| d.text_at(&["AddtlTxInf"]))) } else { Some(texts.join(" ")) };
    Ok(Some(StatementLine {
        booking_date,
        value_date,
        amount_minor: minor,
        currency,
        direction,
        references: References { end_to_end_id, bank_reference, customer_reference },
        counterparty_name,
        counterparty_account,
        description,
        position: ntry.position(),
    }))
}

pub fn parse(format: Format, content: &str) -> Result<Statement, ParseError> {
    let document = tree(content)?;
    if document.name != "Document" {
        return Err(ParseError::invalid(document.position(), format!("the root element is {}, not Document", document.name)));
    }
    let (container, item) = match format {
        Format::Camt053 => ("BkToCstmrStmt", "Stmt"),
        _ => ("BkToCstmrDbtCdtNtfctn", "Ntfctn"),
    };
    let body = document.child(container).ok_or_else(|| {
        let found = document.children.first().map_or("nothing", |c| c.name.as_str());
        ParseError::Unsupported { at: document.position(), message: format!("expected {container} ({}), found {found}", format.as_str()) }
    })?;
    let mut account: Option<String> = None;
    let mut statement_id: Option<String> = None;
    let mut currency: Option<Currency> = None;
    let mut opening: Option<i64> = None;
    let mut closing: Option<i64> = None;
    let mut period: (Option<Date>, Option<Date>) = (None, None);
    let mut lines = Vec::new();
    let statements: Vec<&Node> = body.all(item).collect();
    if statements.is_empty() {
        return Err(ParseError::invalid(body.position(), format!("no {item}")));
    }
    for stmt in statements {
        let acct = stmt.child("Acct").ok_or_else(|| ParseError::invalid(stmt.position(), "no Acct"))?;
        let id = account_id(acct).ok_or_else(|| ParseError::field(acct.position(), "account", "no Id/IBAN or Id/Othr/Id"))?;
        match &account {
            Some(a) if *a != id => return Err(ParseError::invalid(acct.position(), "a second bank account in one file; import one file per account")),
            _ => account = Some(id),
        }
        if statement_id.is_none() {
            statement_id = stmt.text_at(&["Id"]);
        }
        let declared = match acct.text_at(&["Ccy"]) {
            Some(code) => {
                Some(Currency::parse(&code).ok_or_else(|| ParseError::field(acct.position(), "currency", format!("{code:?} is not an ISO 4217 currency")))?)
            }
            None => None,
        };
        let first_entry = stmt.all("Ntry").find_map(|n| n.child("Amt").and_then(|a| a.ccy.as_deref()).and_then(Currency::parse));
        let cur = match declared.or(currency).or(first_entry) {
            Some(c) => c,
            None => match stmt.all("Bal").find_map(|b| b.child("Amt").and_then(|a| a.ccy.as_deref()).and_then(Currency::parse)) {
                Some(c) => c,
                None => return Err(ParseError::field(acct.position(), "currency", "no account currency, entry or balance to take it from")),
            },
        };
        if currency.is_some_and(|c| c != cur) {
            return Err(ParseError::field(acct.position(), "currency", "a second currency in one file"));
        }
        currency = Some(cur);
        let (mut stmt_open, mut stmt_close, mut prcd) = (None, None, None);
        for bal in stmt.all("Bal") {
            let code = bal.text_at(&["Tp", "CdOrPrtry", "Cd"]).unwrap_or_default();
            if !matches!(code.as_str(), "OPBD" | "PRCD" | "CLBD") {
                continue;
            }
            let (minor, bal_cur, _) = amount(bal)?;
            if bal_cur != cur {
                continue;
            }
            match code.as_str() {
                "OPBD" => stmt_open = Some((minor, bal)),
                "PRCD" => prcd = Some((minor, bal)),
                _ => stmt_close = Some((minor, bal)),
            }
        }
        let stmt_open = stmt_open.or(prcd);
        let mut sum: i64 = 0;
        for ntry in stmt.all("Ntry") {
            if let Some(line) = entry(ntry, cur)? {
                sum = sum.checked_add(line.amount_minor).ok_or_else(|| ParseError::invalid(ntry.position(), "the entries' sum overflows"))?;
                lines.push(line);
            }
        }
        if let (Some((open, _)), Some((close, node))) = (stmt_open, stmt_close) {
            let expected = open.checked_add(sum).ok_or_else(|| ParseError::invalid(node.position(), "the balance overflows"))?;
            if expected != close {
                let f = |v: i64| crate::amount::format_minor(v, cur);
                return Err(ParseError::Inconsistent {
                    at: node.position(),
                    message: format!(
                        "closing balance {} {cur} does not equal the opening balance {} plus the entries {} = {}",
                        f(close),
                        f(open),
                        f(sum),
                        f(expected)
                    ),
                });
            }
        }
        if opening.is_none() {
            opening = stmt_open.map(|(v, _)| v);
        }
        if let Some((v, _)) = stmt_close {
            closing = Some(v);
        }
        if let Some(fr) = stmt.at(&["FrToDt", "FrDtTm"]) {
            let d = parse_iso_date(&fr.text).map_err(|m| ParseError::field(fr.position(), "period", m))?;
            period.0 = Some(period.0.map_or(d, |p: Date| p.min(d)));
        }
        if let Some(to) = stmt.at(&["FrToDt", "ToDtTm"]) {
            let d = parse_iso_date(&to.text).map_err(|m| ParseError::field(to.position(), "period", m))?;
            period.1 = Some(period.1.map_or(d, |p: Date| p.max(d)));
        }
    }
    let (Some(account), Some(currency)) = (account, currency) else {
        return Err(ParseError::invalid(body.position(), "no account"));
    };
    if period.0.is_none() {
        period = (lines.iter().map(|l| l.booking_date).min(), lines.iter().map(|l| l.booking_date).max());
    }
    Ok(Statement {
        format,
        statement_id,
        account,
        currency,
        opening_balance_minor: opening,
        closing_balance_minor: closing,
        period_start: period.0,
        period_end: period.1,
        lines,
    })
}
