use super::*;
use crate::ids::IdGenerator;
use proptest::prelude::*;

const T: TenantId = TenantId(1);

fn usd() -> Currency {
    Currency::parse("USD").expect("USD is ISO 4217")
}

fn account(ids: &IdGenerator, normal: NormalBalance, min: Option<i64>) -> AccountState {
    AccountState {
        id: ids.account(),
        tenant: T,
        currency: usd(),
        normal_balance: normal,
        min_available_balance: min,
        counters: Counters::default(),
        version: 0,
    }
}

fn leg(account: &AccountState, direction: Direction, amount: i64) -> EntryDraft {
    EntryDraft { account_id: account.id.clone(), direction, amount: Amount::new(amount).expect("positive"), currency: None }
}

fn draft(entries: Vec<EntryDraft>, status: TransactionStatus) -> TransactionDraft {
    TransactionDraft {
        entries,
        status,
        description: None,
        external_id: None,
        effective_at: None,
        expires_at: None,
        expected_versions: BTreeMap::new(),
        metadata: Metadata::new(),
    }
}

fn setup(min: Option<i64>) -> (IdGenerator, AccountView, AccountState, AccountState) {
    let ids = IdGenerator::default();
    let funding = account(&ids, Direction::Debit, None);
    let wallet = account(&ids, Direction::Credit, min);
    let mut view = AccountView::default();
    view.insert(funding.id.clone(), funding.clone());
    view.insert(wallet.id.clone(), wallet.clone());
    (ids, view, funding, wallet)
}

fn balances(view: &AccountView, a: &AccountState) -> Balances {
    view[&a.id].counters.balances(a.normal_balance).expect("fits")
}

const NOW: Timestamp = Timestamp::from_micros(1_700_000_000_000_000);

#[test]
fn a_posted_transfer_moves_posted_and_available_balances() {
    let (ids, mut view, funding, wallet) = setup(Some(0));
    let d = draft(vec![leg(&funding, Direction::Debit, 100), leg(&wallet, Direction::Credit, 100)], TransactionStatus::Posted);
    create(&mut view, T, ids.transaction(), &d, NOW).expect("valid");
    assert_eq!(balances(&view, &wallet), Balances { posted: 100, pending: 100, available: 100 });
    assert_eq!(balances(&view, &funding).posted, 100);
    assert_eq!(view[&wallet.id].version, 1);
}

#[test]
fn an_unbalanced_transaction_is_refused_and_changes_nothing() {
    let (ids, mut view, funding, wallet) = setup(None);
    let before = view.clone();
    let d = draft(vec![leg(&funding, Direction::Debit, 100), leg(&wallet, Direction::Credit, 99)], TransactionStatus::Posted);
    let err = create(&mut view, T, ids.transaction(), &d, NOW).expect_err("unbalanced");
    assert!(matches!(err, LedgerError::Unbalanced { .. }));
    assert_eq!(view, before);
}

#[test]
fn transfer_is_refused_when_available_balance_is_too_low() {
    let (ids, mut view, funding, wallet) = setup(Some(0));
    let sink = account(&ids, Direction::Credit, None);
    view.insert(sink.id.clone(), sink.clone());
    create(
        &mut view,
        T,
        ids.transaction(),
        &draft(vec![leg(&funding, Direction::Debit, 100), leg(&wallet, Direction::Credit, 100)], TransactionStatus::Posted),
        NOW,
    )
    .expect("fund");
    let hold = create(
        &mut view,
        T,
        ids.transaction(),
        &draft(vec![leg(&wallet, Direction::Debit, 60), leg(&sink, Direction::Credit, 60)], TransactionStatus::Pending),
        NOW,
    )
    .expect("hold");
    assert_eq!(balances(&view, &wallet), Balances { posted: 100, pending: 40, available: 40 });
    let err = create(
        &mut view,
        T,
        ids.transaction(),
        &draft(vec![leg(&wallet, Direction::Debit, 41), leg(&sink, Direction::Credit, 41)], TransactionStatus::Posted),
        NOW,
    )
    .expect_err("overdraft");
    assert_eq!(err, LedgerError::InsufficientFunds(wallet.id.clone()));
    let mut hold = hold;
    post(&mut view, &mut hold, Some(&[leg(&wallet, Direction::Debit, 25), leg(&sink, Direction::Credit, 25)]), NOW).expect("partial capture");
    assert_eq!(balances(&view, &wallet), Balances { posted: 75, pending: 75, available: 75 });
    assert_eq!(hold.status, TransactionStatus::Posted);
    assert_eq!(hold.current_entries().map(|e| e.amount).collect::<Vec<_>>(), vec![25, 25]);
}

