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
//! The exporter is ours ([`JsonExporter`], about 450 lines with comments): OTLP/HTTP with
//! JSON bodies only, so the build needs neither `opentelemetry-otlp` nor
//! `opentelemetry-proto`, prost or the SDK's metrics module (a minute of
//! compile time; docs/benchmarks.md, "Build time"). The encoding follows the
//! OTLP specification's JSON mapping (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>):
//! trace and span ids as lowercase hex, 64-bit integers and timestamps as
//! decimal strings, enums as integers, lowerCamelCase field names.
//!
//! Without `--otlp-endpoint` there is no OpenTelemetry layer, no exporter
//! and no thread: the subscriber is the same as before.

use clap::Args;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceState, TracerProvider as _};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How long one export (its retries included) may take before it is abandoned.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one "export failed" warning per this interval (the others are counted).
pub const EXPORT_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Most of a collector's answer that is read (it is only checked for success
/// and for a partial success).
const MAX_COLLECTOR_RESPONSE_BYTES: usize = 64 * 1024;
/// Retries of one export after a network error or a 429, 502, 503 or 504
/// answer (the ones the OTLP/HTTP specification calls retryable), within
/// [`EXPORT_TIMEOUT`].
const MAX_EXPORT_RETRIES: u32 = 3;
/// The first wait before a retry; it doubles up to [`RETRY_MAX_DELAY`].
const RETRY_INITIAL_DELAY: Duration = Duration::from_millis(100);
const RETRY_MAX_DELAY: Duration = Duration::from_millis(1600);
/// Up to this much random delay is added to each wait, so servers that lost
/// their collector together do not retry in step.
const RETRY_MAX_JITTER_MS: u64 = 100;
/// The longest `Retry-After` honoured (the export deadline bounds it anyway).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(5);
/// Most headers taken from `OTEL_EXPORTER_OTLP_*HEADERS`.
const MAX_EXPORT_HEADERS: usize = 32;

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

