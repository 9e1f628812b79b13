//! unitgate request plugins: rate limiting (local and global), JWT
//! verification, circuit breaking, outlier ejection and degraded fallbacks.
//!
//! Each plugin is a small module with its own typed config (validated by
//! `unitgate-config` at load) that returns an explicit decision. Plugins know
//! nothing of pingora's hooks or of the admin API, and take the time as an
//! argument (`now_ms`, monotonic) so their behaviour is testable to the
//! millisecond. The gateway calls them in the order the request path gives.

pub mod breaker;
pub mod fallback;
pub mod jwt;
pub mod outlier;
pub mod ratelimit;
