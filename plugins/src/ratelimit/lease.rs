//! Token leasing for global limits: a gateway takes a batch of tokens per
//! Redis call and spends them locally, so Redis sees one call per batch, not
//! one per request; and after a refusal it knows when the next token can
//! exist and refuses locally until then.
//!
//! Accuracy: leasing never admits more than the bucket holds (tokens are
//! taken from Redis before they are spent), so the fleet-wide limit holds.
//! What it costs: tokens one gateway holds are not available to another for
//! up to [`LEASE_TTL`]; a lease that is not used up in that time is dropped,
//! so a gateway with little traffic can make the fleet refuse slightly early
//! (at most one batch per gateway per TTL). The batch is sized so a lease
//! lasts ~[`LEASE_WINDOW`] at the gateway's fair share of the rate, and never
//! more than its share of the bucket: limits too low to lease (under two
//! tokens per window per gateway) stay at one call per admitted request.
//! When a lease runs low a refill is fetched in the background, ahead of
//! need, so requests do not wait on Redis while one is on its way.

use super::global::{GlobalLimits, Taken};
use super::{ceil_secs, Shape, Verdict};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A lease is sized to last about this long at the gateway's share of the rate.
pub const LEASE_WINDOW: Duration = Duration::from_millis(100);
/// Unspent leased tokens are dropped after this.
pub const LEASE_TTL: Duration = Duration::from_secs(1);
/// No lease is bigger than this.
const MAX_BATCH: u64 = 1000;
/// Past this many keys, expired entries are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Default)]
struct Lease {
    tokens: u64,
    expires: Option<Instant>,
    /// Refused by Redis: no token can exist before this.
    denied_until: Option<Instant>,
    /// The last verdict from Redis, for the `RateLimit-*` headers.
    last: Option<Verdict>,
    /// A fetch from Redis is on its way.
    fetching: bool,
}

enum Spend {
    Done(Verdict),
    /// This request fetches a batch.
    Fetch,
    /// Another request's fetch is on its way.
    Wait,
}

/// The leases of one global limit, by key.
pub struct Leases {
    pub batch: u64,
    map: Mutex<HashMap<String, Lease>>,
    /// Woken when a fetch finishes.
    fetched: tokio::sync::Notify,
}

impl Leases {
    /// Sized for `shape` shared by `fleet_size` gateways.
    pub fn new(shape: Shape, fleet_size: u32) -> Arc<Self> {
        Arc::new(Leases {
            batch: batch_for(shape, fleet_size),
            map: Mutex::new(HashMap::new()),
            fetched: tokio::sync::Notify::new(),
        })
    }

