//! Read-only views of live state for the admin API: instance health, ejection,
//! circuits and counters. Built on demand, never on the request path.

use crate::clock;
use crate::pool::Outcome;
use crate::snapshot::Snapshot;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use unitgate_plugins::breaker::State;
use unitgate_plugins::fallback::Reason;

/// `GET /admin/v1/health`: every (service, unit) with its circuit, attempt
/// counts and instances (active health, ejection), plus degraded counts per route.
pub fn health(snap: &Snapshot) -> Value {
    let now = clock::now_ms();
    let services: Vec<Value> = snap
        .config
        .services
        .iter()
        .zip(&snap.services)
        .map(|(conf, state)| {
            let units: Vec<Value> = state
                .pools
                .by_unit
                .iter()
                .enumerate()
                .filter_map(|(unit, pool)| pool.as_ref().map(|p| (unit, p)))
                .map(|(unit, pool)| {
                    let circuit = match pool.breaker.as_ref().map(|b| b.state(now)) {
                        None => "none",
                        Some(State::Closed) => "closed",
                        Some(State::Open) => "open",
                        Some(State::HalfOpen) => "half_open",
                    };
                    let instances: Vec<Value> = pool
                        .addrs
                        .iter()
                        .map(|a| {
                            json!({"instance": a.to_string(), "healthy": pool.is_healthy(a),
                                   "ejected": pool.is_ejected(a, now),
                                   "weight": pool.weight(a), "backup": pool.is_backup(a),
                                   "in_flight": pool.in_flight(a)})
                        })
                        .collect();
                    let attempts: serde_json::Map<String, Value> = Outcome::ALL
                        .iter()
                        .map(|o| (o.as_str().to_owned(), pool.outcome_count(*o).into()))
                        .collect();
                    json!({"unit": &*snap.unit_names[unit], "circuit": circuit,
                           "attempts": attempts, "instances": instances})
                })
                .collect();
            json!({"service": conf.name, "units": units})
        })
        .collect();
    let routes: Vec<Value> = snap
        .config
        .routes
        .iter()
        .zip(&snap.routes)
        .map(|(conf, state)| {
            let degraded: serde_json::Map<String, Value> = Reason::ALL
                .iter()
                .map(|r| {
                    let n = state.counters.degraded[r.index()].load(Ordering::Relaxed);
                    (r.as_str().to_owned(), n.into())
                })
                .collect();
            json!({"route": conf.name, "inflight": state.counters.inflight.load(Ordering::Relaxed),
                   "degraded": degraded})
        })
        .collect();
    json!({"services": services, "routes": routes})
}
