//! What every admin response gets, whichever handler (or axum itself)
//! produced it: a request id (the caller's sane `x-request-id`, else a new
//! one) in the `x-request-id` header and in error bodies; errors axum
//! answers on its own (a body over the limit, a bad method) in the
//! contract's JSON shape; and one access-log line per call, 401s included.

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current admin call's request id ("" outside one).
pub(crate) fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

fn new_request_id() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Unique enough per process: time and a counter, hex.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:016x}{:08x}", n as u64, seq as u32)
}

fn inbound_id(req: &Request) -> Option<String> {
    let v = req.headers().get("x-request-id")?.to_str().ok()?;
    (!v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| v.to_owned())
}

pub(crate) async fn wrap(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = inbound_id(&req).unwrap_or_else(new_request_id);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    let status = resp.status();
    if status.is_client_error() && !is_json(&resp) {
        resp = REQUEST_ID
            .scope(
                id.clone(),
                async move { plain_error(status).into_response() },
            )
            .await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(
        target: "access",
        admin = true,
        request_id = id.as_str(),
        method = %method,
        path = path.as_str(),
        status = resp.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    resp
}

fn is_json(resp: &Response<Body>) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// axum's own plain-text answers, as the contract's errors.
fn plain_error(status: StatusCode) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "payload_too_large",
            format!(
                "the request body is over the admin API's limit of {} bytes",
                crate::BODY_LIMIT
            ),
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::new(status, "method_not_allowed", "method not allowed here")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(status, "bad_request", "the body must be JSON")
        }
        _ => ApiError::bad_request(format!("the request was refused ({status})")),
    }
}