/// The SDK's tracer provider: a batch processor in front of [`JsonExporter`].
fn provider(endpoint: &str, service_name: &str) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    let base = endpoint.trim_end_matches('/');
    anyhow::ensure!(
        base.starts_with("http://") || base.starts_with("https://"),
        "--otlp-endpoint must be an http:// or https:// URL, such as http://127.0.0.1:4318"
    );
    // The message may quote the endpoint, which may hold credentials.
    let url =
        reqwest::Url::parse(&format!("{base}/v1/traces")).map_err(|_| anyhow::anyhow!("--otlp-endpoint {} is not a usable OTLP endpoint", redact(endpoint)))?;
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("settle/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("building the OTLP HTTP client: {e}"))?;
    let headers = std::env::var("OTEL_EXPORTER_OTLP_TRACES_HEADERS").or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_HEADERS")).unwrap_or_default();
    let exporter = JsonExporter {
        target: Arc::new(Target { client, url, headers: export_headers(&headers) }),
        runtime: tokio::runtime::Handle::current(),
        resource: Arc::from("{}"),
        failures: FailureLog::default(),
        is_shut_down: AtomicBool::new(false),
    };
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
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

/// Headers in the OpenTelemetry environment variables' format,
/// `key1=value1,key2=value2` with percent-encoded values; malformed entries
/// are skipped (as the official exporters do).
fn export_headers(spec: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    for entry in spec.split(',').take(MAX_EXPORT_HEADERS) {
        let Some((key, value)) = entry.split_once('=') else { continue };
        let value = percent_decode(value.trim());
        let (Ok(name), Ok(value)) = (reqwest::header::HeaderName::from_bytes(key.trim().as_bytes()), reqwest::header::HeaderValue::from_str(&value)) else {
            continue;
        };
        if !value.is_empty() {
            headers.insert(name, value);
        }
    }
    headers
}

/// `%XX` sequences decoded; the text as it is when one is malformed or the
/// result is not UTF-8.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let Some(byte) = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return text.to_owned();
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// Where exports go and how.
#[derive(Debug)]
struct Target {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
}

/// An OTLP/HTTP JSON span exporter over the workspace's reqwest. The SDK's
/// batch processor runs on its own thread and only polls the export future,
/// so the request (and its retries) is spawned onto the server's Tokio
/// runtime. Failures are logged here, rate-limited.
#[derive(Debug)]
struct JsonExporter {
    target: Arc<Target>,
    runtime: tokio::runtime::Handle,
    /// The `resource` object of every export, encoded once.
    resource: Arc<str>,
    failures: FailureLog,
    is_shut_down: AtomicBool,
}

impl SpanExporter for JsonExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.is_shut_down.load(Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let body = bytes::Bytes::from(encode_export(&self.resource, &batch));
        let target = Arc::clone(&self.target);
        let sent = self.runtime.spawn(async move { send(&target, body).await });
        let outcome = sent.await.unwrap_or_else(|e| Err(e.to_string()));
        match outcome {
            Ok(Some(rejected)) => {
                self.failures.failed(&rejected);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(error) => {
                self.failures.failed(&error);
                Err(OTelSdkError::InternalFailure(error))
            }
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.is_shut_down.swap(true, Ordering::Relaxed) { Err(OTelSdkError::AlreadyShutdown) } else { Ok(()) }
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = Arc::from(encode_resource(resource));
    }
}

/// What one POST came to.
enum Attempt {
    /// Accepted; `Some` names the spans the collector rejected (a partial success).
    Accepted(Option<String>),
    /// Worth retrying (network error, 429, 502, 503, 504), after the server's `Retry-After` if it gave one.
    Retryable { error: String, retry_after: Option<Duration> },
    /// Refused for good (any other status): retrying would not help.
    Refused(String),
}

/// POSTs `body` until it is accepted, refused, [`MAX_EXPORT_RETRIES`] retries
/// failed or [`EXPORT_TIMEOUT`] is over. `Ok(Some(…))`: accepted but some
/// spans rejected.
async fn send(target: &Target, body: bytes::Bytes) -> Result<Option<String>, String> {
    let deadline = Instant::now() + EXPORT_TIMEOUT;
    let mut delay = RETRY_INITIAL_DELAY;
    let mut retries = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (error, retry_after) = match attempt(target, body.clone(), remaining).await {
            Attempt::Accepted(rejected) => return Ok(rejected),
            Attempt::Refused(error) => return Err(error),
            Attempt::Retryable { error, retry_after } => (error, retry_after),
        };
        let jitter = Duration::from_millis(rand::random_range(0..=RETRY_MAX_JITTER_MS));
        let wait = retry_after.map_or(delay.saturating_add(jitter).min(RETRY_MAX_DELAY), |after| after.min(RETRY_AFTER_MAX));
        if retries == MAX_EXPORT_RETRIES || Instant::now() + wait >= deadline {
            return Err(error);
        }
        retries += 1;
        tokio::time::sleep(wait).await;
        delay = delay.saturating_mul(2);
    }
}

async fn attempt(target: &Target, body: bytes::Bytes, timeout: Duration) -> Attempt {
    let request = target
        .client
        .post(target.url.clone())
        .timeout(timeout)
        .headers(target.headers.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    // `without_url`: the endpoint may carry credentials.
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Attempt::Retryable { error: e.without_url().to_string(), retry_after: None },
    };
    let status = response.status();
    if !status.is_success() {
        let error = format!("the collector answered {status}");
        return match status.as_u16() {
            429 | 503 => {
                let retry_after = response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
                Attempt::Retryable { error, retry_after: retry_after.map(Duration::from_secs) }
            }
            502 | 504 => Attempt::Retryable { error, retry_after: None },
            _ => Attempt::Refused(error),
        };
    }
    let mut answer = Vec::new();
    while answer.len() < MAX_COLLECTOR_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => answer.extend_from_slice(&chunk[..chunk.len().min(MAX_COLLECTOR_RESPONSE_BYTES - answer.len())]),
            _ => break,
        }
    }
    Attempt::Accepted(partial_success(&answer))
}

