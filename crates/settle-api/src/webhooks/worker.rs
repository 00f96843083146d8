//! The delivery worker: one per server.
//!
//! It claims due deliveries in batches (leases; `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, so several servers share the work), sends each with bounded
//! concurrency and a timeout per attempt, and records the attempt with what
//! follows in one transaction: success; a retry on the schedule (with
//! jitter); dead-lettering when the schedule is exhausted; the endpoint
//! disabled at once on `410 Gone`, or after failing for
//! [`WebhookConfig::disable_after`] straight (which emits its own event).
//!
//! Time is the injected clock: tests move it to make retries due, they never
//! sleep through a schedule.
//!
//! Sandbox faults (`crate::faults`) are applied here: `timeout` and `fail`
//! record an attempt without sending, `duplicate` sends twice, `reorder`
//! sends a claimed batch's deliveries of that tenant newest event first,
//! one after the other. Everything else (retries, dead letters) follows as for
//! a real failure, which is the point of rehearsing.
//!
//! Metrics: attempts by outcome and their latency, delivery lag, dead
//! letters, disabled endpoints, faults that fired, and the backlog (one
//! COUNT every [`BACKLOG_EVERY`] at most).

use super::signature::{self, WebhookSecret};
use super::{DISABLED_EVENT, destination, endpoint_json};
use crate::events::{EventDataJson, EventJson, EventRequestJson, render_in};
use crate::metrics::{FaultLabels, OutcomeLabels, ReasonLabels};
use crate::state::AppState;
use rand::Rng;
use settle_core::api_version::ApiVersion;
use settle_core::clock::Timestamp;
use settle_core::faults::{FaultMode, FaultTarget};
use settle_core::ids::OperationId;
use settle_core::tenancy::Environment;
use settle_store::events::NewEvent;
use settle_store::webhooks::{AttemptRecord, ClaimedDelivery, DeliveryNext, EndpointHealth, FinishedDelivery, WebhookEndpointRecord};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Bytes of a response body kept with an attempt.
pub const MAX_RESPONSE_BODY_BYTES: usize = 1024;
/// Attempts recorded per database transaction.
const MAX_RECORDS_PER_COMMIT: usize = 512;
/// How often the worker counts the backlog for `settle_webhook_backlog`.
pub const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// How long the worker waits before it listens again after its `LISTEN`
/// connection failed (it polls meanwhile).
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Delivery settings.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Delay before each attempt after a failure: the first is the first
    /// attempt itself (at once), then one per retry. When an attempt fails
    /// and no delay is left, the delivery is dead-lettered.
    pub schedule: Vec<Duration>,
    /// Up to this fraction of a delay is added at random, so that retries
    /// of many deliveries that failed together do not arrive together.
    pub jitter: f64,
    /// The longest one attempt may take (connect, send, answer).
    pub attempt_timeout: Duration,
    /// Attempts in flight at once on this server.
    pub concurrency: usize,
    /// Deliveries claimed per query.
    pub claim_batch: usize,
    /// How long a claimed delivery stays this server's (longer than an attempt).
    pub lease: Duration,
    /// How often an idle worker looks for due deliveries (it is also woken
    /// when events are stored: in process, and on PostgreSQL by any server
    /// when [`WebhookConfig::wakes_on_notify`]).
    pub poll_interval: Duration,
    /// On PostgreSQL, `LISTEN` for other servers' stored events, so their
    /// deliveries start at once instead of at this worker's next poll. Only a
    /// hint: polling alone delivers everything (tests turn this off to prove it).
    pub wakes_on_notify: bool,
    /// An endpoint whose attempts have all failed for this long is disabled.
    pub disable_after: Duration,
    /// Which addresses sandbox deliveries may reach (live: public only).
    pub sandbox_destinations: destination::Destinations,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        WebhookConfig {
            schedule: vec![Duration::ZERO, Duration::from_secs(5), minutes(5), minutes(30), minutes(120), minutes(300), minutes(600), minutes(600)],
            jitter: 0.1,
            attempt_timeout: Duration::from_secs(15),
            concurrency: 64,
            claim_batch: 256,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(100),
            wakes_on_notify: true,
            disable_after: Duration::from_secs(5 * 24 * 3600),
            sandbox_destinations: destination::Destinations::Any,
        }
    }
}

