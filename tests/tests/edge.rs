//! The edge: TLS termination with SNI and hot certificate reload, HTTP/2
//! over TLS and h2c, WebSocket, gRPC, TLS to instances, and peers trusted by
//! certificate. Real clients (rustls, reqwest with HTTP/2, the h2 crate,
//! tungstenite), real backends, the real binary.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use unitgate_tests::edge::{self, ClientTls, Pem};
use unitgate_tests::{backend, eventually, instance_list, metric, two_units_config, GatewayProc};

/// `[tls]` naming `entries` (file stem, hosts) as `<stem>.pem` / `<stem>.key`.
fn tls_section(extra: &str, entries: &[(&str, &str)]) -> String {
    let mut s = format!("\n[tls]\n{extra}\n");
    for (stem, hosts) in entries {
        s.push_str(&format!(
            "[[tls.certificates]]\ncert_file = \"{stem}.pem\"\nkey_file = \"{stem}.key\"\nhosts = [{hosts}]\n"
        ));
    }
    s
}

fn files<'a>(pairs: &'a [(&'a str, &'a Pem)]) -> Vec<(String, &'a str)> {
    pairs
        .iter()
        .flat_map(|(stem, p)| {
            [
                (format!("{stem}.pem"), p.cert.as_str()),
                (format!("{stem}.key"), p.key.as_str()),
            ]
        })
        .collect()
}

