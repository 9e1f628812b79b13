//! Gray release through the real binary: weighted, sticky, per-unit splits
//! between two versions of a service, changed live (DESIGN.md "Gray release").
//!
//! Unit A owns slots 0-4999, B 5000-9999; `echo` (v1) and `echo-v2` run one
//! instance each in both units, and the instance name says which version
//! answered (`a1` / `a1-v2`). The bucket of a user is recomputed here with
//! crc32fast, independently of the gateway's code.

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use unitgate_tests::{
    backend, dead_addr, eventually, metric, run_cli, try_send, two_units_config, EchoServer,
    GatewayProc, Reply,
};

const ROUTING: &str = r#"[routing]
key = ["header:x-user-id"]
signing_keys = { k1 = "gray-release-signing-key" }
active_key = "k1"
"#;

/// The users of the share tests.
const USERS: usize = 2000;

/// `crc32("split:" + key) % 100`, as DESIGN.md defines the bucket.
fn bucket(key: &str) -> u32 {
    crc32fast::hash(format!("split:{key}").as_bytes()) % 100
}

fn user(i: usize) -> String {
    format!("user-{i}")
}

/// v1 and v2 backends, one of each per unit.
struct Backends {
    a1: EchoServer,
    b1: EchoServer,
    a2: EchoServer,
    b2: EchoServer,
}

impl Backends {
    async fn start() -> Self {
        Backends {
            a1: backend("A", "a1").await,
            b1: backend("B", "b1").await,
            a2: backend("A", "a1-v2").await,
            b2: backend("B", "b1-v2").await,
        }
    }

    /// The config with `splits` (TOML `[[routes.splits]]` tables) on the
    /// route `orders`; `v2_a` replaces the address of v2's unit-A instance.
    fn config(&self, splits: &str, v2_a: Option<SocketAddr>) -> String {
        let instances = format!("A = [\"{}\"]\nB = [\"{}\"]", self.a1.addr, self.b1.addr);
        let v2 = format!(
            "[[services]]\nname = \"echo-v2\"\nconnect_timeout_ms = 200\n[services.instances]\nA = [\"{}\"]\nB = [\"{}\"]\n",
            v2_a.unwrap_or(self.a2.addr),
            self.b2.addr
        );
        let routes = format!(
            "[[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\nservice = \"echo\"\nplacement = \"sharded\"\n{splits}"
        );
        two_units_config("", ROUTING, &instances, &v2, &routes)
    }
}

fn split(weight: u32) -> String {
    format!("[[routes.splits]]\nservice = \"echo-v2\"\nweight = {weight}\n")
}

/// Which version answered: "v2" when the instance name says so.
fn version(r: &Reply) -> &'static str {
    if r.instance().ends_with("-v2") {
        "v2"
    } else {
        "v1"
    }
}

/// `x-unit-split` as the backend received it.
fn split_header(r: &Reply) -> Option<String> {
    r.json()["headers"]["x-unit-split"]
        .as_str()
        .map(str::to_owned)
}

/// Every user of `users` once, 32 at a time: (user, reply).
async fn ask_all(gw: &GatewayProc, users: &[String]) -> Vec<(String, Reply)> {
    let mut out = Vec::with_capacity(users.len());
    for chunk in users.chunks(32) {
        let replies = join_all(chunk.iter().map(|u| gw.get_as(u, "/orders/1"))).await;
        out.extend(chunk.iter().cloned().zip(replies));
    }
    out
}

/// The users on v2 per [`ask_all`], after checking every reply is a 200 whose
/// `x-unit-split` matches the version that answered.
async fn users_on_v2(gw: &GatewayProc, users: &[String]) -> Vec<String> {
    let mut on_v2 = Vec::new();
    for (u, r) in ask_all(gw, users).await {
        assert_eq!(r.status, 200, "{u}: {}", r.body);
        let v = version(&r);
        let header = split_header(&r);
        assert_eq!(
            header.as_deref(),
            (v == "v2").then_some("echo-v2"),
            "{u}: x-unit-split upstream"
        );
        if v == "v2" {
            on_v2.push(u);
        }
    }
    on_v2
}