impl WebhookConfig {
    /// Parses `--webhook-retry-schedule`: comma-separated delays such as
    /// `0,5s,5m,30m,2h,5h,10h,10h` (a bare number is seconds).
    pub fn parse_schedule(text: &str) -> Option<Vec<Duration>> {
        let delays: Option<Vec<Duration>> = text
            .split(',')
            .map(|part| {
                let part = part.trim();
                let (digits, unit) = part.split_at(part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len()));
                let n: u64 = digits.parse().ok()?;
                let secs = match unit {
                    "" | "s" => n,
                    "m" => n.checked_mul(60)?,
                    "h" => n.checked_mul(3600)?,
                    "d" => n.checked_mul(86_400)?,
                    _ => return None,
                };
                Some(Duration::from_secs(secs))
            })
            .collect();
        delays.filter(|d| !d.is_empty() && d.len() <= 32)
    }

    /// When the attempt after `attempts_made` failed ones is due, or `None`
    /// when the schedule is exhausted.
    pub fn next_attempt(&self, attempts_made: usize, now: Timestamp) -> Option<Timestamp> {
        let delay = *self.schedule.get(attempts_made)?;
        let jitter = if self.jitter > 0.0 && !delay.is_zero() { rand::rng().random_range(0.0..self.jitter) } else { 0.0 };
        let micros = (delay.as_secs_f64() * (1.0 + jitter) * 1e6) as i64;
        Some(Timestamp::from_micros(now.micros().saturating_add(micros)))
    }
}

/// Installs the process's TLS provider (rustls with ring) unless one is:
/// every HTTP client of the process (reqwest built without a default
/// provider) needs it before it is built. Call it first thing in `main` and
/// in test harnesses; calling it again does nothing.
pub fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err: another thread installed one meanwhile, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The HTTP clients deliveries go out on: one per destination rule, each
/// resolving names only to the addresses its rule allows.
pub struct Clients {
    public: reqwest::Client,
    sandbox: reqwest::Client,
    sandbox_rule: destination::Destinations,
}

impl Clients {
    pub fn new(config: &WebhookConfig) -> Result<Clients, reqwest::Error> {
        install_tls_provider();
        let build = |rule: destination::Destinations| {
            reqwest::Client::builder()
                .timeout(config.attempt_timeout)
                .connect_timeout(config.attempt_timeout)
                // A redirect would be a request to a URL nobody checked.
                .redirect(reqwest::redirect::Policy::none())
                .https_only(false)
                .user_agent(concat!("Settle-Webhooks/", env!("CARGO_PKG_VERSION")))
                .pool_max_idle_per_host(config.concurrency)
                .dns_resolver(Arc::new(destination::Resolver(rule)))
                .build()
        };
        Ok(Clients {
            public: build(destination::Destinations::Public)?,
            sandbox: build(config.sandbox_destinations)?,
            sandbox_rule: config.sandbox_destinations,
        })
    }

    fn for_environment(&self, environment: Environment) -> (&reqwest::Client, destination::Destinations) {
        match environment {
            Environment::Live => (&self.public, destination::Destinations::Public),
            Environment::Sandbox => (&self.sandbox, self.sandbox_rule),
        }
    }
}

/// A running worker; [`DeliveryHandle::stop`] lets in-flight attempts finish.
pub struct DeliveryHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl DeliveryHandle {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Ends it at once, as a crash would: claimed deliveries come due again when their lease lapses.
    pub fn abort(self) {
        self.task.abort();
    }
}

pub fn spawn(state: AppState) -> DeliveryHandle {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(state, stopped));
    DeliveryHandle { stop, task }
}

