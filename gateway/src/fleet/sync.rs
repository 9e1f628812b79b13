//! Keeping one gateway in step with the fleet's store: linearizable read at
//! revision R, apply, watch from R+1; on compaction, disconnect or error,
//! read again and watch again. A periodic reconcile read catches what a
//! watch may have missed, and a peer's newer epoch ([`super::RESYNC`])
//! triggers one at once. This gateway's status entry lives under a lease
//! for as long as the loop runs.

use super::{list_gateways, RESYNC};
use crate::control::{ControlPlane, EtcdSource, Source};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use unitgate_store::WatchEvent;

/// How often the store is read even when the watch is quiet.
const RECONCILE: Duration = Duration::from_secs(5);
/// How often the fleet's gateways are listed (metrics, lag).
const LIST_EVERY: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct FleetSync(pub Arc<ControlPlane>);

#[async_trait]
impl BackgroundService for FleetSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let control = self.0.clone();
        let Source::Etcd(src) = &control.source else {
            return;
        };
        let key = format!("gateways/{}", src.gateway_id);
        let record = control.status_record().to_string().into_bytes();
        let leased = src.store.leased_key(&key, src.lease_secs as i64, record);
        if let Ok(mut status) = src.status.lock() {
            *status = Some(leased);
        }
        let mut backoff = BACKOFF_MIN;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                ok = sync_once(&control, src) => {
                    if ok {
                        backoff = BACKOFF_MIN;
                    } else {
                        tokio::select! {
                            _ = shutdown.changed() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        // Dropping the leased key revokes it: the fleet stops waiting for us.
        let leased = src.status.lock().ok().and_then(|mut s| s.take());
        drop(leased);
    }
}

/// One read + watch cycle; returns when the watch must be re-established.
/// `false` when the store could not be reached at all (back off).
async fn sync_once(control: &ControlPlane, src: &EtcdSource) -> bool {
    let from = match read_and_apply(control, src, "store").await {
        Some(revision) => revision + 1,
        None => return false,
    };
    let mut watch = match src.store.watch_config(from).await {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!("watch not established: {e}");
            src.mark_up(false);
            return false;
        }
    };
    let mut reconcile = tokio::time::interval(RECONCILE);
    reconcile.tick().await;
    let mut list = tokio::time::interval(LIST_EVERY);
    loop {
        tokio::select! {
            event = watch.next() => match event {
                Some(WatchEvent::Put(doc)) => {
                    src.mark_up(true);
                    let _ = control.apply_doc(&doc, "watch");
                }
                Some(WatchEvent::Deleted { mod_revision }) => {
                    tracing::warn!(revision = mod_revision, "the fleet config was deleted from the store; keeping the running config");
                }
                Some(WatchEvent::Compacted { compact_revision }) => {
                    tracing::info!(compact_revision, "watch compacted; re-reading the store");
                    return true;
                }
                Some(WatchEvent::Error(e)) => {
                    tracing::debug!("watch error: {e}; re-reading the store");
                    return true;
                }
                None => return true,
            },
            _ = reconcile.tick() => {
                if read_and_apply(control, src, "reconcile").await.is_none() {
                    return false;
                }
            }
            _ = RESYNC.notified() => {
                if read_and_apply(control, src, "peer epoch").await.is_none() {
                    return false;
                }
            }
            _ = list.tick() => refresh_counts(control, src).await,
        }
    }
}

/// Reads the fleet document and applies it if newer; the header revision,
/// or `None` when the store is unreachable.
async fn read_and_apply(
    control: &ControlPlane,
    src: &EtcdSource,
    source: &'static str,
) -> Option<i64> {
    match src.store.read_config().await {
        Ok((doc, revision)) => {
            src.mark_up(true);
            match doc {
                Some(doc) => {
                    let _ = control.apply_doc(&doc, source);
                }
                None if !src.has_config.load(Ordering::Relaxed) => {
                    tracing::warn!("the store holds no fleet config under {}: seed it with `unitgate fleet init`", src.store.prefix());
                }
                None => {}
            }
            Some(revision)
        }
        Err(e) => {
            tracing::debug!("store read failed: {e}");
            src.mark_up(false);
            None
        }
    }
}

/// Counts the fleet's live gateways as in sync or lagging, for metrics.
async fn refresh_counts(control: &ControlPlane, src: &EtcdSource) {
    let Ok(gateways) = list_gateways(&src.store).await else {
        return;
    };
    let ours = control.current().1;
    let epoch = control.snapshot.load().config.routing.epoch;
    let in_sync = gateways
        .iter()
        .filter(|g| g.in_sync(ours.trim_matches('"'), epoch))
        .count();
    src.fleet_counts[0].store(in_sync as u64, Ordering::Relaxed);
    src.fleet_counts[1].store((gateways.len() - in_sync) as u64, Ordering::Relaxed);
}
