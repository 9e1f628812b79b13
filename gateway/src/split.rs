//! Gray release: which service serves a request on a route with
//! `[[routes.splits]]` (DESIGN.md "Gray release").
//!
//! A user's bucket is `crc32("split:" + routing key) % 100` (no key: the slot
//! in decimal), so it depends on nothing but the user: the same on every
//! request, every gateway, after every restart. Split `i` owns the buckets
//! `[w_0 + .. + w_{i-1}, w_0 + .. + w_i)` in every unit; where its `units`
//! leave a unit out, its buckets stay on the route's service there. Raising
//! the last split's weight therefore moves exactly the users of the buckets
//! it adds, and nobody else.
//!
//! Everything is resolved at snapshot build into a 100-entry table per
//! placement unit; a request costs the header probes of `match_header`
//! splits, one CRC over the key and one table read. Routes without splits
//! have no [`RouteSplits`] at all and pay one `None` check.

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use unitgate_config::{Config, Route, ServiceId, UnitId};

/// Users are spread over this many buckets: a weight is a number of them.
pub const BUCKETS: usize = 100;

/// The upstream header naming the split service that serves the request.
pub const X_UNIT_SPLIT: HeaderName = HeaderName::from_static("x-unit-split");

/// A route's splits, resolved for the request path. Choice 0 is the route's
/// own service; choice `i > 0` is `route.splits[i - 1]`.
pub struct RouteSplits {
    /// `tables[placement unit][bucket]` -> choice.
    tables: Box<[[u8; BUCKETS]]>,
    /// Whether `tables[unit]` sends any bucket to a split (else no hashing).
    weighted: Box<[bool]>,
    /// Header matches in listed order.
    headers: Box<[HeaderMatch]>,
    /// By choice.
    pub choices: Box<[Choice]>,
}

struct HeaderMatch {
    name: HeaderName,
    choice: u8,
    /// Placement units it applies in; empty = all.
    units: Box<[UnitId]>,
}

/// One service a route may send a request to.
pub struct Choice {
    pub service: ServiceId,
    /// The service's name, for the metric label.
    pub name: Arc<str>,
    /// `x-unit-split` value (the service name).
    pub header: HeaderValue,
    /// Requests sent to this choice; kept across reloads while the route and
    /// the service keep their names.
    pub requests: Arc<AtomicU64>,
}

/// The split bucket of a user: `crc32("split:" + key) % 100`, or the slot
/// (in decimal) in place of the key when the request has none.
pub fn bucket(key: Option<&str>, slot: u32) -> usize {
    let mut h = crc32fast::Hasher::new();
    h.update(b"split:");
    match key {
        Some(k) => h.update(k.as_bytes()),
        None => {
            let mut buf = [0u8; 10];
            h.update(decimal(slot, &mut buf));
        }
    }
    (h.finalize() % BUCKETS as u32) as usize
}

/// `n` in decimal, written into `buf` (no allocation on the request path).
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

impl RouteSplits {
    /// `None` for a route without splits. `prev` is the same route's splits
    /// in the snapshot being replaced, whose counters are carried over by
    /// service name.
    pub fn build(config: &Config, route: &Route, prev: Option<&RouteSplits>) -> Option<Self> {
        if route.splits.is_empty() {
            return None;
        }
        let services = std::iter::once(route.service).chain(route.splits.iter().map(|s| s.service));
        let choices: Box<[Choice]> = services
            .map(|service| {
                let name: Arc<str> = Arc::from(config.services[service].name.as_str());
                let requests = prev
                    .and_then(|p| p.choices.iter().find(|c| c.name == name))
                    .map_or_else(|| Arc::new(AtomicU64::new(0)), |c| c.requests.clone());
                Choice {
                    service,
                    // Service names are validated to [A-Za-z0-9._-].
                    header: HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("-")),
                    name,
                    requests,
                }
            })
            .collect();
        let units = config.units.len();
        let mut tables = vec![[0u8; BUCKETS]; units].into_boxed_slice();
        let mut start = 0usize;
        for (i, split) in route.splits.iter().enumerate() {
            // Validation keeps the weights' sum within 100 and the splits
            // within 64, so the range fits and the choice fits a byte.
            let end = (start + usize::from(split.weight)).min(BUCKETS);
            let choice = u8::try_from(i + 1).unwrap_or(u8::MAX);
            for (unit, table) in tables.iter_mut().enumerate() {
                if split.applies_in(unit) {
                    table[start..end].fill(choice);
                }
            }
            start = end;
        }
        let weighted = tables.iter().map(|t| t.iter().any(|&c| c != 0)).collect();
        let headers = route
            .splits
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let name = HeaderName::from_bytes(s.match_header.as_ref()?.as_bytes()).ok()?;
                Some(HeaderMatch {
                    name,
                    choice: u8::try_from(i + 1).unwrap_or(u8::MAX),
                    units: s.units.clone().into_boxed_slice(),
                })
            })
            .collect();
        Some(RouteSplits {
            tables,
            weighted,
            headers,
            choices,
        })
    }

    /// The choice for a request (an index into [`RouteSplits::choices`]; 0
    /// is the route's own service): the first split whose `match_header` the
    /// request carries, else the user's bucket in the placement unit's table.
    /// Counts the request for the chosen service.
    pub fn choose(
        &self,
        req: &RequestHeader,
        key: Option<&str>,
        slot: u32,
        placement: UnitId,
    ) -> u8 {
        let choice = self.choice(req, key, slot, placement);
        if let Some(c) = self.choices.get(usize::from(choice)) {
            c.requests.fetch_add(1, Ordering::Relaxed);
        }
        choice
    }

    fn choice(&self, req: &RequestHeader, key: Option<&str>, slot: u32, placement: UnitId) -> u8 {
        for h in self.headers.iter() {
            let here = h.units.is_empty() || h.units.contains(&placement);
            if here && req.headers.contains_key(&h.name) {
                return h.choice;
            }
        }
        if !self.weighted.get(placement).copied().unwrap_or(false) {
            return 0;
        }
        self.tables[placement][bucket(key, slot)]
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