async fn run(state: AppState, mut stopped: watch::Receiver<bool>) {
    let config = state.webhooks.config.clone();
    let owner = state.events.ids.operation().as_str().replacen(OperationId::PREFIX, "dlv_", 1);
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let (finished, outcomes) = mpsc::channel::<FinishedDelivery>(config.concurrency.max(1) * 4);
    let recorder = tokio::spawn(record(state.clone(), owner.clone(), outcomes));
    let mut backlog_counted: Option<Instant> = None;
    // Dropped (so aborted) with the worker, also when the worker is aborted.
    let mut listener = tokio::task::JoinSet::new();
    if config.wakes_on_notify && state.store.announces_stored_events() {
        listener.spawn(listen(state.clone()));
    }
    loop {
        if *stopped.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        if backlog_counted.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY) {
            backlog_counted = Some(Instant::now());
            match state.store.webhook_backlog(state.clock.now()).await {
                Ok(n) => {
                    state.metrics.webhook_backlog.set(n);
                }
                Err(error) => tracing::warn!(%error, "could not count the webhook backlog"),
            }
        }
        let free = permits.available_permits().min(config.claim_batch);
        let mut full = false;
        if free > 0 {
            let now = state.clock.now();
            let lease_until = now.plus_secs(i64::try_from(config.lease.as_secs()).unwrap_or(60));
            match state.store.claim_deliveries(&owner, now, lease_until, i64::try_from(free).unwrap_or(1)).await {
                Ok(mut claimed) => {
                    full = claimed.len() == free;
                    // Transaction events are rendered when read; a claim whose events cannot be
                    // rendered now is not attempted (its leases lapse and it comes due again).
                    if let Err(error) = crate::events::deferred::complete(&state.store, &mut claimed.iter_mut().map(stored).collect::<Vec<_>>()).await {
                        tracing::warn!(%error, "could not render claimed webhook events");
                        claimed.clear();
                    }
                    let (reordered, claimed) = reorder_faults(&state, claimed, now).await;
                    let wanted = u32::try_from(reordered.len()).unwrap_or(u32::MAX);
                    // Never fails (the semaphore is never closed); if it did, the leases would lapse and the deliveries come due again.
                    if let (false, Ok(permit)) = (reordered.is_empty(), Arc::clone(&permits).acquire_many_owned(wanted).await) {
                        let (state, finished) = (state.clone(), finished.clone());
                        tasks.spawn(async move {
                            // One after the other, so the receiver sees exactly this order.
                            for delivery in reordered {
                                let outcome = attempt(&state, delivery).await;
                                let _ = finished.send(outcome).await;
                            }
                            drop(permit);
                        });
                    }
                    for delivery in claimed {
                        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
                        let (state, finished) = (state.clone(), finished.clone());
                        tasks.spawn(async move {
                            let outcome = attempt(&state, delivery).await;
                            // The recorder is gone only when the worker stops; the lease makes it retried.
                            let _ = finished.send(outcome).await;
                            drop(permit);
                        });
                    }
                }
                Err(error) => tracing::warn!(%error, "could not claim webhook deliveries"),
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(config.poll_interval) => {}
            () = state.events.stored.notified() => {}
            _ = stopped.changed() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    listener.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(finished);
    let _ = recorder.await;
}

/// Wakes this worker whenever any server stores events (PostgreSQL's
/// `LISTEN`), and listens again when the connection is lost.
async fn listen(state: AppState) {
    loop {
        let hub = Arc::clone(&state.events);
        if let Err(error) = state.store.listen_events_stored(move || hub.stored.notify_one()).await {
            tracing::warn!(%error, "not listening for stored events; polling until listening again");
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// A claimed delivery's event as [`crate::events::deferred::complete`] reads it.
fn stored(d: &mut ClaimedDelivery) -> crate::events::deferred::Stored<'_> {
    crate::events::deferred::Stored {
        id: d.event_id.as_str(),
        object_id: &d.event_object_id,
        sequence: d.event_sequence,
        created_at: d.event_created_at,
        body: &mut d.event_body,
    }
}

/// Splits a claimed batch: the deliveries a `reorder` fault fired for,
/// newest event first (event ids sort like their creation), and the others
/// in claim order.
async fn reorder_faults(state: &AppState, claimed: Vec<ClaimedDelivery>, now: Timestamp) -> (Vec<ClaimedDelivery>, Vec<ClaimedDelivery>) {
    let mut reordered = Vec::new();
    let mut normal = Vec::with_capacity(claimed.len());
    for delivery in claimed {
        if state.faults.fire(&state.store, delivery.tenant, delivery.environment, FaultTarget::Webhooks, now).await.reorder {
            reordered.push(delivery);
        } else {
            normal.push(delivery);
        }
    }
    if !reordered.is_empty() {
        state
            .metrics
            .faults_injected
            .get_or_create(&FaultLabels { target: FaultTarget::Webhooks.as_str(), mode: FaultMode::Reorder.as_str() })
            .inc_by(reordered.len() as u64);
    }
    // Newest event first: the reverse of the order they happened in, whatever order the claim returned them in.
    reordered.sort_by(|a, b| b.event_id.as_str().cmp(a.event_id.as_str()));
    (reordered, normal)
}

/// Writes attempts as they finish, many per transaction. An outcome that
/// cannot be written is dropped: its delivery's lease lapses and it is
/// attempted again (same `webhook-id`).
async fn record(state: AppState, owner: String, mut outcomes: mpsc::Receiver<FinishedDelivery>) {
    while let Some(first) = outcomes.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_RECORDS_PER_COMMIT {
            match outcomes.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let disabled = batch.iter().any(|f| matches!(f.health, EndpointHealth::Disable { .. }));
        let count = batch.len();
        let dead_lettered = batch.iter().filter(|f| f.next == DeliveryNext::DeadLettered).count();
        let disabled_reasons: Vec<&'static str> =
            batch.iter().filter_map(|f| if let EndpointHealth::Disable { reason, .. } = &f.health { Some(*reason) } else { None }).collect();
        match state.store.finish_deliveries(&owner, batch).await {
            Ok(recorded) => {
                state.metrics.webhook_dead_lettered.inc_by(dead_lettered as u64);
                for reason in disabled_reasons {
                    state.metrics.webhook_endpoints_disabled.get_or_create(&ReasonLabels { reason }).inc();
                }
                if recorded < count {
                    tracing::info!(lapsed = count - recorded, "webhook deliveries whose lease lapsed before their attempt was recorded");
                }
                if disabled {
                    state.events.stored.notify_one();
                }
            }
            Err(error) => tracing::warn!(%error, attempts = count, "could not record webhook attempts; they will be retried when their leases lapse"),
        }
    }
}

/// What one HTTP attempt gave.
struct Answer {
    status: Option<u16>,
    body: Option<String>,
    error: Option<String>,
    /// No answer within the attempt timeout.
    timed_out: bool,
    latency: Duration,
}

impl Answer {
    fn outcome(&self) -> &'static str {
        match self.status {
            Some(200..=299) => "succeeded",
            Some(410) => "gone",
            Some(_) => "failed",
            None if self.timed_out => "timeout",
            None => "failed",
        }
    }
}

/// The attempt a `timeout` fault (or else a `fail` fault) makes instead of
/// sending: what a real timeout or a real `503` would have recorded.
fn injected_answer(timed_out: bool) -> Answer {
    if timed_out {
        Answer {
            status: None,
            body: None,
            error: Some(String::from("timed out (sandbox fault: timeout; nothing was sent)")),
            timed_out: true,
            latency: Duration::ZERO,
        }
    } else {
        Answer { status: Some(503), body: Some(String::from("sandbox fault: fail; nothing was sent")), error: None, timed_out: false, latency: Duration::ZERO }
    }
}

/// Sends one delivery (as sandbox faults say) and decides what follows.
///
/// Runs in a `webhook.attempt` span (an exported client span when traces
/// are exported: endpoint and event ids, attempt number, outcome, status;
/// never the URL, a header or the body), whose `traceparent` the request
/// carries so the receiver can join the trace.
pub async fn attempt(state: &AppState, d: ClaimedDelivery) -> FinishedDelivery {
    let span = tracing::info_span!(
        parent: None,
        "webhook.attempt",
        webhook.endpoint_id = %d.endpoint_id,
        webhook.event_id = %d.event_id,
        webhook.attempt = d.attempts.saturating_add(1),
        outcome = tracing::field::Empty,
        webhook.next = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    if crate::trace_context::is_exporting() {
        span.record("otel.kind", "client");
    }
    let finished = attempt_in_span(state, d).instrument(span.clone()).await;
    span.record(
        "webhook.next",
        match finished.next {
            DeliveryNext::Succeeded => "succeeded",
            DeliveryNext::RetryAt(_) => "retry",
            DeliveryNext::DeadLettered => "dead_lettered",
        },
    );
    if let Some(status) = finished.attempt.response_status {
        span.set_attribute("http.response.status_code", status);
    }
    finished
}

async fn attempt_in_span(state: &AppState, d: ClaimedDelivery) -> FinishedDelivery {
    let config = &state.webhooks.config;
    let fired = state.faults.fire(&state.store, d.tenant, d.environment, FaultTarget::Webhooks, state.clock.now()).await;
    let injected =
        |mode: FaultMode| state.metrics.faults_injected.get_or_create(&FaultLabels { target: FaultTarget::Webhooks.as_str(), mode: mode.as_str() }).inc();
    let answer = if fired.timeout || fired.fail {
        injected(if fired.timeout { FaultMode::Timeout } else { FaultMode::Fail });
        injected_answer(fired.timeout)
    } else {
        if fired.duplicate {
            injected(FaultMode::Duplicate);
            let first = send(state, &d).await;
            observe(state, &first);
        }
        let answer = send(state, &d).await;
        observe(state, &answer);
        answer
    };
    state.metrics.webhook_attempts.get_or_create(&OutcomeLabels { outcome: answer.outcome() }).inc();
    tracing::Span::current().record("outcome", answer.outcome());
    let now = state.clock.now();
    let attempts_made = usize::try_from(d.attempts).unwrap_or(usize::MAX).saturating_add(1);
    let succeeded = answer.status.is_some_and(|s| (200..300).contains(&s));
    let gone = answer.status == Some(410);
    if succeeded {
        let lag_micros = now.micros().saturating_sub(d.event_created_at.micros()).max(0);
        state.metrics.webhook_delivery_lag.observe(lag_micros as f64 / 1e6);
    }
    let (next, health) = if succeeded {
        (DeliveryNext::Succeeded, EndpointHealth::Healthy)
    } else if gone {
        (DeliveryNext::DeadLettered, disable(state, &d, "gone", now).await)
    } else {
        let next = config.next_attempt(attempts_made, now).map_or(DeliveryNext::DeadLettered, DeliveryNext::RetryAt);
        let failing_for = d.failing_since.map(|since| now.micros().saturating_sub(since.micros()));
        let limit = i64::try_from(config.disable_after.as_micros()).unwrap_or(i64::MAX);
        let health = if failing_for.is_some_and(|f| f >= limit) { disable(state, &d, "failing", now).await } else { EndpointHealth::Failing };
        (next, health)
    };
    if next == DeliveryNext::DeadLettered && !gone {
        tracing::warn!(endpoint = %d.endpoint_id, event = %d.event_id, attempts = attempts_made, "webhook delivery dead-lettered: its retry schedule is exhausted");
    }
    let record = AttemptRecord {
        id: state.events.ids.webhook_attempt(),
        endpoint_id: d.endpoint_id.clone(),
        event_id: d.event_id.clone(),
        tenant: d.tenant,
        attempt: i64::try_from(attempts_made).unwrap_or(i64::MAX),
        succeeded,
        response_status: answer.status.map(i64::from),
        response_body: answer.body,
        error: answer.error,
        latency_ms: i64::try_from(answer.latency.as_millis()).unwrap_or(i64::MAX),
        created_at: now,
    };
    FinishedDelivery { attempt: record, next, health }
}

/// Records a real attempt's latency.
fn observe(state: &AppState, answer: &Answer) {
    state.metrics.webhook_attempt_duration.observe(answer.latency.as_secs_f64());
}

/// The event announcing that the endpoint is disabled, with the endpoint as it is now.
async fn disable(state: &AppState, d: &ClaimedDelivery, reason: &'static str, now: Timestamp) -> EndpointHealth {
    let Ok(Some(endpoint)) = state.store.get_webhook_endpoint(d.tenant, d.endpoint_id.clone()).await else {
        return EndpointHealth::Failing;
    };
    let sequence =
        state.store.object_sequences(vec![(d.tenant, endpoint.id.as_str().to_owned())]).await.ok().and_then(|m| m.into_values().next()).unwrap_or(0) + 1;
    let after = WebhookEndpointRecord { is_enabled: false, disabled_reason: Some(reason.to_owned()), updated_at: now, ..endpoint.clone() };
    let (Ok(after_json), Ok(before_json)) = (serde_json::to_value(endpoint_json(&after, None)), serde_json::to_value(endpoint_json(&endpoint, None))) else {
        return EndpointHealth::Failing;
    };
    let id = state.events.ids.event();
    let event = EventJson {
        object: String::from("event"),
        id: id.as_str().to_owned(),
        kind: DISABLED_EVENT.to_owned(),
        api_version: crate::versions::NEWEST.to_string(),
        created_at: now.to_rfc3339(),
        data: EventDataJson { previous_attributes: Some(crate::events::projector::changed_fields(&before_json, &after_json)), object: after_json },
        request: EventRequestJson::default(),
        correlation_id: None,
        sequence,
    };
    let Ok(body) = serde_json::to_vec(&event) else {
        return EndpointHealth::Failing;
    };
    tracing::warn!(endpoint = %d.endpoint_id, reason, "webhook endpoint disabled");
    EndpointHealth::Disable {
        reason,
        event: Box::new(NewEvent {
            id,
            tenant: d.tenant,
            kind: DISABLED_EVENT.to_owned(),
            object_id: endpoint.id.as_str().to_owned(),
            sequence,
            log_seq: None,
            created_at: now,
            body,
        }),
    }
}

/// The secrets a delivery is signed with now: the current one, and the
/// previous one while its overlap lasts.
fn secrets(state: &AppState, d: &ClaimedDelivery, now: Timestamp) -> Result<Vec<WebhookSecret>, String> {
    let master = state.signing.master_key().ok_or_else(|| String::from("this server has no master key to decrypt webhook secrets"))?;
    let open = |sealed: &[u8]| master.open(d.endpoint_id.as_str(), sealed).map(WebhookSecret::from_bytes).map_err(|e| e.to_string());
    let mut out = vec![open(&d.secret)?];
    if let (Some(previous), Some(until)) = (&d.previous_secret, d.previous_secret_expires_at)
        && now < until
    {
        out.push(open(previous)?);
    }
    Ok(out)
}

async fn send(state: &AppState, d: &ClaimedDelivery) -> Answer {
    let started = Instant::now();
    let failed = |error: String| Answer { status: None, body: None, error: Some(error), timed_out: false, latency: started.elapsed() };
    let (client, rule) = state.webhooks.clients.for_environment(d.environment);
    let url = match destination::check(&d.url, d.environment, rule) {
        Ok(url) => url,
        Err(refused) => return failed(refused.0),
    };
    let version = ApiVersion::parse(&d.api_version).map(crate::versions::resolve_pin).unwrap_or(crate::versions::NEWEST);
    let body = match render_in(&d.event_body, version) {
        Ok(body) => body,
        Err(_) => return failed(String::from("the event could not be rendered")),
    };
    let now = state.clock.now();
    let secrets = match secrets(state, d, now) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let timestamp = now.micros().div_euclid(1_000_000);
    let refs: Vec<&WebhookSecret> = secrets.iter().collect();
    let signature = signature::header(&refs, d.event_id.as_str(), timestamp, &body);
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", d.event_id.as_str())
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body);
    // The receiver can join the trace of the exported attempt span.
    if let Some(span_context) = crate::trace_context::exported_span_context(&tracing::Span::current()) {
        request = request.header(crate::trace_context::TRACEPARENT, crate::trace_context::traceparent_of(&span_context));
    }
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Answer { timed_out: e.is_timeout(), ..failed(describe(&e)) },
    };
    let status = response.status().as_u16();
    let mut kept: Vec<u8> = Vec::new();
    while kept.len() < MAX_RESPONSE_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE_BODY_BYTES - kept.len())]),
            _ => break,
        }
    }
    Answer { status: Some(status), body: Some(String::from_utf8_lossy(&kept).into_owned()), error: None, timed_out: false, latency: started.elapsed() }
}

