//! Rate limits: a token bucket per API key (and, for requests without a
//! valid key, per client IP), checked by a middleware before any handler
//! runs or any body is read, so a refused request executes nothing.
//!
//! The buckets are kept as GCRA "theoretical arrival times" (one integer per
//! bucket, in microseconds): a bucket with `burst` B and one token every `I`
//! µs admits a request at `now` when `max(tat, now) + I - B·I <= now`, and then
//! stores `max(tat, now) + I`. That is exactly a token bucket, and a single
//! integer is all Redis has to hold, so the check is one atomic script.
//!
//! In memory by default; with Redis, every server shares the buckets and
//! Redis's own clock (`TIME`) decides, so servers whose clocks disagree still
//! agree on every bucket. See docs/rate-limits.md.

use crate::error::{ApiError, ErrorType};
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use settle_core::tenancy::{Principal, RateLimit};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The server's default per-key limit: a backstop against a runaway loop, set
/// below what one server commits (about 14,000 single-transfer requests/s) but
/// far above what a well-behaved integration sends. Tighter quotas are per-key
/// overrides (`settle keys create --rate-limit-*`).
pub const DEFAULT_PER_SECOND: u32 = 10_000;
pub const DEFAULT_BURST: u32 = 20_000;
/// Requests without a valid API key, per client IP (0 turns this off).
pub const DEFAULT_UNAUTHENTICATED_PER_SECOND: u32 = 10;
pub const DEFAULT_UNAUTHENTICATED_BURST: u32 = 50;
/// Buckets kept in memory. Past it, buckets that are full again (idle) are
/// dropped; a full bucket and a missing one mean the same thing.
pub const MAX_MEMORY_BUCKETS: usize = 100_000;
/// How long one Redis call may take before the failure policy applies.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// After a Redis failure, how long requests skip Redis (failure policy at
/// once) before one tries it again: a dead Redis costs at most one timeout
/// per second, not one per request.
pub const REDIS_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// At most one log line per this interval about Redis failures.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Paths that are never limited: load balancers probe them.
const EXEMPT_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// What happens to a request when Redis cannot be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisFailure {
    /// Admit, limited by this server's own in-memory buckets instead.
    Open,
    /// Refuse with 503 `rate_limiter_unavailable`.
    Closed,
}

impl RedisFailure {
    pub fn parse(text: &str) -> Option<RedisFailure> {
        match text {
            "open" => Some(RedisFailure::Open),
            "closed" => Some(RedisFailure::Closed),
            _ => None,
        }
    }
}

/// Whose bucket a request draws from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Partition {
    Key(String),
    Ip(String),
}

impl Partition {
    fn storage_key(&self) -> String {
        match self {
            Partition::Key(id) => format!("key:{id}"),
            Partition::Ip(ip) => format!("ip:{ip}"),
        }
    }

    /// The policy name in `RateLimit-Policy` / `RateLimit`.
    fn policy(&self) -> &'static str {
        match self {
            Partition::Key(_) => "api_key",
            Partition::Ip(_) => "client_ip",
        }
    }
}

/// The outcome of one check, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Whole tokens left after this request.
    pub remaining: i64,
    /// Until the bucket is full again.
    pub full_in_micros: i64,
    /// Until the next request would be admitted (0 when admitted).
    pub retry_in_micros: i64,
}

/// One GCRA step: the bucket's stored `tat` (None: full) at `now`. Returns the
/// new `tat` to store (None when refused: nothing changes) and the decision.
/// The Redis script below computes exactly this.
pub fn gcra(tat: Option<i64>, now: i64, limit: RateLimit) -> (Option<i64>, Decision) {
    let interval = limit.interval_micros();
    let capacity = interval.saturating_mul(i64::from(limit.burst()));
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(interval);
    let allow_at = new_tat.saturating_sub(capacity);
    if now < allow_at {
        let decision = Decision { allowed: false, remaining: 0, full_in_micros: tat - now, retry_in_micros: allow_at - now };
        return (None, decision);
    }
    let busy = new_tat - now;
    let decision = Decision { allowed: true, remaining: (capacity - busy).max(0) / interval, full_in_micros: busy, retry_in_micros: 0 };
    (Some(new_tat), decision)
}

/// Buckets in this process, bounded by [`MAX_MEMORY_BUCKETS`].
#[derive(Default)]
struct MemoryBuckets {
    buckets: Mutex<HashMap<String, i64>>,
    /// When the "at capacity" warning was last logged (at most one a minute).
    warned_at: Mutex<Option<Instant>>,
}

