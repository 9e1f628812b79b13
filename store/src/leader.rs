//! Leadership on one key, without etcd's lock API: the key exists while its
//! holder's lease lives, and whoever creates it first holds it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::watch;

use crate::lease::{renew_every, stopped, Stop};
use crate::{EtcdStore, StoreError};

/// A held key (see [`EtcdStore::try_acquire`]), kept alive by a background
/// task. Leadership is never regained by itself: once [`Leadership::is_held`]
/// is false, stop acting as leader and try to acquire again.
pub struct Leadership {
    store: EtcdStore,
    key: String,
    lease: i64,
    state: Arc<Held>,
    stop: watch::Sender<Stop>,
}

struct Held {
    /// Cleared for good by the first failed renewal.
    held: AtomicBool,
    /// Until when the lease is known to live, from the last renewal.
    until: Mutex<Instant>,
}

impl EtcdStore {
    /// Takes `key` (relative to the prefix) for `owner` if nobody holds it:
    /// one txn `create_revision(key) == 0 -> put key=owner` under a new lease
    /// of `ttl_secs`. `Ok(None)`: someone else holds it. Must be called inside
    /// a tokio runtime (the lease is renewed by a spawned task).
    pub async fn try_acquire(
        &self,
        key: &str,
        ttl_secs: i64,
        owner: &str,
    ) -> Result<Option<Leadership>, StoreError> {
        let full = self.full_key(key);
        let granted = Instant::now();
        let lease = self.grant(ttl_secs).await?;
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                full.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                full.clone(),
                owner,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let won = self
            .call("acquire", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map(|resp| resp.succeeded());
        match won {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                let store = self.clone();
                tokio::spawn(async move { store.revoke(lease).await });
                return won.map(|_| None);
            }
        }
        let state = Arc::new(Held {
            held: AtomicBool::new(true),
            until: Mutex::new(granted + std::time::Duration::from_secs(ttl_secs.max(1) as u64)),
        });
        let (stop, rx) = watch::channel(Stop::Run);
        tokio::spawn(keep_leadership(
            self.clone(),
            full.clone(),
            lease,
            ttl_secs,
            state.clone(),
            rx,
        ));
        Ok(Some(Leadership {
            store: self.clone(),
            key: full,
            lease,
            state,
            stop,
        }))
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &self.key)
            .field("lease", &format_args!("{:x}", self.lease))
            .field("held", &self.is_held())
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// Whether this is still the holder: every renewal so far worked and the
    /// lease has not outlived its last one.
    pub fn is_held(&self) -> bool {
        let until = *self
            .state
            .until
            .lock()
            // A poisoned lock still holds a whole Instant.
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.state.held.load(Ordering::Acquire) && Instant::now() < until
    }

    /// The lease holding the key, for callers that fence their writes on it.
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    /// Gives the key up: deletes it (if still ours) and revokes the lease.
    pub async fn release(self) -> Result<(), StoreError> {
        self.stop.send_replace(Stop::Abandon);
        self.state.held.store(false, Ordering::Release);
        let (key, lease) = (self.key.clone(), self.lease);
        let txn = Txn::new()
            .when(vec![Compare::lease(key.clone(), CompareOp::Equal, lease)])
            .and_then(vec![TxnOp::delete(key, None)]);
        self.store
            .call("release", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        self.store.revoke(lease).await
    }

    /// Stops renewing WITHOUT revoking, so the key stays until the lease
    /// expires — what a crashed leader leaves behind. For tests.
    #[doc(hidden)]
    pub fn abandon(self) {
        self.stop.send_replace(Stop::Abandon);
        self.state.held.store(false, Ordering::Release);
    }
}

impl Drop for Leadership {
    /// Dropped without `release`: revoke the lease (best effort, from the
    /// renewing task) so a successor need not wait for the TTL.
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

/// Renews the lease every `ttl/3`; the first failure ends the leadership.
async fn keep_leadership(
    store: EtcdStore,
    key: String,
    lease: i64,
    ttl_secs: i64,
    state: Arc<Held>,
    mut rx: watch::Receiver<Stop>,
) {
    let stop = tokio::select! {
        biased;
        cmd = stopped(&mut rx) => cmd,
        err = renew_until_failure(&store, lease, ttl_secs, &state) => {
            state.held.store(false, Ordering::Release);
            tracing::warn!(%key, error = %err, "leadership lost");
            // The key may still be ours for a while; giving the lease back
            // lets a successor in sooner.
            Stop::Revoke
        }
    };
    state.held.store(false, Ordering::Release);
    if stop == Stop::Revoke {
        if let Err(e) = store.revoke(lease).await {
            tracing::debug!(%key, error = %e, "revoking a leadership lease failed");
        }
    }
}

async fn renew_until_failure(
    store: &EtcdStore,
    lease: i64,
    ttl_secs: i64,
    state: &Held,
) -> StoreError {
    let mut keeper = match store.keep_alive(lease).await {
        Ok(k) => k,
        Err(e) => return e,
    };
    let mut tick = tokio::time::interval(renew_every(ttl_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match keeper.renew(store.timeout()).await {
            Ok(until) => {
                *state
                    .until
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = until;
            }
            Err(e) => return e,
        }
    }
}
