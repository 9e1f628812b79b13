//! The headers unitgate adds to the upstream request (DESIGN.md, "Upstream
//! request headers"), set in one pass.
//!
//! pingora's `insert_header` parses and copies the name, then inserts into two
//! maps (values, and names in their original case), each grown step by step
//! from the size of the client's request. With the ten headers a request
//! carries upstream, that was the largest cost unitgate added to a request.
//! Here the upstream header map is taken out of pingora's header, grown once
//! to make room for them, and put back without the case map (header names are case-insensitive; pingora writes standard
//! names title-cased and the rest lowercase, as Envoy does), names are
//! constants and values are made per snapshot. What is left per request is
//! hashing and one small copy for `x-forwarded-for` and a new request id.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType, Result};
use std::net::IpAddr;
use unitgate_config::Config;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_UNIT_HOME: HeaderName = HeaderName::from_static("x-unit-home");
pub const X_UNIT_SLOT: HeaderName = HeaderName::from_static("x-unit-slot");
pub const X_UNIT_EPOCH: HeaderName = HeaderName::from_static("x-unit-epoch");
pub const X_UNIT_SERVED: HeaderName = HeaderName::from_static("x-unit-served");
pub const X_UNIT_HOPS: HeaderName = HeaderName::from_static("x-unit-hops");
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
pub const X_UNIT_CROSSED_FROM: HeaderName = HeaderName::from_static("x-unit-crossed-from");

/// Headers this module may add: room reserved in the rebuilt map.
const ADDED: usize = 12;

/// Slot counts up to this get a table of ready header values.
const SLOT_TABLE_MAX: u32 = 1 << 16;

/// Header values that depend only on the config, made once per snapshot.
pub struct HeaderValues {
    /// Unit names, by unit id.
    pub units: Vec<HeaderValue>,
    pub epoch: HeaderValue,
    /// `x-unit-slot` values by slot (empty when there are too many slots).
    slots: Vec<HeaderValue>,
    /// `x-unit-hops` values for 0..=max_hops + 1.
    hops: Vec<HeaderValue>,
}

impl HeaderValues {
    pub fn new(config: &Config) -> Self {
        // Unit names are validated to [A-Za-z0-9._-], numbers are digits:
        // every value here is a valid header value.
        let value = |s: String| HeaderValue::try_from(s).unwrap_or(HeaderValue::from_static("-"));
        let slots = if config.routing.slots <= SLOT_TABLE_MAX {
            (0..config.routing.slots)
                .map(|s| value(s.to_string()))
                .collect()
        } else {
            Vec::new()
        };
        HeaderValues {
            units: config.units.iter().map(|u| value(u.name.clone())).collect(),
            epoch: value(config.routing.epoch.to_string()),
            slots,
            hops: (0..=config.routing.max_hops.saturating_add(1))
                .map(|h| value(h.to_string()))
                .collect(),
        }
    }

    pub fn slot(&self, slot: u32) -> HeaderValue {
        match self.slots.get(slot as usize) {
            Some(v) => v.clone(),
            None => HeaderValue::from(slot),
        }
    }

    pub fn hops(&self, hops: u32) -> HeaderValue {
        match self.hops.get(hops as usize) {
            Some(v) => v.clone(),
            None => HeaderValue::from(hops),
        }
    }
}

/// What goes upstream besides the client's own headers.
pub struct Added {
    pub client_ip: Option<IpAddr>,
    /// The client came over TLS.
    pub tls: bool,
    pub request_id: HeaderValue,
    /// `traceparent` for the hop to the backend.
    pub traceparent: HeaderValue,
    /// `x-unit-*`: (home, slot, epoch, served, hops, crossed-from).
    pub unit: Option<UnitHeaders>,
    /// `x-unit-split`: the split service chosen (gray release), if one was.
    pub split: Option<HeaderValue>,
}

pub struct UnitHeaders {
    pub home: HeaderValue,
    pub slot: HeaderValue,
    pub epoch: HeaderValue,
    pub served: HeaderValue,
    pub hops: HeaderValue,
    pub crossed_from: Option<HeaderValue>,
}

