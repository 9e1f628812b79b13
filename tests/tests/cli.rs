//! The command line: `check`, `run` with a bad file, signals, `demo`, and the
//! admin listener's foundation endpoints.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use unitgate_tests::{
    backend, client, eventually, free_port, run_cli, simple_config, try_send, unitgate_bin,
    EchoServer, GatewayProc, Reply, LOCAL_ROUTE,
};

#[test]
fn check_reports_every_error_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[gateway]
unit = "A"

[[units]]
name = "A"
slots = ["0-4999"]
failover = ["C"]

[[units]]
name = "B"
slots = ["4000-9999"]

[[services]]
name = "orders"
[services.instances]
A = ["127.0.0.1:notaport"]

[[routes]]
name = "r1"
path_prefix = "/api"
service = "ordrs"

[[routes.rate_limits]]
rate = "100/d"
"#,
    )
    .expect("write config");
    let (code, _out, err) = run_cli(&["check", "-c", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{err}");
    for expected in [
        "units[0].failover[0]",
        "units[1].slots",
        "services[0].instances.A[0]",
        "routes[0].service",
        "routes[0].rate_limits[0].rate",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(err.contains("ordrs"), "the unknown name is quoted:\n{err}");
}

#[test]
fn check_accepts_every_shipped_example() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(examples).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, out, err) = run_cli(&["check", "-c", path.to_str().expect("utf-8")]);
            assert_eq!(code, 0, "{}: {err}", path.display());
            assert!(out.contains("ok"), "{out}");
            n += 1;
        }
    }
    assert!(n >= 2, "expected at least two example configs, found {n}");
}

