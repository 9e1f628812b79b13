//! Unit routing and cross-unit failover through the real binary: slots,
//! home units, the signed routing cookie, x-unit-* headers, crossing, retry
//! rules, hops and the write freeze.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use unitgate_tests::{
    backend, eventually, instance_list, try_send, two_units_config, EchoServer, GatewayProc, Reply,
};

const KEY1: &str = "first-signing-key";
const KEY2: &str = "second-signing-key";

/// The harness's two-unit topology (this gateway in A; A owns 0-4999) with
/// signed cookies (epoch 3), an override and a write freeze, and three routes:
/// `/pinned` (unit:B), `/local` (local), `/` (sharded, one retry).
fn config(
    a: &[&EchoServer],
    b: &[&EchoServer],
    routing_extra: &str,
    gateway_extra: &str,
) -> String {
    let addrs = |s: &[&EchoServer]| instance_list(&s.iter().map(|e| e.addr).collect::<Vec<_>>());
    let routing = format!(
        r#"[routing]
epoch = 3
key = ["header:x-user-id", "query:uid"]
signing_keys = {{ k1 = "{KEY1}", k2 = "{KEY2}" }}
active_key = "k2"
cookie_ttl_secs = 3600
overrides = {{ "vip-42" = "B" }}
forbidden_writes = ["7000-7099"]
{routing_extra}"#
    );
    let instances = format!("A = [{}]\nB = [{}]", addrs(a), addrs(b));
    two_units_config(gateway_extra, &routing, &instances, "", ROUTES)
}

const ROUTES: &str = r#"
[[routes]]
name = "pinned"
path_prefix = "/pinned"
service = "echo"
placement = "unit:B"

[[routes]]
name = "local"
path_prefix = "/local"
service = "echo"
placement = "local"

[[routes]]
name = "sharded"
path_prefix = "/"
service = "echo"
placement = "sharded"
retries = 1
"#;

struct Units {
    gw: GatewayProc,
    a: Vec<EchoServer>,
    b: Vec<EchoServer>,
}

async fn start(routing_extra: &str, gateway_extra: &str) -> Units {
    let a = vec![backend("A", "a1").await, backend("A", "a2").await];
    let b = vec![backend("B", "b1").await, backend("B", "b2").await];
    let cfg = config(
        &[&a[0], &a[1]],
        &[&b[0], &b[1]],
        routing_extra,
        gateway_extra,
    );
    let gw = GatewayProc::start(&cfg).await;
    Units { gw, a, b }
}

impl Units {
    async fn as_user(&self, user: &str, path: &str) -> Reply {
        self.gw.get_as(user, path).await
    }

    async fn with_cookie(&self, cookie: &str) -> Reply {
        self.gw
            .send(
                self.gw
                    .client
                    .get(self.gw.url("/x"))
                    .header("cookie", cookie),
            )
            .await
    }
}

