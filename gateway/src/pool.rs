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
use std::sync::Arc;
use std::time::Duration;
use unitgate_config::{HealthKind, LbPolicy, Service, UnitId};

/// The instances of one service in one unit.
pub struct UnitPool {
    pub unit: UnitId,
    pub addrs: Vec<SocketAddr>,
    balancer: Balancer,
    /// Bound for `select_with` walks: enough to visit every instance.
    max_iterations: usize,
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
}

impl UnitPool {
    fn new(
        unit: UnitId,
        addrs: &[SocketAddr],
        lb: LbPolicy,
        registry: &Arc<HealthRegistry>,
    ) -> Self {
        let backends: BTreeSet<Backend> = addrs
            .iter()
            .map(|a| Backend {
                addr: PeerAddr::Inet(*a),
                weight: 1,
                ext: Default::default(),
            })
            .collect();
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
            unit,
            addrs: addrs.to_vec(),
            balancer,
            max_iterations: addrs.len() * 2 + 1,
        }
    }

    /// Picks a ready (healthy and enabled) instance for which `accept` holds.
    pub fn select(&self, key: &[u8], accept: impl Fn(&SocketAddr) -> bool) -> Option<SocketAddr> {
        let n = self.max_iterations;
        let ok = |b: &Backend, ready: bool| ready && b.addr.as_inet().is_some_and(&accept);
        let chosen = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, n, ok),
            Balancer::Random(lb) => lb.select_with(key, n, ok),
            Balancer::Consistent(lb) => lb.select_with(key, n, ok),
        }?;
        chosen.addr.as_inet().copied()
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
    pub by_unit: Vec<Option<UnitPool>>,
    pub health_interval: Option<Duration>,
}

impl ServicePools {
    pub fn new(service: &Service, unit_count: usize) -> Self {
        let registry = Arc::new(HealthRegistry::new());
        let health_interval = match &service.health.kind {
            HealthKind::None => None,
            kind => {
                registry.set_health_check(health_check(service, kind));
                Some(service.health.interval)
            }
        };
        let mut by_unit: Vec<Option<UnitPool>> = (0..unit_count).map(|_| None).collect();
        for ui in &service.instances {
            if let Some(slot) = by_unit.get_mut(ui.unit) {
                *slot = Some(UnitPool::new(ui.unit, &ui.addrs, service.lb, &registry));
            }
        }
        ServicePools {
            registry,
            by_unit,
            health_interval,
        }
    }

    pub fn pool(&self, unit: UnitId) -> Option<&UnitPool> {
        self.by_unit.get(unit).and_then(Option::as_ref)
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