/// A transport error for the attempt log: what failed, never a secret.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirects are not followed"
    } else if e.is_body() || e.is_decode() {
        "the response broke off"
    } else {
        "the request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { what.to_owned() } else { format!("{what}: {cause}") }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_endpoints_are_spoken_to_over_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let first_bytes = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut record = [0u8; 3];
            tokio::io::AsyncReadExt::read_exact(&mut socket, &mut record).await.unwrap();
            record
        });
        let clients = Clients::new(&WebhookConfig::default()).unwrap();
        let (client, _) = clients.for_environment(Environment::Sandbox);
        assert!(client.post(format!("https://127.0.0.1:{port}/")).send().await.is_err(), "no TLS server there");
        // A TLS handshake record (0x16), TLS major version 3.
        assert_eq!(first_bytes.await.unwrap()[..2], [0x16, 0x03]);
    }

    #[test]
    fn the_schedule_parses_and_retries_end_when_it_does() {
        let schedule = WebhookConfig::parse_schedule("0,5s,5m,30m,2h,5h,10h,10h").unwrap();
        assert_eq!(schedule, WebhookConfig::default().schedule);
        assert!(WebhookConfig::parse_schedule("5x").is_none());
        assert!(WebhookConfig::parse_schedule("").is_none());
        let config = WebhookConfig { schedule: vec![Duration::ZERO, Duration::from_secs(10)], jitter: 0.1, ..WebhookConfig::default() };
        let now = Timestamp::from_micros(0);
        let next = config.next_attempt(1, now).unwrap().micros();
        assert!((10_000_000..=11_000_000).contains(&next), "10 s plus at most 10%: {next}");
        assert_eq!(config.next_attempt(2, now), None, "dead-lettered after the last delay");
    }
}