async fn put_weight(gw: &GatewayProc, weight: u32) {
    let r = gw
        .admin_send(
            Method::PUT,
            "/admin/v1/routes/orders",
            &json!({"path_prefix": "/orders", "service": "echo", "placement": "sharded",
                    "splits": [{"service": "echo-v2", "weight": weight}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn share_and_exact_users_for_weights_1_20_50() {
    let be = Backends::start().await;
    let gw = GatewayProc::start(&be.config(&split(1), None)).await;
    let users: Vec<String> = (0..USERS).map(user).collect();
    let mut total_v2 = 0;
    for (i, w) in [1u32, 20, 50].into_iter().enumerate() {
        if i > 0 {
            put_weight(&gw, w).await;
        }
        let on_v2 = users_on_v2(&gw, &users).await;
        let share = on_v2.len() as f64 * 100.0 / USERS as f64;
        assert!(
            (share - f64::from(w)).abs() <= 3.0,
            "weight {w}: {share:.2}% of {USERS} users on v2"
        );
        let expected: Vec<String> = users.iter().filter(|u| bucket(u) < w).cloned().collect();
        assert_eq!(
            on_v2, expected,
            "weight {w}: exactly the users below the weight"
        );
        total_v2 += on_v2.len();
    }
    // The metric counts each choice; the GET of the route shows the splits.
    let m = gw.metrics().await;
    let series = |svc: &str| {
        metric(
            &m,
            &format!("unitgate_split_requests_total{{route=\"orders\",service=\"{svc}\"}}"),
        )
    };
    assert_eq!(series("echo-v2"), Some(total_v2 as f64), "{m}");
    assert_eq!(series("echo"), Some((3 * USERS - total_v2) as f64), "{m}");
    let r = gw
        .send(gw.admin(Method::GET, "/admin/v1/routes/orders"))
        .await;
    assert_eq!(
        r.json()["splits"],
        json!([{"service": "echo-v2", "weight": 50}]),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sticky_across_requests_gateways_restarts_and_cookies() {
    let be = Backends::start().await;
    let text = be.config(&split(30), None);
    let mut g1 = GatewayProc::start(&text).await;
    let g2 = GatewayProc::start(&text).await;
    let users: Vec<String> = (0..300).map(user).collect();
    let first = users_on_v2(&g1, &users).await;
    assert!(!first.is_empty() && first.len() < users.len());
    assert_eq!(users_on_v2(&g1, &users).await, first, "same gateway again");
    assert_eq!(users_on_v2(&g2, &users).await, first, "another gateway");
    g1.restart().await;
    assert_eq!(users_on_v2(&g1, &users).await, first, "after a restart");

    // Without a key the slot of the routing cookie is the user: a cookie
    // user keeps its version, on either gateway.
    let mut seen = [0; 2];
    for _ in 0..40 {
        let r = g1.get("/orders/1").await;
        let cookie = r
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("an anonymous user gets a routing cookie")
            .to_owned();
        let v = version(&r);
        seen[usize::from(v == "v2")] += 1;
        for gw in [&g1, &g2, &g1] {
            let again = gw
                .send(gw.client.get(gw.url("/orders/1")).header("cookie", &cookie))
                .await;
            assert_eq!(version(&again), v, "cookie {cookie}");
        }
    }
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "both versions among 40 cookie users: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn weight_raised_under_load_fails_nothing_and_moves_no_user_back() {
    let be = Backends::start().await;
    let gw = Arc::new(GatewayProc::start(&be.config(&split(0), None)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, moved_back) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    const WORKERS: usize = 8;
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (gw, stop) = (gw.clone(), stop.clone());
        let (ok, failed, moved_back) = (ok.clone(), failed.clone(), moved_back.clone());
        // Each worker owns its users and asks for them one request at a
        // time, so a user's requests are strictly ordered.
        workers.push(tokio::spawn(async move {
            let mine: Vec<String> = (w..400).step_by(WORKERS).map(user).collect();
            let mut on_v2: HashMap<String, bool> = HashMap::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let u = &mine[i % mine.len()];
                i += 1;
                let req = gw.client.get(gw.url("/orders/1")).header("x-user-id", u);
                match try_send(req).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let v2 = version(&r) == "v2";
                        let was = on_v2.insert(u.clone(), v2).unwrap_or(false);
                        if was && !v2 {
                            moved_back.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            on_v2
        }));
    }
    for w in [1, 5, 10, 25, 50, 75, 100] {
        let before = ok.load(Ordering::Relaxed);
        eventually("requests between changes", Duration::from_secs(10), || {
            let ok = ok.clone();
            async move { (ok.load(Ordering::Relaxed) >= before + 200).then_some(()) }
        })
        .await;
        put_weight(&gw, w).await;
    }
    let before = ok.load(Ordering::Relaxed);
    eventually(
        "requests after the last change",
        Duration::from_secs(10),
        || {
            let ok = ok.clone();
            async move { (ok.load(Ordering::Relaxed) >= before + 800).then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut last: HashMap<String, bool> = HashMap::new();
    for w in workers {
        last.extend(w.await.expect("worker"));
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed");
    assert_eq!(
        moved_back.load(Ordering::Relaxed),
        0,
        "a user went back to v1"
    );
    assert_eq!(last.len(), 400, "every user was asked");
    assert!(last.values().all(|&v2| v2), "weight 100: everyone on v2");
    assert!(ok.load(Ordering::Relaxed) > 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn match_header_forces_the_split_and_the_log_names_the_service() {
    let be = Backends::start().await;
    let splits =
        "[[routes.splits]]\nservice = \"echo-v2\"\nweight = 0\nmatch_header = \"x-canary\"\n";
    let gw = GatewayProc::start_with(
        &be.config(splits, None),
        &[("RUST_LOG", "info")],
        &["--log-format", "json"],
    )
    .await;
    for i in 0..50 {
        let u = user(i);
        assert_eq!(version(&gw.get_as(&u, "/orders/1").await), "v1", "{u}");
        let canary = gw
            .send(
                gw.client
                    .get(gw.url("/orders/1"))
                    .header("x-user-id", &u)
                    .header("x-canary", "1")
                    .header("x-request-id", format!("canary-{i}")),
            )
            .await;
        assert_eq!(version(&canary), "v2", "{u} with x-canary");
        assert_eq!(split_header(&canary).as_deref(), Some("echo-v2"));
    }
    // A client cannot claim a split itself.
    let r = gw
        .send(
            gw.client
                .get(gw.url("/orders/1"))
                .header("x-user-id", "1")
                .header("x-unit-split", "echo-v2"),
        )
        .await;
    assert_eq!((version(&r), split_header(&r)), ("v1", None));
    let line = eventually("the access line", Duration::from_secs(5), || async {
        gw.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["request_id"] == "canary-7")
    })
    .await;
    assert_eq!(line["service"], "echo-v2", "{line}");
    assert_eq!(line["route"], "orders", "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn units_limit_a_split_to_its_placement_units() {
    let be = Backends::start().await;
    let splits = "[[routes.splits]]\nservice = \"echo-v2\"\nweight = 100\nunits = [\"B\"]\n";
    let gw = GatewayProc::start(&be.config(splits, None)).await;
    // Numeric keys are their own slot: 0-4999 home A, 5000-9999 home B.
    for i in 0..40 {
        let (a_user, b_user) = ((i * 97).to_string(), (5000 + i * 97).to_string());
        let r = gw.get_as(&a_user, "/orders/1").await;
        assert_eq!((r.unit(), version(&r)), ("A", "v1"), "user {a_user}");
        let r = gw.get_as(&b_user, "/orders/1").await;
        assert_eq!((r.unit(), version(&r)), ("B", "v2"), "user {b_user}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_service_crosses_to_the_sibling_when_its_home_instances_are_dead() {
    let be = Backends::start().await;
    let gw = GatewayProc::start(&be.config(&split(100), Some(dead_addr()))).await;
    for u in ["42", "7", "4999"] {
        let r = gw.get_as(u, "/orders/1").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!((r.unit(), r.instance()), ("B", "b1-v2"), "user {u}");
        let h = &r.json()["headers"];
        assert_eq!(h["x-unit-home"], "A");
        assert_eq!(h["x-unit-crossed-from"], "A");
        assert_eq!(h["x-unit-split"], "echo-v2");
    }
    // The route's own service in A is untouched: a user moved back to v1
    // by weight 0 is served at home.
    put_weight(&gw, 0).await;
    let r = gw.get_as("42", "/orders/1").await;
    assert_eq!((r.unit(), r.instance()), ("A", "a1"));
    let m = gw.metrics().await;
    let crossed = metric(
        &m,
        "unitgate_cross_unit_total{service=\"echo-v2\",from=\"A\",to=\"B\"}",
    );
    assert!(crossed.is_some_and(|n| n >= 3.0), "{m}");
}

#[test]
fn check_reports_every_split_error_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    let text = two_units_config(
        "",
        "",
        "A = [\"127.0.0.1:9001\"]",
        "[[services]]\nname = \"echo-v2\"\n[services.instances]\nA = [\"127.0.0.1:9002\"]\n",
        r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
service = "echo"

[[routes.splits]]
service = "echo-v3"
weight = 60

[[routes.splits]]
service = "echo"
weight = 10

[[routes.splits]]
service = "echo-v2"
weight = 50
units = ["C"]
"#,
    )
    .replace("{listen}", "127.0.0.1:18080")
    .replace("{admin}", "127.0.0.1:19900");
    std::fs::write(&path, text).expect("write");
    let (code, _out, err) = run_cli(&["check", "-c", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{err}");
    for needle in [
        "routes[0].splits[0].service: unknown service \"echo-v3\"",
        "routes[0].splits[1].service: \"echo\" is the route's own service",
        "routes[0].splits[2].units[0]: unknown unit \"C\"",
        "routes[0].splits: weights add up to 120",
        "4 error(s)",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}
