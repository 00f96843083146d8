//! Developer tools for webhooks, like `stripe listen` / `stripe trigger`:
//!
//! - `settle listen --forward-to URL`: follows a sandbox's events as they
//!   happen (`GET /v1/events`, newest after the last seen) and forwards each
//!   to a local URL, signed the Standard Webhooks way with a secret printed
//!   at start, one line per delivery. Nothing is registered on the server:
//!   stopping `listen` leaves nothing behind.
//! - `settle trigger TYPE`: makes the sandbox objects that fire that event.
//!
//! Both talk to a running server with a sandbox key (`--api-key`, or the
//! `sandbox.key` the server wrote in its data dir); live keys are refused.

use crate::serve::SANDBOX_KEY_FILE;
use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use settle_api::webhooks::signature::{self, WebhookSecret};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How often `listen` asks for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long `listen` waits for the local endpoint to answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the server is and which key to use.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The running server.
    #[arg(long, env = "SETTLE_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,
    /// A sandbox API key; default: the `sandbox.key` in `--data-dir`.
    #[arg(long, env = "SETTLE_API_KEY")]
    pub api_key: Option<String>,
    /// The server's data dir (for its `sandbox.key`).
    #[arg(long, env = "SETTLE_DATA_DIR", default_value = "./settle-data")]
    pub data_dir: PathBuf,
}

impl ClientArgs {
    fn key(&self) -> anyhow::Result<String> {
        let key = match &self.api_key {
            Some(k) => k.clone(),
            None => {
                let path = self.data_dir.join(SANDBOX_KEY_FILE);
                std::fs::read_to_string(&path).with_context(|| format!("reading {} (or pass --api-key)", path.display()))?.trim().to_owned()
            }
        };
        if !key.starts_with("sk_sandbox_") {
            bail!("listen and trigger work on the sandbox only: use a sandbox key (sk_sandbox_…)");
        }
        Ok(key)
    }
}

pub(crate) struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder().timeout(FORWARD_TIMEOUT).build().context("building an HTTP client")?;
        Ok(Client { base: args.api_url.trim_end_matches('/').to_owned(), key: args.key()?, http })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key).header("Settle-Version", settle_api::versions::NEWEST.to_string());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("calling {}{path}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.with_context(|| format!("reading the answer of {path}"))?;
        if !status.is_success() {
            bail!("{path} answered {status}: {}", body["error"]["message"].as_str().unwrap_or("(no message)"));
        }
        Ok(body)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// POSTs a text body (a NACHA file) and reads the JSON answer.
    pub(crate) async fn post_text(&self, path: &str, body: String) -> anyhow::Result<Value> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("Settle-Version", settle_api::versions::NEWEST.to_string())
            .header("Content-Type", "text/plain")
            .body(body);
        let response = request.send().await.with_context(|| format!("calling {}{path}", self.base))?;
        let status = response.status();
        let answer: Value = response.json().await.with_context(|| format!("reading the answer of {path}"))?;
        if !status.is_success() {
            bail!(
                "{path} answered {status}: {} ({})",
                answer["error"]["message"].as_str().unwrap_or("(no message)"),
                answer["error"]["param"].as_str().unwrap_or("-")
            );
        }
        Ok(answer)
    }
}