/// The collector's `partialSuccess`, when it rejected spans or sent a message.
fn partial_success(answer: &[u8]) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let partial = answer.get("partialSuccess")?;
    let rejected = match &partial["rejectedSpans"] {
        serde_json::Value::String(n) => n.parse().unwrap_or(0),
        n => n.as_i64().unwrap_or(0),
    };
    let message = partial["errorMessage"].as_str().unwrap_or_default();
    (rejected > 0 || !message.is_empty()).then(|| format!("the collector rejected {rejected} spans: {message}"))
}

// OTLP JSON encoding (opentelemetry-proto's trace/v1 and common/v1 messages).

/// `ExportTraceServiceRequest`: one `ResourceSpans` holding one `ScopeSpans`
/// per instrumentation scope, in order of first appearance.
fn encode_export(resource: &str, spans: &[SpanData]) -> String {
    let mut scopes: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
    for span in spans {
        match scopes.iter_mut().find(|(scope, _)| **scope == span.instrumentation_scope) {
            Some((_, of_scope)) => of_scope.push(span),
            None => scopes.push((&span.instrumentation_scope, vec![span])),
        }
    }
    let mut out = String::with_capacity(512 * spans.len() + 256);
    out.push_str("{\"resourceSpans\":[{\"resource\":");
    out.push_str(resource);
    out.push_str(",\"scopeSpans\":[");
    for (i, (scope, of_scope)) in scopes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut scope_spans = Object::open(&mut out);
        let into = scope_spans.key("scope");
        let mut fields = Object::open(into);
        string(fields.key("name"), scope.name());
        if let Some(version) = scope.version() {
            string(fields.key("version"), version);
        }
        attributes(fields.key("attributes"), scope.attributes());
        fields.close();
        if let Some(schema) = scope.schema_url() {
            string(scope_spans.key("schemaUrl"), schema);
        }
        let into = scope_spans.key("spans");
        into.push('[');
        for (j, span) in of_scope.iter().enumerate() {
            if j > 0 {
                into.push(',');
            }
            encode_span(into, span);
        }
        into.push(']');
        scope_spans.close();
    }
    out.push_str("]}]}");
    out
}

/// The `resource` object of `ResourceSpans`.
fn encode_resource(resource: &opentelemetry_sdk::Resource) -> String {
    let mut out = String::new();
    let mut fields = Object::open(&mut out);
    let pairs: Vec<KeyValue> = resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();
    attributes(fields.key("attributes"), pairs.iter());
    fields.close();
    out
}

/// `SpanFlags`: the W3C trace flags, and whether the parent is remote.
const SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const SPAN_FLAGS_CONTEXT_IS_REMOTE: u32 = 0x200;

fn span_flags(trace_flags: u8, is_remote: bool) -> u32 {
    u32::from(trace_flags) | SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE | if is_remote { SPAN_FLAGS_CONTEXT_IS_REMOTE } else { 0 }
}

