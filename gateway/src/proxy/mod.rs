//! The pingora `ProxyHttp` implementation: the request path of DESIGN.md.
//!
//! Hook order for one request (pingora 0.9): `new_ctx` -> `request_filter`
//! (match, sanitize, unit routing, write freeze; may answer itself) ->
//! `upstream_peer` (pick a unit and an instance; runs again on every retry) ->
//! `fail_to_connect` or `upstream_request_filter` -> `upstream_response_filter`
//! (may turn a 502/503/504 into a retry) -> `response_filter` -> ... ->
//! `error_while_proxy` / `fail_to_proxy` on failure -> `logging`, always.

pub mod ctx;
pub mod forward;
mod framing;
pub mod normalize;
pub mod request;
pub mod respond;
pub mod trace;
mod upstream;

use crate::limits::{self, Checked, LimitInput};
use crate::router::Match;
use crate::snapshot::{SharedSnapshot, Snapshot};
use async_trait::async_trait;
use ctx::{Failure, RequestCtx, RouteCtx};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use respond::{send_degraded, send_error, ErrorCode};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use unitgate_config::LimitScope;
use unitgate_plugins::fallback::Reason;
use unitgate_plugins::jwt::{bearer_token, Claims, JwtError};

/// Seconds a client should wait before retrying a write to a frozen slot.
const WRITE_FREEZE_RETRY_AFTER: &str = "5";

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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies the request's bearer token with verifier `j`; on success sets the
/// `forward_claims` headers, after removing any the client sent itself.
fn authenticate(snap: &Snapshot, j: usize, session: &mut Session) -> Result<Claims, JwtError> {
    let verifier = &snap.jwt[j];
    let token = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or(JwtError::Missing)?;
    let claims = verifier.verify(token, unix_now())?;
    let req = session.req_header_mut();
    for (_, header) in &snap.config.jwt[j].forward_claims {
        req.remove_header(header.as_str());
    }
    for (header, value) in verifier.forwarded(&claims) {
        if let Err(e) = req.insert_header(header, value) {
            tracing::debug!("claim header not forwarded: {e}");
        }
    }
    Ok(claims)
}

/// The matched route's `max_body_bytes` (0: no route yet, or unlimited).
fn max_body_bytes(ctx: &RequestCtx) -> u64 {
    match (&ctx.snapshot, &ctx.route) {
        (Some(s), Some(r)) => s.config.routes[r.id].max_body_bytes,
        _ => 0,
    }
}

/// `413 payload_too_large`, closing the connection (the rest of the body is
/// not read).
async fn send_payload_too_large(session: &mut Session, ctx: &RequestCtx, max: u64) -> Result<()> {
    let msg = format!("the request body is larger than this route's limit of {max} bytes");
    session.set_keepalive(None);
    send_error(session, ctx, ErrorCode::PayloadTooLarge, &msg, &[]).await
}

/// Per-connection client limits, re-applied on every request: an idle
/// keep-alive connection lives at most `client_idle_timeout` (whatever
/// `Keep-Alive: timeout=` the client asks for), and pipelined HTTP/1.1
/// requests are answered in order rather than dropped.
fn client_connection(session: &mut Session, gateway: &unitgate_config::Gateway) {
    if let Some(asked) = session.get_keepalive() {
        let cap = gateway.client_idle_timeout.as_secs().max(1);
        // 0 is pingora's "no limit".
        let secs = if asked == 0 { cap } else { asked.min(cap) };
        session.set_keepalive(Some(secs));
    }
    session.set_pipelining_enabled(true);
}

/// Replaces the request's path with its normal form (query and authority
/// unchanged), keeping the client's path in `ctx.raw_path` for the log.
fn normalize_path(session: &mut Session, ctx: &mut RequestCtx) -> Result<(), String> {
    let uri = &session.req_header().uri;
    let Some(path) = normalize::normalize(uri.path()).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|e| format!("normalised path: {e}"))?);
    let normal = http::Uri::from_parts(parts).map_err(|e| format!("normalised path: {e}"))?;
    ctx.raw_path = Some(uri.path().into());
    session.req_header_mut().set_uri(normal);
    Ok(())
}

