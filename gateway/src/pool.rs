//! Per-(service, unit) instance pools: readiness on pingora-load-balancing's
//! health registry, choice by [`crate::balance`], backups after primaries.
//!
//! Each service has one [`HealthRegistry`] shared by its unit pools, so one
//! active check per instance feeds every pool that contains it, and a later
//! rebuild of a pool over the same registry keeps the instances' health. The
//! rest of an instance's live state (ejection, requests in flight) and a
//! unit's breaker and attempt counters are carried into a rebuilt pool by
//! address, so a weight or backup change resets none of them.

use crate::balance::Group;
use futures_util::FutureExt;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, HealthRegistry, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use unitgate_config::{HealthKind, Instance, LbPolicy, Service, UnitId};
use unitgate_plugins::breaker::CircuitBreaker;
use unitgate_plugins::outlier::InstanceHealth;

/// The live state of one instance of a pool, kept across rebuilds.
#[derive(Default)]
pub struct InstanceLive {
    /// Passive health (outlier ejection).
    pub passive: InstanceHealth,
    /// Attempts on this instance not yet finished, from this gateway.
    in_flight: AtomicU32,
}

/// One attempt in flight on an instance: counted from the pick until the
/// attempt is replaced by the next one or the request ends, whichever way it
/// ends (response, error, timeout, client gone), since dropping it is the
/// only way to stop counting.
pub struct InFlight(Arc<InstanceLive>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The instances of one service in one unit.
pub struct UnitPool {
    /// Every instance, primaries and backups, in config order.
    pub addrs: Vec<SocketAddr>,
    /// The config this pool was built from: a reload keeps the pool as is
    /// when these are unchanged.
    instances: Vec<Instance>,
    lb: LbPolicy,
    breaker_config: Option<unitgate_config::CircuitBreaker>,
    /// In `addrs` order.
    live: Vec<Arc<InstanceLive>>,
    /// The (service, unit) circuit, when the service configures one.
    pub breaker: Option<Arc<CircuitBreaker>>,
    /// Attempts by outcome ([`Outcome`] order), for metrics.
    outcomes: Arc<[AtomicU64; 4]>,
    /// This pool's view of the health registry: readiness of `backends`.
    view: LoadBalancer<RoundRobin>,
    /// `addrs` as pingora backends (weight 1: health is keyed by the whole
    /// backend, so a weight change must not make it a new one).
    backends: Vec<Backend>,
    primaries: Option<Group>,
    /// Used only when no primary can serve.
    backups: Option<Group>,
}

impl UnitPool {
    fn new(
        instances: &[Instance],
        service: &Service,
        registry: &Arc<HealthRegistry>,
        prev: Option<&UnitPool>,
    ) -> Self {
        let lb = service.lb;
        let addrs: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
        let set: BTreeSet<Backend> = addrs.iter().map(|a| backend(*a)).collect();
        let view = ready(LoadBalancer::from_backends(
            Backends::new_with_health_registry(Static::new(set), registry.clone()),
        ));
        let group = |backup: bool| {
            let members: Vec<(usize, u32, SocketAddr)> = instances
                .iter()
                .enumerate()
                .filter(|(_, i)| i.backup == backup)
                .map(|(p, i)| (p, i.weight, i.addr))
                .collect();
            Group::new(lb, &members)
        };
        let breaker_config = service.circuit_breaker.clone();
        let breaker = match prev {
            Some(p) if p.breaker_config == breaker_config => p.breaker.clone(),
            _ => breaker_config
                .as_ref()
                .map(|c| Arc::new(CircuitBreaker::new(c))),
        };
        UnitPool {
            live: addrs
                .iter()
                .map(|a| {
                    prev.and_then(|p| p.index_of(a).map(|i| p.live[i].clone()))
                        .unwrap_or_default()
                })
                .collect(),
            outcomes: prev.map(|p| p.outcomes.clone()).unwrap_or_default(),
            breaker,
            breaker_config,
            backends: addrs.iter().map(|a| backend(*a)).collect(),
            primaries: group(false),
            backups: group(true),
            view,
            lb,
            instances: instances.to_vec(),
            addrs,
        }
    }

    fn index_of(&self, addr: &SocketAddr) -> Option<usize> {
        self.addrs.iter().position(|a| a == addr)
    }

    /// Picks a ready (healthy, not ejected) instance for which `accept`
    /// holds: a primary by the service's policy, else a backup (the caller
    /// crosses to a sibling unit only when this returns `None`). Returns its
    /// position in `addrs`.
    pub fn pick(
        &self,
        key: &[u8],
        now_ms: u64,
        accept: impl Fn(&SocketAddr) -> bool,
    ) -> Option<usize> {
        let usable = |i: usize| {
            accept(&self.addrs[i])
                && !self.live[i].passive.is_ejected(now_ms)
                && self.view.backends().ready(&self.backends[i])
        };
        let load = |i: usize| self.live[i].in_flight.load(Ordering::Relaxed);
        let primary = self
            .primaries
            .as_ref()
            .and_then(|g| g.pick(key, load, usable));
        primary.or_else(|| self.backups.as_ref()?.pick(key, load, usable))
    }

    /// [`UnitPool::pick`] as an address.
    pub fn select(
        &self,
        key: &[u8],
        now_ms: u64,
        accept: impl Fn(&SocketAddr) -> bool,
    ) -> Option<SocketAddr> {
        self.pick(key, now_ms, accept).map(|i| self.addrs[i])
    }

    /// Counts an attempt on instance `i` (a position from [`UnitPool::pick`])
    /// until the returned guard is dropped.
    pub fn start_attempt(&self, i: usize) -> Option<InFlight> {
        let live = self.live.get(i)?;
        live.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(live.clone()))
    }

    /// Attempts in flight on an instance of this pool.
    pub fn in_flight(&self, addr: &SocketAddr) -> u32 {
        self.index_of(addr)
            .map_or(0, |i| self.live[i].in_flight.load(Ordering::Relaxed))
    }

    /// Whether an instance of this pool is a backup.
    pub fn is_backup(&self, addr: &SocketAddr) -> bool {
        self.index_of(addr)
            .is_some_and(|i| self.instances[i].backup)
    }

    /// An instance's weight (0 when not in this pool).
    pub fn weight(&self, addr: &SocketAddr) -> u32 {
        self.index_of(addr).map_or(0, |i| self.instances[i].weight)
    }

    /// Passive health of an instance of this pool.
    pub fn passive(&self, addr: &SocketAddr) -> Option<&InstanceHealth> {
        self.index_of(addr).map(|i| &self.live[i].passive)
    }

    /// Passive health of every instance, in `addrs` order.
    pub fn passives(&self) -> impl Iterator<Item = &InstanceHealth> {
        self.live.iter().map(|l| &l.passive)
    }

    pub fn is_ejected(&self, addr: &SocketAddr, now_ms: u64) -> bool {
        self.passive(addr).is_some_and(|h| h.is_ejected(now_ms))
    }

    /// Whether the instance passes its active health check (true when unchecked).
    pub fn is_healthy(&self, addr: &SocketAddr) -> bool {
        self.index_of(addr)
            .is_some_and(|i| self.view.backends().ready(&self.backends[i]))
    }
}

