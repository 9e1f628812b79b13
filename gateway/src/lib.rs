//! unitgate: a multi-active, unit-aware API gateway on pingora.
//!
//! This crate wires the pieces: the validated config (`unitgate-config`) is
//! turned into a [`snapshot::Snapshot`] (route table, unit pools), which the
//! pingora proxy ([`proxy::Gateway`]) reads on every request. It owns the
//! request path and the process lifecycle; the admin API and the plugins live
//! in their own crates and know nothing of pingora's hooks.

pub mod access_log;
pub mod balance;
pub mod clock;
pub mod control;
pub mod demo;
pub mod dns;
pub mod echo;
pub mod edge;
pub mod fleet;
pub mod health;
pub mod limits;
pub mod log_filter;
pub mod metrics;
pub mod otlp;
pub mod pool;
pub mod proxy;
pub mod report;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod split;
pub mod tls;
pub mod unit;
pub mod watch;
