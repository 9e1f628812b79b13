//! Outlier ejection, circuit breakers that trigger crossing, degraded
//! fallbacks, route timeouts and the in-flight guard, through the real binary.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use unitgate_tests::{
    backend, client, dead_addr, eventually, instance_list, try_send, two_units_config, GatewayProc,
};

/// The harness's two-unit topology with the given instances of "echo".
fn config(a: &[SocketAddr], b: &[SocketAddr], service_extra: &str, routes: &str) -> String {
    let mut instances = format!("A = [{}]\n", instance_list(a));
    if !b.is_empty() {
        instances.push_str(&format!("B = [{}]\n", instance_list(b)));
    }
    two_units_config("", "", &instances, service_extra, routes)
}

const ROUTE: &str = r#"
[[routes]]
name = "main"
path_prefix = "/"
service = "echo"
retries = 0
"#;

/// The `unit` entry of service "echo" in `GET /admin/v1/health`.
async fn health_of(gw: &GatewayProc, unit: &str) -> serde_json::Value {
    let r = gw
        .send(
            gw.client
                .get(gw.admin_url("/admin/v1/health"))
                .bearer_auth("test-token"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let units = r.json()["services"][0]["units"].clone();
    units
        .as_array()
        .and_then(|u| u.iter().find(|x| x["unit"] == unit).cloned())
        .unwrap_or_else(|| panic!("no unit {unit} in {units}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn erroring_instance_is_ejected_then_returns() {
    let (a1, a2) = (backend("A", "a1").await, backend("A", "a2").await);
    let outlier = "[services.outlier]\nconsecutive_failures = 3\neject_ms = 700\n";
    let gw = GatewayProc::start(&config(&[a1.addr, a2.addr], &[], outlier, ROUTE)).await;
    a1.set_status(500);
    let mut errors = 0;
    for _ in 0..30 {
        let r = gw.get_as("42", "/x").await;
        if r.status == 500 {
            errors += 1;
        }
    }
    assert_eq!(a1.served(), 3, "a1 got traffic after {} failures", 3);
    assert_eq!(
        errors, 3,
        "only the failures before ejection reach the client"
    );
    assert_eq!(a2.served(), 27);
    let h = health_of(&gw, "A").await;
    assert_ne!(
        h["instances"][0]["ejected"], h["instances"][1]["ejected"],
        "one ejected: {h}"
    );
    assert_eq!(h["attempts"]["error"], 3);
    assert_eq!(h["attempts"]["ok"], 27);

    a1.set_status(0);
    let t0 = Instant::now();
    eventually(
        "a1 back after its ejection",
        Duration::from_secs(3),
        || async {
            gw.get_as("42", "/x").await;
            (a1.served() > 3).then_some(())
        },
    )
    .await;
    let back = t0.elapsed();
    assert!(
        back >= Duration::from_millis(550),
        "returned after {back:?}, ejection is 700 ms"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_instance_is_never_ejected() {
    let a1 = backend("A", "a1").await;
    let outlier = "[services.outlier]\nconsecutive_failures = 1\neject_ms = 10000\n";
    let gw = GatewayProc::start(&config(&[a1.addr], &[], outlier, ROUTE)).await;
    a1.set_status(500);
    for _ in 0..5 {
        let r = gw.get_as("42", "/x").await;
        assert_eq!(r.status, 500, "the instance keeps serving: {}", r.body);
    }
    assert_eq!(a1.served(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn unit_answering_errors_is_abandoned_through_its_circuit_then_recovers() {
    let (a1, a2) = (backend("A", "a1").await, backend("A", "a2").await);
    let (b1, b2) = (backend("B", "b1").await, backend("B", "b2").await);
    let breaker = "[services.circuit_breaker]\nfailure_ratio = 0.5\nmin_requests = 10\n\
                   window_ms = 5000\nopen_ms = 1000\n";
    let gw = GatewayProc::start(&config(
        &[a1.addr, a2.addr],
        &[b1.addr, b2.addr],
        breaker,
        ROUTE,
    ))
    .await;
    assert_eq!(gw.get_as("42", "/x").await.unit(), "A");
    a1.set_status(500);
    a2.set_status(500);

    let t0 = Instant::now();
    let mut errors = 0;
    let switched = loop {
        let r = gw.get_as("42", "/x").await;
        if r.status == 200 {
            break r;
        }
        assert_eq!((r.status, r.unit()), (500, "A"));
        errors += 1;
        assert!(errors <= 20, "A was not abandoned after {errors} errors");
    };
    let took = t0.elapsed();
    eprintln!("circuit: {errors} errors seen before the switch, {took:?}");
    // The first (successful) request counts in the window too: 1 ok + 9
    // failed reaches min_requests = 10 at a 0.9 ratio, so the 9th error opens it.
    assert_eq!(errors, 9, "errors before the switch");
    assert!(
        took < Duration::from_secs(5),
        "within one breaker window: {took:?}"
    );
    assert_eq!(switched.unit(), "B");
    assert_eq!(switched.json()["headers"]["x-unit-crossed-from"], "A");
    let served_a = a1.served() + a2.served();
    for _ in 0..10 {
        assert_eq!(gw.get_as("42", "/x").await.unit(), "B");
    }
    assert_eq!(
        a1.served() + a2.served(),
        served_a,
        "an open circuit gets no traffic"
    );
    let h = health_of(&gw, "A").await;
    assert_eq!(h["circuit"], "open");
    assert_eq!(h["attempts"]["error"], 9);
    assert_eq!(health_of(&gw, "B").await["circuit"], "closed");

    // A recovers; after open_ms a half-open probe closes the circuit.
    a1.set_status(0);
    a2.set_status(0);
    let t1 = Instant::now();
    eventually(
        "A serves its users again",
        Duration::from_secs(4),
        || async { (gw.get_as("42", "/x").await.unit() == "A").then_some(()) },
    )
    .await;
    assert!(
        t1.elapsed() >= Duration::from_millis(800),
        "closed before open_ms"
    );
    for _ in 0..5 {
        assert_eq!(gw.get_as("42", "/x").await.unit(), "A");
    }
    assert_eq!(health_of(&gw, "A").await["circuit"], "closed");
}

const FALLBACK_ROUTES: &str = r#"
[[routes]]
name = "with-fallback"
path_prefix = "/fb"
service = "echo"
retries = 0
timeout_ms = 300
[routes.fallback]
status = 200
content_type = "application/json"
body = '{"items":[],"degraded":true}'
headers = { "cache-control" = "no-store" }

[[routes]]
name = "plain"
path_prefix = "/"
service = "echo"
retries = 0
timeout_ms = 300
"#;

#[tokio::test(flavor = "multi_thread")]
async fn all_units_dead_serve_the_fallback_or_unavailable() {
    let gw = GatewayProc::start(&config(&[dead_addr()], &[dead_addr()], "", FALLBACK_ROUTES)).await;
    let r = gw.get_as("42", "/fb/items").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r#"{"items":[],"degraded":true}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-unit-degraded"), Some("no_healthy_unit"));
    assert!(r.header("x-request-id").is_some());
    // pingora drops the client connection after a proxy failure: it must say so.
    assert_eq!(r.header("connection"), Some("close"));

    let r = gw.get_as("42", "/other").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-unit-degraded"), Some("no_healthy_unit"));
    let j = r.json();
    assert_eq!(j["error"], "unavailable");
    assert!(j["request_id"].as_str().is_some_and(|s| s.len() == 32));
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_body_can_come_from_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let body_path = dir.path().join("degraded.html");
    std::fs::write(&body_path, "<p>come back soon</p>").expect("write body");
    let routes = format!(
        "[[routes]]\nname = \"page\"\npath_prefix = \"/\"\nservice = \"echo\"\n\
         [routes.fallback]\nstatus = 503\ncontent_type = \"text/html\"\nbody_file = \"{}\"\n",
        body_path.display()
    );
    let gw = GatewayProc::start(&config(&[dead_addr()], &[], "", &routes)).await;
    // Removing the file now shows it was read at load, not per request.
    std::fs::remove_file(&body_path).expect("remove");
    let r = gw.get_as("42", "/").await;
    assert_eq!((r.status, r.body.as_str()), (503, "<p>come back soon</p>"));
    assert_eq!(r.header("content-type"), Some("text/html"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_hits_the_route_timeout() {
    let a1 = backend("A", "a1").await;
    a1.set_delay(Duration::from_secs(3));
    let gw = GatewayProc::start(&config(&[a1.addr], &[], "", FALLBACK_ROUTES)).await;

    let t0 = Instant::now();
    let r = gw.get_as("42", "/slow").await;
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert_eq!(r.header("x-unit-degraded"), Some("upstream_timeout"));
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(1000),
        "{took:?}"
    );

    let t0 = Instant::now();
    let r = gw.get_as("42", "/fb/slow").await;
    let took = t0.elapsed();
    assert_eq!(
        (r.status, r.header("x-unit-degraded")),
        (200, Some("upstream_timeout"))
    );
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn inflight_guard_sheds_the_excess_at_once() {
    let a1 = backend("A", "a1").await;
    a1.set_delay(Duration::from_millis(1000));
    let routes = "[[routes]]\nname = \"guarded\"\npath_prefix = \"/\"\nservice = \"echo\"\n\
                  max_inflight = 2\n";
    let gw = GatewayProc::start(&config(&[a1.addr], &[], "", routes)).await;
    let url = gw.url("/slow");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = try_send(client().get(url).header("x-user-id", "42")).await;
            (r, t0.elapsed())
        }));
    }
    let (mut ok, mut shed) = (0, 0);
    for t in tasks {
        let (r, took) = t.await.expect("join");
        let r = r.expect("response");
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(r.header("x-unit-degraded"), Some("overloaded"));
                assert_eq!(r.json()["error"], "unavailable");
                assert!(
                    took < Duration::from_millis(500),
                    "shed after {took:?}: queued?"
                );
                shed += 1;
            }
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    assert_eq!((ok, shed), (2, 6));
    assert_eq!(a1.served(), 2, "shed requests never reach the backend");
    // The slots are given back: the next request passes.
    a1.set_delay(Duration::ZERO);
    assert_eq!(gw.get_as("42", "/x").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_circuit_open_degrades_with_circuit_open() {
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let breaker = "[services.circuit_breaker]\nfailure_ratio = 0.5\nmin_requests = 3\n\
                   window_ms = 10000\nopen_ms = 10000\n";
    let gw = GatewayProc::start(&config(&[a1.addr], &[b1.addr], breaker, FALLBACK_ROUTES)).await;
    a1.set_status(500);
    b1.set_status(500);
    let r = eventually("both circuits open", Duration::from_secs(5), || async {
        let r = gw.get_as("42", "/fb/x").await;
        (r.header("x-unit-degraded") == Some("circuit_open")).then_some(r)
    })
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(a1.served(), 3);
    assert_eq!(b1.served(), 3);
}
