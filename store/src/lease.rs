//! Keys kept alive under a lease: a gateway's status entry, which vanishes
//! when the gateway stops renewing it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::{watch, Notify};

use crate::{EtcdStore, Expect, StoreError};

/// How a lease-holding task is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Run,
    /// Stop and revoke the lease (its keys go at once).
    Revoke,
    /// Stop without revoking: the lease expires after its TTL.
    Abandon,
}

/// Resolves when the owner asks the task to stop; an owner that vanished
/// without saying counts as `Revoke`.
pub(crate) async fn stopped(rx: &mut watch::Receiver<Stop>) -> Stop {
    loop {
        let cmd = *rx.borrow_and_update();
        if cmd != Stop::Run {
            return cmd;
        }
        if rx.changed().await.is_err() {
            return Stop::Revoke;
        }
    }
}

/// How often to renew a lease of `ttl_secs`: three times per TTL.
pub(crate) fn renew_every(ttl_secs: i64) -> Duration {
    Duration::from_millis((ttl_secs.max(1) as u64) * 1000 / 3).max(Duration::from_millis(100))
}

/// One open keepalive stream of one lease.
pub(crate) struct Keeper {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl Keeper {
    /// One keepalive round trip, bounded by `timeout`. Returns the instant
    /// until which the lease is now known to live (measured from before the
    /// request was sent, so it errs early).
    pub(crate) async fn renew(&mut self, timeout: Duration) -> Result<Instant, StoreError> {
        let sent = Instant::now();
        let round_trip = async {
            self.keeper.keep_alive().await?;
            self.stream.message().await
        };
        match tokio::time::timeout(timeout, round_trip).await {
            Err(_) => Err(StoreError::Unavailable(format!(
                "lease keepalive: no answer within {timeout:?}"
            ))),
            Ok(Err(e)) => Err(crate::conn::map_error("lease keepalive", e)),
            Ok(Ok(None)) => Err(StoreError::Unavailable(
                "lease keepalive: stream closed".into(),
            )),
            Ok(Ok(Some(resp))) if resp.ttl() <= 0 => Err(StoreError::Other(format!(
                "lease {:x} is lost",
                self.keeper.id()
            ))),
            Ok(Ok(Some(resp))) => Ok(sent + Duration::from_secs(resp.ttl() as u64)),
        }
    }
}

impl EtcdStore {
    pub(crate) async fn grant(&self, ttl_secs: i64) -> Result<i64, StoreError> {
        let resp = self
            .call("lease grant", |mut c| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?;
        Ok(resp.id())
    }

    pub(crate) async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        self.call("lease revoke", |mut c| async move {
            c.lease_revoke(lease).await
        })
        .await
        .map(drop)
    }

    /// Opens a keepalive stream; etcd-client renews once while opening, so
    /// this fails if the lease is already gone.
    pub(crate) async fn keep_alive(&self, lease: i64) -> Result<Keeper, StoreError> {
        let (keeper, stream) = self
            .call("lease keepalive", |mut c| async move {
                c.lease_keep_alive(lease).await
            })
            .await?;
        Ok(Keeper { keeper, stream })
    }

    /// A key (relative to the prefix) kept alive under a lease of
    /// `ttl_secs` by a background task: grant, put, renew every `ttl/3`; on
    /// any failure it starts over (new lease, put again) with backoff, until
    /// the [`LeasedKey`] is dropped. Dropping it revokes the lease, so the
    /// key goes at once. Must be called inside a tokio runtime.
    pub fn leased_key(&self, key: &str, ttl_secs: i64, value: Vec<u8>) -> LeasedKey {
        let shared = Arc::new(Shared {
            value: Mutex::new(value),
            changed: Notify::new(),
            live: AtomicBool::new(false),
        });
        let (stop, rx) = watch::channel(Stop::Run);
        tokio::spawn(keep_key(
            self.clone(),
            self.full_key(key),
            ttl_secs,
            shared.clone(),
            rx,
        ));
        LeasedKey { shared, stop }
    }
}

/// A key kept alive under a lease; see [`EtcdStore::leased_key`].
pub struct LeasedKey {
    shared: Arc<Shared>,
    stop: watch::Sender<Stop>,
}

struct Shared {
    value: Mutex<Vec<u8>>,
    /// Wakes the task to put a value given to `set`.
    changed: Notify,
    /// The key was put under the current lease and its last renewal worked.
    live: AtomicBool,
}

impl Shared {
    fn value(&self) -> Vec<u8> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // Vec inside is still whole, so keep using it.
        self.value
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl std::fmt::Debug for LeasedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedKey")
            .field("live", &self.is_live())
            .finish_non_exhaustive()
    }
}

