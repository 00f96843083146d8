//! Return reason codes (R01–R85) and notification-of-change codes (C01–C14),
//! with the window a return must arrive in and the action Settle takes.

use serde::Serialize;

/// What Settle does automatically when a return with this code arrives, on
/// top of moving the payment to `returned` and reversing its ledger effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnAction {
    /// Nothing more: the payment is returned.
    None,
    /// The payment may be originated again (at most twice within 180 days, NACHA's
    /// reinitiation rule); nothing is disabled.
    RetryAllowed,
    /// The bank account is disabled: no further payment may use it.
    DisableBankAccount,
    /// The receiver says the debit was not authorized: the bank account is
    /// disabled for debits and the authorization must be obtained again.
    RevokeAuthorization,
    /// The account is frozen (OFAC or legal): the bank account is disabled and
    /// a compliance review is due.
    FreezeAndReview,
}

/// How long after settlement a return with this code may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnWindow {
    /// Two banking days (most codes).
    TwoBankingDays,
    /// Sixty calendar days: unauthorized consumer debits.
    SixtyCalendarDays,
    /// Set by the RDFI or ODFI case by case (dishonored and contested returns,
    /// permissible returns with other time frames).
    Other,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReturnReason {
    pub code: &'static str,
    pub description: &'static str,
    pub window: ReturnWindow,
    pub action: ReturnAction,
    /// Counted in the unauthorized return rate (NACHA's 0.5% threshold).
    pub is_unauthorized: bool,
}

const fn r(code: &'static str, description: &'static str, window: ReturnWindow, action: ReturnAction, is_unauthorized: bool) -> ReturnReason {
    ReturnReason { code, description, window, action, is_unauthorized }
}

use ReturnAction::{DisableBankAccount as Disable, FreezeAndReview as Freeze, None as Nothing, RetryAllowed as Retry, RevokeAuthorization as Revoke};
use ReturnWindow::{Other, SixtyCalendarDays as Sixty, TwoBankingDays as Two};