impl MemoryBuckets {
    fn check(&self, key: String, limit: RateLimit, now: i64) -> Decision {
        let Ok(mut buckets) = self.buckets.lock() else {
            // A panic while holding the lock: admit rather than fail every request.
            return gcra(None, now, limit).1;
        };
        let (new_tat, decision) = gcra(buckets.get(&key).copied(), now, limit);
        if let Some(tat) = new_tat {
            if buckets.len() >= MAX_MEMORY_BUCKETS && !buckets.contains_key(&key) {
                buckets.retain(|_, tat| *tat > now);
            }
            if buckets.len() < MAX_MEMORY_BUCKETS || buckets.contains_key(&key) {
                buckets.insert(key, tat);
            } else {
                // Every bucket is busy: this one is not tracked (admitted as if
                // full). Memory stays bounded; the log says so, rarely.
                drop(buckets);
                if let Ok(mut warned_at) = self.warned_at.lock()
                    && warned_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
                {
                    *warned_at = Some(Instant::now());
                    tracing::warn!(capacity = MAX_MEMORY_BUCKETS, "rate limit buckets at capacity; new buckets are not tracked");
                }
            }
        }
        decision
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

/// GCRA in Lua; returns `{allowed, remaining, full_in, retry_in}` in µs.
/// `TIME` is Redis's clock, so every server computes with the same `now`.
const SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
local busy = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(busy / 1000) + 1)
return {1, math.floor((interval * burst - busy) / interval), busy, 0}
";

struct RedisBuckets {
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
    prefix: String,
    failure: RedisFailure,
    /// Until when Redis is skipped after a failure.
    skip_until: Mutex<Option<Instant>>,
    log: FailureLog,
}

/// Counts failures and logs at most one line per [`FAILURE_LOG_INTERVAL`].
#[derive(Default)]
struct FailureLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl FailureLog {
    fn record(&self, failure: RedisFailure, cause: &str) {
        let Ok(mut state) = self.state.lock() else { return };
        state.1 += 1;
        if state.0.is_some_and(|at| at.elapsed() < FAILURE_LOG_INTERVAL) {
            return;
        }
        let policy = match failure {
            RedisFailure::Open => "open: this server's own buckets apply",
            RedisFailure::Closed => "closed: requests are refused with 503",
        };
        tracing::error!(failures = state.1, error = %cause, policy, "the Redis rate limiter is unreachable");
        *state = (Some(Instant::now()), 0);
    }
}

/// Redis could not be asked and the policy is to refuse.
#[derive(Debug)]
pub struct LimiterUnavailable;

/// The configured limits and where the buckets live.
pub struct RateLimits {
    /// Applies to keys without a limit of their own.
    pub default: RateLimit,
    /// Per client IP for requests without a valid key; `None`: not limited.
    pub unauthenticated: Option<RateLimit>,
    local: MemoryBuckets,
    redis: Option<RedisBuckets>,
}

/// The default per-key limit (checked when compiling).
pub const DEFAULT_LIMIT: RateLimit = match RateLimit::new(DEFAULT_PER_SECOND, DEFAULT_BURST) {
    Some(limit) => limit,
    None => panic!("the default rate limit is out of range"),
};

impl Default for RateLimits {
    /// In memory, with the defaults of `settle serve`.
    fn default() -> Self {
        RateLimits::in_memory(DEFAULT_LIMIT, RateLimit::new(DEFAULT_UNAUTHENTICATED_PER_SECOND, DEFAULT_UNAUTHENTICATED_BURST))
    }
}

impl RateLimits {
    /// Buckets in this process only.
    pub fn in_memory(default: RateLimit, unauthenticated: Option<RateLimit>) -> RateLimits {
        RateLimits { default, unauthenticated, local: MemoryBuckets::default(), redis: None }
    }

    /// Buckets in Redis at `url`, under keys starting with `prefix`. Connects
    /// lazily: a Redis that is down at start is handled like one that fails later.
    pub fn redis(
        default: RateLimit,
        unauthenticated: Option<RateLimit>,
        url: &str,
        prefix: &str,
        failure: RedisFailure,
    ) -> Result<RateLimits, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(REDIS_RETRY_INTERVAL);
        let connection = redis::aio::ConnectionManager::new_lazy_with_config(client, config)?;
        let redis = RedisBuckets {
            connection,
            script: redis::Script::new(SCRIPT),
            prefix: prefix.to_owned(),
            failure,
            skip_until: Mutex::new(None),
            log: FailureLog::default(),
        };
        Ok(RateLimits { default, unauthenticated, local: MemoryBuckets::default(), redis: Some(redis) })
    }

    /// Takes a token from `partition`'s bucket. `now` (µs) is the server's
    /// clock, used by the in-memory buckets; Redis uses its own.
    async fn check(&self, partition: &Partition, limit: RateLimit, now: i64) -> Result<Decision, LimiterUnavailable> {
        let Some(redis) = &self.redis else {
            return Ok(self.local.check(partition.storage_key(), limit, now));
        };
        let skipping = redis.skip_until.lock().ok().and_then(|s| *s).is_some_and(|until| Instant::now() < until);
        let failure = if skipping {
            None
        } else {
            let key = format!("{}{}", redis.prefix, partition.storage_key());
            let mut connection = redis.connection.clone();
            let mut invocation = redis.script.key(key);
            invocation.arg(limit.interval_micros()).arg(limit.burst());
            let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut connection);
            match tokio::time::timeout(REDIS_TIMEOUT, call).await {
                Ok(Ok((allowed, remaining, full_in_micros, retry_in_micros))) => {
                    return Ok(Decision { allowed: allowed == 1, remaining, full_in_micros, retry_in_micros });
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {} ms", REDIS_TIMEOUT.as_millis())),
            }
        };
        if let Some(cause) = failure {
            if let Ok(mut skip) = redis.skip_until.lock() {
                *skip = Some(Instant::now() + REDIS_RETRY_INTERVAL);
            }
            redis.log.record(redis.failure, &cause);
        }
        match redis.failure {
            RedisFailure::Open => Ok(self.local.check(partition.storage_key(), limit, now)),
            RedisFailure::Closed => Err(LimiterUnavailable),
        }
    }
}