/// Sets the forwarding headers on `upstream` (a copy of the client's request
/// header, already sanitized by pingora).
pub fn apply(upstream: &mut RequestHeader, added: Added) -> Result<()> {
    let xff = forwarded_for(upstream.headers.get_all(&X_FORWARDED_FOR), added.client_ip)?;
    // HTTP/2 clients send `:authority`, not Host.
    let host = match upstream.headers.get(http::header::HOST) {
        Some(h) => Some(h.clone()),
        None => upstream
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let proto = if added.tls { "https" } else { "http" };
    let mut set: [(HeaderName, Option<HeaderValue>); ADDED] = [
        (X_FORWARDED_FOR, xff),
        (X_FORWARDED_PROTO, Some(HeaderValue::from_static(proto))),
        (X_FORWARDED_HOST, host),
        (X_REQUEST_ID, Some(added.request_id)),
        (X_UNIT_HOME, None),
        (X_UNIT_SLOT, None),
        (X_UNIT_EPOCH, None),
        (X_UNIT_SERVED, None),
        (X_UNIT_HOPS, None),
        (X_UNIT_CROSSED_FROM, None),
        (crate::split::X_UNIT_SPLIT, added.split),
        (super::trace::TRACEPARENT, Some(added.traceparent)),
    ];
    if let Some(u) = added.unit {
        set[4].1 = Some(u.home);
        set[5].1 = Some(u.slot);
        set[6].1 = Some(u.epoch);
        set[7].1 = Some(u.served);
        set[8].1 = Some(u.hops);
        // Otherwise a trusted peer's mark (already in the copied header)
        // stays: the request did cross, one hop earlier.
        set[9].1 = u.crossed_from;
    }
    if target_is_uri(upstream) {
        rebuild(upstream, set);
        return Ok(());
    }
    // A request target the URI does not reproduce byte for byte (absolute
    // form, non-UTF-8): keep pingora's header as is and insert one by one.
    for (name, value) in set {
        if let Some(value) = value {
            upstream.insert_header(name, value)?;
        }
    }
    Ok(())
}

/// Whether the request target is exactly the URI's path and query, so that a
/// header rebuilt from the URI writes the same request line.
fn target_is_uri(req: &RequestHeader) -> bool {
    let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
    req.raw_path_is_utf8() && req.raw_path() == pq.as_bytes()
}

fn rebuild(upstream: &mut RequestHeader, set: [(HeaderName, Option<HeaderValue>); ADDED]) {
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(upstream, placeholder).into();
    make_room(&mut parts.headers, ADDED);
    for (name, value) in set {
        if let Some(value) = value {
            parts.headers.insert(name, value);
        }
    }
    *upstream = RequestHeader::from(parts);
}

/// Room for `extra` more headers, grown once: the map keeps each entry's
/// hash, so growing re-places indices without hashing or copying a name
/// again. At the map's size limit it is left to grow as it goes.
fn make_room(headers: &mut HeaderMap, extra: usize) {
    let _ = headers.try_reserve(extra);
}

/// Headers the gateway may add to a response from upstream.
pub const RESPONSE_ADDED: usize = 7;

/// Adds headers to a response from upstream in one pass, like the request
/// side: one map with room made once, no case map. A reason phrase other
/// than the status's standard one is kept.
pub fn edit_response(resp: &mut ResponseHeader, add: impl FnOnce(&mut HeaderMap)) {
    let canonical = resp.status.canonical_reason();
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != canonical)
        .map(str::to_owned);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder).into();
    make_room(&mut parts.headers, RESPONSE_ADDED);
    add(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        // Cannot fail: pingora does not validate the phrase.
        let _ = resp.set_reason_phrase(reason.as_deref());
    }
}

/// `x-forwarded-for`: the client's list with the peer appended. Several
/// inbound `x-forwarded-for` fields are one list (RFC 9110 §5.3), joined in
/// order, never dropped.
fn forwarded_for(
    prev: http::header::GetAll<'_, HeaderValue>,
    ip: Option<IpAddr>,
) -> Result<Option<HeaderValue>> {
    use std::borrow::Cow;
    let mut fields = prev.iter();
    let first = fields.next();
    // The common case, at most one inbound field, joins nothing.
    let joined: Option<Cow<'_, [u8]>> = match (first, fields.next()) {
        (None, _) => None,
        (Some(f), None) => Some(Cow::Borrowed(f.as_bytes())),
        (Some(f), Some(second)) => {
            let mut v = f.as_bytes().to_vec();
            for x in std::iter::once(second).chain(fields) {
                v.extend_from_slice(b", ");
                v.extend_from_slice(x.as_bytes());
            }
            Some(Cow::Owned(v))
        }
    };
    let mut buf = [0u8; 48];
    let value = match (joined, ip) {
        (None, None) => return Ok(None),
        (Some(Cow::Borrowed(_)), None) => return Ok(first.cloned()),
        (Some(list), None) => HeaderValue::from_bytes(&list),
        (None, Some(ip)) => HeaderValue::from_bytes(ip_text(ip, &mut buf)),
        (Some(list), Some(ip)) => {
            let ip = ip_text(ip, &mut buf);
            let mut v = Vec::with_capacity(list.len() + 2 + ip.len());
            v.extend_from_slice(&list);
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            HeaderValue::from_bytes(&v)
        }
    };
    value
        .map(Some)
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "x-forwarded-for", e))
}

