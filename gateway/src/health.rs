//! Active health checks as a pingora background service.
//!
//! One loop per live health registry (one per service; a reload that keeps a
//! service's health config keeps its registry, and with it the instances'
//! health). A loop holds its registry weakly and ends once no snapshot uses
//! it. [`HealthSupervisor::ensure`] starts loops for registries a new
//! snapshot brought in. Thresholds (`unhealthy_after`, `healthy_after`) live
//! in the check itself.

use crate::snapshot::{SharedSnapshot, Snapshot};
use async_trait::async_trait;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::{Backend, HealthRegistry};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

pub struct HealthSupervisor {
    snapshot: SharedSnapshot,
    /// The background runtime, known once the service started.
    runtime: OnceLock<tokio::runtime::Handle>,
    running: Mutex<Vec<Weak<HealthRegistry>>>,
}

impl HealthSupervisor {
    pub fn new(snapshot: SharedSnapshot) -> Self {
        HealthSupervisor {
            snapshot,
            runtime: OnceLock::new(),
            running: Mutex::new(Vec::new()),
        }
    }

    /// Starts a check loop for every registry of `snap` that has none yet.
    pub fn ensure(&self, snap: &Snapshot) {
        let Some(runtime) = self.runtime.get() else {
            return; // not started yet: `start` will cover this snapshot
        };
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        running.retain(|w| w.strong_count() > 0);
        for (svc, state) in snap.config.services.iter().zip(&snap.services) {
            let Some(interval) = state.pools.health_interval else {
                continue;
            };
            let registry = &state.pools.registry;
            if running
                .iter()
                .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(registry)))
            {
                continue;
            }
            let weak = Arc::downgrade(registry);
            running.push(weak.clone());
            let name = svc.name.clone();
            runtime.spawn(check_loop(weak, interval, name));
        }
    }
}

async fn check_loop(registry: Weak<HealthRegistry>, interval: Duration, service: String) {
    tracing::debug!(%service, ?interval, "health checks start");
    while let Some(r) = registry.upgrade() {
        r.run_health_check(true).await;
        drop(r);
        tokio::time::sleep(interval.max(Duration::from_millis(10))).await;
    }
    tracing::debug!(%service, "health checks end: the registry is no longer used");
}

/// The background service: records the runtime, starts the loops of the
/// current snapshot, and keeps them until shutdown.
pub struct HealthService(pub Arc<HealthSupervisor>);

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = self.0.runtime.set(tokio::runtime::Handle::current());
        self.0.ensure(&self.0.snapshot.load());
        // The loops run on this runtime; they stop with it at shutdown.
        let _ = shutdown.changed().await;
    }
}

/// Whether `e` is this process running out of descriptors (EMFILE, ENFILE),
/// not a fault of the peer it was connecting to.
pub fn is_local_fd_shortage(e: &pingora::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.root_cause());
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(EMFILE | ENFILE)) {
                return true;
            }
        }
        cause = c.source();
    }
    e.to_string().contains("Too many open files")
}

/// A health check that does not blame an instance for a local descriptor
/// shortage: the check repeats the instance's last real outcome instead, so
/// a flood of client connections never marks healthy instances down (and
/// sends traffic to another unit for no reason).
pub struct LocalAware {
    inner: Box<dyn HealthCheck + Send + Sync>,
    last_ok: Mutex<std::collections::HashMap<String, bool>>,
}

impl LocalAware {
    pub fn wrap(inner: Box<dyn HealthCheck + Send + Sync>) -> Box<dyn HealthCheck + Send + Sync> {
        Box::new(LocalAware {
            inner,
            last_ok: Mutex::new(std::collections::HashMap::new()),
        })
    }
}

#[async_trait]
impl HealthCheck for LocalAware {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let key = target.addr.to_string();
        let result = self.inner.check(target).await;
        let mut last = self.last_ok.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(e) if is_local_fd_shortage(e) => {
                static WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                if crate::log_filter::once_per_interval(&WARNED) {
                    tracing::warn!(
                        instance = %key,
                        "health checks skipped: out of file descriptors here (said once per 10 s)"
                    );
                }
                if last.get(&key).copied().unwrap_or(true) {
                    return Ok(());
                }
                result
            }
            r => {
                last.insert(key, r.is_ok());
                result
            }
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        self.inner.health_status_change(target, healthy).await
    }

    fn backend_summary(&self, target: &Backend) -> String {
        self.inner.backend_summary(target)
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}
