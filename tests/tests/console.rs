//! The web console (`/ui/`) in a real headless Chromium against a real
//! gateway, and logs without terminal colour codes when stderr is piped.
//!
//! Chromium loads `/ui/#token=...`, runs the page's script (which polls the
//! admin API) and dumps the DOM; the tests assert on the text a user reads:
//! unit states, shard-map ranges, instance health, migration steps, rates.
//! Where no Chromium is installed (`scripts/deps.sh --test` installs it) the
//! browser tests say so and pass without asserting; `$CHROMIUM` names one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use unitgate_tests::{backend, eventually, two_units_config, EchoServer, GatewayProc};

const TOKEN: &str = "test-token";

/// The Chromium binary: `$CHROMIUM`, else the first of the usual names on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|p| p.is_file())
}

/// `Some(chromium)`, or `None` after saying why the test does not run.
fn browser(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        eprintln!(
            "SKIPPED {test}: no Chromium found (install the `chromium` package, e.g. \
             `scripts/deps.sh --test`, or set CHROMIUM=/path/to/chromium)"
        );
    }
    found
}

/// Loads `url` in a fresh headless Chromium profile and returns the DOM
/// after `budget_ms` of virtual time, or runs `extra` (e.g. a screenshot) instead of dumping it.
async fn run_chromium(chrome: &PathBuf, url: &str, budget_ms: u32, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(chrome);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // Virtual time: timers run as fast as the page is idle (5 s of it is
    // three polls); it stands still while a fetch is pending.
    cmd.arg(format!("--virtual-time-budget={budget_ms}"));
    if extra.is_empty() {
        cmd.arg("--dump-dom");
    } else {
        cmd.args(extra);
    }
    cmd.arg(url);
    let out = tokio::task::spawn_blocking(move || {
        let child = cmd.spawn().expect("start chromium");
        let pid = child.id();
        // A hung browser must not hang the suite.
        let watchdog = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(90));
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        });
        let out = child.wait_with_output().expect("chromium output");
        drop(watchdog);
        out
    })
    .await
    .expect("chromium task");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && (!extra.is_empty() || dom.contains("</html>")),
        "chromium failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    drop(profile);
    dom
}

/// The console's DOM after three polls.
async fn console_dom(chrome: &PathBuf, gw: &GatewayProc) -> String {
    let url = gw.admin_url(&format!("/ui/#token={TOKEN}"));
    run_chromium(chrome, &url, 5000, &[]).await
}

