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
forward_claims = {{ sub = "x-user-id" }}
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
    let (gw, _a) = start_local("client_idle_timeout_ms = 1000").await;
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

fn served(b: &unitgate_tests::EchoServer) -> u64 {
    b.state.served.load(std::sync::atomic::Ordering::Relaxed)
}

/// An HS256 token for `sub`, signed with the hostile tests' secret.
fn token(sub: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let enc = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 600;
    let signing = format!(
        "{}.{}",
        enc(serde_json::json!({"alg": "HS256", "typ": "JWT"})),
        enc(serde_json::json!({"sub": sub, "exp": exp}))
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(signing.as_bytes());
    format!(
        "{signing}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// Writes `request` on a keep-alive connection (no `Connection: close`) and
/// returns the reply and whether the gateway then closed the connection.
async fn raw_then_closed(addr: SocketAddr, request: &str) -> (RawReply, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    (RawReply::parse(&buf), read.is_ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_framing_is_refused_with_400_and_a_close() {
    let (gw, backend) = start().await;
    let head = "POST /public/x HTTP/1.1\r\nHost: gw.test\r\n";
    let cases = [
        (
            "Content-Length and Transfer-Encoding",
            format!("{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding and Content-Length",
            format!("{head}Transfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n"),
        ),
        (
            "a coding before chunked",
            format!("{head}Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "two Transfer-Encoding fields",
            format!(
                "{head}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "differing Content-Lengths",
            format!("{head}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ),
        (
            "no Host",
            "GET /public/x HTTP/1.1\r\nUser-Agent: t\r\n\r\n".to_owned(),
        ),
    ];
    for (what, req) in &cases {
        let (r, closed) = raw_then_closed(gw.listen, req).await;
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(closed, "{what}: the connection is closed after the 400");
    }
    assert_eq!(
        served(&backend),
        0,
        "no ambiguous request reached the backend"
    );

    // Equal lengths, once or as a list, are one length (RFC 9110 8.6).
    let (r, _) = raw_then_closed(
        gw.listen,
        &format!("{head}Content-Length: 5, 5\r\nConnection: close\r\n\r\nhello"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_bytes"], 5);
    assert_eq!(r.json()["headers"]["content-length"], "5");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_chunks_get_400_and_a_close() {
    let (gw, _backend) = start().await;
    let head = "POST /public/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (what, body) in [
        ("a size that is not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        ("a negative size", "-1\r\nhello\r\n0\r\n\r\n"),
        (
            "a size over 2^64",
            "10000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        ("no CRLF after the data", "5\r\nhelloXX0\r\n\r\n"),
    ] {
        let (r, closed) = raw_then_closed(gw.listen, &format!("{head}{body}")).await;
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert_eq!(r.json()["error"], "bad_request", "{what}");
        assert!(closed, "{what}: the connection is closed");
    }
    // The gateway still serves.
    let r = raw(gw.listen, &get("/public/after")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_nominations_never_remove_what_the_gateway_sets() {
    let (gw, backend) = start().await;
    // Nominating the forwarding headers or Host: ignored, and answered.
    for nominated in ["x-forwarded-for", "host", "X-Forwarded-For, keep-alive"] {
        let req =
            format!("GET /public/x HTTP/1.1\r\nHost: gw.test\r\nConnection: {nominated}\r\n\r\n");
        let replies = {
            let mut s = tokio::net::TcpStream::connect(gw.listen)
                .await
                .expect("connect");
            s.write_all(req.as_bytes()).await.expect("write");
            read_responses(&mut s, 1).await
        };
        let r = replies
            .first()
            .unwrap_or_else(|| panic!("{nominated}: no response"));
        assert_eq!(r.status, 200, "{nominated}: {r:?}");
        let h = &r.json()["headers"];
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{nominated}: {h}");
        assert_eq!(h["host"], "gw.test", "{nominated}");
    }
    // A claim header the gateway sets survives its nomination, and a forged
    // one never reaches the backend.
    let req = format!(
        "GET /api/admin/x HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {}\r\nX-User-Id: forged\r\nConnection: close, x-user-id\r\n\r\n",
        token("alice")
    );
    let r = raw(gw.listen, &req).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["headers"]["x-user-id"], "alice");
    // Other nominated fields are hop-by-hop: gone before the backend.
    let req = "GET /public/x HTTP/1.1\r\nHost: gw.test\r\nX-Hop: secret\r\nConnection: close, X-Hop\r\n\r\n";
    let r = raw(gw.listen, req).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["headers"].get("x-hop").is_none(), "{r:?}");
    // A nominated Authorization is removed before authentication, so what
    // was authorised is what the backend sees: here, nothing.
    let req = format!(
        "GET /api/admin/x HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {}\r\nConnection: close, authorization\r\n\r\n",
        token("alice")
    );
    let r = raw(gw.listen, &req).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(served(&backend), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_heads_over_max_header_bytes_get_431() {
    let (gw, a) = start_local("max_header_bytes = 8192").await;
    let big = "v".repeat(10_000);
    let req = format!("GET /x HTTP/1.1\r\nHost: gw.test\r\nX-Big: {big}\r\n\r\n");
    let (r, closed) = raw_then_closed(gw.listen, &req).await;
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(r.json()["error"], "header_too_large");
    assert!(closed);
    assert_eq!(served(&a), 0);
    let r = raw(gw.listen, &get("/x")).await;
    assert_eq!(r.status, 200, "a small head is served");
}

/// A gateway with one local route to one backend and `gateway_extra` in
/// its `[gateway]` section.
async fn start_local(gateway_extra: &str) -> (GatewayProc, unitgate_tests::EchoServer) {
    let a = backend("A", "a1").await;
    let config = unitgate_tests::two_units_config(
        gateway_extra,
        "",
        &format!("A = [\"{}\"]", a.addr),
        "",
        unitgate_tests::LOCAL_ROUTE,
    );
    (GatewayProc::start(&config).await, a)
}

/// A gateway with a one-second `client_header_timeout_ms`.
async fn start_with_header_timeout() -> (GatewayProc, unitgate_tests::EchoServer) {
    start_local("client_header_timeout_ms = 1000").await
}

/// Trickles `head` one byte per `gap` until the gateway closes the
/// connection; returns how long it stayed open (at most `limit`).
async fn trickle(addr: SocketAddr, head: &[u8], gap: Duration, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut sink = [0u8; 1024];
    for byte in head.iter().cycle() {
        if started.elapsed() > limit {
            break;
        }
        if s.write_all(std::slice::from_ref(byte)).await.is_err() {
            break;
        }
        match tokio::time::timeout(gap, s.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            _ => {}
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickled_or_silent_head_is_cut_at_the_header_timeout() {
    let (gw, backend) = start_with_header_timeout().await;
    let limit = Duration::from_secs(8);
    let open = trickle(
        gw.listen,
        b"GET /x HTTP/1.1\r\nHost: gw.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        Duration::from_millis(100),
        limit,
    )
    .await;
    assert!(
        open >= Duration::from_millis(900) && open < Duration::from_secs(4),
        "a trickled head was cut after {open:?}, expected about 1 s"
    );
    // A connection that never sends a byte.
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a silent connection stayed open {limit:?}");
    let open = started.elapsed();
    assert!(
        open >= Duration::from_millis(900) && open < Duration::from_secs(4),
        "a silent connection was closed after {open:?}"
    );
    // A client that goes away in the middle of its head.
    {
        let mut s = tokio::net::TcpStream::connect(gw.listen)
            .await
            .expect("connect");
        s.write_all(b"GET /x HTTP/1.1\r\nHo").await.expect("write");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served(&backend), 0);
    let errors = gw
        .stderr()
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(
        errors.is_empty(),
        "a client's timeout is not an ERROR: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_gaps_and_slow_bodies_do_not_count_against_the_header_timeout() {
    let (gw, backend) = start_with_header_timeout().await;
    let mut s = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    let req = "GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    s.write_all(req.as_bytes()).await.expect("write");
    assert_eq!(read_responses(&mut s, 1).await.len(), 1);
    // Idle for longer than the header timeout, then the next request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(req.as_bytes()).await.expect("write");
    let replies = read_responses(&mut s, 1).await;
    assert_eq!(replies.first().map(|r| r.status), Some(200), "{replies:?}");
    // A body that takes longer than the header timeout to arrive.
    s.write_all(b"POST /x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 6\r\n\r\n")
        .await
        .expect("write");
    for b in b"abcdef" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(std::slice::from_ref(b)).await.expect("write");
    }
    let replies = read_responses(&mut s, 1).await;
    assert_eq!(replies.first().map(|r| r.status), Some(200), "{replies:?}");
    assert_eq!(replies[0].json()["body_bytes"], 6);
    assert_eq!(served(&backend), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_with_500_connections_leaves_normal_requests_fast() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < 2048 {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(4096), hard);
        }
    }
    let (gw, _backend) = start_with_header_timeout().await;
    // 500 connections each holding half a head, topped up every 200 ms.
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut s = tokio::net::TcpStream::connect(gw.listen)
            .await
            .expect("connect");
        s.write_all(b"GET /x HTTP/1.1\r\nHost: gw.test\r\n")
            .await
            .expect("write");
        slow.push(s);
    }
    let feeder = tokio::spawn(async move {
        let mut open = slow.len();
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            open = 0;
            for s in &mut slow {
                if s.write_all(b"X-A: b\r\n").await.is_ok() {
                    open += 1;
                }
            }
        }
        open
    });
    let c = unitgate_tests::client();
    let mut latencies = Vec::new();
    for i in 0..50 {
        let started = std::time::Instant::now();
        let r = c
            .get(gw.url(&format!("/normal/{i}")))
            .send()
            .await
            .expect("a normal request is answered");
        assert_eq!(r.status(), 200);
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        p99 < Duration::from_millis(500),
        "p99 {p99:?} under slowloris"
    );
    let still_open = feeder.await.expect("feeder");
    assert!(
        still_open < 50,
        "{still_open} of 500 slow connections still open after 3 s; the header timeout is 1 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_descriptors_marks_no_instance_unhealthy() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: prlimit (util-linux) is not installed");
        return;
    }
    let (a, b) = (backend("A", "a1").await, backend("B", "b1").await);
    let routing = "[routing]\nkey = [\"header:x-user-id\"]\nsigning_keys = { k1 = \"top-secret-signing-key\" }\nactive_key = \"k1\"\n";
    let health = "[services.health]\nkind = \"tcp\"\ninterval_ms = 100\ntimeout_ms = 200\nunhealthy_after = 2\nhealthy_after = 100000\n";
    let routes = "[[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\nservice = \"echo\"\nplacement = \"sharded\"\n";
    let config = unitgate_tests::two_units_config(
        "client_header_timeout_ms = 30000",
        routing,
        &format!("A = [\"{}\"]\nB = [\"{}\"]", a.addr, b.addr),
        health,
        routes,
    );
    let gw = GatewayProc::start(&config).await;
    assert_eq!(gw.get_as("42", "/orders").await.unit(), "A");
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &gw.pid().to_string(), "--nofile=64:64"])
        .status()
        .expect("prlimit");
    assert!(limited.success());
    // Idle clients take every descriptor the gateway has left.
    let mut flood = Vec::new();
    for _ in 0..200 {
        match tokio::net::TcpStream::connect(gw.listen).await {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    // Many health intervals pass while the gateway cannot open a socket
    // (and pingora's accept loop fails, pausing 1 s each time).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    drop(flood);
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &gw.pid().to_string(), "--nofile=4096:4096"])
        .status();
    let r = unitgate_tests::eventually(
        "the gateway serves again",
        Duration::from_secs(10),
        || async {
            unitgate_tests::try_send(gw.client.get(gw.url("/orders")).header("x-user-id", "42"))
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await;
    assert_eq!(
        r.unit(),
        "A",
        "the home unit still serves: no crossing after the flood"
    );
    let m = gw.metrics().await;
    let healthy = |unit: &str, addr: SocketAddr| {
        unitgate_tests::metric(
            &m,
            &format!(
                "unitgate_instance_healthy{{service=\"echo\",unit=\"{unit}\",instance=\"{addr}\"}}"
            ),
        )
    };
    assert_eq!(healthy("A", a.addr), Some(1.0), "{m}");
    assert_eq!(healthy("B", b.addr), Some(1.0), "{m}");
    assert!(
        gw.stderr().contains("out of file descriptors here"),
        "the flood did exhaust the gateway's descriptors"
    );
    // Every failed accept is counted; one per 10 s reaches the log.
    let failed = unitgate_tests::metric(&m, "unitgate_accept_errors_total").unwrap_or_default();
    assert!(failed >= 2.0, "accept failures counted: {failed}");
    let stderr = gw.stderr();
    let logged = stderr.matches("Accept() failed").count();
    assert_eq!(logged, 1, "one accept failure logged of {failed}\n{stderr}");
    let skipped = stderr.matches("out of file descriptors here").count();
    assert!(
        skipped <= 2,
        "the skipped health checks said once per 10 s, not {skipped} times"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_max_connections_wait_their_turn() {
    let (gw, _a) = start_local("max_connections = 2").await;
    let req = b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    // Two keep-alive connections in service.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(gw.listen)
            .await
            .expect("connect");
        s.write_all(req).await.expect("write");
        assert_eq!(read_responses(&mut s, 1).await.len(), 1);
        held.push(s);
    }
    // A third one is accepted by the kernel but not served...
    let mut third = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    third.write_all(req).await.expect("write");
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf)).await;
    assert!(early.is_err(), "served over max_connections: {early:?}");
    // ...until one in service closes.
    drop(held.pop());
    let replies = read_responses(&mut third, 1).await;
    assert_eq!(replies.first().map(|r| r.status), Some(200), "{replies:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unparsable_heads_get_the_json_400_and_an_access_line() {
    let a = backend("A", "a1").await;
    let routes = "[[routes]]\nname = \"public\"\npath_prefix = \"/\"\nservice = \"echo\"\nplacement = \"local\"\n";
    let gw = GatewayProc::start_with(
        &simple_config(&format!("A = [\"{}\"]", a.addr), routes),
        &[("RUST_LOG", "info")],
        &["--log-format", "json"],
    )
    .await;
    // pingora's parser refuses these before any filter of the gateway runs.
    let cases = [
        (
            "a header line without a colon",
            "GET /x HTTP/1.1\r\nHost: gw.test\r\nno colon here\r\n\r\n",
        ),
        (
            "a method with control bytes",
            "G\x01T /x HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        ),
        (
            "a header with an empty name",
            "GET /x HTTP/1.1\r\nHost: gw.test\r\n: v\r\n\r\n",
        ),
    ];
    let mut ids = Vec::new();
    for (what, req) in cases {
        let (r, closed) = raw_then_closed(gw.listen, req).await;
        assert_eq!(r.status, 400, "{what}: {r:?}\n{}", gw.stderr());
        assert_eq!(r.json()["error"], "bad_request", "{what}: {r:?}");
        let id = r.json()["request_id"].as_str().unwrap_or("").to_owned();
        assert_eq!(id.len(), 32, "{what}: a real request id: {r:?}");
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains(&format!("x-request-id: {id}")),
            "{what}: {r:?}"
        );
        assert!(closed, "{what}: the connection is closed after the 400");
        ids.push(id);
    }
    for id in &ids {
        let line =
            unitgate_tests::eventually("the 400's access line", Duration::from_secs(5), || async {
                gw.stderr()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|v| v["request_id"] == id.as_str())
            })
            .await;
        assert_eq!(line["target"], "access", "{line}");
        assert_eq!(line["status"], 400, "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
    assert_eq!(served(&a), 0, "nothing reached the backend");
    // The gateway still serves, and a good keep-alive request is untouched.
    let r = raw(gw.listen, &get("/after")).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_mid_request_is_not_an_error() {
    let (gw, backend) = start_local("").await;
    backend.set_delay(Duration::from_millis(800));
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(gw.listen)
            .await
            .expect("connect");
        s.write_all(get("/slow").replace("Connection: close\r\n", "").as_bytes())
            .await
            .expect("write");
        // The request is at the backend; the client gives up and leaves.
        unitgate_tests::eventually(
            "the request reached the backend",
            Duration::from_secs(5),
            || async { (served(&backend) > 0).then_some(()) },
        )
        .await;
        drop(s);
    }
    // pingora notices each close while waiting for the response, and the
    // request is counted with no response written (code 0).
    unitgate_tests::eventually(
        "the abandoned requests are logged",
        Duration::from_secs(5),
        || async {
            let m = gw.metrics().await;
            let abandoned: f64 = m
                .lines()
                .filter(|l| l.starts_with("unitgate_requests_total{") && l.contains("code=\"0\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            (abandoned >= 3.0).then_some(())
        },
    )
    .await;
    backend.set_delay(Duration::ZERO);
    let r = raw(gw.listen, &get("/after")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let log = gw.stderr();
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "a client leaving is not an ERROR:\n{log}"
    );
}
