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

/// The tenant of organization `org` in `environment`. Tenants come into
/// being with an organization's first API key there, so the keys name them.
async fn tenant_of(store: &settle_store::Store, org: &str, environment: &str) -> anyhow::Result<settle_core::tenancy::TenantId> {
    let environment = settle_core::tenancy::Environment::parse(environment).context("--environment must be sandbox or live")?;
    let keys = store.list_api_keys().await.context("reading organizations")?;
    keys.iter()
        .find(|k| k.org_name == org && k.environment == environment)
        .map(|k| k.tenant)
        .with_context(|| format!("organization {org:?} has no {} environment (create a key there first)", environment.as_str()))
}

/// `settle reconcile import FILE`: the same import as `POST /v1/reconciliation/statements`.
#[expect(clippy::too_many_arguments, reason = "one operator command with every flag of an import")]
pub async fn import(
    db: DatabaseArgs,
    file: std::path::PathBuf,
    format: String,
    ledger_account: String,
    org: String,
    environment: String,
    csv_profile: Option<std::path::PathBuf>,
    date_window_days: i64,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let format = settle_recon::Format::parse(&format).context("--format must be camt.053, camt.054, mt940, bai2 or csv")?;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    if bytes.len() > settle_recon::MAX_STATEMENT_BYTES {
        anyhow::bail!("{} is larger than {} bytes", file.display(), settle_recon::MAX_STATEMENT_BYTES);
    }
    let content = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", file.display()))?;
    let csv_profile = match csv_profile {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("{} is not a CSV profile", path.display()))?)
        }
        None => None,
    };
    let store = db.open().await?;
    let tenant = tenant_of(&store, &org, &environment).await?;
    let now = settle_core::clock::Clock::now(&settle_core::clock::SystemClock);
    let input = settle_api::reconciliation::ImportInput {
        tenant,
        format,
        content,
        ledger_account_id: ledger_account,
        csv_profile,
        date_window_days,
        actor: String::from("cli"),
    };
    match settle_api::reconciliation::import(&store, &settle_core::ids::IdGenerator::default(), now, input, None).await {
        Ok((created, record)) => {
            let json = settle_api::reconciliation::statement_json(&record);
            if as_json {
                println!("{}", serde_json::to_string(&json).context("rendering")?);
            } else {
                let verb = if created { "imported" } else { "already imported (nothing changed):" };
                println!(
                    "{verb} {} ({} lines): {} matched, {} partially matched, {} unmatched",
                    json.id, json.line_count, json.lines.matched, json.lines.partially_matched, json.lines.unmatched
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if as_json {
                println!("{}", json!({"error": {"code": e.code, "message": e.message, "param": e.param}}));
            } else {
                println!("refused ({}): {}", e.code, e.message);
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `settle reconcile report --date D`: the day's report, as JSON or CSV.
pub async fn report(db: DatabaseArgs, date: String, org: String, environment: String, csv: bool) -> anyhow::Result<ExitCode> {
    let day = settle_recon::amount::parse_iso_date(&date).ok().filter(|_| date.len() == 10).context("--date must be YYYY-MM-DD")?;
    let store = db.open().await?;
    let tenant = tenant_of(&store, &org, &environment).await?;
    let now = settle_core::clock::Clock::now(&settle_core::clock::SystemClock);
    let report = settle_api::reconciliation::report(&store, tenant, settle_api::reconciliation::ReportScope::Date(day), now)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?
        .context("no report")?;
    if csv {
        print!("{}", settle_api::reconciliation::report_csv(&report));
    } else {
        println!("{}", serde_json::to_string_pretty(&report).context("rendering")?);
    }
    Ok(ExitCode::SUCCESS)
}
