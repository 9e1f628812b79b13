//! Circuit breaker per (service, unit): closed -> open when the failure ratio
//! over a sliding window reaches the threshold with enough requests; open for
//! `open_ms`; then half-open, letting a few probes through; closed again on a
//! probe's success, open again on its failure.
//!
//! Lock-free: the window is a ring of atomic buckets, the state an atomic. A
//! bucket is recycled by the first writer that sees it stale; a racing count
//! can land in a just-recycled bucket, an inaccuracy of a request or two that
//! a ratio over `min_requests` absorbs.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use unitgate_config::CircuitBreaker as BreakerConfig;

const BUCKETS: usize = 10;
/// Probes allowed at once while half-open.
pub const MAX_PROBES: u32 = 3;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The breaker's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Half-open: this request is a probe; report its outcome with `probe = true`.
    Probe,
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Which `now_ms / bucket_ms` period the counts belong to.
    period: AtomicU64,
    ok: AtomicU32,
    failed: AtomicU32,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    failure_ratio: f64,
    min_requests: u32,
    bucket_ms: u64,
    open_ms: u64,
    buckets: [Bucket; BUCKETS],
    state: AtomicU8,
    opened_at: AtomicU64,
    probes: AtomicU32,
}

impl CircuitBreaker {
    pub fn new(cfg: &BreakerConfig) -> Self {
        let window_ms = cfg.window.as_millis().max(BUCKETS as u128) as u64;
        CircuitBreaker {
            failure_ratio: cfg.failure_ratio,
            min_requests: cfg.min_requests.max(1),
            bucket_ms: window_ms / BUCKETS as u64,
            open_ms: cfg.open.as_millis() as u64,
            buckets: Default::default(),
            state: AtomicU8::new(CLOSED),
            opened_at: AtomicU64::new(0),
            probes: AtomicU32::new(0),
        }
    }

    pub fn state(&self, now_ms: u64) -> State {
        match self.state.load(Ordering::Acquire) {
            CLOSED => State::Closed,
            OPEN if now_ms >= self.opened_at.load(Ordering::Acquire) + self.open_ms => {
                State::HalfOpen
            }
            OPEN => State::Open,
            _ => State::HalfOpen,
        }
    }

    /// Whether a request may go to this (service, unit) now.
    pub fn admit(&self, now_ms: u64) -> Admission {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admission::Allowed,
            OPEN => {
                if now_ms < self.opened_at.load(Ordering::Acquire) + self.open_ms {
                    return Admission::Rejected;
                }
                // Open time is over: the first request to notice moves to half-open.
                let _ = self.state.compare_exchange(
                    OPEN,
                    HALF_OPEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                self.try_probe()
            }
            _ => self.try_probe(),
        }
    }

