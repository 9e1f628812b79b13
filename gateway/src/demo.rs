//! `unitgate demo`: the embedded default. Two units (A, B) of an echo service
//! with two in-process instances each, the gateway in front, no files needed.
//!
//! A demo-only control listener stops and restarts a unit's instances, the
//! way a crash would, so failover can be watched:
//! `POST /units/<A|B>/stop`, `POST /units/<A|B>/start`, `GET /units`.

use crate::echo::EchoServer;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};

pub struct DemoOptions {
    pub listen: SocketAddr,
    /// HTTPS (h2 and http/1.1) with a self-signed certificate made at start.
    pub listen_tls: SocketAddr,
    pub admin_listen: SocketAddr,
    pub control_listen: SocketAddr,
}

/// The v1 instances of `echo`, then one instance per unit of `echo-v2`
/// (the gray release of the `/shop` route).
const INSTANCES: [(&str, &str); 6] = [
    ("A", "a1"),
    ("A", "a2"),
    ("B", "b1"),
    ("B", "b2"),
    ("A", "a1-v2"),
    ("B", "b1-v2"),
];

/// The demo's echo instances; a stopped one keeps its address and switches.
struct Fleet {
    servers: Mutex<Vec<(EchoServer, bool)>>,
}

impl Fleet {
    fn set_unit(&self, unit: &str, up: bool) -> Result<usize, String> {
        let mut servers = self.servers.lock().map_err(|e| e.to_string())?;
        let mut changed = 0;
        for (server, running) in servers.iter_mut() {
            if server.state.unit != unit || *running == up {
                continue;
            }
            if up {
                let std = std::net::TcpListener::bind(server.addr).map_err(|e| e.to_string())?;
                std.set_nonblocking(true).map_err(|e| e.to_string())?;
                let listener = tokio::net::TcpListener::from_std(std).map_err(|e| e.to_string())?;
                *server = EchoServer::serve(listener, server.state.clone());
            } else {
                server.stop();
            }
            *running = up;
            changed += 1;
        }
        Ok(changed)
    }

    fn describe(&self) -> String {
        let servers = match self.servers.lock() {
            Ok(s) => s,
            Err(e) => return e.to_string(),
        };
        let list: Vec<_> = servers
            .iter()
            .map(|(s, up)| {
                serde_json::json!({"unit": s.state.unit, "instance": s.state.instance,
                    "addr": s.addr.to_string(), "running": up})
            })
            .collect();
        serde_json::Value::from(list).to_string()
    }
}

/// Starts the echo instances and the control listener on their own runtime
/// thread, then runs the gateway on the calling thread until it is stopped.
pub fn run(opts: DemoOptions) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let control = opts.control_listen;
    std::thread::Builder::new()
        .name("demo-echo".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                match start_fleet(control).await {
                    Ok((addrs, control_task)) => {
                        let _ = tx.send(Ok(addrs));
                        // The instances live as long as the process.
                        let _ = control_task.await;
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| e.to_string())?;
    let addrs = rx.recv().map_err(|e| e.to_string())??;

    let token = crate::proxy::forward::new_request_id()
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let cert = demo_certificate()?;
    let text = config_text(&opts, &addrs, &token, &cert);
    let config = unitgate_config::parse(&text, std::path::Path::new("."))
        .map_err(|e| format!("embedded demo config is invalid:\n{e}"))?;
    print_tour(&opts, &token, &cert);
    crate::server::run(config, None).map_err(|e| e.to_string())
}

async fn start_fleet(
    control: SocketAddr,
) -> Result<(Vec<SocketAddr>, tokio::task::JoinHandle<()>), String> {
    let mut servers = Vec::new();
    for (unit, instance) in INSTANCES {
        let s = EchoServer::start(unit, instance, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| format!("echo {instance}: {e}"))?;
        servers.push((s, true));
    }
    let addrs = servers.iter().map(|(s, _)| s.addr).collect();
    let fleet = Arc::new(Fleet {
        servers: Mutex::new(servers),
    });
    let listener = tokio::net::TcpListener::bind(control)
        .await
        .map_err(|e| format!("demo control listener {control}: {e}"))?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let fleet = fleet.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| control_request(fleet.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addrs, task))
}