#[derive(Args, Clone, Debug)]
pub struct ListenArgs {
    /// Where to forward each event (for example http://localhost:3000/webhooks).
    #[arg(long)]
    pub forward_to: String,
    /// Only these event types (comma-separated or repeated); default: all.
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn listen(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let secret = WebhookSecret::generate();
    // Start after the newest event: only what happens from now on.
    let newest = client.call(reqwest::Method::GET, "/v1/events?limit=1", None).await?;
    let mut last: Option<String> = newest["data"][0]["id"].as_str().map(str::to_owned);
    println!("Ready! Your webhook signing secret is {} (forwarding to {})", secret.expose(), args.forward_to);
    loop {
        let path = match &last {
            Some(id) => format!("/v1/events?limit=100&ending_before={id}"),
            None => String::from("/v1/events?limit=100"),
        };
        let page = match client.call(reqwest::Method::GET, &path, None).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("could not read events: {e:#}");
                tokio::time::sleep(POLL_INTERVAL * 5).await;
                continue;
            }
        };
        let mut events: Vec<Value> = page["data"].as_array().cloned().unwrap_or_default();
        // A page after a cursor comes newest first: forward oldest first.
        events.reverse();
        for event in &events {
            let id = event["id"].as_str().unwrap_or_default().to_owned();
            let kind = event["type"].as_str().unwrap_or_default();
            last = Some(id.clone());
            if !args.events.is_empty() && !args.events.iter().any(|t| t == kind) {
                continue;
            }
            let body = serde_json::to_vec(event).context("serializing an event")?;
            let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let answer = client
                .http
                .post(&args.forward_to)
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature::header(&[&secret], &id, timestamp, &body))
                .body(body)
                .send()
                .await;
            let now = time::OffsetDateTime::now_utc();
            let clock = format!("{:02}:{:02}:{:02}", now.hour(), now.minute(), now.second());
            match answer {
                Ok(r) => println!("{clock}  --> {kind} [{id}]  <--  [{}] POST {}", r.status().as_u16(), args.forward_to),
                Err(e) => println!("{clock}  --> {kind} [{id}]  <--  [ERR] POST {}: {e}", args.forward_to),
            }
        }
        if page["has_more"] != json!(true) {
            tokio::select! {
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                () = crate::serve::shutdown_requested() => return Ok(ExitCode::SUCCESS),
            }
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct TriggerArgs {
    /// The event type to fire (see `GET /v1/event_types`).
    pub event_type: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn trigger(args: TriggerArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let account = |name: &str, normal: &str| json!({"name": name, "currency": "USD", "normal_balance": normal, "metadata": {"settle_trigger": "true"}});
    let transfer = |from: &str, to: &str, amount: i64, pending: bool| {
        json!({"status": if pending { "pending" } else { "posted" }, "description": "settle trigger", "entries": [
            {"account_id": from, "direction": "debit", "amount": amount},
            {"account_id": to, "direction": "credit", "amount": amount},
        ]})
    };
    let pair = async || -> anyhow::Result<(String, String)> {
        let from = client.post("/v1/accounts", account("trigger funding", "debit")).await?;
        let to = client.post("/v1/accounts", account("trigger wallet", "credit")).await?;
        Ok((from["id"].as_str().unwrap_or_default().to_owned(), to["id"].as_str().unwrap_or_default().to_owned()))
    };
    let made = match args.event_type.as_str() {
        "ledger.account.created" => client.post("/v1/accounts", account("trigger account", "credit")).await?,
        "ledger.transaction.created" => {
            let (from, to) = pair().await?;
            client.post("/v1/transactions", transfer(&from, &to, 1000, false)).await?
        }
        "ledger.transaction.posted" | "ledger.transaction.voided" => {
            let (from, to) = pair().await?;
            let hold = client.post("/v1/transactions", transfer(&from, &to, 1000, true)).await?;
            let id = hold["id"].as_str().unwrap_or_default();
            let action = if args.event_type.ends_with("posted") { "post" } else { "void" };
            client.post(&format!("/v1/transactions/{id}/{action}"), json!({})).await?
        }
        "ledger.transaction.reversed" => {
            let (from, to) = pair().await?;
            let paid = client.post("/v1/transactions", transfer(&from, &to, 1000, false)).await?;
            client.post(&format!("/v1/transactions/{}/reverse", paid["id"].as_str().unwrap_or_default()), json!({})).await?
        }
        "webhook_endpoint.disabled" => gone_endpoint(&client).await?,
        // A new bank account verified by prenote: its verification becomes `pending`.
        "counterparty.bank_account.verification_updated" => {
            client
                .post(
                    "/v1/counterparties",
                    json!({"name": "Trigger Receiver", "bank_accounts": [{"routing_number": "021000021", "account_number": "000123456789", "account_type": "checking", "holder_name": "Trigger Receiver", "verify": true}]}),
                )
                .await?
        }
        kind if kind.starts_with("payment.") => payment_through(&client, kind).await?,
        other => bail!("settle trigger does not know {other:?}; known: {}", known_types()),
    };
    println!("Trigger succeeded: {} fired by {} {}", args.event_type, made["object"].as_str().unwrap_or("object"), made["id"].as_str().unwrap_or(""));
    Ok(ExitCode::SUCCESS)
}

/// A sandbox ACH payment taken through the sandbox helpers to the state the event type names.
async fn payment_through(client: &Client, kind: &str) -> anyhow::Result<Value> {
    let wallet = client
        .post("/v1/accounts", json!({"name": "trigger wallet", "currency": "USD", "normal_balance": "credit", "metadata": {"settle_trigger": "true"}}))
        .await?;
    let wallet = wallet["id"].as_str().unwrap_or_default().to_owned();
    client.post(&format!("/v1/test_helpers/accounts/{wallet}/fund"), json!({"amount": 10_000})).await?;
    let counterparty = client
        .post(
            "/v1/counterparties",
            json!({"name": "Trigger Receiver", "bank_accounts": [{"routing_number": "021000021", "account_number": "000123456789", "account_type": "checking", "holder_name": "Trigger Receiver"}]}),
        )
        .await?;
    let bank = counterparty["bank_accounts"][0]["id"].as_str().unwrap_or_default().to_owned();
    let pay = async || -> anyhow::Result<String> {
        let body = json!({"rail": "ach", "direction": "credit", "amount": 1_000, "currency": "USD", "ledger_account_id": wallet,
            "counterparty_bank_account_id": bank, "sec_code": "PPD", "company_entry_description": "TRIGGER"});
        Ok(client.post("/v1/payments", body).await?["id"].as_str().unwrap_or_default().to_owned())
    };
    let id = pay().await?;
    let helper = |action: &str| format!("/v1/test_helpers/payments/{id}/{action}");
    match kind {
        "payment.created" => client.call(reqwest::Method::GET, &format!("/v1/payments/{id}"), None).await,
        "payment.canceled" => client.post(&format!("/v1/payments/{id}/cancel"), json!({})).await,
        "payment.submitted" => {
            client.post("/v1/test_helpers/ach/cut", json!({})).await?;
            client.call(reqwest::Method::GET, &format!("/v1/payments/{id}"), None).await
        }
        "payment.settled" => {
            client.post("/v1/test_helpers/ach/cut", json!({})).await?;
            client.post(&helper("settle"), json!({})).await
        }
        "payment.returned" => {
            client.post("/v1/test_helpers/ach/cut", json!({})).await?;
            client.post(&helper("return"), json!({"code": "R01"})).await
        }
        "payment.failed" => {
            // A second payment waits while the first is filed and returned R02
            // (account closed), which disables the account: the next cut fails it.
            client.post("/v1/test_helpers/ach/cut", json!({})).await?;
            let second = pay().await?;
            client.post(&helper("return"), json!({"code": "R02"})).await?;
            client.post("/v1/test_helpers/ach/cut", json!({})).await?;
            client.call(reqwest::Method::GET, &format!("/v1/payments/{second}"), None).await
        }
        other => bail!("settle trigger does not know {other:?}; known: {}", known_types()),
    }
}

fn known_types() -> String {
    settle_api::events::catalog::TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

/// An endpoint on a local port that answers `410 Gone`, and an event for it:
/// Settle disables it at its first attempt.
async fn gone_endpoint(client: &Client) -> anyhow::Result<Value> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a local port")?;
    let address = listener.local_addr().context("the local address")?;
    let server = tokio::spawn(async move {
        let router = axum::Router::new().fallback(|| async { (axum::http::StatusCode::GONE, "gone") });
        let _ = axum::serve(listener, router).await;
    });
    let endpoint = client
        .post(
            "/v1/webhook_endpoints",
            json!({"url": format!("http://{address}/gone"), "enabled_events": ["ledger.account.created"], "description": "settle trigger"}),
        )
        .await?;
    let id = endpoint["id"].as_str().unwrap_or_default().to_owned();
    client.post("/v1/accounts", json!({"name": "trigger account", "currency": "USD", "normal_balance": "credit"})).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = client.call(reqwest::Method::GET, &format!("/v1/webhook_endpoints/{id}"), None).await?;
        if now["status"] == "disabled" {
            server.abort();
            return Ok(now);
        }
        if std::time::Instant::now() > deadline {
            server.abort();
            bail!("the server did not disable {id} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
