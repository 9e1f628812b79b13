//! `[[services]]`: instances, lb, timeouts, health, outlier, circuit breaker.

use std::time::Duration;

use super::*;
use crate::raw::RawUnit;
use crate::{HealthKind, LbPolicy};

fn with_units_ab() -> RawConfig {
    let mut raw = minimal();
    raw.units[0].slots = vec!["0-4999".into()];
    raw.units.push(from_toml::<RawUnit>(
        "name = \"B\"\nslots = [\"5000-9999\"]",
    ));
    raw
}

fn set_instances(raw: &mut RawConfig, unit: &str, addrs: &[&str]) {
    raw.services[0]
        .instances
        .insert(unit.into(), addrs.iter().map(|a| (*a).into()).collect());
}

#[test]
fn instances_only_units_with_instances_in_unit_order() {
    let mut raw = with_units_ab();
    raw.services[0].instances.clear();
    set_instances(&mut raw, "B", &["10.0.0.2:80", "[::1]:81"]);
    set_instances(&mut raw, "A", &[]);
    let c = valid(&raw);
    let i = &c.services[0].instances;
    assert_eq!(i.len(), 1);
    assert_eq!((i[0].unit, i[0].instances.len()), (1, 2));
    set_instances(&mut raw, "A", &["10.0.0.1:80"]);
    let units: Vec<usize> = valid(&raw).services[0]
        .instances
        .iter()
        .map(|i| i.unit)
        .collect();
    assert_eq!(units, [0, 1]);
}

#[test]
fn instances_under_unknown_unit() {
    let mut raw = minimal();
    set_instances(&mut raw, "Z", &["127.0.0.1:1"]);
    assert_only_error(&raw, "services[0].instances.Z", "unknown unit \"Z\"");
}

#[test]
fn instance_addresses() {
    let mut raw = minimal();
    set_instances(
        &mut raw,
        "A",
        &[
            "127.0.0.1:1",
            "orders.internal:8080",
            "orders.internal:8080",
        ],
    );
    assert_only_error(&raw, "services[0].instances.A[2]", "duplicate instance");
    set_instances(&mut raw, "A", &["127.0.0.1"]);
    assert_only_error(&raw, "services[0].instances.A[0]", "expected IP:port");
    set_instances(&mut raw, "A", &["127.0.0.1:1", "127.0.0.1:1"]);
    assert_only_error(&raw, "services[0].instances.A[1]", "duplicate instance");
}

#[test]
fn service_without_instances() {
    let mut raw = minimal();
    raw.services[0].instances.clear();
    assert_only_error(&raw, "services[0].instances", "no instances");
    set_instances(&mut raw, "A", &[]);
    assert_only_error(&raw, "services[0].instances", "no instances");
}

#[test]
fn service_names() {
    let mut raw = minimal();
    let dup = raw.services[0].clone();
    raw.services.push(dup);
    assert_only_error(
        &raw,
        "services[1].name",
        "duplicate service \"echo\" (also services[0])",
    );
    raw.services[1].name = "echo/2".into();
    assert_only_error(&raw, "services[1].name", "invalid name");
}

#[test]
fn lb_and_timeouts() {
    let mut raw = minimal();
    raw.services[0].lb = "consistent_hash".into();
    assert_eq!(valid(&raw).services[0].lb, LbPolicy::ConsistentHash);
    raw.services[0].lb = "least_conn".into();
    assert_eq!(valid(&raw).services[0].lb, LbPolicy::LeastConn);
    raw.services[0].lb = "ip_hash".into();
    assert_only_error(
        &raw,
        "services[0].lb",
        "expected one of round_robin, random, consistent_hash, least_conn",
    );
    raw.services[0].lb = "random".into();
    raw.services[0].connect_timeout_ms = 0;
    assert_only_error(&raw, "services[0].connect_timeout_ms", "at least 1");
    raw.services[0].connect_timeout_ms = 1;
    raw.services[0].read_timeout_ms = 0;
    assert_only_error(&raw, "services[0].read_timeout_ms", "at least 1");
}

fn health(text: &str) -> RawConfig {
    let mut raw = minimal();
    raw.services[0].health = Some(from_toml(text));
    raw
}

#[test]
fn health_rules() {
    assert_eq!(
        valid(&health("kind = \"tcp\"")).services[0].health.kind,
        HealthKind::Tcp
    );
    assert_eq!(
        valid(&health("kind = \"none\"")).services[0].health.kind,
        HealthKind::None
    );
    let c = valid(&health("path = \"/ready\"\ninterval_ms = 10"));
    assert_eq!(
        c.services[0].health.kind,
        HealthKind::Http {
            path: "/ready".into()
        }
    );
    assert_eq!(c.services[0].health.interval, Duration::from_millis(10));

    let h = "services[0].health";
    assert_only_error(
        &health("kind = \"grpc\""),
        &format!("{h}.kind"),
        "expected one of http, tcp, none",
    );
    assert_only_error(
        &health("path = \"healthz\""),
        &format!("{h}.path"),
        "must start with \"/\"",
    );
    assert_only_error(
        &health("interval_ms = 9"),
        &format!("{h}.interval_ms"),
        "at least 10",
    );
    assert_only_error(
        &health("interval_ms = 0"),
        &format!("{h}.interval_ms"),
        "at least 1",
    );
    assert_only_error(
        &health("timeout_ms = 0"),
        &format!("{h}.timeout_ms"),
        "at least 1",
    );
    assert_only_error(
        &health("unhealthy_after = 0"),
        &format!("{h}.unhealthy_after"),
        "at least 1",
    );
    assert_only_error(
        &health("healthy_after = 0"),
        &format!("{h}.healthy_after"),
        "at least 1",
    );
}

#[test]
fn outlier_rules() {
    let mut raw = minimal();
    raw.services[0].outlier = Some(from_toml("consecutive_failures = 0"));
    assert_only_error(
        &raw,
        "services[0].outlier.consecutive_failures",
        "at least 1",
    );
    raw.services[0].outlier = Some(from_toml("eject_ms = 0"));
    assert_only_error(&raw, "services[0].outlier.eject_ms", "at least 1");
}

#[test]
fn circuit_breaker_rules() {
    let mut raw = minimal();
    let cb = "services[0].circuit_breaker";
    for bad in ["0.0", "1.5", "-0.1", "nan"] {
        raw.services[0].circuit_breaker = Some(from_toml(&format!("failure_ratio = {bad}")));
        assert_only_error(
            &raw,
            &format!("{cb}.failure_ratio"),
            "greater than 0 and at most 1",
        );
    }
    raw.services[0].circuit_breaker = Some(from_toml("failure_ratio = 1.0"));
    valid(&raw);
    for key in ["min_requests", "window_ms", "open_ms"] {
        raw.services[0].circuit_breaker = Some(from_toml(&format!("{key} = 0")));
        assert_only_error(&raw, &format!("{cb}.{key}"), "at least 1");
    }
}