/// The text of an HTML fragment as a reader sees it: tags dropped (inline
/// ones join their neighbours, others separate words), the entities the
/// page's text can contain decoded, whitespace collapsed.
fn text_of(html: &str) -> String {
    const INLINE: [&str; 5] = ["b", "span", "code", "i", "em"];
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let tag = &rest[open + 1..open + close];
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or("");
        if !INLINE.contains(&name) {
            out.push(' ');
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The HTML inside the element whose opening tag contains `marker` (e.g.
/// `id="units"`), up to its matching close tag.
fn element<'a>(dom: &'a str, marker: &str) -> Option<&'a str> {
    let at = dom.find(marker)?;
    let open = dom[..at].rfind('<')?;
    let name_end = dom[open + 1..].find(|c: char| !c.is_ascii_alphanumeric())? + open + 1;
    let name = &dom[open + 1..name_end];
    let body = dom[at..].find('>')? + at + 1;
    // Count nested elements of the same name to find the matching close.
    let (open_tag, close_tag) = (format!("<{name}"), format!("</{name}>"));
    let mut depth = 1;
    let mut i = body;
    while depth > 0 {
        let next_close = dom[i..].find(&close_tag)? + i;
        match dom[i..].find(&open_tag).map(|p| p + i) {
            Some(o) if o < next_close => {
                depth += 1;
                i = o + open_tag.len();
            }
            _ => {
                depth -= 1;
                if depth == 0 {
                    return Some(&dom[body..next_close]);
                }
                i = next_close + close_tag.len();
            }
        }
    }
    None
}

/// The text of the element with `marker` inside the element with `within`.
fn text_in(dom: &str, within: &str, marker: &str) -> String {
    let outer = element(dom, within).unwrap_or_else(|| panic!("no {within} in the page:\n{dom}"));
    let inner = element(outer, marker)
        .unwrap_or_else(|| panic!("no {marker} in {within}:\n{}", text_of(outer)));
    text_of(inner)
}

fn panel(dom: &str, id: &str) -> String {
    text_of(element(dom, &format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id}:\n{dom}")))
}

/// Two units of one service with fast active health checks, a sharded
/// catch-all route; `instances` is the `[services.instances]` body.
fn config(instances: &str) -> String {
    let health = "[services.health]\nkind = \"http\"\ninterval_ms = 100\ntimeout_ms = 100\n\
                  unhealthy_after = 1\nhealthy_after = 1\n";
    let routes = "[[routes]]\nname = \"sharded\"\npath_prefix = \"/\"\nservice = \"echo\"\n\
                  placement = \"sharded\"\n";
    two_units_config(
        "",
        "[routing]\nkey = [\"header:x-user-id\"]\n",
        instances,
        health,
        routes,
    )
}

struct Setup {
    gw: GatewayProc,
    a: Vec<EchoServer>,
    _b: Vec<EchoServer>,
}

async fn start() -> Setup {
    let a = vec![backend("A", "a1").await, backend("A", "a2").await];
    let b = vec![backend("B", "b1").await];
    let instances = format!(
        "A = [\"{}\", \"{}\"]\nB = [\"{}\"]",
        a[0].addr, a[1].addr, b[0].addr
    );
    let gw = GatewayProc::start(&config(&instances)).await;
    Setup { gw, a, _b: b }
}

/// Every instance of the health API answers `healthy == want` for `addr`.
async fn wait_health(gw: &GatewayProc, addr: &str, want: bool) {
    eventually(
        &format!("{addr} healthy={want} in /admin/v1/health"),
        Duration::from_secs(10),
        || async {
            let h = gw
                .send(gw.admin(reqwest::Method::GET, "/admin/v1/health"))
                .await
                .json();
            let found = h["services"][0]["units"]
                .as_array()?
                .iter()
                .flat_map(|u| u["instances"].as_array().cloned().unwrap_or_default())
                .find(|i| i["instance"] == addr)?;
            (found["healthy"] == want).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_assets_are_served_with_a_strict_policy() {
    let s = start().await;
    let gw = &s.gw;
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = gw.send(no_redirect.get(gw.admin_url("/ui"))).await;
    assert_eq!(r.status, 308, "/ui redirects");
    assert_eq!(r.header("location"), Some("/ui/"));

    for (path, ctype, needle) in [
        ("/ui/", "text/html", "<script src=\"app.js\"></script>"),
        ("/ui/app.js", "text/javascript", "/admin/v1"),
        ("/ui/app.css", "text/css", ".badge"),
    ] {
        // No token: the page itself holds no data.
        let r = gw.send(gw.client.get(gw.admin_url(path))).await;
        assert_eq!(r.status, 200, "{path}");
        let ct = r.header("content-type").unwrap_or("");
        assert!(ct.starts_with(ctype), "{path}: content-type {ct}");
        let csp = r.header("content-security-policy").unwrap_or("");
        assert!(csp.contains("default-src 'self'"), "{path}: CSP {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: CSP {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: CSP {csp}");
        assert!(!csp.contains("unsafe-eval"), "{path}: CSP {csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.body.contains(needle), "{path} body");
        assert!(!r.body.contains("https://"), "{path} names an outside URL");
    }
    // The console opened no hole in the API's auth.
    let r = gw
        .send(gw.client.get(gw.admin_url("/admin/v1/status")))
        .await;
    assert_eq!(r.status, 401);
    let r = gw.send(gw.client.get(gw.admin_url("/ui/nope.js"))).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn console_shows_units_shard_map_and_health_and_follows_changes() {
    let Some(chrome) = browser("console_shows_units_shard_map_and_health_and_follows_changes")
    else {
        return;
    };
    let s = start().await;
    let gw = &s.gw;
    let (a1, a2) = (s.a[0].addr.to_string(), s.a[1].addr.to_string());
    wait_health(gw, &a2, true).await;

    let dom = console_dom(&chrome, gw).await;
    assert!(
        panel(&dom, "gateway").contains("gateway in unit A"),
        "{}",
        panel(&dom, "gateway")
    );
    // Units, with their state in words and their failover.
    let unit_a = text_in(&dom, "id=\"units\"", "data-unit=\"A\"");
    let unit_b = text_in(&dom, "id=\"units\"", "data-unit=\"B\"");
    assert!(unit_a.contains("A (this gateway) active B"), "{unit_a}");
    assert!(unit_b.contains("B active A"), "{unit_b}");
    assert!(unit_a.contains("2 of 2 serving"), "{unit_a}");
    assert!(
        unit_a.contains("Drain") && unit_a.contains("Activate"),
        "{unit_a}"
    );
    // The shard map's ranges as text, beside the bar.
    let map = panel(&dom, "shardmap");
    assert!(map.contains("A: slots 0-4999 (5000 slots)"), "{map}");
    assert!(map.contains("B: slots 5000-9999 (5000 slots)"), "{map}");
    assert!(map.contains("frozen (writes refused): none"), "{map}");
    assert!(map.contains("10000 slots"), "{map}");
    assert!(dom.contains("class=\"shardbar\""), "the bar is drawn");
    // Every instance with its health in words.
    let health = panel(&dom, "health");
    assert!(health.contains("service echo"), "{health}");
    for addr in [&a1, &a2] {
        let inst = text_in(&dom, "id=\"health\"", &format!("data-instance=\"{addr}\""));
        // Fields the console does not know (e.g. load-balancing ones) follow.
        assert!(
            inst.starts_with(&format!("{addr} healthy not ejected")),
            "{inst}"
        );
    }
    let circuit = text_in(&dom, "id=\"health\"", "data-unit=\"A\"");
    assert!(circuit.contains("circuit none"), "{circuit}");
    // The fleet of one (file mode) and no migration yet.
    let fleet = panel(&dom, "fleet");
    assert!(fleet.contains("store file (a fleet of one)"), "{fleet}");
    assert!(fleet.contains("1 gateway(s)"), "{fleet}");
    assert!(fleet.contains("in sync"), "{fleet}");
    assert!(panel(&dom, "migrations").contains("no migrations yet"));
    assert!(
        element(&dom, "id=\"error\"").is_some_and(|e| text_of(e).is_empty()),
        "no error shown: {}",
        panel(&dom, "error")
    );

    // Drain B through the admin API: the console shows it.
    let r = gw
        .admin_send(
            reqwest::Method::PUT,
            "/admin/v1/units/B",
            &serde_json::json!({"state": "draining"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // An instance dies: its health turns to `unhealthy`.
    s.a[1].stop();
    wait_health(gw, &a2, false).await;

    let dom = console_dom(&chrome, gw).await;
    let unit_b = text_in(&dom, "id=\"units\"", "data-unit=\"B\"");
    assert!(unit_b.contains("B draining A"), "{unit_b}");
    let unit_a = text_in(&dom, "id=\"units\"", "data-unit=\"A\"");
    assert!(unit_a.contains("active"), "{unit_a}");
    let dead = text_in(&dom, "id=\"health\"", &format!("data-instance=\"{a2}\""));
    assert!(
        dead.starts_with(&format!("{a2} unhealthy not ejected")),
        "{dead}"
    );
    let alive = text_in(&dom, "id=\"health\"", &format!("data-instance=\"{a1}\""));
    assert!(
        alive.starts_with(&format!("{a1} healthy not ejected")),
        "{alive}"
    );
    // A's count of serving instances follows.
    let unit_a = text_in(&dom, "id=\"units\"", "data-unit=\"A\"");
    assert!(unit_a.contains("1 of 2 serving"), "{unit_a}");
}

#[tokio::test(flavor = "multi_thread")]
async fn console_shows_a_migration_and_its_frozen_slots() {
    let Some(chrome) = browser("console_shows_a_migration_and_its_frozen_slots") else {
        return;
    };
    let s = start().await;
    let gw = &s.gw;
    let r = gw
        .admin_send(
            reqwest::Method::POST,
            "/admin/v1/migrations",
            &serde_json::json!({"slots": ["0-99"], "to": "B", "confirm": "manual"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().expect("migration id").to_owned();
    eventually("waiting_confirm", Duration::from_secs(10), || async {
        let m = gw
            .send(gw.admin(reqwest::Method::GET, &format!("/admin/v1/migrations/{id}")))
            .await
            .json();
        (m["state"] == "waiting_confirm").then_some(())
    })
    .await;

    let dom = console_dom(&chrome, gw).await;
    let map = panel(&dom, "shardmap");
    assert!(
        map.contains("frozen (writes refused): 0-99 (100 slots)"),
        "{map}"
    );
    assert!(
        dom.contains("class=\"frozen\""),
        "the frozen range is marked on the bar"
    );
    let m = text_in(
        &dom,
        "id=\"migrations\"",
        &format!("data-migration=\"{id}\""),
    );
    assert!(m.contains("0-99 A (0-99) → B"), "{m}");
    assert!(m.contains("waiting_confirm"), "{m}");
    assert!(
        m.contains("✓ freezing ▶ waiting confirm reassigning unfreezing done"),
        "{m}"
    );
    assert!(m.contains("Confirm") && m.contains("Abort"), "{m}");

    // Confirmed through the API, it runs to the end; the console follows.
    let r = gw
        .admin_send(
            reqwest::Method::POST,
            &format!("/admin/v1/migrations/{id}/confirm"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("done", Duration::from_secs(10), || async {
        let m = gw
            .send(gw.admin(reqwest::Method::GET, &format!("/admin/v1/migrations/{id}")))
            .await
            .json();
        (m["state"] == "done").then_some(())
    })
    .await;
    let dom = console_dom(&chrome, gw).await;
    let map = panel(&dom, "shardmap");
    assert!(map.contains("A: slots 100-4999 (4900 slots)"), "{map}");
    assert!(map.contains("frozen (writes refused): none"), "{map}");
    let m = text_in(
        &dom,
        "id=\"migrations\"",
        &format!("data-migration=\"{id}\""),
    );
    assert!(m.contains("done"), "{m}");
    assert!(!m.contains("Abort") && !m.contains("Confirm"), "{m}");
}

/// A TCP forwarder to `to` that holds each `GET /metrics` for `delay`.
/// Under `--virtual-time-budget` the page's clock stops while a fetch is
/// pending, so without this two scrapes "2 s apart" are milliseconds apart in
/// real time and see almost no traffic between them; held, each scrape lets
/// real time (and real requests) pass.
async fn slow_metrics_proxy(to: SocketAddr, delay: Duration) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("proxy listener");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut client_rd, mut client_wr) = client.into_split();
                let (mut server_rd, mut server_wr) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match client_rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if buf[..n].starts_with(b"GET /metrics") {
                            tokio::time::sleep(delay).await;
                        }
                        if server_wr.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_wr.shutdown().await;
                };
                let down = tokio::io::copy(&mut server_rd, &mut client_wr);
                let _ = tokio::join!(up, down);
            });
        }
    });
    addr
}

/// Requests from users 42 (slot 42, home A) and 7500 (home B) in turn until
/// `stop` is set, so successive scrapes see counters move; the task returns
/// how many it sent.
fn traffic(gw: &GatewayProc) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let task = {
        let stop = stop.clone();
        let client = gw.client.clone();
        let url = gw.url("/x");
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let user = if n.is_multiple_of(2) { "42" } else { "7500" };
                let _ = client.get(&url).header("x-user-id", user).send().await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };
    (stop, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn console_shows_request_and_crossing_rates_per_unit() {
    let Some(chrome) = browser("console_shows_request_and_crossing_rates_per_unit") else {
        return;
    };
    let s = start().await;
    let gw = &s.gw;
    // B is down: users homed in B (slot 7500) cross to A.
    let r = gw
        .admin_send(
            reqwest::Method::PUT,
            "/admin/v1/units/B",
            &serde_json::json!({"state": "down"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw.get_as("7500", "/x").await;
    assert_eq!((r.status, r.unit()), (200, "A"), "{}", r.body);

    let (stop, traffic) = traffic(gw);
    let proxy = slow_metrics_proxy(gw.admin, Duration::from_millis(700)).await;
    let url = format!("http://{proxy}/ui/#token={TOKEN}");
    let started = Instant::now();
    let dom = run_chromium(&chrome, &url, 5000, &[]).await;
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.await.expect("traffic task");
    assert!(sent > 10, "only {sent} requests in {:?}", started.elapsed());

    let a = text_in(&dom, "id=\"rates\"", "data-unit=\"A\"");
    eprintln!("{sent} requests sent; the console shows: {a}");
    let figure = |label: &str| -> f64 {
        a.split(label)
            .nth(1)
            .and_then(|rest| rest.split("/s").next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} figure in {a:?}"))
    };
    assert!(figure("requests ") > 1.0, "{a}");
    assert!(figure("crossing ") > 0.5, "{a}");
    assert!(figure("crossing ") < figure("requests "), "{a}");
    assert_eq!(figure("errors "), 0.0, "{a}");
    assert!(
        element(&dom, "id=\"rates\"").is_some_and(|r| r.contains("class=\"line-req\"")),
        "a chart is drawn"
    );
    let b = text_in(&dom, "id=\"rates\"", "data-unit=\"B\"");
    assert!(b.contains("requests 0.00/s"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn console_shows_the_admin_apis_error_message() {
    let Some(chrome) = browser("console_shows_the_admin_apis_error_message") else {
        return;
    };
    let s = start().await;
    let url = s.gw.admin_url("/ui/#token=wrong-token");
    let dom = run_chromium(&chrome, &url, 3000, &[]).await;
    let error = panel(&dom, "error");
    assert!(
        error.contains("401 unauthorized: missing or wrong bearer token"),
        "{error}"
    );
    // The login form is offered again.
    let at = dom.find("<form id=\"login\"").expect("login form");
    let tag = &dom[at..at + dom[at..].find('>').expect("tag end")];
    assert!(!tag.contains("hidden"), "{tag}");
}

/// `UNITGATE_CONSOLE_SCREENSHOT=/tmp/console.png` saves what a laptop
/// screen shows of a console with some traffic and a migration waiting.
#[tokio::test(flavor = "multi_thread")]
async fn console_screenshot() {
    let Some(out) = std::env::var_os("UNITGATE_CONSOLE_SCREENSHOT") else {
        return;
    };
    let Some(chrome) = browser("console_screenshot") else {
        return;
    };
    let s = start().await;
    let gw = &s.gw;
    for user in ["42", "7500", "43", "7600"] {
        gw.get_as(user, "/x").await;
    }
    gw.admin_send(
        reqwest::Method::POST,
        "/admin/v1/migrations",
        &serde_json::json!({"slots": ["2000-2999"], "to": "B", "confirm": "manual"}),
    )
    .await;
    s.a[1].stop();
    wait_health(gw, &s.a[1].addr.to_string(), false).await;
    let (stop, _traffic) = traffic(gw);
    let proxy = slow_metrics_proxy(gw.admin, Duration::from_millis(700)).await;
    let url = format!("http://{proxy}/ui/#token={TOKEN}");
    let shot = format!("--screenshot={}", PathBuf::from(out).display());
    run_chromium(&chrome, &url, 5000, &[&shot, "--window-size=1366,900"]).await;
    stop.store(true, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread")]
async fn piped_logs_have_no_colour_codes() {
    let a1 = backend("A", "a1").await;
    let b1 = backend("B", "b1").await;
    let instances = format!("A = [\"{}\"]\nB = [\"{}\"]", a1.addr, b1.addr);
    // Access lines on, so that every request logs fields.
    let gw = GatewayProc::start_with_env(&config(&instances), &[("RUST_LOG", "info")]).await;
    let r = gw.get_as("42", "/x").await;
    assert_eq!(r.status, 200);
    let r = gw
        .admin_send(
            reqwest::Method::PUT,
            "/admin/v1/units/B",
            &serde_json::json!({"state": "draining"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let log = eventually("an access line", Duration::from_secs(5), || async {
        let log = gw.stderr();
        log.contains("request_id").then_some(log)
    })
    .await;
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "ANSI escape codes in piped stderr:\n{}",
        log.escape_debug()
    );
}
