//! Prometheus metrics: what the server does, served at `GET /metrics` (on the
//! API's address, or on `--metrics-listen` alone). Encoded by
//! `prometheus-client` in the OpenMetrics text format, which Prometheus reads.
//!
//! Label sets are bounded: routes are the router's templates
//! (`/v1/accounts/{id}`, never an id), or `unmatched`; error codes come from
//! the fixed table in `error.rs`.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use settle_store::engine::BatchObserver;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

/// How a webhook attempt ended: `succeeded` (2xx), `failed` (another
/// status, or no answer), `timeout`, `gone` (410, which disables the endpoint).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Why an endpoint was disabled: `gone` or `failing`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// A sandbox fault that fired: its target and mode (fixed sets).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub target: &'static str,
    pub mode: &'static str,
}

/// An originator's ACH return rate above its threshold: its tenant (the
/// internal number of the originator, never an API id) and which rate
/// (`unauthorized`, `administrative`, `overall`). Only originators over a
/// threshold have a series, which bounds the labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReturnRateLabels {
    pub tenant: String,
    pub rate: &'static str,
}

/// Which ACH return rate (`unauthorized`, `administrative`, `overall`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLabels {
    pub rate: &'static str,
}

/// Which kind of window an ACH file was cut for: `scheduled` (a FedACH
/// window, by the scheduler), `sandbox` (the cut test helper), `test_clock`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WindowKindLabels {
    pub kind: &'static str,
}

/// What an entry of a cut ACH file is: `credit`, `debit` or `dishonored_return`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryLabels {
    pub entry: &'static str,
}

/// A return applied to a payment: its code's family (`administrative`:
/// R02–R04, `unauthorized`: the codes NACHA counts as such, `other`) and the
/// code, always one of the fixed table in `settle_ach::returns` (a file's
/// unknown code is never a label: it is refused before it is counted).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReturnLabels {
    pub family: &'static str,
    pub code: &'static str,
}