    /// One request's token for `key` (`prefix` + `key` in Redis). `None`:
    /// Redis is unavailable (the caller applies `on_failure`).
    ///
    /// One fetch per key at a time: requests that find the lease empty
    /// while a fetch is on its way wait for it (at most Redis's timeout, as
    /// their own call would) instead of all asking Redis at once.
    pub async fn check(
        self: &Arc<Self>,
        redis: &Arc<GlobalLimits>,
        prefix: &str,
        key: &str,
        shape: Shape,
    ) -> Option<Verdict> {
        let deadline = tokio::time::Instant::now() + redis.timeout();
        loop {
            let notified = self.fetched.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.spend(redis, prefix, key, shape, Instant::now()) {
                Spend::Done(v) => return Some(v),
                Spend::Fetch => break,
                Spend::Wait => {
                    // The fetch on its way took Redis's whole timeout: as
                    // if this request's own call had (`on_failure` applies).
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return None;
                    }
                }
            }
        }
        let got = redis
            .take(&format!("{prefix}{key}"), shape, self.batch)
            .await;
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() > SWEEP_AT {
            map.retain(|_, l| {
                l.expires.is_some_and(|e| e > now) || l.denied_until.is_some_and(|d| d > now)
            });
        }
        let lease = map.entry(key.to_owned()).or_default();
        lease.fetching = false;
        self.fetched.notify_waiters();
        let got = got?;
        let verdict = self.store(lease, got, shape, now);
        if got.tokens == 0 {
            return Some(verdict);
        }
        // This request takes one of the tokens fetched.
        lease.tokens -= 1;
        Some(verdict)
    }

    /// Records a fetch in `lease`; the verdict for the request that made it.
    fn store(&self, lease: &mut Lease, got: Taken, shape: Shape, now: Instant) -> Verdict {
        lease.last = Some(got.verdict);
        if got.tokens == 0 {
            // Empty: refuse here until a batch can have built up again
            // (at least until the next token exists), then take it whole.
            let refill = shape
                .refill_every
                .saturating_mul(self.batch.min(u64::from(u32::MAX)) as u32);
            lease.denied_until = Some(now + got.wait.max(refill));
            return got.verdict;
        }
        lease.denied_until = None;
        if lease.expires.is_none_or(|e| e <= now) {
            lease.tokens = 0;
        }
        lease.tokens += got.tokens;
        lease.expires = Some(now + LEASE_TTL);
        got.verdict
    }

    /// Serves from the lease or refuses during a known refusal, else says
    /// whether this request fetches or waits for a fetch on its way.
    fn spend(
        self: &Arc<Self>,
        redis: &Arc<GlobalLimits>,
        prefix: &str,
        key: &str,
        shape: Shape,
        now: Instant,
    ) -> Spend {
        let mut map = self.lock();
        let Some(lease) = map.get_mut(key) else {
            map.insert(
                key.to_owned(),
                Lease {
                    fetching: true,
                    ..Lease::default()
                },
            );
            return Spend::Fetch;
        };
        if let (Some(until), Some(last)) = (lease.denied_until.filter(|d| *d > now), lease.last) {
            let wait = ceil_secs(until - now).max(1);
            return Spend::Done(Verdict {
                allowed: false,
                remaining: 0,
                reset_secs: wait,
                retry_after_secs: wait,
                ..last
            });
        }
        let live = lease.tokens > 0 && lease.expires.is_some_and(|e| e > now);
        let Some(last) = lease.last.filter(|_| live) else {
            if lease.fetching {
                return Spend::Wait;
            }
            lease.fetching = true;
            return Spend::Fetch;
        };
        lease.tokens -= 1;
        let verdict = Verdict {
            allowed: true,
            remaining: last.remaining + lease.tokens,
            retry_after_secs: 0,
            ..last
        };
        // Running low: fetch the next batch before it is needed.
        if self.batch > 1 && lease.tokens < self.batch.div_ceil(4) && !lease.fetching {
            lease.fetching = true;
            drop(map);
            let (me, redis) = (self.clone(), redis.clone());
            let (key, redis_key) = (key.to_owned(), format!("{prefix}{key}"));
            tokio::spawn(async move { me.refill(&redis, &key, &redis_key, shape).await });
        }
        Spend::Done(verdict)
    }

    async fn refill(&self, redis: &GlobalLimits, key: &str, redis_key: &str, shape: Shape) {
        let got = redis.take(redis_key, shape, self.batch).await;
        let now = Instant::now();
        let mut map = self.lock();
        if let Some(lease) = map.get_mut(key) {
            lease.fetching = false;
            if let Some(got) = got {
                self.store(lease, got, shape, now);
            }
        }
        drop(map);
        self.fetched.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Tokens per Redis call: a [`LEASE_WINDOW`] of the gateway's fair share
/// of the rate, at most its share of the bucket, at least 1.
pub fn batch_for(shape: Shape, fleet_size: u32) -> u64 {
    let fleet = u64::from(fleet_size.max(1));
    let per_window = LEASE_WINDOW.as_secs_f64() / shape.refill_every.as_secs_f64();
    let share = (per_window / fleet as f64).floor() as u64;
    share.min(shape.capacity / fleet).clamp(1, MAX_BATCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use unitgate_config::Rate;

    fn shape(count: u64, per_secs: u64, burst: u32) -> Shape {
        Shape::new(
            Rate {
                count,
                per: Duration::from_secs(per_secs),
            },
            burst,
            1,
        )
    }

    #[test]
    fn batches_last_a_window_of_the_fair_share() {
        // 100/s over 3 gateways: 33/s each, 3 per 100 ms.
        assert_eq!(batch_for(shape(100, 1, 0), 3), 3);
        assert_eq!(batch_for(shape(10_000, 1, 0), 1), 1000);
        assert_eq!(batch_for(shape(10_000, 1, 0), 4), 250);
        // Too slow to lease: one call per request, as without leasing.
        assert_eq!(batch_for(shape(20, 1, 0), 3), 1);
        assert_eq!(batch_for(shape(5, 60, 3), 1), 1);
        // Never more than the gateway's share of the bucket.
        assert_eq!(batch_for(shape(1_000_000, 1, 0), 1), MAX_BATCH);
    }
}
