//! The one step from [`RawConfig`] to [`Config`]: checks everything, collects
//! every error with its path, resolves names to indices, reads secrets from the
//! environment and referenced files from disk.

mod check;
mod jwt;
mod policies;
mod routes;
mod routing;
mod services;
mod splits;
mod store;
mod tls;

pub(crate) use check::key_path;
#[cfg(test)]
pub(crate) use store::hostname;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::errors::{ConfigErrors, Errors};
use crate::raw::{RawAdmin, RawConfig, RawGateway, RawRedis};
use crate::typed::{Admin, Config, Gateway, LocalConfig, OnFailure, Redis, UnitId};

/// Bounds of `gateway.max_header_bytes`.
pub(crate) const MAX_HEADER_BYTES: std::ops::RangeInclusive<u64> = 1024..=1_048_576;

/// Validates `raw` into a typed [`Config`], returning every error found.
///
/// `base_dir` is the directory of the config file: relative `body_file`,
/// `public_key_file` and `jwks_file` paths resolve against it.
pub fn validate(raw: &RawConfig, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut cx = Cx::new(raw, base_dir);
    let unit = if raw.gateway.unit.is_empty() {
        cx.errs.push("gateway.unit", "is required");
        None
    } else {
        cx.unit("gateway.unit", &raw.gateway.unit)
    };
    let mut gateway = gateway(&mut cx.errs, &raw.gateway);
    gateway.unit = unit.unwrap_or_default();
    let admin = raw.admin.as_ref().map(|a| admin(&mut cx.errs, a, &gateway));
    let store = store::store(&mut cx.errs, raw.store.as_ref(), &gateway, base_dir);
    let (routing, units) = routing::routing_and_units(&mut cx, raw);
    let services = services::services(&mut cx, &raw.services);
    let jwt = jwt::verifiers(&mut cx, &raw.jwt);
    let routes = routes::routes(&mut cx, &raw.routes, raw.routing.allow_empty_routes);
    let redis = raw.redis.as_ref().map(|r| redis(&mut cx, r));
    let tls = local_tls(&mut cx.errs, raw, &gateway, base_dir);
    let tracing = raw.tracing.as_ref().map(|t| tracing(&mut cx.errs, t));
    cx.errs.into_result(Config {
        gateway,
        admin,
        store,
        routing,
        units,
        services,
        routes,
        jwt,
        redis,
        tls,
        tracing,
        raw: raw.clone(),
    })
}

/// Validates the per-process sections of `raw` (`[gateway]`, `[admin]`,
/// `[store]`) on their own, for a `store.kind = "etcd"` local file whose
/// fleet-wide sections live in etcd. Fleet-wide sections in `raw` are not
/// looked at (refusing them is [`crate::fleet::parse_local`]'s job), and
/// `gateway.unit` is only checked to be a valid, non-empty name.
pub fn validate_local(raw: &RawConfig, base_dir: &Path) -> Result<LocalConfig, ConfigErrors> {
    let mut errs = Errors::default();
    errs.check("gateway.unit", check::name(&raw.gateway.unit));
    let gateway = gateway(&mut errs, &raw.gateway);
    let admin = raw.admin.as_ref().map(|a| admin(&mut errs, a, &gateway));
    let store = store::store(&mut errs, raw.store.as_ref(), &gateway, base_dir);
    let tls = local_tls(&mut errs, raw, &gateway, base_dir);
    let tracing = raw.tracing.as_ref().map(|t| tracing(&mut errs, t));
    errs.into_result(LocalConfig {
        unit: raw.gateway.unit.clone(),
        gateway,
        admin,
        store,
        tls,
        tracing,
    })
}