fn encode_span(out: &mut String, span: &SpanData) {
    let context = &span.span_context;
    let mut fields = Object::open(out);
    string(fields.key("traceId"), &hex::encode(context.trace_id().to_bytes()));
    string(fields.key("spanId"), &hex::encode(context.span_id().to_bytes()));
    trace_state(&mut fields, context.trace_state());
    if span.parent_span_id != SpanId::INVALID {
        string(fields.key("parentSpanId"), &hex::encode(span.parent_span_id.to_bytes()));
    }
    number(fields.key("flags"), span_flags(context.trace_flags().to_u8(), span.parent_span_is_remote));
    string(fields.key("name"), &span.name);
    // SpanKind: 0 is SPAN_KIND_UNSPECIFIED.
    let kind: u8 = match span.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    number(fields.key("kind"), kind);
    unix_nanos(fields.key("startTimeUnixNano"), span.start_time);
    unix_nanos(fields.key("endTimeUnixNano"), span.end_time);
    attributes(fields.key("attributes"), span.attributes.iter());
    dropped(&mut fields, "droppedAttributesCount", span.dropped_attributes_count);
    if !span.events.is_empty() {
        let into = fields.key("events");
        into.push('[');
        for (i, event) in span.events.iter().enumerate() {
            if i > 0 {
                into.push(',');
            }
            let mut event_fields = Object::open(into);
            unix_nanos(event_fields.key("timeUnixNano"), event.timestamp);
            string(event_fields.key("name"), &event.name);
            attributes(event_fields.key("attributes"), event.attributes.iter());
            dropped(&mut event_fields, "droppedAttributesCount", event.dropped_attributes_count);
            event_fields.close();
        }
        into.push(']');
    }
    dropped(&mut fields, "droppedEventsCount", span.events.dropped_count);
    if !span.links.is_empty() {
        let into = fields.key("links");
        into.push('[');
        for (i, link) in span.links.iter().enumerate() {
            if i > 0 {
                into.push(',');
            }
            let linked = &link.span_context;
            let mut link_fields = Object::open(into);
            string(link_fields.key("traceId"), &hex::encode(linked.trace_id().to_bytes()));
            string(link_fields.key("spanId"), &hex::encode(linked.span_id().to_bytes()));
            trace_state(&mut link_fields, linked.trace_state());
            attributes(link_fields.key("attributes"), link.attributes.iter());
            dropped(&mut link_fields, "droppedAttributesCount", link.dropped_attributes_count);
            number(link_fields.key("flags"), span_flags(linked.trace_flags().to_u8(), linked.is_remote()));
            link_fields.close();
        }
        into.push(']');
    }
    dropped(&mut fields, "droppedLinksCount", span.links.dropped_count);
    // StatusCode: 0 unset, 1 ok, 2 error.
    let mut status = Object::open(fields.key("status"));
    match &span.status {
        Status::Unset => number(status.key("code"), 0_u8),
        Status::Ok => number(status.key("code"), 1_u8),
        Status::Error { description } => {
            if !description.is_empty() {
                string(status.key("message"), description);
            }
            number(status.key("code"), 2_u8);
        }
    }
    status.close();
    fields.close();
}

fn trace_state(fields: &mut Object<'_>, state: &TraceState) {
    let header = state.header();
    if !header.is_empty() {
        string(fields.key("traceState"), &header);
    }
}

/// A `dropped…Count` field, left out when zero (the default).
fn dropped(fields: &mut Object<'_>, key: &str, count: u32) {
    if count > 0 {
        number(fields.key(key), count);
    }
}

/// A `fixed64` timestamp: nanoseconds since the Unix epoch, as a decimal string.
fn unix_nanos(out: &mut String, at: SystemTime) {
    let nanos = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let _ = write!(out, "\"{}\"", u64::try_from(nanos).unwrap_or(u64::MAX));
}

fn attributes<'a>(out: &mut String, pairs: impl Iterator<Item = &'a KeyValue>) {
    out.push('[');
    for (i, pair) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut fields = Object::open(out);
        string(fields.key("key"), pair.key.as_str());
        any_value(fields.key("value"), &pair.value);
        fields.close();
    }
    out.push(']');
}