/// A notification of change applied: its code, one of the fixed table (C01…).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    pub code: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabels>,
    pub http_errors: Family<CodeLabels, Counter>,
    pub idempotent_replays: Counter,
    pub deprecated_requests: Counter,
    pub engine_queue_depth: Gauge,
    pub engine_batch_commands: Histogram,
    pub engine_batch_items: Histogram,
    pub engine_batch_duration: Histogram,
    pub engine_batch_failures: Counter,
    pub ledger_drifted_accounts: Gauge,
    pub ledger_log_broken: Gauge,
    pub ledger_reconciled_at: Gauge,
    pub webhook_attempts: Family<OutcomeLabels, Counter>,
    pub webhook_attempt_duration: Histogram,
    pub webhook_backlog: Gauge,
    pub webhook_delivery_lag: Histogram,
    pub webhook_dead_lettered: Counter,
    pub webhook_endpoints_disabled: Family<ReasonLabels, Counter>,
    pub faults_injected: Family<FaultLabels, Counter>,
    pub ach_return_rate_exceeded_bps: Family<ReturnRateLabels, Gauge>,
    pub ach_return_rate_alerts: Family<RateLabels, Counter>,
    pub ach_files_cut: Family<WindowKindLabels, Counter>,
    pub ach_entries_written: Family<EntryLabels, Counter>,
    pub ach_return_files: Family<OutcomeLabels, Counter>,
    pub ach_returns: Family<ReturnLabels, Counter>,
    pub ach_notifications_of_change: Family<ChangeLabels, Counter>,
    pub ach_untimely_returns: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register("settle_http_requests", "HTTP requests answered, by method, route template and status", http_requests.clone());
        let http_duration: HistogramFamily<RouteLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("settle_http_request_duration_seconds", "Time from request to response, by method and route template", http_duration.clone());
        let http_errors = Family::<CodeLabels, Counter>::default();
        registry.register("settle_http_errors", "Error responses by their error code (rate_limited, overloaded, insufficient_funds, ...)", http_errors.clone());
        let idempotent_replays = Counter::default();
        registry.register("settle_idempotent_replays", "Responses replayed for a repeated Idempotency-Key", idempotent_replays.clone());
        let deprecated_requests = Counter::default();
        registry.register("settle_deprecated_requests", "Requests on a deprecated API version or endpoint", deprecated_requests.clone());
        let engine_queue_depth = Gauge::default();
        registry.register("settle_engine_queue_depth", "Commands waiting for the ledger engine, when scraped", engine_queue_depth.clone());
        let engine_batch_commands = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register("settle_engine_batch_commands", "Commands per committed engine batch", engine_batch_commands.clone());
        let engine_batch_items = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register("settle_engine_batch_items", "Ledger transactions per committed engine batch", engine_batch_items.clone());
        let engine_batch_duration = latency_histogram();
        registry.register(
            "settle_engine_batch_duration_seconds",
            "Time of one engine batch from BEGIN to COMMIT (one fsync); what every caller of the batch waited for",
            engine_batch_duration.clone(),
        );
        let engine_batch_failures = Counter::default();
        registry.register("settle_engine_batch_failures", "Engine batches that could not be committed (their callers got 503)", engine_batch_failures.clone());
        let ledger_drifted_accounts = Gauge::default();
        registry.register(
            "settle_ledger_drifted_accounts",
            "Accounts whose counters differ from their entries, at the last scheduled reconciliation",
            ledger_drifted_accounts.clone(),
        );
        let ledger_log_broken = Gauge::default();
        registry.register("settle_ledger_log_broken", "1 when the last reconciliation found the ledger log or the entries broken", ledger_log_broken.clone());
        let ledger_reconciled_at = Gauge::default();
        registry.register(
            "settle_ledger_reconciled_at_seconds",
            "Unix time of the last completed scheduled reconciliation (0: none yet)",
            ledger_reconciled_at.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register("settle_webhook_attempts", "Webhook delivery attempts by outcome (succeeded, failed, timeout, gone)", webhook_attempts.clone());
        let webhook_attempt_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "settle_webhook_attempt_duration_seconds",
            "Time of one webhook attempt, connect to answer (attempts a sandbox fault decided, with no request, are not observed)",
            webhook_attempt_duration.clone(),
        );
        let webhook_backlog = Gauge::default();
        registry.register(
            "settle_webhook_backlog",
            "Webhook deliveries due now that no worker holds, counted every few seconds by the delivery worker",
            webhook_backlog.clone(),
        );
        let webhook_delivery_lag = Histogram::new(exponential_buckets(0.1, 4.0, 12));
        registry.register(
            "settle_webhook_delivery_lag_seconds",
            "Time from an event's creation to its successful delivery to an endpoint (retries included)",
            webhook_delivery_lag.clone(),
        );
        let webhook_dead_lettered = Counter::default();
        registry.register(
            "settle_webhook_dead_lettered",
            "Webhook deliveries dead-lettered: retry schedule exhausted, or the endpoint answered 410",
            webhook_dead_lettered.clone(),
        );
        let webhook_endpoints_disabled = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "settle_webhook_endpoints_disabled",
            "Webhook endpoints disabled by the worker, by reason (gone, failing)",
            webhook_endpoints_disabled.clone(),
        );
        let faults_injected = Family::<FaultLabels, Counter>::default();
        registry.register("settle_faults_injected", "Sandbox faults that fired, by target and mode (see docs/sandbox.md)", faults_injected.clone());
        let ach_return_rate_exceeded_bps = Family::<ReturnRateLabels, Gauge>::default();
        registry.register(
            "settle_ach_return_rate_exceeded_bps",
            "ACH debit return rates over a rolling 60 days above their NACHA threshold (unauthorized 50, administrative 300, overall 1500 bps), per originator (tenant) and rate, as of its last return or cut; absent when under",
            ach_return_rate_exceeded_bps.clone(),
        );
        let ach_return_rate_alerts = Family::<RateLabels, Counter>::default();
        registry.register(
            "settle_ach_return_rate_alerts",
            "ACH return rates that crossed their NACHA threshold (each crossing once), by rate",
            ach_return_rate_alerts.clone(),
        );
        let ach_files_cut = Family::<WindowKindLabels, Counter>::default();
        registry.register("settle_ach_files_cut", "NACHA files cut, by window kind (scheduled, sandbox, test_clock)", ach_files_cut.clone());
        let ach_entries_written = Family::<EntryLabels, Counter>::default();
        registry.register(
            "settle_ach_entries_written",
            "Entries written into cut NACHA files, by kind (credit, debit, dishonored_return)",
            ach_entries_written.clone(),
        );
        let ach_return_files = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "settle_ach_return_files",
            "Return / NOC files received, by outcome (imported, replayed: the same bytes again, rejected: malformed, nothing applied)",
            ach_return_files.clone(),
        );
        let ach_returns = Family::<ReturnLabels, Counter>::default();
        registry.register(
            "settle_ach_returns",
            "ACH returns applied to payments (files and sandbox), by code family (administrative, unauthorized, other) and code",
            ach_returns.clone(),
        );
        let ach_notifications_of_change = Family::<ChangeLabels, Counter>::default();
        registry.register(
            "settle_ach_notifications_of_change",
            "Notifications of change applied to bank accounts, by change code",
            ach_notifications_of_change.clone(),
        );
        let ach_untimely_returns = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "settle_ach_untimely_returns",
            "Returns received outside their return window, by outcome (dishonored: an R68 goes in the next file; late: dishonored already)",
            ach_untimely_returns.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            http_errors,
            idempotent_replays,
            deprecated_requests,
            engine_queue_depth,
            engine_batch_commands,
            engine_batch_items,
            engine_batch_duration,
            engine_batch_failures,
            ledger_drifted_accounts,
            ledger_log_broken,
            ledger_reconciled_at,
            webhook_attempts,
            webhook_attempt_duration,
            webhook_backlog,
            webhook_delivery_lag,
            webhook_dead_lettered,
            webhook_endpoints_disabled,
            faults_injected,
            ach_return_rate_exceeded_bps,
            ach_return_rate_alerts,
            ach_files_cut,
            ach_entries_written,
            ach_return_files,
            ach_returns,
            ach_notifications_of_change,
            ach_untimely_returns,
        }
    }
}

