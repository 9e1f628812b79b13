//! The fleet: every gateway of a deployment, agreeing on one shard map.
//!
//! - [`sync`]: one gateway following the store (read, watch, reconcile) and
//!   publishing its status under a lease;
//! - [`migration`]: slot migrations as a sequence of epochs with barriers,
//!   driven by exactly one gateway at a time;
//! - [`ranges`]: slot-set arithmetic for migrations.
//!
//! Keys under the store's prefix: `config` (the fleet document),
//! `gateways/<id>` (status, leased), `migrations/<id>` (a migration's record),
//! `lock/migration` (the driving gateway, leased). With `kind = "file"` the
//! fleet is this one gateway and the same API answers from memory.

pub mod boot;
pub mod cli;
pub mod migration;
pub mod ranges;
pub mod sync;

use crate::control::{ControlPlane, Source};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;
use unitgate_store::{EtcdStore, StoreError};

/// Wakes the sync loop for an immediate read of the store.
pub static RESYNC: Notify = Notify::const_new();
/// Requests from trusted peers that carried a newer epoch than ours.
pub static PEER_EPOCH_AHEAD: AtomicU64 = AtomicU64::new(0);
/// When the last peer-triggered read was asked for (ms on [`crate::clock`]).
static LAST_RESYNC_MS: AtomicU64 = AtomicU64::new(0);
/// At most one peer-triggered store read per this many milliseconds, however
/// many requests carry a newer epoch.
const RESYNC_EVERY_MS: u64 = 100;

/// Called on a request from a trusted peer with `x-unit-epoch: peer`: a
/// newer epoch than ours means the store moved and we have not seen it yet.
/// An older one is served on our (newer) map: the newest epoch wins.
pub fn note_peer_epoch(peer: u64, ours: u64) {
    if peer <= ours {
        return;
    }
    PEER_EPOCH_AHEAD.fetch_add(1, Ordering::Relaxed);
    let now = crate::clock::now_ms();
    let last = LAST_RESYNC_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= RESYNC_EVERY_MS
        && LAST_RESYNC_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        RESYNC.notify_one();
    }
}

/// One gateway's status entry, as published under its lease.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct GatewayStatus {
    pub id: String,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub config_hash: String,
    #[serde(default)]
    pub revision: i64,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub listen: Vec<String>,
    #[serde(default)]
    pub admin: Option<String>,
    #[serde(default)]
    pub updated_unix: u64,
}

impl GatewayStatus {
    /// Runs the fleet document with `hash` at `epoch`.
    pub fn in_sync(&self, hash: &str, epoch: u64) -> bool {
        self.config_hash == hash && self.epoch == epoch
    }
}

/// Every live gateway's status (entries whose lease expired are gone).
pub async fn list_gateways(store: &EtcdStore) -> Result<Vec<GatewayStatus>, StoreError> {
    let entries = store.list("gateways/").await?;
    Ok(entries
        .into_iter()
        .filter_map(|(key, value, _)| match serde_json::from_slice(&value) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::debug!(key, "unreadable gateway status: {e}");
                None
            }
        })
        .collect())
}

/// The live gateways as `/admin/v1/fleet` shows them, and whether the store
/// answered. In file mode: this gateway alone.
pub async fn view(control: &ControlPlane) -> serde_json::Value {
    let epoch = control.snapshot.load().config.routing.epoch;
    let ours = control.current().1.trim_matches('"').to_owned();
    let me = || serde_json::from_value(control.status_record()).ok();
    let (store, connected, mut gateways): (_, _, Vec<GatewayStatus>) = match &control.source {
        Source::File => ("file", true, me().into_iter().collect()),
        Source::Etcd(src) => match list_gateways(&src.store).await {
            Ok(g) => ("etcd", true, g),
            Err(_) => ("etcd", false, me().into_iter().collect()),
        },
    };
    gateways.sort_by(|a, b| a.id.cmp(&b.id));
    let gateways: Vec<serde_json::Value> = gateways
        .into_iter()
        .map(|g| {
            let in_sync = g.in_sync(&ours, epoch);
            let mut v = serde_json::to_value(g).unwrap_or_default();
            if let Some(obj) = v.as_object_mut() {
                obj.insert("in_sync".into(), in_sync.into());
            }
            v
        })
        .collect();
    serde_json::json!({
        "store": store,
        "connected": connected,
        "epoch": epoch,
        "revision": control.revision(),
        "gateways": gateways,
    })
}
