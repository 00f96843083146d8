//! `settle reconcile ledger [--repair] [--json]`: reports (and repairs) drift
//! between accounts' derived counters and their entries.

use crate::DatabaseArgs;
use anyhow::Context;
use serde_json::json;
use settle_core::ledger::Counters;
use settle_store::reconcile::{self, Drift};
use std::process::ExitCode;

/// Exit status when the log or the entries are broken (nothing can be repaired from them).
const BROKEN: u8 = 2;

fn counters_json(c: &Counters) -> serde_json::Value {
    json!({"posted_debits": c.posted_debits, "posted_credits": c.posted_credits, "pending_debits": c.pending_debits, "pending_credits": c.pending_credits})
}

/// `posted_credits 601 -> 600, ...`: only the counters that differ.
fn difference(from: &Counters, to: &Counters) -> String {
    let pairs = [
        ("posted_debits", from.posted_debits, to.posted_debits),
        ("posted_credits", from.posted_credits, to.posted_credits),
        ("pending_debits", from.pending_debits, to.pending_debits),
        ("pending_credits", from.pending_credits, to.pending_credits),
    ];
    pairs.iter().filter(|(_, a, b)| a != b).map(|(name, a, b)| format!("{name} {a} -> {b}")).collect::<Vec<_>>().join(", ")
}

fn drift_json(d: &Drift) -> serde_json::Value {
    json!({"account": d.account.as_str(), "tenant": d.tenant.0, "stored": counters_json(&d.stored), "expected": counters_json(&d.expected)})
}

pub async fn ledger(db: DatabaseArgs, repair: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = db.open().await?;
    let scan = match reconcile::scan(&store).await.context("reading the ledger")? {
        Ok(scan) => scan,
        Err(failure) => {
            if as_json {
                println!("{}", json!({"ok": false, "broken": failure.to_string()}));
            } else {
                println!("BROKEN: {failure}");
                println!("the ledger log or the entries are damaged; counters cannot be recomputed from them, so nothing was repaired");
            }
            return Ok(ExitCode::from(BROKEN));
        }
    };
    let repaired = if repair && !scan.drifts.is_empty() { reconcile::repair(&store, &scan.drifts).await.context("repairing")? } else { Vec::new() };
    let failed_repairs = repaired.iter().filter(|r| r.is_err()).count();
    if as_json {
        let repairs: Vec<serde_json::Value> = scan
            .drifts
            .iter()
            .zip(&repaired)
            .map(|(d, r)| match r {
                Ok(r) => json!({"account": r.account.as_str(), "before": counters_json(&r.before), "after": counters_json(&r.after)}),
                Err(e) => json!({"account": d.account.as_str(), "error": e.to_string()}),
            })
            .collect();
        println!(
            "{}",
            json!({
                "ok": scan.drifts.is_empty() || (repair && failed_repairs == 0),
                "log_records": scan.log_records,
                "entries": scan.entries,
                "accounts": scan.accounts,
                "drifts": scan.drifts.iter().map(drift_json).collect::<Vec<_>>(),
                "repairs": repairs,
            })
        );
    } else {
        println!("checked {} log records, {} entries, {} accounts: {} drifted", scan.log_records, scan.entries, scan.accounts, scan.drifts.len());
        for d in &scan.drifts {
            println!("drift {} (tenant {}): stored -> entries: {}", d.account, d.tenant.0, difference(&d.stored, &d.expected));
        }
        for (d, r) in scan.drifts.iter().zip(&repaired) {
            match r {
                Ok(r) if r.before == r.after => println!("no longer drifted {}", r.account),
                Ok(r) => println!("repaired {}: {}", r.account, difference(&r.before, &r.after)),
                Err(e) => println!("NOT repaired {}: {e}", d.account),
            }
        }
    }
    let clean = scan.drifts.is_empty() || (repair && failed_repairs == 0);
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