/// Starts with the pairs (and `extra` files) beside the config; returns
/// once the TLS listener accepts too.
async fn start_tls(config: &str, pairs: &[(&str, &Pem)], extra: &[(&str, &str)]) -> GatewayProc {
    let owned = files(pairs);
    let mut refs: Vec<(&str, &str)> = owned.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    refs.extend_from_slice(extra);
    let gw = GatewayProc::start_with_files(config, &refs).await;
    let addr = gw.listen_tls;
    eventually(
        "the TLS listener accepts",
        Duration::from_secs(10),
        || async { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
    )
    .await;
    gw
}

/// Two units with echo instances a1 (A) and b1 (B), a TLS listener with the
/// given `[tls]`, and `routes`.
fn config(a: SocketAddr, b: SocketAddr, gateway_extra: &str, routes: &str, tls: &str) -> String {
    let instances = format!(
        "A = [{}]\nB = [{}]",
        instance_list(&[a]),
        instance_list(&[b])
    );
    let gateway = format!("listen_tls = [\"{{listen_tls}}\"]\n{gateway_extra}");
    let routes = format!("{routes}\n{tls}");
    two_units_config(&gateway, ROUTING, &instances, "", &routes)
}

/// Users by `x-user-id`, signed routing cookies.
const ROUTING: &str = "[routing]\nkey = [\"header:x-user-id\"]\nsigning_keys = { k1 = \"edge-test-key\" }\nactive_key = \"k1\"\nforbidden_writes = [\"9990-9999\"]\n";

/// `[jwt.main]` (HS256, no token given in these tests), a route to
/// `service` under `secure` that needs it, and one under `limited` that
/// admits one request a minute.
fn guarded_routes(service: &str, secure: &str, limited: &str) -> String {
    format!(
        r#"
[jwt.main]
algorithms = ["HS256"]
secret = "s3cret"

[[routes]]
name = "secure"
path_prefix = "{secure}"
service = "{service}"
jwt = "main"

[[routes]]
name = "limited"
path_prefix = "{limited}"
service = "{service}"
[[routes.rate_limits]]
key = "route"
rate = "1/m"
burst = 0
"#
    )
}

const ROOT: &str = "[[routes]]\nname = \"root\"\npath_prefix = \"/\"\nservice = \"echo\"\nplacement = \"sharded\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_exact_then_the_wildcard_then_the_default_certificate() {
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let api = edge::self_signed(&["api.example.com"]);
    let wild = edge::self_signed(&["*.example.com"]);
    let default = edge::self_signed(&["localhost", "other.org"]);
    let tls = tls_section(
        "",
        &[
            ("api", "\"api.example.com\""),
            ("wild", "\"*.example.com\""),
            ("default", ""),
        ],
    );
    let gw = start_tls(
        &config(a1.addr, b1.addr, "", ROOT, &tls),
        &[("api", &api), ("wild", &wild), ("default", &default)],
        &[],
    )
    .await;
    let trust = [api.cert.as_str(), wild.cert.as_str(), default.cert.as_str()];
    let served = |sni: &'static str| edge::served_cert(gw.listen_tls, sni, &trust);
    assert_eq!(served("api.example.com").await.expect("api"), api.der);
    assert_eq!(served("API.Example.com").await.expect("case"), api.der);
    assert_eq!(served("www.example.com").await.expect("wildcard"), wild.der);
    // A name no entry lists gets the default entry's certificate.
    assert_eq!(served("other.org").await.expect("default"), default.der);
    assert_eq!(served("localhost").await.expect("default"), default.der);

    // Without a default entry, a name nothing covers fails the handshake.
    let tls = tls_section("", &[("api", "\"api.example.com\"")]);
    let strict = start_tls(
        &config(a1.addr, b1.addr, "", ROOT, &tls),
        &[("api", &api)],
        &[],
    )
    .await;
    let before = metric(
        &strict.metrics().await,
        "unitgate_tls_handshake_errors_total",
    );
    let r = edge::served_cert(strict.listen_tls, "other.org", &[api.cert.as_str()]).await;
    assert!(r.is_err(), "no certificate for other.org and no default");
    let after = eventually(
        "the failed handshake is counted",
        Duration::from_secs(5),
        || async {
            let n = metric(
                &strict.metrics().await,
                "unitgate_tls_handshake_errors_total",
            )?;
            (n > before.unwrap_or(0.0)).then_some(n)
        },
    )
    .await;
    assert_eq!(after, 1.0);
    let ok = edge::served_cert(strict.listen_tls, "api.example.com", &[api.cert.as_str()]).await;
    assert_eq!(ok.expect("still serving"), api.der);
    assert!(
        !strict.stderr().contains("ERROR"),
        "a failed handshake is not an error of the gateway:\n{}",
        strict.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_header_timeout_covers_the_handshake_and_the_first_head_over_tls() {
    use tokio::io::AsyncReadExt;
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let cert = edge::self_signed(&["localhost"]);
    let tls = tls_section("", &[("c", "")]);
    let cfg = config(
        a1.addr,
        b1.addr,
        "client_header_timeout_ms = 1000",
        ROOT,
        &tls,
    );
    let gw = start_tls(&cfg, &[("c", &cert)], &[]).await;
    let trust = [cert.cert.as_str()];
    let opts = ClientTls {
        trust: &trust,
        ..ClientTls::default()
    };
    // Silent before the ClientHello, and silent after the handshake.
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(gw.listen_tls)
        .await
        .expect("tcp");
    let mut tls = edge::connect_tls(gw.listen_tls, "localhost", &opts)
        .await
        .expect("tls");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(4), tcp.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent TCP connection is cut"
    );
    let closed = tokio::time::timeout(Duration::from_secs(4), tls.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent TLS connection is cut"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // Keep-alive gaps between requests do not count against it.
    let mut s = edge::connect_tls(gw.listen_tls, "localhost", &opts)
        .await
        .expect("tls");
    assert_eq!(get_on(&mut s, "42").await, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get_on(&mut s, "42").await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn min_version_1_3_refuses_tls_1_2_clients() {
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let cert = edge::self_signed(&["localhost"]);
    let tls = tls_section("min_version = \"1.3\"", &[("c", "")]);
    let gw = start_tls(
        &config(a1.addr, b1.addr, "", ROOT, &tls),
        &[("c", &cert)],
        &[],
    )
    .await;
    let trust = [cert.cert.as_str()];
    let tls12 = ClientTls {
        trust: &trust,
        tls12_only: true,
        ..ClientTls::default()
    };
    assert!(edge::connect_tls(gw.listen_tls, "localhost", &tls12)
        .await
        .is_err());
    let any = ClientTls {
        trust: &trust,
        ..ClientTls::default()
    };
    let s = edge::connect_tls(gw.listen_tls, "localhost", &any)
        .await
        .expect("1.3");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

/// A GET over an open TLS stream, HTTP/1.1 keep-alive; the status code.
async fn get_on<S>(s: &mut S, user: &str) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /x HTTP/1.1\r\nhost: localhost\r\nx-user-id: {user}\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head[9..12].parse().expect("status");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_certificate_reaches_new_handshakes_and_a_broken_one_keeps_the_old() {
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let (old, new) = (
        edge::self_signed(&["localhost"]),
        edge::self_signed(&["localhost"]),
    );
    let tls = tls_section("", &[("c", "")]);
    let gw = start_tls(
        &config(a1.addr, b1.addr, "", ROOT, &tls),
        &[("c", &old)],
        &[],
    )
    .await;
    gw.wait_watching().await;
    let both = [old.cert.as_str(), new.cert.as_str()];
    let opts = ClientTls {
        trust: &both,
        ..ClientTls::default()
    };
    let mut open = edge::connect_tls(gw.listen_tls, "localhost", &opts)
        .await
        .expect("tls");
    assert_eq!(get_on(&mut open, "42").await, 200);
    assert_eq!(
        edge::served_cert(gw.listen_tls, "localhost", &both)
            .await
            .expect("old"),
        old.der
    );

    // Replace the pair the way an ACME client does: new files renamed over.
    let dir = gw.dir.path();
    let replace = |name: &str, content: &str| {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    };
    let at = Instant::now();
    replace("c.key", &new.key);
    replace("c.pem", &new.cert);
    eventually(
        "the new certificate is served",
        Duration::from_secs(3),
        || async {
            let der = edge::served_cert(gw.listen_tls, "localhost", &both)
                .await
                .ok()?;
            (der == new.der).then_some(())
        },
    )
    .await;
    let took = at.elapsed();
    assert!(took < Duration::from_secs(2), "served after {took:?}");
    // The connection opened before the change is still served.
    assert_eq!(get_on(&mut open, "42").await, 200);

    // A broken replacement: logged and counted; the last good pair stays.
    let errors = |m: &str| metric(m, "unitgate_config_reloads_total{result=\"error\"}");
    let before = errors(&gw.metrics().await).unwrap_or(0.0);
    replace(
        "c.pem",
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    eventually(
        "the broken certificate is refused",
        Duration::from_secs(5),
        || async {
            let m = gw.metrics().await;
            (errors(&m)? > before).then_some(())
        },
    )
    .await;
    assert_eq!(
        edge::served_cert(gw.listen_tls, "localhost", &both)
            .await
            .expect("kept"),
        new.der
    );
    let status = gw
        .send(gw.admin(reqwest::Method::GET, "/admin/v1/status"))
        .await
        .json();
    let last = &status["last_reload"];
    assert_eq!(last["result"], "error", "{status}");
    assert!(last["errors"].to_string().contains("c.pem"), "{status}");
    assert!(gw.stderr().contains("c.pem"), "the error names the file");
    assert_eq!(get_on(&mut open, "42").await, 200);

    // Expiry: seconds left on the served certificate, by host.
    let m = gw.metrics().await;
    let left = metric(&m, "unitgate_tls_cert_expiry_seconds{host=\"default\"}").expect("expiry");
    assert!(
        left > 86_400.0 * 365.0,
        "rcgen certificates last for years: {left}"
    );
    unitgate_tests::promtool_check_metrics(&m);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_h2_and_h2c_get_the_same_routing_cookies_and_errors() {
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let cert = edge::self_signed(&["api.test"]);
    let routes = format!("{}{ROOT}", guarded_routes("echo", "/secure", "/limited"));
    let tls = tls_section("", &[("c", "")]);
    let gw = start_tls(
        &config(a1.addr, b1.addr, "", &routes, &tls),
        &[("c", &cert)],
        &[],
    )
    .await;
    let https = edge::https_client(&cert.cert, "api.test", gw.listen_tls);
    let h2c = edge::h2c_client();
    let tls_base = format!("https://api.test:{}", gw.listen_tls.port());
    let plain_base = format!("http://{}", gw.listen);
    for (name, client, base, version, proto) in [
        (
            "h2 over TLS",
            &https,
            &tls_base,
            reqwest::Version::HTTP_2,
            "https",
        ),
        ("h2c", &h2c, &plain_base, reqwest::Version::HTTP_2, "http"),
    ] {
        for (user, unit) in [("42", "A"), ("7500", "B")] {
            let r = client
                .get(format!("{base}/orders"))
                .header("x-user-id", user)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.version(), version, "{name}");
            assert_eq!(r.status(), 200, "{name}");
            let h = |k: &str| {
                r.headers()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            assert_eq!(h("x-echo-unit").as_deref(), Some(unit), "{name}");
            let cookie = h("set-cookie").unwrap_or_default();
            assert!(
                cookie.starts_with(&format!("ug_route=1.{user}.")),
                "{name}: {cookie}"
            );
            let body: serde_json::Value = r.json().await.expect("json");
            assert_eq!(body["headers"]["x-forwarded-proto"], proto, "{name}");
            assert_eq!(body["headers"]["x-unit-home"], unit, "{name}");
        }
        let r = client
            .get(format!("{base}/secure/x"))
            .send()
            .await
            .expect("401");
        assert_eq!(r.status(), 401, "{name}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"], "unauthorized", "{name}");
    }
    // One token per minute for the route, whichever protocol spends it.
    let first = https
        .get(format!("{tls_base}/limited"))
        .send()
        .await
        .expect("1st");
    assert_eq!(first.status(), 200);
    let r = h2c
        .get(format!("{plain_base}/limited"))
        .send()
        .await
        .expect("2nd");
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "rate_limited");
    // HTTP/1.1 over TLS too.
    let h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.as_bytes()).expect("pem"))
        .resolve("api.test", gw.listen_tls)
        .build()
        .expect("client");
    let r = h1
        .get(format!("{tls_base}/orders"))
        .header("x-user-id", "42")
        .send()
        .await
        .expect("h1 over TLS");
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_11, 200)
    );

    // The write freeze: a frozen slot's POST is refused, over HTTP/2 too.
    let r = https
        .post(format!("{tls_base}/orders"))
        .header("x-user-id", "9995")
        .send()
        .await
        .expect("frozen");
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "write_forbidden");

    // Nothing can serve: 503 JSON over HTTP/2 as over HTTP/1.1.
    a1.stop();
    b1.stop();
    let r = https
        .get(format!("{tls_base}/orders"))
        .header("x-user-id", "42")
        .send()
        .await
        .expect("503");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("x-unit-degraded"));
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_from_the_trusted_peer_ca_makes_a_trusted_peer() {
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let ca = edge::Ca::new("units");
    let other = edge::Ca::new("someone else");
    let server = edge::self_signed(&["gw.test"]);
    let tls = tls_section("trusted_peer_ca = \"peers.pem\"", &[("c", "")]);
    let cfg = config(a1.addr, b1.addr, "", ROOT, &tls);
    let gw = start_tls(&cfg, &[("c", &server)], &[("peers.pem", ca.pem.as_str())]).await;
    let addr = gw.listen_tls;

    let hops_seen = |id: Option<&'static Pem>| {
        let trust = [server.cert.as_str()];
        async move {
            let opts = ClientTls {
                trust: &trust,
                identity: id,
                ..ClientTls::default()
            };
            let mut s = edge::connect_tls(addr, "gw.test", &opts).await?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let req = "GET /x HTTP/1.1\r\nhost: gw.test\r\nx-user-id: 42\r\nx-unit-hops: 1\r\nconnection: close\r\n\r\n";
            s.write_all(req.as_bytes()).await?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await?;
            let text = String::from_utf8_lossy(&out).to_string();
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            Ok::<_, std::io::Error>(
                v["headers"]["x-unit-hops"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        }
    };
    // Leaked on purpose: the identities live for the whole test.
    let peer: &'static Pem = Box::leak(Box::new(ca.issue_client("gateway-b")));
    let stranger: &'static Pem = Box::leak(Box::new(other.issue_client("stranger")));
    assert_eq!(
        hops_seen(None).await.expect("plain client"),
        "1",
        "x-unit-hops ignored"
    );
    assert_eq!(
        hops_seen(Some(peer)).await.expect("peer"),
        "2",
        "a peer's hop counts"
    );
    assert!(
        hops_seen(Some(stranger)).await.is_err(),
        "a certificate from another CA fails the handshake"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_frames_flow_both_ways_and_only_idleness_closes_them() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let ws = edge::ws_echo().await;
    let routes = format!(
        r#"
[[services]]
name = "ws"
read_timeout_ms = 300
idle_timeout_ms = 1500
[services.instances]
A = ["{ws}"]

[[routes]]
name = "ws"
path_prefix = "/ws"
service = "ws"
placement = "sharded"
"#
    );
    let instances = format!(
        "A = [{}]\nB = [{}]",
        instance_list(&[a1.addr]),
        instance_list(&[b1.addr])
    );
    let cfg = two_units_config("", ROUTING, &instances, "", &routes);
    let gw = GatewayProc::start_with_env(&cfg, &[("RUST_LOG", "info")]).await;
    let url = format!("ws://{}/ws/chat", gw.listen);
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .expect("request");
    req.headers_mut()
        .insert("x-user-id", "42".parse().expect("header"));
    let (mut sock, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        cookie.starts_with("ug_route=1.42."),
        "the 101 is stamped: {cookie}"
    );
    async fn next<S: futures_util::Stream<Item = Result<Message, E>> + Unpin, E>(
        sock: &mut S,
    ) -> Option<String> {
        match tokio::time::timeout(Duration::from_secs(5), sock.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => Some(t.as_str().to_owned()),
            _ => None,
        }
    }
    assert_eq!(
        next(&mut sock).await.as_deref(),
        Some("home:A"),
        "unit-routed"
    );
    sock.send(Message::text("hello")).await.expect("send");
    assert_eq!(next(&mut sock).await.as_deref(), Some("echo:hello"));
    // Quiet for longer than read_timeout (300 ms): still open.
    tokio::time::sleep(Duration::from_millis(800)).await;
    sock.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send after a pause");
    match tokio::time::timeout(Duration::from_secs(5), sock.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(&b[..], b"echo:\x01\x02\x03"),
        other => panic!("binary echo: {other:?}"),
    }
    // Idle past idle_timeout (1.5 s): the gateway closes it.
    let idle_from = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match sock.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    let idle = idle_from.elapsed();
    assert!(end.is_ok(), "an idle WebSocket is closed");
    assert!(
        idle >= Duration::from_millis(1200) && idle < Duration::from_secs(5),
        "closed after {idle:?}"
    );
    // One access line when it ends: the 101, its frames counted.
    let line = eventually(
        "the WebSocket's access line",
        Duration::from_secs(5),
        || async {
            gw.stderr()
                .lines()
                .find(|l| l.contains("upgraded=true"))
                .map(str::to_owned)
        },
    )
    .await;
    assert!(
        line.contains("status=101") && line.contains("/ws/chat"),
        "{line}"
    );
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        field("bytes_in") > 0.0 && field("bytes_out") > 0.0,
        "{line}"
    );
    assert!(field("duration_ms") >= 1000.0, "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_over_h2c_upstreams_keeps_trailers_and_refusals_are_grpc_statuses() {
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let grpc = edge::h2c_grpc_backend("grpc-a").await;
    let dead = unitgate_tests::dead_addr();
    let cert = edge::self_signed(&["grpc.test"]);
    let guarded = guarded_routes("grpc", "/secure.Vault/", "/limited.Svc/");
    let routes = format!(
        r#"
[[services]]
name = "grpc"
protocol = "h2c"
[services.instances]
A = ["{grpc}"]

[[services]]
name = "gone"
protocol = "h2c"
connect_timeout_ms = 200
[services.instances]
A = ["{dead}"]

[[routes]]
name = "greeter"
path_prefix = "/helloworld.Greeter/"
service = "grpc"

{guarded}
[[routes]]
name = "gone"
path_prefix = "/gone.Svc/"
service = "gone"
"#
    );
    let tls = tls_section("", &[("c", "")]);
    let gw = start_tls(
        &config(a1.addr, b1.addr, "", &routes, &tls),
        &[("c", &cert)],
        &[],
    )
    .await;
    let h2c = || async {
        tokio::net::TcpStream::connect(gw.listen)
            .await
            .expect("tcp")
    };
    let frame: &'static [u8] = b"\x00\x00\x00\x00\x05hello";
    // A user in unit A: a request without a key gets a random slot, and one
    // in the frozen 9990-9999 would be refused as a write (UNAVAILABLE).
    let user: &[(&str, &str)] = &[("x-user-id", "42")];

    let r = edge::grpc_call(
        h2c().await,
        "grpc.test",
        "/helloworld.Greeter/SayHello",
        user,
        frame,
    )
    .await
    .expect("call");
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], frame, "the body went through both ways");
    let trailers = r.trailers.as_ref().expect("trailers from the backend");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-backend"], "grpc-a");
    assert_eq!(r.headers["x-path"], "/helloworld.Greeter/SayHello");

    // The same over TLS, ALPN h2.
    let trust = [cert.cert.as_str()];
    let opts = ClientTls {
        trust: &trust,
        alpn: &[b"h2"],
        ..ClientTls::default()
    };
    let tls = edge::connect_tls(gw.listen_tls, "grpc.test", &opts)
        .await
        .expect("tls");
    let r = edge::grpc_call(
        tls,
        "grpc.test",
        "/helloworld.Greeter/SayHello",
        user,
        frame,
    )
    .await
    .expect("call over TLS");
    assert_eq!(r.grpc_status(), Some("0"));
    assert_eq!(&r.body[..], frame);

    // The gateway's own refusals, trailers-only with the contract's codes.
    for (path, code, why) in [
        ("/secure.Vault/Open", "16", "no token"),
        ("/nothing.Here/Call", "12", "no route"),
        ("/gone.Svc/Call", "14", "no instance can serve"),
    ] {
        let r = edge::grpc_call(h2c().await, "grpc.test", path, user, frame)
            .await
            .expect("refusal");
        assert_eq!(r.status, 200, "{why}: gRPC refusals are HTTP 200");
        assert_eq!(r.grpc_status(), Some(code), "{why}: {:?}", r.headers);
        assert!(r.headers.contains_key("grpc-message"), "{why}");
        assert_eq!(r.headers["content-type"], "application/grpc", "{why}");
        assert!(r.body.is_empty(), "{why}: trailers-only");
    }
    let first = edge::grpc_call(h2c().await, "grpc.test", "/limited.Svc/A", user, frame)
        .await
        .expect("first");
    assert_eq!(first.grpc_status(), Some("0"));
    let second = edge::grpc_call(h2c().await, "grpc.test", "/limited.Svc/A", user, frame)
        .await
        .expect("second");
    assert_eq!(
        second.grpc_status(),
        Some("8"),
        "rate limited: RESOURCE_EXHAUSTED"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_instances_verifies_the_ca_and_a_wrong_one_crosses_to_the_sibling() {
    let ca = edge::Ca::new("instances");
    let rogue = edge::Ca::new("rogue");
    let good_a = edge::tls_echo("A", "a1", &ca.issue(&["127.0.0.1"]), false).await;
    let good_b = edge::tls_echo("B", "b1", &ca.issue(&["127.0.0.1"]), false).await;
    let bad_a = edge::tls_echo("A", "a-rogue", &rogue.issue(&["127.0.0.1"]), false).await;
    let named = edge::tls_echo("A", "a-named", &ca.issue(&["orders.internal"]), true).await;
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let routes = format!(
        r#"
[[services]]
name = "secure"
tls = true
ca_file = "ca.pem"
[services.instances]
A = ["{good_a}"]
B = ["{good_b}"]
[services.health]
kind = "http"
path = "/healthz"
interval_ms = 200
timeout_ms = 500

[[services]]
name = "mixed"
tls = true
ca_file = "ca.pem"
[services.instances]
A = ["{bad_a}"]
B = ["{good_b}"]
[services.health]
kind = "http"
path = "/healthz"
interval_ms = 200
timeout_ms = 500

[[services]]
name = "h2named"
protocol = "h2"
tls_sni = "orders.internal"
ca_file = "ca.pem"
[services.instances]
A = ["{named}"]

[[routes]]
name = "secure"
path_prefix = "/secure"
service = "secure"
placement = "sharded"

[[routes]]
name = "mixed"
path_prefix = "/mixed"
service = "mixed"
placement = "sharded"

[[routes]]
name = "h2named"
path_prefix = "/named"
service = "h2named"
"#
    );
    let instances = format!(
        "A = [{}]\nB = [{}]",
        instance_list(&[a1.addr]),
        instance_list(&[b1.addr])
    );
    let cfg = two_units_config("", "", &instances, "", &routes);
    let gw = GatewayProc::start_with_files(&cfg, &[("ca.pem", ca.pem.as_str())]).await;

    let r = gw.get_as("42", "/secure/x").await;
    assert_eq!((r.status, r.unit()), (200, "A"), "{}", r.body);
    let r = gw.get_as("7500", "/secure/x").await;
    assert_eq!((r.status, r.unit()), (200, "B"), "{}", r.body);
    // Health checks speak TLS and verify like requests: the instance with
    // the rogue CA's certificate goes unhealthy, the others stay healthy.
    let health = eventually(
        "the rogue instance fails its check",
        Duration::from_secs(10),
        || async {
            let h = gw
                .send(gw.admin(reqwest::Method::GET, "/admin/v1/health"))
                .await
                .json();
            (healthy_of(&h, &bad_a.to_string()) == Some(false)).then_some(h)
        },
    )
    .await;
    for good in [good_a, good_b] {
        assert_eq!(
            healthy_of(&health, &good.to_string()),
            Some(true),
            "{good}: {health}"
        );
    }

    // A's instance presents a certificate from another CA: refused, and the
    // request crosses to B.
    let r = gw.get_as("42", "/mixed/x").await;
    assert_eq!((r.status, r.unit()), (200, "B"), "{}", r.body);
    assert_eq!(r.json()["headers"]["x-unit-crossed-from"], "A");

    // h2 over TLS with a configured name.
    let r = gw.get_as("42", "/named/x").await;
    assert_eq!((r.status, r.instance()), (200, "a-named"), "{}", r.body);
    assert_eq!(r.json()["version"], "HTTP/2.0");
}

/// Whether every entry for instance `addr` in `/admin/v1/health` is healthy
/// (`None`: not listed).
fn healthy_of(v: &serde_json::Value, addr: &str) -> Option<bool> {
    match v {
        serde_json::Value::Object(m)
            if m.get("instance").and_then(|i| i.as_str()) == Some(addr) =>
        {
            m.get("healthy").and_then(|h| h.as_bool())
        }
        serde_json::Value::Object(m) => m.values().map(|x| healthy_of(x, addr)).fold(None, and),
        serde_json::Value::Array(a) => a.iter().map(|x| healthy_of(x, addr)).fold(None, and),
        _ => None,
    }
}

fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x && y),
        (x, None) | (None, x) => x,
    }
}

