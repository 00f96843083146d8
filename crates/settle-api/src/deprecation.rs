//! Deprecation: the `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and
//! `Link: <…>; rel="deprecation"` headers on requests that use a deprecated
//! API version or endpoint, and a per-key count of such uses so operators
//! can see who still depends on what (`settle deprecations report`).
//!
//! Counting happens in memory and is flushed to the database periodically
//! and on graceful shutdown, never on the request path: on SQLite every
//! write competes with the engine for the one write lock, and a deprecated
//! version may be what most requests use. A crash loses at most one flush
//! interval of counts; counts are for finding dependents, not for billing.

use axum::http::{HeaderMap, HeaderValue, Method};
use settle_core::api_version::ApiVersion;
use settle_core::clock::Timestamp;
use settle_core::ids::ApiKeyId;
use settle_store::Store;
use settle_store::versioning::DeprecationUse;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a deprecated version's `Link` points: the version list, which
/// gives every version's changes, deprecation and sunset dates.
pub const VERSIONS_LINK: &str = "/v1/versions";
/// Distinct (key, deprecated thing) pairs held between flushes; more are
/// dropped (and logged) rather than grow memory without bound.
pub const MAX_PENDING_USES: usize = 100_000;
/// How often a server adds its counts to the database by default.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// An endpoint on its way out. Match is on the method and the route
/// pattern as written in the router (for example `/v1/accounts/{id}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointDeprecation {
    pub method: Method,
    pub route: String,
    pub deprecated_at: time::Date,
    pub sunset_at: Option<time::Date>,
    /// Documentation of the deprecation and its replacement.
    pub link: String,
}

impl EndpointDeprecation {
    /// How the report names it: `endpoint GET /v1/…`.
    pub fn label(&self) -> String {
        format!("endpoint {} {}", self.method, self.route)
    }
}

/// Endpoints deprecated in this release. None yet: every endpoint of the
/// first release is current. Tests register their own through
/// [`crate::AppState::with_deprecated_endpoint`].
pub fn deprecated_endpoints() -> Vec<EndpointDeprecation> {
    Vec::new()
}

/// How the report names a deprecated version: `version 2026-11-25`.
pub fn version_label(version: ApiVersion) -> String {
    format!("version {version}")
}

/// One deprecated thing a request used.
pub struct Notice {
    pub label: String,
    pub deprecated_at: time::Date,
    pub sunset_at: Option<time::Date>,
    pub link: String,
}

fn unix_seconds(date: time::Date) -> i64 {
    date.midnight().assume_utc().unix_timestamp()
}

/// Midnight UTC of `date` as an IMF-fixdate (RFC 9110, section 5.6.7).
pub fn http_date(date: time::Date) -> String {
    let format = time::macros::format_description!("[weekday repr:short], [day] [month repr:short] [year] 00:00:00 GMT");
    date.format(&format).unwrap_or_default()
}

/// Adds the deprecation headers for `notices`: one `Deprecation` (the
/// earliest date), one `Sunset` (the earliest removal, if any), one `Link` each.
pub fn add_headers(headers: &mut HeaderMap, notices: &[Notice]) {
    let Some(deprecated_at) = notices.iter().map(|n| n.deprecated_at).min() else { return };
    if let Ok(v) = HeaderValue::from_str(&format!("@{}", unix_seconds(deprecated_at))) {
        headers.insert("deprecation", v);
    }
    if let Some(sunset) = notices.iter().filter_map(|n| n.sunset_at).min()
        && let Ok(v) = HeaderValue::from_str(&http_date(sunset))
    {
        headers.insert("sunset", v);
    }
    for n in notices {
        if let Ok(v) = HeaderValue::from_str(&format!("<{}>; rel=\"deprecation\"", n.link)) {
            headers.append(axum::http::header::LINK, v);
        }
    }
}

struct Pending {
    count: u64,
    first_seen_at: Timestamp,
    last_seen_at: Timestamp,
}

/// Uses counted since the last flush, per (key, deprecated thing).
#[derive(Default)]
pub struct DeprecationCounter {
    pending: Mutex<HashMap<(ApiKeyId, String), Pending>>,
}