#[test]
fn an_overdraft_limit_allows_exactly_that_much_overdraft() {
    let (ids, mut view, funding, wallet) = setup(Some(-50));
    let ok = draft(vec![leg(&wallet, Direction::Debit, 50), leg(&funding, Direction::Credit, 50)], TransactionStatus::Posted);
    create(&mut view, T, ids.transaction(), &ok, NOW).expect("within overdraft");
    let one_more = draft(vec![leg(&wallet, Direction::Debit, 1), leg(&funding, Direction::Credit, 1)], TransactionStatus::Posted);
    assert!(create(&mut view, T, ids.transaction(), &one_more, NOW).is_err());
    // Money coming in to an overdrawn account is always accepted.
    let deposit = draft(vec![leg(&funding, Direction::Debit, 10), leg(&wallet, Direction::Credit, 10)], TransactionStatus::Posted);
    create(&mut view, T, ids.transaction(), &deposit, NOW).expect("deposit");
    assert_eq!(balances(&view, &wallet).posted, -40);
}

#[test]
fn posting_more_than_was_held_is_refused() {
    let (ids, mut view, funding, wallet) = setup(None);
    let mut hold = create(
        &mut view,
        T,
        ids.transaction(),
        &draft(vec![leg(&funding, Direction::Debit, 10), leg(&wallet, Direction::Credit, 10)], TransactionStatus::Pending),
        NOW,
    )
    .expect("hold");
    let err = post(&mut view, &mut hold, Some(&[leg(&funding, Direction::Debit, 11), leg(&wallet, Direction::Credit, 11)]), NOW).expect_err("too much");
    assert!(matches!(err, LedgerError::AmountExceedsHold { .. }));
    assert_eq!(hold.status, TransactionStatus::Pending);
}

#[test]
fn a_voided_or_expired_hold_releases_everything_and_cannot_be_posted() {
    let (ids, mut view, funding, wallet) = setup(None);
    let mut d = draft(vec![leg(&funding, Direction::Debit, 10), leg(&wallet, Direction::Credit, 10)], TransactionStatus::Pending);
    d.expires_at = Some(NOW.plus_secs(60));
    let mut hold = create(&mut view, T, ids.transaction(), &d, NOW).expect("hold");
    assert_eq!(balances(&view, &wallet).pending, 10);
    let later = NOW.plus_secs(61);
    assert!(matches!(post(&mut view, &mut hold, None, later), Err(LedgerError::TransactionNotPending(_))));
    assert!(matches!(void(&mut view, &mut hold, VoidReason::Requested, later), Err(LedgerError::TransactionNotPending(_))));
    void(&mut view, &mut hold, VoidReason::Expired, later).expect("sweep");
    assert_eq!(balances(&view, &wallet), Balances::default());
    assert_eq!(hold.voided_at, Some(NOW.plus_secs(60)));
}

#[test]
fn a_reversal_restores_balances_and_cannot_happen_twice() {
    let (ids, mut view, funding, wallet) = setup(Some(0));
    let mut original = create(
        &mut view,
        T,
        ids.transaction(),
        &draft(vec![leg(&funding, Direction::Debit, 10), leg(&wallet, Direction::Credit, 10)], TransactionStatus::Posted),
        NOW,
    )
    .expect("fund");
    let reversal = reverse(&mut view, &mut original, ids.transaction(), NOW).expect("reverse");
    assert_eq!(reversal.reverses.as_ref(), Some(&original.id));
    assert_eq!(original.reversed_by.as_ref(), Some(&reversal.id));
    assert_eq!(balances(&view, &wallet), Balances::default());
    assert!(matches!(reverse(&mut view, &mut original, ids.transaction(), NOW), Err(LedgerError::AlreadyReversed { .. })));
}

#[test]
fn a_stale_expected_version_is_refused() {
    let (ids, mut view, funding, wallet) = setup(None);
    let mut d = draft(vec![leg(&funding, Direction::Debit, 1), leg(&wallet, Direction::Credit, 1)], TransactionStatus::Posted);
    d.expected_versions.insert(wallet.id.clone(), 0);
    create(&mut view, T, ids.transaction(), &d, NOW).expect("version 0 is current");
    let err = create(&mut view, T, ids.transaction(), &d, NOW).expect_err("now stale");
    assert!(matches!(err, LedgerError::VersionConflict { expected: 0, actual: 1, .. }));
}

#[test]
fn counters_that_would_overflow_are_refused_not_wrapped() {
    let (ids, mut view, funding, wallet) = setup(None);
    let big = draft(vec![leg(&funding, Direction::Debit, i64::MAX), leg(&wallet, Direction::Credit, i64::MAX)], TransactionStatus::Posted);
    create(&mut view, T, ids.transaction(), &big, NOW).expect("max fits once");
    let err = create(
        &mut view,
        T,
        ids.transaction(),
        &draft(vec![leg(&funding, Direction::Debit, 1), leg(&wallet, Direction::Credit, 1)], TransactionStatus::Posted),
        NOW,
    )
    .expect_err("overflow");
    assert!(matches!(err, LedgerError::BalanceOverflow(_)));
}

