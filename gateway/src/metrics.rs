//! Prometheus metrics: counted on the request path with atomics only, and
//! rendered in the text exposition format at scrape time.
//!
//! Per route, requests are counted in a table indexed by (status code, home
//! unit, served unit), allocated on the route's first request; the common
//! status codes have a fixed slot, rarer ones go to a small map under a lock
//! (a path that real traffic takes seldom). Everything else is read from the
//! live state when scraped: pools, circuits, crossings, reload counters.

use crate::clock;
use crate::control::ControlPlane;
use crate::pool::Outcome;
use crate::snapshot::Snapshot;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use unitgate_config::LimitScope;
use unitgate_plugins::breaker::State as BreakerState;
use unitgate_plugins::fallback::Reason;

/// Status codes with a fixed slot in the request table.
const CODES: [u16; 25] = [
    200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 412, 413,
    429, 500, 502, 503, 504, 0,
];

/// Upper bounds of the duration histogram, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Requests of one route, by code and units, and their durations.
pub struct RequestStats {
    /// Units known when the table was made: indices 0..units, `units` = none.
    units: usize,
    table: OnceLock<Box<[AtomicU64]>>,
    other: Mutex<BTreeMap<(u16, usize, usize), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl RequestStats {
    pub fn new(units: usize) -> Self {
        RequestStats {
            units,
            table: OnceLock::new(),
            other: Mutex::new(BTreeMap::new()),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn width(&self) -> usize {
        self.units + 1
    }

    /// Counts one finished request. `home`/`served` are unit ids, `None`
    /// when unit routing or proxying did not happen.
    pub fn record(&self, code: u16, home: Option<usize>, served: Option<usize>, took: Duration) {
        let w = self.width();
        let h = home.filter(|&u| u < self.units).unwrap_or(self.units);
        let s = served.filter(|&u| u < self.units).unwrap_or(self.units);
        match CODES.iter().position(|&c| c == code) {
            Some(slot) => {
                let table = self.table.get_or_init(|| {
                    (0..CODES.len() * w * w)
                        .map(|_| AtomicU64::new(0))
                        .collect()
                });
                table[(slot * w + h) * w + s].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let mut other = self.other.lock().unwrap_or_else(|p| p.into_inner());
                *other.entry((code, h, s)).or_default() += 1;
            }
        }
        let secs = took.as_secs_f64();
        if let Some(b) = BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Every non-zero (code, home, served, count).
    fn series(&self) -> Vec<(u16, usize, usize, u64)> {
        let w = self.width();
        let mut out = Vec::new();
        if let Some(table) = self.table.get() {
            for (i, c) in table.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((CODES[i / (w * w)], (i / w) % w, i % w, n));
                }
            }
        }
        let other = self.other.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(other.iter().map(|(&(c, h, s), &n)| (c, h, s, n)));
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole exposition. Label values are config names (validated to
/// `[A-Za-z0-9._-]`) and addresses, so they need no escaping.
pub fn render(snap: &Snapshot, control: &ControlPlane) -> String {
    let mut out = String::with_capacity(4096);
    let now = clock::now_ms();
    let unit = |u: usize| snap.unit_names.get(u).map_or("", |n| &**n);

    header(
        &mut out,
        "unitgate_requests_total",
        "counter",
        "Requests by route, status code, home and served unit.",
    );
    for (r, state) in snap.config.routes.iter().zip(&snap.routes) {
        for (code, home, served, n) in state.counters.requests.series() {
            let _ = writeln!(
                out,
                "unitgate_requests_total{{route=\"{}\",code=\"{code}\",home_unit=\"{}\",served_unit=\"{}\"}} {n}",
                r.name,
                unit(home),
                unit(served)
            );
        }
    }

    header(
        &mut out,
        "unitgate_request_duration_seconds",
        "histogram",
        "Request duration by route.",
    );
    for (r, state) in snap.config.routes.iter().zip(&snap.routes) {
        let stats = &state.counters.requests;
        let count = stats.count.load(Ordering::Relaxed);
        let mut cumulative = 0;
        for (le, b) in BUCKETS.iter().zip(&stats.buckets) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "unitgate_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}",
                r.name
            );
        }
        let sum = stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "unitgate_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}",
            r.name
        );
        let _ = writeln!(
            out,
            "unitgate_request_duration_seconds_sum{{route=\"{}\"}} {sum}",
            r.name
        );
        let _ = writeln!(
            out,
            "unitgate_request_duration_seconds_count{{route=\"{}\"}} {count}",
            r.name
        );
    }

    header(
        &mut out,
        "unitgate_upstream_attempts_total",
        "counter",
        "Upstream attempts by service, unit and outcome.",
    );
    header(
        &mut out,
        "unitgate_instance_healthy",
        "gauge",
        "1 when the instance passes its active check and is not ejected.",
    );
    header(
        &mut out,
        "unitgate_instance_backup",
        "gauge",
        "1 for a backup instance (serves only while no primary of its unit can).",
    );
    header(
        &mut out,
        "unitgate_instance_in_flight",
        "gauge",
        "Attempts on the instance not yet finished, from this gateway.",
    );
    header(
        &mut out,
        "unitgate_circuit_open",
        "gauge",
        "1 while the (service, unit) circuit is open or half-open.",
    );
    header(
        &mut out,
        "unitgate_cross_unit_total",
        "counter",
        "Requests served by a sibling of their placement unit.",
    );
    for (svc, state) in snap.config.services.iter().zip(&snap.services) {
        for (u, pool) in state.pools.by_unit.iter().enumerate() {
            let Some(pool) = pool else { continue };
            for o in Outcome::ALL {
                let _ = writeln!(
                    out,
                    "unitgate_upstream_attempts_total{{service=\"{}\",unit=\"{}\",outcome=\"{}\"}} {}",
                    svc.name,
                    unit(u),
                    o.as_str(),
                    pool.outcome_count(o)
                );
            }
            for a in &pool.addrs {
                let up = pool.is_healthy(a) && !pool.is_ejected(a, now);
                let _ = writeln!(
                    out,
                    "unitgate_instance_healthy{{service=\"{}\",unit=\"{}\",instance=\"{a}\"}} {}",
                    svc.name,
                    unit(u),
                    u8::from(up)
                );
            }
            for a in &pool.addrs {
                let labels = format!(
                    "service=\"{}\",unit=\"{}\",instance=\"{a}\"",
                    svc.name,
                    unit(u)
                );
                let backup = u8::from(pool.is_backup(a));
                let _ = writeln!(out, "unitgate_instance_backup{{{labels}}} {backup}");
                let n = pool.in_flight(a);
                let _ = writeln!(out, "unitgate_instance_in_flight{{{labels}}} {n}");
            }
            let open = pool
                .breaker
                .as_ref()
                .is_some_and(|b| b.state(now) != BreakerState::Closed);
            let _ = writeln!(
                out,
                "unitgate_circuit_open{{service=\"{}\",unit=\"{}\"}} {}",
                svc.name,
                unit(u),
                u8::from(open)
            );
        }
        for (from, to, n) in state.crossing_counts() {
            let _ = writeln!(
                out,
                "unitgate_cross_unit_total{{service=\"{}\",from=\"{}\",to=\"{}\"}} {n}",
                svc.name,
                unit(from),
                unit(to)
            );
        }
    }

    header(
        &mut out,
        "unitgate_degraded_total",
        "counter",
        "Degraded responses by route and reason.",
    );
    header(
        &mut out,
        "unitgate_write_forbidden_total",
        "counter",
        "Writes refused for a frozen slot, by route.",
    );
    header(
        &mut out,
        "unitgate_rate_limited_total",
        "counter",
        "Requests refused by a rate limit, by route and scope.",
    );
    for (r, state) in snap.config.routes.iter().zip(&snap.routes) {
        for reason in Reason::ALL {
            let n = state.counters.degraded[reason.index()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "unitgate_degraded_total{{route=\"{}\",reason=\"{}\"}} {n}",
                r.name,
                reason.as_str()
            );
        }
        let n = state.counters.write_forbidden.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "unitgate_write_forbidden_total{{route=\"{}\"}} {n}",
            r.name
        );
        for (i, scope) in [LimitScope::Local, LimitScope::Global].iter().enumerate() {
            if !r.rate_limits.iter().any(|l| l.scope == *scope) {
                continue;
            }
            let name = if i == 0 { "local" } else { "global" };
            let n = state.counters.rate_limited[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "unitgate_rate_limited_total{{route=\"{}\",scope=\"{name}\"}} {n}",
                r.name
            );
        }
    }

    header(
        &mut out,
        "unitgate_split_requests_total",
        "counter",
        "Requests of routes with splits, by the service chosen (gray release).",
    );
    for (r, state) in snap.config.routes.iter().zip(&snap.routes) {
        let Some(splits) = &state.splits else {
            continue;
        };
        for c in splits.choices.iter() {
            let _ = writeln!(
                out,
                "unitgate_split_requests_total{{route=\"{}\",service=\"{}\"}} {}",
                r.name,
                c.name,
                c.requests.load(Ordering::Relaxed)
            );
        }
    }

    header(
        &mut out,
        "unitgate_config_reloads_total",
        "counter",
        "Config reloads by result.",
    );
    let ok = control.reloads_ok.load(Ordering::Relaxed);
    let err = control.reloads_error.load(Ordering::Relaxed);
    let _ = writeln!(out, "unitgate_config_reloads_total{{result=\"ok\"}} {ok}");
    let _ = writeln!(
        out,
        "unitgate_config_reloads_total{{result=\"error\"}} {err}"
    );
    if let Some(tls) = &snap.config.tls {
        render_tls(&mut out, tls);
    }
    header(
        &mut out,
        "unitgate_access_log_dropped_total",
        "counter",
        "Access log lines dropped because the log writer could not keep up.",
    );
    let _ = writeln!(
        out,
        "unitgate_access_log_dropped_total {}",
        crate::access_log::dropped()
    );
    header(
        &mut out,
        "unitgate_accept_errors_total",
        "counter",
        "Failed accept() calls on the listeners (e.g. out of file descriptors).",
    );
    let _ = writeln!(
        out,
        "unitgate_accept_errors_total {}",
        crate::log_filter::accept_errors()
    );
    let (exported, full, failed) = crate::otlp::counts();
    header(
        &mut out,
        "unitgate_tracing_spans_exported_total",
        "counter",
        "Spans accepted by the OTLP receiver.",
    );
    let _ = writeln!(out, "unitgate_tracing_spans_exported_total {exported}");
    header(
        &mut out,
        "unitgate_tracing_spans_dropped_total",
        "counter",
        "Spans not exported: the export queue was full, or their export failed.",
    );
    let _ = writeln!(
        out,
        "unitgate_tracing_spans_dropped_total{{reason=\"queue_full\"}} {full}"
    );
    let _ = writeln!(
        out,
        "unitgate_tracing_spans_dropped_total{{reason=\"export_failed\"}} {failed}"
    );
    header(
        &mut out,
        "unitgate_config_epoch",
        "gauge",
        "The shard map's epoch.",
    );
    let _ = writeln!(out, "unitgate_config_epoch {}", snap.config.routing.epoch);
    header(
        &mut out,
        "unitgate_unit_state",
        "gauge",
        "1 for each unit's current state (active, draining or down).",
    );
    for u in &snap.config.units {
        use unitgate_config::UnitState;
        for (state, name) in [
            (UnitState::Active, "active"),
            (UnitState::Draining, "draining"),
            (UnitState::Down, "down"),
        ] {
            let _ = writeln!(
                out,
                "unitgate_unit_state{{unit=\"{}\",state=\"{name}\"}} {}",
                u.name,
                u8::from(u.state == state)
            );
        }
    }
    header(
        &mut out,
        "unitgate_redis_up",
        "gauge",
        "1 while the Redis of global limits answers (0 without [redis]).",
    );
    let up = snap.redis.as_ref().is_some_and(|r| r.is_up());
    let _ = writeln!(out, "unitgate_redis_up {}", u8::from(up));
    render_fleet(&mut out, control);
    out
}

/// The store, the fleet's gateways and the current migration.
/// Certificate expiry per SNI name (`default` for the entry without
/// names) and failed handshakes.
fn render_tls(out: &mut String, tls: &unitgate_config::Tls) {
    header(
        out,
        "unitgate_tls_cert_expiry_seconds",
        "gauge",
        "Seconds until the certificate served for the host expires (negative: expired).",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for c in &tls.certificates {
        let left = c.not_after - now;
        if c.hosts.is_empty() {
            let _ = writeln!(
                out,
                "unitgate_tls_cert_expiry_seconds{{host=\"default\"}} {left}"
            );
        }
        for h in &c.hosts {
            let _ = writeln!(
                out,
                "unitgate_tls_cert_expiry_seconds{{host=\"{h}\"}} {left}"
            );
        }
    }
    header(
        out,
        "unitgate_tls_handshake_errors_total",
        "counter",
        "Client TLS handshakes that failed (no certificate for the name, protocol mismatch, timeout).",
    );
    let n = crate::tls::HANDSHAKE_ERRORS.load(Ordering::Relaxed);
    let _ = writeln!(out, "unitgate_tls_handshake_errors_total {n}");
}

fn render_fleet(out: &mut String, control: &ControlPlane) {
    use crate::control::Source;
    use crate::fleet::migration::{State, CURRENT_STATE};
    let (up, in_sync, lagging) = match &control.source {
        Source::File => (true, 1, 0),
        Source::Etcd(src) => (
            src.store_up.load(Ordering::Relaxed),
            src.fleet_counts[0].load(Ordering::Relaxed),
            src.fleet_counts[1].load(Ordering::Relaxed),
        ),
    };
    header(
        out,
        "unitgate_store_up",
        "gauge",
        "1 while the config store answers (always 1 with store.kind = \"file\").",
    );
    let _ = writeln!(out, "unitgate_store_up {}", u8::from(up));
    header(
        out,
        "unitgate_fleet_gateways",
        "gauge",
        "Live gateways of the fleet by whether they run this gateway's config.",
    );
    let _ = writeln!(
        out,
        "unitgate_fleet_gateways{{state=\"in_sync\"}} {in_sync}"
    );
    let _ = writeln!(
        out,
        "unitgate_fleet_gateways{{state=\"lagging\"}} {lagging}"
    );
    header(
        out,
        "unitgate_migration_state",
        "gauge",
        "1 for the state of the running (or last seen) slot migration.",
    );
    let current = CURRENT_STATE.load(Ordering::Relaxed);
    for (i, state) in State::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "unitgate_migration_state{{state=\"{}\"}} {}",
            state.as_str(),
            u8::from(i == current)
        );
    }
    header(
        out,
        "unitgate_fleet_peer_epoch_ahead_total",
        "counter",
        "Requests from trusted peers with a newer epoch than ours (each triggers a store read).",
    );
    let _ = writeln!(
        out,
        "unitgate_fleet_peer_epoch_ahead_total {}",
        crate::fleet::PEER_EPOCH_AHEAD.load(Ordering::Relaxed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_code_and_units_with_a_rare_code_aside() {
        let s = RequestStats::new(2);
        s.record(200, Some(0), Some(1), Duration::from_millis(3));
        s.record(200, Some(0), Some(1), Duration::from_millis(30));
        s.record(404, None, None, Duration::from_micros(10));
        s.record(418, Some(1), Some(1), Duration::from_secs(20));
        let mut series = s.series();
        series.sort_unstable();
        assert_eq!(series, vec![(200, 0, 1, 2), (404, 2, 2, 1), (418, 1, 1, 1)]);
        assert_eq!(s.count.load(Ordering::Relaxed), 4);
        // 10 µs and 3 ms fall in the first buckets, 20 s in none (only +Inf).
        let buckets: u64 = s.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        assert_eq!(buckets, 3);
    }
}
