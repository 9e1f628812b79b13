//! Wires a validated config into a running pingora server: the data-plane
//! listeners, active health checks, the admin API, and shutdown.
//!
//! Shutdown: SIGINT exits at once. SIGTERM stops the listeners, lets in-flight
//! requests finish and exits as soon as none is left, or when
//! `gateway.grace_period_secs` runs out. pingora alone would always sleep the
//! whole grace period; the drain watcher below ends it early.

use crate::control::{ChangeError, ControlPlane, Source};
use crate::edge::Edge;
use crate::fleet::migration::{MigrationDriver, MigrationError, Migrations};
use crate::fleet::sync::FleetSync;
use crate::health::{HealthService, HealthSupervisor};
use crate::limits::LimitsService;
use crate::proxy::ctx::INFLIGHT;
use crate::proxy::Gateway;
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::watch::ReloadService;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unitgate_config::Config;

/// A client-facing TCP listener without pingora's 64 KiB read buffer in
/// front of each accepted socket: the HTTP/1 and HTTP/2 readers and rustls
/// keep buffers of their own, so that one only doubled what an idle
/// keep-alive connection holds (about 105 KiB each, 10 000 idle clients
/// measured in bench idle-conns) while reads for heads and bodies are one
/// syscall either way.
fn client_listener(addr: &std::net::SocketAddr) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::default().read(0))
}

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
    #[error("{0}")]
    Config(String),
}

/// Runs the gateway until it is told to stop. Blocks the calling thread.
/// `path` is the config file (watched, reloaded, written by admin changes);
/// `None` for an embedded config, whose changes stay in memory.
pub fn run(config: Config, path: Option<std::path::PathBuf>) -> Result<(), StartError> {
    run_with(config, path, Source::File, 0)
}

/// [`run`] with the fleet-wide config from `source`, built at store
/// `revision` (see `crate::fleet::boot`).
pub fn run_with(
    config: Config,
    path: Option<std::path::PathBuf>,
    source: Source,
    revision: i64,
) -> Result<(), StartError> {
    // Bind-check the data-plane addresses so a taken port is a clear error
    // now, not a failure inside pingora's startup. The check socket never
    // listens: nothing can connect to it before pingora's listener is up.
    let plain = config.gateway.listen.iter().map(|a| ("gateway.listen", a));
    let tls = config
        .gateway
        .listen_tls
        .iter()
        .map(|a| ("gateway.listen_tls", a));
    for (what, addr) in plain.chain(tls) {
        bind_check(*addr).map_err(|source| StartError::Bind {
            what,
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
    let listen_tls = config.gateway.listen_tls.clone();
    let h2c = config.gateway.h2c;
    let first = Snapshot::build(config, None).map_err(|e| StartError::Config(e.join("\n")))?;
    let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(first));
    let health = Arc::new(HealthSupervisor::new(snapshot.clone()));
    let control = Arc::new(ControlPlane::with_source(
        snapshot.clone(),
        path,
        health.clone(),
        source,
        revision,
    ));
    let migrations = Arc::new(Migrations::new(control.clone()));

    let mut conf = ServerConf {
        threads,
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        // Attempts are bounded by the gateway's own budgets (instances for
        // connect failures, `retries` otherwise); this is only a backstop.
        max_retries: 1024,
        // Work stealing stays on: with `work_stealing = false` pingora 0.9's
        // per-thread runtimes can hang on SIGINT (the accept loop spins on
        // "A Tokio 1.x context was found, but it is being shutdown" and the
        // runtime never finishes shutting down; seen 1 in 5 demo runs).
        ..ServerConf::default()
    };
    conf.upstream_keepalive_pool_size = 256;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // Plain and TLS listeners share one proxy; the TLS app does the
    // handshake itself (crate::tls), so pingora sees TCP listeners only.
    let mut options = HttpServerOptions::default();
    options.h2c = h2c;
    let mut gateway =
        pingora::proxy::http_proxy(&server.configuration, Gateway::new(snapshot.clone()));
    gateway.server_options = Some(options);
    let edge = Edge::new(Arc::new(gateway), snapshot.clone());
    if !listen_tls.is_empty() {
        let mut service =
            pingora::services::listening::Service::new("unitgate tls".into(), edge.for_tls());
        for addr in &listen_tls {
            service.add_listener(client_listener(addr));
        }
        server.add_service(service);
    }
    if !listen.is_empty() {
        let mut proxy = pingora::services::listening::Service::new("unitgate".into(), edge);
        for addr in &listen {
            proxy.add_listener(client_listener(addr));
        }
        server.add_service(proxy);
    }
    server.add_service(background_service("health checks", HealthService(health)));
    server.add_service(background_service(
        "config reload",
        ReloadService(control.clone()),
    ));
    server.add_service(background_service(
        "rate limits",
        LimitsService(snapshot.clone()),
    ));
    server.add_service(background_service("fleet sync", FleetSync(control.clone())));
    server.add_service(background_service(
        "instance names",
        crate::dns::DnsService(control.clone()),
    ));
    server.add_service(background_service(
        "migrations",
        MigrationDriver(migrations.clone()),
    ));
    if let Some((listener, token)) = admin {
        let admin = AdminService {
            listener: Mutex::new(Some(listener)),
            token,
            control: control.clone(),
            migrations: migrations.clone(),
        };
        server.add_service(background_service("admin api", admin));
    }

    let phases = server.watch_execution_phase();
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || drain_watcher(phases, grace))
        .map_err(|e| StartError::Server(e.to_string()))?;

    raise_open_files_limit();
    tracing::info!(listen = ?listen, listen_tls = ?listen_tls, "unitgate running");
    server.run(RunArgs::default());
    crate::access_log::flush();
    crate::otlp::flush(Duration::from_secs(2));
    Ok(())
}

/// Raises the soft limit on open files to the hard limit (as nginx's
/// `worker_rlimit_nofile` lets you): every client and upstream connection
/// is a descriptor, and the usual soft default of 1024 is a few hundred
/// idle clients. Says in the log what the limit is.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= hard {
        tracing::info!(open_files = soft, "open files limit");
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => tracing::info!(open_files = hard, raised_from = soft, "open files limit"),
        Err(e) => tracing::warn!(
            open_files = soft,
            hard,
            "cannot raise the open files limit: {e}"
        ),
    }
}

