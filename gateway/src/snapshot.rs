//! The running configuration as one immutable value, swapped whole.
//!
//! A [`Snapshot`] holds everything the request path reads, precomputed at
//! config load: the route table, each service's unit pools, and for every
//! (service, starting unit) the ordered list of units a request may be served
//! from. Requests load it once (an `Arc` clone) and finish on it even if a
//! newer one is swapped in meanwhile.

use crate::limits::Limiter;
use crate::metrics::RequestStats;
use crate::pool::{PrevPools, ServicePools};
use crate::proxy::forward::HeaderValues;
use crate::router::Router;
use crate::split::RouteSplits;
use crate::unit::UnitRouting;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use unitgate_config::{Config, Outlier, ServiceId, UnitId, UnitState};
use unitgate_plugins::breaker::State as BreakerState;
use unitgate_plugins::fallback::{FallbackResponse, Reason};
use unitgate_plugins::jwt::Verifier;
use unitgate_plugins::ratelimit::global::GlobalLimits;

pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    pub unit: UnitRouting,
    pub services: Vec<ServiceState>,
    /// JWT verifiers, in `config.jwt` order (keys parsed at load).
    pub jwt: Vec<Verifier>,
    /// The Redis of global limits, when configured; kept across reloads
    /// while `[redis]` is unchanged.
    pub redis: Option<Arc<GlobalLimits>>,
    /// Per route, in route order.
    pub routes: Vec<RouteState>,
    /// Unit names, indexed by unit id.
    pub unit_names: Vec<Arc<str>>,
    /// Ready values of the headers the proxy adds.
    pub headers: HeaderValues,
    /// The TLS listeners' server config (certificates by SNI); `None`
    /// without `[tls]`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where sampled requests' spans go; `None` without `[tracing]`.
    pub tracing: Option<Arc<crate::otlp::Target>>,
}

/// Run-time state of one route.
pub struct RouteState {
    pub fallback: Option<FallbackResponse>,
    /// The route's rate limits, in config order.
    pub limiters: Vec<Limiter>,
    /// Kept across reloads while the route keeps its name.
    pub counters: Arc<RouteCounters>,
    /// Gray release tables; `None` for a route without splits.
    pub splits: Option<RouteSplits>,
}

/// A route's live counters.
pub struct RouteCounters {
    /// Requests of this route between routing and the end of the request.
    pub inflight: AtomicU32,
    /// Degraded responses by reason ([`Reason::index`]).
    pub degraded: [AtomicU64; Reason::ALL.len()],
    pub write_forbidden: AtomicU64,
    /// Refused by a rate limit: [local, global].
    pub rate_limited: [AtomicU64; 2],
    /// Requests by code and units, durations (unit indices of the snapshot
    /// they were made for: kept only while the unit list is unchanged).
    pub requests: RequestStats,
}

impl RouteCounters {
    fn new(units: usize) -> Self {
        RouteCounters {
            inflight: AtomicU32::new(0),
            degraded: Default::default(),
            write_forbidden: AtomicU64::new(0),
            rate_limited: Default::default(),
            requests: RequestStats::new(units),
        }
    }
}

