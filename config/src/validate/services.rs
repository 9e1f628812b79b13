//! `[[services]]`: instances per unit, load balancing, health, outlier, breaker.

use std::time::Duration;

use super::{check, Cx};
use crate::raw::{RawCircuitBreaker, RawHealth, RawOutlier, RawService};
use crate::typed::{
    CircuitBreaker, HealthCheck, HealthKind, Instance, LbPolicy, NamedInstance, Outlier, Service,
    UnitInstances,
};

/// The largest instance weight: a 100:1 split is already extreme.
pub(crate) const MAX_INSTANCE_WEIGHT: u32 = 100;

/// Health checks more often than this would be a load test, not a check.
const MIN_HEALTH_INTERVAL_MS: u64 = 10;

/// Re-resolving host names more often than this would load the resolver for nothing.
pub(crate) const MIN_DNS_REFRESH_MS: u64 = 100;

pub(super) fn services(cx: &mut Cx<'_>, raw: &[RawService]) -> Vec<Service> {
    raw.iter()
        .enumerate()
        .map(|(i, s)| service(cx, &format!("services[{i}]"), s))
        .collect()
}

fn service(cx: &mut Cx<'_>, base: &str, s: &RawService) -> Service {
    let lb = cx.errs.check(
        format!("{base}.lb"),
        check::choice(
            &s.lb,
            &[
                ("round_robin", LbPolicy::RoundRobin),
                ("random", LbPolicy::Random),
                ("consistent_hash", LbPolicy::ConsistentHash),
                ("least_conn", LbPolicy::LeastConn),
            ],
        ),
    );
    let connect_timeout = check::millis(
        &mut cx.errs,
        format!("{base}.connect_timeout_ms"),
        s.connect_timeout_ms,
    );
    let read_timeout = check::millis(
        &mut cx.errs,
        format!("{base}.read_timeout_ms"),
        s.read_timeout_ms,
    );

    let mut instances = Vec::new();
    let mut any_instance = false;
    for (unit_name, list) in &s.instances {
        let path = check::key_path(&format!("{base}.instances"), unit_name);
        let unit = cx.unit(&path, unit_name);
        let mut parsed: Vec<Instance> = Vec::new();
        let mut named: Vec<NamedInstance> = Vec::new();
        let mut all_backup = !list.is_empty();
        for (j, raw) in list.iter().enumerate() {
            any_instance = true;
            let apath = format!("{path}[{j}]");
            all_backup &= raw.backup;
            if !(1..=MAX_INSTANCE_WEIGHT).contains(&raw.weight) {
                cx.errs.push(
                    format!("{apath}.weight"),
                    format!("must be 1 to {MAX_INSTANCE_WEIGHT}"),
                );
            }
            // A table without `addr` reads as "".
            if raw.addr.is_empty() {
                cx.errs
                    .push(format!("{apath}.addr"), "required: the instance's IP:port");
                continue;
            }
            let Some(addr) = cx.errs.check(&apath, check::instance_addr(&raw.addr)) else {
                continue;
            };
            let (weight, backup) = (raw.weight.clamp(1, MAX_INSTANCE_WEIGHT), raw.backup);
            match addr {
                check::InstanceAddr::Ip(addr) if parsed.iter().any(|p| p.addr == addr) => {
                    cx.errs.push(
                        apath,
                        format!("duplicate instance {:?} in unit {unit_name:?}", raw.addr),
                    );
                }
                check::InstanceAddr::Ip(addr) => parsed.push(Instance {
                    addr,
                    weight,
                    backup,
                    resolved: false,
                }),
                check::InstanceAddr::Named(host, port)
                    if named
                        .iter()
                        .any(|n: &NamedInstance| n.host == host && n.port == port) =>
                {
                    cx.errs.push(
                        apath,
                        format!("duplicate instance {:?} in unit {unit_name:?}", raw.addr),
                    );
                }
                check::InstanceAddr::Named(host, port) => named.push(NamedInstance {
                    host,
                    port,
                    weight,
                    backup,
                }),
            }
        }
        if all_backup {
            cx.errs.push(
                &path,
                "every instance of the unit is a backup: at least one must not be",
            );
        }
        if let (Some(unit), false) = (unit, parsed.is_empty() && named.is_empty()) {
            instances.push(UnitInstances {
                unit,
                instances: parsed,
                named,
            });
        }
    }
    if !any_instance {
        cx.errs.push(
            format!("{base}.instances"),
            "service has no instances in any unit",
        );
    }
    instances.sort_by_key(|i| i.unit);
    if s.dns_refresh_ms < MIN_DNS_REFRESH_MS {
        cx.errs.push(
            format!("{base}.dns_refresh_ms"),
            format!("must be at least {MIN_DNS_REFRESH_MS}"),
        );
    }

    let (protocol, tls) = super::tls::upstream(&mut cx.errs, base, s, cx.base_dir);
    let idle_timeout = check::millis(
        &mut cx.errs,
        format!("{base}.idle_timeout_ms"),
        s.idle_timeout_ms,
    );
    Service {
        name: s.name.clone(),
        protocol,
        tls,
        idle_timeout,
        lb: lb.unwrap_or(LbPolicy::RoundRobin),
        connect_timeout,
        read_timeout,
        instances,
        health: match &s.health {
            Some(h) => health(cx, &format!("{base}.health"), h),
            None => no_health(),
        },
        outlier: s
            .outlier
            .as_ref()
            .map(|o| outlier(cx, &format!("{base}.outlier"), o)),
        circuit_breaker: s
            .circuit_breaker
            .as_ref()
            .map(|c| circuit_breaker(cx, &format!("{base}.circuit_breaker"), c)),
        dns_refresh: Duration::from_millis(s.dns_refresh_ms),
    }
}