#[test]
fn check_names_a_mismatched_pair_and_warns_of_an_expired_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = (edge::self_signed(&["a"]), edge::self_signed(&["b"]));
    let old = edge::expired(&["old"]);
    std::fs::write(dir.path().join("a.pem"), &a.cert).expect("w");
    std::fs::write(dir.path().join("b.key"), &b.key).expect("w");
    std::fs::write(dir.path().join("old.pem"), &old.cert).expect("w");
    std::fs::write(dir.path().join("old.key"), &old.key).expect("w");
    let base = r#"
[gateway]
unit = "A"
listen = ["127.0.0.1:1"]
listen_tls = ["127.0.0.1:2"]

[[units]]
name = "A"
slots = ["0-9999"]

[[services]]
name = "echo"
[services.instances]
A = ["127.0.0.1:9001"]

[[routes]]
name = "root"
service = "echo"
"#;
    let write = |name: &str, tls: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{base}\n[tls]\n{tls}")).expect("w");
        p
    };
    let bad = write(
        "bad.toml",
        "[[tls.certificates]]\ncert_file = \"a.pem\"\nkey_file = \"b.key\"\n",
    );
    let (code, _out, err) = unitgate_tests::run_cli(&["check", "-c", bad.to_str().expect("utf8")]);
    assert_ne!(code, 0);
    assert!(
        err.contains("tls.certificates[0].key_file") && err.contains("b.key"),
        "{err}"
    );
    let expired = write(
        "expired.toml",
        "[[tls.certificates]]\ncert_file = \"old.pem\"\nkey_file = \"old.key\"\n",
    );
    let (code, _out, err) =
        unitgate_tests::run_cli(&["check", "-c", expired.to_str().expect("utf8")]);
    assert_eq!(code, 0, "an expired certificate is a warning: {err}");
    assert!(
        err.contains("warning") && err.contains("old.pem") && err.contains("expired"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unparsable_head_over_tls_gets_the_json_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let cert = edge::self_signed(&["localhost"]);
    let tls = tls_section("", &[("c", "")]);
    let gw = start_tls(
        &config(a1.addr, b1.addr, "", ROOT, &tls),
        &[("c", &cert)],
        &[],
    )
    .await;
    let trust = [cert.cert.as_str()];
    let opts = ClientTls {
        trust: &trust,
        alpn: &[b"http/1.1"],
        ..ClientTls::default()
    };
    let mut s = edge::connect_tls(gw.listen_tls, "localhost", &opts)
        .await
        .expect("tls");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection is closed after the 400");
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 400 "), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(v["error"], "bad_request", "{text}");
    assert_eq!(v["request_id"].as_str().map(str::len), Some(32), "{text}");
}
