//! Reload triggers: the config file changing on disk (notify, debounced) and
//! SIGHUP. `POST /admin/v1/reload` goes straight to the control plane.
//!
//! The watch is on the file's directory, not the file: editors that write a
//! temp file and rename it over the original, and Kubernetes-style symlink
//! swaps, replace the inode a file watch would follow. Every event in the
//! directory restarts a short quiet period; after it the file is re-read,
//! and unchanged content (our own admin writes included) is a no-op.

use crate::control::ControlPlane;
use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

pub struct ReloadService(pub Arc<ControlPlane>);

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let control = self.0.clone();
        let _watcher = control
            .config_path()
            .map(|_| start_watcher(control.clone()));
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    let control = control.clone();
                    // Reading and validating is blocking work: off the runtime.
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = control.reload_from_file("sighup");
                    })
                    .await;
                }
            }
        }
    }
}

/// Starts the directory watch; the returned watcher must be kept alive.
fn start_watcher(control: Arc<ControlPlane>) -> Option<notify::RecommendedWatcher> {
    let path = control.config_path()?.to_path_buf();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.send(());
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(
                    "cannot watch {}: {e}; reload with SIGHUP or the admin API",
                    dir.display()
                );
                return None;
            }
        };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::error!(
            "cannot watch {}: {e}; reload with SIGHUP or the admin API",
            dir.display()
        );
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || {
            // Ends when the watcher (the sender's owner) is dropped.
            while rx.recv().is_ok() {
                while rx.recv_timeout(DEBOUNCE).is_ok() {}
                let _ = control.reload_from_file("watch");
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the config watch thread: {e}");
        return None;
    }
    tracing::info!(file = %path.display(), "watching the config file");
    Some(watcher)
}
