//! The running configuration as one immutable value, swapped whole.
//!
//! A [`Snapshot`] holds everything the request path reads, precomputed at
//! config load: the route table, each service's unit pools, and for every
//! (service, starting unit) the ordered list of units a request may be served
//! from. Requests load it once (an `Arc` clone) and finish on it even if a
//! newer one is swapped in meanwhile.

use crate::pool::ServicePools;
use crate::router::Router;
use crate::unit::UnitRouting;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use unitgate_config::{Config, ServiceId, UnitId, UnitState};

pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    pub unit: UnitRouting,
    pub services: Vec<ServiceState>,
    /// Unit names as `HeaderValue`-ready strings, indexed by unit id.
    pub unit_names: Vec<Arc<str>>,
}

pub struct ServiceState {
    pub pools: ServicePools,
    /// `candidates[start]`: the units to try, in order, for a request whose
    /// placement unit is `start`: `start` then its failover list, without units
    /// that are down or draining or have no instance of this service.
    pub candidates: Vec<Box<[UnitId]>>,
    /// For hop-limited requests: this gateway's unit only, if usable.
    pub local_only: Box<[UnitId]>,
    /// Instances over all units, the bound on connect-failure retries.
    pub instance_count: usize,
    /// Crossings by (placement unit, served unit), `from * units + to`.
    crossings: Box<[AtomicU64]>,
}

impl ServiceState {
    /// The units a request may be served from, in order.
    pub fn candidates_for(&self, placement: UnitId, hop_limited: bool) -> &[UnitId] {
        if hop_limited {
            &self.local_only
        } else {
            &self.candidates[placement]
        }
    }

    /// Whether a ready instance for which `usable` holds is left in
    /// `candidates[from..]`.
    pub fn any_ready(
        &self,
        candidates: &[UnitId],
        from: usize,
        usable: impl Fn(&SocketAddr) -> bool,
    ) -> bool {
        candidates.iter().skip(from).any(|&u| {
            self.pools
                .pool(u)
                .is_some_and(|p| p.addrs.iter().any(|a| usable(a) && p.is_healthy(a)))
        })
    }

    /// Counts a crossing; returns the count so far for this pair.
    pub fn count_crossing(&self, from: UnitId, to: UnitId) -> u64 {
        let units = self.candidates.len();
        self.crossings
            .get(from * units + to)
            .map_or(0, |c| c.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

impl Snapshot {
    pub fn build(config: Config) -> Self {
        let router = Router::new(&config.routes);
        let services = config
            .services
            .iter()
            .map(|svc| {
                let pools = ServicePools::new(svc, config.units.len());
                let units = config.units.len();
                let candidates = (0..units)
                    .map(|start| candidate_units(&config, &pools, start))
                    .collect();
                let own = config.gateway.unit;
                let local_only: Box<[UnitId]> =
                    if config.units[own].state == UnitState::Active && pools.pool(own).is_some() {
                        Box::new([own])
                    } else {
                        Box::new([])
                    };
                ServiceState {
                    pools,
                    candidates,
                    local_only,
                    instance_count: svc.instances.iter().map(|u| u.addrs.len()).sum(),
                    crossings: (0..units * units).map(|_| AtomicU64::new(0)).collect(),
                }
            })
            .collect();
        let unit_names = config
            .units
            .iter()
            .map(|u| Arc::from(u.name.as_str()))
            .collect();
        Snapshot {
            unit: UnitRouting::new(&config),
            config,
            router,
            services,
            unit_names,
        }
    }

    pub fn service(&self, id: ServiceId) -> &ServiceState {
        &self.services[id]
    }
}

fn candidate_units(config: &Config, pools: &ServicePools, start: UnitId) -> Box<[UnitId]> {
    let usable = |u: UnitId| config.units[u].state == UnitState::Active && pools.pool(u).is_some();
    let mut out = Vec::with_capacity(1 + config.units[start].failover.len());
    for u in std::iter::once(start).chain(config.units[start].failover.iter().copied()) {
        if usable(u) && !out.contains(&u) {
            out.push(u);
        }
    }
    out.into_boxed_slice()
}

/// The swappable handle every component reads the current snapshot through.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;