/// Binds `addr` without listening (as pingora will, with SO_REUSEADDR) and
/// closes it again: fails when another process holds the port.
fn bind_check(addr: SocketAddr) -> std::io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
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
                        crate::access_log::flush();
                        crate::otlp::flush(Duration::from_secs(2));
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
    control: Arc<ControlPlane>,
    migrations: Arc<Migrations>,
}

/// The admin API's narrow view of the gateway.
struct Handle {
    snapshot: SharedSnapshot,
    control: Arc<ControlPlane>,
    migrations: Arc<Migrations>,
}

fn migration_error(e: MigrationError) -> unitgate_admin::ApiError {
    use unitgate_admin::ApiError;
    match e {
        MigrationError::Invalid(m) => ApiError::bad_request(m),
        MigrationError::InProgress(_) => ApiError::migration_in_progress(e.to_string()),
        MigrationError::NotFound(id) => ApiError::not_found(format!("migration {id:?}")),
        MigrationError::Conflict(m) => ApiError::conflict(m),
        MigrationError::Unavailable(m) => ApiError::store_unavailable(m),
    }
}

/// A migrations call's answer as the admin API's JSON or error.
fn reply<T: serde::Serialize>(
    r: Result<T, MigrationError>,
) -> Result<serde_json::Value, unitgate_admin::ApiError> {
    r.map(|v| serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
        .map_err(migration_error)
}

#[async_trait]
impl unitgate_admin::GatewayHandle for Handle {
    fn health(&self) -> serde_json::Value {
        crate::report::health(&self.snapshot.load())
    }

    fn metrics(&self) -> String {
        crate::metrics::render(&self.snapshot.load(), &self.control)
    }

    fn status(&self) -> serde_json::Value {
        let snap = self.snapshot.load();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "unit": &*snap.unit_names[snap.config.gateway.unit],
            "epoch": snap.config.routing.epoch,
            "uptime_secs": self.control.uptime_secs(),
            "config_file": self.control.config_path().map(|p| p.display().to_string()),
            "last_reload": self.control.last_reload(),
            "store": self.control.store_status(),
            "tls": snap.config.tls.as_ref().map(crate::tls::status),
        })
    }

    fn config(&self) -> (unitgate_config::RawConfig, String) {
        self.control.current()
    }

    async fn apply(
        &self,
        if_match: Option<&str>,
        change: unitgate_admin::Change<'_>,
    ) -> Result<(unitgate_config::RawConfig, String), unitgate_admin::ApiError> {
        use unitgate_admin::ApiError;
        self.control
            .apply(if_match, change)
            .await
            .map_err(|e| match e {
                ChangeError::Change(e) => e,
                ChangeError::Invalid(errors) => ApiError::invalid(errors),
                ChangeError::Precondition { current } => ApiError::precondition_failed(&current),
                ChangeError::Persist(why) => ApiError::internal(format!("not applied: {why}")),
                ChangeError::Unavailable(why) => {
                    ApiError::store_unavailable(format!("not applied: {why}"))
                }
            })
    }

    async fn fleet(&self) -> serde_json::Value {
        crate::fleet::view(&self.control).await
    }

    async fn migrations(&self) -> Result<serde_json::Value, unitgate_admin::ApiError> {
        reply(self.migrations.list().await)
    }

    async fn migration(&self, id: &str) -> Result<serde_json::Value, unitgate_admin::ApiError> {
        reply(self.migrations.get(id).await)
    }

    async fn start_migration(
        &self,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, unitgate_admin::ApiError> {
        let start = serde_json::from_value(body).map_err(|e| {
            unitgate_admin::ApiError::bad_request(format!("invalid migration: {e}"))
        })?;
        reply(self.migrations.start(start).await)
    }

    async fn confirm_migration(
        &self,
        id: &str,
    ) -> Result<serde_json::Value, unitgate_admin::ApiError> {
        reply(self.migrations.confirm(id).await)
    }

    async fn abort_migration(
        &self,
        id: &str,
    ) -> Result<serde_json::Value, unitgate_admin::ApiError> {
        reply(self.migrations.abort(id).await)
    }

    fn reload(&self) -> Result<(bool, String), unitgate_admin::ApiError> {
        match self.control.reload_from_file("admin") {
            Ok(changed) => Ok((changed, self.control.current().1)),
            Err(errors) => Err(unitgate_admin::ApiError::invalid(errors)),
        }
    }

    fn readiness(&self) -> Result<(), String> {
        if !RUNNING.load(Ordering::Acquire) {
            return Err("listeners are not running".into());
        }
        if let Source::Etcd(src) = &self.control.source {
            if !src.has_config.load(Ordering::Relaxed) {
                return Err("no fleet config yet: the store is unreachable or not seeded, and there is no cache_file".into());
            }
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
            snapshot: self.control.snapshot.clone(),
            control: self.control.clone(),
            migrations: self.migrations.clone(),
        });
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = unitgate_admin::serve(listener, &self.token, handle, stop).await {
            tracing::error!("admin api: {e}");
        }
    }
}
