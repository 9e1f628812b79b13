//! Instances given by host name (`"orders.internal:8080"`).
//!
//! Every A/AAAA record of the name is an instance, with the entry's weight
//! and backup flag. Names are resolved (the system resolver, getaddrinfo) when
//! a snapshot is built for a name not seen before, and again every
//! `dns_refresh_ms` by [`DnsService`]; a change of the address set rebuilds
//! the snapshot, which keeps the health, ejection and breaker state of the
//! addresses that stay (as any reload does). A failed or empty lookup keeps
//! the last good set: a DNS outage must not empty a pool. A name that never
//! resolved has no instances, so its unit's users cross to a sibling.

use crate::control::ControlPlane;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unitgate_config::{Config, Instance};

type Name = (String, u16);

/// The last good address set of every name.
static RESOLVED: std::sync::LazyLock<Mutex<HashMap<Name, Vec<SocketAddr>>>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));

fn cached(name: &Name) -> Option<Vec<SocketAddr>> {
    let map = RESOLVED.lock().unwrap_or_else(|p| p.into_inner());
    map.get(name).cloned()
}

/// Records `addrs` for `name`; whether the set changed.
fn remember(name: &Name, mut addrs: Vec<SocketAddr>) -> bool {
    addrs.sort();
    addrs.dedup();
    let mut map = RESOLVED.lock().unwrap_or_else(|p| p.into_inner());
    if map.get(name) == Some(&addrs) {
        return false;
    }
    map.insert(name.clone(), addrs);
    true
}

/// Resolves now, blocking (a name first seen at load or reload).
fn resolve_blocking(name: &Name) -> Option<Vec<SocketAddr>> {
    match (name.0.as_str(), name.1).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                tracing::warn!(host = %name.0, "instance name resolves to no address");
                return None;
            }
            tracing::info!(host = %name.0, addrs = ?addrs, "instance name resolved");
            remember(name, addrs.clone());
            Some(addrs)
        }
        Err(e) => {
            tracing::warn!(host = %name.0, "cannot resolve instance name: {e}");
            None
        }
    }
}

/// Replaces the resolved instances of every service with the current
/// address sets of their names (idempotent: addresses added by an earlier
/// expansion are taken out first).
pub fn expand(config: &mut Config) {
    for svc in &mut config.services {
        for ui in &mut svc.instances {
            ui.instances.retain(|i| !i.resolved);
            for n in &ui.named {
                let name = (n.host.clone(), n.port);
                let addrs = cached(&name)
                    .or_else(|| resolve_blocking(&name))
                    .unwrap_or_default();
                for addr in addrs {
                    if ui.instances.iter().any(|i| i.addr == addr) {
                        continue;
                    }
                    ui.instances.push(Instance {
                        addr,
                        weight: n.weight,
                        backup: n.backup,
                        resolved: true,
                    });
                }
            }
        }
    }
}

/// Every name of `config` with its refresh interval (the shortest of the
/// services naming it).
fn names(config: &Config) -> HashMap<Name, Duration> {
    let mut out: HashMap<Name, Duration> = HashMap::new();
    for svc in &config.services {
        for ui in &svc.instances {
            for n in &ui.named {
                let every = out
                    .entry((n.host.clone(), n.port))
                    .or_insert(svc.dns_refresh);
                *every = (*every).min(svc.dns_refresh);
            }
        }
    }
    out
}

/// Re-resolves names on their intervals and rebuilds the snapshot when an
/// address set changes.
pub struct DnsService(pub Arc<ControlPlane>);

#[async_trait]
impl BackgroundService for DnsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut due: HashMap<Name, Instant> = HashMap::new();
        let mut failing: HashMap<Name, bool> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            let names = names(&self.0.snapshot().config);
            due.retain(|n, _| names.contains_key(n));
            let now = Instant::now();
            let mut changed = false;
            for (name, every) in names {
                let next = *due.entry(name.clone()).or_insert(now + every);
                if next > now {
                    continue;
                }
                due.insert(name.clone(), now + every);
                let lookup = tokio::net::lookup_host((name.0.as_str(), name.1));
                let found = match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                    Ok(Ok(addrs)) => Ok(addrs.collect::<Vec<_>>()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 5 s".to_owned()),
                };
                let was_failing = failing.get(&name).copied().unwrap_or(false);
                match found {
                    Ok(addrs) if !addrs.is_empty() => {
                        if was_failing {
                            tracing::info!(host = %name.0, "instance name resolves again");
                        }
                        failing.insert(name.clone(), false);
                        if remember(&name, addrs.clone()) {
                            tracing::info!(host = %name.0, addrs = ?addrs, "instance addresses changed");
                            changed = true;
                        }
                    }
                    other => {
                        let why = other.err().unwrap_or_else(|| "no address".to_owned());
                        if !was_failing {
                            tracing::warn!(host = %name.0, "cannot resolve instance name ({why}); keeping its last addresses");
                        }
                        failing.insert(name, true);
                    }
                }
            }
            if changed {
                self.0.rebuild("dns");
            }
        }
    }
}
