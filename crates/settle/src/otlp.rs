//! Logging and, when `--otlp-endpoint` is set, OpenTelemetry traces.
//!
//! Logs: JSON lines on stderr, filtered by `SETTLE_LOG` (default `info`).
//! Traces: the `tracing` spans of Settle's own crates at INFO and above
//! (`request`, `engine.batch`, `db.transaction`, `webhook.attempt`) become
//! OpenTelemetry spans through `tracing-opentelemetry`, are batched by the
//! SDK's batch processor (its own thread, a bounded queue: a full queue
//! drops spans, never blocks a request) and are sent as OTLP/HTTP JSON to
//! `ENDPOINT/v1/traces`. Log events are not copied into spans, and spans of
//! other crates (hyper, reqwest, the database drivers) are not exported.
//!
//! Without `--otlp-endpoint` there is no OpenTelemetry layer, no exporter
//! and no thread: the subscriber is the same as before.

use clap::Args;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How long one export request may take before it is abandoned.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one "export failed" warning per this interval (the others are counted).
pub const EXPORT_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Most of a collector's answer that is read (it is only checked for success).
const MAX_COLLECTOR_RESPONSE_BYTES: usize = 64 * 1024;

/// OpenTelemetry traces (docs/operations.md, "Traces (OTLP)").
#[derive(Args, Clone, Debug)]
pub struct OtlpArgs {
    /// Export traces over OTLP/HTTP (JSON) to this base URL (spans are POSTed to
    /// `URL/v1/traces`), for example `http://127.0.0.1:4318`. Default: no traces exported.
    #[arg(long, env = "SETTLE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of exported spans.
    #[arg(long, env = "SETTLE_OTLP_SERVICE_NAME", default_value = "settle")]
    pub otlp_service_name: String,
}

/// The installed exporter, flushed by [`Traces::shutdown`].
pub struct Traces {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Traces {
    /// Sends the spans still queued (the batch processor exports them and
    /// stops); a failure is logged. Call after the server stopped serving.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        // The SDK waits on its export thread, which sends through this runtime.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => tracing::info!("trace exporter flushed and stopped"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trace exporter did not flush cleanly"),
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown failed"),
        }
    }
}

fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("SETTLE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// JSON log lines on stderr, for commands that export no traces.
pub fn init_logging() {
    tracing_subscriber::fmt().json().flatten_event(true).with_current_span(false).with_env_filter(log_filter()).with_writer(std::io::stderr).init();
}

/// Logging, plus the trace exporter when `args` names an endpoint. Must run
/// inside the Tokio runtime (exports are sent from it).
pub fn init_logging_and_traces(args: &OtlpArgs) -> anyhow::Result<Traces> {
    let Some(endpoint) = args.otlp_endpoint.as_deref() else {
        init_logging();
        return Ok(Traces { provider: None });
    };
    let provider = provider(endpoint, &args.otlp_service_name)?;
    let tracer = provider.tracer("settle");
    let logs = tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false).with_writer(std::io::stderr).with_filter(log_filter());
    // Only Settle's own spans: no log events (they stay in the logs), no
    // spans of dependencies (the exporter's own HTTP calls among them).
    let ours = tracing_subscriber::filter::filter_fn(|meta| meta.is_span() && *meta.level() <= tracing::Level::INFO && meta.target().starts_with("settle"));
    let traces = tracing_opentelemetry::layer().with_tracer(tracer).with_location(false).with_threads(false).with_tracked_inactivity(false).with_filter(ours);
    tracing_subscriber::registry().with(logs).with(traces).init();
    settle_api::trace_context::set_exporting(true);
    tracing::info!(endpoint = %redact(endpoint), service_name = %args.otlp_service_name, "exporting traces over OTLP/HTTP");
    Ok(Traces { provider: Some(provider) })
}

/// The SDK's tracer provider: a batch processor in front of the OTLP/HTTP
/// JSON exporter, which sends through [`ExportClient`].
fn provider(endpoint: &str, service_name: &str) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    let base = endpoint.trim_end_matches('/');
    anyhow::ensure!(
        base.starts_with("http://") || base.starts_with("https://"),
        "--otlp-endpoint must be an http:// or https:// URL, such as http://127.0.0.1:4318"
    );
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| anyhow::anyhow!("building the OTLP HTTP client: {e}"))?;
    let client = ExportClient { client, runtime: tokio::runtime::Handle::current(), failures: FailureLog::default() };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
        .with_endpoint(format!("{base}/v1/traces"))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        // The message may quote the endpoint, which may hold credentials.
        .map_err(|_| anyhow::anyhow!("--otlp-endpoint {} is not a usable OTLP endpoint", redact(endpoint)))?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(service_name.to_owned())
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// The endpoint without user info, query or fragment, for logs and errors.
fn redact(endpoint: &str) -> String {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("", endpoint));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{rest}")
}

/// Sends the exporter's requests with the workspace's reqwest on the server's
/// Tokio runtime. The SDK's batch processor runs on its own thread and only
/// polls the export future, so the request itself is spawned onto the
/// runtime. Failures are logged here, rate-limited.
#[derive(Debug)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    failures: FailureLog,
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move { send(client, request).await });
        let answer = match sent.await {
            Ok(answer) => answer,
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(response) if response.status().is_success() => Ok(response),
            Ok(response) => {
                self.failures.failed(&format!("the collector answered {}", response.status()));
                Ok(response)
            }
            Err(error) => {
                self.failures.failed(&error);
                Err(error.into())
            }
        }
    }
}

async fn send(client: reqwest::Client, request: Request<Bytes>) -> Result<Response<Bytes>, String> {
    let request = reqwest::Request::try_from(request).map_err(|e| e.without_url().to_string())?;
    // `without_url`: the endpoint may carry credentials.
    let mut response = client.execute(request).await.map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    let mut body = Vec::new();
    while body.len() < MAX_COLLECTOR_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(MAX_COLLECTOR_RESPONSE_BYTES - body.len())]),
            _ => break,
        }
    }
    let mut answer = Response::new(Bytes::from(body));
    *answer.status_mut() = status;
    Ok(answer)
}

/// One warning per [`EXPORT_FAILURE_LOG_INTERVAL`], naming how many failures
/// were not logged since the last one.
#[derive(Debug, Default)]
struct FailureLog {
    last_logged: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl FailureLog {
    fn failed(&self, error: &str) {
        let mut last = self.last_logged.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < EXPORT_FAILURE_LOG_INTERVAL) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(error, unlogged_failures = unlogged, "OTLP trace export failed; the spans of this export are dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_queries_are_not_logged() {
        assert_eq!(redact("https://user:secret@collector.example:4318/otlp?token=x"), "https://collector.example:4318/otlp");
        assert_eq!(redact("http://127.0.0.1:4318"), "http://127.0.0.1:4318");
    }
}
