//! The routing key: the first configured source that yields a non-empty value.

use pingora::http::RequestHeader;
use unitgate_config::KeySource;

/// `jwt:` sources yield nothing until token verification provides claims.
pub fn routing_key(req: &RequestHeader, sources: &[KeySource]) -> Option<String> {
    sources.iter().find_map(|src| {
        let v = match src {
            KeySource::Jwt(_) => None,
            KeySource::Header(name) => req
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .map(str::to_owned),
            KeySource::Cookie(name) => cookie(req, name),
            KeySource::Query(name) => query(req.uri.query()?, name),
        };
        v.filter(|s| !s.is_empty())
    })
}

/// A cookie's value, looking through every `cookie` header (HTTP/2 splits them).
pub fn cookie(req: &RequestHeader, name: &str) -> Option<String> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"').to_owned())
        })
}

fn query(q: &str, name: &str) -> Option<String> {
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_source_with_a_value_wins() {
        let mut req = RequestHeader::build("GET", b"/x?uid=q1&a=b", None).expect("valid");
        req.append_header("cookie", "a=1; uid=c1").expect("valid");
        let sources = vec![
            KeySource::Jwt("sub".into()),
            KeySource::Header("x-user-id".into()),
            KeySource::Cookie("uid".into()),
            KeySource::Query("uid".into()),
        ];
        assert_eq!(routing_key(&req, &sources).as_deref(), Some("c1"));
        req.insert_header("x-user-id", "h1").expect("valid");
        assert_eq!(routing_key(&req, &sources).as_deref(), Some("h1"));
        assert_eq!(routing_key(&req, &sources[3..]).as_deref(), Some("q1"));
        req.insert_header("x-user-id", "").expect("valid");
        assert_eq!(routing_key(&req, &sources[1..2]), None);
    }
}
