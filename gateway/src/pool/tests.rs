use super::*;

fn config(lb: &str, instances: &str) -> unitgate_config::Config {
    let text = format!(
        r#"
[gateway]
unit = "A"
listen = ["127.0.0.1:1"]
[routing]
allow_empty_routes = true
[[units]]
name = "A"
slots = ["0-9999"]
[[services]]
name = "s"
lb = "{lb}"
[services.instances]
A = {instances}
[services.outlier]
consecutive_failures = 1
eject_ms = 30000
[services.circuit_breaker]
min_requests = 100
"#
    );
    unitgate_config::parse(&text, std::path::Path::new(".")).expect("valid config")
}

fn pools_of(config: &unitgate_config::Config, prev: Option<&ServicePools>) -> ServicePools {
    let units = [Arc::from("A")];
    ServicePools::build(
        &config.services[0],
        &units,
        prev.map(|p| PrevPools {
            pools: p,
            unit_names: &units,
        }),
    )
}

fn pool_of(lb: &str, instances: &str) -> Arc<UnitPool> {
    let pools = pools_of(&config(lb, instances), None);
    pools.by_unit[0].clone().expect("unit A has a pool")
}

fn pool(lb: &str) -> Arc<UnitPool> {
    pool_of(
        lb,
        r#"["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"]"#,
    )
}

const POLICIES: [&str; 4] = ["round_robin", "random", "consistent_hash", "least_conn"];

fn port(a: Option<SocketAddr>) -> u16 {
    a.map_or(0, |a| a.port())
}

fn eject(p: &UnitPool, i: usize) {
    let cfg = unitgate_config::Outlier {
        consecutive_failures: 1,
        eject: Duration::from_secs(30),
    };
    assert!(p.live[i].passive.record(&cfg, 0, false, || true).is_some());
}

#[test]
fn round_robin_visits_every_instance_in_turn_and_skips_refused() {
    let p = pool("round_robin");
    let picks: Vec<u16> = (0..6).map(|_| port(p.select(b"", 0, |_| true))).collect();
    assert_eq!(picks[..3], picks[3..], "a cycle: {picks:?}");
    let mut cycle = picks[..3].to_vec();
    cycle.sort_unstable();
    assert_eq!(cycle, [1001, 1002, 1003]);
    for _ in 0..6 {
        assert_ne!(port(p.select(b"", 0, |a| a.port() != 1002)), 1002);
    }
    assert_eq!(p.select(b"", 0, |_| false), None);
}

#[test]
fn ejected_instances_are_skipped_by_every_policy() {
    for lb in POLICIES {
        let p = pool(lb);
        eject(&p, 1);
        for i in 0..20u8 {
            let got = port(p.select(&[i], 1, |_| true));
            assert!(got == 1001 || got == 1003, "{lb}: picked {got}");
        }
    }
}

#[test]
fn weighted_round_robin_interleaves_a_a_b_a() {
    let p = pool_of(
        "round_robin",
        r#"[{ addr = "127.0.0.1:1001", weight = 3 }, "127.0.0.1:1002"]"#,
    );
    let picks: Vec<u16> = (0..8).map(|_| port(p.select(b"", 0, |_| true))).collect();
    assert_eq!(picks, [1001, 1001, 1002, 1001, 1001, 1001, 1002, 1001]);
}

#[test]
fn backups_serve_only_when_no_primary_can() {
    let inst =
        r#"["127.0.0.1:1001", "127.0.0.1:1002", { addr = "127.0.0.1:1003", backup = true }]"#;
    for lb in POLICIES {
        let p = pool_of(lb, inst);
        assert!(p.is_backup(&"127.0.0.1:1003".parse().expect("addr")));
        for i in 0..50u8 {
            assert_ne!(port(p.select(&[i], 1, |_| true)), 1003, "{lb}");
        }
        // One primary tried, one ejected: the backup, before any crossing.
        eject(&p, 0);
        assert_eq!(port(p.select(b"k", 1, |_| true)), 1002, "{lb}");
        assert_eq!(port(p.select(b"k", 1, |a| a.port() != 1002)), 1003, "{lb}");
        assert_eq!(p.select(b"k", 1, |a| a.port() == 1001), None, "{lb}");
    }
}

#[test]
fn least_conn_avoids_the_busy_instance_and_counts_exactly() {
    let p = pool("least_conn");
    let guards: Vec<InFlight> = (0..3)
        .filter_map(|_| p.start_attempt(0))
        .chain(p.start_attempt(1))
        .collect();
    for _ in 0..30 {
        assert_eq!(port(p.select(b"", 0, |_| true)), 1003);
    }
    let a: SocketAddr = "127.0.0.1:1001".parse().expect("addr");
    assert_eq!(p.in_flight(&a), 3);
    drop(guards);
    assert_eq!(p.in_flight(&a), 0);
}

#[test]
fn least_conn_divides_by_weight() {
    // 2 in flight on weight 4 (0.5 each) beats 1 on weight 1.
    let p = pool_of(
        "least_conn",
        r#"[{ addr = "127.0.0.1:1001", weight = 4 }, "127.0.0.1:1002"]"#,
    );
    let _g: Vec<InFlight> = [0, 0, 1]
        .iter()
        .filter_map(|&i| p.start_attempt(i))
        .collect();
    for _ in 0..20 {
        assert_eq!(port(p.select(b"", 0, |_| true)), 1001);
    }
}

#[test]
fn a_weight_change_keeps_ejection_in_flight_and_breaker() {
    let before = config("least_conn", r#"["127.0.0.1:1001", "127.0.0.1:1002"]"#);
    let old = pools_of(&before, None);
    let old_pool = old.by_unit[0].clone().expect("pool");
    eject(&old_pool, 1);
    let guard = old_pool.start_attempt(0);
    old_pool.count(Outcome::Ok);
    let after = config(
        "least_conn",
        r#"[{ addr = "127.0.0.1:1001", weight = 5 }, { addr = "127.0.0.1:1002", backup = true }, "127.0.0.1:1004"]"#,
    );
    let new = pools_of(&after, Some(&old));
    let pool = new.by_unit[0].clone().expect("pool");
    assert!(
        !Arc::ptr_eq(&pool, &old_pool),
        "rebuilt for the new weights"
    );
    assert!(Arc::ptr_eq(&new.registry, &old.registry), "health kept");
    let (a1, a2) = (
        "127.0.0.1:1001".parse().expect("a"),
        "127.0.0.1:1002".parse().expect("a"),
    );
    assert_eq!(pool.weight(&a1), 5);
    assert!(pool.is_ejected(&a2, 1), "ejection carried over");
    assert!(pool.is_backup(&a2));
    assert_eq!(pool.in_flight(&a1), 1);
    drop(guard);
    assert_eq!(
        pool.in_flight(&a1),
        0,
        "the old guard releases the new count"
    );
    assert_eq!(pool.outcome_count(Outcome::Ok), 1);
    match (&pool.breaker, &old_pool.breaker) {
        (Some(b), Some(o)) => assert!(Arc::ptr_eq(b, o), "breaker carried over"),
        _ => panic!("both pools have a breaker"),
    }
    // Unchanged config: the very same pool.
    let again = pools_of(&after, Some(&new));
    assert!(Arc::ptr_eq(&again.by_unit[0].clone().expect("pool"), &pool));
}
