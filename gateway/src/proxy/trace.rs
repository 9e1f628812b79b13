//! W3C trace context (`traceparent`): an inbound trace is kept (same trace
//! id and flags, a new parent id for the hop to the backend), a request
//! without a valid one starts a trace. `tracestate` passes through as sent.
//! The trace id is in the access log.

use http::HeaderValue;
use pingora::http::RequestHeader;

pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trace {
    pub id: u128,
    pub flags: u8,
}

impl Trace {
    /// The request's trace: its valid `traceparent`, else a new one.
    pub fn of(req: &RequestHeader) -> Trace {
        req.headers
            .get(TRACEPARENT)
            .and_then(|v| parse(v.as_bytes()))
            .unwrap_or_else(|| Trace {
                id: new_id(),
                flags: 0,
            })
    }

    /// `traceparent` for the upstream hop: this trace, a new parent id.
    pub fn header(&self) -> HeaderValue {
        let parent = loop {
            let p = fastrand::u64(..);
            if p != 0 {
                break p;
            }
        };
        let text = format!("00-{:032x}-{parent:016x}-{:02x}", self.id, self.flags);
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn new_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
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
/// append fields; only the first four are read.
fn parse(v: &[u8]) -> Option<Trace> {
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
    let parent = hex(&rest[34..50])?;
    let flags = hex(&rest[51..53])? as u8;
    (id != 0 && parent != 0).then_some(Trace { id, flags })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let t = parse(SAMPLE).expect("valid");
        assert_eq!(t.id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.flags, 1);
        let h = t.header();
        let h = h.to_str().expect("ascii");
        assert!(h.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{h}");
        assert!(h.ends_with("-01"));
        assert_ne!(&h[36..52], "00f067aa0ba902b7", "a new parent id");
        assert_eq!(parse(h.as_bytes()), Some(t));
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