/// Every return reason code Settle knows, in code order.
pub const RETURN_REASONS: &[ReturnReason] = &[
    r("R01", "Insufficient funds", Two, Retry, false),
    r("R02", "Account closed", Two, Disable, false),
    r("R03", "No account / unable to locate account", Two, Disable, false),
    r("R04", "Invalid account number structure", Two, Disable, false),
    r("R05", "Unauthorized debit to consumer account using corporate SEC code", Sixty, Revoke, true),
    r("R06", "Returned per ODFI's request", Other, Nothing, false),
    r("R07", "Authorization revoked by customer", Sixty, Revoke, true),
    r("R08", "Payment stopped", Two, Nothing, false),
    r("R09", "Uncollected funds", Two, Retry, false),
    r("R10", "Customer advises not authorized, improper, ineligible or part of an incomplete transaction", Sixty, Revoke, true),
    r("R11", "Customer advises entry not in accordance with the terms of the authorization", Sixty, Revoke, true),
    r("R12", "Account sold to another DFI", Two, Disable, false),
    r("R13", "Invalid ACH routing number", Two, Disable, false),
    r("R14", "Representative payee deceased or unable to continue in that capacity", Two, Disable, false),
    r("R15", "Beneficiary or account holder deceased", Two, Disable, false),
    r("R16", "Account frozen / entry returned per OFAC instruction", Two, Freeze, false),
    r("R17", "File record edit criteria / entry with invalid account number initiated under questionable circumstances", Two, Nothing, false),
    r("R18", "Improper effective entry date", Two, Nothing, false),
    r("R19", "Amount field error", Two, Nothing, false),
    r("R20", "Non-transaction account", Two, Disable, false),
    r("R21", "Invalid company identification", Two, Nothing, false),
    r("R22", "Invalid individual ID number", Two, Nothing, false),
    r("R23", "Credit entry refused by receiver", Two, Nothing, false),
    r("R24", "Duplicate entry", Two, Nothing, false),
    r("R25", "Addenda error", Two, Nothing, false),
    r("R26", "Mandatory field error", Two, Nothing, false),
    r("R27", "Trace number error", Two, Nothing, false),
    r("R28", "Routing number check digit error", Two, Nothing, false),
    r("R29", "Corporate customer advises not authorized", Two, Revoke, true),
    r("R30", "RDFI not participant in check truncation program", Two, Nothing, false),
    r("R31", "Permissible return entry (CCD and CTX only)", Other, Nothing, false),
    r("R32", "RDFI non-settlement", Two, Nothing, false),
    r("R33", "Return of XCK entry", Other, Nothing, false),
    r("R34", "Limited participation DFI", Two, Disable, false),
    r("R35", "Return of improper debit entry", Two, Nothing, false),
    r("R36", "Return of improper credit entry", Two, Nothing, false),
    r("R37", "Source document presented for payment", Sixty, Revoke, true),
    r("R38", "Stop payment on source document", Sixty, Nothing, false),
    r("R39", "Improper source document / source document presented for payment", Two, Nothing, false),
    r("R40", "Return of ENR entry by federal government agency", Other, Nothing, false),
    r("R41", "Invalid transaction code (ENR)", Other, Nothing, false),
    r("R42", "Routing number / check digit error (ENR)", Other, Nothing, false),
    r("R43", "Invalid DFI account number (ENR)", Other, Nothing, false),
    r("R44", "Invalid individual ID number / identification number (ENR)", Other, Nothing, false),
    r("R45", "Invalid individual name / company name (ENR)", Other, Nothing, false),
    r("R46", "Invalid representative payee indicator (ENR)", Other, Nothing, false),
    r("R47", "Duplicate enrollment (ENR)", Other, Nothing, false),
    r("R50", "State law affecting RCK acceptance", Two, Nothing, false),
    r("R51", "Item related to RCK entry is ineligible or RCK entry is improper", Sixty, Revoke, true),
    r("R52", "Stop payment on item related to RCK entry", Sixty, Nothing, false),
    r("R53", "Item and RCK entry presented for payment", Sixty, Nothing, false),
    r("R61", "Misrouted return", Other, Nothing, false),
    r("R62", "Return of erroneous or reversing debit", Other, Nothing, false),
    r("R67", "Duplicate return", Other, Nothing, false),
    r("R68", "Untimely return", Other, Nothing, false),
    r("R69", "Field error(s)", Other, Nothing, false),
    r("R70", "Permissible return entry not accepted / return not requested by ODFI", Other, Nothing, false),
    r("R71", "Misrouted dishonored return", Other, Nothing, false),
    r("R72", "Untimely dishonored return", Other, Nothing, false),
    r("R73", "Timely original return", Other, Nothing, false),
    r("R74", "Corrected return", Other, Nothing, false),
    r("R75", "Return not a duplicate", Other, Nothing, false),
    r("R76", "No errors found", Other, Nothing, false),
    r("R77", "Non-acceptance of R62 dishonored return", Other, Nothing, false),
    r("R80", "IAT entry coding error", Two, Nothing, false),
    r("R81", "Non-participant in IAT program", Two, Nothing, false),
    r("R82", "Invalid foreign receiving DFI identification", Two, Nothing, false),
    r("R83", "Foreign receiving DFI unable to settle", Two, Nothing, false),
    r("R84", "Entry not processed by gateway", Two, Nothing, false),
    r("R85", "Incorrectly coded outbound international payment", Two, Nothing, false),
];

/// The row for `code` (`R01`…), or `None` for a code Settle does not know.
pub fn return_reason(code: &str) -> Option<&'static ReturnReason> {
    RETURN_REASONS.iter().find(|reason| reason.code == code)
}

