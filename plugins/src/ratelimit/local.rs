//! Local limits: governor's GCRA per key, in this process.
//!
//! Keyed state lives in a concurrent map; [`LocalLimiter::evict_idle`] drops
//! every key whose bucket is full again (it would behave exactly like a new
//! one), so keys do not accumulate: the gateway calls it every few seconds.

use super::{ceil_secs, Shape, Verdict};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;

type Keyed = DefaultKeyedRateLimiter<String, StateInformationMiddleware>;
type Direct = DefaultDirectRateLimiter<StateInformationMiddleware>;

pub struct LocalLimiter {
    shape: Shape,
    clock: DefaultClock,
    store: Store,
}

enum Store {
    /// One bucket per key (user, ip, header).
    Keyed(Keyed),
    /// One bucket for the whole route.
    Single(Direct),
}

impl LocalLimiter {
    pub fn new(shape: Shape, keyed: bool) -> Self {
        let burst = NonZeroU32::new(u32::try_from(shape.capacity).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        // `with_period` only fails for a zero period, which Shape never makes;
        // fall back to one token per nanosecond rather than panic.
        let quota = Quota::with_period(shape.refill_every)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        let store = if keyed {
            Store::Keyed(
                governor::RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            )
        } else {
            Store::Single(
                governor::RateLimiter::direct(quota)
                    .with_middleware::<StateInformationMiddleware>(),
            )
        };
        LocalLimiter {
            shape,
            clock: DefaultClock::default(),
            store,
        }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Takes one token for `key` (ignored by a single-bucket limiter).
    pub fn check(&self, key: &str) -> Verdict {
        let outcome = match &self.store {
            Store::Keyed(l) => l.check_key(&key.to_owned()),
            Store::Single(l) => l.check(),
        };
        match outcome {
            Ok(state) => {
                let remaining = u64::from(state.remaining_burst_capacity());
                let missing = self.shape.capacity.saturating_sub(remaining + 1) + 1;
                let reset = self.shape.refill_every * u32::try_from(missing).unwrap_or(u32::MAX);
                Verdict {
                    allowed: true,
                    limit: self.shape.limit,
                    remaining,
                    reset_secs: ceil_secs(reset),
                    retry_after_secs: 0,
                }
            }
            Err(not_until) => {
                let wait = ceil_secs(not_until.wait_time_from(self.clock.now())).max(1);
                Verdict {
                    allowed: false,
                    limit: self.shape.limit,
                    remaining: 0,
                    reset_secs: wait,
                    retry_after_secs: wait,
                }
            }
        }
    }

    /// Forgets keys whose buckets are full again; returns the keys left.
    pub fn evict_idle(&self) -> usize {
        match &self.store {
            Store::Keyed(l) => {
                l.retain_recent();
                l.shrink_to_fit();
                l.len()
            }
            Store::Single(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use unitgate_config::Rate;

    fn rate(count: u64, per: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(per),
        }
    }

    #[test]
    fn admits_rate_plus_burst_then_refuses_with_headers() {
        let l = LocalLimiter::new(Shape::new(rate(5, 1), 3, 1), true);
        let verdicts: Vec<Verdict> = (0..9).map(|_| l.check("u1")).collect();
        assert!(verdicts[..8].iter().all(|v| v.allowed), "{verdicts:?}");
        assert_eq!(verdicts[0].remaining, 7);
        assert_eq!(verdicts[7].remaining, 0);
        let refused = verdicts[8];
        assert!(!refused.allowed);
        assert_eq!((refused.limit, refused.remaining), (5, 0));
        assert!(refused.retry_after_secs >= 1);
        // Another key has its own bucket.
        assert!(l.check("u2").allowed);
    }

    #[test]
    fn single_bucket_ignores_the_key() {
        let l = LocalLimiter::new(Shape::new(rate(2, 60), 0, 1), false);
        assert!(l.check("a").allowed);
        assert!(l.check("b").allowed);
        let v = l.check("c");
        assert!(!v.allowed);
        assert_eq!(v.retry_after_secs, 30, "one token every 30 s");
    }

    #[test]
    fn fleet_share_divides_the_rate() {
        let s = Shape::new(rate(100, 1), 50, 4);
        assert_eq!((s.limit, s.capacity), (25, 37));
        assert_eq!(s.refill_every, Duration::from_millis(40));
    }

    #[test]
    fn idle_keys_are_evicted() {
        let l = LocalLimiter::new(Shape::new(rate(1000, 1), 0, 1), true);
        for i in 0..100 {
            l.check(&format!("k{i}"));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(l.evict_idle(), 0, "buckets refilled after 1 ms each");
    }
}
