//! Weighted balancing, least connections and backup instances, against real
//! backends (DESIGN.md "Load balancing additions").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use unitgate_tests::{
    backend, dead_addr, eventually, metric, simple_config, try_send, GatewayProc, LOCAL_ROUTE,
};

fn with_lb(instances: &str, lb: &str, extra: &str) -> String {
    simple_config(instances, extra).replace(
        "name = \"echo\"\n",
        &format!("name = \"echo\"\nlb = \"{lb}\"\n"),
    )
}

const HEALTH: &str = "[services.health]\nkind = \"http\"\npath = \"/healthz\"\n\
                      interval_ms = 200\ntimeout_ms = 200\nunhealthy_after = 2\nhealthy_after = 1\n";

/// The instance names that answered `n` sequential requests, in order.
async fn sequence(gw: &GatewayProc, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = gw.get("/x").await;
        assert_eq!(r.status, 200, "{}", r.body);
        out.push(r.instance().to_owned());
    }
    out
}

fn counts(seq: &[String]) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for s in seq {
        *m.entry(s.as_str()).or_default() += 1;
    }
    m
}

/// `GET /admin/v1/health`'s instance entries of service "echo", by address.
async fn instances(gw: &GatewayProc) -> HashMap<String, serde_json::Value> {
    let r = gw
        .send(gw.admin(reqwest::Method::GET, "/admin/v1/health"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let mut out = HashMap::new();
    for svc in j["services"].as_array().into_iter().flatten() {
        for unit in svc["units"].as_array().into_iter().flatten() {
            for i in unit["instances"].as_array().into_iter().flatten() {
                out.insert(i["instance"].as_str().unwrap_or("").to_owned(), i.clone());
            }
        }
    }
    out
}

async fn total_in_flight(gw: &GatewayProc) -> u64 {
    instances(gw)
        .await
        .values()
        .map(|i| i["in_flight"].as_u64().expect("in_flight is a number"))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_three_to_one_give_three_quarters_interleaved() {
    let (a1, a2) = (backend("A", "a1").await, backend("A", "a2").await);
    let inst = format!(
        "A = [{{ addr = \"{}\", weight = 3 }}, \"{}\"]",
        a1.addr, a2.addr
    );
    let gw = GatewayProc::start(&with_lb(&inst, "round_robin", LOCAL_ROUTE)).await;
    let seq = sequence(&gw, 400).await;
    let a1_share = counts(&seq).get("a1").copied().unwrap_or(0);
    assert!(
        (280..=320).contains(&a1_share),
        "a1 served {a1_share} of 400"
    );
    // Smooth: A A B A, never A A A B.
    assert_eq!(seq[..4], ["a1", "a1", "a2", "a1"], "{:?}", &seq[..8]);
    for (i, s) in seq.iter().enumerate() {
        assert_eq!(
            s,
            &seq[i % 4],
            "period of 4 broken at {i}: {:?}",
            &seq[..12]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_random_follows_the_weights() {
    let (a1, a2) = (backend("A", "a1").await, backend("A", "a2").await);
    let inst = format!(
        "A = [{{ addr = \"{}\", weight = 3 }}, \"{}\"]",
        a1.addr, a2.addr
    );
    let gw = GatewayProc::start(&with_lb(&inst, "random", LOCAL_ROUTE)).await;
    // 1000 draws: 75% ± 5 is more than 3.6 standard deviations.
    let seq = sequence(&gw, 1000).await;
    let a1_share = counts(&seq).get("a1").copied().unwrap_or(0);
    assert!(
        (700..=800).contains(&a1_share),
        "a1 served {a1_share} of 1000"
    );
}

/// 8 workers x 30 requests over a fast instance and one answering in 100 ms;
/// returns the slow instance's share.
async fn slow_instance_share(lb: &str) -> f64 {
    let (slow, fast) = (backend("A", "slow").await, backend("A", "fast").await);
    slow.set_delay(Duration::from_millis(100));
    let inst = format!("A = [\"{}\", \"{}\"]", slow.addr, fast.addr);
    let gw = Arc::new(GatewayProc::start(&with_lb(&inst, lb, LOCAL_ROUTE)).await);
    let mut workers = Vec::new();
    for _ in 0..8 {
        let gw = gw.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..30 {
                let r = gw.get("/x").await;
                assert_eq!(r.status, 200, "{}", r.body);
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let (s, f) = (slow.served() as f64, fast.served() as f64);
    assert_eq!(s + f, 240.0);
    s / (s + f)
}

#[tokio::test(flavor = "multi_thread")]
async fn least_conn_moves_load_away_from_a_slow_instance() {
    let rr = slow_instance_share("round_robin").await;
    let lc = slow_instance_share("least_conn").await;
    eprintln!("slow instance's share: round_robin {rr:.3}, least_conn {lc:.3}");
    // Round robin is blind to it: half the requests wait 100 ms.
    assert!(
        (rr - 0.5).abs() < 0.05,
        "round_robin gave the slow one {rr:.2}"
    );
    assert!(lc < 0.2, "least_conn gave the slow one {lc:.2}");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_counts_return_to_zero_after_aborts_timeouts_and_retries() {
    let (a1, a2) = (backend("A", "a1").await, backend("A", "a2").await);
    a1.set_delay(Duration::from_secs(3));
    a2.set_delay(Duration::from_secs(3));
    // A dead instance too: its connect failures move attempts on.
    let inst = format!(
        "A = [\"{}\", \"{}\", \"{}\"]",
        a1.addr,
        a2.addr,
        dead_addr()
    );
    let cfg = with_lb(&inst, "least_conn", LOCAL_ROUTE)
        .replace("read_timeout_ms = 2000", "read_timeout_ms = 1200");
    let gw = Arc::new(GatewayProc::start(&cfg).await);
    let mut storm = Vec::new();
    for i in 0..20 {
        let gw = gw.clone();
        storm.push(tokio::spawn(async move {
            if i % 2 == 0 {
                // The client gives up first (1 s).
                let req = gw
                    .client
                    .get(gw.url("/abort"))
                    .timeout(Duration::from_secs(1));
                assert!(try_send(req).await.is_err(), "aborted request answered");
            } else {
                // The gateway's read timeout, a retry on the other instance,
                // then 504; a POST is never retried: one timeout, then 504.
                let req = if i % 4 == 1 {
                    gw.client.get(gw.url("/timeout"))
                } else {
                    gw.client.post(gw.url("/timeout")).body("x")
                };
                let r = gw.send(req).await;
                assert_eq!(r.status, 504, "{}", r.body);
            }
        }));
    }
    // Every request has exactly one attempt on a live instance once started.
    eventually(
        "20 attempts in flight",
        Duration::from_millis(900),
        || async { (total_in_flight(&gw).await == 20).then_some(()) },
    )
    .await;
    for t in storm {
        t.await.expect("storm request");
    }
    eventually("every count back to 0", Duration::from_secs(10), || async {
        let all = instances(&gw).await;
        all.values().all(|i| i["in_flight"] == 0).then_some(())
    })
    .await;
    let m = gw.metrics().await;
    let series = format!(
        "unitgate_instance_in_flight{{service=\"echo\",unit=\"A\",instance=\"{}\"}}",
        a1.addr
    );
    assert_eq!(metric(&m, &series), Some(0.0), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_serves_only_when_primaries_cannot_and_before_crossing() {
    let (a1, a2, b1) = (
        backend("A", "a1").await,
        backend("A", "a2").await,
        backend("B", "b1").await,
    );
    let inst = format!(
        "A = [\"{}\", {{ addr = \"{}\", backup = true }}]\nB = [\"{}\"]",
        a1.addr, a2.addr, b1.addr
    );
    let cfg = simple_config(&inst, &format!("{HEALTH}{LOCAL_ROUTE}"));
    let gw = GatewayProc::start(&cfg).await;
    let crossed = "unitgate_cross_unit_total{service=\"echo\",from=\"A\",to=\"B\"}";

    // Primaries serve: the backup gets nothing.
    let seq = sequence(&gw, 30).await;
    assert!(seq.iter().all(|s| s == "a1"), "{seq:?}");
    assert_eq!(a2.served(), 0);
    let health = instances(&gw).await;
    assert_eq!(health[&a2.addr.to_string()]["backup"], true);
    assert_eq!(health[&a1.addr.to_string()]["backup"], false);
    let m = gw.metrics().await;
    let backup_series = format!(
        "unitgate_instance_backup{{service=\"echo\",unit=\"A\",instance=\"{}\"}}",
        a2.addr
    );
    assert_eq!(metric(&m, &backup_series), Some(1.0), "{m}");

    // The primary dies: the backup takes over at once (before the health
    // check notices), in the home unit.
    a1.stop();
    for _ in 0..20 {
        let r = gw.get("/x").await;
        assert_eq!(
            (r.status, r.unit(), r.instance()),
            (200, "A", "a2"),
            "{}",
            r.body
        );
    }
    assert_eq!(b1.served(), 0, "crossed while the backup could serve");
    assert_eq!(metric(&gw.metrics().await, crossed).unwrap_or(0.0), 0.0);

    // The backup dies too: now the unit crosses.
    a2.stop();
    for _ in 0..10 {
        let r = gw.get("/x").await;
        assert_eq!((r.status, r.unit()), (200, "B"), "{}", r.body);
    }
    assert!(metric(&gw.metrics().await, crossed).unwrap_or(0.0) >= 10.0);
    // Backups are health-checked like any instance.
    eventually(
        "the dead backup marked unhealthy",
        Duration::from_secs(3),
        || async {
            let h = instances(&gw).await;
            (h[&a2.addr.to_string()]["healthy"] == false).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_weight_change_through_the_admin_api_keeps_health_and_shows_both_forms() {
    let (a1, a2) = (backend("A", "a1").await, backend("A", "a2").await);
    let inst = format!("A = [\"{}\", \"{}\"]", a1.addr, a2.addr);
    let gw = GatewayProc::start(&simple_config(&inst, &format!("{HEALTH}{LOCAL_ROUTE}"))).await;
    a1.set_healthy(false);
    let a1_key = a1.addr.to_string();
    eventually("a1 unhealthy", Duration::from_secs(3), || async {
        (instances(&gw).await[&a1_key]["healthy"] == false).then_some(())
    })
    .await;

    let r = gw
        .send(gw.admin(reqwest::Method::GET, "/admin/v1/services/echo"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut svc = r.json();
    assert_eq!(
        svc["instances"]["A"][0], a1_key,
        "plain instances read as strings"
    );
    svc["instances"]["A"] = serde_json::json!([
        {"addr": a1_key, "weight": 5},
        {"addr": a2.addr.to_string(), "weight": 1, "backup": false},
    ]);
    let put = gw
        .admin_send(reqwest::Method::PUT, "/admin/v1/services/echo", &svc)
        .await;
    assert!(
        put.status == 200 || put.status == 204,
        "{}: {}",
        put.status,
        put.body
    );

    // Health survived the rebuild: no request reaches the unhealthy a1.
    let t0 = Instant::now();
    let health = instances(&gw).await;
    assert_eq!(health[&a1_key]["healthy"], false, "{health:?}");
    assert_eq!(health[&a1_key]["weight"], 5);
    let served = a1.served();
    let seq = sequence(&gw, 10).await;
    assert!(
        seq.iter().all(|s| s == "a2"),
        "{seq:?} ({:?} after the change)",
        t0.elapsed()
    );
    assert_eq!(a1.served(), served);

    // Read back: the table form only where it differs from the default.
    let back = gw
        .send(gw.admin(reqwest::Method::GET, "/admin/v1/services/echo"))
        .await
        .json();
    assert_eq!(
        back["instances"]["A"],
        serde_json::json!([{"addr": a1_key, "weight": 5, "backup": false}, a2.addr.to_string()])
    );
    // And in the file written back, which a restart reads.
    let text = std::fs::read_to_string(&gw.config_path).expect("config file");
    assert!(text.contains("weight = 5"), "{text}");
}
