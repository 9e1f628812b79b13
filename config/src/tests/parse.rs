//! Parsing: the DESIGN.md example, defaults, unknown keys, TOML errors, load(),
//! round trips, error formatting.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::*;

const DESIGN: &str = include_str!("design.toml");

#[test]
fn design_example_parses_and_validates() {
    let c = match parse(DESIGN, no_dir()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.units.len(), 2);
    assert_eq!(c.gateway.unit, c.unit_id("A").expect("A"));
    assert_eq!(c.gateway.threads, 2);
    assert_eq!(
        c.gateway.trusted_peers,
        vec!["127.0.0.1/32".parse::<ipnet::IpNet>().expect("net")]
    );
    assert_eq!(
        c.admin.as_ref().map(|a| a.token.as_str()),
        Some("change-me")
    );
    assert_eq!(
        c.routing.key,
        vec![
            KeySource::Jwt("sub".into()),
            KeySource::Header("x-user-id".into()),
            KeySource::Cookie("uid".into()),
            KeySource::Query("uid".into()),
        ]
    );
    assert_eq!(
        c.routing.signing_keys.get("k1").map(Vec::as_slice),
        Some(&b"a-long-random-secret"[..])
    );
    assert_eq!(c.routing.active_key.as_deref(), Some("k1"));
    let b = c.unit_id("B").expect("B");
    assert_eq!(c.units[0].failover, vec![b]);
    assert_eq!(
        c.units[1].slots,
        vec![SlotRange {
            start: 5000,
            end: 9999
        }]
    );
    let s = &c.services[0];
    assert_eq!(s.connect_timeout, Duration::from_millis(200));
    assert_eq!(
        s.instances_in(b).iter().map(|i| i.addr).collect::<Vec<_>>(),
        [
            "127.0.0.1:9101".parse::<std::net::SocketAddr>().expect("a"),
            "127.0.0.1:9102".parse().expect("a")
        ]
    );
    assert_eq!(
        s.health.kind,
        HealthKind::Http {
            path: "/healthz".into()
        }
    );
    assert_eq!(s.outlier.as_ref().map(|o| o.consecutive_failures), Some(3));
    assert_eq!(s.circuit_breaker.as_ref().map(|b| b.min_requests), Some(20));
    let r = &c.routes[0];
    assert_eq!(r.path_prefix, "/api/orders");
    assert_eq!(r.jwt, c.jwt_id("main"));
    assert_eq!(
        r.rate_limits[0].rate,
        Rate {
            count: 100,
            per: Duration::from_secs(1)
        }
    );
    assert_eq!(r.rate_limits[0].scope, LimitScope::Global);
    let f = r.fallback.as_ref().expect("fallback");
    assert_eq!(f.body, br#"{"items":[],"degraded":true}"#);
    assert_eq!(
        f.headers,
        vec![("cache-control".to_owned(), "no-store".to_owned())]
    );
    assert_eq!(
        c.jwt[0].forward_claims,
        vec![("sub".to_owned(), "x-user-id".to_owned())]
    );
    assert_eq!(c.jwt[0].algorithms, vec![JwtAlgorithm::HS256]);
    let redis = c.redis.as_ref().expect("redis");
    assert_eq!((redis.on_failure, redis.fleet_size), (OnFailure::Local, 1));
}

#[test]
fn defaults_are_applied() {
    let mut raw = minimal();
    raw.admin = Some(from_toml("token = \"t\""));
    raw.services[0].health = Some(from_toml(""));
    raw.services[0].outlier = Some(from_toml(""));
    raw.services[0].circuit_breaker = Some(from_toml(""));
    raw.routes[0].rate_limits = vec![from_toml("rate = \"5/m\"")];
    raw.routes[0].fallback = Some(from_toml(""));
    raw.jwt.insert(
        "j".into(),
        from_toml("algorithms = [\"HS256\"]\nsecret = \"s\""),
    );
    raw.redis = Some(from_toml("url = \"redis://localhost\""));
    let c = valid(&raw);

    let g = &c.gateway;
    assert_eq!(g.listen, vec!["127.0.0.1:8080".parse().expect("addr")]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(g.threads, cores);
    assert_eq!(g.grace_period, Duration::from_secs(10));
    assert!(g.trusted_peers.is_empty() && !g.expose_unit_headers);
    let a = c.admin.as_ref().expect("admin");
    assert_eq!(a.listen, "127.0.0.1:9900".parse().expect("addr"));

    let r = &c.routing;
    assert_eq!((r.slots, r.epoch, r.max_hops), (10_000, 1, 1));
    assert_eq!(r.key, vec![KeySource::Header("x-user-id".into())]);
    assert_eq!(r.cookie, "ug_route");
    assert_eq!(r.cookie_ttl, Duration::from_secs(3600));
    assert!(!r.cookie_secure && r.signing_keys.is_empty() && r.active_key.is_none());
    assert!(r.forbidden_writes.is_empty() && r.overrides.is_empty());

    let u = &c.units[0];
    assert_eq!((u.state, u.failover.len()), (UnitState::Active, 0));

    let s = &c.services[0];
    assert_eq!(s.lb, LbPolicy::RoundRobin);
    assert_eq!(s.connect_timeout, Duration::from_millis(1000));
    assert_eq!(s.read_timeout, Duration::from_millis(30_000));
    let h = &s.health;
    assert_eq!(
        h.kind,
        HealthKind::Http {
            path: "/healthz".into()
        }
    );
    assert_eq!(
        (h.interval, h.timeout),
        (Duration::from_millis(5000), Duration::from_millis(1000))
    );
    assert_eq!((h.unhealthy_after, h.healthy_after), (2, 1));
    let o = s.outlier.as_ref().expect("outlier");
    assert_eq!(
        (o.consecutive_failures, o.eject),
        (5, Duration::from_millis(30_000))
    );
    let b = s.circuit_breaker.as_ref().expect("breaker");
    assert_eq!((b.failure_ratio, b.min_requests), (0.5, 20));
    assert_eq!(
        (b.window, b.open),
        (Duration::from_millis(10_000), Duration::from_millis(5000))
    );

    let rt = &c.routes[0];
    assert!(rt.hosts.is_empty() && rt.methods.is_empty() && !rt.strip_prefix);
    assert_eq!(rt.path_prefix, "/");
    assert_eq!(rt.placement, Placement::Sharded);
    assert_eq!(
        (rt.timeout, rt.retries, rt.max_inflight),
        (Duration::from_millis(30_000), 1, 0)
    );
    assert_eq!(rt.jwt, None);
    let l = &rt.rate_limits[0];
    assert_eq!(
        (&l.key, l.burst, l.scope),
        (&LimitKey::User, 0, LimitScope::Local)
    );
    let f = rt.fallback.as_ref().expect("fallback");
    assert_eq!(
        (f.status, f.content_type.as_str()),
        (503, "application/json")
    );
    assert!(f.body.is_empty() && f.headers.is_empty());

    let j = &c.jwt[0];
    assert_eq!(j.leeway, Duration::from_secs(30));
    assert!(j.issuer.is_none() && j.audience.is_none() && j.forward_claims.is_empty());

    let rd = c.redis.as_ref().expect("redis");
    assert_eq!(
        (rd.timeout, rd.on_failure, rd.fleet_size),
        (Duration::from_millis(50), OnFailure::Local, 1)
    );
}

#[test]
fn absent_optional_sections() {
    let c = valid(&minimal());
    assert!(c.admin.is_none() && c.redis.is_none() && c.jwt.is_empty());
    let s = &c.services[0];
    assert_eq!(s.health.kind, HealthKind::None);
    assert!(s.outlier.is_none() && s.circuit_breaker.is_none());
    assert!(c.routes[0].fallback.is_none());
}

/// `parse_raw` alone: `parse` would add the validation errors of these
/// fragments (no units, no routes) to the one parse error under test.
#[track_caller]
fn assert_parse_error(text: &str, path: &str, needle: &str) {
    match parse_raw(text) {
        Ok(_) => panic!("expected a parse error"),
        Err(e) => {
            assert_eq!(e.len(), 1, "{e}");
            assert_eq!(e.0[0].path, path, "{e}");
            assert!(e.0[0].message.contains(needle), "{e}");
        }
    }
}

#[test]
fn unknown_keys_are_errors_everywhere() {
    // The path names the unknown key itself.
    let cases: &[(&str, &str)] = &[
        (
            "[gateway]\nunit = \"A\"\nlisten_on = 1\n",
            "gateway.listen_on",
        ),
        (
            "[gateway]\nunit = \"A\"\n[admin]\ntokn = \"x\"\n",
            "admin.tokn",
        ),
        ("[routing]\nslot = 1\n", "routing.slot"),
        (
            "[[units]]\nname = \"A\"\nfailovers = []\n",
            "units[0].failovers",
        ),
        (
            "[[services]]\nname = \"s\"\nlb_policy = \"x\"\n",
            "services[0].lb_policy",
        ),
        (
            "[[services]]\nname = \"s\"\n[services.health]\nkinds = \"x\"\n",
            "services[0].health.kinds",
        ),
        (
            "[[services]]\nname = \"s\"\n[services.outlier]\neject = 1\n",
            "services[0].outlier.eject",
        ),
        (
            "[[services]]\nname = \"s\"\n[services.circuit_breaker]\nratio = 1\n",
            "services[0].circuit_breaker.ratio",
        ),
        (
            "[[routes]]\nname = \"r\"\nprefix = \"/\"\n",
            "routes[0].prefix",
        ),
        (
            "[[routes]]\nname = \"r\"\n[[routes.rate_limits]]\nrates = \"1/s\"\n",
            "routes[0].rate_limits[0].rates",
        ),
        (
            "[[routes]]\nname = \"r\"\n[routes.fallback]\nbodyfile = \"x\"\n",
            "routes[0].fallback.bodyfile",
        ),
        ("[jwt.main]\nalgorithm = \"HS256\"\n", "jwt.main.algorithm"),
        ("[redis]\nurls = \"x\"\n", "redis.urls"),
        ("[gatway]\nunit = \"A\"\n", "gatway"),
    ];
    for (text, path) in cases {
        assert_parse_error(text, path, "unknown field");
    }
}

#[test]
fn parse_errors_carry_line_and_column() {
    let text = "[gateway]\nunit = \"A\"\n\n[routing]\nslots = \"many\"\n";
    assert_parse_error(text, "routing.slots", "line 5, column 9");
    assert_parse_error("[gateway]\nunit = \"A\n", "", "line 2");
    assert_parse_error(
        "[gateway]\nunit = \"A\"\nthreads = -1\n",
        "gateway.threads",
        "line 3",
    );
}

#[test]
fn load_reads_the_file_and_resolves_files_next_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("degraded.json"), "{\"degraded\":true}").expect("write");
    let text = format!("{MINIMAL}[routes.fallback]\nbody_file = \"degraded.json\"\n");
    let file = dir.path().join("unitgate.toml");
    std::fs::write(&file, text).expect("write");
    let c = match load(&file) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let body = c.routes[0].fallback.as_ref().map(|f| f.body.clone());
    assert_eq!(body.as_deref(), Some(&b"{\"degraded\":true}"[..]));
}

