//! `[[routes]]`: match (hosts, path prefix, methods), target and policies.

use std::collections::{BTreeSet, HashMap};

use super::{check, policies, splits, Cx};
use crate::raw::RawRoute;
use crate::typed::{HostMatch, Placement, Route};

/// Upper bound of `retries`: more would turn one request into a storm.
pub(crate) const MAX_RETRIES: u32 = 10;

/// `allow_empty` is `routing.allow_empty_routes`: without it an empty route
/// table is refused, since such a gateway answers 404 to everything.
pub(super) fn routes(cx: &mut Cx<'_>, raw: &[RawRoute], allow_empty: bool) -> Vec<Route> {
    if raw.is_empty() && !allow_empty {
        cx.errs.push(
            "routes",
            "no routes: a gateway with an empty route table answers 404 to everything; \
             set routing.allow_empty_routes = true if that is intended",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut routes = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let base = format!("routes[{i}]");
        if cx
            .errs
            .check(format!("{base}.name"), check::name(&r.name))
            .is_some()
        {
            if let Some(first) = names.get(r.name.as_str()) {
                cx.errs.push(
                    format!("{base}.name"),
                    format!("duplicate route {:?} (also routes[{first}])", r.name),
                );
            } else {
                names.insert(&r.name, i);
            }
        }
        routes.push(route(cx, &base, r));
    }
    conflicts(cx, &routes);
    routes
}

fn route(cx: &mut Cx<'_>, base: &str, r: &RawRoute) -> Route {
    let mut hosts = Vec::new();
    for (j, h) in r.hosts.iter().enumerate() {
        let path = format!("{base}.hosts[{j}]");
        if let Some(m) = cx.errs.check(&path, host(h)) {
            if hosts.contains(&m) {
                cx.errs.push(path, format!("duplicate host {h:?}"));
            } else {
                hosts.push(m);
            }
        }
    }
    let path_prefix = cx
        .errs
        .check(format!("{base}.path_prefix"), path_prefix(&r.path_prefix))
        .unwrap_or_default();
    let mut methods: Vec<String> = Vec::new();
    for (j, m) in r.methods.iter().enumerate() {
        let path = format!("{base}.methods[{j}]");
        if !check::is_token(m) {
            cx.errs.push(path, format!("invalid method {m:?}"));
            continue;
        }
        let m = m.to_ascii_uppercase();
        if methods.contains(&m) {
            cx.errs.push(path, format!("duplicate method {m:?}"));
        } else {
            methods.push(m);
        }
    }
    let service = if r.service.is_empty() {
        cx.errs.push(format!("{base}.service"), "is required");
        None
    } else {
        cx.service(format!("{base}.service"), &r.service)
    };
    let placement = placement(cx, &format!("{base}.placement"), &r.placement);
    let timeout = check::millis(&mut cx.errs, format!("{base}.timeout_ms"), r.timeout_ms);
    if r.retries > MAX_RETRIES {
        cx.errs.push(
            format!("{base}.retries"),
            format!("must be at most {MAX_RETRIES}"),
        );
    }
    let jwt = r
        .jwt
        .as_ref()
        .and_then(|j| cx.jwt(format!("{base}.jwt"), j));
    let rate_limits = r
        .rate_limits
        .iter()
        .enumerate()
        .map(|(j, l)| policies::rate_limit(cx, &format!("{base}.rate_limits[{j}]"), l))
        .collect();
    let fallback = r
        .fallback
        .as_ref()
        .map(|f| policies::fallback(cx, &format!("{base}.fallback"), f));
    let splits = splits::splits(cx, base, &r.splits, service);
    Route {
        name: r.name.clone(),
        hosts,
        path_prefix,
        methods,
        service: service.unwrap_or_default(),
        placement,
        strip_prefix: r.strip_prefix,
        timeout,
        retries: r.retries,
        jwt,
        max_inflight: r.max_inflight,
        max_body_bytes: r.max_body_bytes,
        rate_limits,
        fallback,
        splits,
    }
}

/// An exact host name or `*.suffix`, lowercased; no port.
fn host(h: &str) -> Result<HostMatch, String> {
    let lower = h.to_ascii_lowercase();
    let (name, wildcard) = match lower.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (lower.as_str(), false),
    };
    if h == "*" {
        return Err("invalid host \"*\": leave hosts empty to match any host".to_owned());
    }
    if name.contains('*') {
        return Err(format!(
            "invalid host {h:?}: '*' is only allowed as a leading \"*.\""
        ));
    }
    let labels_ok = !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !labels_ok {
        return Err(format!(
            "invalid host {h:?}: expected a host name without port, or \"*.example.com\""
        ));
    }
    Ok(if wildcard {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_owned())
    })
}

/// Starts with `/`; a trailing `/` is dropped (except for the root) because
/// matching is segment-aware: `/api` and `/api/` are the same prefix.
fn path_prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("invalid path prefix {p:?}: must start with \"/\""));
    }
    if p.bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
    {
        return Err(format!(
            "invalid path prefix {p:?}: no spaces, control characters, '?' or '#'"
        ));
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

/// `sharded`, `local` or `unit:<name>`.
fn placement(cx: &mut Cx<'_>, path: &str, p: &str) -> Placement {
    match p {
        "sharded" => Placement::Sharded,
        "local" => Placement::Local,
        _ => match p.strip_prefix("unit:") {
            Some(name) => cx
                .unit(path, name)
                .map_or(Placement::Sharded, Placement::Unit),
            None => {
                cx.errs.push(
                    path,
                    format!("invalid placement {p:?}: expected sharded, local or unit:<name>"),
                );
                Placement::Sharded
            }
        },
    }
}

/// Two routes with the same host set, the same normalised prefix and
/// overlapping methods would make matching depend on file order.
fn conflicts(cx: &mut Cx<'_>, routes: &[Route]) {
    type MatchKey<'r> = (BTreeSet<&'r HostMatch>, &'r str);
    let mut seen: HashMap<MatchKey<'_>, Vec<usize>> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        let key = (
            r.hosts.iter().collect::<BTreeSet<_>>(),
            r.path_prefix.as_str(),
        );
        let earlier = seen.entry(key).or_default();
        let clash = earlier.iter().copied().find(|&j| {
            let (a, b) = (&routes[j].methods, &r.methods);
            a.is_empty() || b.is_empty() || a.iter().any(|m| b.contains(m))
        });
        if let Some(j) = clash {
            cx.errs.push(
                format!("routes[{i}]"),
                format!("same match as routes[{j}] {:?}", routes[j].name),
            );
        }
        earlier.push(i);
    }
}
