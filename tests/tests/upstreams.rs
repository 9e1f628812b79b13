//! Pools, balancing, retries on connect failure, health checks, timeouts and
//! streaming bodies, against real backends.

use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use unitgate_tests::{
    backend, dead_addr, eventually, simple_config, try_send, GatewayProc, LOCAL_ROUTE,
};

fn with_lb(instances: &str, lb: &str, extra: &str) -> String {
    simple_config(instances, extra).replace(
        "name = \"echo\"\n",
        &format!("name = \"echo\"\nlb = \"{lb}\"\n"),
    )
}

async fn count_instances(gw: &GatewayProc, n: usize, user: Option<&str>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let mut req = gw.client.get(gw.url("/x"));
        if let Some(u) = user {
            req = req.header("x-user-id", u);
        }
        let r = gw.send(req).await;
        assert_eq!(r.status, 200, "{}", r.body);
        *seen.entry(r.instance().to_owned()).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_evenly() {
    let (a1, a2) = (backend("A", "a1").await, backend("A", "a2").await);
    let inst = format!("A = [\"{}\", \"{}\"]", a1.addr, a2.addr);
    let gw = GatewayProc::start(&with_lb(&inst, "round_robin", LOCAL_ROUTE)).await;
    let seen = count_instances(&gw, 20, None).await;
    assert_eq!(seen.get("a1"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("a2"), Some(&10), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn random_uses_every_instance() {
    let (a1, a2) = (backend("A", "a1").await, backend("A", "a2").await);
    let inst = format!("A = [\"{}\", \"{}\"]", a1.addr, a2.addr);
    let gw = GatewayProc::start(&with_lb(&inst, "random", LOCAL_ROUTE)).await;
    let seen = count_instances(&gw, 60, None).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hash_keeps_a_user_on_one_instance() {
    let (a1, a2, a3) = (
        backend("A", "a1").await,
        backend("A", "a2").await,
        backend("A", "a3").await,
    );
    let inst = format!("A = [\"{}\", \"{}\", \"{}\"]", a1.addr, a2.addr, a3.addr);
    let gw = GatewayProc::start(&with_lb(&inst, "consistent_hash", LOCAL_ROUTE)).await;
    let mut owners = std::collections::HashSet::new();
    for user in ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"] {
        let seen = count_instances(&gw, 5, Some(user)).await;
        assert_eq!(seen.len(), 1, "user {user} spread over {seen:?}");
        owners.extend(seen.into_keys());
    }
    assert!(owners.len() >= 2, "8 users all hashed to {owners:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_failure_moves_on_for_any_method() {
    let a2 = backend("A", "a2").await;
    // Two dead instances and one live one: every request must land on a2.
    let inst = format!(
        "A = [\"{}\", \"{}\", \"{}\"]",
        dead_addr(),
        dead_addr(),
        a2.addr
    );
    let gw = GatewayProc::start(&simple_config(&inst, LOCAL_ROUTE)).await;
    for i in 0..9 {
        let req = if i % 2 == 0 {
            gw.client.get(gw.url("/x"))
        } else {
            gw.client.post(gw.url("/x")).body("payload")
        };
        let r = gw.send(req).await;
        assert_eq!((r.status, r.instance()), (200, "a2"), "{}", r.body);
    }
    assert_eq!(a2.served(), 9);
    // Attempts retried and then served are counted, not warned about.
    let warned: Vec<String> = gw
        .stderr()
        .lines()
        .filter(|l| l.contains("Fail to proxy"))
        .map(str::to_owned)
        .collect();
    assert!(warned.is_empty(), "retried attempts logged: {warned:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_instance_refusing_is_unavailable() {
    let inst = format!("A = [\"{}\"]\nB = [\"{}\"]", dead_addr(), dead_addr());
    let gw = GatewayProc::start(&simple_config(&inst, LOCAL_ROUTE)).await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 503);
    let j = r.json();
    assert_eq!(j["error"], "unavailable");
    assert!(j["request_id"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_instance_under_steady_traffic_gives_no_client_error() {
    let (a1, a2) = (backend("A", "a1").await, backend("A", "a2").await);
    let inst = format!("A = [\"{}\", \"{}\"]", a1.addr, a2.addr);
    let gw = Arc::new(GatewayProc::start(&simple_config(&inst, LOCAL_ROUTE)).await);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (gw, stop, ok, failed) = (gw.clone(), stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match try_send(gw.client.get(gw.url("/steady"))).await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    eventually(
        "traffic on both instances",
        Duration::from_secs(5),
        || async { (a1.served() > 20 && a2.served() > 20).then_some(()) },
    )
    .await;
    a1.stop();
    let before = ok.load(Ordering::Relaxed);
    eventually(
        "200 more requests after the kill",
        Duration::from_secs(10),
        || async { (ok.load(Ordering::Relaxed) > before + 200).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "client-visible errors after a kill"
    );
}

fn health_config(inst: &str) -> String {
    // `extra` follows [services.instances], so the health table belongs to the service.
    let health = "[services.health]\nkind = \"http\"\npath = \"/healthz\"\n\
                  interval_ms = 200\ntimeout_ms = 200\nunhealthy_after = 2\nhealthy_after = 1\n";
    simple_config(inst, &format!("{health}{LOCAL_ROUTE}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_health_check_removes_and_restores_an_instance() {
    let (a1, a2) = (backend("A", "a1").await, backend("A", "a2").await);
    let inst = format!("A = [\"{}\", \"{}\"]", a1.addr, a2.addr);
    let gw = GatewayProc::start(&health_config(&inst)).await;
    assert_eq!(count_instances(&gw, 10, None).await.len(), 2);

    a1.set_healthy(false);
    let t0 = Instant::now();
    // interval 200 ms x unhealthy_after 2 = 400 ms, plus slack.
    eventually(
        "a1 out of rotation",
        Duration::from_millis(1500),
        || async {
            let seen = count_instances(&gw, 4, None).await;
            (seen.len() == 1 && seen.contains_key("a2")).then_some(())
        },
    )
    .await;
    assert!(t0.elapsed() < Duration::from_millis(1500));
    let served = a1.served();
    count_instances(&gw, 20, None).await;
    assert_eq!(a1.served(), served, "an unhealthy instance got traffic");

    a1.set_healthy(true);
    eventually(
        "a1 back in rotation",
        Duration::from_millis(1500),
        || async { (count_instances(&gw, 4, None).await.len() == 2).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_a_504_after_read_timeout() {
    let a1 = backend("A", "a1").await;
    a1.set_delay(Duration::from_secs(3));
    let cfg = simple_config(&format!("A = [\"{}\"]", a1.addr), LOCAL_ROUTE)
        .replace("read_timeout_ms = 2000", "read_timeout_ms = 300");
    let gw = GatewayProc::start(&cfg).await;
    let t0 = Instant::now();
    // POST: not idempotent, so exactly one attempt.
    let r = gw.send(gw.client.post(gw.url("/slow")).body("x")).await;
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(took >= Duration::from_millis(280), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_both_ways() {
    let a1 = backend("A", "a1").await;
    let gw = GatewayProc::start(&simple_config(
        &format!("A = [\"{}\"]", a1.addr),
        LOCAL_ROUTE,
    ))
    .await;
    let rss_before = gw.peak_rss_kib();

    // 8 MiB upload, sent in 64 KiB chunks.
    const UP: usize = 8 * 1024 * 1024;
    let chunks = futures_util::stream::iter(
        (0..UP / 65536).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'u'; 65536]))),
    );
    let r = gw
        .send(
            gw.client
                .post(gw.url("/upload"))
                .body(reqwest::Body::wrap_stream(chunks)),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_bytes"], UP as u64);

    // 100 MiB download, read as a stream.
    const DOWN: u64 = 100 * 1024 * 1024;
    let resp = gw
        .client
        .get(gw.url(&format!("/bytes/{DOWN}")))
        .send()
        .await
        .expect("download starts");
    assert_eq!(resp.status().as_u16(), 200);
    let mut got = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        got += chunk.expect("chunk").len() as u64;
    }
    assert_eq!(got, DOWN);

    let grown_mib = gw.peak_rss_kib().saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 40,
        "peak RSS grew by {grown_mib} MiB: bodies were buffered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_context_is_kept_with_a_new_parent_or_started() {
    let a = backend("A", "a1").await;
    let gw = GatewayProc::start(&simple_config(
        &format!("A = [\"{}\"]", a.addr),
        LOCAL_ROUTE,
    ))
    .await;
    let parts = |v: &serde_json::Value| -> Vec<String> {
        v.as_str()
            .unwrap_or_else(|| panic!("no traceparent upstream: {v}"))
            .split('-')
            .map(str::to_owned)
            .collect()
    };
    // Inbound: the same trace and flags, a new parent id; tracestate as sent.
    let inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = gw
        .send(
            gw.client
                .get(gw.url("/x"))
                .header("traceparent", inbound)
                .header("tracestate", "congo=t61rcWkgMzE"),
        )
        .await;
    let h = &r.json()["headers"];
    let p = parts(&h["traceparent"]);
    assert_eq!(p.len(), 4, "{h}");
    assert_eq!(
        (p[0].as_str(), p[1].as_str(), p[3].as_str()),
        ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    );
    assert_ne!(p[2], "00f067aa0ba902b7", "a new parent id for the hop");
    assert_eq!(p[2].len(), 16);
    assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
    // None, or an invalid one: a new trace.
    for header in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
    ] {
        let mut req = gw.client.get(gw.url("/x"));
        if let Some(v) = header {
            req = req.header("traceparent", v);
        }
        let r = gw.send(req).await;
        let p = parts(&r.json()["headers"]["traceparent"]);
        assert_eq!(p.len(), 4);
        assert_eq!(p[1].len(), 32);
        assert!(
            p[1].bytes().all(|b| b.is_ascii_hexdigit()) && p[1] != "0".repeat(32),
            "{p:?}"
        );
        assert_eq!(p[3], "00");
    }
}