/// How an upstream attempt ended, as counted per (service, unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
    ConnectError,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::ConnectError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::ConnectError => "connect_error",
        }
    }
}

impl UnitPool {
    pub fn count(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn outcome_count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize].load(Ordering::Relaxed)
    }
}

fn backend(addr: SocketAddr) -> Backend {
    Backend {
        addr: PeerAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
    }
}

/// Runs the static discovery once so the selector is built before the first request.
fn ready<S>(lb: LoadBalancer<S>) -> LoadBalancer<S>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    // Static discovery completes without awaiting anything, so the future is
    // ready on first poll; should it ever not be, the pool starts empty and
    // every selection fails over, which is visible rather than silent.
    if lb.update().now_or_never().is_none() {
        tracing::error!("static discovery did not complete at once");
    }
    lb
}

/// All pools of one service plus its health registry.
pub struct ServicePools {
    pub registry: Arc<HealthRegistry>,
    /// Indexed by unit id; `None` where the service has no instance.
    pub by_unit: Vec<Option<Arc<UnitPool>>>,
    pub health_interval: Option<Duration>,
    /// The health config the registry checks with.
    health: unitgate_config::HealthCheck,
}

/// What a rebuild may reuse: the previous pools of the same service, with
/// the unit names their indices meant.
pub struct PrevPools<'a> {
    pub pools: &'a ServicePools,
    pub unit_names: &'a [Arc<str>],
}

impl ServicePools {
    /// Builds the pools of `service`. With `prev`, the health registry is
    /// kept when the health config is unchanged (instances keep their health),
    /// and a unit's pool is kept whole when its instances (weights and backups
    /// included), balancing and breaker config are unchanged; otherwise it is
    /// rebuilt with the live state of the instances that stay.
    pub fn build(service: &Service, unit_names: &[Arc<str>], prev: Option<PrevPools<'_>>) -> Self {
        let prev = prev.filter(|p| p.pools.health == service.health);
        let registry = match &prev {
            Some(p) => p.pools.registry.clone(),
            None => {
                let registry = Arc::new(HealthRegistry::new());
                if !matches!(service.health.kind, HealthKind::None) {
                    registry.set_health_check(crate::health::LocalAware::wrap(health_check(
                        service,
                        &service.health.kind,
                    )));
                }
                registry
            }
        };
        let health_interval =
            (!matches!(service.health.kind, HealthKind::None)).then_some(service.health.interval);
        let mut by_unit: Vec<Option<Arc<UnitPool>>> = unit_names.iter().map(|_| None).collect();
        for ui in &service.instances {
            // A unit whose instances are all names that never resolved.
            if ui.instances.is_empty() {
                continue;
            }
            let before = prev.as_ref().and_then(|p| {
                let old = p
                    .unit_names
                    .iter()
                    .position(|n| *n == unit_names[ui.unit])?;
                p.pools.by_unit.get(old)?.as_ref()
            });
            let unchanged = before.filter(|pool| {
                pool.instances == ui.instances
                    && pool.lb == service.lb
                    && pool.breaker_config == service.circuit_breaker
            });
            if let Some(slot) = by_unit.get_mut(ui.unit) {
                *slot = Some(match unchanged {
                    Some(pool) => pool.clone(),
                    None => Arc::new(UnitPool::new(
                        &ui.instances,
                        service,
                        &registry,
                        before.map(|p| &**p),
                    )),
                });
            }
        }
        ServicePools {
            registry,
            by_unit,
            health_interval,
            health: service.health.clone(),
        }
    }

