//! The control plane: reloads from the config file and admin mutations, both
//! building a complete new snapshot (reusing unchanged state) and swapping it
//! in one step, serialized under one lock so none is lost.
//!
//! A mutation is applied to a copy of the raw config, the whole result is
//! validated, persisted atomically (temp file, fsync, rename, fsync of the
//! directory) and only then swapped in. The file's content hash is recorded,
//! so the watcher recognises our own write and does not reload it as a
//! foreign change.
//!
//! With `[store] kind = "etcd"` ([`etcd`]), the fleet-wide sections come
//! from the store instead: a mutation is a compare-and-swap on the store's
//! document, and the store's watch (see `crate::fleet::sync`) brings every
//! change, ours included, to [`ControlPlane::apply_doc`]. The local file then
//! holds only the per-process sections.

pub mod etcd;

use crate::health::HealthSupervisor;
use crate::snapshot::{SharedSnapshot, Snapshot};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use unitgate_config::{ConfigError, ConfigErrors, RawConfig};

pub use etcd::EtcdSource;

/// Why a change was refused; the admin API maps these to status codes.
#[derive(Debug)]
pub enum ChangeError<E> {
    /// The change itself refused (unknown name, conflict...): the caller's error.
    Change(E),
    /// The result does not validate (400), every error with its path.
    Invalid(Vec<String>),
    /// `If-Match` does not equal the current ETag (412).
    Precondition { current: String },
    /// Writing the file failed (500); nothing was applied.
    Persist(String),
    /// The config store cannot be reached (503); nothing was applied.
    Unavailable(String),
}

/// Where the fleet-wide config comes from.
pub enum Source {
    /// The `--config` file holds everything (or, for the demo, memory).
    File,
    /// The fleet-wide sections live in etcd; the local file holds the rest.
    Etcd(EtcdSource),
}

/// The outcome of the last reload attempt, for `/admin/v1/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub at_unix: u64,
    pub source: &'static str,
    pub result: &'static str,
    pub errors: Vec<String>,
    /// Changed keys that only take effect after a restart.
    pub restart_required: Vec<String>,
}

struct Applied {
    raw: RawConfig,
    etag: String,
    /// The store revision of the applied fleet document (etcd mode).
    revision: i64,
    /// A store revision that failed validation: not retried or recounted.
    rejected_revision: Option<i64>,
    /// sha256 of the config file as we last read or wrote it.
    file_hash: Option<[u8; 32]>,
    /// sha256 of file content that failed to load: the watcher does not
    /// retry (or log, or count) the same broken content twice.
    failed_hash: Option<[u8; 32]>,
    last_reload: Option<ReloadReport>,
}

pub struct ControlPlane {
    pub snapshot: SharedSnapshot,
    /// `None` for the embedded demo: changes stay in memory.
    path: Option<PathBuf>,
    base_dir: PathBuf,
    health: Arc<HealthSupervisor>,
    applied: Mutex<Applied>,
    pub source: Source,
    /// Serializes mutations that await the store (the `applied` lock cannot
    /// be held across an await).
    write_lock: tokio::sync::Mutex<()>,
    started: Instant,
    pub reloads_ok: AtomicU64,
    pub reloads_error: AtomicU64,
}

