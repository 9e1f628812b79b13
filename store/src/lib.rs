//! The etcd half of the fleet config store: it moves text and byte documents
//! under one key prefix in etcd — the fleet document at `<prefix>/config`
//! (linearizable read, compare-and-swap write, watch), generic keys such as
//! `gateways/<id>` or `migrations/<id>`, keys kept alive under a lease
//! ([`LeasedKey`]) and a lease-based leadership ([`Leadership`]). Every call is
//! bounded by [`Options::timeout`] and reports an unreachable store as
//! [`StoreError::Unavailable`]; the connection is made lazily and remade after
//! transport errors, so one [`EtcdStore`] outlives any etcd outage.
//!
//! It must not know pingora, the config schema or the admin API: documents are
//! opaque text to it, and what a key means is the caller's business.
//!
//! With the `testkit` feature, [`testkit`] starts real etcd members for tests.

mod conn;
mod kv;
mod leader;
mod lease;
mod watch;

#[cfg(feature = "testkit")]
pub mod testkit;

use std::time::Duration;

pub use conn::EtcdStore;
pub use leader::Leadership;
pub use lease::LeasedKey;
pub use watch::{ConfigWatch, WatchEvent};

/// How the store talks to etcd.
#[derive(Debug, Clone)]
pub struct Options {
    /// Deadline of every call (a read, a write, establishing a watch, one
    /// keepalive round trip). Past it the call fails with `Unavailable`.
    pub timeout: Duration,
    /// Deadline of one TCP connect to an endpoint.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// A document as stored: its text and the etcd revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub text: String,
    pub mod_revision: i64,
}

/// Precondition of a write, checked by etcd in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist.
    Absent,
    /// The key's `mod_revision` must equal this (it was not written since).
    Revision(i64),
    /// No precondition.
    Any,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// etcd is unreachable, did not answer in time, or has no leader.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The [`Expect`] of a write did not hold; `current` is the key's
    /// `mod_revision` now (`None`: the key is absent).
    #[error("store conflict: the key changed (current revision {current:?})")]
    Conflict { current: Option<i64> },
    /// Anything else etcd refused, or a value that is not what it should be.
    #[error("store error: {0}")]
    Other(String),
}
