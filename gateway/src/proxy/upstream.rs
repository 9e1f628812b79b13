//! Choosing the upstream: candidate units in order, a ready instance inside
//! each, and the retry rules of DESIGN.md "Failover and retries".

use super::ctx::RequestCtx;
use super::{request, snapshot_of};
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

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
    let svc = snap.service(route.service);
    let svc_conf = &snap.config.services[route.service];
    let attempts = &mut ctx.attempts;
    let candidates = svc.candidates_for(unit.placement, unit.hop_limited);
    for (pos, &u) in candidates.iter().enumerate().skip(attempts.unit_pos) {
        let Some(pool) = svc.pools.pool(u) else {
            continue;
        };
        let tried = &attempts.tried;
        let Some(addr) = pool.select(&rc.hash_key, |a| !tried.contains(a)) else {
            continue;
        };
        attempts.unit_pos = pos;
        attempts.current = Some((u, addr));
        attempts.served = Some(u);
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
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(svc_conf.connect_timeout);
        peer.options.read_timeout = Some(svc_conf.read_timeout);
        peer.options.write_timeout = Some(svc_conf.read_timeout);
        return Ok(Box::new(peer));
    }
    attempts.current = None;
    Err(Error::explain(
        NO_INSTANCE,
        "no ready instance in any candidate unit",
    ))
}

/// Whether a request that may have reached a backend can be sent again:
/// idempotent (or with `Idempotency-Key`), nothing sent to the client yet, and
/// its body still in pingora's replay buffer.
pub fn replayable(session: &Session) -> bool {
    request::is_idempotent(session.req_header())
        && session.response_written().is_none()
        && !session.as_ref().retry_buffer_truncated()
}

fn retry_budget(ctx: &RequestCtx) -> u32 {
    match (&ctx.snapshot, &ctx.route) {
        (Some(s), Some(r)) => s.config.routes[r.id].retries,
        _ => 0,
    }
}

/// Spends one retry of the route's budget, if any is left, and marks the
/// current instance as tried.
pub fn take_retry(ctx: &mut RequestCtx) -> bool {
    let budget = retry_budget(ctx);
    let a = &mut ctx.attempts;
    if a.retries >= budget {
        return false;
    }
    a.retries += 1;
    if let Some((_, addr)) = a.current.take() {
        a.tried.push(addr);
    }
    true
}

/// Whether a failure of the current attempt would be retried elsewhere: the
/// request is replayable, budget is left, and another ready instance exists.
pub fn would_retry(session: &Session, ctx: &RequestCtx) -> bool {
    if !replayable(session) || ctx.attempts.retries >= retry_budget(ctx) {
        return false;
    }
    let (Some(snap), Some(rc), Some(unit)) = (&ctx.snapshot, &ctx.route, &ctx.unit) else {
        return false;
    };
    let svc = snap.service(snap.config.routes[rc.id].service);
    let candidates = svc.candidates_for(unit.placement, unit.hop_limited);
    let current = ctx.attempts.current.map(|(_, a)| a);
    svc.any_ready(candidates, ctx.attempts.unit_pos, |a| {
        Some(*a) != current && !ctx.attempts.tried.contains(a)
    })
}
