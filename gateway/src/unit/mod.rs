//! Unit routing for one request: routing key -> slot -> home unit ->
//! placement unit, the routing cookie, and the `x-unit-*` header rules.
//!
//! Everything a decision needs is precomputed per snapshot in [`UnitRouting`];
//! [`UnitRouting::decide`] does table lookups, one HMAC when a cookie is
//! presented without a key, and one more when a cookie must be stamped.

pub mod cookie;
pub mod slot;

use cookie::{CookieJar, RouteCookie};
use ipnet::IpNet;
use pingora::http::RequestHeader;
use slot::SlotTable;
use std::net::IpAddr;
use unitgate_config::{Config, KeySource, Placement, UnitId};
use unitgate_plugins::jwt::Claims;

/// Per-snapshot unit-routing tables.
pub struct UnitRouting {
    pub slots: SlotTable,
    pub cookies: Option<CookieJar>,
    trusted_peers: Vec<IpNet>,
}

/// What unit routing decided for one request.
#[derive(Debug, Clone)]
pub struct UnitCtx {
    /// The routing key, when a source yielded one.
    pub key: Option<String>,
    pub slot: u32,
    /// The unit owning the slot (or the key's override).
    pub home: UnitId,
    /// Where placement says to serve: candidates start here.
    pub placement: UnitId,
    /// Gateway hops so far (from a trusted peer's `x-unit-hops`, else 0).
    pub hops: u32,
    /// At `max_hops`: serve from this gateway's unit or fail, never cross again.
    pub hop_limited: bool,
    /// `Set-Cookie` value to send with the response, when stamping.
    pub set_cookie: Option<String>,
}

impl UnitRouting {
    pub fn new(config: &Config) -> Self {
        UnitRouting {
            slots: SlotTable::new(config),
            cookies: CookieJar::new(&config.routing),
            trusted_peers: config.gateway.trusted_peers.clone(),
        }
    }

    pub fn is_trusted(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted_peers.iter().any(|net| net.contains(&ip)))
    }

    /// Decides slot, home and placement for `req` (already sanitized).
    pub fn decide(
        &self,
        config: &Config,
        req: &RequestHeader,
        placement: Placement,
        trusted: bool,
        claims: Option<&Claims>,
        now: u64,
    ) -> UnitCtx {
        let routing = &config.routing;
        let key = routing_key(req, &routing.key, claims);
        let cookie: Option<RouteCookie> = self.cookies.as_ref().and_then(|jar| {
            let value = cookie_value(req, &jar.name)?;
            jar.verify(value, now, routing.slots)
        });
        let slot = match (&key, &cookie) {
            (Some(k), _) => slot::slot_of(k, routing.slots),
            (None, Some(c)) => c.slot,
            (None, None) => fastrand::u32(..routing.slots.max(1)),
        };
        let home = key
            .as_deref()
            .and_then(|k| routing.overrides.get(k).copied())
            .unwrap_or_else(|| self.slots.owner(slot));
        let placement = match placement {
            Placement::Sharded => home,
            Placement::Local => config.gateway.unit,
            Placement::Unit(u) => u,
        };
        let hops = if trusted {
            peer_hops(req, routing.max_hops)
        } else {
            0
        };
        let set_cookie = self.cookies.as_ref().and_then(|jar| {
            jar.needs_stamp(cookie.as_ref(), slot, routing.epoch, now)
                .then(|| jar.set_cookie(slot, routing.epoch, now))
        });
        UnitCtx {
            key,
            slot,
            home,
            placement,
            hops,
            hop_limited: trusted && hops >= routing.max_hops,
            set_cookie,
        }
    }
}

/// Drops every inbound `x-unit-*` header: a client must not pick its unit or
/// fake a crossing. Allocates only when there is something to drop.
pub fn strip_unit_headers(req: &mut RequestHeader) {
    let is_unit = |name: &str| name.len() > 7 && name[..7].eq_ignore_ascii_case("x-unit-");
    if !req.headers.keys().any(|k| is_unit(k.as_str())) {
        return;
    }
    let names: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| is_unit(k.as_str()))
        .cloned()
        .collect();
    for name in names {
        req.remove_header(&name);
    }
}