/// `"name";q=<burst>;w=<seconds to fill the bucket>`.
fn policy_header(policy: &str, limit: RateLimit) -> String {
    let window_secs = ceil_secs(limit.interval_micros().saturating_mul(i64::from(limit.burst()))).max(1);
    format!("\"{policy}\";q={};w={window_secs}", limit.burst())
}

fn ceil_secs(micros: i64) -> i64 {
    (micros.max(0) + 999_999) / 1_000_000
}

fn set(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

/// The middleware: resolves the caller, takes a token, and answers 429
/// before the handler when the bucket is empty.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    limit(&state, request, |request| next.run(request)).await
}

/// [`layer`] around any continuation (see `middleware.rs`).
pub async fn limit<F: Future<Output = Response>>(state: &AppState, request: Request, next: impl FnOnce(Request) -> F) -> Response {
    let path = request.uri().path();
    if EXEMPT_PATHS.contains(&path) {
        return next(request).await;
    }
    let limits = &state.http.rate_limits;
    let (mut parts, body) = request.into_parts();
    // A key that does not resolve (absent, unknown, or the store is down)
    // counts against the client's IP; the handler then answers as it would.
    let principal = if parts.headers.contains_key(header::AUTHORIZATION) { Principal::from_request_parts(&mut parts, state).await.ok() } else { None };
    let request = Request::from_parts(parts, body);
    let (partition, limit) = match principal {
        Some(p) => (Partition::Key(p.key_id.as_str().to_owned()), p.rate_limit.unwrap_or(limits.default)),
        None => match limits.unauthenticated {
            None => return next(request).await,
            Some(limit) => {
                let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| String::from("unknown"), |c| c.0.ip().to_string());
                (Partition::Ip(ip), limit)
            }
        },
    };
    let decision = match limits.check(&partition, limit, state.clock.now().micros()).await {
        Ok(decision) => decision,
        Err(LimiterUnavailable) => {
            let error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorType::ApiError,
                "rate_limiter_unavailable",
                "the rate limiter cannot be reached, so this request was not executed; retry shortly",
            );
            let mut response = error.into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    };
    let policy = partition.policy();
    let mut response = if decision.allowed {
        next(request).await
    } else {
        let retry_secs = ceil_secs(decision.retry_in_micros).max(1);
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::InvalidRequestError,
            "rate_limited",
            format!(
                "too many requests for this {}: nothing was executed; retry after {retry_secs} s",
                if policy == "api_key" { "API key" } else { "client address" }
            ),
        );
        let mut response = error.into_response();
        set(response.headers_mut(), "retry-after", retry_secs.to_string());
        response
    };
    // On a refusal the effective window is the wait, so that Retry-After is
    // never earlier than the end of the window (draft-11 §6).
    let window_secs = if decision.allowed { ceil_secs(decision.full_in_micros) } else { ceil_secs(decision.retry_in_micros).max(1) };
    let headers = response.headers_mut();
    set(headers, "ratelimit-policy", policy_header(policy, limit));
    set(headers, "ratelimit", format!("\"{policy}\";r={};t={window_secs}", decision.remaining.max(0)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: u32, burst: u32) -> RateLimit {
        RateLimit::new(rate, burst).expect("a valid limit")
    }

    #[test]
    fn a_fresh_bucket_admits_exactly_its_burst_then_refuses_until_a_token_flows_in() {
        let l = limit(10, 3);
        let (mut tat, now) = (None, 1_000_000_000);
        for expected_remaining in [2, 1, 0] {
            let (next, d) = gcra(tat, now, l);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = next;
        }
        let (next, d) = gcra(tat, now, l);
        assert_eq!((next, d.allowed, d.remaining, d.retry_in_micros, d.full_in_micros), (None, false, 0, 100_000, 300_000));
        assert!(!gcra(tat, now + 99_999, l).1.allowed);
        let (_, d) = gcra(tat, now + 100_000, l);
        assert_eq!((d.allowed, d.remaining), (true, 0));
        assert_eq!(gcra(tat, now + 300_000, l).1.remaining, 2, "a full bucket again after burst × interval");
    }

    #[test]
    fn idle_buckets_are_dropped_when_memory_is_full() {
        let buckets = MemoryBuckets::default();
        let l = limit(1_000, 1);
        for i in 0..MAX_MEMORY_BUCKETS {
            buckets.check(format!("k{i}"), l, 0);
        }
        assert_eq!(buckets.len(), MAX_MEMORY_BUCKETS);
        // One ms later every bucket above is full again, so all can go.
        assert!(buckets.check(String::from("new"), l, 1_000).allowed);
        assert_eq!(buckets.len(), 1);
    }
}
