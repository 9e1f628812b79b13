//! Per-(service, unit) instance pools on pingora-load-balancing.
//!
//! Each service has one [`HealthRegistry`] shared by its unit pools, so one
//! active check per instance feeds every pool that contains it, and a later
//! rebuild of a pool over the same registry keeps the instances' health.

use futures_util::FutureExt;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::{Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, HealthRegistry, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use unitgate_config::{HealthKind, LbPolicy, Service, UnitId};
use unitgate_plugins::breaker::CircuitBreaker;
use unitgate_plugins::outlier::InstanceHealth;

/// The instances of one service in one unit.
pub struct UnitPool {
    pub addrs: Vec<SocketAddr>,
    /// The config this pool was built from: a reload reuses the pool (and so
    /// its breaker and ejection state) when these are unchanged.
    lb: LbPolicy,
    breaker_config: Option<unitgate_config::CircuitBreaker>,
    /// Passive health (outlier ejection) per instance, in `addrs` order.
    pub passive: Vec<InstanceHealth>,
    /// The (service, unit) circuit, when the service configures one.
    pub breaker: Option<CircuitBreaker>,
    /// Attempts by outcome ([`Outcome`] order), for metrics.
    pub outcomes: [AtomicU64; 4],
    balancer: Balancer,
    /// Bound for `select_with` walks: enough to visit every instance.
    max_iterations: usize,
    /// `addrs` as pingora backends, for readiness lookups.
    backends: Vec<Backend>,
    /// Round-robin position.
    next: AtomicUsize,
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
}

impl UnitPool {
    fn new(addrs: &[SocketAddr], service: &Service, registry: &Arc<HealthRegistry>) -> Self {
        let lb = service.lb;
        let backends: BTreeSet<Backend> = addrs.iter().map(|a| backend(*a)).collect();
        let view =
            || Backends::new_with_health_registry(Static::new(backends.clone()), registry.clone());
        let balancer = match lb {
            LbPolicy::RoundRobin => {
                Balancer::RoundRobin(ready(LoadBalancer::from_backends(view())))
            }
            LbPolicy::Random => Balancer::Random(ready(LoadBalancer::from_backends(view()))),
            LbPolicy::ConsistentHash => {
                Balancer::Consistent(ready(LoadBalancer::from_backends(view())))
            }
        };
        UnitPool {
            addrs: addrs.to_vec(),
            lb,
            breaker_config: service.circuit_breaker.clone(),
            passive: addrs.iter().map(|_| InstanceHealth::default()).collect(),
            breaker: service.circuit_breaker.as_ref().map(CircuitBreaker::new),
            outcomes: Default::default(),
            balancer,
            max_iterations: addrs.len() * 2 + 1,
            backends: addrs.iter().map(|a| backend(*a)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Picks a ready (healthy, not ejected) instance for which `accept` holds.
    ///
    /// Round robin and random walk `addrs` from their start position here:
    /// pingora's `select_with` (an iterator with a uniqueness set, a backend
    /// clone per step) cost more than the rest of choosing an upstream.
    /// Consistent hashing keeps pingora's ring.
    pub fn select(
        &self,
        key: &[u8],
        now_ms: u64,
        accept: impl Fn(&SocketAddr) -> bool,
    ) -> Option<SocketAddr> {
        let n = self.addrs.len();
        let (start, health) = match &self.balancer {
            Balancer::Consistent(lb) => {
                let ok = |b: &Backend, ready: bool| {
                    ready
                        && b.addr
                            .as_inet()
                            .is_some_and(|a| accept(a) && !self.is_ejected(a, now_ms))
                };
                let chosen = lb.select_with(key, self.max_iterations, ok)?;
                return chosen.addr.as_inet().copied();
            }
            _ if n == 0 => return None,
            Balancer::RoundRobin(lb) => (self.next.fetch_add(1, Ordering::Relaxed), lb.backends()),
            Balancer::Random(lb) => (fastrand::usize(..n), lb.backends()),
        };
        (0..n).map(|i| (start + i) % n).find_map(|i| {
            let addr = &self.addrs[i];
            let usable = accept(addr)
                && !self.passive[i].is_ejected(now_ms)
                && health.ready(&self.backends[i]);
            usable.then_some(*addr)
        })
    }

    /// Passive health of an instance of this pool.
    pub fn passive(&self, addr: &SocketAddr) -> Option<&InstanceHealth> {
        self.addrs
            .iter()
            .position(|a| a == addr)
            .map(|i| &self.passive[i])
    }

    pub fn is_ejected(&self, addr: &SocketAddr, now_ms: u64) -> bool {
        self.passive(addr).is_some_and(|h| h.is_ejected(now_ms))
    }

    /// Whether the instance passes its active health check (true when unchecked).
    pub fn is_healthy(&self, addr: &SocketAddr) -> bool {
        let backends = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Random(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        };
        backends
            .get_backend()
            .iter()
            .find(|b| b.addr.as_inet() == Some(addr))
            .is_some_and(|b| backends.ready(b))
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
    /// and a unit's pool is kept whole — breaker and ejection state included —
    /// when its instances, balancing and breaker config are unchanged.
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
            let reused = prev.as_ref().and_then(|p| {
                let old = p
                    .unit_names
                    .iter()
                    .position(|n| *n == unit_names[ui.unit])?;
                let pool = p.pools.by_unit.get(old)?.as_ref()?;
                (pool.addrs == ui.addrs
                    && pool.lb == service.lb
                    && pool.breaker_config == service.circuit_breaker)
                    .then(|| pool.clone())
            });
            if let Some(slot) = by_unit.get_mut(ui.unit) {
                *slot = Some(
                    reused
                        .unwrap_or_else(|| Arc::new(UnitPool::new(&ui.addrs, service, &registry))),
                );
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

fn health_check(
    service: &Service,
    kind: &HealthKind,
) -> Box<dyn pingora::lb::health_check::HealthCheck + Send + Sync> {
    let h = &service.health;
    match kind {
        HealthKind::Http { path } => {
            let mut hc = HttpHealthCheck::new("localhost", false);
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
            let mut hc = TcpHealthCheck::new();
            hc.peer_template.options.connection_timeout = Some(h.timeout);
            hc.consecutive_failure = h.unhealthy_after as usize;
            hc.consecutive_success = h.healthy_after as usize;
            hc
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(lb: &str) -> Arc<UnitPool> {
        let text = format!(
            r#"
[gateway]
unit = "A"
listen = ["127.0.0.1:1"]
[routing]
allow_empty_routes = true
[[units]]
name = "A"
slots = ["0-9999"]
[[services]]
name = "s"
lb = "{lb}"
[services.instances]
A = ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"]
"#
        );
        let config =
            unitgate_config::parse(&text, std::path::Path::new(".")).expect("valid config");
        let pools = ServicePools::build(&config.services[0], &[Arc::from("A")], None);
        Arc::new(UnitPool::new(
            &config.services[0].instances[0].addrs,
            &config.services[0],
            &pools.registry,
        ))
    }

    fn port(a: Option<SocketAddr>) -> u16 {
        a.map_or(0, |a| a.port())
    }

    #[test]
    fn round_robin_visits_every_instance_in_turn_and_skips_refused() {
        let p = pool("round_robin");
        let picks: Vec<u16> = (0..6).map(|_| port(p.select(b"", 0, |_| true))).collect();
        assert_eq!(picks[..3], picks[3..], "a cycle: {picks:?}");
        let mut cycle = picks[..3].to_vec();
        cycle.sort_unstable();
        assert_eq!(cycle, [1001, 1002, 1003]);
        for _ in 0..6 {
            assert_ne!(port(p.select(b"", 0, |a| a.port() != 1002)), 1002);
        }
        assert_eq!(p.select(b"", 0, |_| false), None);
    }

    #[test]
    fn ejected_instances_are_skipped_by_every_policy() {
        for lb in ["round_robin", "random", "consistent_hash"] {
            let p = pool(lb);
            let cfg = unitgate_config::Outlier {
                consecutive_failures: 1,
                eject: Duration::from_secs(30),
            };
            let ejected = p.passive[1].record(&cfg, 0, false, || true);
            assert!(ejected.is_some(), "{lb}: ejected");
            for i in 0..20u8 {
                let got = port(p.select(&[i], 1, |_| true));
                assert!(got == 1001 || got == 1003, "{lb}: picked {got}");
            }
        }
    }
}