/// CRC-32/ISO-HDLC, bit by bit: an implementation independent of the gateway's.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A cookie value signed the way DESIGN.md says, with `key` under `kid`.
fn sign(slot: u32, epoch: u64, expires: u64, kid: &str, key: &str) -> String {
    let payload = format!("1.{slot}.{epoch}.{expires}.{kid}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(payload.as_bytes());
    format!(
        "{payload}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// The routing cookie a response stamps: (value, attributes).
fn stamped(r: &Reply) -> Option<(String, String)> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("ug_route="))
        .map(|v| {
            let (value, attrs) = v.split_once(';').unwrap_or((v, ""));
            (value.to_owned(), attrs.trim().to_owned())
        })
}

fn upstream_header(r: &Reply, name: &str) -> Option<String> {
    r.json()["headers"][name].as_str().map(str::to_owned)
}

fn slot_field(cookie: &str) -> u32 {
    cookie
        .split('.')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("slot field")
}

#[tokio::test(flavor = "multi_thread")]
async fn numeric_and_string_keys_land_on_their_home_unit() {
    let u = start("", "").await;
    for (user, slot, unit) in [
        ("42", 42u32, "A"),
        ("7500", 7500, "B"),
        ("123456789", 6789, "B"),
        ("4999", 4999, "A"),
    ] {
        let r = u.as_user(user, "/x").await;
        assert_eq!((r.status, r.unit()), (200, unit), "user {user}");
        assert_eq!(upstream_header(&r, "x-unit-slot"), Some(slot.to_string()));
        assert_eq!(upstream_header(&r, "x-unit-home").as_deref(), Some(unit));
        assert_eq!(upstream_header(&r, "x-unit-served").as_deref(), Some(unit));
        assert_eq!(upstream_header(&r, "x-unit-epoch").as_deref(), Some("3"));
        assert_eq!(upstream_header(&r, "x-unit-hops").as_deref(), Some("1"));
        assert_eq!(
            upstream_header(&r, "x-unit-crossed-from"),
            None,
            "served at home"
        );
    }
    for user in ["alice", "bob", "user-00042", "Zoë"] {
        let slot = crc32(user.as_bytes()) % 10000;
        let home = if slot < 5000 { "A" } else { "B" };
        let r =
            u.gw.send(
                u.gw.client
                    .get(u.gw.url(&format!("/x?uid={}", urlenc(user)))),
            )
            .await;
        assert_eq!(
            upstream_header(&r, "x-unit-slot"),
            Some(slot.to_string()),
            "{user}"
        );
        assert_eq!(r.unit(), home, "{user}");
    }
}

fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cookie_is_signed_exactly_as_specified_and_sticks() {
    let u = start("", "").await;
    let r = u.as_user("42", "/x").await;
    let (value, attrs) = stamped(&r).expect("first request is stamped");
    assert_eq!(attrs, "Path=/; HttpOnly; SameSite=Lax; Max-Age=3600");
    let fields: Vec<&str> = value.split('.').collect();
    assert_eq!(fields.len(), 6, "{value}");
    assert_eq!(&fields[..3], &["1", "42", "3"]);
    let expires: u64 = fields[3].parse().expect("expires");
    assert!(expires.abs_diff(now() + 3600) <= 5, "expires {expires}");
    assert_eq!(fields[4], "k2", "signed with the active key");
    assert_eq!(
        value,
        sign(42, 3, expires, "k2", KEY2),
        "HMAC-SHA256, base64url, no padding"
    );

    // The same user with a valid cookie: no re-stamp.
    let r =
        u.gw.send(
            u.gw.client
                .get(u.gw.url("/x"))
                .header("x-user-id", "42")
                .header("cookie", format!("ug_route={value}")),
        )
        .await;
    assert_eq!(r.unit(), "A");
    assert_eq!(stamped(&r), None, "a valid cookie is not re-stamped");
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_users_stick_through_the_cookie() {
    let u = start("", "").await;
    let first = u.gw.get("/x").await;
    let (value, _) = stamped(&first).expect("anonymous request is stamped");
    let slot = slot_field(&value);
    let home = if slot < 5000 { "A" } else { "B" };
    assert_eq!(first.unit(), home);
    for _ in 0..10 {
        let r = u.with_cookie(&format!("other=1; ug_route={value}")).await;
        assert_eq!(r.unit(), home);
        assert_eq!(upstream_header(&r, "x-unit-slot"), Some(slot.to_string()));
        assert_eq!(stamped(&r), None);
    }
    // Random slots for fresh anonymous users: both units get some.
    let mut units = std::collections::HashSet::new();
    for _ in 0..40 {
        units.insert(u.gw.get("/x").await.unit().to_owned());
    }
    assert_eq!(units.len(), 2, "{units:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_key_still_verifies() {
    let u = start("", "").await;
    let old = sign(7777, 3, now() + 3000, "k1", KEY1);
    let r = u.with_cookie(&format!("ug_route={old}")).await;
    assert_eq!(r.unit(), "B");
    assert_eq!(upstream_header(&r, "x-unit-slot").as_deref(), Some("7777"));
    assert_eq!(stamped(&r), None, "k1 is still a verifying key");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_cookies_are_ignored_and_replaced() {
    let u = start("", "").await;
    let good = sign(7777, 3, now() + 3000, "k2", KEY2);
    let forged = good.replacen(".7777.", ".1234.", 1);
    let cases = [
        ("forged slot", forged),
        (
            "wrong key",
            sign(7777, 3, now() + 3000, "k2", "attacker-key"),
        ),
        ("unknown kid", sign(7777, 3, now() + 3000, "k9", KEY2)),
        ("expired", sign(7777, 3, now() - 10, "k2", KEY2)),
        ("garbage", "%%%not-a-cookie".to_owned()),
        ("too many fields", format!("{good}.x")),
    ];
    for (what, value) in cases {
        let r = u.with_cookie(&format!("ug_route={value}")).await;
        assert_eq!(r.status, 200, "{what}: never an error");
        let (new, _) = stamped(&r).unwrap_or_else(|| panic!("{what}: re-stamped"));
        assert_ne!(new, value, "{what}");
        assert_eq!(
            upstream_header(&r, "x-unit-slot"),
            Some(slot_field(&new).to_string()),
            "{what}: the new cookie names the slot used"
        );
    }

    // Old epoch: still a valid hint (same slot), re-stamped with the current epoch.
    let old_epoch = sign(7777, 2, now() + 3000, "k2", KEY2);
    let r = u.with_cookie(&format!("ug_route={old_epoch}")).await;
    assert_eq!(r.unit(), "B");
    let (new, _) = stamped(&r).expect("old epoch re-stamped");
    assert!(new.starts_with("1.7777.3."), "{new}");

    // Under half its lifetime left: re-stamped.
    let ageing = sign(7777, 3, now() + 1000, "k2", KEY2);
    let r = u.with_cookie(&format!("ug_route={ageing}")).await;
    assert!(stamped(&r).is_some_and(|(v, _)| v.starts_with("1.7777.3.")));
}

#[tokio::test(flavor = "multi_thread")]
async fn key_beats_cookie_and_restamps() {
    let u = start("", "").await;
    let in_b = sign(7777, 3, now() + 3000, "k2", KEY2);
    let r =
        u.gw.send(
            u.gw.client
                .get(u.gw.url("/x"))
                .header("x-user-id", "42")
                .header("cookie", format!("ug_route={in_b}")),
        )
        .await;
    assert_eq!(r.unit(), "A");
    let (new, _) = stamped(&r).expect("slot differs: re-stamped");
    assert_eq!(slot_field(&new), 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn overrides_pinned_and_local_placement() {
    let u = start("", "").await;
    let r = u.as_user("vip-42", "/x").await;
    assert_eq!(r.unit(), "B", "override sends vip-42 to B");
    assert_eq!(upstream_header(&r, "x-unit-home").as_deref(), Some("B"));

    let r = u.as_user("42", "/pinned/x").await;
    assert_eq!(r.unit(), "B", "unit:B placement");
    assert_eq!(
        upstream_header(&r, "x-unit-home").as_deref(),
        Some("A"),
        "home is still A"
    );
    assert_eq!(
        upstream_header(&r, "x-unit-crossed-from"),
        None,
        "pinned is not a crossing"
    );

    let r = u.as_user("7500", "/local/x").await;
    assert_eq!(r.unit(), "A", "local placement: this gateway's unit");
    assert_eq!(upstream_header(&r, "x-unit-home").as_deref(), Some("B"));
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_unit_headers_from_untrusted_peers_are_dropped() {
    let u = start("", "").await;
    let r =
        u.gw.send(
            u.gw.client
                .get(u.gw.url("/x"))
                .header("x-user-id", "42")
                .header("x-unit-home", "B")
                .header("X-Unit-Hops", "7")
                .header("x-unit-crossed-from", "B")
                .header("x-unit-slot", "9999"),
        )
        .await;
    assert_eq!(r.unit(), "A");
    assert_eq!(upstream_header(&r, "x-unit-home").as_deref(), Some("A"));
    assert_eq!(upstream_header(&r, "x-unit-hops").as_deref(), Some("1"));
    assert_eq!(upstream_header(&r, "x-unit-slot").as_deref(), Some("42"));
    assert_eq!(upstream_header(&r, "x-unit-crossed-from"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_slots_refuse_writes_but_serve_reads() {
    let u = start("", "").await;
    let post = |user: &str| {
        u.gw.client
            .post(u.gw.url("/x"))
            .header("x-user-id", user)
            .body("w")
    };
    let r = u.gw.send(post("7050")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "write_forbidden");
    assert!(r
        .header("retry-after")
        .is_some_and(|v| v.parse::<u32>().is_ok_and(|s| s >= 1)));
    assert!(
        stamped(&r).is_some(),
        "the cookie reaches locally generated responses"
    );
    for m in ["PUT", "DELETE", "PATCH"] {
        let req =
            u.gw.client
                .request(m.parse().expect("method"), u.gw.url("/x"));
        let r = u.gw.send(req.header("x-user-id", "7099")).await;
        assert_eq!(r.status, 503, "{m}");
    }
    assert_eq!(u.as_user("7050", "/x").await.status, 200, "reads pass");
    let r =
        u.gw.send(u.gw.client.head(u.gw.url("/x")).header("x-user-id", "7050"))
            .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        u.gw.send(post("7100")).await.status,
        200,
        "outside the range"
    );
    let served_b: u64 = u.b.iter().map(EchoServer::served).sum();
    assert_eq!(served_b, 3, "refused writes never reach a backend");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_rules_for_failures_after_send() {
    // One instance per unit so the retry has to cross.
    let (a1, b1) = (backend("A", "a1").await, backend("B", "b1").await);
    let gw = GatewayProc::start(&config(&[&a1], &[&b1], "", "")).await;
    a1.set_status(503);
    let send = |req: reqwest::RequestBuilder| gw.send(req.header("x-user-id", "42"));

    let r = send(gw.client.get(gw.url("/x"))).await;
    assert_eq!((r.status, r.unit()), (200, "B"), "GET retried past a 503");
    assert_eq!(
        upstream_header(&r, "x-unit-crossed-from").as_deref(),
        Some("A")
    );

    let r = send(gw.client.post(gw.url("/x")).body("once")).await;
    assert_eq!(
        (r.status, r.unit()),
        (503, "A"),
        "POST not retried: backend's answer passes"
    );

    let r = send(
        gw.client
            .post(gw.url("/x"))
            .header("idempotency-key", "k-1")
            .body("safe"),
    )
    .await;
    assert_eq!(
        (r.status, r.unit()),
        (200, "B"),
        "POST with Idempotency-Key retried"
    );
    assert_eq!(r.json()["body_bytes"], 4, "body replayed on the retry");

    // Budget exhausted (retries = 1): both units answer 502, the last answer passes.
    b1.set_status(502);
    let r = send(gw.client.get(gw.url("/x"))).await;
    assert_eq!((r.status, r.unit()), (502, "B"));
    assert_eq!(a1.served(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn home_unit_loss_under_load_crosses_with_zero_errors() {
    let u = Arc::new(start("", "").await);
    let stop = Arc::new(AtomicBool::new(false));
    let crossed = Arc::new(AtomicU64::new(0));
    // (method, what went wrong) for every client-visible failure.
    let failures = Arc::new(std::sync::Mutex::new(Vec::<(&str, String)>::new()));
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let (u, stop, crossed, failures) =
            (u.clone(), stop.clone(), crossed.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                i += 1;
                // Users of unit A; odd workers send POSTs.
                let user = format!("{}", (w * 1000 + i) % 5000);
                let (method, req) = if w % 2 == 0 {
                    ("GET", u.gw.client.get(u.gw.url("/x")))
                } else {
                    ("POST", u.gw.client.post(u.gw.url("/x")).body("order"))
                };
                let outcome = try_send(req.header("x-user-id", user)).await;
                match outcome {
                    Ok(r) if r.status == 200 => {
                        if r.unit() == "B" {
                            assert_eq!(
                                upstream_header(&r, "x-unit-crossed-from").as_deref(),
                                Some("A")
                            );
                            assert_eq!(upstream_header(&r, "x-unit-home").as_deref(), Some("A"));
                            crossed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(r) => failures
                        .lock()
                        .expect("lock")
                        .push((method, format!("{} {}", r.status, r.body))),
                    Err(e) => failures.lock().expect("lock").push((method, e.to_string())),
                }
            }
        }));
    }
    eventually("steady traffic in A", Duration::from_secs(5), || async {
        (u.a.iter().map(EchoServer::served).sum::<u64>() > 100).then_some(())
    })
    .await;
    assert_eq!(
        crossed.load(Ordering::Relaxed),
        0,
        "nothing crosses while A is healthy"
    );
    for a in &u.a {
        a.stop();
    }
    eventually(
        "300 requests served by B",
        Duration::from_secs(10),
        || async { (crossed.load(Ordering::Relaxed) > 300).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let failures = failures.lock().expect("lock").clone();
    let gets: Vec<_> = failures.iter().filter(|(m, _)| *m == "GET").collect();
    assert!(
        gets.is_empty(),
        "GETs failed during the loss of A: {gets:?}"
    );
    // A POST already sent to an instance when it died cannot be replayed
    // safely: at most the one in flight per POST worker may fail.
    assert!(
        failures.len() <= 2,
        "POST failures beyond those in flight: {failures:?}"
    );
    assert!(u.b.iter().all(|b| b.served() > 0), "both B instances serve");
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_limit_stops_a_second_crossing() {
    let u = start("max_hops = 1", "trusted_peers = [\"127.0.0.1/32\"]").await;
    let hop = |user: &str, hops: &str| {
        u.gw.client
            .get(u.gw.url("/x"))
            .header("x-user-id", user)
            .header("x-unit-hops", hops)
    };
    // A trusted peer with hops below the limit: normal routing to home B.
    let r = u.gw.send(hop("7500", "0")).await;
    assert_eq!(r.unit(), "B");
    assert_eq!(upstream_header(&r, "x-unit-hops").as_deref(), Some("1"));
    // At the limit: served in this gateway's own unit, never crossing again.
    let r = u.gw.send(hop("7500", "1")).await;
    assert_eq!(r.unit(), "A");
    assert_eq!(upstream_header(&r, "x-unit-hops").as_deref(), Some("2"));
    assert_eq!(
        upstream_header(&r, "x-unit-crossed-from").as_deref(),
        Some("B")
    );
    // Own unit gone: fail rather than ping-pong back to B.
    for a in &u.a {
        a.stop();
    }
    // Stopping is asynchronous: wait until A's instances refuse connections.
    for a in &u.a {
        unitgate_tests::eventually("A's instance is down", Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(a.addr)
                .await
                .is_err()
                .then_some(())
        })
        .await;
    }
    let r = u.gw.send(hop("42", "1")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "unavailable");
    assert!(
        u.b.iter().all(|b| b.served() <= 1),
        "no request ping-ponged to B"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exposed_unit_headers_on_responses() {
    let u = start("", "expose_unit_headers = true").await;
    let r = u.as_user("42", "/pinned/x").await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, u.gw.stderr());
    assert_eq!(r.header("x-unit-home"), Some("A"));
    assert_eq!(r.header("x-unit-served"), Some("B"));
    // A degraded answer still names the home unit; nothing served it.
    for s in u.a.iter().chain(&u.b) {
        s.stop();
    }
    let r =
        unitgate_tests::eventually("every instance is down", Duration::from_secs(5), || async {
            let r = u.as_user("42", "/pinned/x").await;
            (r.status == 503).then_some(r)
        })
        .await;
    assert_eq!(r.header("x-unit-home"), Some("A"));
    assert_eq!(r.header("x-unit-served"), None);
    assert!(r.header("x-unit-degraded").is_some());
    let plain = start("", "").await;
    let r = plain.as_user("42", "/x").await;
    assert_eq!(r.header("x-unit-home"), None);
}