/// `"<hex>"`: the first 16 bytes of sha256 over the canonical JSON of the
/// raw config. Equal configs have equal tags whatever the file's formatting.
pub fn etag_of(raw: &RawConfig) -> String {
    let json = serde_json::to_vec(raw).unwrap_or_default();
    let digest = Sha256::digest(&json);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The ETag of `raw` under `source`: with a store, the fleet document's hash,
/// the same on every gateway whatever its local file says.
fn etag_for(source: &Source, raw: &RawConfig) -> String {
    match source {
        Source::File => etag_of(raw),
        Source::Etcd(_) => etcd::fleet_etag(raw),
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn lines(errors: &ConfigErrors) -> Vec<String> {
    errors.iter().map(ConfigError::to_string).collect()
}

/// Keys whose change needs a restart: the listeners and the worker threads.
fn restart_keys(old: &RawConfig, new: &RawConfig) -> Vec<String> {
    let mut out = Vec::new();
    if old.gateway.listen != new.gateway.listen {
        out.push("gateway.listen".to_owned());
    }
    if old.gateway.listen_tls != new.gateway.listen_tls {
        out.push("gateway.listen_tls".to_owned());
    }
    if old.gateway.h2c != new.gateway.h2c {
        out.push("gateway.h2c".to_owned());
    }
    if old.gateway.threads != new.gateway.threads {
        out.push("gateway.threads".to_owned());
    }
    if old.gateway.max_connections != new.gateway.max_connections {
        out.push("gateway.max_connections".to_owned());
    }
    let admin_listen = |r: &RawConfig| r.admin.as_ref().map(|a| a.listen.clone());
    if admin_listen(old) != admin_listen(new) {
        out.push("admin.listen".to_owned());
    }
    out
}

impl ControlPlane {
    pub fn new(
        snapshot: SharedSnapshot,
        path: Option<PathBuf>,
        health: Arc<HealthSupervisor>,
    ) -> Self {
        Self::with_source(snapshot, path, health, Source::File, 0)
    }

    /// A control plane over `source`; `revision` is the store revision the
    /// running snapshot was built from (0 when none).
    pub fn with_source(
        snapshot: SharedSnapshot,
        path: Option<PathBuf>,
        health: Arc<HealthSupervisor>,
        source: Source,
        revision: i64,
    ) -> Self {
        let raw = snapshot.load().config.raw.clone();
        let base_dir = path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        if let Some(p) = &path {
            remove_stale_temp_files(p);
        }
        if let Source::Etcd(src) = &source {
            remove_stale_temp_files(&src.cache_file);
        }
        let file_hash = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| Sha256::digest(&b).into());
        ControlPlane {
            snapshot,
            path,
            base_dir,
            health,
            applied: Mutex::new(Applied {
                etag: etag_for(&source, &raw),
                raw,
                revision,
                rejected_revision: None,
                file_hash,
                failed_hash: None,
                last_reload: None,
            }),
            source,
            write_lock: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            reloads_ok: AtomicU64::new(0),
            reloads_error: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        // A panic while holding the lock cannot leave a half-applied change:
        // the snapshot is swapped last. So a poisoned lock is still usable.
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The effective raw config and its ETag.
    pub fn current(&self) -> (RawConfig, String) {
        let a = self.lock();
        (a.raw.clone(), a.etag.clone())
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.lock().last_reload.clone()
    }

    /// Re-reads the config file. Unchanged content (including our own last
    /// write) is a no-op returning `Ok(false)`. Invalid content changes
    /// nothing: the errors are logged, counted and kept for `/status`.
    pub fn reload_from_file(&self, source: &'static str) -> Result<bool, Vec<String>> {
        self.reload(source, false)
    }

    /// A reload for the file watcher: content already applied, or already
    /// refused, is a silent no-op, so one change is applied (or reported)
    /// once. `referenced` means a file the config names (a key, a body file)
    /// changed: the snapshot is rebuilt even when the config itself did not.
    pub fn reload_from_watch(&self, referenced: bool) -> Result<bool, Vec<String>> {
        self.reload("watch", referenced)
    }

    /// SIGHUP: re-reads the config and every file it names, rebuilding the
    /// snapshot even when the config text is unchanged (as nginx does).
    pub fn reload_everything(&self, source: &'static str) -> Result<bool, Vec<String>> {
        self.reload(source, true)
    }

    fn reload(&self, source: &'static str, rebuild: bool) -> Result<bool, Vec<String>> {
        let Some(path) = self.path.clone() else {
            return Err(vec![
                "this gateway runs an embedded config: no file to reload".into(),
            ]);
        };
        let watch = source == "watch";
        let mut a = self.lock();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                let errors = vec![format!("{}: {e}", path.display())];
                return Err(self.record_failure(&mut a, source, errors));
            }
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if watch && !rebuild && (a.file_hash == Some(hash) || a.failed_hash == Some(hash)) {
            return Ok(false);
        }
        let text = String::from_utf8_lossy(&bytes);
        let parsed = match &self.source {
            Source::File => unitgate_config::parse(&text, &self.base_dir),
            Source::Etcd(_) => etcd::compose_local(&text, &a.raw, &self.base_dir),
        };
        let config = match parsed {
            Ok(c) => c,
            Err(errors) => {
                a.failed_hash = Some(hash);
                return Err(self.record_failure(&mut a, source, lines(&errors)));
            }
        };
        if config.raw == a.raw && !rebuild {
            a.file_hash = Some(hash);
            a.failed_hash = None;
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
            a.last_reload = Some(self.report(source, "ok", vec![], vec![]));
            return Ok(false);
        }
        let restart = restart_keys(&a.raw, &config.raw);
        let raw = config.raw.clone();
        let next = match self.build(config) {
            Ok(n) => n,
            Err(errors) => {
                a.failed_hash = Some(hash);
                return Err(self.record_failure(&mut a, source, errors));
            }
        };
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "config change needs a restart to take effect; the rest is applied");
        }
        a.file_hash = Some(hash);
        a.failed_hash = None;
        a.raw = raw;
        a.etag = etag_for(&self.source, &a.raw);
        self.swap(next);
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        a.last_reload = Some(self.report(source, "ok", vec![], restart));
        tracing::info!(source, etag = %a.etag, "config reloaded");
        Ok(true)
    }

    /// The files the running config reads besides itself (JWT keys, fallback
    /// bodies, certificates, keys and CAs), as the watcher must see them: a change to one is a reload.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let a = self.lock();
        let jwt = a
            .raw
            .jwt
            .values()
            .flat_map(|j| [j.public_key_file.as_deref(), j.jwks_file.as_deref()]);
        let bodies = a
            .raw
            .routes
            .iter()
            .map(|r| r.fallback.as_ref().and_then(|f| f.body_file.as_deref()));
        let tls = a.raw.tls.iter().flat_map(|t| {
            let pairs = t.certificates.iter();
            let files = pairs.flat_map(|c| [Some(c.cert_file.as_str()), Some(c.key_file.as_str())]);
            files.chain([Some(t.trusted_peer_ca.as_str())])
        });
        let cas = a.raw.services.iter().map(|s| Some(s.ca_file.as_str()));
        jwt.chain(bodies)
            .chain(tls)
            .chain(cas)
            .flatten()
            .filter(|f| !f.is_empty())
            .map(|f| self.base_dir.join(f))
            .collect()
    }

    fn report(
        &self,
        source: &'static str,
        result: &'static str,
        errors: Vec<String>,
        restart_required: Vec<String>,
    ) -> ReloadReport {
        ReloadReport {
            at_unix: unix_now(),
            source,
            result,
            errors,
            restart_required,
        }
    }

    fn record_failure(
        &self,
        a: &mut Applied,
        source: &'static str,
        errors: Vec<String>,
    ) -> Vec<String> {
        self.reloads_error.fetch_add(1, Ordering::Relaxed);
        tracing::error!(source, errors = ?errors, "config reload failed; the running config stays");
        a.last_reload = Some(self.report(source, "error", errors.clone(), vec![]));
        errors
    }

    /// Applies `change` to a copy of the running raw config: validate the
    /// whole result, persist it (the file, or the store with a
    /// compare-and-swap), swap it in. `if_match` must equal the current ETag
    /// when given. With a store, `change` runs again on a fresh copy when
    /// another gateway's write won the race.
    pub async fn apply<E>(
        &self,
        if_match: Option<&str>,
        change: impl Fn(&mut RawConfig) -> Result<(), E>,
    ) -> Result<(RawConfig, String), ChangeError<E>> {
        match &self.source {
            Source::File => self.apply_file(if_match, change),
            Source::Etcd(src) => {
                let _serial = self.write_lock.lock().await;
                self.apply_etcd(src, if_match, change).await
            }
        }
    }

    fn apply_file<E>(
        &self,
        if_match: Option<&str>,
        change: impl Fn(&mut RawConfig) -> Result<(), E>,
    ) -> Result<(RawConfig, String), ChangeError<E>> {
        let mut a = self.lock();
        if let Some(tag) = if_match {
            if tag.trim() != a.etag && tag.trim() != "*" {
                return Err(ChangeError::Precondition {
                    current: a.etag.clone(),
                });
            }
        }
        let mut raw = a.raw.clone();
        change(&mut raw).map_err(ChangeError::Change)?;
        let config = unitgate_config::validate(&raw, &self.base_dir)
            .map_err(|e| ChangeError::Invalid(lines(&e)))?;
        let restart = restart_keys(&a.raw, &raw);
        let next = self.build(config).map_err(ChangeError::Invalid)?;
        if let Some(path) = &self.path {
            let text =
                toml::to_string_pretty(&raw).map_err(|e| ChangeError::Persist(e.to_string()))?;
            write_atomically(path, text.as_bytes())
                .map_err(|e| ChangeError::Persist(format!("{}: {e}", path.display())))?;
            a.file_hash = Some(Sha256::digest(text.as_bytes()).into());
        }
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "admin change needs a restart to take effect; the rest is applied");
        }
        a.raw = raw;
        a.etag = etag_for(&self.source, &a.raw);
        self.swap(next);
        tracing::info!(etag = %a.etag, "admin change applied");
        Ok((a.raw.clone(), a.etag.clone()))
    }

    /// Builds the new snapshot on top of the running one, without swapping.
    fn build(&self, config: unitgate_config::Config) -> Result<Arc<Snapshot>, Vec<String>> {
        let prev = self.snapshot.load_full();
        Snapshot::build(config, Some(&prev)).map(Arc::new)
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Rebuilds the snapshot from the config it runs (after a change outside
    /// the config, e.g. instance names resolving to new addresses). Under
    /// the control lock, so it never overwrites a reload in progress.
    pub fn rebuild(&self, source: &'static str) {
        let _applied = self.lock();
        let current = self.snapshot.load_full();
        match self.build(current.config.clone()) {
            Ok(next) => {
                self.swap(next);
                tracing::debug!(source, "snapshot rebuilt");
            }
            Err(errors) => tracing::error!(source, ?errors, "cannot rebuild the snapshot"),
        }
    }

    /// Swaps a built snapshot in and starts its health checks.
    fn swap(&self, next: Arc<Snapshot>) {
        self.snapshot.store(next.clone());
        self.health.ensure(&next);
    }
}

fn temp_prefix(path: &Path) -> (PathBuf, String) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    (dir.to_path_buf(), format!(".{name}.tmp-"))
}

/// Removes temp files of [`write_atomically`] left beside `path` by a
/// process that died mid-write (kill -9): their writer no longer exists.
pub(crate) fn remove_stale_temp_files(path: &Path) {
    let (dir, prefix) = temp_prefix(path);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let alive = pid.parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
        });
        if !alive {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a temp file left by an interrupted write")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), "cannot remove a stale temp file: {e}")
                }
            }
        }
    }
}

/// Temp file beside `path`, fsync, rename over `path`, fsync the directory:
/// a crash leaves either the old file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (dir, prefix) = temp_prefix(path);
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
