//! The control plane through the real binary: file reloads (watch, SIGHUP,
//! admin), the admin REST API with ETags and atomic persistence, state carried
//! over reloads, metrics and the access log.

use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use unitgate_tests::{
    backend, eventually, metric, run_cli, try_send, two_units_config, EchoServer, GatewayProc,
};

const ROUTES: &str = r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
service = "echo"
placement = "sharded"
"#;

const ROUTING: &str = r#"[routing]
key = ["header:x-user-id"]
signing_keys = { k1 = "top-secret-signing-key" }
active_key = "k1"
"#;

struct Fixture {
    gw: GatewayProc,
    a: EchoServer,
    b: EchoServer,
}

fn text(a: &EchoServer, b: &EchoServer, service_extra: &str, routes: &str) -> String {
    let instances = format!("A = [\"{}\"]\nB = [\"{}\"]", a.addr, b.addr);
    two_units_config("", ROUTING, &instances, service_extra, routes)
}

async fn start(service_extra: &str) -> Fixture {
    let (a, b) = (backend("A", "a1").await, backend("B", "b1").await);
    let gw = GatewayProc::start(&text(&a, &b, service_extra, ROUTES)).await;
    gw.wait_watching().await;
    Fixture { gw, a, b }
}

impl Fixture {
    /// Rewrites the config file in place with `routes` (the listen and admin
    /// addresses of the running process kept).
    fn rewrite(&self, service_extra: &str, routes: &str) {
        let body = text(&self.a, &self.b, service_extra, routes)
            .replace("{listen}", &self.gw.listen.to_string())
            .replace("{admin}", &self.gw.admin.to_string());
        std::fs::write(&self.gw.config_path, body).expect("rewrite config");
    }

    async fn user(&self, user: &str, path: &str) -> unitgate_tests::Reply {
        self.gw.get_as(user, path).await
    }
}

