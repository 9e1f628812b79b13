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
use pingora::lb::HealthRegistry;
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
