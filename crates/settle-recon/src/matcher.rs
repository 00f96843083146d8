//! Pairs statement lines with ledger transactions.
//!
//! The matcher knows nothing of the ledger: callers turn whatever can be
//! matched into [`Candidate`]s (today ledger transactions with an entry on
//! the bank's ledger account; a `payments` source can supply candidates of
//! its own later without changing this code). Amounts are signed from the
//! bank account's point of view: positive is money in.
//!
//! Rules, in order; each line and each candidate is used at most once, and
//! every tie is broken by input order, so the result is deterministic:
//! 1. **Reference** (confidence 100): a line reference equals a candidate
//!    reference (case-insensitive), same currency and amount.
//! 2. **Split by reference** (confidence 90): several lines carrying one
//!    candidate's reference sum to its amount (`partially_matched`), or one
//!    line's reference names several candidates that sum to the line.
//! 3. **Amount, date and counterparty** (confidence 80): same amount and
//!    currency within the date window, and the line's counterparty name
//!    appears in the candidate's text. Taken only when exactly one candidate fits.
//! 4. **Amount and date** (confidence 60): same amount and currency within
//!    the window, exactly one candidate. Ambiguity leaves the line unmatched:
//!    a wrong match costs an accountant more than a missing one.

use settle_core::money::Currency;
use std::collections::HashMap;
use time::Date;

/// Days either side of a line's booking (or value) date a candidate may be dated.
pub const DEFAULT_DATE_WINDOW_DAYS: i64 = 3;

#[derive(Clone, Debug)]
pub struct LineInput {
    pub amount_minor: i64,
    pub currency: Currency,
    pub booking_date: Date,
    pub value_date: Option<Date>,
    pub references: Vec<String>,
    pub counterparty: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Candidate {
    /// Money into the bank account is positive.
    pub amount_minor: i64,
    pub currency: Currency,
    pub date: Date,
    pub references: Vec<String>,
    /// Free text (description, metadata values) searched for the counterparty.
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Reference,
    SplitReference,
    AmountDateCounterparty,
    AmountDate,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Reference => "reference",
            Rule::SplitReference => "split_reference",
            Rule::AmountDateCounterparty => "amount_date_counterparty",
            Rule::AmountDate => "amount_date",
        }
    }

    pub fn confidence(self) -> u8 {
        match self {
            Rule::Reference => 100,
            Rule::SplitReference => 90,
            Rule::AmountDateCounterparty => 80,
            Rule::AmountDate => 60,
        }
    }
}

/// One match: lines (indexes into the input) with candidates (indexes).
/// More than one on either side makes the lines `partially_matched`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub lines: Vec<usize>,
    pub candidates: Vec<usize>,
    pub rule: Rule,
}

impl Proposal {
    pub fn is_partial(&self) -> bool {
        self.lines.len() > 1 || self.candidates.len() > 1
    }
}

fn norm(text: &str) -> String {
    text.trim().to_lowercase()
}

fn letters(text: &str) -> String {
    text.to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect()
}

fn within(line: &LineInput, date: Date, window_days: i64) -> bool {
    let near = |d: Date| (date - d).whole_days().abs() <= window_days;
    near(line.booking_date) || line.value_date.is_some_and(near)
}

fn distance(line: &LineInput, date: Date) -> i64 {
    let d = (date - line.booking_date).whole_days().abs();
    line.value_date.map_or(d, |v| d.min((date - v).whole_days().abs()))
}

/// Groups larger than this are only tried whole: the search is exponential.
const MAX_SUBSET_SEARCH: usize = 12;

/// The first subset (in order of its bitmask, so deterministic) of at least
/// two amounts that sums to `target`, as indexes.
fn summing_subset(amounts: &[i64], target: i64) -> Option<Vec<usize>> {
    let sum = |picked: &[usize]| picked.iter().try_fold(0i64, |s, &k| s.checked_add(amounts[k]));
    if amounts.len() < 2 {
        return None;
    }
    if amounts.len() > MAX_SUBSET_SEARCH {
        let all: Vec<usize> = (0..amounts.len()).collect();
        return (sum(&all) == Some(target)).then_some(all);
    }
    (1u32..(1 << amounts.len())).filter(|m| m.count_ones() >= 2).find_map(|mask| {
        let picked: Vec<usize> = (0..amounts.len()).filter(|k| mask & (1 << k) != 0).collect();
        (sum(&picked) == Some(target)).then_some(picked)
    })
}

