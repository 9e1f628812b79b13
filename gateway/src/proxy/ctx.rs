//! Per-request context, grouped by concern so each hook's reads are obvious.

use crate::snapshot::Snapshot;
use crate::unit::UnitCtx;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use unitgate_config::{RouteId, ServiceId, UnitId};

/// Requests between `new_ctx` and the end of `logging`: what a graceful
/// shutdown waits for.
pub static INFLIGHT: AtomicUsize = AtomicUsize::new(0);

pub struct RequestCtx {
    /// When the request header had been read.
    pub started: std::time::Instant,
    /// The snapshot this request started on; it finishes on it.
    pub snapshot: Option<Arc<Snapshot>>,
    pub request_id: http::HeaderValue,
    /// The W3C trace this request belongs to (inbound, or started here).
    pub trace: super::trace::Trace,
    /// Where this request's span goes: set only when it is sampled.
    pub span_target: Option<Arc<crate::otlp::Target>>,
    /// The path as the client sent it, when normalisation changed it (the
    /// request header carries the normal form): for the access log.
    pub raw_path: Option<Box<str>>,
    /// Request body bytes read so far (for the route's `max_body_bytes`).
    pub body_bytes: u64,
    pub client_ip: Option<IpAddr>,
    /// The client connection is TLS (`x-forwarded-proto: https`).
    pub tls: bool,
    pub route: Option<RouteCtx>,
    /// Set once the route matched and unit routing decided.
    pub unit: Option<UnitCtx>,
    pub attempts: AttemptCtx,
    /// Why the answer was degraded, when it was.
    pub degraded: Option<unitgate_plugins::fallback::Reason>,
    /// Refused by a rate limit.
    pub limited: bool,
    /// The admitting verdict with the least room left, for `RateLimit-*`.
    pub rate: Option<unitgate_plugins::ratelimit::Verdict>,
    _inflight: InflightGuard,
}

/// What matching decided.
pub struct RouteCtx {
    pub id: RouteId,
    /// The service that serves the request: the route's own, or the one a
    /// split chose.
    pub service: ServiceId,
    /// The split's choice (`RouteSplits::choices` index); 0 = the route's
    /// own service, and always 0 on a route without splits.
    pub split: u8,
    /// This request counts against the route's `max_inflight`.
    pub holds_inflight: bool,
    /// Key for consistent hashing (routing key, else client address); empty
    /// for other balancing policies.
    pub hash_key: Vec<u8>,
}

/// How an attempt failed, for degraded reasons and status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Never reached the backend.
    Connect,
    Timeout,
    /// Reset, bad response, or a 5xx status.
    Error,
}

/// Upstream attempts so far.
#[derive(Default)]
pub struct AttemptCtx {
    /// Position in the candidate unit list the last pick came from.
    pub unit_pos: usize,
    /// Instances that failed for this request; never picked again.
    pub tried: Vec<SocketAddr>,
    /// The instance of the attempt under way.
    pub current: Option<(UnitId, SocketAddr)>,
    /// The sibling this request last crossed to (counted once per unit).
    pub crossed_to: Option<UnitId>,
    /// The current attempt is a half-open circuit's probe.
    pub probe: bool,
    /// The current attempt's outcome was fed to ejection and breaker.
    pub recorded: bool,
    /// A candidate unit was skipped because its circuit was open.
    pub circuit_skipped: bool,
    /// How the last failed attempt failed.
    pub last_failure: Option<Failure>,
    pub count: u32,
    pub connect_failures: u32,
    /// Extra attempts after a failure once the request had reached a backend.
    pub retries: u32,
    /// Counts the current attempt in its instance's in-flight requests
    /// (`least_conn`, `/admin/v1/health`) until the next attempt or the end
    /// of the request, however it ends.
    pub in_flight: Option<crate::pool::InFlight>,
}

struct InflightGuard;

impl InflightGuard {
    fn new() -> Self {
        INFLIGHT.fetch_add(1, Ordering::Relaxed);
        InflightGuard
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        INFLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RequestCtx {
    /// The request id as text, for logs and error bodies.
    pub fn request_id_str(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    pub fn new() -> Self {
        RequestCtx {
            started: std::time::Instant::now(),
            snapshot: None,
            request_id: http::HeaderValue::from_static(""),
            trace: super::trace::Trace::NONE,
            span_target: None,
            raw_path: None,
            body_bytes: 0,
            client_ip: None,
            tls: false,
            route: None,
            unit: None,
            attempts: AttemptCtx::default(),
            degraded: None,
            limited: false,
            rate: None,
            _inflight: InflightGuard::new(),
        }
    }
}

impl AttemptCtx {
    /// The unit that served (or last tried to serve) the request.
    pub fn served(&self) -> Option<UnitId> {
        self.current.map(|(unit, _)| unit)
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        if let (Some(snap), Some(rc)) = (&self.snapshot, &self.route) {
            if rc.holds_inflight {
                snap.routes[rc.id]
                    .counters
                    .inflight
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
