//! Rate limits through the real binary: local buckets, a global limit
//! shared by three gateways through a real redis-server, and Redis loss.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use unitgate_tests::{
    backend, eventually, metric, try_send, two_units_config, EchoServer, GatewayProc, RedisProc,
};

fn config(a: &EchoServer, limits: &str, redis: &str) -> String {
    let routes = format!(
        "[[routes]]\nname = \"api\"\npath_prefix = \"/\"\nservice = \"echo\"\nplacement = \"local\"\n{limits}\n{redis}"
    );
    two_units_config("", "", &format!("A = [\"{}\"]", a.addr), "", &routes)
}

#[tokio::test(flavor = "multi_thread")]
async fn local_limit_admits_rate_plus_burst_then_429s_with_headers() {
    let a = backend("A", "a1").await;
    let limits = "[[routes.rate_limits]]\nkey = \"user\"\nrate = \"5/m\"\nburst = 3\n";
    let gw = GatewayProc::start(&config(&a, limits, "")).await;
    let mut statuses = Vec::new();
    let mut last_ok = None;
    for _ in 0..9 {
        let r = gw.get_as("u1", "/x").await;
        statuses.push(r.status);
        if r.status == 200 {
            last_ok = Some(r);
        } else {
            let j = r.json();
            assert_eq!(j["error"], "rate_limited");
            assert!(j["request_id"].as_str().is_some_and(|s| !s.is_empty()));
            let retry: u64 = r
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            assert!((1..=12).contains(&retry), "one token every 12 s: {retry}");
            assert_eq!(r.header("ratelimit-limit"), Some("5"));
            assert_eq!(r.header("ratelimit-remaining"), Some("0"));
            assert!(r
                .header("ratelimit-reset")
                .is_some_and(|v| v.parse::<u64>().is_ok()));
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 200, 200, 429],
        "rate 5 + burst 3"
    );
    let ok = last_ok.expect("admitted");
    assert_eq!(
        ok.header("ratelimit-limit"),
        Some("5"),
        "admitted responses carry RateLimit-*"
    );
    assert_eq!(ok.header("ratelimit-remaining"), Some("0"));
    assert_eq!(a.served(), 8, "refused requests never reach the backend");
    // Another user has a bucket of its own.
    assert_eq!(gw.get_as("u2", "/x").await.status, 200);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "unitgate_rate_limited_total{route=\"api\",scope=\"local\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn header_and_route_keys() {
    let a = backend("A", "a1").await;
    let limits = "[[routes.rate_limits]]\nkey = \"header:x-api-key\"\nrate = \"2/m\"\n\
                  [[routes.rate_limits]]\nkey = \"route\"\nrate = \"5/m\"\n";
    let gw = GatewayProc::start(&config(&a, limits, "")).await;
    let with_key = |k: &str| {
        gw.client
            .get(gw.url("/x"))
            .header("x-api-key", k.to_owned())
    };
    assert_eq!(gw.send(with_key("k1")).await.status, 200);
    assert_eq!(gw.send(with_key("k1")).await.status, 200);
    assert_eq!(
        gw.send(with_key("k1")).await.status,
        429,
        "k1's bucket is empty"
    );
    assert_eq!(gw.send(with_key("k2")).await.status, 200);
    assert_eq!(gw.send(with_key("k3")).await.status, 200);
    // The route-wide bucket (5) is spent by now: 4 admitted + this one.
    assert_eq!(gw.send(with_key("k4")).await.status, 200);
    assert_eq!(gw.send(with_key("k5")).await.status, 429, "route bucket");
}

fn global_limit(redis: &RedisProc, on_failure: &str) -> (String, String) {
    (
        "[[routes.rate_limits]]\nkey = \"route\"\nrate = \"20/s\"\nscope = \"global\"\n".to_owned(),
        format!(
            "[redis]\nurl = \"{}\"\ntimeout_ms = 50\non_failure = \"{on_failure}\"\nfleet_size = 3\n",
            redis.url()
        ),
    )
}