/// An `AnyValue`: `{"stringValue": …}`, `{"intValue": "…"}` (int64 as a string),
/// `{"doubleValue": …}`, `{"boolValue": …}` or `{"arrayValue": {"values": […]}}`.
fn any_value(out: &mut String, value: &Value) {
    match value {
        Value::Bool(b) => {
            let _ = write!(out, "{{\"boolValue\":{b}}}");
        }
        Value::I64(n) => {
            let _ = write!(out, "{{\"intValue\":\"{n}\"}}");
        }
        Value::F64(x) => {
            out.push_str("{\"doubleValue\":");
            double(out, *x);
            out.push('}');
        }
        Value::String(s) => {
            out.push_str("{\"stringValue\":");
            string(out, s.as_str());
            out.push('}');
        }
        Value::Array(array) => {
            out.push_str("{\"arrayValue\":{\"values\":[");
            let values: Vec<Value> = match array {
                Array::Bool(v) => v.iter().map(|b| Value::Bool(*b)).collect(),
                Array::I64(v) => v.iter().map(|n| Value::I64(*n)).collect(),
                Array::F64(v) => v.iter().map(|x| Value::F64(*x)).collect(),
                Array::String(v) => v.iter().map(|s| Value::String(s.clone())).collect(),
                // A kind of array newer than this exporter: its text.
                other => vec![Value::String(other.to_string().into())],
            };
            for (i, element) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                any_value(out, element);
            }
            out.push_str("]}}");
        }
        // A kind of value newer than this exporter: its text.
        other => {
            out.push_str("{\"stringValue\":");
            string(out, &other.as_str());
            out.push('}');
        }
    }
}

/// A `double`: a JSON number, or "NaN", "Infinity", "-Infinity" (the
/// protobuf JSON mapping's names; JSON has no such numbers).
fn double(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("\"NaN\"");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "\"Infinity\"" } else { "\"-Infinity\"" });
    } else {
        let _ = write!(out, "{x}");
    }
}

fn number(out: &mut String, n: impl Into<u64>) {
    let _ = write!(out, "{}", n.into());
}

/// `text` as a JSON string.
fn string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes a JSON object's `{`, the commas between its fields, and its `}`.
struct Object<'a> {
    out: &'a mut String,
    is_empty: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Object { out, is_empty: true }
    }

    /// Writes `"key":` and returns where the value goes.
    fn key(&mut self, key: &str) -> &mut String {
        if !self.is_empty {
            self.out.push(',');
        }
        self.is_empty = false;
        string(self.out, key);
        self.out.push(':');
        self.out
    }

    fn close(self) {
        self.out.push('}');
    }
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
#[expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]
mod tests {
    use super::*;
    use opentelemetry::trace::{Event, Link, SpanContext, TraceFlags, TraceId};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use serde_json::json;
    use std::borrow::Cow;

    #[test]
    fn credentials_and_queries_are_not_logged() {
        assert_eq!(redact("https://user:secret@collector.example:4318/otlp?token=x"), "https://collector.example:4318/otlp");
        assert_eq!(redact("http://127.0.0.1:4318"), "http://127.0.0.1:4318");
    }

