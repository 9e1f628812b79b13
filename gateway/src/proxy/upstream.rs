//! Choosing the upstream: candidate units in order (skipping open circuits), a
//! ready instance inside each (healthy, not ejected, not yet tried; primaries
//! first, then the unit's backups), outcome
//! recording for ejection and breakers, and the retry rules of DESIGN.md
//! "Failover and retries".

use super::ctx::{Failure, RequestCtx};
use super::{request, snapshot_of};
use crate::clock;
use crate::pool::Outcome;
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use unitgate_plugins::breaker::Admission;

/// No candidate unit has an instance left to try.
pub const NO_INSTANCE: ErrorType = ErrorType::Custom("no_instance");

/// Walks the candidate units from where the last pick left off and takes a
/// ready instance not yet tried. Counts and logs a crossing when the unit is
/// not the placement unit.
pub fn pick_peer(ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    let snap = snapshot_of(&ctx.snapshot)?;
    let (Some(rc), Some(unit)) = (&ctx.route, &ctx.unit) else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "request has no route",
        ));
    };
    let route = &snap.config.routes[rc.id];
    let svc = snap.service(rc.service);
    let svc_conf = &snap.config.services[rc.service];
    let now = clock::now_ms();
    let attempts = &mut ctx.attempts;
    // The previous attempt, if any, is over: it no longer loads its instance.
    attempts.in_flight = None;
    let candidates = svc.candidates_for(unit.placement, unit.hop_limited);
    for (pos, &u) in candidates.iter().enumerate().skip(attempts.unit_pos) {
        let Some(pool) = svc.pools.pool(u) else {
            continue;
        };
        let admission = pool
            .breaker
            .as_ref()
            .map_or(Admission::Allowed, |b| b.admit(now));
        if admission == Admission::Rejected {
            attempts.circuit_skipped = true;
            continue;
        }
        let tried = &attempts.tried;
        // Primaries, then the unit's backups, before the next unit.
        let Some(i) = pool.pick(&rc.hash_key, now, |a| !tried.contains(a)) else {
            if admission == Admission::Probe {
                if let Some(b) = &pool.breaker {
                    b.release_probe();
                }
            }
            continue;
        };
        let addr = pool.addrs[i];
        attempts.in_flight = pool.start_attempt(i);
        attempts.unit_pos = pos;
        attempts.current = Some((u, addr));
        attempts.probe = admission == Admission::Probe;
        attempts.recorded = false;
        attempts.count += 1;
        if u != unit.placement && attempts.crossed_to != Some(u) {
            attempts.crossed_to = Some(u);
            let n = svc.count_crossing(unit.placement, u);
            let (from, to) = (&snap.unit_names[unit.placement], &snap.unit_names[u]);
            // Every crossing is counted; the log line thins out as they
            // repeat (1st, 2nd, 4th, 8th...) so a failover cannot flood it.
            if n.is_power_of_two() {
                tracing::info!(service = %svc_conf.name, %from, %to, count = n, "crossing");
            } else {
                tracing::debug!(service = %svc_conf.name, %from, %to, count = n, "crossing");
            }
        }
        // The route's timeout bounds the attempt: connecting, and waiting for
        // the response header (and for each read of the body after it).
        let mut peer: HttpPeer = svc.upstream.peer(addr);
        peer.options.connection_timeout = Some(svc_conf.connect_timeout.min(route.timeout));
        peer.options.read_timeout = Some(svc_conf.read_timeout.min(route.timeout));
        peer.options.write_timeout = Some(svc_conf.read_timeout.min(route.timeout));
        return Ok(Box::new(peer));
    }
    Err(Error::explain(
        NO_INSTANCE,
        "no ready instance in any candidate unit",
    ))
}

/// Feeds the current attempt's outcome to outlier ejection and the circuit
/// breaker, once per attempt.
pub fn record(ctx: &mut RequestCtx, failure: Option<Failure>) {
    let (Some(snap), Some(rc)) = (&ctx.snapshot, &ctx.route) else {
        return;
    };
    let a = &mut ctx.attempts;
    let Some((unit, addr)) = a.current else {
        return;
    };
    if a.recorded {
        return;
    }
    a.recorded = true;
    if failure.is_some() {
        a.last_failure = failure;
    }
    let service = rc.service;
    let svc = snap.service(service);
    let Some(pool) = svc.pools.pool(unit) else {
        return;
    };
    let now = clock::now_ms();
    let ok = failure.is_none();
    pool.count(match failure {
        None => Outcome::Ok,
        Some(Failure::Connect) => Outcome::ConnectError,
        Some(Failure::Timeout) => Outcome::Timeout,
        Some(Failure::Error) => Outcome::Error,
    });
    let name = &snap.config.services[service].name;
    if let (Some(cfg), Some(h)) = (&svc.outlier, pool.passive(&addr)) {
        if let Some(ms) = h.record(cfg, now, ok, || svc.may_eject(now)) {
            tracing::warn!(service = %name, instance = %addr, eject_ms = ms, "instance ejected");
        }
    }
    if let Some(b) = &pool.breaker {
        if let Some(state) = b.record(now, ok, a.probe) {
            let unit = &snap.unit_names[unit];
            tracing::warn!(service = %name, %unit, ?state, "circuit");
        }
    }
}

/// Whether a request that may have reached a backend can be sent again:
/// idempotent (or with `Idempotency-Key`), nothing sent to the client yet, and
/// its body still in pingora's replay buffer.
pub fn replayable(session: &Session) -> bool {
    request::is_idempotent(session.req_header())
        && session.response_written().is_none()
        && !session.as_ref().retry_buffer_truncated()
}

/// Whether a failure of the current attempt will be retried: the request is
/// replayable, the route's `retries` budget is not spent, and another ready
/// instance is left among the candidates.
pub fn can_retry(session: &Session, ctx: &RequestCtx) -> bool {
    let (Some(snap), Some(rc), Some(unit)) = (&ctx.snapshot, &ctx.route, &ctx.unit) else {
        return false;
    };
    let route = &snap.config.routes[rc.id];
    if !replayable(session) || ctx.attempts.retries >= route.retries {
        return false;
    }
    let svc = snap.service(rc.service);
    let candidates = svc.candidates_for(unit.placement, unit.hop_limited);
    let current = ctx.attempts.current.map(|(_, a)| a);
    svc.any_ready(candidates, ctx.attempts.unit_pos, clock::now_ms(), |a| {
        Some(*a) != current && !ctx.attempts.tried.contains(a)
    })
}

/// Spends one retry and marks the current instance as tried.
pub fn take_retry(ctx: &mut RequestCtx) {
    let a = &mut ctx.attempts;
    a.retries += 1;
    if let Some((_, addr)) = a.current {
        a.tried.push(addr);
    }
}