async fn control_request(
    fleet: Arc<Fleet>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let (status, body) = match (req.method(), parts.as_slice()) {
        (&Method::GET, ["units"]) => (StatusCode::OK, fleet.describe()),
        (&Method::POST, ["units", unit, action @ ("stop" | "start")]) => {
            match fleet.set_unit(unit, *action == "start") {
                Ok(n) => (
                    StatusCode::OK,
                    format!("{{\"unit\":\"{unit}\",\"action\":\"{action}\",\"instances\":{n}}}"),
                ),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"error": e}).to_string(),
                ),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"error":"try GET /units, POST /units/A/stop, POST /units/A/start"}"#.to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body + "\n")));
    *resp.status_mut() = status;
    Ok(resp)
}

/// The demo's certificate: self-signed for localhost and 127.0.0.1, made
/// now (rcgen) and written beside nothing but a temporary directory.
pub struct DemoCert {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

fn demo_certificate() -> Result<DemoCert, String> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let c =
        rcgen::generate_simple_self_signed(names).map_err(|e| format!("demo certificate: {e}"))?;
    let dir = std::env::temp_dir().join(format!("unitgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cert = DemoCert {
        cert_file: dir.join("demo-cert.pem"),
        key_file: dir.join("demo-key.pem"),
    };
    std::fs::write(&cert.cert_file, c.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&cert.key_file, c.key_pair.serialize_pem()).map_err(|e| e.to_string())?;
    Ok(cert)
}

fn config_text(opts: &DemoOptions, a: &[SocketAddr], token: &str, cert: &DemoCert) -> String {
    format!(
        r#"
[tls]
[[tls.certificates]]
cert_file = "{cert_file}"
key_file = "{key_file}"

[gateway]
unit = "A"
listen = ["{listen}"]
listen_tls = ["{listen_tls}"]
threads = 2
grace_period_secs = 2
expose_unit_headers = true

[admin]
listen = "{admin}"
token = "{token}"

[routing]
key = ["header:x-user-id", "cookie:uid", "query:uid"]
signing_keys = {{ demo = "demo-signing-key-not-for-production" }}
active_key = "demo"
forbidden_writes = ["9990-9999"]

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
read_timeout_ms = 3000
[services.instances]
A = ["{a1}", "{a2}"]
B = ["{b1}", "{b2}"]
[services.health]
kind = "http"
path = "/healthz"
interval_ms = 1000
timeout_ms = 500
unhealthy_after = 2
healthy_after = 1

[[services]]
name = "echo-v2"
connect_timeout_ms = 200
read_timeout_ms = 3000
[services.instances]
A = ["{a1v2}"]
B = ["{b1v2}"]

[[routes]]
name = "pinned-b"
path_prefix = "/pinned/b"
service = "echo"
placement = "unit:B"
strip_prefix = true

[[routes]]
name = "shop"
path_prefix = "/shop"
service = "echo"
placement = "sharded"

[[routes.splits]]
service = "echo-v2"
weight = 10
match_header = "x-canary"

[[routes]]
name = "echo"
path_prefix = "/"
service = "echo"
placement = "sharded"
"#,
        listen = opts.listen,
        listen_tls = opts.listen_tls,
        cert_file = cert.cert_file.display(),
        key_file = cert.key_file.display(),
        admin = opts.admin_listen,
        a1 = a[0],
        a2 = a[1],
        b1 = a[2],
        b2 = a[3],
        a1v2 = a[4],
        b1v2 = a[5],
    )
}

fn print_tour(opts: &DemoOptions, token: &str, cert: &DemoCert) {
    let l = opts.listen;
    let tls = opts.listen_tls;
    let ca = cert.cert_file.display();
    let tls_port = tls.port();
    let adm = opts.admin_listen;
    let ctl = opts.control_listen;
    println!(
        r#"unitgate demo: this gateway runs in unit A. Unit A owns slots 0-4999, unit B 5000-9999;
each unit has two echo instances. Responses show x-unit-home / x-unit-served.

  data plane    http://{l}   https://{tls} (HTTP/2 and 1.1; self-signed, {ca})
  admin API     http://{adm}   (token: {token})
  console       http://{adm}/ui/#token={token}
  demo control  http://{ctl}   (stop/start a unit's instances)

Unit routing (the key is x-user-id, else cookie uid, else query uid):
  curl -si http://{l}/orders -H 'x-user-id: 42'      # slot 42   -> home A
  curl -si http://{l}/orders -H 'x-user-id: 7500'    # slot 7500 -> home B
  curl -si http://{l}/orders?uid=alice               # crc32("alice") % 10000 -> its home
Over HTTPS, HTTP/2 (the same routing, cookie and errors):
  curl -si --cacert {ca} https://localhost:{tls_port}/orders -H 'x-user-id: 42'
  curl -s --cacert {ca} --http2 https://localhost:{tls_port}/orders -o /dev/null -w '%{{http_version}}\n'   # 2
The routing cookie (anonymous users stay on one slot):
  curl -si http://{l}/orders | grep -i set-cookie    # ug_route=1.<slot>.<epoch>.<expires>.<kid>.<sig>
  curl -si http://{l}/orders -b 'ug_route=<value from above>'   # same unit, no new cookie
Pinned placement and the write freeze (slots 9990-9999 are frozen):
  curl -s  http://{l}/pinned/b/x -H 'x-user-id: 42'  # always B
  curl -si -X POST http://{l}/orders -H 'x-user-id: 9995'   # 503 write_forbidden; GET still works
Failover: crash unit A's instances, watch A's users cross to B, bring A back:
  curl -s -X POST http://{ctl}/units/A/stop
  curl -s http://{l}/orders -H 'x-user-id: 42' | grep -o '"x-unit-crossed-from":"A"'
  curl -s -X POST http://{ctl}/units/A/start
Or a planned drain through the admin API (state: active | draining | down):
  curl -s -X PUT http://{adm}/admin/v1/units/A -H 'authorization: Bearer {token}' -d '{{"state":"draining"}}'
  curl -s -X PUT http://{adm}/admin/v1/units/A -H 'authorization: Bearer {token}' -d '{{"state":"active"}}'
A slot migration (a fleet of one here; see scripts/fleet-demo.sh for a fleet on etcd):
  curl -s -X POST http://{adm}/admin/v1/migrations -H 'authorization: Bearer {token}' -d '{{"slots":["0-99"],"to":"B","confirm":"manual"}}'
  curl -s http://{adm}/admin/v1/migrations -H 'authorization: Bearer {token}'    # waiting_confirm: slots 0-99 frozen
  curl -si -X POST http://{l}/orders -H 'x-user-id: 42'                          # 503 write_forbidden meanwhile
  curl -s -X POST http://{adm}/admin/v1/migrations/<id>/confirm -H 'authorization: Bearer {token}'
  curl -si http://{l}/orders -H 'x-user-id: 42' | grep -i x-unit-home            # now B
  curl -s http://{adm}/admin/v1/fleet -H 'authorization: Bearer {token}'
Gray release: /shop sends 10% of users to echo-v2 (sticky per user), x-canary forces it:
  for u in $(seq 1 30); do curl -s http://{l}/shop -H "x-user-id: $u" | grep -o '"instance":"[^"]*"'; done | sort | uniq -c
  curl -s http://{l}/shop -H 'x-user-id: 42' -H 'x-canary: 1' | grep -o '"x-unit-split":"[^"]*"'
  curl -s -X PUT http://{adm}/admin/v1/routes/shop -H 'authorization: Bearer {token}' -d '{{"path_prefix":"/shop","service":"echo","splits":[{{"service":"echo-v2","weight":50,"match_header":"x-canary"}}]}}'
  curl -s http://{adm}/metrics | grep unitgate_split_requests_total
Admin and metrics:
  curl -s http://{adm}/healthz; curl -s http://{adm}/readyz
  curl -s http://{adm}/admin/v1/health -H 'authorization: Bearer {token}'
  curl -s http://{adm}/metrics | grep unitgate_requests_total

Ctrl-C stops the demo.
"#
    );
}
