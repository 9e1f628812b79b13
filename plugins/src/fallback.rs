//! Degraded responses: what a route answers when nothing can serve it.
//! Built once at config load (the body file was read by validation).

use bytes::Bytes;
use unitgate_config::Fallback as FallbackConfig;

/// Why a request was degraded: the value of `x-unit-degraded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    NoHealthyUnit,
    CircuitOpen,
    UpstreamTimeout,
    UpstreamError,
    Overloaded,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::NoHealthyUnit,
        Reason::CircuitOpen,
        Reason::UpstreamTimeout,
        Reason::UpstreamError,
        Reason::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoHealthyUnit => "no_healthy_unit",
            Reason::CircuitOpen => "circuit_open",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::UpstreamError => "upstream_error",
            Reason::Overloaded => "overloaded",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A route's configured degraded response, ready to write.
#[derive(Debug, Clone)]
pub struct FallbackResponse {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl FallbackResponse {
    pub fn new(cfg: &FallbackConfig) -> Self {
        FallbackResponse {
            status: cfg.status,
            content_type: cfg.content_type.clone(),
            headers: cfg.headers.clone(),
            body: Bytes::from(cfg.body.clone()),
        }
    }
}
