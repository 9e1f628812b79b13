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

impl ErrorCode {
    /// The gRPC status a gRPC client is answered with instead.
    pub fn grpc_status(self) -> u8 {
        match self {
            ErrorCode::Unauthorized => 16, // UNAUTHENTICATED
            ErrorCode::RateLimited | ErrorCode::PayloadTooLarge => 8, // RESOURCE_EXHAUSTED
            ErrorCode::NoRoute | ErrorCode::MethodNotAllowed => 12, // UNIMPLEMENTED
            ErrorCode::UpstreamTimeout => 4, // DEADLINE_EXCEEDED
            ErrorCode::BadRequest | ErrorCode::HeaderTooLarge => 3, // INVALID_ARGUMENT
            ErrorCode::WriteForbidden | ErrorCode::Unavailable | ErrorCode::BadGateway => 14, // UNAVAILABLE
        }
    }
}

/// A gRPC request (`content-type: application/grpc*`): its refusals are
/// gRPC statuses, not HTTP ones.
pub fn is_grpc(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `grpc-message` is percent-encoded: everything outside printable ASCII, and `%`.
fn grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What every locally generated response carries: the request id, the
/// routing cookie when one is being stamped, and with `expose_unit_headers`
/// the caller's home unit (`x-unit-served` only where an instance answered).
fn local_headers(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    if !ctx.request_id.is_empty() {
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
    }
    let Some(unit) = &ctx.unit else {
        return Ok(());
    };
    if let Some(cookie) = unit.set_cookie.as_deref() {
        resp.append_header("set-cookie", cookie)?;
    }
    if let Some(snap) = ctx
        .snapshot
        .as_deref()
        .filter(|s| s.config.gateway.expose_unit_headers)
    {
        resp.insert_header("x-unit-home", snap.headers.units[unit.home].clone())?;
    }
    Ok(())
}

/// A trailers-only gRPC answer: HTTP 200, `grpc-status` and `grpc-message`
/// in the one header block that ends the stream.
async fn send_grpc_error(
    session: &mut Session,
    ctx: &RequestCtx,
    code: ErrorCode,
    message: &str,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(6 + extra.len()))?;
    resp.insert_header("content-type", "application/grpc")?;
    resp.insert_header("grpc-status", code.grpc_status().to_string())?;
    resp.insert_header("grpc-message", grpc_message(message))?;
    local_headers(&mut resp, ctx)?;
    for (name, value) in extra {
        resp.insert_header(*name, *value)?;
    }
    if !session.is_body_empty() {
        session.set_keepalive(None);
    }
    // Trailers-only means one HEADERS frame with END_STREAM; pingora-proxy
    // would send the header block and then an empty DATA frame, which gRPC
    // clients read as a stream that ended without trailers.
    if let pingora::protocols::http::ServerSession::H2(h2) = &mut *session.downstream_session {
        return h2.write_response_header(Box::new(resp), true);
    }
    session.write_response_header(Box::new(resp), true).await
}

/// Writes a complete locally generated error response, with the request id,
/// the routing cookie when one is being stamped, and any `extra` headers.
/// A gRPC request gets its gRPC status instead (see [`is_grpc`]).
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
    if is_grpc(session) {
        return send_grpc_error(session, ctx, code, message, extra).await;
    }
    let body = error_body(code, message, ctx.request_id_str());
    let mut resp = ResponseHeader::build(code.status(), Some(5 + extra.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    local_headers(&mut resp, ctx)?;
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
    // A fallback body means nothing to a gRPC client: it gets the status.
    let fallback = fallback.filter(|_| !is_grpc(session));
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
    let mut resp = ResponseHeader::build(fb.status, Some(7 + fb.headers.len()))?;
    for (name, value) in &fb.headers {
        resp.append_header(name.clone(), value.as_str())?;
    }
    resp.insert_header("content-type", fb.content_type.as_str())?;
    resp.insert_header("content-length", fb.body.len().to_string())?;
    resp.insert_header("x-unit-degraded", reason.as_str())?;
    local_headers(&mut resp, ctx)?;
    if !session.is_body_empty() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(fb.body.clone()), true)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("no route for /a"), "no route for /a");
        assert_eq!(grpc_message("100% é\n"), "100%25 %C3%A9%0A");
    }

    #[test]
    fn refusals_map_to_the_grpc_statuses_of_the_contract() {
        assert_eq!(ErrorCode::Unauthorized.grpc_status(), 16);
        assert_eq!(ErrorCode::RateLimited.grpc_status(), 8);
        assert_eq!(ErrorCode::Unavailable.grpc_status(), 14);
        assert_eq!(ErrorCode::NoRoute.grpc_status(), 12);
        assert_eq!(ErrorCode::UpstreamTimeout.grpc_status(), 4);
    }
}
