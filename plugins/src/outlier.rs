//! Passive outlier ejection per instance: `consecutive_failures` failures in a
//! row (connect error, timeout, any 5xx) eject the instance for `eject_ms`,
//! doubling on each re-ejection up to [`CAP_FACTOR`] x `eject_ms`; the
//! doubling resets once the instance stays un-ejected for that cap.
//!
//! The caller decides whether an ejection is allowed (the service's ejection
//! budget: never eject the last un-ejected instance of a service).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use unitgate_config::Outlier as OutlierConfig;

/// Longest ejection, as a multiple of `eject_ms` (Envoy's defaults are 30 s
/// base and 300 s max: the same ratio).
pub const CAP_FACTOR: u64 = 10;

#[derive(Debug, Default)]
pub struct InstanceHealth {
    consecutive: AtomicU32,
    ejected_until: AtomicU64,
    /// Ejections in the current streak; drives the doubling.
    ejections: AtomicU32,
}

impl InstanceHealth {
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until.load(Ordering::Acquire)
    }

    /// Records an outcome. On the failure that reaches the threshold, asks
    /// `may_eject` and, if allowed, ejects: returns the ejection's length.
    pub fn record(
        &self,
        cfg: &OutlierConfig,
        now_ms: u64,
        success: bool,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<u64> {
        if success {
            self.consecutive.store(0, Ordering::Relaxed);
            return None;
        }
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if n < cfg.consecutive_failures || self.is_ejected(now_ms) || !may_eject() {
            return None;
        }
        let base = cfg.eject.as_millis() as u64;
        let cap = base.saturating_mul(CAP_FACTOR);
        let until = self.ejected_until.load(Ordering::Acquire);
        // A long enough clean stretch since the last ejection ended resets the doubling.
        if until != 0 && now_ms.saturating_sub(until) > cap {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let streak = self.ejections.fetch_add(1, Ordering::AcqRel).min(16);
        let length = base.saturating_mul(1 << streak).min(cap);
        self.ejected_until.store(now_ms + length, Ordering::Release);
        self.consecutive.store(0, Ordering::Relaxed);
        Some(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            eject: Duration::from_millis(100),
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let h = InstanceHealth::default();
        assert_eq!(h.record(&cfg(), 0, false, || true), None);
        assert_eq!(h.record(&cfg(), 1, false, || true), None);
        assert_eq!(
            h.record(&cfg(), 2, true, || true),
            None,
            "a success resets the run"
        );
        assert_eq!(h.record(&cfg(), 3, false, || true), None);
        assert_eq!(h.record(&cfg(), 4, false, || true), None);
        assert_eq!(h.record(&cfg(), 5, false, || true), Some(100));
        assert!(h.is_ejected(104));
        assert!(!h.is_ejected(105));
    }

    #[test]
    fn doubles_up_to_the_cap_then_resets_after_a_clean_stretch() {
        let h = InstanceHealth::default();
        let mut now = 0;
        let mut lengths = vec![];
        for _ in 0..6 {
            for _ in 0..3 {
                if let Some(l) = h.record(&cfg(), now, false, || true) {
                    lengths.push(l);
                    now += l;
                }
            }
        }
        assert_eq!(lengths, vec![100, 200, 400, 800, 1000, 1000]);
        // Clean for longer than the cap (1000 ms): back to the base length.
        now += 1001;
        for _ in 0..2 {
            h.record(&cfg(), now, false, || true);
        }
        assert_eq!(h.record(&cfg(), now, false, || true), Some(100));
    }

    #[test]
    fn budget_refusal_keeps_the_instance() {
        let h = InstanceHealth::default();
        for i in 0..5 {
            assert_eq!(h.record(&cfg(), i, false, || false), None);
        }
        assert!(!h.is_ejected(5));
    }
}
