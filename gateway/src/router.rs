//! Route matching: host, then the longest segment-aware path prefix, then method.
//!
//! Everything is precomputed at config load: one path table per exact host, one
//! per `*.suffix` host (most specific suffix first) and one for routes without
//! hosts. A lookup costs one hash probe per path segment and per host table that
//! applies, whatever the number of routes.

use ahash::RandomState;
use std::collections::HashMap;
use unitgate_config::{HostMatch, Route, RouteId};

/// Result of matching a request against the route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Route(RouteId),
    /// Some route's host and path matched, but none of them allows the method.
    MethodNotAllowed,
    NoRoute,
}

#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<Box<str>, PathTable, RandomState>,
    /// `(".example.com", table)`, longest suffix first.
    suffixes: Vec<(Box<str>, PathTable)>,
    any_host: PathTable,
}

#[derive(Debug, Default)]
struct PathTable {
    by_prefix: HashMap<Box<str>, Vec<Entry>, RandomState>,
}

#[derive(Debug)]
struct Entry {
    route: RouteId,
    methods: Methods,
}

/// A route's allowed methods: a bit per common method, a list for the rest.
#[derive(Debug, Default)]
struct Methods {
    any: bool,
    bits: u16,
    other: Vec<Box<str>>,
}

const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

fn method_bit(method: &str) -> Option<u16> {
    KNOWN_METHODS
        .iter()
        .position(|m| *m == method)
        .map(|i| 1u16 << i)
}

impl Methods {
    fn new(list: &[String]) -> Self {
        let mut m = Methods {
            any: list.is_empty(),
            ..Default::default()
        };
        for name in list {
            match method_bit(name) {
                Some(bit) => m.bits |= bit,
                None => m.other.push(name.as_str().into()),
            }
        }
        m
    }

    fn allows(&self, method: &str) -> bool {
        if self.any {
            return true;
        }
        match method_bit(method) {
            Some(bit) => self.bits & bit != 0,
            None => self.other.iter().any(|o| &**o == method),
        }
    }
}

impl PathTable {
    fn insert(&mut self, prefix: &str, route: RouteId, methods: &[String]) {
        self.by_prefix
            .entry(prefix.into())
            .or_default()
            .push(Entry {
                route,
                methods: Methods::new(methods),
            });
    }

    /// Longest matching prefix whose routes allow `method`. `saw_path` is set
    /// when a prefix matched but no method did, so the caller can answer 405.
    fn lookup(&self, path: &str, method: &str, saw_path: &mut bool) -> Option<RouteId> {
        if self.by_prefix.is_empty() {
            return None;
        }
        let mut candidate = path;
        loop {
            if let Some(entries) = self.by_prefix.get(candidate) {
                if let Some(e) = entries.iter().find(|e| e.methods.allows(method)) {
                    return Some(e.route);
                }
                *saw_path = true;
            }
            if candidate == "/" {
                return None;
            }
            candidate = match candidate.rfind('/') {
                Some(0) | None => "/",
                Some(i) => &candidate[..i],
            };
        }
    }
}

impl Router {
    pub fn new(routes: &[Route]) -> Self {
        let mut router = Router::default();
        for (id, route) in routes.iter().enumerate() {
            if route.hosts.is_empty() {
                router
                    .any_host
                    .insert(&route.path_prefix, id, &route.methods);
            }
            for host in &route.hosts {
                let table = match host {
                    HostMatch::Exact(h) => router.exact.entry(h.as_str().into()).or_default(),
                    HostMatch::Suffix(s) => {
                        match router.suffixes.iter().position(|(k, _)| **k == **s) {
                            Some(i) => &mut router.suffixes[i].1,
                            None => {
                                router
                                    .suffixes
                                    .push((s.as_str().into(), PathTable::default()));
                                let last = router.suffixes.len() - 1;
                                &mut router.suffixes[last].1
                            }
                        }
                    }
                };
                table.insert(&route.path_prefix, id, &route.methods);
            }
        }
        router
            .suffixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        router
    }

    /// `host` is lowercase without port; `path` is the request path without query.
    pub fn lookup(&self, host: &str, path: &str, method: &str) -> Match {
        let path = normalize(path);
        let mut saw_path = false;
        if let Some(t) = self.exact.get(host) {
            if let Some(r) = t.lookup(path, method, &mut saw_path) {
                return Match::Route(r);
            }
        }
        for (suffix, t) in &self.suffixes {
            // "*.example.com" matches "a.example.com", not "example.com".
            if host.len() > suffix.len() && host.ends_with(&**suffix) {
                if let Some(r) = t.lookup(path, method, &mut saw_path) {
                    return Match::Route(r);
                }
            }
        }
        if let Some(r) = self.any_host.lookup(path, method, &mut saw_path) {
            return Match::Route(r);
        }
        if saw_path {
            Match::MethodNotAllowed
        } else {
            Match::NoRoute
        }
    }
}

/// Trailing slashes do not make a different prefix: "/api/orders/" looks up
/// "/api/orders" first. An empty path is "/".
fn normalize(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