#[test]
fn another_tenants_account_is_not_found() {
    let (ids, mut view, funding, wallet) = setup(None);
    let d = draft(vec![leg(&funding, Direction::Debit, 1), leg(&wallet, Direction::Credit, 1)], TransactionStatus::Posted);
    assert!(matches!(create(&mut view, TenantId(2), ids.transaction(), &d, NOW), Err(LedgerError::AccountNotFound(_))));
}

/// A random operation against a small set of accounts.
#[derive(Clone, Debug)]
enum Op {
    Transfer { from: usize, to: usize, amount: i64, pending: bool },
    Post { which: usize, fraction_pct: i64 },
    Void { which: usize },
    Reverse { which: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, 0..4usize, 1..1_000i64, any::<bool>()).prop_map(|(from, to, amount, pending)| Op::Transfer { from, to, amount, pending }),
        (0..64usize, 1..=100i64).prop_map(|(which, fraction_pct)| Op::Post { which, fraction_pct }),
        (0..64usize).prop_map(|which| Op::Void { which }),
        (0..64usize).prop_map(|which| Op::Reverse { which }),
    ]
}

proptest! {
    /// Whatever sequence of operations runs, accepted or refused: every
    /// transaction balances, each account's counters equal the fold of its
    /// live entries, and no limited account goes below its limit.
    #[test]
    fn balances_always_equal_the_fold_of_entries(ops in proptest::collection::vec(op(), 1..80)) {
        let ids = IdGenerator::default();
        let accounts: Vec<AccountState> = vec![
            account(&ids, Direction::Debit, None),
            account(&ids, Direction::Credit, Some(0)),
            account(&ids, Direction::Credit, Some(-100)),
            account(&ids, Direction::Credit, None),
        ];
        let mut view: AccountView = accounts.iter().map(|a| (a.id.clone(), a.clone())).collect();
        let mut log: Vec<Transaction> = Vec::new();
        for op in ops {
            let result = match op {
                Op::Transfer { from, to, amount, pending } => {
                    let status = if pending { TransactionStatus::Pending } else { TransactionStatus::Posted };
                    let d = draft(vec![leg(&accounts[from], Direction::Debit, amount), leg(&accounts[to], Direction::Credit, amount)], status);
                    create(&mut view, T, ids.transaction(), &d, NOW).map(|t| log.push(t))
                }
                Op::Post { which, fraction_pct } if which < log.len() => {
                    let mut t = log[which].clone();
                    let part: Vec<EntryDraft> = t.current_entries().filter_map(|e| Amount::new((e.amount * fraction_pct / 100).max(1)).map(|amount| EntryDraft { account_id: e.account_id.clone(), direction: e.direction, amount, currency: None })).collect();
                    let r = post(&mut view, &mut t, Some(&part), NOW);
                    log[which] = t;
                    r
                }
                Op::Void { which } if which < log.len() => {
                    let mut t = log[which].clone();
                    let r = void(&mut view, &mut t, VoidReason::Requested, NOW);
                    log[which] = t;
                    r
                }
                Op::Reverse { which } if which < log.len() => {
                    let mut t = log[which].clone();
                    let r = reverse(&mut view, &mut t, ids.transaction(), NOW).map(|rev| log.push(rev));
                    log[which] = t;
                    r
                }
                _ => Ok(()),
            };
            let _ = result;
        }
        let mut folded: HashMap<AccountId, Counters> = HashMap::new();
        for t in &log {
            let mut per_leg: BTreeMap<(bool, Direction), i128> = BTreeMap::new();
            for e in &t.entries {
                *per_leg.entry((e.leg == Leg::Posted, e.direction)).or_default() += i128::from(e.amount);
                let live = e.leg == Leg::Posted || t.status == TransactionStatus::Pending;
                if live {
                    let c = folded.entry(e.account_id.clone()).or_default();
                    *c.slot(e.leg, e.direction) += e.amount;
                }
            }
            for posted in [false, true] {
                prop_assert_eq!(per_leg.get(&(posted, Direction::Debit)), per_leg.get(&(posted, Direction::Credit)));
            }
        }
        for a in &accounts {
            let stored = view[&a.id].counters;
            prop_assert_eq!(stored, folded.get(&a.id).copied().unwrap_or_default());
            if let Some(min) = a.min_available_balance {
                prop_assert!(stored.balances(a.normal_balance).expect("fits").available >= min);
            }
        }
    }
}