/// Sends requests from `workers` tasks for `secs` seconds; returns (ok, 429, other, max latency).
async fn hammer(gws: &[Arc<GatewayProc>], secs: u64, workers: usize) -> (u64, u64, u64, Duration) {
    let (ok, limited, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let max = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let gw = gws[w % gws.len()].clone();
        let (ok, limited, other, max) = (ok.clone(), limited.clone(), other.clone(), max.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = try_send(gw.client.get(gw.url("/x"))).await;
                max.fetch_max(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                match r.map(|r| r.status) {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(429) => limited.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    (
        ok.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
        Duration::from_micros(max.load(Ordering::Relaxed)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn three_gateways_share_one_global_limit() {
    let redis = RedisProc::start().await;
    let a = backend("A", "a1").await;
    let (limits, redis_section) = global_limit(&redis, "local");
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(Arc::new(
            GatewayProc::start(&config(&a, &limits, &redis_section)).await,
        ));
    }
    for gw in &gws {
        eventually("redis up", Duration::from_secs(5), || async {
            (metric(&gw.metrics().await, "unitgate_redis_up") == Some(1.0)).then_some(())
        })
        .await;
    }
    // Drain the initial bucket (capacity 20), then measure 4 s of overload.
    hammer(&gws, 1, 6).await;
    let secs = 4;
    let (ok, limited, other, _) = hammer(&gws, secs, 6).await;
    let expected = 20.0 * secs as f64;
    eprintln!("global limit 20/s, 3 gateways, {secs} s: admitted {ok} (expected {expected}), refused {limited}");
    assert_eq!(other, 0);
    assert!(
        limited > ok,
        "the load must exceed the limit: {ok} ok, {limited} limited"
    );
    let ratio = ok as f64 / expected;
    assert!(
        (0.85..=1.15).contains(&ratio),
        "admitted {ok} for an expected {expected} ({ratio:.2})"
    );
}

/// Calls of the limit script Redis has served (`INFO commandstats`).
fn script_calls(redis: &RedisProc) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "info", "commandstats"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Three gateways share one global limit of `rate`/s (`fleet_size = 3`,
/// leased): after the initial bucket is drained, `secs` s of overload must
/// admit `rate × secs` within ±`tolerance`, with far fewer Redis calls than
/// requests. Returns (admitted, Redis calls).
async fn three_gateways_hold_a_leased_limit(rate: u32, secs: u64, tolerance: f64) -> (u64, u64) {
    let redis = RedisProc::start().await;
    let a = backend("A", "a1").await;
    let limits = format!(
        "[[routes.rate_limits]]\nkey = \"route\"\nrate = \"{rate}/s\"\nscope = \"global\"\n"
    );
    let section = format!(
        "[redis]\nurl = \"{}\"\ntimeout_ms = 50\non_failure = \"closed\"\nfleet_size = 3\n",
        redis.url()
    );
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(Arc::new(
            GatewayProc::start(&config(&a, &limits, &section)).await,
        ));
    }
    for gw in &gws {
        eventually("redis up", Duration::from_secs(5), || async {
            (metric(&gw.metrics().await, "unitgate_redis_up") == Some(1.0)).then_some(())
        })
        .await;
    }
    // Drain the initial bucket (capacity `rate`): overload until refusals
    // dominate, so the measured window starts from an empty bucket.
    for _ in 0..5 {
        let (ok, limited, _, _) = hammer(&gws, 1, 8).await;
        if limited > 5 * ok {
            break;
        }
    }
    let calls_before = script_calls(&redis);
    let (ok, limited, other, _) = hammer(&gws, secs, 8).await;
    let calls = script_calls(&redis) - calls_before;
    let expected = f64::from(rate) * secs as f64;
    eprintln!("global limit {rate}/s, 3 gateways, {secs} s: admitted {ok} (expected {expected}), refused {limited}, {calls} Redis calls");
    assert_eq!(other, 0);
    assert!(
        limited > ok,
        "the load must exceed the limit: {ok} ok, {limited} limited"
    );
    let ratio = ok as f64 / expected;
    assert!(
        (1.0 - tolerance..=1.0 + tolerance).contains(&ratio),
        "admitted {ok} for an expected {expected} ({ratio:.3}, allowed ±{tolerance})"
    );
    // Refusals are answered locally until a batch can exist again: Redis
    // sees a small fraction of the requests (without leasing, one call each).
    assert!(
        calls * 20 < ok + limited,
        "{calls} Redis calls for {ok} admitted and {limited} refused requests"
    );
    (ok, calls)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_global_limit_is_leased_in_batches_and_stays_accurate() {
    // 300/s over 3 gateways: each leases 10 tokens (100 ms of its share), so
    // admissions take fewer calls than there are admissions.
    let (ok, calls) = three_gateways_hold_a_leased_limit(300, 4, 0.15).await;
    assert!(calls < ok, "{calls} Redis calls for {ok} admitted requests");
}

/// Performance round 2's accuracy bar for leasing: 3 gateways sharing
/// 100/s admit 100/s ± 10 % over 10 s of overload. A gateway's share
/// leases 3 tokens at a time and, refused, asks again once a batch can
/// exist, so Redis calls come close to the admissions here (1 353 for 1 001
/// when written); what leasing saves is a call per refused request.
#[tokio::test(flavor = "multi_thread")]
async fn three_gateways_sharing_100_per_second_admit_it_within_10_percent() {
    three_gateways_hold_a_leased_limit(100, 10, 0.10).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_loss_falls_back_without_errors_or_delay_and_recovers() {
    let mut redis = RedisProc::start().await;
    let a = backend("A", "a1").await;
    let mut gws = Vec::new();
    for mode in ["local", "open", "closed"] {
        let (limits, section) = global_limit(&redis, mode);
        gws.push((
            mode,
            Arc::new(GatewayProc::start(&config(&a, &limits, &section)).await),
        ));
    }
    for (_, gw) in &gws {
        eventually("redis up", Duration::from_secs(5), || async {
            (metric(&gw.metrics().await, "unitgate_redis_up") == Some(1.0)).then_some(())
        })
        .await;
    }
    redis.kill();
    for (mode, gw) in &gws {
        // Let the first failed call mark Redis down, then measure 2 s.
        hammer(std::slice::from_ref(gw), 1, 2).await;
        let (ok, limited, other, max) = hammer(std::slice::from_ref(gw), 2, 2).await;
        eprintln!("redis down, on_failure={mode}: {ok} ok, {limited} refused, max latency {max:?}");
        assert_eq!(other, 0, "{mode}: no 5xx or transport errors");
        assert!(
            max < Duration::from_millis(200),
            "{mode}: a request waited {max:?} on a dead Redis"
        );
        match *mode {
            // rate / fleet_size = 20 / 3 -> 6/s locally.
            "local" => assert!(
                (6..=20).contains(&ok) && limited > 0,
                "local share: {ok} ok"
            ),
            "open" => assert_eq!(limited, 0, "open admits everything"),
            _ => assert_eq!(ok, 0, "closed refuses everything"),
        }
        assert_eq!(metric(&gw.metrics().await, "unitgate_redis_up"), Some(0.0));
    }
    redis.restart().await;
    for (mode, gw) in &gws {
        eventually("redis up again", Duration::from_secs(5), || async {
            (metric(&gw.metrics().await, "unitgate_redis_up") == Some(1.0)).then_some(())
        })
        .await;
        let (ok, limited, other, _) = hammer(std::slice::from_ref(gw), 1, 2).await;
        assert_eq!(other, 0);
        // A restarted Redis has full buckets: capacity 20 + 20/s for 1 s.
        assert!(
            ok <= 45 && limited > 0,
            "{mode}: the shared limit applies again ({ok} ok, {limited} refused in 1 s)"
        );
    }
}
