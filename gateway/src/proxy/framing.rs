//! What pingora's HTTP/1 parser lets through but a backend behind us could
//! read differently (request smuggling), and the client's hop-by-hop
//! nominations. Both run first on the client's request, before the gateway
//! reads or adds a header.
//!
//! pingora 0.9 already refuses several differing `Content-Length`s and a
//! final coding other than `chunked`, and collapses `Content-Length: 5, 5`
//! to one value. Left for us: `Transfer-Encoding` together with
//! `Content-Length` (pingora drops the length and goes on), a coding list
//! such as `identity, chunked`, and an HTTP/1.1 request without `Host`.

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Version};
use pingora::http::RequestHeader;

/// At most this many `Connection` tokens are looked at; the rest are dropped.
const MAX_NOMINATIONS: usize = 32;

/// `Err(reason)` for a request head whose framing is ambiguous. `raw` gives
/// the head as the client sent it; it is read only when the request has a
/// `Transfer-Encoding` (the parser removed a `Content-Length` beside it).
pub fn check(
    req: &RequestHeader,
    raw: impl FnOnce() -> Option<bytes::Bytes>,
) -> Result<(), &'static str> {
    if req.version == Version::HTTP_11
        && req.uri.authority().is_none()
        && !req.headers.contains_key(HOST)
    {
        return Err("an HTTP/1.1 request needs a Host header");
    }
    let mut codings = req.headers.get_all(TRANSFER_ENCODING).iter();
    let Some(first) = codings.next() else {
        return Ok(());
    };
    if codings.next().is_some()
        || !first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
    {
        return Err("Transfer-Encoding must be exactly \"chunked\"");
    }
    if req.headers.contains_key(CONTENT_LENGTH)
        || raw().is_some_and(|head| has_content_length(&head))
    {
        return Err("Content-Length and Transfer-Encoding together");
    }
    Ok(())
}

/// `Content-Length: 5, 5` (or the field twice with one value) becomes one
/// `Content-Length: 5` (RFC 9110 §8.6): a backend may refuse the list form.
/// Differing values are refused. A single plain value costs one scan.
pub fn collapse_content_length(req: &mut RequestHeader) -> Result<(), &'static str> {
    let mut values = req.headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    if values.next().is_none() && !first.as_bytes().contains(&b',') {
        return Ok(());
    }
    let mut length: Option<u64> = None;
    for v in req.headers.get_all(CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or("Content-Length is not a number")?;
            if length.is_some_and(|l| l != n) {
                return Err("differing Content-Length values");
            }
            length = Some(n);
        }
    }
    let length = length.ok_or("empty Content-Length")?;
    req.insert_header(CONTENT_LENGTH, length)
        .map_err(|_| "Content-Length")?;
    Ok(())
}

/// Whether a raw request head has a `Content-Length` field line.
fn has_content_length(head: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length";
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > NAME.len()
            && line[..NAME.len()].eq_ignore_ascii_case(NAME)
            && line[NAME.len()..].trim_ascii_start().first() == Some(&b':')
    })
}

fn is_connection_option(token: &[u8]) -> bool {
    [&b"close"[..], b"keep-alive", b"upgrade"]
        .iter()
        .any(|o| token.eq_ignore_ascii_case(o))
}

/// Headers a client may not remove by nominating them: the request's
/// framing and what the gateway itself rewrites.
fn is_protected(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "transfer-encoding"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
    )
}

