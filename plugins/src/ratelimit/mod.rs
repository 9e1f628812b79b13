//! Rate limiting: local limits in the process (governor's GCRA) and global
//! limits shared through Redis (one atomic Lua script per check).
//!
//! Both answer with a [`Verdict`] carrying what the `RateLimit-*` and
//! `Retry-After` headers need.

pub mod global;
pub mod lease;
pub mod local;

use std::time::Duration;
use unitgate_config::Rate;

/// One limit's decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Requests allowed per window (`RateLimit-Limit`).
    pub limit: u64,
    /// Requests left now (`RateLimit-Remaining`).
    pub remaining: u64,
    /// Seconds until the quota is whole again (`RateLimit-Reset`).
    pub reset_secs: u64,
    /// Seconds until a retry can pass (`Retry-After`), at least 1 when refused.
    pub retry_after_secs: u64,
}

impl Verdict {
    /// Admits without a limit (Redis down with `on_failure = "open"`).
    pub fn open(limit: u64) -> Self {
        Verdict {
            allowed: true,
            limit,
            remaining: limit,
            reset_secs: 0,
            retry_after_secs: 0,
        }
    }

    /// Refuses without knowing more (Redis down with `on_failure = "closed"`).
    pub fn closed(limit: u64) -> Self {
        Verdict {
            allowed: false,
            limit,
            remaining: 0,
            reset_secs: 1,
            retry_after_secs: 1,
        }
    }
}

/// Token-bucket shape of a limit: capacity `count + burst`, one token back
/// every `per / count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub limit: u64,
    pub capacity: u64,
    pub refill_every: Duration,
}

impl Shape {
    /// `divisor` splits the limit (a fleet's local share): rate / divisor.
    pub fn new(rate: Rate, burst: u32, divisor: u32) -> Self {
        let divisor = u64::from(divisor.max(1));
        let count = (rate.count / divisor).max(1);
        let capacity = ((rate.count + u64::from(burst)) / divisor).max(1);
        let refill_every = rate.per / u32::try_from(count).unwrap_or(u32::MAX);
        Shape {
            limit: count,
            capacity,
            refill_every: refill_every.max(Duration::from_nanos(1)),
        }
    }
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