impl Metrics {
    /// Records one answered request. Methods outside the standard set are
    /// counted as `other`: a client choosing methods must not choose labels.
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = match method {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
            _ => "other",
        };
        self.http_requests.get_or_create(&RequestLabels { method: method.to_owned(), route: route.to_owned(), status }).inc();
        self.http_duration.get_or_create(&RouteLabels { method: method.to_owned(), route: route.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// Counts a return applied to a payment under its code and family.
    pub fn ach_return(&self, reason: &settle_ach::returns::ReturnReason) {
        let family = if matches!(reason.code, "R02" | "R03" | "R04") {
            "administrative"
        } else if reason.is_unauthorized {
            "unauthorized"
        } else {
            "other"
        };
        self.ach_returns.get_or_create(&ReturnLabels { family, code: reason.code }).inc();
    }

    pub fn error(&self, code: &str) {
        self.http_errors.get_or_create(&CodeLabels { code: code.to_owned() }).inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl BatchObserver for Metrics {
    fn committed(&self, commands: usize, items: usize, elapsed: Duration) {
        self.engine_batch_commands.observe(commands as f64);
        self.engine_batch_items.observe(items as f64);
        self.engine_batch_duration.observe(elapsed.as_secs_f64());
    }

    fn failed(&self) {
        self.engine_batch_failures.inc();
    }
}

/// `GET /metrics`.
pub async fn serve(State(state): State<AppState>) -> Response {
    state.metrics.engine_queue_depth.set(i64::try_from(state.engine.queue_depth()).unwrap_or(i64::MAX));
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"))], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics could not be encoded");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The router of `/metrics` (merged into the API's, or alone on
/// `--metrics-listen`), with the request id, access log and security headers
/// every answer has.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(serve).fallback(crate::method_not_allowed))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::observe::request_layer))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::hygiene::security_headers))
        .with_state(state)
}
