//! Reload triggers: the config file changing on disk (notify, debounced) and
//! SIGHUP. `POST /admin/v1/reload` goes straight to the control plane.
//!
//! The watch is on the directories of the config file and of the files it
//! names (JWT keys, fallback bodies), not on the files: editors that write a
//! temp file and rename it over the original, and Kubernetes-style symlink
//! swaps, replace the inode a file watch would follow. Only events naming one
//! of those files count (a log file written beside the config does not: its
//! events are dropped on notify's thread and never wake the reload thread), and
//! never access events (our own reads would re-trigger the watch forever).
//! After the last event a quiet period passes, then the file must stop
//! changing (a half-written file is not applied); then it is re-read once.
//! Content already applied or already refused is a no-op.

use crate::control::ControlPlane;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use notify::{EventKind, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The file must keep its size and mtime this long to count as written.
const SETTLE: Duration = Duration::from_millis(250);
/// Longest wait for a file that keeps changing.
const SETTLE_MAX: Duration = Duration::from_secs(5);

pub struct ReloadService(pub Arc<ControlPlane>);

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let control = self.0.clone();
        // SIGHUP first: until a handler is installed its default action ends
        // the process, and "watching the config file" tells that both are up.
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        let _watcher = control
            .config_path()
            .map(|_| start_watcher(control.clone()));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    let control = control.clone();
                    // Reading and validating is blocking work: off the runtime.
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = control.reload_everything("sighup");
                    })
                    .await;
                }
            }
        }
    }
}

/// Starts the directory watch; the returned watcher must be kept alive.
fn start_watcher(control: Arc<ControlPlane>) -> Option<Arc<Mutex<notify::RecommendedWatcher>>> {
    let path = absolute(control.config_path()?);
    // Sent: whether the event names a referenced file. Events naming none of
    // our files (a log written beside the config: every write is an event)
    // are dropped on notify's thread, so they never wake ours.
    let (tx, rx) = mpsc::channel::<bool>();
    let interest = Arc::new(ArcSwap::from_pointee(Interest::default()));
    let seen = interest.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(ev) = event {
            if !matches!(ev.kind, EventKind::Access(_)) {
                if let Some(referenced) = seen.load().touches(&ev) {
                    let _ = tx.send(referenced);
                }
            }
        }
    });
    let watcher = match watcher {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            tracing::error!(
                "cannot watch the config file: {e}; reload with SIGHUP or the admin API"
            );
            return None;
        }
    };
    let mut watched = Watched {
        interest,
        dirs: Vec::new(),
    };
    if let Err(e) = watched.update(&watcher, &path, control.referenced_files()) {
        tracing::error!("cannot watch {e}; reload with SIGHUP or the admin API");
        return None;
    }
    let weak = Arc::downgrade(&watcher);
    let shown = path.display().to_string();
    let spawned = std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || {
            // A change written after the start read the file but before the
            // watch was in place made no event: look once now (unchanged
            // content is a no-op).
            let _ = control.reload_from_watch(false);
            // Ends when the watcher (the sender's owner) is dropped.
            while let Ok(mut referenced) = rx.recv() {
                // Quiet period, extended by every event naming our files.
                let mut quiet_until = Instant::now() + DEBOUNCE;
                loop {
                    let left = quiet_until.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(r) => {
                            referenced |= r;
                            quiet_until = Instant::now() + DEBOUNCE;
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                settle(&path);
                // What happened while settling is in what we read next.
                while rx.try_recv().is_ok() {}
                let _ = control.reload_from_watch(referenced);
                let Some(watcher) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = watched.update(&watcher, &path, control.referenced_files()) {
                    tracing::warn!("cannot watch {e}; changes to it need SIGHUP or the admin API");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the config watch thread: {e}");
        return None;
    }
    tracing::info!(file = %shown, "watching the config file");
    Some(watcher)
}

/// Waits until the file's size and modification time stop changing (bounded:
/// a file rewritten without pause for longer is read as it is then).
fn settle(path: &Path) {
    let stamp = || {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let deadline = Instant::now() + SETTLE_MAX;
    let mut last = stamp();
    loop {
        std::thread::sleep(SETTLE);
        let now = stamp();
        if now == last || Instant::now() >= deadline {
            return;
        }
        last = now;
    }
}

fn absolute(p: &Path) -> PathBuf {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match p.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }
}

/// The files whose events count.
#[derive(Default)]
struct Interest {
    config: PathBuf,
    /// The config file is a symlink (a Kubernetes ConfigMap): the swap
    /// renames a directory beside it, so every event in its directory counts.
    config_is_link: bool,
    referenced: Vec<PathBuf>,
}

impl Interest {
    /// `None` when the event names none of our files; else whether it names
    /// a referenced file (a rebuild even if the config did not change).
    fn touches(&self, ev: &notify::Event) -> Option<bool> {
        let mut hit = None;
        for p in &ev.paths {
            if *p == self.config || (self.config_is_link && p.parent() == self.config.parent()) {
                hit.get_or_insert(false);
            } else if self.referenced.iter().any(|r| r == p) {
                hit = Some(true);
            }
        }
        hit
    }
}

/// The files that count (read by notify's thread too) and the directories
/// watched for them.
struct Watched {
    interest: Arc<ArcSwap<Interest>>,
    dirs: Vec<PathBuf>,
}

impl Watched {
    fn update(
        &mut self,
        watcher: &Mutex<notify::RecommendedWatcher>,
        config: &Path,
        referenced: Vec<PathBuf>,
    ) -> Result<(), String> {
        let interest = Interest {
            config: config.to_path_buf(),
            config_is_link: std::fs::symlink_metadata(config)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false),
            referenced: referenced.iter().map(|p| absolute(p)).collect(),
        };
        // In place before a new directory is watched, so that directory's
        // first events are judged by the files they may name.
        let interest = Arc::new(interest);
        self.interest.store(interest.clone());
        let mut w = watcher.lock().unwrap_or_else(|p| p.into_inner());
        let mut first_error = None;
        for file in std::iter::once(&interest.config).chain(&interest.referenced) {
            let Some(dir) = file.parent() else { continue };
            if self.dirs.iter().any(|d| d == dir) {
                continue;
            }
            match w.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => self.dirs.push(dir.to_path_buf()),
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("{}: {e}", dir.display()));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
