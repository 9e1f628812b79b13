//! Fleet harness: a real etcd, a fleet document seeded with `unitgate fleet
//! init`, and several real `unitgate` processes in etcd mode, each with its
//! own local file, all on ephemeral 127.0.0.1 ports.
//!
//! ```ignore
//! let etcd = EtcdProc::start();
//! let (a, b) = (backend("A", "a1").await, backend("B", "b1").await);
//! let doc = fleet_doc(&[a.addr], &[b.addr], "", ROUTES);
//! let fleet = Fleet::start(vec![etcd.endpoint()], &doc, &[("gw-a1", "A"), ("gw-b1", "B")]).await;
//! let r = fleet.gws[1].get_as("42", "/x").await;
//! ```
//!
//! [`Load`] drives bounded read/write traffic through several gateways and
//! records, per request, when it was sent and answered, its slot and method
//! and which unit served it, so tests can check ordering invariants.

use crate::{client, eventually, free_port, instance_list, run_cli, try_send, GatewayProc};
use reqwest::Method;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use unitgate_store::testkit::{EtcdCluster, EtcdProc};
pub use unitgate_store::{EtcdStore, Expect, Options};

/// Slots of the test fleet (the default).
pub const SLOTS: u64 = 10000;

/// The lease of every gateway's status entry, in seconds: short, so tests
/// that stop a gateway wait little for the fleet to stop waiting for it.
pub const LEASE_SECS: u64 = 3;

/// A catch-all sharded route to the service "echo" (one retry).
pub const SHARDED_ROUTE: &str = r#"
[[routes]]
name = "all"
path_prefix = "/"
service = "echo"
placement = "sharded"
retries = 1
"#;

/// An etcd prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "/ut/{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The fleet document: epoch 1, routing key `x-user-id`; unit A owns
/// 0-4999 and fails over to B, B owns 5000-9999 and fails over to A; one
/// service "echo" with instances `a` in A and `b` in B; then `routes`.
/// `routing_extra` goes into `[routing]`.
pub fn fleet_doc(a: &[SocketAddr], b: &[SocketAddr], routing_extra: &str, routes: &str) -> String {
    let routing = format!(
        r#"[routing]
epoch = 1
key = ["header:x-user-id"]
signing_keys = {{ k1 = "fleet-signing-key" }}
active_key = "k1"
{routing_extra}"#
    );
    let instances = format!("A = [{}]\nB = [{}]", instance_list(a), instance_list(b));
    crate::two_units_fleet(&routing, &instances, "", routes)
}

/// A gateway's local file in etcd mode (`{listen}`/`{admin}` left for
/// [`GatewayProc::start`]).
pub fn local_file(unit: &str, id: &str, endpoints: &[String], prefix: &str) -> String {
    let endpoints = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[gateway]
unit = "{unit}"
listen = ["{{listen}}"]
threads = 1
grace_period_secs = 1
trusted_peers = ["127.0.0.1/32"]

[admin]
listen = "{{admin}}"
token = "test-token"

[store]
kind = "etcd"
endpoints = [{endpoints}]
prefix = "{prefix}"
gateway_id = "{id}"
cache_file = "last-good.toml"
lease_secs = {LEASE_SECS}
"#
    )
}

/// Waits until `/readyz` answers 200.
pub async fn wait_ready(gw: &GatewayProc, timeout: Duration) {
    eventually("the gateway is ready", timeout, || async {
        let r = try_send(gw.client.get(gw.admin_url("/readyz")))
            .await
            .ok()?;
        (r.status == 200).then_some(())
    })
    .await;
}

/// A seeded fleet and its gateways (`gws[i]` has id `ids[i]`, unit `units[i]`).
pub struct Fleet {
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// Holds `fleet.toml` and the local file the CLI runs with.
    pub dir: tempfile::TempDir,
    pub gws: Vec<GatewayProc>,
    pub ids: Vec<String>,
    pub units: Vec<String>,
}

