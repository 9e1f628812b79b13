//! Route matching, local error responses, placement and upstream headers,
//! through the real binary.

use unitgate_tests::{backend, simple_config, GatewayProc};

const ROUTES: &str = r#"
[[routes]]
name = "root"
path_prefix = "/"
service = "echo"
placement = "local"

[[routes]]
name = "orders"
path_prefix = "/api/orders"
service = "echo"
placement = "local"
methods = ["GET", "post"]

[[routes]]
name = "orders-admin"
path_prefix = "/api/orders/admin"
service = "echo"
placement = "unit:B"
strip_prefix = true

[[routes]]
name = "only-api-host"
hosts = ["api.example.com"]
path_prefix = "/host-only"
service = "echo"
placement = "unit:B"

[[routes]]
name = "wild-host"
hosts = ["*.example.com"]
path_prefix = "/wild"
service = "echo"
placement = "unit:B"

[[routes]]
name = "put-only"
path_prefix = "/put-only"
methods = ["PUT"]
service = "echo"
placement = "local"
"#;

async fn start() -> (GatewayProc, Vec<unitgate_tests::EchoServer>) {
    let a1 = backend("A", "a1").await;
    let b1 = backend("B", "b1").await;
    let instances = format!("A = [\"{}\"]\nB = [\"{}\"]", a1.addr, b1.addr);
    let gw = GatewayProc::start(&simple_config(&instances, ROUTES)).await;
    (gw, vec![a1, b1])
}

#[tokio::test(flavor = "multi_thread")]
async fn longest_segment_aware_prefix_wins() {
    let (gw, _b) = start().await;
    // "/api/orders/admin" is pinned to B; "/api/orders" stays local (A).
    let r = gw.get("/api/orders/admin/x").await;
    assert_eq!((r.status, r.unit()), (200, "B"));
    let r = gw.get("/api/orders/12").await;
    assert_eq!((r.status, r.unit()), (200, "A"));
    assert_eq!(r.json()["path"], "/api/orders/12");
    // Segment-aware: "/api/ordersx" is not under "/api/orders" (falls to "/").
    let r = gw.send(gw.client.delete(gw.url("/api/ordersx"))).await;
    assert_eq!(
        (r.status, r.unit()),
        (200, "A"),
        "root route serves it, any method"
    );
    // Trailing slash is the same prefix.
    let r = gw.get("/api/orders/admin/").await;
    assert_eq!(r.unit(), "B");
}

#[tokio::test(flavor = "multi_thread")]
async fn method_mismatch_falls_back_to_shorter_prefix_then_405() {
    let (gw, _b) = start().await;
    // DELETE is not allowed on "/api/orders" but "/" allows any method.
    let r = gw.send(gw.client.delete(gw.url("/api/orders/1"))).await;
    assert_eq!(r.status, 200);
    // POST is allowed (lowercase in config is accepted).
    let r = gw
        .send(gw.client.post(gw.url("/api/orders")).body("x"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "POST");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_json_with_request_id() {
    // No catch-all route here, so 404 and 405 are reachable.
    let a1 = backend("A", "a1").await;
    let extra = r#"
[[routes]]
name = "put-only"
path_prefix = "/put-only"
methods = ["PUT"]
service = "echo"
placement = "local"
"#;
    let gw = GatewayProc::start(&simple_config(&format!("A = [\"{}\"]", a1.addr), extra)).await;

    let r = gw.get("/nothing/here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["error"], "no_route");
    let id = j["request_id"].as_str().expect("request_id");
    assert_eq!(id.len(), 32);
    assert_eq!(r.header("x-request-id"), Some(id));
    assert!(j["message"].as_str().is_some_and(|m| !m.is_empty()));

    let r = gw.get("/put-only/x").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"], "method_not_allowed");

    let r = gw
        .send(
            gw.client
                .get(gw.url("/nope"))
                .header("x-request-id", "mine-42"),
        )
        .await;
    assert_eq!(r.json()["request_id"], "mine-42");

    let r = gw.send(gw.client.put(gw.url("/put-only/x"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(a1.served(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_exact_and_wildcard() {
    let (gw, _b) = start().await;
    let with_host = |path: &str, host: &str| gw.client.get(gw.url(path)).header("host", host);

    let r = gw
        .send(with_host("/host-only/x", "API.example.com:8080"))
        .await;
    assert_eq!(
        r.unit(),
        "B",
        "exact host matches case-insensitively, port ignored"
    );
    let r = gw.send(with_host("/host-only/x", "other.test")).await;
    assert_eq!(
        r.unit(),
        "A",
        "other hosts fall through to the any-host root route"
    );

    let r = gw.send(with_host("/wild/x", "a.b.example.com")).await;
    assert_eq!(r.unit(), "B");
    let r = gw.send(with_host("/wild/x", "example.com")).await;
    assert_eq!(
        r.unit(),
        "A",
        "*.example.com does not match the bare domain"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_headers_host_and_strip_prefix() {
    let (gw, _b) = start().await;
    let r = gw
        .send(
            gw.client
                .get(gw.url("/api/orders/admin/list?all=1"))
                .header("host", "shop.test")
                .header("x-forwarded-for", "203.0.113.7")
                .header("x-request-id", "req-abc"),
        )
        .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["path"], "/list", "prefix stripped");
    assert_eq!(j["query"], "all=1", "query kept");
    let h = &j["headers"];
    assert_eq!(h["host"], "shop.test", "Host passed through");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.test");
    assert_eq!(h["x-request-id"], "req-abc");
    assert_eq!(r.header("x-request-id"), Some("req-abc"));

    // Without an inbound id one is generated and sent both ways.
    let r = gw.get("/api/orders/1").await;
    let sent = r.json()["headers"]["x-request-id"]
        .as_str()
        .expect("generated id")
        .to_owned();
    assert_eq!(sent.len(), 32);
    assert_eq!(r.header("x-request-id"), Some(sent.as_str()));
    assert_eq!(
        r.json()["path"],
        "/api/orders/1",
        "no strip without strip_prefix"
    );
}