/// The routing key: the first configured source with a non-empty value.
/// `jwt:<claim>` reads the claims of a verified token only (`claims` is
/// `None` on routes without `jwt`).
pub fn routing_key(
    req: &RequestHeader,
    sources: &[KeySource],
    claims: Option<&Claims>,
) -> Option<String> {
    sources.iter().find_map(|src| {
        let v = match src {
            KeySource::Jwt(claim) => {
                return claims
                    .and_then(|c| c.get_str(claim))
                    .filter(|s| !s.is_empty());
            }
            KeySource::Header(name) => req
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::trim),
            KeySource::Cookie(name) => cookie_value(req, name),
            KeySource::Query(name) => {
                return query_value(req.uri.query().unwrap_or(""), name)
                    .map(percent_decode)
                    .filter(|s| !s.is_empty());
            }
        };
        v.filter(|s| !s.is_empty()).map(str::to_owned)
    })
}

/// Decodes `%XX` and `+` (form encoding) so a query key hashes over its
/// UTF-8 bytes; anything undecodable is kept as written.
fn percent_decode(raw: &str) -> String {
    if !raw.contains(['%', '+']) {
        return raw.to_owned();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| (c as char).to_digit(16);
        match b {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b),
            },
            b'+' => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| raw.to_owned())
}

/// A cookie's value, looking through every `cookie` header (HTTP/2 splits them).
pub fn cookie_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}

fn query_value<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// A trusted peer's `x-unit-hops`: absent is 0; present but not a number
/// is taken as the limit (refuse to cross again), never as 0, so a garbled
/// header cannot start an A->B->A loop.
fn peer_hops(req: &RequestHeader, max_hops: u32) -> u32 {
    match req.headers.get("x-unit-hops") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(max_hops),
    }
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
        assert_eq!(routing_key(&req, &sources, None).as_deref(), Some("c1"));
        req.insert_header("x-user-id", "h1").expect("valid");
        assert_eq!(routing_key(&req, &sources, None).as_deref(), Some("h1"));
        assert_eq!(
            routing_key(&req, &sources[3..], None).as_deref(),
            Some("q1")
        );
        req.insert_header("x-user-id", "").expect("valid");
        assert_eq!(routing_key(&req, &sources[1..2], None), None);
    }

    #[test]
    fn query_keys_are_percent_decoded() {
        assert_eq!(percent_decode("Zo%C3%AB"), "Zoë");
        assert_eq!(percent_decode("a+b%20c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%FF"), "%FF", "not UTF-8: kept as written");
        let req = RequestHeader::build("GET", b"/x?uid=Zo%C3%AB", None).expect("valid");
        let sources = [KeySource::Query("uid".into())];
        assert_eq!(routing_key(&req, &sources, None).as_deref(), Some("Zoë"));
    }

    #[test]
    fn garbled_hops_count_as_the_limit() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("valid");
        assert_eq!(peer_hops(&req, 1), 0, "absent");
        req.insert_header("x-unit-hops", "2").expect("valid");
        assert_eq!(peer_hops(&req, 1), 2);
        for bad in ["x", "-1", "1.5", "99999999999"] {
            req.insert_header("x-unit-hops", bad).expect("valid");
            assert_eq!(peer_hops(&req, 3), 3, "{bad}");
        }
    }

    #[test]
    fn unit_headers_are_stripped_case_insensitively() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("valid");
        req.insert_header("X-Unit-Home", "B").expect("valid");
        req.insert_header("x-unit-hops", "0").expect("valid");
        req.insert_header("x-units", "keep").expect("valid");
        req.insert_header("x-user-id", "keep").expect("valid");
        strip_unit_headers(&mut req);
        assert!(req.headers.get("x-unit-home").is_none());
        assert!(req.headers.get("x-unit-hops").is_none());
        assert_eq!(req.headers.len(), 2);
    }
}