#[test]
fn load_names_an_unreadable_file() {
    let e = load(Path::new("/nonexistent-unitgate/x.toml")).expect_err("missing file");
    assert_eq!(e.len(), 1);
    assert_eq!(e.0[0].path, "");
    assert!(
        e.to_string()
            .contains("cannot read /nonexistent-unitgate/x.toml"),
        "{e}"
    );
}

#[test]
fn raw_round_trips_through_toml_and_json() {
    let raw = parse_raw(DESIGN).expect("design parses");
    let toml_text = toml::to_string(&raw).expect("to toml");
    assert_eq!(parse_raw(&toml_text).expect("reparse"), raw, "{toml_text}");
    let json = serde_json::to_string(&raw).expect("to json");
    assert_eq!(
        serde_json::from_str::<RawConfig>(&json).expect("from json"),
        raw
    );
    // Unset optional keys are left out rather than written as null.
    assert!(!json.contains("null"), "{json}");
    // The typed config keeps the raw one for the admin API.
    assert_eq!(parse(DESIGN, no_dir()).expect("valid").raw, raw);
}

#[test]
fn json_rejects_unknown_keys_too() {
    let err = serde_json::from_str::<crate::raw::RawRoute>(r#"{"name":"r","servce":"x"}"#);
    assert!(err.is_err());
}

#[test]
fn error_display() {
    let e = ConfigErrors(vec![
        ConfigError::new("routes[2].service", "unknown service \"ordrs\""),
        ConfigError::new("", "cannot read x"),
    ]);
    assert_eq!(
        e.to_string(),
        "routes[2].service: unknown service \"ordrs\"\ncannot read x"
    );
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().starts_with("routes[2]"));
}
