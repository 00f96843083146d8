//! W3C Trace Context (`traceparent`, `tracestate`).
//!
//! A valid incoming `traceparent` is honoured: its trace id becomes this
//! request's trace id (in every log line of the request), and the server's
//! span gets a new span id whose parent is the caller's. An invalid or
//! absent one starts a fresh trace, as the W3C spec asks (never an error).
//! The response carries `traceparent` with the same trace id and our span
//! id, and `tracestate` unchanged. The context stays in the request's
//! extensions for outbound calls made on its behalf (webhooks, later).
//!
//! When the server exports traces (`settle serve --otlp-endpoint`, see
//! [`set_exporting`]), the request's `tracing` span is also an OpenTelemetry
//! span: [`TraceContext::adopt`] makes it the caller's child and takes its
//! ids, so the `traceparent` we answer names the span the collector gets.
//! Without an exporter nothing here touches OpenTelemetry.

use axum::http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use rand::Rng;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Called once by the binary when it installed an OTLP exporter: spans then
/// get OpenTelemetry names, kinds and attributes, and outbound calls carry
/// the ids of exported spans.
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// Whether spans are exported (an OpenTelemetry layer is installed).
pub fn is_exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The OpenTelemetry ids of `span`, when an exporter is installed and the
/// span is enabled.
pub fn exported_span_context(span: &tracing::Span) -> Option<SpanContext> {
    if !is_exporting() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// `traceparent` naming an exported span, for an outbound call.
pub fn traceparent_of(span_context: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", span_context.trace_id(), span_context.span_id(), span_context.trace_flags().to_u8() & 0x01)
}

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Longest `tracestate` passed on. The spec asks vendors to propagate at
/// least 512 characters and allows dropping a larger value.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// The trace this request belongs to, and our span in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// Our server span: 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// The caller's span, when the caller sent a valid `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    /// The caller's trace flags (`01` sampled); `01` for a trace we start,
    /// since every request is recorded in the access log.
    pub flags: u8,
    /// The caller's `tracestate`, passed through as received.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The request's context: continued from a valid `traceparent`, else fresh.
    pub fn from_headers(headers: &HeaderMap) -> TraceContext {
        let mut rng = rand::rng();
        let span_id = nonzero(|| rng.random::<[u8; 8]>());
        let incoming = single(headers, TRACEPARENT).and_then(parse_traceparent);
        match incoming {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
                flags,
                // The spec: tracestate is only meaningful with a valid traceparent.
                tracestate: tracestate(headers),
            },
            None => {
                let mut rng = rand::rng();
                TraceContext { trace_id: nonzero(|| rng.random::<[u8; 16]>()), span_id, parent_span_id: None, flags: 0x01, tracestate: None }
            }
        }
    }

    /// Makes `span` (not yet entered) the exported span of this request:
    /// the caller's span becomes its remote parent, and this context takes
    /// its trace and span ids. Does nothing without an exporter.
    pub fn adopt(&mut self, span: &tracing::Span) {
        if !is_exporting() {
            return;
        }
        if let Some(parent) = self.parent_span_id {
            let remote =
                SpanContext::new(TraceId::from_bytes(self.trace_id), SpanId::from_bytes(parent), TraceFlags::new(self.flags), true, TraceState::default());
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        if let Some(ours) = exported_span_context(span) {
            self.trace_id = ours.trace_id().to_bytes();
            self.span_id = ours.span_id().to_bytes();
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// `traceparent` naming our span: what the response carries, and what an
    /// outbound call made for this request sends.
    pub fn traceparent(&self) -> String {
        let mut out = String::with_capacity(55);
        let _ = write!(out, "00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.span_id), self.flags);
        out
    }
}

fn nonzero<const N: usize>(mut draw: impl FnMut() -> [u8; N]) -> [u8; N] {
    loop {
        let id = draw();
        if id.iter().any(|b| *b != 0) {
            return id;
        }
    }
}

/// The header's value when it is sent exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Parses `version-traceid-parentid-flags` per W3C Trace Context §3.2 and
/// §4.3: lower-case hex only; version `ff` is invalid; version `00` has
/// exactly four fields; a later version may append fields after a `-`;
/// all-zero trace or parent ids are invalid.
pub fn parse_traceparent(text: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    let version: [u8; 1] = lower_hex(text.get(0..2)?)?;
    if version[0] == 0xff {
        return None;
    }
    let head = text.get(0..55)?;
    let rest = &text[55..];
    if version[0] == 0 && !rest.is_empty() {
        return None;
    }
    if !rest.is_empty() && !rest.starts_with('-') {
        return None;
    }
    let parts: Vec<&str> = head.split('-').collect();
    let [_, trace, parent, flags] = parts.as_slice() else { return None };
    let trace_id: [u8; 16] = lower_hex(trace)?;
    let parent_id: [u8; 8] = lower_hex(parent)?;
    let flags: [u8; 1] = lower_hex(flags)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    // Only the sampled bit is defined; other bits are not passed on for version 00.
    Some((trace_id, parent_id, flags[0] & 0x01))
}

/// The caller's `tracestate` (several header lines joined with `,`), when
/// it is visible ASCII and at most [`MAX_TRACESTATE_BYTES`].
fn tracestate(headers: &HeaderMap) -> Option<String> {
    let mut joined = String::new();
    for value in headers.get_all(TRACESTATE) {
        let text = value.to_str().ok()?.trim();
        if text.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(text);
    }
    let valid = !joined.is_empty() && joined.len() <= MAX_TRACESTATE_BYTES && joined.bytes().all(|b| (0x20..0x7f).contains(&b));
    valid.then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_w3c_example_traceparent_parses() {
        let parsed = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let (trace, parent, flags) = parsed.unwrap_or_default();
        assert_eq!(hex::encode(trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(parent), "00f067aa0ba902b7");
        assert_eq!(flags, 1);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_later_version_may_append_fields() {
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future").is_some());
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_none());
    }
}