    fn at(nanos: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    fn span(name: &'static str, scope: &InstrumentationScope) -> SpanData {
        let trace_id = TraceId::from_bytes([0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36]);
        SpanData {
            span_context: SpanContext::new(
                trace_id,
                SpanId::from_bytes([0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(name),
            start_time: at(1_700_000_000_123_456_789),
            end_time: at(1_700_000_000_223_456_789),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        }
    }

    /// The encoding, field by field, against the OTLP JSON mapping.
    #[test]
    fn spans_are_encoded_as_otlp_json() {
        let scope = InstrumentationScope::builder("settle").with_version("1.2").build();
        let mut request = span("POST /v1/accounts", &scope);
        request.span_kind = SpanKind::Server;
        request.parent_span_id = SpanId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8]);
        request.parent_span_is_remote = true;
        request.attributes = vec![
            KeyValue::new("http.route", "/v1/\"accounts\"\n"),
            KeyValue::new("http.response.status_code", 201_i64),
            KeyValue::new("ratio", 0.5),
            KeyValue::new("is_retry", false),
            KeyValue::new("tags", Value::Array(Array::String(vec!["a".into(), "b".into()]))),
            KeyValue::new("nan", f64::NAN),
        ];
        request.dropped_attributes_count = 2;
        request.status = Status::error("server error");
        request.events.events = vec![Event::new("retry", at(5), vec![KeyValue::new("attempt", 1_i64)], 0)];
        request.events.dropped_count = 1;
        let mut batch = span("engine.batch", &scope);
        batch.links.links = vec![Link::new(
            SpanContext::new(TraceId::from_bytes([9; 16]), SpanId::from_bytes([7; 8]), TraceFlags::SAMPLED, true, TraceState::default()),
            vec![],
            0,
        )];
        batch.status = Status::Ok;
        let other = span("other", &InstrumentationScope::builder("other").build());

        let resource = opentelemetry_sdk::Resource::builder_empty().with_service_name("settle-test").build();
        let body = encode_export(&encode_resource(&resource), &[request, other, batch]);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));

        let resource_spans = body["resourceSpans"].as_array().unwrap();
        assert_eq!(resource_spans.len(), 1);
        assert_eq!(resource_spans[0]["resource"], json!({"attributes": [{"key": "service.name", "value": {"stringValue": "settle-test"}}]}));
        let scopes = resource_spans[0]["scopeSpans"].as_array().unwrap();
        assert_eq!(scopes.len(), 2, "one ScopeSpans per scope: {scopes:?}");
        assert_eq!(scopes[0]["scope"], json!({"name": "settle", "version": "1.2", "attributes": []}));
        assert_eq!(scopes[1]["scope"], json!({"name": "other", "attributes": []}));
        let spans = scopes[0]["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2, "spans of a scope stay together, in order");
        assert_eq!(
            spans[0],
            json!({
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                "spanId": "00f067aa0ba902b7",
                "parentSpanId": "0102030405060708",
                "flags": 0x301,
                "name": "POST /v1/accounts",
                "kind": 2,
                "startTimeUnixNano": "1700000000123456789",
                "endTimeUnixNano": "1700000000223456789",
                "attributes": [
                    {"key": "http.route", "value": {"stringValue": "/v1/\"accounts\"\n"}},
                    {"key": "http.response.status_code", "value": {"intValue": "201"}},
                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                    {"key": "is_retry", "value": {"boolValue": false}},
                    {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}}},
                    {"key": "nan", "value": {"doubleValue": "NaN"}},
                ],
                "droppedAttributesCount": 2,
                "events": [{"timeUnixNano": "5", "name": "retry", "attributes": [{"key": "attempt", "value": {"intValue": "1"}}]}],
                "droppedEventsCount": 1,
                "status": {"message": "server error", "code": 2},
            })
        );
        // A root span has no parentSpanId; a local root has the "is remote" bit known and clear.
        assert_eq!(spans[1]["parentSpanId"], serde_json::Value::Null);
        assert_eq!(spans[1]["flags"], 0x101);
        assert_eq!(spans[1]["kind"], 1);
        assert_eq!(spans[1]["status"], json!({"code": 1}));
        assert_eq!(spans[1]["links"], json!([{"traceId": "09090909090909090909090909090909", "spanId": "0707070707070707", "attributes": [], "flags": 0x301}]));
        assert_eq!(scopes[1]["spans"][0]["status"], json!({"code": 0}));
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        string(&mut out, "a\u{1}b\\c\u{7f}é");
        assert_eq!(out, "\"a\\u0001b\\\\c\u{7f}é\"");
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "a\u{1}b\\c\u{7f}é");
    }

    #[test]
    fn headers_follow_the_opentelemetry_variable_format() {
        let headers = export_headers("authorization=Basic%20dXNlcg%3D%3D, x-tenant = eu-1 ,broken,=novalue,bad header=x,empty=");
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers["authorization"], "Basic dXNlcg==");
        assert_eq!(headers["x-tenant"], "eu-1");
    }

    #[test]
    fn a_partial_success_is_reported_and_a_full_one_is_not() {
        assert_eq!(
            partial_success(br#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"too old"}}"#).as_deref(),
            Some("the collector rejected 3 spans: too old")
        );
        assert_eq!(partial_success(br#"{"partialSuccess":{}}"#), None);
        assert_eq!(partial_success(b"{}"), None);
        assert_eq!(partial_success(b""), None);
    }
}