/// What an absent `[services.health]` means: no active checks, every instance
/// counts as healthy until passive signals say otherwise.
fn no_health() -> HealthCheck {
    let d = RawHealth::default();
    HealthCheck {
        kind: HealthKind::None,
        interval: Duration::from_millis(d.interval_ms),
        timeout: Duration::from_millis(d.timeout_ms),
        unhealthy_after: d.unhealthy_after,
        healthy_after: d.healthy_after,
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Http,
    Tcp,
    None,
}

fn health(cx: &mut Cx<'_>, base: &str, h: &RawHealth) -> HealthCheck {
    let kind = cx.errs.check(
        format!("{base}.kind"),
        check::choice(
            &h.kind,
            &[
                ("http", Kind::Http),
                ("tcp", Kind::Tcp),
                ("none", Kind::None),
            ],
        ),
    );
    let kind = match kind {
        Some(Kind::Http) => {
            if !h.path.starts_with('/') {
                cx.errs
                    .push(format!("{base}.path"), "must start with \"/\"");
            } else if h.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                cx.errs.push(
                    format!("{base}.path"),
                    "must not contain spaces or control characters",
                );
            }
            HealthKind::Http {
                path: h.path.clone(),
            }
        }
        Some(Kind::Tcp) => HealthKind::Tcp,
        Some(Kind::None) | None => HealthKind::None,
    };
    let interval = check::millis(&mut cx.errs, format!("{base}.interval_ms"), h.interval_ms);
    if (1..MIN_HEALTH_INTERVAL_MS).contains(&h.interval_ms) {
        cx.errs.push(
            format!("{base}.interval_ms"),
            format!("must be at least {MIN_HEALTH_INTERVAL_MS}"),
        );
    }
    let timeout = check::millis(&mut cx.errs, format!("{base}.timeout_ms"), h.timeout_ms);
    check::at_least_one(
        &mut cx.errs,
        format!("{base}.unhealthy_after"),
        h.unhealthy_after.into(),
    );
    check::at_least_one(
        &mut cx.errs,
        format!("{base}.healthy_after"),
        h.healthy_after.into(),
    );
    HealthCheck {
        kind,
        interval,
        timeout,
        unhealthy_after: h.unhealthy_after,
        healthy_after: h.healthy_after,
    }
}

fn outlier(cx: &mut Cx<'_>, base: &str, o: &RawOutlier) -> Outlier {
    check::at_least_one(
        &mut cx.errs,
        format!("{base}.consecutive_failures"),
        o.consecutive_failures.into(),
    );
    Outlier {
        consecutive_failures: o.consecutive_failures,
        eject: check::millis(&mut cx.errs, format!("{base}.eject_ms"), o.eject_ms),
    }
}

fn circuit_breaker(cx: &mut Cx<'_>, base: &str, c: &RawCircuitBreaker) -> CircuitBreaker {
    // Written so that NaN fails too.
    if !(c.failure_ratio > 0.0 && c.failure_ratio <= 1.0) {
        cx.errs.push(
            format!("{base}.failure_ratio"),
            "must be greater than 0 and at most 1",
        );
    }
    check::at_least_one(
        &mut cx.errs,
        format!("{base}.min_requests"),
        c.min_requests.into(),
    );
    CircuitBreaker {
        failure_ratio: c.failure_ratio,
        min_requests: c.min_requests,
        window: check::millis(&mut cx.errs, format!("{base}.window_ms"), c.window_ms),
        open: check::millis(&mut cx.errs, format!("{base}.open_ms"), c.open_ms),
    }
}