impl RouteState {
    pub fn count_degraded(&self, reason: Reason) {
        self.counters.degraded[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

pub struct ServiceState {
    /// How instances are reached: protocol and TLS.
    pub upstream: Upstream,
    pub pools: ServicePools,
    pub outlier: Option<Outlier>,
    /// `candidates[start]`: the units to try, in order, for a request whose
    /// placement unit is `start`: `start` then its failover list, without units
    /// that are down or draining or have no instance of this service.
    pub candidates: Vec<Box<[UnitId]>>,
    /// For hop-limited requests: this gateway's unit only, if usable.
    pub local_only: Box<[UnitId]>,
    /// Instances over all units, the bound on connect-failure retries.
    pub instance_count: usize,
    /// Crossings by (placement unit, served unit), `from * units + to`;
    /// kept across reloads while the unit list is unchanged.
    crossings: Arc<[AtomicU64]>,
}

/// A service's protocol and TLS to its instances, ready to stamp on each
/// attempt's peer.
pub struct Upstream {
    pub protocol: unitgate_config::Protocol,
    pub tls: bool,
    /// `tls_sni`; empty = the instance's IP address.
    pub sni: String,
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
}

impl Upstream {
    pub fn new(svc: &unitgate_config::Service) -> Self {
        let ca = svc.tls.as_ref().and_then(|t| t.ca.as_ref()).map(|ders| {
            let certs: Vec<pingora::utils::tls::WrappedX509> = ders
                .iter()
                .map(|d| {
                    pingora::utils::tls::WrappedX509::new(
                        d.clone(),
                        pingora::utils::tls::parse_x509,
                    )
                })
                .collect();
            Arc::from(certs.into_boxed_slice())
        });
        Upstream {
            protocol: svc.protocol,
            tls: svc.tls.is_some(),
            sni: svc.tls.as_ref().map(|t| t.sni.clone()).unwrap_or_default(),
            ca,
        }
    }

    /// An attempt's peer at `addr` with this service's protocol and TLS.
    pub fn peer(&self, addr: std::net::SocketAddr) -> pingora::prelude::HttpPeer {
        use unitgate_config::Protocol;
        let sni = match (self.tls, self.sni.is_empty()) {
            (false, _) => String::new(),
            (true, true) => addr.ip().to_string(),
            (true, false) => self.sni.clone(),
        };
        let mut peer = pingora::prelude::HttpPeer::new(addr, self.tls, sni);
        peer.options.ca = self.ca.clone();
        match self.protocol {
            Protocol::Http1 => peer.options.set_http_version(1, 1),
            Protocol::H2 | Protocol::H2c => peer.options.set_http_version(2, 2),
        }
        peer
    }
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
    /// `candidates[from..]`: healthy, not ejected, in a unit whose circuit is
    /// not open.
    pub fn any_ready(
        &self,
        candidates: &[UnitId],
        from: usize,
        now_ms: u64,
        usable: impl Fn(&SocketAddr) -> bool,
    ) -> bool {
        candidates.iter().skip(from).any(|&u| {
            self.pools.pool(u).is_some_and(|p| {
                let open = p
                    .breaker
                    .as_ref()
                    .is_some_and(|b| b.state(now_ms) == BreakerState::Open);
                !open
                    && p.addrs
                        .iter()
                        .any(|a| usable(a) && p.is_healthy(a) && !p.is_ejected(a, now_ms))
            })
        })
    }

    /// Whether one more instance may be ejected: never the last un-ejected
    /// instance of the service, over all its units.
    pub fn may_eject(&self, now_ms: u64) -> bool {
        let ejected = self
            .pools
            .by_unit
            .iter()
            .flatten()
            .flat_map(|p| p.passives())
            .filter(|h| h.is_ejected(now_ms))
            .count();
        ejected + 1 < self.instance_count
    }

    /// Every non-zero crossing count as (from, to, count).
    pub fn crossing_counts(&self) -> Vec<(UnitId, UnitId, u64)> {
        let units = self.candidates.len();
        self.crossings
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then(|| (i / units, i % units, n))
            })
            .collect()
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
    /// Builds a snapshot from `config`. With `prev` (a reload), long-lived
    /// state is carried over by stable names: health registries, unit pools
    /// with their breakers and ejections (see [`ServicePools::build`]), route
    /// counters by route name, crossing counts while the units are the same.
    ///
    /// Fails (with every error) when a JWT key cannot be parsed: the one part
    /// of validation that needs the crypto libraries, so it is not in the
    /// config crate.
    pub fn build(mut config: Config, prev: Option<&Snapshot>) -> Result<Self, Vec<String>> {
        crate::dns::expand(&mut config);
        let jwt = verifiers(&config)?;
        let tls = match &config.tls {
            Some(t) => Some(crate::tls::server_config(t).map_err(|e| vec![e])?),
            None => None,
        };
        let router = Router::new(&config.routes);
        let unit_names: Vec<Arc<str>> = config
            .units
            .iter()
            .map(|u| Arc::from(u.name.as_str()))
            .collect();
        let units = unit_names.len();
        let same_units = prev.is_some_and(|p| p.unit_names == unit_names);
        let services = config
            .services
            .iter()
            .map(|svc| {
                let before = prev.and_then(|p| {
                    let id = p.config.service_id(&svc.name)?;
                    Some((p, &p.services[id]))
                });
                let pools = ServicePools::build(
                    svc,
                    &unit_names,
                    before.map(|(p, s)| PrevPools {
                        pools: &s.pools,
                        unit_names: &p.unit_names,
                    }),
                );
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
                let crossings = match before {
                    Some((_, s)) if same_units => s.crossings.clone(),
                    _ => (0..units * units).map(|_| AtomicU64::new(0)).collect(),
                };
                ServiceState {
                    upstream: Upstream::new(svc),
                    pools,
                    outlier: svc.outlier.clone(),
                    candidates,
                    local_only,
                    instance_count: svc.instances.iter().map(|u| u.instances.len()).sum(),
                    crossings,
                }
            })
            .collect();
        let redis = config.redis.as_ref().and_then(|cfg| {
            let kept = prev
                .and_then(|p| p.redis.clone())
                .filter(|r| r.config() == cfg);
            kept.or_else(|| match GlobalLimits::new(cfg) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!("global limits disabled: {e}");
                    None
                }
            })
        });
        // The previous snapshot's route states by name: one lookup per route
        // (a search per route made a 10 000-route reload take a second).
        let prev_routes: HashMap<&str, &RouteState> = prev
            .map(|p| {
                let names = p.config.routes.iter().map(|r| r.name.as_str());
                names.zip(&p.routes).collect()
            })
            .unwrap_or_default();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let before = prev_routes.get(r.name.as_str());
                RouteState {
                    fallback: r.fallback.as_ref().map(FallbackResponse::new),
                    limiters: Limiter::build_all(
                        r,
                        redis.as_deref(),
                        before.map(|b| b.limiters.as_slice()),
                    ),
                    counters: before
                        .filter(|_| same_units)
                        .map(|b| b.counters.clone())
                        .unwrap_or_else(|| Arc::new(RouteCounters::new(units))),
                    splits: RouteSplits::build(&config, r, before.and_then(|b| b.splits.as_ref())),
                }
            })
            .collect();
        let tracing = config.tracing.as_ref().map(|t| {
            let unit = config
                .units
                .get(config.gateway.unit)
                .map_or("", |u| u.name.as_str());
            Arc::new(crate::otlp::Target::new(t, unit))
        });
        Ok(Snapshot {
            unit: UnitRouting::new(&config),
            headers: HeaderValues::new(&config),
            config,
            router,
            services,
            jwt,
            redis,
            routes,
            unit_names,
            tls,
            tracing,
        })
    }

    pub fn service(&self, id: ServiceId) -> &ServiceState {
        &self.services[id]
    }
}

/// Parses every JWT verifier's keys; `unitgate check` calls this too.
pub fn verifiers(config: &Config) -> Result<Vec<Verifier>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for v in &config.jwt {
        match Verifier::new(v) {
            Ok(verifier) => out.push(verifier),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
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
