//! Rate limits on the request path (DESIGN.md step 6): each route's limits,
//! built at config load, checked in order; the first refusal answers 429.
//!
//! Local limits keep their buckets across reloads while the limit is
//! unchanged; global limits go through the shared Redis client, and while
//! Redis is down `on_failure` decides: `local` (a local limiter at
//! rate / fleet_size), `open` (admit) or `closed` (refuse).

use crate::snapshot::{SharedSnapshot, Snapshot};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use unitgate_config::{LimitKey, LimitScope, OnFailure, RateLimit, Route};
use unitgate_plugins::ratelimit::global::GlobalLimits;
use unitgate_plugins::ratelimit::lease::{self, Leases};
use unitgate_plugins::ratelimit::local::LocalLimiter;
use unitgate_plugins::ratelimit::{Shape, Verdict};

/// One configured limit of a route, ready to check.
pub struct Limiter {
    pub config: RateLimit,
    pub shape: Shape,
    /// The limiter for a local limit; for a global one, the local share used
    /// while Redis is down with `on_failure = "local"`.
    pub local: Option<Arc<LocalLimiter>>,
    /// `unitgate:rl:<route>:<index>:` — the Redis key prefix of a global limit.
    pub redis_prefix: String,
    /// A global limit's token leases (kept across reloads while the limit
    /// and the fleet size are unchanged).
    pub leases: Option<Arc<Leases>>,
}

impl Limiter {
    /// Builds the limits of `route`, reusing `prev`'s local buckets for
    /// limits that did not change.
    pub fn build_all(
        route: &Route,
        redis: Option<&GlobalLimits>,
        prev: Option<&[Limiter]>,
    ) -> Vec<Limiter> {
        route
            .rate_limits
            .iter()
            .enumerate()
            .map(|(i, limit)| {
                let keyed = !matches!(limit.key, LimitKey::Route);
                let fleet = match (limit.scope, redis) {
                    (LimitScope::Global, Some(r)) if r.on_failure == OnFailure::Local => {
                        Some(r.fleet_size)
                    }
                    (LimitScope::Global, _) => None,
                    (LimitScope::Local, _) => Some(1),
                };
                let shape = Shape::new(limit.rate, limit.burst, 1);
                let reused = prev
                    .and_then(|p| p.get(i))
                    .filter(|p| p.config == *limit && p.local.is_some() == fleet.is_some())
                    .and_then(|p| p.local.clone());
                let local = reused.or_else(|| {
                    fleet.map(|f| {
                        Arc::new(LocalLimiter::new(
                            Shape::new(limit.rate, limit.burst, f),
                            keyed,
                        ))
                    })
                });
                let leases = match (limit.scope, redis) {
                    (LimitScope::Global, Some(r)) => {
                        let kept = prev
                            .and_then(|p| p.get(i))
                            .filter(|p| p.config == *limit)
                            .and_then(|p| p.leases.clone())
                            .filter(|l| l.batch == lease::batch_for(shape, r.fleet_size));
                        Some(kept.unwrap_or_else(|| Leases::new(shape, r.fleet_size)))
                    }
                    _ => None,
                };
                Limiter {
                    config: limit.clone(),
                    shape,
                    local,
                    redis_prefix: format!("unitgate:rl:{}:{i}:", route.name),
                    leases,
                }
            })
            .collect()
    }
}

/// What a request is keyed by, for its limits.
pub struct LimitInput<'a> {
    pub routing_key: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub header: &'a (dyn Fn(&str) -> Option<String> + Sync),
}

fn key_of(limit: &RateLimit, input: &LimitInput<'_>) -> String {
    let ip = || input.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    match &limit.key {
        LimitKey::User => input.routing_key.map_or_else(ip, str::to_owned),
        LimitKey::Ip => ip(),
        LimitKey::Route => String::new(),
        LimitKey::Header(name) => (input.header)(name).unwrap_or_default(),
    }
}

/// The outcome of a route's limits for one request.
pub enum Checked {
    /// Admitted; the verdict with the least room left, for `RateLimit-*`.
    Admitted(Option<Verdict>),
    /// Refused by this limit.
    Refused(Verdict, LimitScope),
}

/// Checks `limits` in order; the first refusal wins.
pub async fn check(snap: &Snapshot, limits: &[Limiter], input: &LimitInput<'_>) -> Checked {
    let mut tightest: Option<Verdict> = None;
    for limit in limits {
        let key = key_of(&limit.config, input);
        let verdict = match limit.config.scope {
            LimitScope::Local => match &limit.local {
                Some(l) => l.check(&key),
                None => continue,
            },
            LimitScope::Global => {
                let redis = snap.redis.as_ref();
                let answer = match (redis, &limit.leases) {
                    (Some(r), Some(leases)) => {
                        leases
                            .check(r, &limit.redis_prefix, &key, limit.shape)
                            .await
                    }
                    (Some(r), None) => {
                        r.check(&format!("{}{key}", limit.redis_prefix), limit.shape)
                            .await
                    }
                    (None, _) => None,
                };
                match (answer, redis.map(|r| r.on_failure)) {
                    (Some(v), _) => v,
                    (None, Some(OnFailure::Open) | None) => Verdict::open(limit.shape.limit),
                    (None, Some(OnFailure::Closed)) => Verdict::closed(limit.shape.limit),
                    (None, Some(OnFailure::Local)) => match &limit.local {
                        Some(l) => l.check(&key),
                        None => Verdict::open(limit.shape.limit),
                    },
                }
            }
        };
        if !verdict.allowed {
            return Checked::Refused(verdict, limit.config.scope);
        }
        if tightest.is_none_or(|t| verdict.remaining < t.remaining) {
            tightest = Some(verdict);
        }
    }
    Checked::Admitted(tightest)
}

/// Background upkeep: probes Redis (often while it is down, so it is back in
/// use soon after it answers) and evicts idle rate-limit keys.
pub struct LimitsService(pub SharedSnapshot);

const PROBE_DOWN: Duration = Duration::from_millis(250);
const PROBE_UP: Duration = Duration::from_secs(2);
const EVICT_EVERY: Duration = Duration::from_secs(10);

#[async_trait]
impl BackgroundService for LimitsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut since_evict = Duration::ZERO;
        loop {
            let snap = self.0.load_full();
            let wait = match &snap.redis {
                Some(r) => {
                    r.probe().await;
                    if r.is_up() {
                        PROBE_UP
                    } else {
                        PROBE_DOWN
                    }
                }
                None => PROBE_UP,
            };
            since_evict += wait;
            if since_evict >= EVICT_EVERY {
                since_evict = Duration::ZERO;
                let keys: usize = snap
                    .routes
                    .iter()
                    .flat_map(|r| r.limiters.iter())
                    .filter_map(|l| l.local.as_ref())
                    .map(|l| l.evict_idle())
                    .sum();
                tracing::debug!(keys, "rate-limit keys after evicting idle ones");
            }
            drop(snap);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