#[test]
fn run_with_invalid_config_exits_1_with_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[gateway]\nunit = \"A\"\nlisten = [\"nope\"]\n").expect("write");
    let (code, _out, err) = run_cli(&["run", "-c", path.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    assert!(err.contains("gateway.listen"), "{err}");
    let (code, _out, err) = run_cli(&["run", "-c", "/nonexistent/unitgate.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/unitgate.toml"), "{err}");
}

/// A gateway whose one backend answers after `delay`, with one request to it
/// already in flight when this returns.
async fn slow_request_in_flight(
    delay: Duration,
) -> (
    GatewayProc,
    EchoServer,
    JoinHandle<Result<Reply, reqwest::Error>>,
) {
    let a1 = backend("A", "a1").await;
    a1.set_delay(delay);
    let gw = GatewayProc::start(&simple_config(
        &format!("A = [\"{}\"]", a1.addr),
        LOCAL_ROUTE,
    ))
    .await;
    let inflight = tokio::spawn(try_send(client().get(gw.url("/slow"))));
    eventually(
        "request reached the backend",
        Duration::from_secs(5),
        || async { (a1.served() == 1).then_some(()) },
    )
    .await;
    (gw, a1, inflight)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let (mut gw, _a1, inflight) = slow_request_in_flight(Duration::from_millis(800)).await;
    gw.signal("TERM");
    let reply = inflight
        .await
        .expect("join")
        .expect("in-flight request completes");
    assert_eq!(
        reply.status, 200,
        "in-flight request was cut: {}",
        reply.body
    );
    // grace_period_secs = 3: the process must not wait it out once drained.
    let (status, took) = gw.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_millis(1500),
        "exit took {took:?} after drain"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_when_idle_exits_promptly() {
    let a1 = backend("A", "a1").await;
    let mut gw = GatewayProc::start(&simple_config(
        &format!("A = [\"{}\"]", a1.addr),
        LOCAL_ROUTE,
    ))
    .await;
    assert_eq!(gw.get("/x").await.status, 200);
    gw.signal("TERM");
    let (status, took) = gw.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(1), "idle drain took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_exits_at_once() {
    let (mut gw, _a1, inflight) = slow_request_in_flight(Duration::from_secs(5)).await;
    gw.signal("INT");
    let (_status, took) = gw.wait_exit(Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "SIGINT took {took:?}");
    let r = inflight.await.expect("join");
    assert!(
        r.is_err() || r.is_ok_and(|r| r.status != 200),
        "slow request was not cut"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_health_readiness_and_auth() {
    let a1 = backend("A", "a1").await;
    let health = "[services.health]\nkind = \"http\"\ninterval_ms = 100\ntimeout_ms = 100\n\
                  unhealthy_after = 1\nhealthy_after = 1\n";
    let gw = GatewayProc::start(&simple_config(
        &format!("A = [\"{}\"]", a1.addr),
        &format!("{health}{LOCAL_ROUTE}"),
    ))
    .await;
    let get = |path: &str| gw.client.get(gw.admin_url(path));

    let r = gw.send(get("/healthz")).await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    eventually("ready", Duration::from_secs(5), || async {
        (try_send(get("/readyz")).await.ok()?.status == 200).then_some(())
    })
    .await;
    a1.set_healthy(false);
    let r = eventually(
        "not ready once the only instance fails",
        Duration::from_secs(5),
        || async {
            try_send(get("/readyz"))
                .await
                .ok()
                .filter(|r| r.status == 503)
        },
    )
    .await;
    assert!(r.body.contains("echo"), "{}", r.body);

    let r = gw.send(get("/admin/v1/status")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    let r = gw.send(get("/admin/v1/status").bearer_auth("wrong")).await;
    assert_eq!(r.status, 401);
    let r = gw
        .send(get("/admin/v1/status").bearer_auth("test-token"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["unit"], "A");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_shows_units_cookie_failover_and_stops_on_ctrl_c() {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let control = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = Command::new(unitgate_bin())
        .args([
            "demo",
            "--listen",
            &listen.to_string(),
            "--listen-tls",
            &tls.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .args(["--control-listen", &control.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let c = client();
    let user = |id: &'static str| {
        c.get(format!("http://{listen}/orders"))
            .header("x-user-id", id)
    };
    let r = eventually("demo answers", Duration::from_secs(15), || async {
        try_send(user("42")).await.ok()
    })
    .await;
    assert_eq!((r.status, r.unit()), (200, "A"), "{}", r.body);
    assert_eq!(r.header("x-unit-home"), Some("A"));
    assert!(r
        .header("set-cookie")
        .is_some_and(|v| v.starts_with("ug_route=1.42.")));
    let r = try_send(user("7500")).await.expect("user in B");
    assert_eq!((r.unit(), r.header("x-unit-served")), ("B", Some("B")));
    let r = try_send(c.get(format!("http://{listen}/pinned/b/x")))
        .await
        .expect("pinned");
    assert_eq!((r.unit(), r.json()["path"].as_str()), ("B", Some("/x")));
    let r = try_send(
        c.post(format!("http://{listen}/orders"))
            .header("x-user-id", "9995"),
    )
    .await
    .expect("frozen");
    assert_eq!(r.status, 503);
    let mut instances = std::collections::HashSet::new();
    for _ in 0..4 {
        instances.insert(try_send(user("42")).await.expect("a").instance().to_owned());
    }
    assert_eq!(instances.len(), 2, "both A instances serve: {instances:?}");

    // The gray release of /shop: the canary header forces echo-v2.
    let r = try_send(
        c.get(format!("http://{listen}/shop"))
            .header("x-user-id", "42")
            .header("x-canary", "1"),
    )
    .await
    .expect("canary");
    assert_eq!((r.status, r.instance()), (200, "a1-v2"), "{}", r.body);
    assert_eq!(r.json()["headers"]["x-unit-split"], "echo-v2");

    // Crash A's instances through the demo switch: user 42 crosses to B.
    let r = try_send(c.post(format!("http://{control}/units/A/stop")))
        .await
        .expect("stop");
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..5 {
        let r = try_send(user("42")).await.expect("after stop");
        assert_eq!((r.status, r.unit()), (200, "B"));
        assert_eq!(r.json()["headers"]["x-unit-crossed-from"], "A");
    }
    try_send(c.post(format!("http://{control}/units/A/start")))
        .await
        .expect("start");
    eventually("A serves again", Duration::from_secs(6), || async {
        try_send(user("42")).await.ok().filter(|r| r.unit() == "A")
    })
    .await;
    let r = try_send(c.get(format!("http://{admin}/healthz")))
        .await
        .expect("healthz");
    assert_eq!(r.status, 200);

    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "demo did not exit on Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        let _ = stdout.read_to_string(&mut out);
    }
    for shown in [
        "x-user-id: 42",
        "x-user-id: 7500",
        "ug_route",
        "units/A/stop",
        "write_forbidden",
        "x-canary",
        "unitgate_split_requests_total",
    ] {
        assert!(out.contains(shown), "demo tour lacks {shown:?}:\n{out}");
    }
    assert!(
        status.code().is_some(),
        "demo was killed by a signal: {status}"
    );
}