    pub fn pool(&self, unit: UnitId) -> Option<&UnitPool> {
        self.by_unit.get(unit).and_then(|p| p.as_deref())
    }
}

/// The service's health check. Over TLS without `tls_sni` each instance is
/// checked under its own address as the name, as requests reach it.
fn health_check(
    service: &Service,
    kind: &HealthKind,
) -> Box<dyn pingora::lb::health_check::HealthCheck + Send + Sync> {
    match &service.tls {
        Some(t) if t.sni.is_empty() => Box::new(PerInstanceCheck {
            service: service.clone(),
            kind: kind.clone(),
            checks: std::sync::Mutex::new(std::collections::HashMap::new()),
        }),
        _ => check_for(service, kind, ""),
    }
}

/// A health check for `service`'s instances; `sni` when TLS has no `tls_sni`.
fn check_for(
    service: &Service,
    kind: &HealthKind,
    sni: &str,
) -> Box<dyn pingora::lb::health_check::HealthCheck + Send + Sync> {
    let h = &service.health;
    let upstream = crate::snapshot::Upstream::new(service);
    let sni = match &service.tls {
        Some(t) if !t.sni.is_empty() => t.sni.as_str(),
        Some(_) => sni,
        None => "",
    };
    match kind {
        HealthKind::Http { path } => {
            let host = if sni.is_empty() { "localhost" } else { sni };
            let mut hc = HttpHealthCheck::new(host, service.tls.is_some());
            // Same protocol and CA as the requests.
            let placeholder: SocketAddr = ([0, 0, 0, 0], 1).into();
            let mut template = upstream.peer(placeholder);
            template.sni = sni.to_owned();
            hc.peer_template = template;
            match path.parse() {
                Ok(uri) => hc.req.set_uri(uri),
                Err(e) => tracing::error!(service = %service.name, "health path {path:?}: {e}"),
            }
            if let Err(e) = hc.req.insert_header("user-agent", "unitgate-health") {
                tracing::warn!("health check header: {e}");
            }
            hc.peer_template.options.connection_timeout = Some(h.timeout);
            hc.peer_template.options.read_timeout = Some(h.timeout);
            hc.peer_template.options.write_timeout = Some(h.timeout);
            hc.consecutive_failure = h.unhealthy_after as usize;
            hc.consecutive_success = h.healthy_after as usize;
            Box::new(hc)
        }
        HealthKind::Tcp | HealthKind::None => {
            let mut hc = if service.tls.is_some() {
                TcpHealthCheck::new_tls(sni)
            } else {
                TcpHealthCheck::new()
            };
            hc.peer_template.options.ca = upstream.ca.clone();
            hc.peer_template.options.connection_timeout = Some(h.timeout);
            hc.consecutive_failure = h.unhealthy_after as usize;
            hc.consecutive_success = h.healthy_after as usize;
            hc
        }
    }
}

/// One check per instance, each verifying the instance under its own IP.
struct PerInstanceCheck {
    service: Service,
    kind: HealthKind,
    checks: std::sync::Mutex<
        std::collections::HashMap<
            String,
            Arc<dyn pingora::lb::health_check::HealthCheck + Send + Sync>,
        >,
    >,
}

impl PerInstanceCheck {
    fn of(
        &self,
        target: &Backend,
    ) -> Arc<dyn pingora::lb::health_check::HealthCheck + Send + Sync> {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let key = target.addr.to_string();
        let ip = target
            .addr
            .as_inet()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        checks
            .entry(key)
            .or_insert_with(|| Arc::from(check_for(&self.service, &self.kind, &ip)))
            .clone()
    }
}

#[async_trait::async_trait]
impl pingora::lb::health_check::HealthCheck for PerInstanceCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        self.of(target).check(target).await
    }

    fn health_threshold(&self, success: bool) -> usize {
        let h = &self.service.health;
        if success {
            h.healthy_after as usize
        } else {
            h.unhealthy_after as usize
        }
    }
}

#[cfg(test)]
mod tests;
