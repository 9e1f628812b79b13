//! Active health checks as a pingora background service.
//!
//! One loop per service with checks configured, over the service's shared
//! health registry (every instance in every unit), at the service's interval.
//! Thresholds (`unhealthy_after`, `healthy_after`) live in the check itself.

use crate::snapshot::SharedSnapshot;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;

pub struct HealthChecks {
    pub snapshot: SharedSnapshot,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let snap = self.snapshot.load_full();
        let mut loops = tokio::task::JoinSet::new();
        for (svc, state) in snap.config.services.iter().zip(&snap.services) {
            let Some(interval) = state.pools.health_interval else {
                continue;
            };
            let registry = state.pools.registry.clone();
            let name = svc.name.clone();
            loops.spawn(async move {
                tracing::debug!(service = %name, ?interval, "health checks start");
                loop {
                    registry.run_health_check(true).await;
                    tokio::time::sleep(interval.max(Duration::from_millis(10))).await;
                }
            });
        }
        // Runs until shutdown; dropping the set stops every loop.
        let _ = shutdown.changed().await;
        loops.abort_all();
    }
}
