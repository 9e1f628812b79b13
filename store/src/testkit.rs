//! Real etcd members for tests: one ([`EtcdProc`]) or a cluster
//! ([`EtcdCluster`]), on ephemeral 127.0.0.1 ports, data in a tempdir,
//! killed on drop. Starting waits until a linearizable kv read answers.
//!
//! Test support: panics (with etcd's log) when etcd cannot be started.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a member may take to answer its first read.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// One etcd member alone in its cluster.
pub struct EtcdProc {
    member: Member,
    _dir: tempfile::TempDir,
}

impl EtcdProc {
    /// Starts a member and waits until it serves a kv read.
    pub fn start() -> EtcdProc {
        let dir = tempfile::tempdir().expect("tempdir for etcd");
        let [(client, peer)] = free_ports::<1>();
        let name = unique_name();
        let cluster = format!("{name}=http://127.0.0.1:{peer}");
        let mut member = Member::new(dir.path(), name, client, peer, cluster);
        member.spawn();
        member.wait_healthy();
        EtcdProc { member, _dir: dir }
    }

    /// `http://127.0.0.1:PORT`, the client URL.
    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&mut self) {
        self.member.kill();
    }

    /// Start again on the same ports and data dir; waits until healthy.
    pub fn restart(&mut self) {
        self.member.kill();
        self.member.spawn();
        self.member.wait_healthy();
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.member.child.as_ref().map(Child::id)
    }

    /// etcd's own log so far (stderr of every run).
    pub fn log(&self) -> String {
        self.member.log()
    }
}

/// `n` etcd members forming one cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts all members together and waits until each serves a kv read
    /// (which needs an elected leader).
    pub fn start(n: usize) -> EtcdCluster {
        assert!(n > 0, "a cluster has at least one member");
        let dir = tempfile::tempdir().expect("tempdir for etcd");
        let ports = free_port_pairs(n);
        let names: Vec<String> = (0..n).map(|_| unique_name()).collect();
        let cluster = names
            .iter()
            .zip(&ports)
            .map(|(name, (_, peer))| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = names
            .into_iter()
            .zip(ports)
            .map(|(name, (client, peer))| {
                Member::new(dir.path(), name, client, peer, cluster.clone())
            })
            .collect();
        for m in &mut members {
            m.spawn();
        }
        for m in &mut members {
            m.wait_healthy();
        }
        EtcdCluster { members, _dir: dir }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// SIGKILL member `i`, and wait until it is gone.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Start member `i` again on its ports and data dir; waits until healthy.
    pub fn restart(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.kill();
        m.spawn();
        m.wait_healthy();
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        self.members[i].log()
    }
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    initial_cluster: String,
    child: Option<Child>,
}

impl Member {
    fn new(dir: &Path, name: String, client_port: u16, peer_port: u16, cluster: String) -> Member {
        Member {
            data_dir: dir.join(format!("{name}.data")),
            log_path: dir.join(format!("{name}.log")),
            name,
            client_port,
            peer_port,
            initial_cluster: cluster,
            child: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("etcd log file");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(etcd_bin());
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args([
                "--initial-cluster-token",
                &format!("ug-{}", std::process::id()),
            ])
            // 3.4 defaults to the deprecated capnslog logger and warns about it.
            .args([
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // etcd 3.4 refuses to start on architectures other than amd64 and
        // ppc64le unless told this one is fine.
        if let Some(arch) = unsupported_arch() {
            cmd.env("ETCD_UNSUPPORTED_ARCH", arch);
        }
        self.child = Some(cmd.spawn().expect("spawn etcd"));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on unix
            let _ = child.wait();
        }
    }

    /// Polls a linearizable range read on the JSON gateway until it
    /// answers, failing fast if the process exits.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if kv_get_ok(self.client_port) {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("etcd {} exited ({status}):\n{}", self.name, self.log());
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "etcd {} not healthy within {START_DEADLINE:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `POST /v3/kv/range` (etcd's gRPC gateway, linearizable by default);
/// true when it answers 200 with a response header.
fn kv_get_ok(port: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(1)))?;
        let body = r#"{"key":"aGVhbHRo"}"#; // "health"
        write!(
            s,
            "POST /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp.starts_with("HTTP/1.1 200") && resp.contains("\"header\""))
    };
    attempt().unwrap_or(false)
}

/// `$ETCD_BIN`, else `etcd` on `PATH`.
fn etcd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(bin);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("etcd"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("etcd not found: install Debian's etcd-server (scripts/deps.sh --test does)")
        })
}

/// The `ETCD_UNSUPPORTED_ARCH` value this machine needs, if any.
fn unsupported_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" | "powerpc64" => None,
        "aarch64" => Some("arm64"),
        "s390x" => Some("s390x"),
        "x86" => Some("386"),
        "arm" => Some("arm"),
        other => Some(other),
    }
}

fn unique_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "ug{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `N` (client, peer) port pairs, all distinct: every listener is held
/// until all ports are picked.
fn free_ports<const N: usize>() -> [(u16, u16); N] {
    let pairs = free_port_pairs(N);
    std::array::from_fn(|i| pairs[i])
}

fn free_port_pairs(n: usize) -> Vec<(u16, u16)> {
    let listeners: Vec<TcpListener> = (0..2 * n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect();
    ports.chunks(2).map(|c| (c[0], c[1])).collect()
}
