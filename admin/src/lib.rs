//! The admin REST API (axum) on `admin.listen`.
//!
//! Owns HTTP concerns only: routing, bearer-token auth, the JSON error shape.
//! It reaches the running gateway through the narrow [`GatewayHandle`] trait
//! and knows nothing of pingora or of how the gateway stores its state.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;

/// What the admin API may ask of the running gateway.
pub trait GatewayHandle: Send + Sync + 'static {
    /// Readiness: `Ok(())` when the gateway can serve, else why not.
    fn readiness(&self) -> Result<(), String>;
    /// Live health: instances, ejections, circuits, counters (`GET /admin/v1/health`).
    fn health(&self) -> serde_json::Value;
}

#[derive(Clone)]
struct AppState {
    token: Arc<str>,
    handle: Arc<dyn GatewayHandle>,
}

/// An error in the data plane's JSON shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    request_id: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: &self.message,
            request_id: "",
        };
        (self.status, Json(body)).into_response()
    }
}

/// The admin router: unauthenticated health/metrics plus `/admin/v1/*` behind the token.
pub fn router(token: &str, handle: Arc<dyn GatewayHandle>) -> Router {
    let state = AppState {
        token: Arc::from(token),
        handle,
    };
    let v1 = Router::new()
        .route("/health", get(health))
        .fallback(not_implemented)
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/admin/v1", v1)
        .fallback(not_found)
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: &str,
    handle: Arc<dyn GatewayHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(token, handle))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.handle.readiness() {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not_ready", "reason": why})),
        )
            .into_response(),
    }
}

async fn health(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(s.handle.health())
}

async fn metrics() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "metrics arrive with the control-plane release",
    )
}

async fn not_implemented() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "this admin endpoint arrives with the control-plane release",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
}

async fn require_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), s.token.as_bytes()) {
        next.run(req).await
    } else {
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        )
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        resp
    }
}

/// Compares without an early exit on the first differing byte, so the time
/// taken does not tell how much of a guessed token was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        let y = b.get(i % b.len().max(1)).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"secret", b""));
        assert!(constant_time_eq(b"", b""));
    }
}
