//! Reading what the request path needs from the downstream request header.

use super::forward;
use http::HeaderValue;
use pingora::http::RequestHeader;
use std::borrow::Cow;

/// The inbound `x-request-id` when it is sane, else a new random one.
pub fn request_id(req: &RequestHeader) -> HeaderValue {
    if let Some(v) = req.headers.get(&forward::X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    forward::new_request_id()
}

/// The request's host, lowercase and without port: the URI authority when the
/// request has one (HTTP/2, absolute form), else the `Host` header.
pub fn host(req: &RequestHeader) -> Cow<'_, str> {
    let raw = match req.uri.host() {
        Some(h) => h,
        None => req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(strip_port)
            .unwrap_or(""),
    };
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(raw.to_ascii_lowercase())
    } else {
        Cow::Borrowed(raw)
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // "[::1]:8080" -> "::1"
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

/// Idempotent per RFC 9110, the methods a failed-after-send attempt may repeat.
pub fn is_idempotent(req: &RequestHeader) -> bool {
    req.method.is_idempotent() || req.headers.contains_key("idempotency-key")
}

/// `path?query` with `prefix` removed from the path (segment-aware, so the
/// result always starts with '/').
pub fn strip_prefix(path_and_query: &str, prefix: &str) -> String {
    if prefix == "/" {
        return path_and_query.to_owned();
    }
    let rest = path_and_query
        .strip_prefix(prefix)
        .unwrap_or(path_and_query);
    if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).expect("valid request");
        if let Some(h) = host {
            r.insert_header("host", h).expect("valid header");
        }
        r
    }

    #[test]
    fn host_from_header_is_lowercased_without_port() {
        assert_eq!(
            host(&req("/", Some("API.Example.com:8080"))),
            "api.example.com"
        );
        assert_eq!(host(&req("/", Some("[::1]:80"))), "::1");
        assert_eq!(host(&req("/", None)), "");
        let mut h2 = req("/x", Some("ignored"));
        h2.set_uri("http://Other.test/x".parse().expect("valid uri"));
        assert_eq!(host(&h2), "other.test", "the authority wins over Host");
    }

    #[test]
    fn request_id_kept_when_sane() {
        let mut r = req("/", None);
        r.insert_header("x-request-id", "abc-123")
            .expect("valid header");
        assert_eq!(request_id(&r), "abc-123");
        let r = req("/", None);
        let id = request_id(&r);
        assert_eq!(id.len(), 32);
        assert_ne!(id, request_id(&r));
    }

    #[test]
    fn strip_prefix_keeps_query_and_leading_slash() {
        assert_eq!(strip_prefix("/api/orders/1?x=2", "/api/orders"), "/1?x=2");
        assert_eq!(strip_prefix("/api/orders", "/api/orders"), "/");
        assert_eq!(strip_prefix("/api/orders?x", "/api/orders"), "/?x");
        assert_eq!(strip_prefix("/a/b", "/"), "/a/b");
    }

    #[test]
    fn idempotency() {
        assert!(is_idempotent(&req("/", None)));
        let mut p = RequestHeader::build("POST", b"/", None).expect("valid request");
        assert!(!is_idempotent(&p));
        p.insert_header("idempotency-key", "k1")
            .expect("valid header");
        assert!(is_idempotent(&p));
    }
}