/// Hop-by-hop removal on the client's request (RFC 9110 §7.6.1): the fields
/// its `Connection` header nominates are removed now, before authentication
/// reads them and before the gateway adds its own headers, so a nomination
/// can never remove what the gateway set (a claim header, `x-request-id`).
/// `Connection` then keeps only `close`, `keep-alive` and `upgrade`.
/// Nominations of protected fields are ignored, not obeyed and not fatal.
pub fn strip_nominated(req: &mut RequestHeader) {
    let tokens = || {
        req.headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
    };
    // The common case, `keep-alive` or `close` or nothing: no work.
    if tokens().all(is_connection_option) {
        return;
    }
    let mut options: Vec<&'static str> = Vec::new();
    let mut nominated: Vec<HeaderName> = Vec::new();
    for token in tokens().take(MAX_NOMINATIONS) {
        if is_connection_option(token) {
            let option = if token.eq_ignore_ascii_case(b"close") {
                "close"
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                "upgrade"
            } else {
                "keep-alive"
            };
            if !options.contains(&option) {
                options.push(option);
            }
        } else if let Ok(name) = HeaderName::from_bytes(token) {
            if !is_protected(&name) {
                nominated.push(name);
            }
        }
    }
    for name in &nominated {
        req.remove_header(name);
    }
    req.remove_header(&CONNECTION);
    if !options.is_empty() {
        // Only known tokens joined by ", ": always a valid value.
        if let Ok(v) = HeaderValue::from_str(&options.join(", ")) {
            let _ = req.insert_header(CONNECTION, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/x", None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    fn none() -> Option<bytes::Bytes> {
        None
    }

    #[test]
    fn framing() {
        assert!(check(&req(&[("host", "a")]), none).is_ok());
        assert!(check(&req(&[]), none).is_err(), "no Host");
        let mut http10 = req(&[]);
        http10.set_version(Version::HTTP_10);
        assert!(check(&http10, none).is_ok(), "HTTP/1.0 needs no Host");
        let ok = req(&[("host", "a"), ("transfer-encoding", "Chunked ")]);
        assert!(check(&ok, none).is_ok());
        for te in ["identity, chunked", "chunked, chunked", "gzip"] {
            let r = req(&[("host", "a"), ("transfer-encoding", te)]);
            assert!(check(&r, none).is_err(), "{te}");
        }
        let two = req(&[
            ("host", "a"),
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ]);
        assert!(check(&two, none).is_err());
        let te = req(&[("host", "a"), ("transfer-encoding", "chunked")]);
        let raw = |s: &'static str| move || Some(bytes::Bytes::from_static(s.as_bytes()));
        assert!(check(
            &te,
            raw("POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n")
        )
        .is_err());
        assert!(check(
            &te,
            raw("POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 5\r\n\r\n")
        )
        .is_ok());
    }

    #[test]
    fn content_length_lists() {
        let mut r = req(&[("content-length", "5, 5")]);
        assert!(collapse_content_length(&mut r).is_ok());
        assert_eq!(r.headers.get_all("content-length").iter().count(), 1);
        assert_eq!(r.headers["content-length"], "5");
        let mut r = req(&[("content-length", "5"), ("content-length", "5")]);
        assert!(collapse_content_length(&mut r).is_ok());
        assert_eq!(r.headers.get_all("content-length").iter().count(), 1);
        for bad in [
            &[("content-length", "5, 6")][..],
            &[("content-length", "5"), ("content-length", "6")],
            &[("content-length", "5,")],
            &[("content-length", "+5, 5")],
        ] {
            let mut r = req(bad);
            assert!(collapse_content_length(&mut r).is_err(), "{bad:?}");
        }
        let mut one = req(&[("content-length", "7")]);
        assert!(collapse_content_length(&mut one).is_ok());
        assert_eq!(one.headers["content-length"], "7");
    }

    #[test]
    fn nominations() {
        let mut r = req(&[
            ("connection", "X-User-Id, keep-alive, host"),
            ("connection", "authorization, Content-Length"),
            ("x-user-id", "forged"),
            ("authorization", "Bearer t"),
            ("content-length", "3"),
            ("host", "a"),
        ]);
        strip_nominated(&mut r);
        assert!(r.headers.get("x-user-id").is_none());
        assert!(r.headers.get("authorization").is_none());
        assert_eq!(r.headers["content-length"], "3");
        assert_eq!(r.headers["host"], "a");
        assert_eq!(r.headers["connection"], "keep-alive");

        let mut plain = req(&[("connection", "close"), ("x-a", "1")]);
        strip_nominated(&mut plain);
        assert_eq!(plain.headers["connection"], "close");
        assert_eq!(plain.headers["x-a"], "1");

        let mut only = req(&[("connection", "x-a"), ("x-a", "1")]);
        strip_nominated(&mut only);
        assert!(only.headers.get("connection").is_none());
        assert!(only.headers.get("x-a").is_none());
    }
}
