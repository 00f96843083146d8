//! The ACH rail's configuration (`settle serve --ach-…`) and `settle ach
//! import FILE`, which sends a bank's return / NOC file to a running server
//! (`POST /v1/ach/return_files`), as the bank's SFTP drop would.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use settle_ach::nacha::Originator;
use settle_ach::routing::RoutingNumber;
use settle_ach::window::{DEFAULT_SAME_DAY_LIMIT_MINOR, Window};
use std::path::PathBuf;
use std::process::ExitCode;

/// Originator settings and windows; the defaults are the sandbox's.
#[derive(Args, Clone, Debug)]
pub struct AchArgs {
    /// Immediate destination of NACHA files: the ACH operator's or bank's routing number.
    #[arg(long, env = "SETTLE_ACH_IMMEDIATE_DESTINATION", default_value = "231380104")]
    pub ach_immediate_destination: String,
    #[arg(long, env = "SETTLE_ACH_IMMEDIATE_DESTINATION_NAME", default_value = "FEDERAL RESERVE BANK")]
    pub ach_immediate_destination_name: String,
    /// Immediate origin: usually the ODFI's routing number (10 characters at most).
    #[arg(long, env = "SETTLE_ACH_IMMEDIATE_ORIGIN", default_value = "121042882")]
    pub ach_immediate_origin: String,
    #[arg(long, env = "SETTLE_ACH_IMMEDIATE_ORIGIN_NAME", default_value = "SETTLE SANDBOX BANK")]
    pub ach_immediate_origin_name: String,
    /// The company name receivers see (16 characters are kept).
    #[arg(long, env = "SETTLE_ACH_COMPANY_NAME", default_value = "SETTLE SANDBOX")]
    pub ach_company_name: String,
    /// The company identification (10 characters, usually `1` + EIN).
    #[arg(long, env = "SETTLE_ACH_COMPANY_ID", default_value = "1234567890")]
    pub ach_company_id: String,
    /// The originating bank's routing number (its first 8 digits start every trace number).
    #[arg(long, env = "SETTLE_ACH_ODFI", default_value = "121042882")]
    pub ach_odfi: String,
    /// Submission windows, New York time, `HH:MM` with `s` for same-day windows.
    #[arg(long, env = "SETTLE_ACH_WINDOWS", value_delimiter = ',', default_value = "02:15,10:30s,14:45s,16:45s")]
    pub ach_windows: Vec<String>,
    /// The per-payment cap on same-day ACH, in cents.
    #[arg(long, env = "SETTLE_ACH_SAME_DAY_LIMIT", default_value_t = DEFAULT_SAME_DAY_LIMIT_MINOR)]
    pub ach_same_day_limit: i64,
    /// Banking days after a debit settles before its money is available (0: at once).
    #[arg(long, env = "SETTLE_ACH_DEBIT_HOLD_DAYS", default_value_t = settle_api::ach::DEFAULT_DEBIT_HOLD_BANKING_DAYS)]
    pub ach_debit_hold_days: u32,
    /// Retries at most per payment returned R01/R09 (0 to 2, NACHA's limit; 0: none).
    #[arg(long, env = "SETTLE_ACH_RETRY_MAX", default_value_t = settle_api::ach::NACHA_MAX_RETRIES)]
    pub ach_retry_max: u32,
    /// Days after the original payment within which a retry may start (1 to 180).
    #[arg(long, env = "SETTLE_ACH_RETRY_WINDOW_DAYS", default_value_t = settle_api::ach::NACHA_RETRY_WINDOW_DAYS)]
    pub ach_retry_window_days: u32,
    /// Banking days after an R01/R09 return before an `auto_retry` payment is originated again (0 to 30).
    #[arg(long, env = "SETTLE_ACH_RETRY_DELAY_DAYS", default_value_t = 2)]
    pub ach_retry_delay_days: u32,
    /// Run the scheduler that cuts files per window and settles due payments.
    #[arg(long, env = "SETTLE_ACH_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    pub ach_scheduler: bool,
}

