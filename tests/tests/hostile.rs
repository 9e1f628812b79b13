//! Hostile clients, over raw sockets so that no client library normalises
//! the bytes on the way: what reaches the gateway is exactly what is written.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unitgate_tests::{backend, simple_config, GatewayProc};

/// A raw HTTP/1.1 exchange: writes `request` as is, reads to EOF (the
/// request asks for `Connection: close`) or at most 10 s.
async fn raw(addr: SocketAddr, request: &str) -> RawReply {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "no complete response to {request:?} in 10 s");
    RawReply::parse(&buf)
}

#[derive(Debug)]
struct RawReply {
    status: u16,
    head: String,
    body: String,
}

impl RawReply {
    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        RawReply {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
}

const SECRET: &str = "a-secret-for-the-hostile-tests";

/// A public catch-all route, a JWT route on `/api/admin` and a public
/// `/api/orders`: the layout of the reported bypass.
async fn start() -> (GatewayProc, unitgate_tests::EchoServer) {
    let a = backend("A", "a1").await;
    let routes = format!(
        r#"
[[routes]]
name = "public"
path_prefix = "/"
service = "echo"
placement = "local"

[[routes]]
name = "admin"
path_prefix = "/api/admin"
service = "echo"
placement = "local"
jwt = "main"

[[routes]]
name = "orders"
path_prefix = "/api/orders"
service = "echo"
placement = "local"

[jwt.main]
algorithms = ["HS256"]
secret = "{SECRET}"
"#
    );
    let gw = GatewayProc::start(&simple_config(&format!("A = [\"{}\"]", a.addr), &routes)).await;
    (gw, a)
}

#[tokio::test(flavor = "multi_thread")]
async fn unnormalised_paths_cannot_bypass_jwt() {
    let (gw, backend) = start().await;
    let attacks = [
        "/public/../api/admin/secret.txt",
        "//api/admin/secret.txt",
        "/api//admin/secret.txt",
        "/api/./admin/secret.txt",
        "/api/%61dmin/secret.txt",
        "/api/orders/../admin/x",
        "/api/orders/%2e%2e/admin/x",
        "/./api/admin",
        "/x/y/../../api/admin",
    ];
    for path in attacks {
        let r = raw(gw.listen, &get(path)).await;
        assert_eq!(r.status, 401, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "unauthorized", "{path}");
    }
    assert_eq!(
        backend
            .state
            .served
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no attack reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_encodings_are_refused_with_400_before_any_backend() {
    let (gw, backend) = start().await;
    for path in [
        "/api%2Fadmin/secret.txt",
        "/api%2fadmin/secret.txt",
        "/public/..;/api/admin",
        "/a%00b",
        "/a%zz",
    ] {
        let r = raw(gw.listen, &get(path)).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "bad_request", "{path}");
        assert!(!r.json()["request_id"].as_str().unwrap_or("").is_empty());
    }
    assert_eq!(
        backend
            .state
            .served
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_receives_the_path_that_was_matched() {
    let (gw, _backend) = start().await;
    let r = raw(gw.listen, &get("/api/orders/./a//b/../c%7e?q=%2F..")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json();
    assert_eq!(echo["path"], "/api/orders/a/c~", "{echo}");
    assert_eq!(echo["query"], "q=%2F..", "the query is passed on as sent");

    // Absolute-form targets are normalised too.
    let r = raw(
        gw.listen,
        "GET http://gw.test/public/../api/admin HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.head.starts_with("HTTP/1.1 401"), "{}", r.head);
}
