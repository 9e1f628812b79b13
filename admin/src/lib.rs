//! The admin REST API (axum) on `admin.listen`.
//!
//! Owns HTTP concerns only: routing, bearer-token auth, ETag / If-Match, the
//! JSON error shape, secret redaction, the meaning of each endpoint as an
//! edit of the raw config, and the web console (`/ui/`) that calls them. It reaches the running gateway through the narrow
//! [`GatewayHandle`] trait (read the config, apply a change, reload, report)
//! and knows nothing of pingora or of how the gateway stores its state.

mod api;
mod envelope;
mod error;
mod linger;
mod ui;

pub use error::ApiError;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use unitgate_config::RawConfig;

/// A change to the raw config, run by the gateway on a copy under its lock;
/// with a shared store it may run again on a fresh copy after a lost race.
pub type Change<'a> = Box<dyn Fn(&mut RawConfig) -> Result<(), ApiError> + Send + Sync + 'a>;

/// What the admin API may ask of the running gateway.
#[async_trait::async_trait]
pub trait GatewayHandle: Send + Sync + 'static {
    /// Readiness: `Ok(())` when the gateway can serve, else why not.
    fn readiness(&self) -> Result<(), String>;
    /// Live health: instances, ejections, circuits, counters.
    fn health(&self) -> serde_json::Value;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    /// Version, epoch, uptime, last reload (without the ETag, added by the API).
    fn status(&self) -> serde_json::Value;
    /// The effective raw config and its ETag.
    fn config(&self) -> (RawConfig, String);
    /// Applies `change` to a copy, validates the whole result, persists and
    /// swaps it; `if_match` must equal the current ETag when given.
    async fn apply(
        &self,
        if_match: Option<&str>,
        change: Change<'_>,
    ) -> Result<(RawConfig, String), ApiError>;
    /// Reloads the config file now.
    fn reload(&self) -> Result<(bool, String), ApiError>;
    /// The fleet's gateways and the store's state (`GET /admin/v1/fleet`).
    async fn fleet(&self) -> serde_json::Value;
    /// Every migration, oldest first.
    async fn migrations(&self) -> Result<serde_json::Value, ApiError>;
    async fn migration(&self, id: &str) -> Result<serde_json::Value, ApiError>;
    /// Starts a migration from a `POST /admin/v1/migrations` body.
    async fn start_migration(&self, body: serde_json::Value)
        -> Result<serde_json::Value, ApiError>;
    async fn confirm_migration(&self, id: &str) -> Result<serde_json::Value, ApiError>;
    async fn abort_migration(&self, id: &str) -> Result<serde_json::Value, ApiError>;
}

#[derive(Clone)]
pub(crate) struct AppState {
    token: Arc<str>,
    pub(crate) handle: Arc<dyn GatewayHandle>,
}

/// The admin router: unauthenticated health, metrics and the console's
/// static assets (`/ui/`), `/admin/v1/*` behind the bearer token.
pub fn router(token: &str, handle: Arc<dyn GatewayHandle>) -> Router {
    let state = AppState {
        token: Arc::from(token),
        handle,
    };
    let v1 = Router::new()
        .route("/status", get(api::status))
        .route("/config", get(api::config))
        .route("/health", get(api::health))
        .route("/reload", post(api::reload))
        .route("/routes", get(api::list_routes).post(api::create_route))
        .route(
            "/routes/{name}",
            get(api::get_route)
                .put(api::put_route)
                .delete(api::delete_route),
        )
        .route(
            "/services",
            get(api::list_services).post(api::create_service),
        )
        .route(
            "/services/{name}",
            get(api::get_service)
                .put(api::put_service)
                .delete(api::delete_service),
        )
        .route("/units", get(api::list_units))
        .route("/units/{name}", get(api::get_unit).put(api::put_unit))
        .route("/shardmap", get(api::get_shardmap).put(api::put_shardmap))
        .route("/fleet", get(api::fleet))
        .route(
            "/migrations",
            get(api::list_migrations).post(api::start_migration),
        )
        .route("/migrations/{id}", get(api::get_migration))
        .route("/migrations/{id}/confirm", post(api::confirm_migration))
        .route("/migrations/{id}/abort", post(api::abort_migration))
        .fallback(api::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .nest("/admin/v1", v1)
        .merge(ui::routes())
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(envelope::wrap))
        .with_state(state)
}

/// Largest admin request body: a whole config fits many times over.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: &str,
    handle: Arc<dyn GatewayHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(linger::Lingering(listener), router(token, handle))
        .with_graceful_shutdown(shutdown)
        .await
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
        let mut resp = ApiError::unauthorized().into_response();
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
    let mut diff = u8::from(a.len() != b.len());
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
