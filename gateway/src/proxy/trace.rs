//! W3C trace context (`traceparent`): an inbound trace is kept (same trace
//! id and flags, a new parent id for the hop to the backend), a request
//! without a valid one starts a trace. `tracestate` passes through as sent.
//! The trace id is in the access log.
//!
//! The parent id sent upstream is this gateway's span id, one per request
//! (every attempt of it carries the same), so the backend's spans hang under
//! the gateway's exported span ([`crate::otlp`]). Sampling is decided here:
//! an inbound trace keeps its sampled flag; a trace started here is sampled
//! when `[tracing]` is on and its id's low 64 bits are at most the ratio's
//! threshold (OpenTelemetry's TraceIdRatioBased), and says so in its flags.

use http::HeaderValue;
use pingora::http::RequestHeader;

pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trace {
    pub id: u128,
    pub flags: u8,
    /// The inbound parent id; 0 when this gateway started the trace.
    pub parent: u64,
    /// This gateway's span: the parent id of the upstream hop.
    pub span: u64,
}

/// The `sampled` bit of the trace flags.
const SAMPLED: u8 = 1;

impl Trace {
    pub const NONE: Trace = Trace {
        id: 0,
        flags: 0,
        parent: 0,
        span: 0,
    };

    /// The request's trace: its valid `traceparent`, else a new one, sampled
    /// when `threshold` (from `[tracing] sample_ratio`) admits its id.
    pub fn of(req: &RequestHeader, threshold: Option<u64>) -> Trace {
        let span = nonzero(fastrand::u64);
        if let Some((id, parent, flags)) = req
            .headers
            .get(TRACEPARENT)
            .and_then(|v| parse(v.as_bytes()))
        {
            return Trace {
                id,
                flags,
                parent,
                span,
            };
        }
        let id = nonzero(fastrand::u128);
        let sampled = threshold.is_some_and(|t| t != 0 && (id as u64) <= t);
        Trace {
            id,
            flags: if sampled { SAMPLED } else { 0 },
            parent: 0,
            span,
        }
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// `traceparent` for the upstream hop: this trace, this gateway's span
    /// as the parent.
    pub fn header(&self) -> HeaderValue {
        use crate::proxy::forward::hex_into;
        let mut b = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(self.id, &mut b[3..35]);
        hex_into(u128::from(self.span), &mut b[36..52]);
        hex_into(u128::from(self.flags), &mut b[53..55]);
        // Hex digits and dashes: always a valid value.
        HeaderValue::from_bytes(&b).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn nonzero<T: Default + PartialEq>(mut draw: impl FnMut(std::ops::RangeFull) -> T) -> T {
    loop {
        let v = draw(..);
        if v != T::default() {
            return v;
        }
    }
}

fn hex(b: &[u8]) -> Option<u128> {
    if b.is_empty() || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

/// `version-traceid-parentid-flags` (lowercase hex, 2-32-16-2). Version `ff`,
/// an all-zero trace id or parent id is invalid. Versions above `00` may
/// append fields; only the first four are read. `(trace id, parent id, flags)`.
fn parse(v: &[u8]) -> Option<(u128, u64, u8)> {
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let (version, rest) = v.split_at(2);
    if version == b"ff" || hex(version).is_none() || (version == b"00" && v.len() != 55) {
        return None;
    }
    if rest[0] != b'-' || rest[33] != b'-' || rest[50] != b'-' {
        return None;
    }
    let id = hex(&rest[1..33])?;
    let parent = hex(&rest[34..50])? as u64;
    let flags = hex(&rest[51..53])? as u8;
    (id != 0 && parent != 0).then_some((id, parent, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let (id, parent, flags) = parse(SAMPLE).expect("valid");
        assert_eq!(id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent, 0x00f067aa0ba902b7);
        assert_eq!(flags, 1);
        let mut req = RequestHeader::build("GET", b"/", None).expect("head");
        req.insert_header(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        )
        .expect("header");
        // The inbound sampled flag is kept whatever the local ratio says.
        let t = Trace::of(&req, Some(0));
        assert!(t.sampled());
        assert_eq!(t.parent, parent);
        let h = t.header();
        let h = h.to_str().expect("ascii");
        assert!(h.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{h}");
        assert!(h.ends_with("-01"));
        assert_eq!(
            &h[36..52],
            format!("{:016x}", t.span),
            "the gateway's span is the new parent"
        );
        assert_ne!(&h[36..52], "00f067aa0ba902b7", "a new parent id");
        assert_eq!(parse(h.as_bytes()), Some((id, t.span, 1)));
    }

    #[test]
    fn the_header_is_zero_padded_lowercase_hex() {
        let t = Trace {
            id: 0xab,
            flags: 1,
            parent: 0,
            span: 0xc,
        };
        assert_eq!(
            t.header(),
            "00-000000000000000000000000000000ab-000000000000000c-01"
        );
        let t = Trace {
            id: u128::MAX,
            flags: 0,
            parent: 0,
            span: u64::MAX,
        };
        assert_eq!(
            t.header(),
            "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-00"
        );
    }

    #[test]
    fn a_started_trace_is_sampled_by_the_ratio_of_its_id() {
        let req = RequestHeader::build("GET", b"/", None).expect("head");
        assert!(
            !Trace::of(&req, None).sampled(),
            "no [tracing]: not sampled"
        );
        assert!(!Trace::of(&req, Some(0)).sampled(), "ratio 0");
        assert!(Trace::of(&req, Some(u64::MAX)).sampled(), "ratio 1");
        let half = (0..2000)
            .filter(|_| Trace::of(&req, Some(u64::MAX / 2)).sampled())
            .count();
        assert!(
            (850..1150).contains(&half),
            "ratio 0.5 sampled {half} of 2000"
        );
    }

    #[test]
    fn refuses_invalid_forms() {
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later").is_some());
    }
}