/// `[tracing]`: an http:// URL with a host (the exporter has no TLS client,
/// so https:// is refused here rather than failing every export), a ratio in
/// 0..=1, a bounded queue.
fn tracing(errs: &mut Errors, t: &crate::raw::RawTracing) -> crate::typed::Tracing {
    let url = t.otlp_endpoint.trim();
    let traces_url = match url.parse::<http::Uri>() {
        _ if url.is_empty() => {
            errs.push(
                "tracing.otlp_endpoint",
                "is required (e.g. \"http://127.0.0.1:4318\")",
            );
            String::new()
        }
        Ok(u) if u.scheme_str() == Some("http") && u.host().is_some_and(|h| !h.is_empty()) => {
            match u.path() {
                "" | "/" => format!("{}/v1/traces", url.trim_end_matches('/')),
                _ => url.to_owned(),
            }
        }
        Ok(u) if u.scheme_str() == Some("https") => {
            errs.push(
                "tracing.otlp_endpoint",
                format!(
                    "{url:?}: https:// is not supported (this build's exporter has no TLS \
                     client); send to a local collector over http://"
                ),
            );
            String::new()
        }
        _ => {
            errs.push(
                "tracing.otlp_endpoint",
                format!("{url:?} is not an http:// URL with a host"),
            );
            String::new()
        }
    };
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        errs.push("tracing.sample_ratio", "must be between 0.0 and 1.0");
    }
    errs.check("tracing.service_name", check::name(&t.service_name));
    if !(1..=1_000_000).contains(&t.queue_size) {
        errs.push("tracing.queue_size", "must be between 1 and 1000000");
    }
    let ratio = t.sample_ratio.clamp(0.0, 1.0);
    crate::typed::Tracing {
        traces_url,
        // `as` saturates: 1.0 gives u64::MAX, which every id is at or below.
        sample_threshold: (ratio * u64::MAX as f64) as u64,
        service_name: t.service_name.clone(),
        queue_size: t.queue_size,
    }
}

/// `[tls]`, and that TLS listeners have a certificate to serve.
fn local_tls(
    errs: &mut Errors,
    raw: &RawConfig,
    gateway: &Gateway,
    base_dir: &Path,
) -> Option<crate::typed::Tls> {
    let tls = raw.tls.as_ref().map(|t| tls::tls(errs, t, base_dir));
    let listed = raw.tls.as_ref().map_or(0, |t| t.certificates.len());
    if !gateway.listen_tls.is_empty() && listed == 0 {
        errs.push(
            "gateway.listen_tls",
            "TLS listeners need a certificate: add [[tls.certificates]]",
        );
    }
    tls
}

/// Validation state: the error list and the name tables for cross references.
pub(crate) struct Cx<'a> {
    pub(crate) errs: Errors,
    pub(crate) base_dir: &'a Path,
    units: HashMap<&'a str, UnitId>,
    services: HashMap<&'a str, usize>,
    jwts: HashMap<&'a str, usize>,
    pub(crate) has_redis: bool,
}

impl<'a> Cx<'a> {
    fn new(raw: &'a RawConfig, base_dir: &'a Path) -> Self {
        let mut errs = Errors::default();
        let units = index_names(
            &mut errs,
            "units",
            "unit",
            raw.units.iter().map(|u| &u.name),
        );
        let services = index_names(
            &mut errs,
            "services",
            "service",
            raw.services.iter().map(|s| &s.name),
        );
        // Map keys cannot repeat; only the alphabet is checked (in jwt.rs).
        let jwts = raw
            .jwt
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        Self {
            errs,
            base_dir,
            units,
            services,
            jwts,
            has_redis: raw.redis.is_some(),
        }
    }

    /// Resolves a unit name; records `unknown unit` at `path` and returns `None`.
    pub(crate) fn unit(&mut self, path: impl Into<String>, name: &str) -> Option<UnitId> {
        let id = self.units.get(name).copied();
        if id.is_none() {
            self.errs.push(path, format!("unknown unit {name:?}"));
        }
        id
    }

    pub(crate) fn service(&mut self, path: impl Into<String>, name: &str) -> Option<usize> {
        let id = self.services.get(name).copied();
        if id.is_none() {
            self.errs.push(path, format!("unknown service {name:?}"));
        }
        id
    }

    pub(crate) fn jwt(&mut self, path: impl Into<String>, name: &str) -> Option<usize> {
        let id = self.jwts.get(name).copied();
        if id.is_none() {
            self.errs
                .push(path, format!("unknown jwt verifier {name:?}"));
        }
        id
    }
}

/// Checks names (`<section>[i].name`) and reports duplicates; first one wins.
fn index_names<'a>(
    errs: &mut Errors,
    section: &str,
    what: &str,
    names: impl Iterator<Item = &'a String>,
) -> HashMap<&'a str, usize> {
    let mut map: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        let path = format!("{section}[{i}].name");
        if errs.check(&path, check::name(name)).is_none() {
            continue;
        }
        match map.get(name.as_str()) {
            Some(first) => errs.push(
                path,
                format!("duplicate {what} {name:?} (also {section}[{first}])"),
            ),
            None => {
                map.insert(name, i);
            }
        }
    }
    map
}

