//! The pingora `ProxyHttp` implementation: the request path of DESIGN.md.
//!
//! Hook order for one request (pingora 0.9): `new_ctx` -> `request_filter`
//! (match the route or answer 404/405) -> `upstream_peer` (pick a unit and an
//! instance; runs again on every retry) -> `fail_to_connect` or
//! `upstream_request_filter` -> ... -> `error_while_proxy` / `fail_to_proxy` on
//! failure -> `logging`, always.

pub mod ctx;
mod key;
pub mod request;
pub mod respond;

use crate::snapshot::{SharedSnapshot, Snapshot};
use async_trait::async_trait;
use ctx::{RequestCtx, RouteCtx};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use respond::{send_error, ErrorCode};
use std::sync::Arc;

/// No candidate unit has an instance left to try.
const NO_INSTANCE: ErrorType = ErrorType::Custom("no_instance");

pub struct Gateway {
    snapshot: SharedSnapshot,
}

impl Gateway {
    pub fn new(snapshot: SharedSnapshot) -> Self {
        Gateway { snapshot }
    }
}

fn snapshot_of(snapshot: &Option<Arc<Snapshot>>) -> Result<&Arc<Snapshot>> {
    snapshot
        .as_ref()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no snapshot"))
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// Matches the route. `Ok(true)` means a response (404/405) was written.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snap = self.snapshot.load_full();
        let req = session.req_header();
        ctx.request_id = request::request_id(req);
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        let host = request::host(req);
        let found = snap
            .router
            .lookup(&host, req.uri.path(), req.method.as_str());
        let id = match found {
            crate::router::Match::Route(id) => id,
            crate::router::Match::MethodNotAllowed => {
                let msg = format!("method {} not allowed here", req.method);
                send_error(session, ErrorCode::MethodNotAllowed, &msg, &ctx.request_id).await?;
                return Ok(true);
            }
            crate::router::Match::NoRoute => {
                let msg = format!("no route for {}", req.uri.path());
                send_error(session, ErrorCode::NoRoute, &msg, &ctx.request_id).await?;
                return Ok(true);
            }
        };
        let route = &snap.config.routes[id];
        let hash_key = match snap.config.services[route.service].lb {
            unitgate_config::LbPolicy::ConsistentHash => {
                key::routing_key(req, &snap.config.routing.key)
                    .map(String::into_bytes)
                    .or_else(|| ctx.client_ip.map(|ip| ip.to_string().into_bytes()))
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        ctx.route = Some(RouteCtx {
            id,
            placement_unit: snap.placement_unit(route.placement),
            hash_key,
        });
        ctx.snapshot = Some(snap);
        Ok(false)
    }

    /// Picks the next instance: walk the candidate units from where the last
    /// pick left off, taking a healthy instance not yet tried.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let snap = snapshot_of(&ctx.snapshot)?;
        let rc = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no route"))?;
        let route = &snap.config.routes[rc.id];
        let svc = snap.service(route.service);
        let svc_conf = &snap.config.services[route.service];
        let attempts = &mut ctx.attempts;
        let candidates = &svc.candidates[rc.placement_unit];
        for (pos, &unit) in candidates.iter().enumerate().skip(attempts.unit_pos) {
            let Some(pool) = svc.pools.pool(unit) else {
                continue;
            };
            let tried = &attempts.tried;
            if let Some(addr) = pool.select(&rc.hash_key, |a| !tried.contains(a)) {
                attempts.unit_pos = pos;
                attempts.current = Some((unit, addr));
                attempts.count += 1;
                let mut peer = HttpPeer::new(addr, false, String::new());
                peer.options.connection_timeout = Some(svc_conf.connect_timeout);
                peer.options.read_timeout = Some(svc_conf.read_timeout);
                peer.options.write_timeout = Some(svc_conf.read_timeout);
                return Ok(Box::new(peer));
            }
        }
        attempts.current = None;
        Err(Error::explain(
            NO_INSTANCE,
            "no healthy instance in any candidate unit",
        ))
    }

    /// Nothing reached a backend: always safe to try the next instance, for
    /// any method, until every candidate instance has been tried.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let a = &mut ctx.attempts;
        if let Some((_, addr)) = a.current.take() {
            a.tried.push(addr);
        }
        a.connect_failures += 1;
        let limit = match (&ctx.snapshot, &ctx.route) {
            (Some(s), Some(r)) => s.service(s.config.routes[r.id].service).instance_count,
            _ => 0,
        };
        if (a.connect_failures as usize) < limit {
            e.set_retry(true);
        }
        e
    }

    /// The request may have reached a backend: repeat it only when it is
    /// idempotent, nothing was sent to the client yet, the body can be
    /// replayed, and the route's retry budget allows.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let replayable = request::is_idempotent(session.req_header())
            && session.response_written().is_none()
            && !session.as_ref().retry_buffer_truncated();
        if !replayable {
            e.set_retry(false);
            return e;
        }
        // A stale pooled connection that the backend had closed: the request
        // never reached it, so retry without spending the budget.
        if client_reused && matches!(e.retry, pingora::RetryType::ReusedOnly) {
            e.set_retry(true);
            return e;
        }
        let budget = match (&ctx.snapshot, &ctx.route) {
            (Some(s), Some(r)) => s.config.routes[r.id].retries,
            _ => 0,
        };
        let a = &mut ctx.attempts;
        if a.retries < budget {
            a.retries += 1;
            if let Some((_, addr)) = a.current.take() {
                a.tried.push(addr);
            }
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(ip) = ctx.client_ip {
            let xff = match session.req_header().headers.get("x-forwarded-for") {
                Some(prev) => format!("{}, {ip}", String::from_utf8_lossy(prev.as_bytes())),
                None => ip.to_string(),
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        upstream.insert_header("x-forwarded-proto", "http")?;
        if let Some(h) = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned()
        {
            upstream.insert_header("x-forwarded-host", h)?;
        }
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        let snap = snapshot_of(&ctx.snapshot)?;
        if let Some(rc) = &ctx.route {
            let route = &snap.config.routes[rc.id];
            if route.strip_prefix {
                let pq = upstream
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let stripped = request::strip_prefix(pq, &route.path_prefix);
                let uri = http::Uri::builder()
                    .path_and_query(stripped)
                    .build()
                    .map_err(|e| Error::because(ErrorType::InternalError, "strip_prefix", e))?;
                upstream.set_uri(uri);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !resp.headers.contains_key("x-request-id") {
            resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        }
        Ok(())
    }

    /// The final error: answer with the contract's JSON error.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            t if *t == NO_INSTANCE => Some(ErrorCode::Unavailable),
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError => Some(ErrorCode::Unavailable),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Some(ErrorCode::UpstreamTimeout),
            _ => match e.esource() {
                ErrorSource::Upstream => Some(ErrorCode::BadGateway),
                // The client went away or sent garbage: nothing useful to say.
                ErrorSource::Downstream => None,
                ErrorSource::Internal | ErrorSource::Unset => Some(ErrorCode::BadGateway),
            },
        };
        let Some(code) = code else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if session.response_written().is_none() {
            let msg = match code {
                ErrorCode::Unavailable => "no instance of the service could be reached",
                ErrorCode::UpstreamTimeout => "the upstream did not answer in time",
                _ => "the upstream failed",
            };
            if let Err(err) = send_error(session, code, msg, &ctx.request_id).await {
                tracing::debug!("error response not sent: {err}");
            }
        }
        FailToProxy {
            error_code: code.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = match (&ctx.snapshot, &ctx.route) {
            (Some(s), Some(r)) => s.config.routes[r.id].name.as_str(),
            _ => "",
        };
        let served = match (&ctx.snapshot, ctx.attempts.current) {
            (Some(s), Some((u, _))) => &*s.unit_names[u],
            _ => "",
        };
        tracing::info!(
            target: "access",
            request_id = %ctx.request_id,
            client = ?ctx.client_ip,
            method = %req.method,
            path = %req.uri.path(),
            route,
            status,
            served_unit = served,
            attempts = ctx.attempts.count,
            error = e.map(|e| e.to_string()),
        );
    }
}
