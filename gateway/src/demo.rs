//! `unitgate demo`: the embedded default. Two units (A, B) of an echo service
//! with two in-process instances each, the gateway in front, no files needed.

use crate::echo::EchoServer;
use std::net::SocketAddr;
use std::sync::mpsc;

pub struct DemoOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
}

/// Starts the echo instances on their own runtime thread, then runs the
/// gateway on the calling thread until it is stopped.
pub fn run(opts: DemoOptions) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
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
                let mut servers = Vec::new();
                for (unit, instance) in [("A", "a1"), ("A", "a2"), ("B", "b1"), ("B", "b2")] {
                    match EchoServer::start(unit, instance, SocketAddr::from(([127, 0, 0, 1], 0)))
                        .await
                    {
                        Ok(s) => servers.push(s),
                        Err(e) => {
                            let _ = tx.send(Err(format!("echo {instance}: {e}")));
                            return;
                        }
                    }
                }
                let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
                let _ = tx.send(Ok(addrs));
                // The instances live as long as the process.
                std::future::pending::<()>().await;
            });
        })
        .map_err(|e| e.to_string())?;
    let addrs = rx.recv().map_err(|e| e.to_string())??;

    let token = crate::proxy::request::new_request_id();
    let text = config_text(&opts, &addrs, &token);
    let config = unitgate_config::parse(&text, std::path::Path::new("."))
        .map_err(|e| format!("embedded demo config is invalid:\n{e}"))?;
    print_tour(&opts, &token);
    crate::server::run(config).map_err(|e| e.to_string())
}

fn config_text(opts: &DemoOptions, a: &[SocketAddr], token: &str) -> String {
    format!(
        r#"
[gateway]
unit = "A"
listen = ["{listen}"]
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

[[routes]]
name = "pinned-b"
path_prefix = "/pinned/b"
service = "echo"
placement = "unit:B"
strip_prefix = true

[[routes]]
name = "echo"
path_prefix = "/"
service = "echo"
placement = "sharded"
"#,
        listen = opts.listen,
        admin = opts.admin_listen,
        a1 = a[0],
        a2 = a[1],
        b1 = a[2],
        b2 = a[3],
    )
}

fn print_tour(opts: &DemoOptions, token: &str) {
    let l = opts.listen;
    let adm = opts.admin_listen;
    println!(
        r#"unitgate demo: this gateway runs in unit A; units A and B each have two echo instances.

  data plane  http://{l}
  admin API   http://{adm}   (token: {token})

Try:
  curl -s http://{l}/hello                      # served in A, instances a1/a2 in turn
  curl -s http://{l}/pinned/b/hello             # route pinned to unit B (prefix stripped)
  curl -s -X DELETE http://{l}/anything         # any method: the echo shows it
  curl -s http://{l}/hello -H 'x-request-id: r-1' -D - -o /dev/null   # request id kept
  curl -s http://{adm}/healthz
  curl -s http://{adm}/readyz
  curl -s http://{adm}/admin/v1/status -H 'authorization: Bearer {token}'

Ctrl-C stops the demo.
"#
    );
}