/// The client's body could not be parsed (a broken chunk): the client's
/// fault, answered 400 like nginx and haproxy do.
fn bad_request_body(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::InvalidHTTPHeader | ErrorType::Custom("InvalidChunk")
        )
}

fn is_read_method(req: &RequestHeader) -> bool {
    use http::Method;
    matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// No downstream modules: pingora's default adds a response-compression
    /// module even when disabled, which costs allocations on every request.
    /// The gateway does not compress; backends do.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Steps 1-7 of the request path. `Ok(true)` means a response was written
    /// (404, 405, write_forbidden, overloaded) and proxying stops.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        crate::edge::head_complete(session.stream());
        let snap = self.snapshot.load_full();
        ctx.request_id = request::request_id(session.req_header());
        ctx.trace = trace::Trace::of(
            session.req_header(),
            snap.tracing.as_ref().map(|t| t.threshold),
        );
        if ctx.trace.sampled() {
            ctx.span_target = snap.tracing.clone();
        }
        client_connection(session, &snap.config.gateway);
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let (tls, peer_cert) = crate::tls::of_session(session.digest());
        ctx.tls = tls;

        // 0. framing and hop-by-hop nominations, on the request as sent.
        if !session.is_http2() {
            let raw = || session.as_http1().map(|h1| h1.get_headers_raw_bytes());
            let framed = framing::check(session.req_header(), raw)
                .and_then(|()| framing::collapse_content_length(session.req_header_mut()));
            if let Err(msg) = framed {
                session.set_keepalive(None);
                send_error(session, ctx, ErrorCode::BadRequest, msg, &[]).await?;
                return Ok(true);
            }
            framing::strip_nominated(session.req_header_mut());
            // pingora reads heads up to 1 MiB; the configured limit is ours.
            let max = snap.config.gateway.max_header_bytes;
            let size = session
                .as_http1()
                .map_or(0, |h1| h1.get_headers_raw_bytes().len());
            if max > 0 && size > max {
                session.set_keepalive(None);
                let msg = format!("request head of {size} bytes is over the limit of {max}");
                send_error(session, ctx, ErrorCode::HeaderTooLarge, &msg, &[]).await?;
                return Ok(true);
            }
        }

        // 0b. normalise the path: matching, auth and the backend see one path.
        if let Err(e) = normalize_path(session, ctx) {
            let msg = e.to_string();
            session.set_keepalive(None);
            send_error(session, ctx, ErrorCode::BadRequest, &msg, &[]).await?;
            return Ok(true);
        }

        // 1. match
        let req = session.req_header();
        let found = snap
            .router
            .lookup(&request::host(req), req.uri.path(), req.method.as_str());
        let id = match found {
            Match::Route(id) => id,
            Match::MethodNotAllowed => {
                let msg = format!("method {} not allowed here", req.method);
                send_error(session, ctx, ErrorCode::MethodNotAllowed, &msg, &[]).await?;
                return Ok(true);
            }
            Match::NoRoute => {
                let msg = format!("no route for {}", req.uri.path());
                send_error(session, ctx, ErrorCode::NoRoute, &msg, &[]).await?;
                return Ok(true);
            }
        };

        // 1b. body limit: a declared length over the route's limit is refused
        // before anything reaches a backend; chunked bodies are counted as
        // they stream (`request_body_filter`).
        let max_body = snap.config.routes[id].max_body_bytes;
        if max_body > 0 {
            let declared = session
                .req_header()
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > max_body) {
                send_payload_too_large(session, ctx, max_body).await?;
                return Ok(true);
            }
        }

        // 2. sanitize: only trusted peers may speak x-unit-*.
        // A client certificate is only accepted from `tls.trusted_peer_ca`.
        let trusted = peer_cert || snap.unit.is_trusted(ctx.client_ip);
        if !trusted {
            crate::unit::strip_unit_headers(session.req_header_mut());
        } else if let Some(peer) = session
            .req_header()
            .headers
            .get("x-unit-epoch")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            // A peer on a newer shard map: read the store now.
            crate::fleet::note_peer_epoch(peer, snap.config.routing.epoch);
        }
        if trusted {
            // This gateway makes its own split choice; a peer's is not kept.
            session
                .req_header_mut()
                .remove_header(&crate::split::X_UNIT_SPLIT);
        }

        // 3. authenticate: a valid token from the route's verifier.
        let route = &snap.config.routes[id];
        let claims = match route.jwt {
            None => None,
            Some(j) => match authenticate(&snap, j, session) {
                Ok(claims) => Some(claims),
                Err(e) => {
                    let challenge = match e {
                        JwtError::Missing => "Bearer",
                        _ => "Bearer error=\"invalid_token\"",
                    };
                    let msg = format!("a valid bearer token is required: {}", e.describe());
                    send_error(
                        session,
                        ctx,
                        ErrorCode::Unauthorized,
                        &msg,
                        &[("www-authenticate", challenge)],
                    )
                    .await?;
                    return Ok(true);
                }
            },
        };

        // 4. routing key, slot, home and placement units, cookie.
        let req = session.req_header();
        let unit = snap.unit.decide(
            &snap.config,
            req,
            route.placement,
            trusted,
            claims.as_ref(),
            unix_now(),
        );
        // 4b. gray release: the route's service, or the one a split chose.
        let (service, split) = match &snap.routes[id].splits {
            None => (route.service, 0),
            Some(splits) => {
                let c = splits.choose(req, unit.key.as_deref(), unit.slot, unit.placement);
                (splits.choices[usize::from(c)].service, c)
            }
        };
        let hash_key = match snap.config.services[service].lb {
            unitgate_config::LbPolicy::ConsistentHash => match (&unit.key, ctx.client_ip) {
                (Some(k), _) => k.as_bytes().to_vec(),
                (None, Some(ip)) => ip.to_string().into_bytes(),
                (None, None) => Vec::new(),
            },
            _ => Vec::new(),
        };
        let frozen = snap.unit.slots.write_frozen(unit.slot) && !is_read_method(req);
        ctx.route = Some(RouteCtx {
            id,
            service,
            split,
            holds_inflight: false,
            hash_key,
        });
        ctx.unit = Some(unit);
        ctx.snapshot = Some(snap);

        // 5. write protection during a slot migration.
        if frozen {
            if let (Some(snap), Some(rc)) = (&ctx.snapshot, &ctx.route) {
                let counters = &snap.routes[rc.id].counters;
                counters
                    .write_forbidden
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            send_error(
                session,
                ctx,
                ErrorCode::WriteForbidden,
                "writes to this user's slot are paused for a migration; retry later",
                &[("retry-after", WRITE_FREEZE_RETRY_AFTER)],
            )
            .await?;
            return Ok(true);
        }

        // 6. rate limits, in listed order.
        let snap = snapshot_of(&ctx.snapshot)?.clone();
        let limiters = &snap.routes[id].limiters;
        if !limiters.is_empty() {
            let req = session.req_header();
            let header = |name: &str| {
                req.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let input = LimitInput {
                routing_key: ctx.unit.as_ref().and_then(|u| u.key.as_deref()),
                client_ip: ctx.client_ip,
                header: &header,
            };
            match limits::check(&snap, limiters, &input).await {
                Checked::Admitted(verdict) => ctx.rate = verdict,
                Checked::Refused(v, scope) => {
                    let i = usize::from(scope == LimitScope::Global);
                    snap.routes[id].counters.rate_limited[i]
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    ctx.limited = true;
                    let (limit, remaining, reset, retry) = (
                        v.limit.to_string(),
                        v.remaining.to_string(),
                        v.reset_secs.to_string(),
                        v.retry_after_secs.max(1).to_string(),
                    );
                    send_error(
                        session,
                        ctx,
                        ErrorCode::RateLimited,
                        "rate limit exceeded; retry later",
                        &[
                            ("retry-after", &retry),
                            ("ratelimit-limit", &limit),
                            ("ratelimit-remaining", &remaining),
                            ("ratelimit-reset", &reset),
                        ],
                    )
                    .await?;
                    return Ok(true);
                }
            }
        }

        // 7. in-flight guard: shed at once, never queue.
        let max = snap.config.routes[id].max_inflight;
        if max > 0 {
            let state = &snap.routes[id];
            let n = state
                .counters
                .inflight
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if let Some(rc) = ctx.route.as_mut() {
                rc.holds_inflight = true;
            }
            if n > max {
                state.count_degraded(Reason::Overloaded);
                ctx.degraded = Some(Reason::Overloaded);
                let fallback = state.fallback.as_ref();
                send_degraded(
                    session,
                    ctx,
                    Reason::Overloaded,
                    ErrorCode::Unavailable,
                    fallback,
                )
                .await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let mut peer = upstream::pick_peer(ctx)?;
        // An upgraded (WebSocket) stream is quiet for as long as its users
        // are: it is cut after the service's idle_timeout, not its
        // read_timeout. (pingora keeps one read timeout per upstream
        // connection, so the wait for the 101 is bounded by it too.)
        if session.is_upgrade_req() {
            if let Some(rc) = &ctx.route {
                let snap = snapshot_of(&ctx.snapshot)?;
                let idle = snap.config.services[rc.service].idle_timeout;
                peer.options.read_timeout = Some(idle);
                peer.options.write_timeout = Some(idle);
            }
        }
        Ok(peer)
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
        // Out of descriptors here: not the instance's fault, so not counted
        // against it (no ejection, no breaker trip, no crossing); the next
        // instance gets the usual attempt.
        if crate::health::is_local_fd_shortage(&e) {
            ctx.attempts.recorded = true;
            ctx.attempts.last_failure = Some(Failure::Connect);
        } else {
            upstream::record(ctx, Some(Failure::Connect));
        }
        let a = &mut ctx.attempts;
        if let Some((_, addr)) = a.current {
            a.tried.push(addr);
        }
        a.connect_failures += 1;
        let limit = match (&ctx.snapshot, &ctx.route) {
            (Some(s), Some(r)) => s.service(r.service).instance_count,
            _ => 0,
        };
        if (a.connect_failures as usize) < limit {
            e.set_retry(true);
        }
        e
    }

    /// A failed attempt that will be retried is not a warning: the attempt
    /// is counted (`unitgate_upstream_attempts_total`), a crossing is counted
    /// and in the access log (`attempts`, `crossed`), and a request that
    /// fails in the end is logged by pingora at ERROR. Kept at debug.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        tracing::debug!("attempt failed, retrying: {error}");
        matches!(context, ProxyWarnLogContext::UpstreamRetry)
    }

    /// A client that went away mid-request (a closed tab, a load tool
    /// stopping) is not a gateway error: nginx logs it at info. Its access
    /// line still records it; only pingora's ERROR line is kept at debug.
    /// Upstream failures and everything else stay at ERROR.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        let client_gone = error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            );
        if client_gone {
            tracing::debug!("client went away: {error}");
        }
        client_gone
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
        // The client's body went over the route's limit: not the backend's
        // fault, and never worth another attempt.
        if *e.etype() == ErrorType::HTTPStatus(413) {
            e.set_retry(false);
            return e;
        }
        // A stale pooled connection that the backend had closed: the request
        // never reached it, so retry without spending the budget or blaming
        // the instance.
        if client_reused
            && matches!(e.retry, pingora::RetryType::ReusedOnly)
            && upstream::replayable(session)
        {
            e.set_retry(true);
            return e;
        }
        if *e.esource() != ErrorSource::Downstream {
            let failure = match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
                _ => Failure::Error,
            };
            upstream::record(ctx, Some(failure));
        }
        let retry = *e.esource() != ErrorSource::Downstream && upstream::can_retry(session, ctx);
        if retry {
            upstream::take_retry(ctx);
        }
        e.set_retry(retry);
        e
    }

    /// Counts the request body against the route's `max_body_bytes` (for
    /// bodies without a declared length, or longer than declared).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(chunk) = body else {
            return Ok(());
        };
        ctx.body_bytes += chunk.len() as u64;
        let max = max_body_bytes(ctx);
        if max > 0 && ctx.body_bytes > max {
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "request body over the route's max_body_bytes",
            ));
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let snap = snapshot_of(&ctx.snapshot)?;
        let values = &snap.headers;
        let unit = match (&ctx.unit, ctx.attempts.current) {
            (Some(unit), Some((served, _))) => Some(forward::UnitHeaders {
                home: values.units[unit.home].clone(),
                slot: values.slot(unit.slot),
                epoch: values.epoch.clone(),
                served: values.units[served].clone(),
                hops: values.hops(unit.hops + 1),
                crossed_from: (served != unit.placement)
                    .then(|| values.units[unit.placement].clone()),
            }),
            _ => None,
        };
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
        let split = ctx
            .route
            .as_ref()
            .filter(|rc| rc.split != 0)
            .and_then(|rc| {
                let splits = snap.routes[rc.id].splits.as_ref()?;
                Some(splits.choices.get(usize::from(rc.split))?.header.clone())
            });
        forward::apply(
            upstream,
            forward::Added {
                client_ip: ctx.client_ip,
                tls: ctx.tls,
                request_id: ctx.request_id.clone(),
                traceparent: ctx.trace.header(),
                unit,
                split,
            },
        )
    }

    /// A 502/503/504 from the backend is retried like a failure after send,
    /// when a retry will really happen; otherwise it goes to the client as is.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if status < 500 {
            upstream::record(ctx, None);
            return Ok(());
        }
        let retry = matches!(status, 502..=504) && upstream::can_retry(session, ctx);
        upstream::record(ctx, Some(Failure::Error));
        if retry {
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "retryable status from upstream",
            ));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let snap = ctx.snapshot.as_deref();
        let expose = snap.filter(|s| s.config.gateway.expose_unit_headers);
        let cookie = match ctx.unit.as_ref().and_then(|u| u.set_cookie.as_deref()) {
            Some(c) => Some(
                http::HeaderValue::from_str(c)
                    .map_err(|e| Error::because(ErrorType::InternalError, "set-cookie", e))?,
            ),
            None => None,
        };
        forward::edit_response(resp, |h| {
            use forward::*;
            if !h.contains_key(&X_REQUEST_ID) {
                h.insert(X_REQUEST_ID, ctx.request_id.clone());
            }
            if let Some(v) = ctx.rate {
                h.insert(RATELIMIT_LIMIT, v.limit.into());
                h.insert(RATELIMIT_REMAINING, v.remaining.into());
                h.insert(RATELIMIT_RESET, v.reset_secs.into());
            }
            if let Some(cookie) = cookie {
                h.append(http::header::SET_COOKIE, cookie);
            }
            if let (Some(snap), Some(unit)) = (expose, &ctx.unit) {
                h.insert(X_UNIT_HOME, snap.headers.units[unit.home].clone());
                if let Some(served) = ctx.attempts.served() {
                    h.insert(X_UNIT_SERVED, snap.headers.units[served].clone());
                }
            }
        });
        Ok(())
    }

    /// The final error: the route's fallback, or the contract's JSON error,
    /// with `x-unit-degraded` naming why.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if *e.etype() == ErrorType::HTTPStatus(413) && session.response_written().is_none() {
            if let Err(err) = send_payload_too_large(session, ctx, max_body_bytes(ctx)).await {
                tracing::debug!("413 not sent: {err}");
            }
            return FailToProxy {
                error_code: 413,
                can_reuse_downstream: false,
            };
        }
        if bad_request_body(e) {
            if session.response_written().is_none() {
                session.set_keepalive(None);
                let msg = format!("unreadable request body: {}", e.etype().as_str());
                if let Err(err) = send_error(session, ctx, ErrorCode::BadRequest, &msg, &[]).await {
                    tracing::debug!("400 not sent: {err}");
                }
            }
            return FailToProxy {
                error_code: 400,
                can_reuse_downstream: false,
            };
        }
        let last = ctx.attempts.last_failure;
        let degraded = match e.etype() {
            t if *t == upstream::NO_INSTANCE => Some(match last {
                Some(Failure::Timeout) => Reason::UpstreamTimeout,
                Some(Failure::Error) => Reason::UpstreamError,
                _ if ctx.attempts.circuit_skipped && ctx.attempts.count == 0 => Reason::CircuitOpen,
                _ => Reason::NoHealthyUnit,
            }),
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError => Some(Reason::NoHealthyUnit),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Some(Reason::UpstreamTimeout),
            _ => match e.esource() {
                // The client went away or sent garbage: nothing useful to say.
                ErrorSource::Downstream => None,
                _ => Some(Reason::UpstreamError),
            },
        };
        let Some(reason) = degraded else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let code = match reason {
            Reason::UpstreamTimeout => ErrorCode::UpstreamTimeout,
            Reason::UpstreamError => ErrorCode::BadGateway,
            _ => ErrorCode::Unavailable,
        };
        let mut status = code.status();
        if session.response_written().is_none() {
            // pingora closes the client connection after a proxy failure
            // (pingora-proxy's `finish` ignores `can_reuse_downstream` on this
            // path), so say so: `Connection: close`, and no client sends its
            // next request into a connection about to be closed.
            session.set_keepalive(None);
            let state = match (&ctx.snapshot, &ctx.route) {
                (Some(s), Some(r)) => Some(&s.routes[r.id]),
                _ => None,
            };
            let fallback = state.and_then(|s| s.fallback.as_ref());
            if let Some(s) = state {
                s.count_degraded(reason);
            }
            ctx.degraded = Some(reason);
            if let Some(fb) = fallback {
                status = fb.status;
            }
            if let Err(err) = send_degraded(session, ctx, reason, code, fallback).await {
                tracing::debug!("degraded response not sent: {err}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        crate::edge::request_done(session.stream());
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let (Some(snap), Some(rc)) = (&ctx.snapshot, &ctx.route) {
            snap.routes[rc.id].counters.requests.record(
                status,
                ctx.unit.as_ref().map(|u| u.home),
                ctx.attempts.served(),
                ctx.started.elapsed(),
            );
        }
        let span = ctx.span_target.take();
        let log = crate::access_log::enabled();
        if !log && span.is_none() {
            return;
        }
        let req = session.req_header();
        let mut line = crate::access_log::Line {
            request_id: ctx.request_id_str(),
            trace_id: ctx.trace.id,
            client: ctx.client_ip,
            method: req.method.as_str(),
            path: ctx.raw_path.as_deref().unwrap_or(req.uri.path()),
            status,
            duration: ctx.started.elapsed(),
            routed: None,
        };
        if let Some(snap) = &ctx.snapshot {
            let name = |u: Option<usize>| u.map_or("", |u| &*snap.unit_names[u]);
            let unit = ctx.unit.as_ref();
            let rc = ctx.route.as_ref();
            line.routed = Some(crate::access_log::Routed {
                route: rc.map_or("", |r| snap.config.routes[r.id].name.as_str()),
                service: rc.map_or("", |r| snap.config.services[r.service].name.as_str()),
                bytes_in: session.body_bytes_read(),
                bytes_out: session.body_bytes_sent(),
                upgraded: session.was_upgraded(),
                home_unit: name(unit.map(|u| u.home)),
                served_unit: name(ctx.attempts.served()),
                slot: unit.map(|u| u.slot),
                crossed: unit
                    .zip(ctx.attempts.served())
                    .is_some_and(|(u, s)| u.placement != s),
                attempts: ctx.attempts.count,
                degraded: ctx.degraded.map(Reason::as_str),
                limited: ctx.limited,
                error: e.map(|e| e as &dyn std::fmt::Display),
            });
        }
        if log {
            crate::access_log::write(&line);
        }
        if let Some(target) = &span {
            crate::otlp::record(target, &ctx.trace, &line);
        }
    }
}