pub fn match_lines(lines: &[LineInput], candidates: &[Candidate], window_days: i64) -> Vec<Proposal> {
    let mut line_used = vec![false; lines.len()];
    let mut cand_used = vec![false; candidates.len()];
    let mut out = Vec::new();
    let mut by_reference: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        for r in &c.references {
            let key = norm(r);
            if !key.is_empty() {
                let list = by_reference.entry(key).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
        }
    }
    let referenced = |line: &LineInput| -> Vec<usize> {
        let mut found: Vec<usize> = Vec::new();
        for r in &line.references {
            for &i in by_reference.get(&norm(r)).map(Vec::as_slice).unwrap_or(&[]) {
                if !found.contains(&i) && candidates[i].currency == line.currency {
                    found.push(i);
                }
            }
        }
        found.sort_unstable();
        found
    };
    // 1. Reference and amount.
    for (li, line) in lines.iter().enumerate() {
        if let Some(&ci) = referenced(line).iter().find(|&&ci| !cand_used[ci] && candidates[ci].amount_minor == line.amount_minor) {
            line_used[li] = true;
            cand_used[ci] = true;
            out.push(Proposal { lines: vec![li], candidates: vec![ci], rule: Rule::Reference });
        }
    }
    // 2a. Several lines, one candidate.
    for ci in 0..candidates.len() {
        if cand_used[ci] {
            continue;
        }
        let sharing: Vec<usize> = (0..lines.len()).filter(|&li| !line_used[li] && referenced(&lines[li]).contains(&ci)).collect();
        let amounts: Vec<i64> = sharing.iter().map(|&li| lines[li].amount_minor).collect();
        if let Some(picked) = summing_subset(&amounts, candidates[ci].amount_minor) {
            let group: Vec<usize> = picked.into_iter().map(|k| sharing[k]).collect();
            for &li in &group {
                line_used[li] = true;
            }
            cand_used[ci] = true;
            out.push(Proposal { lines: group, candidates: vec![ci], rule: Rule::SplitReference });
        }
    }
    // 2b. One line, several candidates.
    for (li, line) in lines.iter().enumerate() {
        if line_used[li] {
            continue;
        }
        let sharing: Vec<usize> = referenced(line).into_iter().filter(|&ci| !cand_used[ci]).collect();
        let amounts: Vec<i64> = sharing.iter().map(|&ci| candidates[ci].amount_minor).collect();
        if let Some(picked) = summing_subset(&amounts, line.amount_minor) {
            let group: Vec<usize> = picked.into_iter().map(|k| sharing[k]).collect();
            for &ci in &group {
                cand_used[ci] = true;
            }
            line_used[li] = true;
            out.push(Proposal { lines: vec![li], candidates: group, rule: Rule::SplitReference });
        }
    }
    // 3 and 4. Amount and date, with and then without the counterparty.
    for with_counterparty in [true, false] {
        for (li, line) in lines.iter().enumerate() {
            if line_used[li] {
                continue;
            }
            let hint = line.counterparty.as_deref().map(letters).filter(|h| h.len() >= 3);
            if with_counterparty && hint.is_none() {
                continue;
            }
            let fits: Vec<usize> = (0..candidates.len())
                .filter(|&ci| {
                    let c = &candidates[ci];
                    !cand_used[ci]
                        && c.currency == line.currency
                        && c.amount_minor == line.amount_minor
                        && within(line, c.date, window_days)
                        && (!with_counterparty || hint.as_deref().is_some_and(|h| letters(&c.text).contains(h)))
                })
                .collect();
            let best = fits.iter().map(|&ci| distance(line, candidates[ci].date)).min();
            let closest: Vec<usize> = fits.into_iter().filter(|&ci| Some(distance(line, candidates[ci].date)) == best).collect();
            if let [ci] = closest.as_slice() {
                line_used[li] = true;
                cand_used[*ci] = true;
                let rule = if with_counterparty { Rule::AmountDateCounterparty } else { Rule::AmountDate };
                out.push(Proposal { lines: vec![li], candidates: vec![*ci], rule });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap_or_else(|| panic!("USD"))
    }

    fn day(d: u8) -> Date {
        crate::amount::make_date(2026, 11, d).unwrap_or_else(|| panic!("date"))
    }

    fn line(amount: i64, d: u8, refs: &[&str], counterparty: Option<&str>) -> LineInput {
        LineInput {
            amount_minor: amount,
            currency: usd(),
            booking_date: day(d),
            value_date: None,
            references: refs.iter().map(|r| (*r).to_owned()).collect(),
            counterparty: counterparty.map(str::to_owned),
        }
    }

    fn cand(amount: i64, d: u8, refs: &[&str], text: &str) -> Candidate {
        Candidate { amount_minor: amount, currency: usd(), date: day(d), references: refs.iter().map(|r| (*r).to_owned()).collect(), text: text.to_owned() }
    }

    #[test]
    fn a_reference_match_wins_over_a_closer_amount_match() {
        let lines = [line(500, 10, &["INV-7"], None)];
        let cands = [cand(500, 10, &[], ""), cand(500, 20, &["inv-7"], "")];
        assert_eq!(match_lines(&lines, &cands, 3), vec![Proposal { lines: vec![0], candidates: vec![1], rule: Rule::Reference }]);
    }

    #[test]
    fn lines_that_sum_to_one_transaction_are_a_partial_group() {
        let lines = [line(300, 10, &["B-1"], None), line(200, 11, &["B-1"], None), line(999, 11, &["B-1"], None)];
        let cands = [cand(500, 10, &["B-1"], "")];
        let found = match_lines(&lines, &cands, 3);
        assert_eq!(found, vec![Proposal { lines: vec![0, 1], candidates: vec![0], rule: Rule::SplitReference }]);
        assert!(found[0].is_partial());
    }

    #[test]
    fn one_line_can_cover_several_transactions_with_its_reference() {
        let lines = [line(-700, 10, &["PAYOUT-3"], None)];
        let cands = [cand(-400, 9, &["PAYOUT-3"], ""), cand(-300, 9, &["payout-3"], ""), cand(-300, 9, &[], "")];
        assert_eq!(match_lines(&lines, &cands, 3), vec![Proposal { lines: vec![0], candidates: vec![0, 1], rule: Rule::SplitReference }]);
    }

    #[test]
    fn amount_matches_need_the_window_and_refuse_ambiguity() {
        let lines = [line(100, 10, &[], None), line(250, 10, &[], None), line(900, 10, &[], Some("ACME Corp."))];
        let cands =
            [cand(100, 14, &[], ""), cand(250, 9, &[], ""), cand(250, 11, &[], ""), cand(900, 12, &[], "other"), cand(900, 12, &[], "paid by acme corp")];
        let found = match_lines(&lines, &cands, 3);
        assert_eq!(found, vec![Proposal { lines: vec![2], candidates: vec![4], rule: Rule::AmountDateCounterparty }]);
        let wider = match_lines(&lines[..1], &cands[..1], 4);
        assert_eq!(wider, vec![Proposal { lines: vec![0], candidates: vec![0], rule: Rule::AmountDate }]);
    }

    #[test]
    fn direction_and_currency_must_agree() {
        let lines = [line(-100, 10, &["R"], None)];
        assert!(match_lines(&lines, &[cand(100, 10, &["R"], "")], 3).is_empty());
        let mut eur = cand(-100, 10, &["R"], "");
        eur.currency = Currency::parse("EUR").unwrap_or_else(|| panic!("EUR"));
        assert!(match_lines(&lines, &[eur], 3).is_empty());
    }
}
