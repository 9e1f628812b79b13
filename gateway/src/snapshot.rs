//! The running configuration as one immutable value, swapped whole.
//!
//! A [`Snapshot`] holds everything the request path reads, precomputed at
//! config load: the route table, each service's unit pools, and for every
//! (service, starting unit) the ordered list of units a request may be served
//! from. Requests load it once (an `Arc` clone) and finish on it even if a
//! newer one is swapped in meanwhile.

use crate::pool::ServicePools;
use crate::router::Router;
use arc_swap::ArcSwap;
use std::sync::Arc;
use unitgate_config::{Config, Placement, ServiceId, UnitId, UnitState};

pub struct Snapshot {
    pub config: Config,
    pub router: Router,
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
    /// Instances over all units, the bound on connect-failure retries.
    pub instance_count: usize,
}

impl Snapshot {
    pub fn build(config: Config) -> Self {
        let router = Router::new(&config.routes);
        let services = config
            .services
            .iter()
            .map(|svc| {
                let pools = ServicePools::new(svc, config.units.len());
                let candidates = (0..config.units.len())
                    .map(|start| candidate_units(&config, &pools, start))
                    .collect();
                ServiceState {
                    pools,
                    candidates,
                    instance_count: svc.instances.iter().map(|u| u.addrs.len()).sum(),
                }
            })
            .collect();
        let unit_names = config
            .units
            .iter()
            .map(|u| Arc::from(u.name.as_str()))
            .collect();
        Snapshot {
            config,
            router,
            services,
            unit_names,
        }
    }

    /// The unit a route's placement points at, before failover.
    pub fn placement_unit(&self, placement: Placement) -> UnitId {
        match placement {
            Placement::Unit(u) => u,
            // Sharded placement needs the routing key; until unit routing
            // resolves it, it is served like `local`.
            Placement::Local | Placement::Sharded => self.config.gateway.unit,
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