impl Fleet {
    /// Seeds `doc` under a fresh prefix with `unitgate fleet init` (asserting
    /// exit 0), then starts one gateway per `(id, unit)` and waits until each
    /// is ready.
    pub async fn start(endpoints: Vec<String>, doc: &str, gateways: &[(&str, &str)]) -> Fleet {
        let dir = tempfile::tempdir().expect("temp dir");
        let prefix = unique_prefix("fleet");
        let mut fleet = Fleet {
            endpoints,
            prefix,
            dir,
            gws: Vec::new(),
            ids: Vec::new(),
            units: Vec::new(),
        };
        let (code, out, err) = fleet.init(doc, false);
        assert_eq!(code, 0, "fleet init: {out}{err}");
        for (id, unit) in gateways {
            fleet.add_gateway(id, unit).await;
        }
        fleet
    }

    /// Starts one more gateway of this fleet and waits until it is ready.
    pub async fn add_gateway(&mut self, id: &str, unit: &str) -> usize {
        let gw = GatewayProc::start(&local_file(unit, id, &self.endpoints, &self.prefix)).await;
        wait_ready(&gw, Duration::from_secs(10)).await;
        self.gws.push(gw);
        self.ids.push(id.to_owned());
        self.units.push(unit.to_owned());
        self.gws.len() - 1
    }

    /// A local file of this fleet (unit A, id `cli`) for the CLI, written
    /// next to `fleet.toml`.
    pub fn cli_local(&self) -> PathBuf {
        let path = self.dir.path().join("cli.toml");
        let text = local_file("A", "cli", &self.endpoints, &self.prefix)
            .replace("{listen}", &format!("127.0.0.1:{}", free_port()))
            .replace("{admin}", &format!("127.0.0.1:{}", free_port()));
        std::fs::write(&path, text).expect("write the CLI's local file");
        path
    }

    /// `unitgate fleet init --config <cli local> --from <doc> [--force]`.
    pub fn init(&self, doc: &str, force: bool) -> (i32, String, String) {
        let from = self.dir.path().join("fleet.toml");
        std::fs::write(&from, doc).expect("write fleet.toml");
        let local = self.cli_local();
        let (local, from) = (local.to_string_lossy(), from.to_string_lossy());
        let mut args = vec!["fleet", "init", "--config", &local, "--from", &from];
        if force {
            args.push("--force");
        }
        run_cli(&args)
    }

    /// `unitgate fleet status --config <cli local>`.
    pub fn status_cli(&self) -> (i32, String, String) {
        let local = self.cli_local();
        run_cli(&["fleet", "status", "--config", &local.to_string_lossy()])
    }

    /// A store client on this fleet's prefix, for writing behind its back.
    pub fn store(&self) -> EtcdStore {
        EtcdStore::new(self.endpoints.clone(), &self.prefix, Options::default())
    }

    /// `GET <path>` on gateway `i`'s admin API, as JSON (None: no answer or not 200).
    pub async fn admin_json(&self, i: usize, path: &str) -> Option<Value> {
        let gw = &self.gws[i];
        let r = try_send(gw.admin(Method::GET, path).timeout(Duration::from_secs(3)))
            .await
            .ok()?;
        (r.status == 200).then(|| r.json())
    }

    /// Gateway `i`'s applied epoch and config hash (`/admin/v1/status`).
    pub async fn applied(&self, i: usize) -> Option<(u64, String)> {
        let gw = &self.gws[i];
        let r = try_send(
            gw.admin(Method::GET, "/admin/v1/status")
                .timeout(Duration::from_secs(3)),
        )
        .await
        .ok()?;
        let epoch = (r.status == 200).then(|| r.json()["epoch"].as_u64())??;
        Some((epoch, r.header("etag")?.to_owned()))
    }

