//! Locally generated responses: the JSON error shape of DESIGN.md.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use unitgate_plugins::fallback::{FallbackResponse, Reason};

/// Error codes of the contract, each with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    PayloadTooLarge,
    HeaderTooLarge,
    NoRoute,
    MethodNotAllowed,
    Unauthorized,
    WriteForbidden,
    RateLimited,
    Unavailable,
    UpstreamTimeout,
    BadGateway,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::HeaderTooLarge => 431,
            ErrorCode::NoRoute => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unauthorized => 401,
            ErrorCode::WriteForbidden => 503,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::UpstreamTimeout => 504,
            ErrorCode::BadGateway => 502,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::HeaderTooLarge => "header_too_large",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::WriteForbidden => "write_forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::BadGateway => "bad_gateway",
        }
    }
}

/// `{"error":..,"message":..,"request_id":..}` with the code's status.
pub fn error_body(code: ErrorCode, message: &str, request_id: &str) -> Bytes {
    let body = serde_json::json!({
        "error": code.as_str(),
        "message": message,
        "request_id": request_id,
    });
    Bytes::from(body.to_string())
}

/// Writes a complete locally generated error response, with the request id,
/// the routing cookie when one is being stamped, and any `extra` headers.
///
/// The client connection is kept only when the request had no body (an unread
/// body would otherwise have to be drained first).
pub async fn send_error(
    session: &mut Session,
    ctx: &RequestCtx,
    code: ErrorCode,
    message: &str,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let body = error_body(code, message, ctx.request_id_str());
    let mut resp = ResponseHeader::build(code.status(), Some(4 + extra.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    if !ctx.request_id.is_empty() {
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
    }
    if let Some(cookie) = ctx.unit.as_ref().and_then(|u| u.set_cookie.as_deref()) {
        resp.append_header("set-cookie", cookie)?;
    }
    for (name, value) in extra {
        resp.insert_header(*name, *value)?;
    }
    if !session.is_body_empty() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answers a request that nothing could serve: the route's fallback when it
/// has one, else the JSON error `code`; both carry `x-unit-degraded: <reason>`.
pub async fn send_degraded(
    session: &mut Session,
    ctx: &RequestCtx,
    reason: Reason,
    code: ErrorCode,
    fallback: Option<&FallbackResponse>,
) -> Result<()> {
    let Some(fb) = fallback else {
        let msg = match reason {
            Reason::NoHealthyUnit => "no unit has a reachable instance of the service",
            Reason::CircuitOpen => "every candidate unit's circuit is open",
            Reason::UpstreamTimeout => "the upstream did not answer in time",
            Reason::UpstreamError => "the upstream failed",
            Reason::Overloaded => "the route is at its in-flight limit",
        };
        return send_error(
            session,
            ctx,
            code,
            msg,
            &[("x-unit-degraded", reason.as_str())],
        )
        .await;
    };
    let mut resp = ResponseHeader::build(fb.status, Some(6 + fb.headers.len()))?;
    for (name, value) in &fb.headers {
        resp.append_header(name.clone(), value.as_str())?;
    }
    resp.insert_header("content-type", fb.content_type.as_str())?;
    resp.insert_header("content-length", fb.body.len().to_string())?;
    resp.insert_header("x-unit-degraded", reason.as_str())?;
    if !ctx.request_id.is_empty() {
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
    }
    if let Some(cookie) = ctx.unit.as_ref().and_then(|u| u.set_cookie.as_deref()) {
        resp.append_header("set-cookie", cookie)?;
    }
    if !session.is_body_empty() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(fb.body.clone()), true)
        .await
}