impl DeprecationCounter {
    pub fn record(&self, key: &ApiKeyId, label: &str, now: Timestamp) {
        let Ok(mut pending) = self.pending.lock() else { return };
        if let Some(p) = pending.get_mut(&(key.clone(), label.to_owned())) {
            p.count = p.count.saturating_add(1);
            p.first_seen_at = p.first_seen_at.min(now);
            p.last_seen_at = p.last_seen_at.max(now);
        } else if pending.len() < MAX_PENDING_USES {
            pending.insert((key.clone(), label.to_owned()), Pending { count: 1, first_seen_at: now, last_seen_at: now });
        } else {
            tracing::warn!(key_id = %key, deprecated = label, "deprecation counter full; this use is not counted");
        }
    }

    fn take(&self) -> Vec<DeprecationUse> {
        let Ok(mut pending) = self.pending.lock() else { return Vec::new() };
        std::mem::take(&mut *pending)
            .into_iter()
            .map(|((key_id, deprecated), p)| DeprecationUse {
                key_id,
                deprecated,
                count: p.count,
                first_seen_at: p.first_seen_at,
                last_seen_at: p.last_seen_at,
            })
            .collect()
    }

    /// Puts back uses a failed flush could not store, merged with newer ones.
    fn restore(&self, uses: Vec<DeprecationUse>) {
        let Ok(mut pending) = self.pending.lock() else { return };
        for u in uses {
            let p = pending.entry((u.key_id, u.deprecated)).or_insert(Pending { count: 0, first_seen_at: u.first_seen_at, last_seen_at: u.last_seen_at });
            p.count = p.count.saturating_add(u.count);
            p.first_seen_at = p.first_seen_at.min(u.first_seen_at);
            p.last_seen_at = p.last_seen_at.max(u.last_seen_at);
        }
    }

    /// Adds everything counted so far to the database; on failure keeps it
    /// for the next flush. Returns how many (key, thing) totals were written.
    pub async fn flush(&self, store: &Store) -> Result<usize, settle_store::StoreError> {
        let uses = self.take();
        let written = uses.len();
        if let Err(e) = store.record_deprecation_uses(uses.clone()).await {
            self.restore(uses);
            return Err(e);
        }
        Ok(written)
    }
}

/// Flushes a counter every `interval` until [`Flusher::finish`].
pub struct Flusher {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Flusher {
    pub fn start(counter: Arc<DeprecationCounter>, store: Store, interval: Duration) -> Flusher {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {
                        if let Err(e) = counter.flush(&store).await {
                            tracing::warn!(error = %e, "could not store deprecation counts; keeping them for the next flush");
                        }
                    }
                }
            }
            match counter.flush(&store).await {
                Ok(n) => tracing::info!(totals = n, "deprecation counts stored"),
                Err(e) => tracing::error!(error = %e, "could not store the last deprecation counts"),
            }
        });
        Flusher { stop, task }
    }

    /// Stops the periodic flush after one last flush.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn headers_use_structured_and_http_dates() {
        let mut headers = HeaderMap::new();
        let notice = |d, s, link: &str| Notice { label: String::new(), deprecated_at: d, sunset_at: s, link: link.to_owned() };
        add_headers(
            &mut headers,
            &[notice(date!(2026 - 11 - 30), Some(date!(2027 - 06 - 01)), "/v1/versions"), notice(date!(2026 - 12 - 15), None, "https://x/y")],
        );
        assert_eq!(headers.get("deprecation").unwrap(), "@1795996800");
        assert_eq!(headers.get("sunset").unwrap(), "Tue, 01 Jun 2027 00:00:00 GMT");
        let links: Vec<_> = headers.get_all("link").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(links, ["</v1/versions>; rel=\"deprecation\"", "<https://x/y>; rel=\"deprecation\""]);
    }

    #[test]
    fn counts_merge_per_key_and_thing() {
        let counter = DeprecationCounter::default();
        let key = ApiKeyId::from_trusted(String::from("key_1"));
        counter.record(&key, "version 2026-11-25", Timestamp::from_micros(20));
        counter.record(&key, "version 2026-11-25", Timestamp::from_micros(10));
        counter.record(&key, "endpoint GET /x", Timestamp::from_micros(30));
        let mut uses = counter.take();
        uses.sort_by(|a, b| a.deprecated.cmp(&b.deprecated));
        assert_eq!(uses.len(), 2);
        assert_eq!((uses[1].count, uses[1].first_seen_at, uses[1].last_seen_at), (2, Timestamp::from_micros(10), Timestamp::from_micros(20)));
        counter.restore(uses);
        counter.record(&key, "endpoint GET /x", Timestamp::from_micros(40));
        let again = counter.take();
        assert_eq!(again.iter().map(|u| u.count).sum::<u64>(), 4);
        assert!(counter.take().is_empty());
    }
}