    /// Waits until the gateways `alive` all apply the same epoch and hash and
    /// each lists all of them `in_sync` in `/admin/v1/fleet`; returns the epoch.
    pub async fn wait_converged(&self, alive: &[usize], timeout: Duration) -> u64 {
        eventually("the fleet converges", timeout, || async {
            let mut seen = None;
            for &i in alive {
                let applied = self.applied(i).await?;
                if seen.get_or_insert_with(|| applied.clone()) != &applied {
                    return None;
                }
            }
            for &i in alive {
                let view = self.admin_json(i, "/admin/v1/fleet").await?;
                let gateways = view["gateways"].as_array()?;
                for &j in alive {
                    let g = gateways.iter().find(|g| g["id"] == self.ids[j].as_str())?;
                    if g["in_sync"] != true {
                        return None;
                    }
                }
            }
            seen.map(|(epoch, _)| epoch)
        })
        .await
    }
}

/// One request of a [`Load`], as the client saw it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index of the gateway it went through.
    pub gw: usize,
    pub user: u64,
    pub slot: u64,
    /// POST (a write) rather than GET.
    pub write: bool,
    pub sent: Instant,
    pub recv: Instant,
    /// 0: the request failed at the transport (see `error`).
    pub status: u16,
    /// The JSON `error` code of a refusal, or the transport error.
    pub error: String,
    /// `x-echo-unit` of the backend that answered (empty: none did).
    pub unit: String,
}

/// Bounded traffic through several gateways: `workers` tasks, each sending
/// at most `max_per_worker` requests (one every `pace`) until stopped or
/// `max_time` passed, cycling over the targets and users, GET and POST in turn.
pub struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// (gateway index, data-plane address)
    pub targets: Vec<(usize, SocketAddr)>,
    pub users: Vec<u64>,
    pub workers: usize,
    pub max_per_worker: usize,
    pub max_time: Duration,
    pub pace: Duration,
    /// Alternate GET and POST; false: GET only.
    pub writes: bool,
}

impl Load {
    pub fn start(spec: LoadSpec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + spec.max_time;
        let handles = (0..spec.workers)
            .map(|w| {
                let (stop, spec) = (stop.clone(), spec.clone());
                tokio::spawn(async move {
                    let http = client();
                    let mut out = Vec::with_capacity(spec.max_per_worker);
                    for n in 0..spec.max_per_worker {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        let k = n * spec.workers + w;
                        let (gw, addr) = spec.targets[k % spec.targets.len()];
                        let user = spec.users[(k / spec.targets.len()) % spec.users.len()];
                        let write = spec.writes && n % 2 == 1;
                        out.push(one(&http, gw, addr, user, write).await);
                        tokio::time::sleep(spec.pace).await;
                    }
                    out
                })
            })
            .collect();
        Load { stop, handles }
    }

    /// Stops every worker and returns all samples.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for h in self.handles {
            all.extend(h.await.expect("load worker"));
        }
        all
    }
}

async fn one(
    http: &reqwest::Client,
    gw: usize,
    addr: SocketAddr,
    user: u64,
    write: bool,
) -> Sample {
    let method = if write { Method::POST } else { Method::GET };
    let req = http
        .request(method, format!("http://{addr}/load"))
        .header("x-user-id", user.to_string())
        .timeout(Duration::from_secs(5));
    let sent = Instant::now();
    let r = try_send(req).await;
    let recv = Instant::now();
    let mut s = Sample {
        gw,
        user,
        slot: user % SLOTS,
        write,
        sent,
        recv,
        status: 0,
        error: String::new(),
        unit: String::new(),
    };
    match r {
        Ok(r) => {
            s.status = r.status;
            s.unit = r.unit().to_owned();
            if r.status != 200 {
                s.error = serde_json::from_str::<Value>(&r.body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| r.body.chars().take(200).collect());
            }
        }
        Err(e) => s.error = e.to_string(),
    }
    s
}
