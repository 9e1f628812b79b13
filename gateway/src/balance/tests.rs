use super::*;
use std::collections::HashMap;
use std::net::SocketAddr;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 1000 + i as u16))
}

fn group(lb: LbPolicy, weights: &[u32]) -> Group {
    let members: Vec<(usize, u32, SocketAddr)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (i, w, addr(i)))
        .collect();
    Group::new(lb, &members).expect("a member")
}

fn shares(g: &Group, n: usize, key: impl Fn(usize) -> Vec<u8>) -> HashMap<usize, usize> {
    let mut seen = HashMap::new();
    for i in 0..n {
        let m = g.pick(&key(i), |_| 0, |_| true).expect("a pick");
        *seen.entry(m).or_default() += 1;
    }
    seen
}

#[test]
fn smooth_schedule_is_nginx_s() {
    assert_eq!(&*smooth_schedule(&[3, 1]), [0, 0, 1, 0]);
    // nginx's own example: { 5, 1, 1 } -> a a b a c a a.
    assert_eq!(&*smooth_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    // Common factors are divided out: 6:2 is one 3:1 period.
    assert_eq!(&*smooth_schedule(&[6, 2]), [0, 0, 1, 0]);
    assert_eq!(&*smooth_schedule(&[1, 1, 1]), [0, 1, 2]);
}

#[test]
fn large_schedules_keep_the_shares() {
    let w: Vec<i64> = (0..300).map(|i| 1 + i % 100).collect();
    let period: i64 = w.iter().sum();
    let s = edf_schedule(&w, period as usize);
    let mut count = vec![0i64; w.len()];
    for &m in s.iter() {
        count[m as usize] += 1;
    }
    assert_eq!(count, w);
}

#[test]
fn weighted_random_follows_the_weights() {
    let g = group(LbPolicy::Random, &[3, 1]);
    let seen = shares(&g, 40_000, |_| Vec::new());
    let a = seen[&0] as f64 / 40_000.0;
    assert!((a - 0.75).abs() < 0.02, "{seen:?}");
}

#[test]
fn weighted_ring_gives_w_times_the_share_and_is_stable() {
    let g = group(LbPolicy::ConsistentHash, &[3, 1]);
    let key = |i: usize| format!("user-{i}").into_bytes();
    let seen = shares(&g, 20_000, key);
    let a = seen[&0] as f64 / 20_000.0;
    assert!((a - 0.75).abs() < 0.05, "{seen:?}");
    // The same key, the same member, every time.
    for i in 0..100 {
        let first = g.pick(&key(i), |_| 0, |_| true);
        assert_eq!(g.pick(&key(i), |_| 0, |_| true), first);
    }
    // Member 1 refused: its keys go elsewhere, member 0 keeps all of its own.
    for i in 0..2000 {
        let was = g.pick(&key(i), |_| 0, |_| true);
        let now = g.pick(&key(i), |_| 0, |m| m != 1);
        if was == Some(0) {
            assert_eq!(now, Some(0));
        }
        assert_eq!(now, Some(0));
    }
    assert_eq!(g.pick(b"k", |_| 0, |_| false), None);
}

#[test]
fn least_conn_ties_share_by_weight() {
    let g = group(LbPolicy::LeastConn, &[3, 1]);
    let seen = shares(&g, 20_000, |_| Vec::new());
    let a = seen[&0] as f64 / 20_000.0;
    assert!((a - 0.75).abs() < 0.02, "{seen:?}");
}

#[test]
fn least_conn_with_many_members_avoids_the_loaded_ones() {
    // 20 members; the first 10 carry 5 requests each, the rest none.
    let g = group(LbPolicy::LeastConn, &[1; 20]);
    let load = |m: usize| if m < 10 { 5 } else { 0 };
    let mut loaded = 0;
    for _ in 0..10_000 {
        let m = g.pick(b"", load, |_| true).expect("a pick");
        loaded += usize::from(m < 10);
    }
    // Two random picks both land in the loaded half a quarter of the time.
    assert!((2000..3000).contains(&loaded), "{loaded}");
    // When both random picks are out, the scan still finds one.
    assert_eq!(g.pick(b"", load, |m| m == 7), Some(7));
}

#[test]
fn every_policy_skips_unusable_members() {
    for lb in [
        LbPolicy::RoundRobin,
        LbPolicy::Random,
        LbPolicy::ConsistentHash,
        LbPolicy::LeastConn,
    ] {
        let g = group(lb, &[5, 1, 2]);
        for i in 0..200u32 {
            let m = g.pick(&i.to_be_bytes(), |_| 0, |m| m == 1);
            assert_eq!(m, Some(1), "{lb:?}");
        }
        assert_eq!(g.pick(b"", |_| 0, |_| false), None, "{lb:?}");
    }
}