/// Whether a return with `reason` that reaches the originator on `received`
/// is inside its window, for an entry that settled on `settled` (its
/// effective date). Two banking days: by the second banking day after
/// settlement; sixty calendar days for unauthorized consumer debits; codes
/// with other time frames are always accepted. A late return is refused (the
/// originator may dishonor it, R61–R77).
pub fn is_timely(reason: &ReturnReason, settled: time::Date, received: time::Date) -> bool {
    match reason.window {
        ReturnWindow::TwoBankingDays => settle_core::calendar::add_banking_days(settled, 2).is_none_or(|deadline| received <= deadline),
        ReturnWindow::SixtyCalendarDays => settled.checked_add(time::Duration::days(60)).is_none_or(|deadline| received <= deadline),
        ReturnWindow::Other => true,
    }
}

/// One notification-of-change code: which bank account detail the RDFI corrects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChangeCode {
    pub code: &'static str,
    pub description: &'static str,
}

pub const CHANGE_CODES: &[ChangeCode] = &[
    ChangeCode { code: "C01", description: "Incorrect DFI account number" },
    ChangeCode { code: "C02", description: "Incorrect routing number" },
    ChangeCode { code: "C03", description: "Incorrect routing number and incorrect DFI account number" },
    ChangeCode { code: "C04", description: "Incorrect individual name / receiving company name" },
    ChangeCode { code: "C05", description: "Incorrect transaction code" },
    ChangeCode { code: "C06", description: "Incorrect DFI account number and incorrect transaction code" },
    ChangeCode { code: "C07", description: "Incorrect routing number, DFI account number and transaction code" },
    ChangeCode { code: "C08", description: "Incorrect receiving DFI identification (IAT only)" },
    ChangeCode { code: "C09", description: "Incorrect individual identification number" },
    ChangeCode { code: "C10", description: "Incorrect company name" },
    ChangeCode { code: "C11", description: "Incorrect company identification" },
    ChangeCode { code: "C12", description: "Incorrect company name and company identification" },
    ChangeCode { code: "C13", description: "Addenda format error" },
    ChangeCode { code: "C14", description: "Incorrect SEC code for outbound international payment" },
];

pub fn change_code(code: &str) -> Option<&'static ChangeCode> {
    CHANGE_CODES.iter().find(|c| c.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_are_timely_inside_their_window_only() {
        use time::{Date, Month};
        let day = |d: u8| Date::from_calendar_date(2026, Month::November, d).expect("date");
        let r01 = return_reason("R01").expect("R01");
        // Settled Wednesday 25th; Thursday 26th is Thanksgiving: two banking days later is Monday 30th.
        assert!(is_timely(r01, day(25), day(30)));
        assert!(!is_timely(r01, day(25), Date::from_calendar_date(2026, Month::December, 1).expect("date")));
        let r10 = return_reason("R10").expect("R10");
        assert!(is_timely(r10, day(1), Date::from_calendar_date(2026, Month::December, 31).expect("date")));
        assert!(!is_timely(r10, day(1), Date::from_calendar_date(2027, Month::January, 1).expect("date")));
        assert!(is_timely(return_reason("R06").expect("R06"), day(1), Date::from_calendar_date(2030, Month::January, 1).expect("date")));
    }

    #[test]
    fn the_table_is_sorted_unique_and_covers_the_common_codes() {
        for pair in RETURN_REASONS.windows(2) {
            assert!(pair[0].code < pair[1].code, "{} before {}", pair[0].code, pair[1].code);
        }
        for code in ["R02", "R03", "R04"] {
            assert_eq!(return_reason(code).map(|r| r.action), Some(ReturnAction::DisableBankAccount));
        }
        for code in ["R05", "R07", "R10", "R11", "R51"] {
            let reason = return_reason(code).expect(code);
            assert_eq!(reason.window, ReturnWindow::SixtyCalendarDays, "{code}");
            assert!(reason.is_unauthorized);
        }
        assert_eq!(return_reason("R16").map(|r| r.action), Some(ReturnAction::FreezeAndReview));
        assert_eq!(return_reason("R99"), None);
        assert_eq!(change_code("C01").map(|c| c.description), Some("Incorrect DFI account number"));
    }
}
