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

/// Reads responses from `s` until `n` complete ones (Content-Length bodies)
/// arrived, or 10 s passed.
async fn read_responses(s: &mut tokio::net::TcpStream, n: usize) -> Vec<RawReply> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let replies = split_responses(&buf);
        if replies.len() >= n {
            return replies;
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => return split_responses(&buf),
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
            Ok(Err(_)) => return split_responses(&buf),
        }
    }
}

/// Complete responses at the start of `bytes`, in order.
fn split_responses(bytes: &[u8]) -> Vec<RawReply> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let total = end + 4 + len;
        if rest.len() < total {
            break;
        }
        out.push(RawReply::parse(&rest[..total]));
        rest = &rest[total..];
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_all_answered_in_order() {
    let (gw, backend) = start().await;
    let mut s = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    let two =
        "GET /p/1 HTTP/1.1\r\nHost: gw.test\r\n\r\nGET /p/2 HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    s.write_all(two.as_bytes()).await.expect("write");
    let replies = read_responses(&mut s, 2).await;
    assert_eq!(
        replies.len(),
        2,
        "both pipelined requests answered: {replies:?}"
    );
    assert_eq!(replies[0].json()["path"], "/p/1");
    assert_eq!(replies[1].json()["path"], "/p/2");
    assert_eq!(
        backend
            .state
            .served
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keepalive_connections_are_closed_after_the_idle_timeout() {
    let a = backend("A", "a1").await;
    let config = unitgate_tests::two_units_config(
        "client_idle_timeout_ms = 1000",
        "",
        &format!("A = [\"{}\"]", a.addr),
        "",
        unitgate_tests::LOCAL_ROUTE,
    );
    let gw = GatewayProc::start(&config).await;
    let mut s = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    // The client asks for an hour; the gateway's limit wins.
    let req = "GET /x HTTP/1.1\r\nHost: gw.test\r\nKeep-Alive: timeout=3600\r\n\r\n";
    s.write_all(req.as_bytes()).await.expect("write");
    let replies = read_responses(&mut s, 1).await;
    assert_eq!(replies.first().map(|r| r.status), Some(200));
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    let waited = started.elapsed();
    assert!(
        closed.is_ok(),
        "the idle connection was not closed within 10 s"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "closed after {waited:?}, expected about 1 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_route_limit_get_413_before_or_while_streaming() {
    let a = backend("A", "a1").await;
    let routes = r#"
[[routes]]
name = "upload"
path_prefix = "/upload"
service = "echo"
placement = "local"
max_body_bytes = 1000
"#;
    let gw = GatewayProc::start(&simple_config(&format!("A = [\"{}\"]", a.addr), routes)).await;
    // Declared too large: refused before anything reaches the backend.
    let body = "x".repeat(1001);
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1001\r\nConnection: close\r\n\r\n{body}"
    );
    let r = raw(gw.listen, &req).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["error"], "payload_too_large");
    assert_eq!(a.state.served.load(std::sync::atomic::Ordering::Relaxed), 0);

    // Chunked, over the limit once streamed.
    let chunk = "x".repeat(600);
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let r = raw(gw.listen, &req).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["error"], "payload_too_large");

    // Within the limit: served.
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{}",
        "y".repeat(1000)
    );
    let r = raw(gw.listen, &req).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_bytes"], 1000);
}