/// `[gateway]` but `unit`, which needs the units (left at 0 here).
fn gateway(errs: &mut Errors, g: &RawGateway) -> Gateway {
    if g.listen.is_empty() && g.listen_tls.is_empty() {
        errs.push(
            "gateway.listen",
            "at least one address is required (in listen or listen_tls)",
        );
    }
    let mut listen = Vec::new();
    for (i, s) in g.listen.iter().enumerate() {
        let path = format!("gateway.listen[{i}]");
        if let Some(a) = errs.check(&path, check::socket_addr(s)) {
            if let Some(j) = listen.iter().position(|b| *b == a) {
                errs.push(
                    path,
                    format!("duplicate address (also gateway.listen[{j}])"),
                );
            }
            listen.push(a);
        }
    }
    let mut listen_tls = Vec::new();
    for (i, s) in g.listen_tls.iter().enumerate() {
        let path = format!("gateway.listen_tls[{i}]");
        if let Some(a) = errs.check(&path, check::socket_addr(s)) {
            if listen.contains(&a) || listen_tls.contains(&a) {
                errs.push(
                    path,
                    "duplicate address (also in gateway.listen or gateway.listen_tls)",
                );
            }
            listen_tls.push(a);
        }
    }
    let threads = match g.threads {
        Some(0) => {
            errs.push("gateway.threads", "must be at least 1");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let trusted_peers = g
        .trusted_peers
        .iter()
        .enumerate()
        .filter_map(|(i, s)| errs.check(format!("gateway.trusted_peers[{i}]"), check::cidr(s)))
        .collect();
    let client_header_timeout = check::millis(
        errs,
        "gateway.client_header_timeout_ms",
        g.client_header_timeout_ms,
    );
    let client_idle_timeout = check::millis(
        errs,
        "gateway.client_idle_timeout_ms",
        g.client_idle_timeout_ms,
    );
    if !MAX_HEADER_BYTES.contains(&g.max_header_bytes) {
        errs.push(
            "gateway.max_header_bytes",
            format!(
                "must be between {} and {}",
                MAX_HEADER_BYTES.start(),
                MAX_HEADER_BYTES.end()
            ),
        );
    }
    Gateway {
        unit: 0,
        listen,
        listen_tls,
        h2c: g.h2c,
        threads,
        grace_period: Duration::from_secs(g.grace_period_secs),
        trusted_peers,
        expose_unit_headers: g.expose_unit_headers,
        client_header_timeout,
        client_idle_timeout,
        // In range (checked above) or an error is recorded; either way it fits.
        max_header_bytes: usize::try_from(g.max_header_bytes).unwrap_or(usize::MAX),
        max_connections: g.max_connections,
    }
}

fn admin(errs: &mut Errors, a: &RawAdmin, gateway: &Gateway) -> Admin {
    let listen = errs.check("admin.listen", check::socket_addr(&a.listen));
    if let Some(l) = listen {
        if let Some(i) = gateway.listen.iter().position(|g| *g == l) {
            errs.push(
                "admin.listen",
                format!("same address as gateway.listen[{i}]"),
            );
        }
    }
    let token = check::secret(
        errs,
        "admin",
        "token",
        a.token.as_ref(),
        a.token_env.as_ref(),
        true,
    );
    Admin {
        listen: listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        token: token.map(|(t, _)| t).unwrap_or_default(),
    }
}

fn redis(cx: &mut Cx<'_>, r: &RawRedis) -> Redis {
    let url = check::secret(
        &mut cx.errs,
        "redis",
        "url",
        r.url.as_ref(),
        r.url_env.as_ref(),
        true,
    );
    if let Some((url, path)) = &url {
        // Never echo the URL: it may carry a password.
        let scheme_ok = url
            .split_once("://")
            .is_some_and(|(s, _)| s.starts_with("redis"));
        if !scheme_ok {
            cx.errs.push(
                path,
                "must be a Redis URL: redis://, rediss://, redis+unix:// (any redis* scheme)",
            );
        }
    }
    let timeout = check::millis(&mut cx.errs, "redis.timeout_ms", r.timeout_ms);
    let on_failure = cx.errs.check(
        "redis.on_failure",
        check::choice(
            &r.on_failure,
            &[
                ("local", OnFailure::Local),
                ("open", OnFailure::Open),
                ("closed", OnFailure::Closed),
            ],
        ),
    );
    check::at_least_one(&mut cx.errs, "redis.fleet_size", r.fleet_size.into());
    Redis {
        url: url.map(|(u, _)| u).unwrap_or_default(),
        timeout,
        on_failure: on_failure.unwrap_or(OnFailure::Local),
        fleet_size: r.fleet_size,
    }
}
