//! Integration-test harness: real backends, the real `unitgate` binary, real
//! sockets, each on an ephemeral 127.0.0.1 port, and a temp config file.
//!
//! ```ignore
//! let a1 = backend("A", "a1").await;
//! let gw = GatewayProc::start(&format!(r#"... A = ["{}"] ..."#, a1.addr)).await;
//! let r = gw.get("/hello").await;
//! ```
//! Config text may use `{listen}`, `{listen_tls}` and `{admin}`: the harness
//! replaces them with free ports. Waiting is always a poll with a deadline ([`eventually`]).

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use unitgate::echo::EchoServer;

pub mod edge;
pub mod fleet;
pub mod otlp;

/// A free port on 127.0.0.1 (bound and released; the caller binds it next),
/// never one this process was given before: the kernel may hand the port it
/// just released to the next `bind(0)`, which once gave a gateway's admin
/// listener the same port as its data plane.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("an ephemeral port on 127.0.0.1");
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.insert(port) {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 this process was not given already, in 1000 tries");
}

/// An address on 127.0.0.1 where nothing listens (connections are refused).
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Starts an echo backend for `unit`/`instance` on an ephemeral port.
pub async fn backend(unit: &str, instance: &str) -> EchoServer {
    EchoServer::start(unit, instance, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("echo backend starts")
}

/// Path of the `unitgate` binary: `$UNITGATE_BIN`, else next to the test
/// binary in the target directory (`cargo build -p unitgate` first; the
/// README's test command does).
pub fn unitgate_bin() -> PathBuf {
    if let Ok(p) = std::env::var("UNITGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = dir.join("unitgate");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p unitgate` before the tests (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running `unitgate run -c <file>` process, killed on drop.
pub struct GatewayProc {
    pub child: Child,
    pub listen: SocketAddr,
    /// `{listen_tls}` in the config text (free whether the config uses it or not).
    pub listen_tls: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub client: reqwest::Client,
    /// Extra environment and arguments of the first start, reused by
    /// [`GatewayProc::restart`].
    env: Vec<(String, String)>,
    args: Vec<String>,
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The unit of the echo instance that answered.
    pub fn unit(&self) -> &str {
        self.header("x-echo-unit").unwrap_or("")
    }

    pub fn instance(&self) -> &str {
        self.header("x-echo-instance").unwrap_or("")
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

impl GatewayProc {
    /// Writes `config` (with `{listen}`/`{admin}` filled in) and starts the
    /// binary; returns once the data-plane port accepts connections.
    pub async fn start(config: &str) -> Self {
        Self::start_with_env(config, &[]).await
    }

    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(config, env, &[]).await
    }

    /// Starts with extra environment and extra arguments after `run -c FILE`.
    pub async fn start_with(config: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::start_full(config, env, args, &[]).await
    }

    /// Starts with `files` (name, content) written beside the config first.
    pub async fn start_with_files(config: &str, files: &[(&str, &str)]) -> Self {
        Self::start_full(config, &[], &[], files).await
    }

    async fn start_full(
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        files: &[(&str, &str)],
    ) -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let listen_tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = config
            .replace("{listen_tls}", &listen_tls.to_string())
            .replace("{listen}", &listen.to_string())
            .replace("{admin}", &admin.to_string());
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("unitgate.toml");
        std::fs::write(&config_path, text).expect("write config");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write file");
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let child = spawn(&config_path, dir.path(), &env, &args);
        let mut gw = GatewayProc {
            child,
            listen,
            listen_tls,
            admin,
            dir,
            config_path,
            client: client(),
            env,
            args,
        };
        gw.wait_listening().await;
        gw
    }

    /// Waits until the data-plane port accepts connections: only pingora's
    /// listener does (unitgate's bind check never listens), and a probe
    /// request would count as traffic on the backends.
    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // The port must be ours: a free port handed to two gateways of
            // parallel tests would otherwise send this test's requests to
            // the other one (the loser of the bind exits, but its port
            // still answers).
            if tokio::net::TcpStream::connect(self.listen).await.is_ok()
                && listens_on(self.pid(), self.listen.port())
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("unitgate exited early ({status}):\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "unitgate did not listen on {} in time:\n{}",
                self.listen,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL (a crash, not a shutdown), and wait until the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process if it still runs and starts it again with the same
    /// config file, folder (and whatever the gateway left in it), ports,
    /// environment and arguments; stderr is appended to the same log.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.config_path, self.dir.path(), &self.env, &self.args);
        self.wait_listening().await;
    }

    /// Waits until the config file watch is set up (it starts after the
    /// listener): a change written before it would go unseen.
    pub async fn wait_watching(&self) {
        eventually(
            "the config watch is up",
            Duration::from_secs(10),
            || async {
                self.stderr()
                    .contains("watching the config file")
                    .then_some(())
            },
        )
        .await;
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// An admin API request with the test token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.admin_url(path))
            .bearer_auth("test-token")
    }

    /// An admin API call with a JSON body and the test token; panics on
    /// transport errors.
    pub async fn admin_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Reply {
        self.send(self.admin(method, path).json(body)).await
    }

    /// The Prometheus exposition from `/metrics`.
    pub async fn metrics(&self) -> String {
        self.send(self.client.get(self.admin_url("/metrics")))
            .await
            .body
    }

    /// GET `path` as user `user` (the `x-user-id` routing key).
    pub async fn get_as(&self, user: &str, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)).header("x-user-id", user))
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    /// Sends a request built on [`GatewayProc::client`]; panics on transport errors.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        match try_send(req).await {
            Ok(r) => r,
            Err(e) => panic!(
                "request failed: {e}\n--- unitgate stderr ---\n{}",
                self.stderr()
            ),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM", "INT") to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the process to exit, returning its status and how long it took.
    pub async fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < timeout,
                "unitgate still running after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Peak resident memory (VmHWM) of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }
}

/// Starts `unitgate run -c <config_path>` with stderr appended to
/// `<dir>/stderr.log`.
fn spawn(config_path: &Path, dir: &Path, env: &[(String, String)], args: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .expect("log file");
    let mut cmd = Command::new(unitgate_bin());
    cmd.arg("run")
        .arg("-c")
        .arg(config_path)
        .args(args)
        .env("RUST_LOG", "info,access=off")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn unitgate")
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` holds the listening socket on 127.0.0.1:`port`
/// (the socket's inode in /proc/net/tcp among the process's descriptors).
pub fn listens_on(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
    })
}

/// A `kB` field of /proc/<pid>/status.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub async fn try_send(req: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Runs `unitgate <args>` to completion and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(unitgate_bin())
        .args(args)
        .output()
        .expect("run unitgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A catch-all route to the service "echo", served in this gateway's unit.
pub const LOCAL_ROUTE: &str = r#"
[[routes]]
name = "all"
path_prefix = "/"
service = "echo"
placement = "local"
"#;

/// `"addr", "addr"` for a TOML array of instances.
pub fn instance_list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The test topology as config text: this gateway in unit A (with the
/// admin API, token `test-token`) and [`two_units_fleet`]'s sections.
/// `gateway_extra` goes into `[gateway]`.
pub fn two_units_config(
    gateway_extra: &str,
    routing: &str,
    instances: &str,
    service_extra: &str,
    routes: &str,
) -> String {
    format!(
        r#"
[gateway]
unit = "A"
listen = ["{{listen}}"]
threads = 1
{gateway_extra}

[admin]
listen = "{{admin}}"
token = "test-token"
{}"#,
        two_units_fleet(routing, instances, service_extra, routes)
    )
}

/// The fleet-wide sections of the test topology: A owns slots 0-4999 and
/// fails over to B, B owns 5000-9999 and fails over to A; one service "echo"
/// whose `[services.instances]` body is `instances`. `routing` is a whole
/// `[routing]` table (or empty), `service_extra` follows the instances
/// (health, outlier, breaker tables), then `routes`.
pub fn two_units_fleet(
    routing: &str,
    instances: &str,
    service_extra: &str,
    routes: &str,
) -> String {
    format!(
        r#"
{routing}

[[units]]
name = "A"
slots = ["0-4999"]
failover = ["B"]

[[units]]
name = "B"
slots = ["5000-9999"]
failover = ["A"]

[[services]]
name = "echo"
connect_timeout_ms = 200
read_timeout_ms = 2000
[services.instances]
{instances}
{service_extra}

{routes}
"#
    )
}

/// [`two_units_config`] with a 3 s grace period and `extra` after the
/// instances (more service tables, then routes).
pub fn simple_config(instances: &str, extra: &str) -> String {
    two_units_config("grace_period_secs = 3", "", instances, "", extra)
}

/// The value of one series (`name{labels}` exactly as exposed) in a
/// Prometheus text exposition.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// A real `redis-server` on a free 127.0.0.1 port, no persistence; killed on drop.
pub struct RedisProc {
    pub port: u16,
    child: Option<Child>,
}

impl RedisProc {
    pub async fn start() -> Self {
        let port = free_port();
        let mut r = RedisProc { port, child: None };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: a crash, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and waits for PING.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        eventually(
            "redis-server answers PING",
            Duration::from_secs(10),
            || async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()?;
                s.write_all(b"PING\r\n").await.ok()?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf).await.ok()?;
                (&buf == b"+PONG\r\n").then_some(())
            },
        )
        .await;
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `promtool check metrics` on an exposition (Debian's `prometheus`
/// package; `scripts/deps.sh --test` installs it). Skips, saying so, only
/// where promtool is missing.
pub fn promtool_check_metrics(exposition: &str) {
    use std::io::Write;
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED: promtool not found ({e}); scripts/deps.sh --test installs it");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
