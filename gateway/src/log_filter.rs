//! Log lines the gateway's own code does not write, tamed: pingora logs
//! every failed `accept()` at ERROR (out of descriptors, it fails again after
//! a 1 s pause, for as long as the flood lasts). Those are counted in
//! `unitgate_accept_errors_total` and logged at most once per [`INTERVAL_MS`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// One accept failure is logged per interval; the rest only counted.
pub const INTERVAL_MS: u64 = 10_000;
const TARGET: &str = "pingora_core::services::listening";
const PREFIX: &str = "Accept() failed";

static ACCEPT_ERRORS: AtomicU64 = AtomicU64::new(0);
/// `clock::now_ms()` of the last accept failure logged; 0 = never.
static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);

/// Failed `accept()`s since start.
pub fn accept_errors() -> u64 {
    ACCEPT_ERRORS.load(Ordering::Relaxed)
}

/// Counts accept failures and lets one per interval through.
pub struct AcceptErrors;

/// What a bridged `log` record says: its target and whether its message
/// is an accept failure.
#[derive(Default)]
struct Seen {
    target: bool,
    accept: bool,
}

impl Visit for Seen {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "log.target" => self.target = value == TARGET,
            "message" => self.accept = value.starts_with(PREFIX),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.accept = format!("{value:?}").starts_with(PREFIX);
        }
    }
}

impl<S: Subscriber> Layer<S> for AcceptErrors {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        // pingora logs through the `log` crate: bridged records all have the
        // target "log" and carry their own in the `log.target` field. Only
        // ERROR records are looked into.
        let meta = event.metadata();
        if meta.target() != "log" || *meta.level() != tracing::Level::ERROR {
            return true;
        }
        let mut seen = Seen::default();
        event.record(&mut seen);
        if !(seen.target && seen.accept) {
            return true;
        }
        ACCEPT_ERRORS.fetch_add(1, Ordering::Relaxed);
        once_per_interval(&LAST_LOGGED)
    }
}

/// True for the first call, then for the first call at least [`INTERVAL_MS`]
/// after the last true one: for lines a flood would repeat. `last` holds the
/// `clock::now_ms()` of the last true answer (0 = none yet).
pub fn once_per_interval(last: &AtomicU64) -> bool {
    let now = crate::clock::now_ms().max(1);
    let prev = last.load(Ordering::Relaxed);
    (prev == 0 || now.saturating_sub(prev) >= INTERVAL_MS)
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
