//! unitgate request plugins: rate limiting (local and global), JWT
//! authentication, circuit breaking and degraded fallbacks.
//!
//! Each plugin is a small module with its own typed config (validated by
//! `unitgate-config` at load) that returns an explicit decision for a request.
//! Plugins know nothing of pingora's hooks or of the admin API; the gateway
//! calls them in the order the route's config gives.
//!
//! The foundation release parses and validates every plugin's config section;
//! the behaviour lands with the rate-limit/JWT and resilience releases.
