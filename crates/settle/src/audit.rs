//! `settle audit verify|export`: the two tamper-evident trails — the ledger
//! log and the per-tenant compliance audit chains — checked, or written out
//! as JSON lines for an auditor.

use crate::DatabaseArgs;
use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use settle_core::clock::{Clock, SystemClock, Timestamp};
use settle_store::Store;
use settle_store::customers::StoredAudit;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const CHUNK: i64 = 1_000;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the ledger log's hash chain and check entries and balances
    /// against it, then every tenant's compliance audit chain; exit 1 on the
    /// first discrepancy.
    Verify {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Write the ledger log records and the compliance audit records of a
    /// period as JSON lines (ledger log first, then each tenant's chain in
    /// order), each with the hashes that chain it, for an auditor.
    Export {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Start of the period, inclusive: RFC 3339 (`2026-11-01T00:00:00Z`) or a UTC date (`2026-11-01`).
        #[arg(long)]
        from: String,
        /// End of the period, exclusive; default: now.
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { db } => verify(db).await,
        AuditCommand::Export { db, from, to, output } => {
            let from = instant(&from).with_context(|| format!("--from {from:?}"))?;
            let to = match to {
                Some(t) => instant(&t).with_context(|| format!("--to {t:?}"))?,
                None => SystemClock.now(),
            };
            if to.micros() <= from.micros() {
                bail!("--to must be after --from");
            }
            let store = db.open().await?;
            let out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let written = export(&store, from, to, out).await?;
            eprintln!("exported {written} records from {} to {}", from.to_rfc3339(), to.to_rfc3339());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// RFC 3339, or a bare date meaning its UTC midnight.
fn instant(text: &str) -> anyhow::Result<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(text) {
        return Ok(t);
    }
    Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z")).context("expected RFC 3339 (2026-11-01T00:00:00Z) or a date (2026-11-01)")
}

async fn verify(db: DatabaseArgs) -> anyhow::Result<ExitCode> {
    let store = db.open().await?;
    let report = match settle_store::audit::verify(&store).await.context("reading the ledger")? {
        Ok(report) => report,
        Err(failure) => {
            println!("FAILED: {failure}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let tenants = store.compliance_audit_tenants().await.context("reading the compliance audit")?;
    for t in &tenants {
        if let Some(seq) = store.verify_compliance_audit(t.tenant).await.context("reading the compliance audit")? {
            println!("FAILED: compliance audit of {} ({}): record {seq} does not chain to the one before it", t.org_name, t.environment);
            return Ok(ExitCode::FAILURE);
        }
    }
    println!(
        "ok: {} log records, {} entries, {} accounts verified; {} compliance audit chains verified",
        report.log_records,
        report.entries,
        report.accounts,
        tenants.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn export(store: &Store, from: Timestamp, to: Timestamp, mut out: Box<dyn Write>) -> anyhow::Result<u64> {
    let (from, to) = (from.micros(), to.micros());
    let mut written = 0;
    let mut after = 0;
    loop {
        let records = store.ledger_log_between(from, to, after, CHUNK).await.context("reading the ledger log")?;
        let Some(last) = records.last() else { break };
        after = last.seq;
        for r in &records {
            // The log's content is JSON; anything else is shown as hex rather than dropped.
            let content: Value = serde_json::from_slice(&r.content).unwrap_or_else(|_| Value::String(hex::encode(&r.content)));
            let line = json!({
                "trail": "ledger_log",
                "sequence": r.seq,
                "created_at": Timestamp::from_micros(r.created_at).to_rfc3339(),
                "record": content,
                "previous_hash": hex::encode(&r.prev_hash),
                "hash": hex::encode(&r.hash),
            });
            writeln!(out, "{line}")?;
            written += 1;
        }
    }
    for t in store.compliance_audit_tenants().await.context("reading the compliance audit")? {
        let mut after = 0;
        loop {
            let records = store.compliance_audit_between(t.tenant, from, to, after, CHUNK).await.context("reading the compliance audit")?;
            let Some(last) = records.last() else { break };
            after = last.seq;
            for a in &records {
                writeln!(out, "{}", compliance_line(&t.org_name, &t.environment, a))?;
                written += 1;
            }
        }
    }
    out.flush()?;
    Ok(written)
}

fn compliance_line(org: &str, environment: &str, a: &StoredAudit) -> Value {
    let r = &a.record;
    json!({
        "trail": "compliance_audit",
        "organization": org,
        "environment": environment,
        "sequence": a.seq,
        "id": r.id,
        "created_at": Timestamp::from_micros(r.created_at).to_rfc3339(),
        "actor": r.actor,
        "action": r.action,
        "resource_type": r.resource_type,
        "resource_id": r.resource_id,
        "changed_fields": r.changed_fields,
        "reason": r.reason,
        "request_id": r.request_id,
        "correlation_id": r.correlation_id,
        "client_ip": r.client_ip,
        "previous_hash": a.prev_hash,
        "hash": a.hash,
    })
}
