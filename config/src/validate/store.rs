//! `[store]`: file or etcd, the gateway's id in the fleet, its status lease.

use std::path::Path;

use crate::errors::Errors;
use crate::raw::RawStore;
use crate::typed::{Gateway, Store, StoreKind};

/// Bounds of `store.lease_secs`: under 2 s a busy gateway loses its entry
/// between two renewals; over 5 minutes a dead one lingers in `fleet status`.
pub(crate) const LEASE_SECS: std::ops::RangeInclusive<u64> = 2..=300;

/// `raw` absent = every default. `gateway` supplies the default id's port.
pub(super) fn store(
    errs: &mut Errors,
    raw: Option<&RawStore>,
    gateway: &Gateway,
    base_dir: &Path,
) -> Store {
    let default = RawStore::default();
    let s = raw.unwrap_or(&default);
    let kind = match s.kind.as_str() {
        "file" => Some(StoreKind::File),
        "etcd" => Some(etcd(errs, s, base_dir)),
        other => {
            errs.push(
                "store.kind",
                format!("invalid value {other:?}: expected one of file, etcd"),
            );
            None
        }
    };
    let gateway_id = match &s.gateway_id {
        Some(id) => {
            if id.is_empty() {
                errs.push("store.gateway_id", "must not be empty");
            } else if id.contains('/') {
                errs.push(
                    "store.gateway_id",
                    format!("invalid gateway id {id:?}: must not contain '/' (it is a key segment in the store)"),
                );
            }
            id.clone()
        }
        None => default_gateway_id(gateway),
    };
    if !LEASE_SECS.contains(&s.lease_secs) {
        errs.push(
            "store.lease_secs",
            format!(
                "must be between {} and {}",
                LEASE_SECS.start(),
                LEASE_SECS.end()
            ),
        );
    }
    Store {
        kind: kind.unwrap_or(StoreKind::File),
        gateway_id,
        lease_secs: s.lease_secs,
    }
}

fn etcd(errs: &mut Errors, s: &RawStore, base_dir: &Path) -> StoreKind {
    if s.endpoints.is_empty() {
        errs.push("store.endpoints", "at least one endpoint is required");
    }
    for (i, e) in s.endpoints.iter().enumerate() {
        let path = format!("store.endpoints[{i}]");
        if errs.check(&path, endpoint(e)).is_some() {
            if let Some(j) = s.endpoints[..i].iter().position(|f| f == e) {
                errs.push(
                    path,
                    format!("duplicate endpoint (also store.endpoints[{j}])"),
                );
            }
        }
    }
    if let Err(m) = prefix(&s.prefix) {
        errs.push("store.prefix", m);
    }
    if s.cache_file.is_empty() {
        errs.push("store.cache_file", "file name must not be empty");
    }
    StoreKind::Etcd {
        endpoints: s.endpoints.clone(),
        prefix: s.prefix.clone(),
        cache_file: base_dir.join(&s.cache_file),
    }
}

/// `http://host:port`: the etcd client speaks plain HTTP only, so `https` is
/// refused with that reason rather than as a malformed URL.
fn endpoint(e: &str) -> Result<(), String> {
    let expected = "expected http://host:port, e.g. http://127.0.0.1:2379";
    if e.starts_with("https://") {
        return Err(format!(
            "invalid endpoint {e:?}: https is not supported (the store client speaks plain HTTP); use http://host:port"
        ));
    }
    let Some(rest) = e.strip_prefix("http://") else {
        return Err(format!("invalid endpoint {e:?}: {expected}"));
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!(
            "invalid endpoint {e:?}: a port is required: {expected}"
        ));
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
        return Err(format!(
            "invalid endpoint {e:?}: invalid port {port:?}: {expected}"
        ));
    }
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    if !host_ok {
        return Err(format!(
            "invalid endpoint {e:?}: invalid host {host:?}: {expected}"
        ));
    }
    Ok(())
}

/// Starts with `/` and has no trailing `/`: keys are `<prefix>/<name>`.
fn prefix(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("invalid prefix {p:?}: must start with \"/\""));
    }
    if p.ends_with('/') {
        return Err(format!(
            "invalid prefix {p:?}: must not end with \"/\" (keys are <prefix>/<name>)"
        ));
    }
    Ok(())
}

/// `<hostname>:<port of the first gateway.listen>` (just the host name when
/// no listen address parsed; that is an error of its own).
fn default_gateway_id(gateway: &Gateway) -> String {
    let host = hostname();
    match gateway.listen.first() {
        Some(a) => format!("{host}:{}", a.port()),
        None => host,
    }
}

/// This machine's host name: the kernel's (`/proc/sys/kernel/hostname`), else
/// `/etc/hostname`, else `$HOSTNAME`, else `localhost`. No `gethostname(2)`:
/// the workspace forbids `unsafe` and this crate pulls in no libc binding.
pub(crate) fn hostname() -> String {
    let from_file = |f: &str| {
        std::fs::read_to_string(f)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}
