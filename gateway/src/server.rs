//! Wires a validated config into a running pingora server: the data-plane
//! listeners, active health checks, the admin API, and shutdown.
//!
//! Shutdown: SIGINT exits at once. SIGTERM stops the listeners, lets in-flight
//! requests finish and exits as soon as none is left, or when
//! `gateway.grace_period_secs` runs out. pingora alone would always sleep the
//! whole grace period; the drain watcher below ends it early.

use crate::health::HealthChecks;
use crate::proxy::ctx::INFLIGHT;
use crate::proxy::Gateway;
use crate::snapshot::{SharedSnapshot, Snapshot};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::proxy::ProxyServiceBuilder;
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unitgate_config::Config;

/// Set once pingora reports its services running (listeners bound).
static RUNNING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{what}: cannot listen on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the server: {0}")]
    Server(String),
}

/// Runs the gateway until it is told to stop. Blocks the calling thread.
pub fn run(config: Config) -> Result<(), StartError> {
    // Bind-check the data-plane addresses so a taken port is a clear error
    // now, not a failure inside pingora's startup.
    for addr in &config.gateway.listen {
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind {
            what: "gateway.listen",
            addr: *addr,
            source,
        })?;
    }
    let admin = match &config.admin {
        Some(a) => {
            let listener =
                std::net::TcpListener::bind(a.listen).map_err(|source| StartError::Bind {
                    what: "admin.listen",
                    addr: a.listen,
                    source,
                })?;
            Some((listener, a.token.clone()))
        }
        None => None,
    };

    let threads = config.gateway.threads;
    let grace = config.gateway.grace_period;
    let listen = config.gateway.listen.clone();
    let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(config)));

    let mut conf = ServerConf {
        threads,
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        // Attempts are bounded by the gateway's own budgets (instances for
        // connect failures, `retries` otherwise); this is only a backstop.
        max_retries: 1024,
        ..ServerConf::default()
    };
    conf.upstream_keepalive_pool_size = 256;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut options = HttpServerOptions::default();
    options.h2c = true;
    let mut proxy = ProxyServiceBuilder::new(&server.configuration, Gateway::new(snapshot.clone()))
        .name("unitgate")
        .server_options(options)
        .build();
    for addr in &listen {
        proxy.add_tcp(&addr.to_string());
    }
    let health = background_service(
        "health checks",
        HealthChecks {
            snapshot: snapshot.clone(),
        },
    );
    server.add_service(proxy);
    server.add_service(health);
    if let Some((listener, token)) = admin {
        let admin = AdminService {
            listener: Mutex::new(Some(listener)),
            token,
            snapshot: snapshot.clone(),
        };
        server.add_service(background_service("admin api", admin));
    }

    let phases = server.watch_execution_phase();
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || drain_watcher(phases, grace))
        .map_err(|e| StartError::Server(e.to_string()))?;

    tracing::info!(listen = ?listen, "unitgate running");
    server.run(RunArgs::default());
    Ok(())
}

/// Follows pingora's execution phases: marks the server running, and on a
/// graceful terminate exits the process as soon as no request is in flight.
fn drain_watcher(mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>, grace: Duration) {
    loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::Running) => RUNNING.store(true, Ordering::Release),
            Ok(ExecutionPhase::GracefulTerminate) => {
                RUNNING.store(false, Ordering::Release);
                let deadline = Instant::now() + grace;
                tracing::info!(inflight = INFLIGHT.load(Ordering::Relaxed), "draining");
                while Instant::now() < deadline {
                    if INFLIGHT.load(Ordering::Relaxed) == 0 {
                        tracing::info!("drained; exiting");
                        std::process::exit(0);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                // pingora's own grace period ends the process next.
                return;
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The admin API as a pingora background service, so it shares the server's
/// lifecycle and shutdown.
struct AdminService {
    listener: Mutex<Option<std::net::TcpListener>>,
    token: String,
    snapshot: SharedSnapshot,
}

struct Handle {
    snapshot: SharedSnapshot,
}

impl unitgate_admin::GatewayHandle for Handle {
    fn health(&self) -> serde_json::Value {
        crate::report::health(&self.snapshot.load())
    }

    fn readiness(&self) -> Result<(), String> {
        if !RUNNING.load(Ordering::Acquire) {
            return Err("listeners are not running".into());
        }
        let snap = self.snapshot.load();
        for (svc, state) in snap.config.services.iter().zip(&snap.services) {
            let healthy = state
                .pools
                .by_unit
                .iter()
                .flatten()
                .any(|pool| pool.addrs.iter().any(|a| pool.is_healthy(a)));
            if !healthy {
                return Err(format!("service {:?} has no healthy instance", svc.name));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.listener.lock().ok().and_then(|mut l| l.take());
        let Some(std_listener) = taken else {
            return;
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("admin listener: {e}");
                return;
            }
        };
        let handle = Arc::new(Handle {
            snapshot: self.snapshot.clone(),
        });
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = unitgate_admin::serve(listener, &self.token, handle, stop).await {
            tracing::error!("admin api: {e}");
        }
    }
}