fn extra_route(name: &str, prefix: &str) -> String {
    format!("{ROUTES}\n[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nservice = \"echo\"\nplacement = \"unit:B\"\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn file_change_is_picked_up_and_a_broken_file_changes_nothing() {
    let f = start("").await;
    assert_eq!(f.user("42", "/new/x").await.status, 404);
    f.rewrite("", &extra_route("new", "/new"));
    eventually("the new route serves", Duration::from_secs(5), || async {
        (f.user("42", "/new/x").await.unit() == "B").then_some(())
    })
    .await;

    // A broken file: the running config stays, the error is counted and shown.
    std::fs::write(&f.gw.config_path, "[gateway\nunit = ").expect("write");
    let status = eventually(
        "the failed reload is reported",
        Duration::from_secs(5),
        || async {
            let r = f.gw.send(f.gw.admin(Method::GET, "/admin/v1/status")).await;
            (r.json()["last_reload"]["result"] == "error").then(|| r.json())
        },
    )
    .await;
    assert!(
        status["last_reload"]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("line")),
        "{status}"
    );
    assert_eq!(
        f.user("42", "/new/x").await.unit(),
        "B",
        "the last good config still serves"
    );
    let m = f.gw.metrics().await;
    assert_eq!(
        metric(&m, "unitgate_config_reloads_total{result=\"error\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "unitgate_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
}

/// The reload counters, (ok, error).
async fn reload_counts(gw: &GatewayProc) -> (f64, f64) {
    let m = gw.metrics().await;
    let get = |r: &str| {
        metric(
            &m,
            &format!("unitgate_config_reloads_total{{result=\"{r}\"}}"),
        )
    };
    (get("ok").unwrap_or(0.0), get("error").unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_is_read_and_reported_once() {
    let f = start("").await;
    std::fs::write(&f.gw.config_path, "[gateway\nunit = ").expect("write");
    eventually(
        "the failed reload is counted",
        Duration::from_secs(5),
        || async { (reload_counts(&f.gw).await.1 >= 1.0).then_some(()) },
    )
    .await;
    // Our own read of the file must not re-trigger the watch: over the next
    // two seconds nothing is re-read, re-logged or re-counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reload_counts(&f.gw).await, (0.0, 1.0));
    let errors = f.gw.stderr().matches("config reload failed").count();
    assert_eq!(errors, 1, "one ERROR line for one broken write");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_file_beside_the_config_does_not_delay_a_change() {
    let f = start("").await;
    let log = f.gw.dir.path().join("app.log");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::File::create(&log).expect("log");
            for i in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = writeln!(file, "line {i}");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let started = Instant::now();
    f.rewrite("", &extra_route("new", "/new"));
    let mut applied = false;
    while started.elapsed() < Duration::from_secs(3) && !applied {
        applied = f.user("42", "/new/x").await.status == 200;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(applied, "not applied within 3 s:\n{}", f.gw.stderr());
    assert_eq!(reload_counts(&f.gw).await, (1.0, 0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_written_file_is_not_applied() {
    use std::io::Write;
    let f = start("").await;
    let full = text(&f.a, &f.b, "", &extra_route("new", "/new"))
        .replace("{listen}", &f.gw.listen.to_string())
        .replace("{admin}", &f.gw.admin.to_string());
    // Cut before the routes: still valid TOML, but with no route at all.
    let cut = full.find("[[routes]]").expect("routes");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&f.gw.config_path)
        .expect("open");
    file.write_all(&full.as_bytes()[..cut]).expect("first half");
    file.flush().expect("flush");
    // A writer pausing longer than the quiet period, shorter than settling.
    tokio::time::sleep(Duration::from_millis(200)).await;
    file.write_all(&full.as_bytes()[cut..])
        .expect("second half");
    drop(file);
    eventually(
        "the whole file is applied",
        Duration::from_secs(5),
        || async { (f.user("42", "/new/x").await.status == 200).then_some(()) },
    )
    .await;
    assert_eq!(f.user("42", "/orders/1").await.status, 200);
    assert_eq!(
        reload_counts(&f.gw).await,
        (1.0, 0.0),
        "the half-written file was never read"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_fallback_body_file_is_reloaded() {
    let (a, b) = (backend("A", "a1").await, backend("B", "b1").await);
    let routes = format!(
        "{ROUTES}\n[[routes]]\nname = \"dead\"\npath_prefix = \"/dead\"\nservice = \"gone\"\nplacement = \"unit:A\"\n[routes.fallback]\nstatus = 503\nbody_file = \"sorry.json\"\n"
    );
    let instances = format!("A = [\"{}\"]\nB = [\"{}\"]", a.addr, b.addr);
    let dead = unitgate_tests::dead_addr();
    let extra = format!(
        "\n[[services]]\nname = \"gone\"\n[services.instances]\nA = [\"{dead}\"]\nB = [\"{dead}\"]\n"
    );
    let mut config = two_units_config("", ROUTING, &instances, "", &routes);
    config.push_str(&extra);
    let gw = GatewayProc::start_with_files(&config, &[("sorry.json", "{\"v\":1}")]).await;
    gw.wait_watching().await;
    let body = || async { gw.get_as("42", "/dead/x").await.body };
    assert_eq!(body().await, "{\"v\":1}");
    std::fs::write(gw.dir.path().join("sorry.json"), "{\"v\":2}").expect("write");
    eventually("the new body is served", Duration::from_secs(5), || async {
        (body().await == "{\"v\":2}").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn editor_rename_and_symlink_swaps_are_seen() {
    let f = start("").await;
    // Editor style: write a temp file, rename it over the config.
    let tmp = f.gw.dir.path().join("unitgate.toml.swp");
    let body = |routes: &str| {
        text(&f.a, &f.b, "", routes)
            .replace("{listen}", &f.gw.listen.to_string())
            .replace("{admin}", &f.gw.admin.to_string())
    };
    std::fs::write(&tmp, body(&extra_route("renamed", "/renamed"))).expect("write");
    std::fs::rename(&tmp, &f.gw.config_path).expect("rename");
    eventually("renamed file applied", Duration::from_secs(5), || async {
        (f.user("42", "/renamed/x").await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_behind_a_swapped_symlink_reloads() {
    let (a, b) = (backend("A", "a1").await, backend("B", "b1").await);
    // Kubernetes ConfigMap layout: unitgate.toml -> ..data/unitgate.toml,
    // ..data -> a versioned directory swapped atomically.
    let root = tempfile::tempdir().expect("dir");
    let listen = format!("127.0.0.1:{}", unitgate_tests::free_port());
    let admin = format!("127.0.0.1:{}", unitgate_tests::free_port());
    let write_version = |v: &str, routes: &str| {
        let dir = root.path().join(v);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let body = text(&a, &b, "", routes)
            .replace("{listen}", &listen)
            .replace("{admin}", &admin);
        std::fs::write(dir.join("unitgate.toml"), body).expect("write");
    };
    write_version("v1", ROUTES);
    std::os::unix::fs::symlink("v1", root.path().join("..data")).expect("link data");
    std::os::unix::fs::symlink("..data/unitgate.toml", root.path().join("unitgate.toml"))
        .expect("link");
    let mut child = std::process::Command::new(unitgate_tests::unitgate_bin())
        .args(["run", "-c"])
        .arg(root.path().join("unitgate.toml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let c = unitgate_tests::client();
    let get = |path: &str| {
        c.get(format!("http://{listen}{path}"))
            .header("x-user-id", "42")
    };
    eventually("gateway up", Duration::from_secs(10), || async {
        try_send(get("/orders")).await.ok()
    })
    .await;
    write_version("v2", &extra_route("v2", "/v2"));
    std::os::unix::fs::symlink("v2", root.path().join("..data_tmp")).expect("link tmp");
    std::fs::rename(root.path().join("..data_tmp"), root.path().join("..data")).expect("swap");
    let r = eventually("v2 applied", Duration::from_secs(5), || async {
        try_send(get("/v2/x"))
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
    assert_eq!(r.unit(), "B");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_admin_reload() {
    let f = start("").await;
    f.rewrite("", &extra_route("hup", "/hup"));
    f.gw.signal("HUP");
    eventually("SIGHUP reload", Duration::from_secs(5), || async {
        (f.user("42", "/hup/x").await.status == 200).then_some(())
    })
    .await;

    std::fs::write(&f.gw.config_path, "[gateway]\nunit = \"nowhere\"\n").expect("write");
    let r =
        f.gw.send(f.gw.admin(Method::POST, "/admin/v1/reload"))
            .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_config");
    assert!(r.json()["errors"].as_array().is_some_and(|e| !e.is_empty()));
    assert_eq!(
        f.user("42", "/hup/x").await.status,
        200,
        "still the last good config"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_under_load_fail_no_request() {
    let f = Arc::new(start("").await);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (f, stop, ok, failed) = (f.clone(), stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let req =
                    f.gw.client
                        .get(f.gw.url("/orders/1"))
                        .header("x-user-id", format!("{w}"));
                match try_send(req).await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for i in 0..10 {
        f.gw.send(f.gw.admin(Method::POST, "/admin/v1/routes").json(&json!({
            "name": format!("r{i}"), "path_prefix": format!("/r{i}"), "service": "echo"
        })))
        .await;
        f.rewrite("", &format!("{ROUTES}\n[[routes]]\nname = \"f{i}\"\npath_prefix = \"/f{i}\"\nservice = \"echo\"\n"));
        f.gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_route_crud_with_etags_and_persistence() {
    let f = start("").await;
    let gw = &f.gw;
    let cfg = gw.send(gw.admin(Method::GET, "/admin/v1/config")).await;
    let etag = cfg.header("etag").expect("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 10);

    let route =
        json!({"name": "carts", "path_prefix": "/carts", "service": "echo", "placement": "unit:B"});
    // If-Match that does not match: 412, nothing changes.
    let r = gw
        .send(
            gw.admin(Method::POST, "/admin/v1/routes")
                .header("if-match", "\"stale\"")
                .json(&route),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (412, Some("precondition_failed"))
    );
    let r = gw
        .send(
            gw.admin(Method::POST, "/admin/v1/routes")
                .header("if-match", &etag)
                .json(&route),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let etag2 = r.header("etag").expect("etag").to_owned();
    assert_ne!(etag2, etag);
    assert_eq!(f.user("42", "/carts/1").await.unit(), "B", "applied live");
    let r = gw
        .send(gw.admin(Method::POST, "/admin/v1/routes").json(&route))
        .await;
    assert_eq!(r.status, 409, "duplicate name");

    // Persisted atomically: the file has the route and still validates.
    let on_disk = std::fs::read_to_string(&gw.config_path).expect("read");
    assert!(on_disk.contains("carts"), "{on_disk}");
    let (code, _, err) = run_cli(&["check", "-c", gw.config_path.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");

    // Bad input: invalid JSON, unknown field, an invalid result (all 400).
    let r = gw
        .send(gw.admin(Method::POST, "/admin/v1/routes").body("{nope"))
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("bad_request"))
    );
    let r = gw
        .send(
            gw.admin(Method::POST, "/admin/v1/routes")
                .json(&json!({"name": "x", "servce": "echo"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = gw
        .send(
            gw.admin(Method::POST, "/admin/v1/routes")
                .json(&json!({"name": "bad", "path_prefix": "/bad", "service": "ordrs"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_config"))
    );
    assert!(
        r.json()["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("ordrs")),
        "{}",
        r.body
    );

    // Replace, read, delete.
    let r = gw
        .send(
            gw.admin(Method::PUT, "/admin/v1/routes/carts")
                .json(&json!({"path_prefix": "/carts", "service": "echo", "placement": "unit:A"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(f.user("7500", "/carts/1").await.unit(), "A");
    let r = gw
        .send(gw.admin(Method::GET, "/admin/v1/routes/carts"))
        .await;
    assert_eq!(r.json()["placement"], "unit:A");
    let r = gw
        .send(gw.admin(Method::DELETE, "/admin/v1/routes/carts"))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(f.user("42", "/carts/1").await.status, 404);
    let r = gw
        .send(gw.admin(Method::DELETE, "/admin/v1/routes/carts"))
        .await;
    assert_eq!(r.status, 404);
    let r = gw
        .send(gw.admin(Method::GET, "/admin/v1/services/nope"))
        .await;
    assert_eq!(r.status, 404);
    // Deleting a service still in use leaves an invalid config: refused.
    let r = gw
        .send(gw.admin(Method::DELETE, "/admin/v1/services/echo"))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // The watcher sees our own write and does not count it as a reload.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "unitgate_config_reloads_total{result=\"ok\"}"),
        Some(0.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_redacted() {
    let f = start("").await;
    let r = f.gw.send(f.gw.admin(Method::GET, "/admin/v1/config")).await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("top-secret-signing-key"), "{}", r.body);
    assert!(!r.body.contains("test-token"), "{}", r.body);
    assert_eq!(r.json()["routing"]["signing_keys"]["k1"], "<redacted>");
    assert_eq!(r.json()["admin"]["token"], "<redacted>");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_mutations_are_all_kept() {
    let f = start("").await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let req = f.gw.admin(Method::POST, "/admin/v1/routes").json(&json!({
            "name": format!("c{i}"), "path_prefix": format!("/c{i}"), "service": "echo"
        }));
        tasks.push(tokio::spawn(try_send(req)));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("reply").status, 201);
    }
    let r = f.gw.send(f.gw.admin(Method::GET, "/admin/v1/routes")).await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(13), "{}", r.body);
    let on_disk = std::fs::read_to_string(&f.gw.config_path).expect("read");
    assert_eq!(on_disk.matches("[[routes]]").count(), 13);
}

#[tokio::test(flavor = "multi_thread")]
async fn unit_state_and_shardmap_changes_apply_on_the_next_request() {
    let f = start("").await;
    assert_eq!(f.user("42", "/orders").await.unit(), "A");
    let r =
        f.gw.send(
            f.gw.admin(Method::PUT, "/admin/v1/units/A")
                .json(&json!({"state": "down"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = f.user("42", "/orders").await;
    assert_eq!(r.unit(), "B", "A is down: its users cross at once");
    assert_eq!(r.json()["headers"]["x-unit-crossed-from"], "A");
    let m = f.gw.metrics().await;
    assert_eq!(
        metric(&m, "unitgate_unit_state{unit=\"A\",state=\"down\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "unitgate_unit_state{unit=\"A\",state=\"active\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "unitgate_unit_state{unit=\"B\",state=\"active\"}"),
        Some(1.0)
    );
    let r =
        f.gw.send(
            f.gw.admin(Method::PUT, "/admin/v1/units/C")
                .json(&json!({"state": "down"})),
        )
        .await;
    assert_eq!(r.status, 404);
    let r =
        f.gw.send(
            f.gw.admin(Method::PUT, "/admin/v1/units/A")
                .json(&json!({"state": "gone"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    f.gw.send(
        f.gw.admin(Method::PUT, "/admin/v1/units/A")
            .json(&json!({"state": "active"})),
    )
    .await;

    // Shard map: the epoch must grow; every slot covered once.
    let map =
        f.gw.send(f.gw.admin(Method::GET, "/admin/v1/shardmap"))
            .await
            .json();
    assert_eq!(map["epoch"], 1);
    let r =
        f.gw.send(
            f.gw.admin(Method::PUT, "/admin/v1/shardmap")
                .json(&json!({"epoch": 1, "units": {"A": ["0-4999"], "B": ["5000-9999"]}})),
        )
        .await;
    assert_eq!(r.status, 409);
    let r =
        f.gw.send(
            f.gw.admin(Method::PUT, "/admin/v1/shardmap")
                .json(&json!({"epoch": 2, "units": {"A": ["0-99"], "B": ["5000-9999"]}})),
        )
        .await;
    assert_eq!(r.status, 400, "a gap: {}", r.body);
    // Move slots 0-99 to B.
    let old = f.user("42", "/orders").await;
    let cookie = old
        .header("set-cookie")
        .expect("stamped")
        .split(';')
        .next()
        .expect("value")
        .to_owned();
    let r =
        f.gw.send(
            f.gw.admin(Method::PUT, "/admin/v1/shardmap").json(
                &json!({"epoch": 2, "units": {"A": ["100-4999"], "B": ["0-99", "5000-9999"]}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r =
        f.gw.send(
            f.gw.client
                .get(f.gw.url("/orders"))
                .header("x-user-id", "42")
                .header("cookie", &cookie),
        )
        .await;
    assert_eq!(r.unit(), "B", "slot 42 moved");
    assert_eq!(r.json()["headers"]["x-unit-epoch"], "2");
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.starts_with("ug_route=1.42.2.")),
        "re-stamped for the new epoch"
    );
    let m = f.gw.metrics().await;
    assert_eq!(metric(&m, "unitgate_config_epoch"), Some(2.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_breaker_state_survive_a_reload() {
    let breaker = "[services.health]\nkind = \"http\"\ninterval_ms = 100\ntimeout_ms = 100\nunhealthy_after = 1\n\
                   healthy_after = 1\n[services.circuit_breaker]\nfailure_ratio = 0.5\nmin_requests = 3\n\
                   window_ms = 10000\nopen_ms = 60000\n";
    let f = start(breaker).await;
    // Open A's circuit: A answers 500s.
    f.a.set_status(500);
    for _ in 0..3 {
        f.user("42", "/orders").await;
    }
    assert_eq!(f.user("42", "/orders").await.unit(), "B", "circuit open");
    // An unrelated change (a new route) is a reload: the circuit stays open.
    f.rewrite(breaker, &extra_route("other", "/other"));
    f.gw.signal("HUP");
    eventually("reloaded", Duration::from_secs(5), || async {
        (f.user("42", "/other").await.status == 200).then_some(())
    })
    .await;
    f.a.set_status(0);
    let served = f.a.served();
    for _ in 0..5 {
        assert_eq!(
            f.user("42", "/orders").await.unit(),
            "B",
            "the open circuit was carried over"
        );
    }
    assert_eq!(f.a.served(), served);
    let m = f.gw.metrics().await;
    assert_eq!(
        metric(&m, "unitgate_circuit_open{service=\"echo\",unit=\"A\"}"),
        Some(1.0),
        "{m}"
    );
    let a_instance = format!(
        "unitgate_instance_healthy{{service=\"echo\",unit=\"B\",instance=\"{}\"}}",
        f.b.addr
    );
    assert_eq!(metric(&m, &a_instance), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_route_code_and_units() {
    let f = start("").await;
    for _ in 0..3 {
        f.user("42", "/orders/x").await;
    }
    f.user("7500", "/orders/x").await;
    f.a.stop();
    let r = f.user("42", "/orders/x").await;
    assert_eq!(r.unit(), "B");
    let series = |code: u16, home: &str, served: &str| {
        format!("unitgate_requests_total{{route=\"orders\",code=\"{code}\",home_unit=\"{home}\",served_unit=\"{served}\"}}")
    };
    // A request is counted when it is logged, just after its response was
    // written: wait for the last one to be counted.
    let m = eventually(
        "the crossed request counted",
        Duration::from_secs(3),
        || async {
            let m = f.gw.metrics().await;
            metric(&m, &series(200, "A", "B")).map(|_| m)
        },
    )
    .await;
    assert_eq!(metric(&m, &series(200, "A", "A")), Some(3.0), "{m}");
    assert_eq!(metric(&m, &series(200, "B", "B")), Some(1.0));
    assert_eq!(metric(&m, &series(200, "A", "B")), Some(1.0));
    assert_eq!(
        metric(
            &m,
            "unitgate_cross_unit_total{service=\"echo\",from=\"A\",to=\"B\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "unitgate_request_duration_seconds_count{route=\"orders\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(&m, "unitgate_upstream_attempts_total{service=\"echo\",unit=\"A\",outcome=\"connect_error\"}"),
        Some(1.0)
    );
    for name in [
        "unitgate_degraded_total{route=\"orders\",reason=\"overloaded\"}",
        "unitgate_write_forbidden_total{route=\"orders\"}",
        "unitgate_config_epoch",
    ] {
        assert!(metric(&m, name).is_some(), "{name} missing:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_is_one_json_object_per_request() {
    let (a, b) = (backend("A", "a1").await, backend("B", "b1").await);
    let gw = GatewayProc::start_with(
        &text(&a, &b, "", ROUTES),
        &[("RUST_LOG", "info")],
        &["--log-format", "json"],
    )
    .await;
    let r = gw
        .send(
            gw.client
                .get(gw.url("/orders/9"))
                .header("x-user-id", "7500")
                .header("x-request-id", "log-me")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
        )
        .await;
    assert_eq!(r.status, 200);
    let line = eventually("the access line", Duration::from_secs(5), || async {
        gw.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["request_id"] == "log-me")
    })
    .await;
    assert_eq!(line["target"], "access", "{line}");
    assert_eq!(line["route"], "orders");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["status"], 200);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/orders/9");
    assert_eq!(line["home_unit"], "B");
    assert_eq!(line["served_unit"], "B");
    assert_eq!(line["slot"], 7500);
    assert_eq!(line["crossed"], false);
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
    assert!(line["timestamp"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_errors_carry_a_request_id_and_every_call_is_logged() {
    let (a, b) = (backend("A", "a1").await, backend("B", "b1").await);
    let gw = GatewayProc::start_with_env(&text(&a, &b, "", ROUTES), &[("RUST_LOG", "info")]).await;
    let f = Fixture { gw, a, b };
    let c = unitgate_tests::client();
    let r =
        f.gw.send(
            c.get(f.gw.admin_url("/admin/v1/status"))
                .bearer_auth("wrong"),
        )
        .await;
    assert_eq!(r.status, 401);
    let id = r.json()["request_id"].as_str().unwrap_or("").to_owned();
    assert!(!id.is_empty(), "{}", r.body);
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));

    // The caller's id is kept.
    let r =
        f.gw.send(
            f.gw.admin(Method::GET, "/admin/v1/routes/nope")
                .header("x-request-id", "op-1234"),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["request_id"], "op-1234");

    // A body over the limit: the contract's JSON, not axum's text; also
    // one far over it, sent whole without `Expect: 100-continue` (once
    // reset at 8 MiB).
    for mib in [3, 16] {
        let big = vec![b' '; mib * 1024 * 1024];
        let r =
            f.gw.send(
                f.gw.admin(Method::PUT, "/admin/v1/routes/orders")
                    .header("content-type", "application/json")
                    .body(big),
            )
            .await;
        assert_eq!(r.status, 413, "{mib} MiB: {}", r.body);
        assert_eq!(r.json()["error"], "payload_too_large");
        assert!(!r.json()["request_id"].as_str().unwrap_or("").is_empty());
    }

    // Every admin call is in the access log, the 401 included.
    let logged = |log: &str| {
        let admin: Vec<&str> = log.lines().filter(|l| l.contains("admin=true")).collect();
        admin
            .iter()
            .any(|l| l.contains("status=401") && l.contains(&id))
            && admin.iter().any(|l| l.contains("status=413"))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut log = strip_ansi(&f.gw.stderr());
    while !logged(&log) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = strip_ansi(&f.gw.stderr());
    }
    assert!(
        logged(&log),
        "admin calls missing from the access log:\n{log}"
    );
}

/// The log without terminal colour codes (when stderr is a terminal).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_check_metrics() {
    let f = start("").await;
    // Some traffic first, so every family has series.
    for user in ["42", "7500"] {
        assert_eq!(f.user(user, "/orders").await.status, 200);
    }
    assert_eq!(f.user("42", "/nowhere").await.status, 404);
    let exposition = f.gw.metrics().await;
    unitgate_tests::promtool_check_metrics(&exposition);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_log_drops_access_lines_and_never_stalls_requests() {
    use std::process::{Command, Stdio};
    let (a, b) = (backend("A", "a1").await, backend("B", "b1").await);
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], unitgate_tests::free_port()));
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], unitgate_tests::free_port()));
    let cfg = text(&a, &b, "", ROUTES)
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string());
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("unitgate.toml");
    std::fs::write(&path, cfg).expect("write");
    // stderr is a pipe nobody reads: once its 64 KiB buffer is full, every
    // write to it blocks, as a stuck log shipper or a full disk would.
    let mut child = Command::new(unitgate_tests::unitgate_bin())
        .args(["run", "-c", path.to_str().expect("utf8")])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let _unread = child.stderr.take();
    unitgate_tests::eventually("listening", Duration::from_secs(15), || async {
        tokio::net::TcpStream::connect(listen)
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let c = unitgate_tests::client();
    let url = format!("http://{listen}/orders");
    // Bounded: 8 clients x 500 requests, well past the 1 MiB a worker may
    // hold (about 3 000 lines) plus the pipe.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                for n in 0..500 {
                    let t = Instant::now();
                    let r = c
                        .get(&url)
                        .header("x-user-id", format!("{}", i * 1000 + n))
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await;
                    worst = worst.max(t.elapsed());
                }
                worst
            })
        })
        .collect();
    for t in tasks {
        slowest = slowest.max(t.await.expect("task"));
    }
    let took = started.elapsed();
    let m = c
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let _ = child.kill();
    let _ = child.wait();
    let dropped = metric(&m, "unitgate_access_log_dropped_total").expect("series");
    assert!(dropped > 0.0, "a blocked stderr makes the log drop lines");
    assert!(
        slowest < Duration::from_secs(1),
        "no request waits on the log: slowest {slowest:?} of 4000 in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_file_is_reopened_on_sigusr1_for_logrotate() {
    let (a, b) = (backend("A", "a1").await, backend("B", "b1").await);
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let gw = GatewayProc::start_with(
        &text(&a, &b, "", ROUTES),
        &[("RUST_LOG", "info")],
        &["--access-log", log.to_str().expect("utf8")],
    )
    .await;
    let send = |id: &'static str| {
        gw.send(
            gw.client
                .get(gw.url("/orders/1"))
                .header("x-user-id", "42")
                .header("x-request-id", id),
        )
    };
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert_eq!(send("rot-1").await.status, 200);
    eventually(
        "the line is in the file",
        Duration::from_secs(5),
        || async { read(&log).contains("rot-1").then_some(()) },
    )
    .await;
    assert!(
        !gw.stderr().contains("rot-1"),
        "the access line goes to the file only"
    );

    // logrotate: rename, then signal; new lines go to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    gw.signal("USR1");
    eventually("the file is reopened", Duration::from_secs(5), || async {
        log.exists().then_some(())
    })
    .await;
    assert_eq!(send("rot-2").await.status, 200);
    eventually(
        "the new line is in the new file",
        Duration::from_secs(5),
        || async { read(&log).contains("rot-2").then_some(()) },
    )
    .await;
    let old = read(&rotated);
    assert!(old.contains("rot-1") && !old.contains("rot-2"), "{old}");
}
