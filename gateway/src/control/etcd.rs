//! The control plane over etcd: the fleet-wide sections are one document at
//! `<prefix>/config`; a mutation reads it, applies the change, validates the
//! whole result and writes it back with a compare-and-swap on the revision it
//! read. Every gateway (this one included) then applies the new revision from
//! its watch; this one also applies its own write at once, so the admin
//! response already reflects it.
//!
//! Every applied document is also written to `cache_file`, so a gateway that
//! starts while etcd is unreachable boots from the last config it applied.

use super::{lines, unix_now, write_atomically, ChangeError, ControlPlane, Source};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use unitgate_config::fleet::{fleet_document, fleet_hash, parse_fleet, parse_local, RawFleet};
use unitgate_config::{Config, ConfigErrors, RawConfig};
use unitgate_store::{Doc, EtcdStore, Expect, LeasedKey, StoreError};

/// Lost races retried before a mutation gives up (each retry re-reads).
const CAS_ATTEMPTS: usize = 32;

pub struct EtcdSource {
    pub store: EtcdStore,
    pub cache_file: PathBuf,
    pub gateway_id: String,
    pub lease_secs: u64,
    /// The last store call succeeded.
    pub store_up: AtomicBool,
    /// When the store was last read or watched successfully.
    pub last_sync_unix: AtomicU64,
    /// A fleet config was applied (from the store or the cache). Without
    /// one the gateway runs a placeholder and is not ready.
    pub has_config: AtomicBool,
    /// This gateway's status entry under its lease, once the sync loop runs.
    pub status: Mutex<Option<LeasedKey>>,
    /// Live gateways of the fleet: [in sync, lagging], from the last listing.
    pub fleet_counts: [AtomicU64; 2],
}

impl EtcdSource {
    pub fn new(store: EtcdStore, cache_file: PathBuf, gateway_id: String, lease_secs: u64) -> Self {
        EtcdSource {
            store,
            cache_file,
            gateway_id,
            lease_secs,
            store_up: AtomicBool::new(false),
            last_sync_unix: AtomicU64::new(0),
            has_config: AtomicBool::new(false),
            status: Mutex::new(None),
            fleet_counts: Default::default(),
        }
    }

    pub fn mark_up(&self, up: bool) {
        let was = self.store_up.swap(up, Ordering::Relaxed);
        if up {
            self.last_sync_unix.store(unix_now(), Ordering::Relaxed);
            if !was {
                tracing::info!("config store reachable");
            }
        } else if was {
            tracing::warn!("config store unreachable: serving the last applied config");
        }
    }
}

/// `"<fleet hash>"`: the ETag of a config whose fleet part lives in a store.
pub fn fleet_etag(raw: &RawConfig) -> String {
    format!("\"{}\"", fleet_hash(&RawFleet::from_config(raw)))
}

/// A re-read local file (per-process sections only) combined with the
/// fleet part of the running config.
pub fn compose_local(
    text: &str,
    current: &RawConfig,
    base_dir: &Path,
) -> Result<Config, ConfigErrors> {
    let local = parse_local(text)?;
    unitgate_config::validate(&local.with_fleet(&RawFleet::from_config(current)), base_dir)
}

/// A fleet document combined with the local sections of `local`.
pub fn compose_doc(text: &str, local: &RawConfig, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let fleet = parse_fleet(text)?;
    unitgate_config::validate(&local.with_fleet(&fleet), base_dir)
}