fn window(text: &str) -> anyhow::Result<Window> {
    let (clock, is_same_day) = match text.strip_suffix('s') {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let (h, m) = clock.split_once(':').with_context(|| format!("--ach-windows: {text:?} is not HH:MM"))?;
    let (hour, minute): (u8, u8) = (h.parse().context("--ach-windows hour")?, m.parse().context("--ach-windows minute")?);
    if hour > 23 || minute > 59 {
        bail!("--ach-windows: {text:?} is not a time of day");
    }
    Ok(Window { hour, minute, is_same_day })
}

impl AchArgs {
    pub fn config(&self) -> anyhow::Result<settle_api::ach::AchConfig> {
        let routing = |flag: &str, text: &str| RoutingNumber::parse(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"));
        let mut windows = self.ach_windows.iter().map(|w| window(w)).collect::<anyhow::Result<Vec<_>>>()?;
        windows.sort();
        if windows.is_empty() {
            bail!("--ach-windows needs at least one window");
        }
        if self.ach_same_day_limit < 1 {
            bail!("--ach-same-day-limit must be positive");
        }
        if self.ach_retry_max > settle_api::ach::NACHA_MAX_RETRIES {
            bail!("--ach-retry-max is at most {} (NACHA's reinitiation limit)", settle_api::ach::NACHA_MAX_RETRIES);
        }
        if !(1..=settle_api::ach::NACHA_RETRY_WINDOW_DAYS).contains(&self.ach_retry_window_days) {
            bail!("--ach-retry-window-days is 1 to {}", settle_api::ach::NACHA_RETRY_WINDOW_DAYS);
        }
        if self.ach_retry_delay_days > settle_api::ach::MAX_RETRY_DELAY_BANKING_DAYS {
            bail!("--ach-retry-delay-days is at most {}", settle_api::ach::MAX_RETRY_DELAY_BANKING_DAYS);
        }
        if self.ach_immediate_origin.len() > 10 || self.ach_company_id.len() > 10 {
            bail!("--ach-immediate-origin and --ach-company-id are at most 10 characters");
        }
        Ok(settle_api::ach::AchConfig {
            originator: Originator {
                immediate_destination: routing("--ach-immediate-destination", &self.ach_immediate_destination)?,
                immediate_destination_name: self.ach_immediate_destination_name.clone(),
                immediate_origin: self.ach_immediate_origin.clone(),
                immediate_origin_name: self.ach_immediate_origin_name.clone(),
                company_name: self.ach_company_name.clone(),
                company_identification: self.ach_company_id.clone(),
                odfi: routing("--ach-odfi", &self.ach_odfi)?,
            },
            windows,
            same_day_limit_minor: self.ach_same_day_limit,
            debit_hold_banking_days: self.ach_debit_hold_days,
            retry: settle_api::ach::RetryPolicy {
                max_retries: self.ach_retry_max,
                window_days: self.ach_retry_window_days,
                delay_banking_days: self.ach_retry_delay_days,
            },
        })
    }
}

#[derive(Subcommand)]
pub enum AchCommand {
    /// Send a bank's return / notification-of-change file to a running server.
    Import {
        /// The NACHA file.
        file: PathBuf,
        #[command(flatten)]
        client: crate::listen::ClientArgs,
    },
}

pub async fn run(command: AchCommand) -> anyhow::Result<ExitCode> {
    match command {
        AchCommand::Import { file, client } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            // Checked here first, so a broken file is reported with its line before any request.
            if let Err(e) = settle_ach::nacha::parse(&text) {
                bail!("{}: {e}", file.display());
            }
            let client = crate::listen::Client::new(&client)?;
            let answer = client.post_text("/v1/ach/return_files", text).await?;
            let results = answer["results"].as_array().cloned().unwrap_or_default();
            for r in &results {
                println!(
                    "{} {} {} {}",
                    r["original_trace_number"].as_str().unwrap_or(""),
                    r["code"].as_str().unwrap_or(""),
                    r["payment_id"].as_str().unwrap_or("-"),
                    r["outcome"].as_str().unwrap_or("")
                );
            }
            eprintln!("imported {} ({} entries)", answer["id"].as_str().unwrap_or(""), results.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}