/// The address as text in `buf` (formatting machinery costs more than the
/// rest of the header work for an IPv4 address).
fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &[u8] {
    use std::io::Write;
    let mut len = 0;
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
        }
        IpAddr::V6(v6) => {
            // At most 45 characters.
            let mut w = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(w, "{v6}");
            len = w.position() as usize;
        }
    }
    &buf[..len]
}

/// `n` as 32 lowercase hex digits (request and trace ids).
pub fn hex32(n: u128) -> [u8; 32] {
    let mut buf = [0u8; 32];
    hex_into(n, &mut buf);
    buf
}

/// The low `out.len()` hex digits of `n`, lowercase, zero-padded, into `out`.
pub fn hex_into(mut n: u128, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// A new random request id: 32 lowercase hex digits.
pub fn new_request_id() -> HeaderValue {
    HeaderValue::from_bytes(&hex32(fastrand::u128(..))).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).expect("valid request");
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).expect("valid header");
        }
        r
    }

    fn added(ip: &str, unit: bool) -> Added {
        Added {
            client_ip: Some(ip.parse().expect("valid ip")),
            tls: false,
            request_id: HeaderValue::from_static("rid-1"),
            traceparent: HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            unit: unit.then(|| UnitHeaders {
                home: HeaderValue::from_static("A"),
                slot: HeaderValue::from_static("42"),
                epoch: HeaderValue::from_static("7"),
                served: HeaderValue::from_static("B"),
                hops: HeaderValue::from_static("1"),
                crossed_from: Some(HeaderValue::from_static("A")),
            }),
            split: unit.then(|| HeaderValue::from_static("orders-v2")),
        }
    }

    fn wire(r: &RequestHeader) -> String {
        let mut buf = Vec::new();
        r.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).expect("ascii headers")
    }

    #[test]
    fn adds_every_header_and_keeps_the_clients() {
        let mut r = request(
            "/a/b?x=1",
            &[
                ("Host", "api.test"),
                ("X-Forwarded-For", "10.0.0.1"),
                ("Accept", "*/*"),
                ("X-Multi", "1"),
                ("x-multi", "2"),
                ("X-Forwarded-Proto", "https"),
                (
                    "Traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01",
                ),
            ],
        );
        assert!(target_is_uri(&r));
        apply(&mut r, added("192.0.2.9", true)).expect("applied");
        assert!(!r.has_case(), "rebuilt in one map");
        let h = &r.headers;
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.9");
        assert_eq!(h["x-forwarded-proto"], "http", "replaced, not appended");
        assert_eq!(h["x-forwarded-host"], "api.test");
        assert_eq!(h["x-request-id"], "rid-1");
        assert_eq!(h["x-unit-home"], "A");
        assert_eq!(h["x-unit-slot"], "42");
        assert_eq!(h["x-unit-epoch"], "7");
        assert_eq!(h["x-unit-served"], "B");
        assert_eq!(h["x-unit-hops"], "1");
        assert_eq!(h["x-unit-crossed-from"], "A");
        assert_eq!(h["x-unit-split"], "orders-v2");
        let trace: Vec<_> = h.get_all("traceparent").iter().collect();
        assert_eq!(
            trace,
            ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
            "the client's traceparent is replaced by the gateway's hop"
        );
        assert_eq!(h["accept"], "*/*");
        let multi: Vec<_> = h.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["1", "2"], "repeated headers keep their order");
        assert_eq!(r.uri, "/a/b?x=1");
        assert_eq!(r.raw_path(), b"/a/b?x=1");
        let wire = wire(&r);
        assert!(wire.contains("Host: api.test\r\n"), "{wire}");
        assert!(wire.contains("x-unit-slot: 42\r\n"), "{wire}");
    }

    #[test]
    fn without_unit_or_prior_forwarding() {
        let mut r = request("/", &[("Host", "h")]);
        apply(&mut r, added("2001:db8::1", false)).expect("applied");
        assert_eq!(r.headers["x-forwarded-for"], "2001:db8::1");
        assert!(r.headers.get("x-unit-home").is_none());
        assert!(r.headers.get("x-unit-crossed-from").is_none());
        assert!(r.headers.get("x-unit-split").is_none());
    }

    #[test]
    fn a_target_the_uri_cannot_reproduce_is_kept() {
        let mut r = request("http://h/x?y", &[("Host", "h")]);
        let before = r.raw_path().to_vec();
        assert!(!target_is_uri(&r));
        apply(&mut r, added("192.0.2.9", true)).expect("applied");
        assert_eq!(r.raw_path(), &before[..]);
        assert_eq!(r.headers["x-unit-home"], "A");
        let mut r = RequestHeader::build("GET", b"/bad\xff", None).expect("valid request");
        assert!(!target_is_uri(&r));
        apply(&mut r, added("192.0.2.9", false)).expect("applied");
        assert_eq!(r.raw_path(), b"/bad\xff");
        assert_eq!(r.headers["x-request-id"], "rid-1");
    }

    #[test]
    fn response_edit_keeps_headers_status_and_reason() {
        let mut r = ResponseHeader::build(299, None).expect("valid response");
        r.set_reason_phrase(Some("Fine")).expect("set");
        r.append_header("Set-Cookie", "a=1").expect("valid");
        r.append_header("set-cookie", "b=2").expect("valid");
        r.append_header("X-Backend", "x").expect("valid");
        edit_response(&mut r, |h| {
            h.insert(X_REQUEST_ID, HeaderValue::from_static("rid"));
            h.append(http::header::SET_COOKIE, HeaderValue::from_static("ug=1"));
        });
        assert_eq!(r.status, 299);
        assert_eq!(r.get_reason_phrase(), Some("Fine"));
        let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2", "ug=1"]);
        assert_eq!(r.headers["x-backend"], "x");
        assert_eq!(r.headers["x-request-id"], "rid");
        let mut ok = ResponseHeader::build(200, None).expect("valid response");
        edit_response(&mut ok, |_| {});
        assert_eq!(ok.get_reason_phrase(), Some("OK"));
    }

    #[test]
    fn formats_addresses_like_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.99",
            "255.255.255.255",
            "192.168.100.1",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().expect("valid ip");
            let mut buf = [0u8; 48];
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn several_inbound_forwarded_for_fields_are_joined_in_order() {
        let mut r = request(
            "/",
            &[
                ("X-Forwarded-For", "10.0.0.1"),
                ("x-forwarded-for", "10.0.0.2, 10.0.0.3"),
            ],
        );
        apply(&mut r, added("192.0.2.9", false)).expect("applied");
        let all: Vec<_> = r.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.9"]);
        let mut r = request("/", &[("X-Forwarded-For", "a"), ("X-Forwarded-For", "b")]);
        let joined = forwarded_for(r.headers.get_all(&X_FORWARDED_FOR), None).expect("ok");
        assert_eq!(joined.expect("value"), "a, b");
        r.remove_header("x-forwarded-for");
        assert_eq!(
            forwarded_for(r.headers.get_all(&X_FORWARDED_FOR), None).expect("ok"),
            None
        );
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn values_per_snapshot() {
        let config = unitgate_config::parse(
            r#"
[gateway]
unit = "A"
listen = ["127.0.0.1:1"]
[routing]
slots = 100
epoch = 3
allow_empty_routes = true
[[units]]
name = "A"
slots = ["0-99"]
"#,
            std::path::Path::new("."),
        )
        .expect("valid config");
        let v = HeaderValues::new(&config);
        assert_eq!(v.units[0], "A");
        assert_eq!(v.epoch, "3");
        assert_eq!(v.slot(42), "42");
        assert_eq!(v.slot(100_000), "100000", "beyond the table: formatted");
        assert_eq!(v.hops(1), "1");
        assert_eq!(v.hops(1_000), "1000");
    }
}