/// A linearizable read of the fleet document, tried again (the store moves
/// to the next endpoint) for up to ~2 s: losing one member of a cluster,
/// even its leader (an election takes about a second), must not fail a
/// mutation.
async fn read_retrying(src: &EtcdSource) -> Result<(Option<Doc>, i64), StoreError> {
    let mut last = None;
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        }
        match src.store.read_config().await {
            Ok(r) => {
                src.mark_up(true);
                return Ok(r);
            }
            Err(e @ StoreError::Unavailable(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    src.mark_up(false);
    Err(last.unwrap_or_else(|| StoreError::Unavailable("no endpoint answered".into())))
}

fn unavailable<E>(e: StoreError) -> ChangeError<E> {
    ChangeError::Unavailable(e.to_string())
}

impl ControlPlane {
    fn etcd(&self) -> Option<&EtcdSource> {
        match &self.source {
            Source::Etcd(src) => Some(src),
            Source::File => None,
        }
    }

    /// The store revision of the running fleet document (0 in file mode).
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    pub(super) async fn apply_etcd<E>(
        &self,
        src: &EtcdSource,
        if_match: Option<&str>,
        change: impl Fn(&mut RawConfig) -> Result<(), E>,
    ) -> Result<(RawConfig, String), ChangeError<E>> {
        for _ in 0..CAS_ATTEMPTS {
            let (doc, _) = read_retrying(src).await.map_err(unavailable)?;
            let Some(doc) = doc else {
                return Err(ChangeError::Unavailable(
                    "the store holds no fleet config yet: seed it with `unitgate fleet init`"
                        .into(),
                ));
            };
            let fleet = parse_fleet(&doc.text).map_err(|e| {
                let mut errors = lines(&e);
                errors.insert(
                    0,
                    "the store's fleet document is invalid; fix it first".into(),
                );
                ChangeError::Invalid(errors)
            })?;
            let etag = format!("\"{}\"", fleet_hash(&fleet));
            if let Some(tag) = if_match {
                if tag.trim() != etag && tag.trim() != "*" {
                    return Err(ChangeError::Precondition { current: etag });
                }
            }
            let mut raw = self.lock().raw.with_fleet(&fleet);
            change(&mut raw).map_err(ChangeError::Change)?;
            let config = unitgate_config::validate(&raw, &self.base_dir)
                .map_err(|e| ChangeError::Invalid(lines(&e)))?;
            let next = self.build(config).map_err(ChangeError::Invalid)?;
            let text = fleet_document(&RawFleet::from_config(&raw))
                .map_err(|e| ChangeError::Invalid(lines(&e)))?;
            let mut written = src
                .store
                .write_config(&text, Expect::Revision(doc.mod_revision))
                .await;
            if let Err(StoreError::Unavailable(why)) = &written {
                // The member we talked to went away mid-call: the write may
                // or may not have been applied. Ask the cluster (the store
                // moves to another endpoint); our own text there means it was.
                tracing::debug!("write interrupted ({why}); checking whether it landed");
                written = match read_retrying(src).await {
                    Ok((Some(now), _)) if now.text == text => Ok(now.mod_revision),
                    Ok(_) => Err(StoreError::Conflict { current: None }),
                    Err(e) => Err(e),
                };
            }
            match written {
                Ok(revision) => {
                    src.mark_up(true);
                    let mut a = self.lock();
                    // The watch may have applied this revision already.
                    if revision > a.revision {
                        a.raw = raw;
                        a.etag = fleet_etag(&a.raw);
                        a.revision = revision;
                        self.swap(next);
                        self.write_cache(src, &text, revision);
                        tracing::info!(etag = %a.etag, revision, "admin change written to the store");
                    }
                    let out = (a.raw.clone(), a.etag.clone());
                    drop(a);
                    self.publish_status();
                    return Ok(out);
                }
                Err(StoreError::Conflict { .. }) => {
                    // Another gateway won the race: re-read after a short
                    // random pause, so a burst of writers spreads out.
                    let pause = std::time::Duration::from_millis(fastrand::u64(2..20));
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(e) => {
                    src.mark_up(false);
                    return Err(unavailable(e));
                }
            }
        }
        Err(ChangeError::Unavailable(
            "too many concurrent changes to the fleet config; retry".into(),
        ))
    }

    /// Applies a fleet document read or watched from the store, when it is
    /// newer than the running one, validates whole and does not lower the
    /// epoch. `Ok(true)` when a new snapshot was swapped in. An invalid
    /// revision is counted and reported once, and the running config stays.
    pub fn apply_doc(&self, doc: &Doc, source: &'static str) -> Result<bool, Vec<String>> {
        let Some(src) = self.etcd() else {
            return Ok(false);
        };
        let mut a = self.lock();
        let first = !src.has_config.load(Ordering::Relaxed);
        if !first && doc.mod_revision <= a.revision {
            return Ok(false);
        }
        if a.rejected_revision == Some(doc.mod_revision) {
            return Err(vec![]);
        }
        let result = compose_doc(&doc.text, &a.raw, &self.base_dir)
            .map_err(|e| lines(&e))
            .and_then(|config| {
                let running = a.raw.routing.epoch;
                if !first && config.routing.epoch < running {
                    return Err(vec![format!(
                        "routing.epoch: {} is lower than the running epoch {running}; a shard map never goes back",
                        config.routing.epoch
                    )]);
                }
                Ok(config)
            });
        let config = match result {
            Ok(c) => c,
            Err(mut errors) => {
                a.rejected_revision = Some(doc.mod_revision);
                errors.insert(0, format!("store revision {}", doc.mod_revision));
                return Err(self.record_failure(&mut a, source, errors));
            }
        };
        let changed = config.raw != a.raw || first;
        if changed {
            let raw = config.raw.clone();
            let next = match self.build(config) {
                Ok(n) => n,
                Err(errors) => {
                    a.rejected_revision = Some(doc.mod_revision);
                    return Err(self.record_failure(&mut a, source, errors));
                }
            };
            a.raw = raw;
            a.etag = fleet_etag(&a.raw);
            self.swap(next);
            src.has_config.store(true, Ordering::Relaxed);
            tracing::info!(source, revision = doc.mod_revision, epoch = a.raw.routing.epoch, etag = %a.etag, "fleet config applied");
        }
        a.revision = doc.mod_revision;
        self.write_cache(src, &doc.text, doc.mod_revision);
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        a.last_reload = Some(self.report(source, "ok", vec![], vec![]));
        drop(a);
        self.publish_status();
        Ok(changed)
    }

    /// Writes the applied fleet document to `cache_file` (logged, not fatal).
    fn write_cache(&self, src: &EtcdSource, text: &str, revision: i64) {
        let body = format!(
            "# unitgate fleet cache: store revision {revision}, written at {}\n{text}",
            unix_now()
        );
        if let Err(e) = write_atomically(&src.cache_file, body.as_bytes()) {
            tracing::warn!(file = %src.cache_file.display(), "cannot write the fleet cache: {e}");
        }
    }

    /// The store's part of `/admin/v1/status`.
    pub fn store_status(&self) -> serde_json::Value {
        let revision = self.revision();
        match self.etcd() {
            None => serde_json::json!({"kind": "file", "connected": true}),
            Some(src) => {
                let last = src.last_sync_unix.load(Ordering::Relaxed);
                serde_json::json!({
                    "kind": "etcd",
                    "prefix": src.store.prefix(),
                    "gateway_id": src.gateway_id,
                    "connected": src.store_up.load(Ordering::Relaxed),
                    "revision": revision,
                    "has_config": src.has_config.load(Ordering::Relaxed),
                    "last_sync_age_secs": (last > 0).then(|| unix_now().saturating_sub(last)),
                })
            }
        }
    }

    /// This gateway's id in the fleet: `store.gateway_id` with etcd; in file
    /// mode (a fleet of one) `<unit>@<first listen address>`.
    pub fn gateway_id(&self) -> String {
        match self.etcd() {
            Some(src) => src.gateway_id.clone(),
            None => {
                let snap = self.snapshot.load();
                let g = &snap.config.gateway;
                let listen = g.listen.first().map(|a| a.to_string()).unwrap_or_default();
                format!("{}@{listen}", snap.unit_names[g.unit])
            }
        }
    }

    /// This gateway's status entry, as published under its lease.
    pub fn status_record(&self) -> serde_json::Value {
        let snap = self.snapshot.load();
        let a = self.lock();
        let g = &snap.config.gateway;
        serde_json::json!({
            "id": self.gateway_id(),
            "unit": &*snap.unit_names[g.unit],
            "epoch": snap.config.routing.epoch,
            "config_hash": a.etag.trim_matches('"'),
            "revision": a.revision,
            "version": env!("CARGO_PKG_VERSION"),
            "listen": g.listen.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
            "admin": snap.config.admin.as_ref().map(|a| a.listen.to_string()),
            "ready": self.etcd().is_none_or(|s| s.has_config.load(Ordering::Relaxed)),
            "updated_unix": unix_now(),
        })
    }

    /// Refreshes the value of this gateway's status entry.
    pub fn publish_status(&self) {
        let Some(src) = self.etcd() else {
            return;
        };
        let record = self.status_record().to_string().into_bytes();
        if let Ok(status) = src.status.lock() {
            if let Some(key) = status.as_ref() {
                key.set(record);
            }
        }
    }
}