    fn try_probe(&self) -> Admission {
        let taken = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < MAX_PROBES).then_some(p + 1)
            });
        if taken.is_ok() {
            Admission::Probe
        } else {
            Admission::Rejected
        }
    }

    /// Gives back a probe slot that was admitted but never used.
    pub fn release_probe(&self) {
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| p.checked_sub(1));
    }

    /// Records an attempt's outcome. Returns `Some(new_state)` when this
    /// outcome changed the state (for logging).
    pub fn record(&self, now_ms: u64, success: bool, probe: bool) -> Option<State> {
        if probe {
            self.release_probe();
            if self.state.load(Ordering::Acquire) != HALF_OPEN {
                return None;
            }
            return if success {
                self.reset_window();
                self.state.store(CLOSED, Ordering::Release);
                Some(State::Closed)
            } else {
                self.open(now_ms);
                Some(State::Open)
            };
        }
        if self.state.load(Ordering::Acquire) != CLOSED {
            // Outcomes of requests admitted before the circuit opened.
            return None;
        }
        let bucket = self.bucket(now_ms);
        if success {
            bucket.ok.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        bucket.failed.fetch_add(1, Ordering::Relaxed);
        let (ok, failed) = self.totals(now_ms);
        let total = ok + failed;
        let tripped = total >= self.min_requests
            && f64::from(failed) >= self.failure_ratio * f64::from(total);
        if tripped
            && self
                .state
                .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.opened_at.store(now_ms, Ordering::Release);
            return Some(State::Open);
        }
        None
    }

    fn open(&self, now_ms: u64) {
        self.opened_at.store(now_ms, Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
    }

    fn bucket(&self, now_ms: u64) -> &Bucket {
        let period = now_ms / self.bucket_ms;
        let b = &self.buckets[(period % BUCKETS as u64) as usize];
        let seen = b.period.load(Ordering::Acquire);
        if seen != period
            && b.period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.ok.store(0, Ordering::Relaxed);
            b.failed.store(0, Ordering::Relaxed);
        }
        b
    }

    /// (ok, failed) over the buckets of the current window.
    fn totals(&self, now_ms: u64) -> (u32, u32) {
        let current = now_ms / self.bucket_ms;
        self.buckets
            .iter()
            .filter(|b| current - b.period.load(Ordering::Acquire).min(current) < BUCKETS as u64)
            .fold((0, 0), |(ok, failed), b| {
                (
                    ok + b.ok.load(Ordering::Relaxed),
                    failed + b.failed.load(Ordering::Relaxed),
                )
            })
    }

    fn reset_window(&self) {
        for b in &self.buckets {
            b.ok.store(0, Ordering::Relaxed);
            b.failed.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(&BreakerConfig {
            failure_ratio: 0.5,
            min_requests: 10,
            window: Duration::from_millis(1000),
            open: Duration::from_millis(500),
        })
    }

    #[test]
    fn opens_at_the_ratio_with_enough_requests() {
        let b = breaker();
        for i in 0..9 {
            assert_eq!(b.record(100 + i, false, false), None, "below min_requests");
        }
        assert_eq!(b.record(110, false, false), Some(State::Open));
        assert_eq!(b.admit(200), Admission::Rejected);
        assert_eq!(b.state(200), State::Open);
    }

    #[test]
    fn stays_closed_below_the_ratio() {
        let b = breaker();
        for i in 0..20 {
            b.record(100 + i, i % 3 == 0, false); // 1 ok in 3: ratio 0.65 failed
        }
        assert_eq!(b.state(200), State::Open);
        let b = breaker();
        for i in 0..20 {
            b.record(100 + i, i % 3 != 0, false); // ratio 0.35 failed
        }
        assert_eq!(b.state(200), State::Closed);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let b = breaker();
        for i in 0..9 {
            b.record(i, false, false);
        }
        // 1.5 s later the first nine are outside the 1 s window.
        assert_eq!(b.record(1500, false, false), None);
        assert_eq!(b.state(1500), State::Closed);
    }

    #[test]
    fn half_open_probes_close_or_reopen() {
        let b = breaker();
        for i in 0..10 {
            b.record(i, false, false);
        }
        assert_eq!(b.admit(400), Admission::Rejected);
        // After open_ms: a limited number of probes.
        let probes: Vec<_> = (0..5).map(|_| b.admit(600)).collect();
        assert_eq!(
            probes.iter().filter(|a| **a == Admission::Probe).count(),
            MAX_PROBES as usize
        );
        assert_eq!(b.state(600), State::HalfOpen);
        // A failed probe reopens for another open_ms.
        assert_eq!(b.record(610, false, true), Some(State::Open));
        assert_eq!(b.admit(900), Admission::Rejected);
        assert_eq!(b.admit(1200), Admission::Probe);
        assert_eq!(b.record(1210, true, true), Some(State::Closed));
        assert_eq!(b.admit(1220), Admission::Allowed);
        // The window restarted: one failure does not reopen it.
        assert_eq!(b.record(1230, false, false), None);
    }
}