impl LeasedKey {
    /// Replaces the value: put at once if the key is live, else with the
    /// next (re)put.
    pub fn set(&self, value: Vec<u8>) {
        *self
            .shared
            .value
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = value;
        self.shared.changed.notify_one();
    }

    /// Whether the key is in etcd under a lease that was renewed lately.
    pub fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::Acquire)
    }

    /// Stops renewing WITHOUT revoking, so the key stays until its lease
    /// expires — what a crashed gateway leaves behind. For tests.
    #[doc(hidden)]
    pub fn abandon(self) {
        self.stop.send_replace(Stop::Abandon);
    }
}

impl Drop for LeasedKey {
    fn drop(&mut self) {
        self.stop.send_if_modified(|cmd| {
            let run = *cmd == Stop::Run;
            if run {
                *cmd = Stop::Revoke;
            }
            run
        });
    }
}

/// Doubling pause between attempts, 100 ms up to `max`.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(100),
            max,
        }
    }
    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }
    pub(crate) fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

/// The task behind a [`LeasedKey`].
async fn keep_key(
    store: EtcdStore,
    key: String,
    ttl_secs: i64,
    shared: Arc<Shared>,
    mut rx: watch::Receiver<Stop>,
) {
    // The lease currently holding the key, so stopping can revoke it.
    let mut lease: Option<i64> = None;
    let mut backoff = Backoff::new(renew_every(ttl_secs).min(Duration::from_secs(2)));
    let stop = loop {
        tokio::select! {
            biased;
            cmd = stopped(&mut rx) => break cmd,
            err = session(&store, &key, ttl_secs, &shared, &mut lease, &mut backoff) => {
                shared.live.store(false, Ordering::Release);
                tracing::warn!(%key, error = %err, "leased key lost; putting it again");
            }
        }
        tokio::select! {
            biased;
            cmd = stopped(&mut rx) => break cmd,
            () = tokio::time::sleep(backoff.step()) => {}
        }
    };
    shared.live.store(false, Ordering::Release);
    if let (Stop::Revoke, Some(id)) = (stop, lease) {
        if let Err(e) = store.revoke(id).await {
            tracing::debug!(%key, error = %e, "revoking the lease of a dropped key failed");
        }
    }
}

/// Grant, put, then renew (and re-put on `set`) until something fails.
async fn session(
    store: &EtcdStore,
    key: &str,
    ttl_secs: i64,
    shared: &Shared,
    lease: &mut Option<i64>,
    backoff: &mut Backoff,
) -> StoreError {
    let id = match store.grant(ttl_secs).await {
        Ok(id) => id,
        Err(e) => return e,
    };
    let old = lease.replace(id);
    if let Err(e) = store
        .put_full(key.to_owned(), shared.value(), Expect::Any, Some(id))
        .await
    {
        return e;
    }
    if let Some(old) = old {
        // The key now hangs on the new lease, so revoking the old one only
        // frees it sooner than its TTL would.
        let store = store.clone();
        tokio::spawn(async move { store.revoke(old).await });
    }
    let mut keeper = match store.keep_alive(id).await {
        Ok(k) => k,
        Err(e) => return e,
    };
    shared.live.store(true, Ordering::Release);
    backoff.reset();
    let mut tick = tokio::time::interval(renew_every(ttl_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; keep_alive just renewed
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = keeper.renew(store.timeout()).await {
                    return e;
                }
            }
            () = shared.changed.notified() => {
                let put = store.put_full(key.to_owned(), shared.value(), Expect::Any, Some(id));
                if let Err(e) = put.await {
                    return e;
                }
            }
        }
    }
}
