//! Prometheus metrics: counted on the request path with atomics only, and
//! exposed at scrape time through the `prometheus` crate's data model and
//! text encoder.
//!
//! The request path is not the crate's: per route, requests are counted in a
//! table indexed by (status code, home unit, served unit), allocated on the
//! route's first request; the common status codes have a fixed slot, rarer
//! ones go to a small map under a lock (a path that real traffic takes
//! seldom). That table *is* the set of pre-resolved label handles: a counted
//! request is one relaxed `fetch_add` on a slot found by arithmetic, where a
//! `prometheus` `IntCounterVec` would hash the label values and take a lock
//! on every `with_label_values`. The route counters, pools, circuits,
//! crossings and reload counters are likewise plain atomics of the live state.
//!
//! At scrape time [`families`] reads those atomics and the live state into
//! `prometheus::proto::MetricFamily` values (one [`Family`] builder: name,
//! help, type, then `sample(labels, value)` per series; histograms as real
//! histogram families: cumulative buckets, `+Inf`, `_sum`, `_count`), and
//! [`render`] encodes them with `prometheus::TextEncoder`, which also escapes
//! label values (ours are config names and addresses, which need none). No
//! registry is involved: there is nothing to register, the families are
//! built fresh from the state of each scrape. Labels keep the order given
//! here (the encoder does not sort them), so every series reads exactly as it
//! did when the exposition was written by hand. Values are `f64` as in the
//! data model: counts are exact up to 2^53. A family with no series yet (no
//! request on any route, no crossing) is left out whole, HELP and TYPE too:
//! the encoder refuses an empty family, as a registry's `gather` drops one.

use crate::clock;
use crate::control::ControlPlane;
use crate::pool::Outcome;
use crate::snapshot::Snapshot;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::TextEncoder;
use std::collections::BTreeMap;
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

/// A sample's value, as the data model's `f64` (`true` is 1).
trait Value {
    fn into_f64(self) -> f64;
}

impl Value for u64 {
    fn into_f64(self) -> f64 {
        self as f64
    }
}

impl Value for u32 {
    fn into_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Value for i64 {
    fn into_f64(self) -> f64 {
        self as f64
    }
}

impl Value for bool {
    fn into_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
}

/// One metric family being built; series in the order added, each with its
/// labels in the order given.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, kind: MetricType, help: &str) -> Self {
        let mut f = MetricFamily::default();
        f.set_name(name.to_owned());
        f.set_help(help.to_owned());
        f.set_field_type(kind);
        Family(f)
    }

    fn counter(name: &str, help: &str) -> Self {
        Self::new(name, MetricType::COUNTER, help)
    }

    fn gauge(name: &str, help: &str) -> Self {
        Self::new(name, MetricType::GAUGE, help)
    }

    fn histogram(name: &str, help: &str) -> Self {
        Self::new(name, MetricType::HISTOGRAM, help)
    }

    fn metric(&mut self, labels: &[(&str, &str)]) -> &mut Metric {
        let pairs = labels
            .iter()
            .map(|&(name, value)| {
                let mut p = LabelPair::default();
                p.set_name(name.to_owned());
                p.set_value(value.to_owned());
                p
            })
            .collect();
        let mut m = Metric::default();
        m.set_label(pairs);
        let metrics = self.0.mut_metric();
        metrics.push(m);
        let last = metrics.len() - 1;
        &mut metrics[last]
    }

    /// One series of a counter or gauge family.
    fn sample(&mut self, labels: &[(&str, &str)], value: impl Value) -> &mut Self {
        let value = value.into_f64();
        let kind = self.0.get_field_type();
        let m = self.metric(labels);
        if kind == MetricType::GAUGE {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        } else {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        }
        self
    }

    /// One series of a histogram family from its per-bucket (not cumulative)
    /// counts by upper bound; the encoder adds the `+Inf` bucket (= `count`).
    fn observed(
        &mut self,
        labels: &[(&str, &str)],
        buckets: impl IntoIterator<Item = (f64, u64)>,
        count: u64,
        sum: f64,
    ) -> &mut Self {
        let mut cumulative = 0;
        let buckets = buckets
            .into_iter()
            .map(|(le, n)| {
                cumulative += n;
                let mut b = Bucket::default();
                b.set_upper_bound(le);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        let mut h = Histogram::default();
        h.set_bucket(buckets);
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        self.metric(labels).set_histogram(h);
        self
    }
}

/// The whole exposition in the text format.
pub fn render(snap: &Snapshot, control: &ControlPlane) -> String {
    let mut out = String::with_capacity(8192);
    if let Err(e) = TextEncoder::new().encode_utf8(&families(snap, control), &mut out) {
        // Only a family without a name or series is refused; there is none.
        tracing::error!(error = %e, "encoding /metrics");
    }
    out
}

/// Every metric family with at least one series (the encoder refuses an
/// empty one, as a registry would leave it out), read from the live state.
pub fn families(snap: &Snapshot, control: &ControlPlane) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(32);
    requests(&mut out, snap);
    services(&mut out, snap);
    route_counters(&mut out, snap);
    splits(&mut out, snap);
    let mut reloads = Family::counter("unitgate_config_reloads_total", "Config reloads by result.");
    reloads
        .sample(
            &[("result", "ok")],
            control.reloads_ok.load(Ordering::Relaxed),
        )
        .sample(
            &[("result", "error")],
            control.reloads_error.load(Ordering::Relaxed),
        );
    out.push(reloads);
    if let Some(tls) = &snap.config.tls {
        self::tls(&mut out, tls);
    }
    process(&mut out, snap);
    fleet(&mut out, control);
    out.into_iter()
        .map(|f| f.0)
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

/// The name of unit `u` of `snap`, `""` for none.
fn unit_name(snap: &Snapshot, u: usize) -> &str {
    snap.unit_names.get(u).map_or("", |n| &**n)
}

/// Requests by code and units, and their durations, per route.
fn requests(out: &mut Vec<Family>, snap: &Snapshot) {
    let unit = |u| unit_name(snap, u);
    let mut total = Family::counter(
        "unitgate_requests_total",
        "Requests by route, status code, home and served unit.",
    );
    let mut duration = Family::histogram(
        "unitgate_request_duration_seconds",
        "Request duration by route.",
    );
    for (r, state) in snap.config.routes.iter().zip(&snap.routes) {
        let stats = &state.counters.requests;
        for (code, home, served, n) in stats.series() {
            let code = code.to_string();
            let labels = [
                ("route", &*r.name),
                ("code", &code),
                ("home_unit", unit(home)),
                ("served_unit", unit(served)),
            ];
            total.sample(&labels, n);
        }
        let buckets = BUCKETS
            .iter()
            .zip(&stats.buckets)
            .map(|(&le, b)| (le, b.load(Ordering::Relaxed)));
        duration.observed(
            &[("route", &r.name)],
            buckets,
            stats.count.load(Ordering::Relaxed),
            stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
    }
    out.extend([total, duration]);
}

/// Per (service, unit): attempts, instances, the circuit; crossings.
fn services(out: &mut Vec<Family>, snap: &Snapshot) {
    let now = clock::now_ms();
    let unit = |u| unit_name(snap, u);
    let mut attempts = Family::counter(
        "unitgate_upstream_attempts_total",
        "Upstream attempts by service, unit and outcome.",
    );
    let mut healthy = Family::gauge(
        "unitgate_instance_healthy",
        "1 when the instance passes its active check and is not ejected.",
    );
    let mut backup = Family::gauge(
        "unitgate_instance_backup",
        "1 for a backup instance (serves only while no primary of its unit can).",
    );
    let mut in_flight = Family::gauge(
        "unitgate_instance_in_flight",
        "Attempts on the instance not yet finished, from this gateway.",
    );
    let mut circuit = Family::gauge(
        "unitgate_circuit_open",
        "1 while the (service, unit) circuit is open or half-open.",
    );
    let mut crossed = Family::counter(
        "unitgate_cross_unit_total",
        "Requests served by a sibling of their placement unit.",
    );
    for (svc, state) in snap.config.services.iter().zip(&snap.services) {
        let service = &*svc.name;
        for (u, pool) in state.pools.by_unit.iter().enumerate() {
            let Some(pool) = pool else { continue };
            let unit = unit(u);
            for o in Outcome::ALL {
                let labels = [
                    ("service", service),
                    ("unit", unit),
                    ("outcome", o.as_str()),
                ];
                attempts.sample(&labels, pool.outcome_count(o));
            }
            for a in &pool.addrs {
                let addr = a.to_string();
                let labels = [("service", service), ("unit", unit), ("instance", &*addr)];
                healthy.sample(&labels, pool.is_healthy(a) && !pool.is_ejected(a, now));
                backup.sample(&labels, pool.is_backup(a));
                in_flight.sample(&labels, pool.in_flight(a));
            }
            let open = pool
                .breaker
                .as_ref()
                .is_some_and(|b| b.state(now) != BreakerState::Closed);
            circuit.sample(&[("service", service), ("unit", unit)], open);
        }
        for (from, to, n) in state.crossing_counts() {
            let labels = [("service", service), ("from", unit(from)), ("to", unit(to))];
            crossed.sample(&labels, n);
        }
    }
    out.extend([attempts, healthy, backup, in_flight, circuit, crossed]);
}

/// Degraded answers, frozen-slot refusals and rate limiting, per route.
fn route_counters(out: &mut Vec<Family>, snap: &Snapshot) {
    let mut degraded = Family::counter(
        "unitgate_degraded_total",
        "Degraded responses by route and reason.",
    );
    let mut forbidden = Family::counter(
        "unitgate_write_forbidden_total",
        "Writes refused for a frozen slot, by route.",
    );
    let mut limited = Family::counter(
        "unitgate_rate_limited_total",
        "Requests refused by a rate limit, by route and scope.",
    );
    for (r, state) in snap.config.routes.iter().zip(&snap.routes) {
        let c = &state.counters;
        let route = &*r.name;
        for reason in Reason::ALL {
            let n = c.degraded[reason.index()].load(Ordering::Relaxed);
            degraded.sample(&[("route", route), ("reason", reason.as_str())], n);
        }
        forbidden.sample(
            &[("route", route)],
            c.write_forbidden.load(Ordering::Relaxed),
        );
        let scopes = [(LimitScope::Local, "local"), (LimitScope::Global, "global")];
        for (i, (scope, name)) in scopes.iter().enumerate() {
            if r.rate_limits.iter().any(|l| l.scope == *scope) {
                let n = c.rate_limited[i].load(Ordering::Relaxed);
                limited.sample(&[("route", route), ("scope", name)], n);
            }
        }
    }
    out.extend([degraded, forbidden, limited]);
}

/// Requests of routes with splits by the service chosen.
fn splits(out: &mut Vec<Family>, snap: &Snapshot) {
    let mut chosen = Family::counter(
        "unitgate_split_requests_total",
        "Requests of routes with splits, by the service chosen (gray release).",
    );
    for (r, state) in snap.config.routes.iter().zip(&snap.routes) {
        let Some(splits) = &state.splits else {
            continue;
        };
        for c in splits.choices.iter() {
            let labels = [("route", &*r.name), ("service", &*c.name)];
            chosen.sample(&labels, c.requests.load(Ordering::Relaxed));
        }
    }
    out.push(chosen);
}

/// Certificate expiry per SNI name (`default` for the entry without
/// names) and failed handshakes.
fn tls(out: &mut Vec<Family>, tls: &unitgate_config::Tls) {
    let mut expiry = Family::gauge(
        "unitgate_tls_cert_expiry_seconds",
        "Seconds until the certificate served for the host expires (negative: expired).",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for c in &tls.certificates {
        let left = c.not_after - now;
        if c.hosts.is_empty() {
            expiry.sample(&[("host", "default")], left);
        }
        for h in &c.hosts {
            expiry.sample(&[("host", h)], left);
        }
    }
    let mut errors = Family::counter(
        "unitgate_tls_handshake_errors_total",
        "Client TLS handshakes that failed (no certificate for the name, protocol mismatch, timeout).",
    );
    errors.sample(&[], crate::tls::HANDSHAKE_ERRORS.load(Ordering::Relaxed));
    out.extend([expiry, errors]);
}

/// The access log, accept errors, span export, the shard map's epoch, the
/// units' states, Redis.
fn process(out: &mut Vec<Family>, snap: &Snapshot) {
    use unitgate_config::UnitState;
    let mut dropped = Family::counter(
        "unitgate_access_log_dropped_total",
        "Access log lines dropped because the log writer could not keep up.",
    );
    dropped.sample(&[], crate::access_log::dropped());
    let mut accept = Family::counter(
        "unitgate_accept_errors_total",
        "Failed accept() calls on the listeners (e.g. out of file descriptors).",
    );
    accept.sample(&[], crate::log_filter::accept_errors());
    let (exported, full, failed) = crate::otlp::counts();
    let mut spans = Family::counter(
        "unitgate_tracing_spans_exported_total",
        "Spans accepted by the OTLP receiver.",
    );
    spans.sample(&[], exported);
    let mut spans_dropped = Family::counter(
        "unitgate_tracing_spans_dropped_total",
        "Spans not exported: the export queue was full, or their export failed.",
    );
    spans_dropped
        .sample(&[("reason", "queue_full")], full)
        .sample(&[("reason", "export_failed")], failed);
    let mut epoch = Family::gauge("unitgate_config_epoch", "The shard map's epoch.");
    epoch.sample(&[], snap.config.routing.epoch);
    let mut units = Family::gauge(
        "unitgate_unit_state",
        "1 for each unit's current state (active, draining or down).",
    );
    for u in &snap.config.units {
        for (state, name) in [
            (UnitState::Active, "active"),
            (UnitState::Draining, "draining"),
            (UnitState::Down, "down"),
        ] {
            units.sample(&[("unit", &u.name), ("state", name)], u.state == state);
        }
    }
    let mut redis = Family::gauge(
        "unitgate_redis_up",
        "1 while the Redis of global limits answers (0 without [redis]).",
    );
    redis.sample(&[], snap.redis.as_ref().is_some_and(|r| r.is_up()));
    out.extend([dropped, accept, spans, spans_dropped, epoch, units, redis]);
}

/// The store, the fleet's gateways and the current migration.
fn fleet(out: &mut Vec<Family>, control: &ControlPlane) {
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
    let mut store = Family::gauge(
        "unitgate_store_up",
        "1 while the config store answers (always 1 with store.kind = \"file\").",
    );
    store.sample(&[], up);
    let mut gateways = Family::gauge(
        "unitgate_fleet_gateways",
        "Live gateways of the fleet by whether they run this gateway's config.",
    );
    gateways
        .sample(&[("state", "in_sync")], in_sync)
        .sample(&[("state", "lagging")], lagging);
    let mut migration = Family::gauge(
        "unitgate_migration_state",
        "1 for the state of the running (or last seen) slot migration.",
    );
    let current = CURRENT_STATE.load(Ordering::Relaxed);
    for (i, state) in State::ALL.iter().enumerate() {
        migration.sample(&[("state", state.as_str())], i == current);
    }
    let mut ahead = Family::counter(
        "unitgate_fleet_peer_epoch_ahead_total",
        "Requests from trusted peers with a newer epoch than ours (each triggers a store read).",
    );
    ahead.sample(&[], crate::fleet::PEER_EPOCH_AHEAD.load(Ordering::Relaxed));
    out.extend([store, gateways, migration, ahead]);
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

    const CONFIG: &str = r#"
[gateway]
unit = "A"
listen = ["127.0.0.1:1"]

[[units]]
name = "A"
slots = ["0-4999"]
failover = ["B"]

[[units]]
name = "B"
slots = ["5000-9999"]
failover = ["A"]

[[services]]
name = "echo"
[services.instances]
A = ["127.0.0.1:2"]
B = ["127.0.0.1:3", { addr = "127.0.0.1:4", backup = true }]
[services.circuit_breaker]
failure_ratio = 0.5
min_requests = 5
window_ms = 10000
open_ms = 5000

[[services]]
name = "echo-v2"
[services.instances]
B = ["127.0.0.1:5"]

[[routes]]
name = "orders"
path_prefix = "/orders"
service = "echo"
placement = "sharded"
[[routes.rate_limits]]
key = "route"
rate = "10/s"
[[routes.splits]]
service = "echo-v2"
match_header = "x-canary"

[[routes]]
name = "idle"
path_prefix = "/"
service = "echo"
"#;

    /// The exposition of [`CONFIG`] after a few requests, a rare code and a
    /// crossing among them.
    fn exposition() -> String {
        let config = unitgate_config::parse(CONFIG, std::path::Path::new(".")).expect("config");
        let snap = Snapshot::build(config, None).expect("snapshot");
        let stats = &snap.routes[0].counters.requests;
        stats.record(200, Some(0), Some(1), Duration::from_millis(3));
        stats.record(200, Some(0), Some(1), Duration::from_millis(40));
        stats.record(418, Some(1), Some(1), Duration::from_micros(200));
        stats.record(503, Some(1), None, Duration::from_secs(30));
        snap.services[0].count_crossing(0, 1);
        snap.routes[0].counters.rate_limited[0].fetch_add(2, Ordering::Relaxed);
        let snapshot: crate::snapshot::SharedSnapshot =
            std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(snap));
        let health = std::sync::Arc::new(crate::health::HealthSupervisor::new(snapshot.clone()));
        let control = ControlPlane::new(snapshot.clone(), None, health);
        render(&snapshot.load(), &control)
    }

    #[test]
    fn the_exposition_reads_back_with_help_type_and_monotone_buckets() {
        let text = exposition();
        let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
        let mut helped = Vec::new();
        // (series without `le`) -> [(le, cumulative)] in exposed order.
        let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts: BTreeMap<String, f64> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("help text");
                assert!(!help.is_empty(), "{line}");
                helped.push(name);
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                assert!(helped.last() == Some(&name), "TYPE {name} without HELP");
                assert!(kinds.insert(name, kind).is_none(), "{name} declared twice");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample");
            let value: f64 = value.parse().expect("a number");
            let name = series.split('{').next().expect("name");
            let family = kinds
                .keys()
                .rev()
                .find(|f| {
                    name.strip_prefix(**f)
                        .is_some_and(|s| s.is_empty() || kinds[**f] == "histogram")
                })
                .unwrap_or_else(|| panic!("{name}: no HELP/TYPE before it"));
            assert!(name.starts_with("unitgate_"), "{name}");
            if kinds[family] != "histogram" {
                assert_eq!(name, *family);
                continue;
            }
            let labels = series.strip_prefix(name).expect("labels");
            match &name[family.len()..] {
                "_bucket" => {
                    let (rest, le) = labels.rsplit_once(",le=\"").expect("le last");
                    let le = le.trim_end_matches("\"}");
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().expect("le")
                    };
                    buckets
                        .entry(format!("{family}{rest}}}"))
                        .or_default()
                        .push((le, value));
                }
                "_count" => {
                    counts.insert(format!("{family}{labels}"), value);
                }
                "_sum" => assert!(value >= 0.0),
                other => panic!("{name}: unexpected suffix {other}"),
            }
        }
        assert_eq!(kinds["unitgate_request_duration_seconds"], "histogram");
        assert_eq!(buckets.len(), 2, "one histogram per route:\n{text}");
        for (series, b) in &buckets {
            assert!(
                b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{series}: {b:?}"
            );
            let (le, n) = *b.last().expect("buckets");
            assert_eq!(le, f64::INFINITY, "{series}");
            assert_eq!(Some(&n), counts.get(series), "{series}: +Inf != _count");
        }
        for (series, value) in [
            ("unitgate_requests_total{route=\"orders\",code=\"200\",home_unit=\"A\",served_unit=\"B\"}", "2"),
            ("unitgate_requests_total{route=\"orders\",code=\"418\",home_unit=\"B\",served_unit=\"B\"}", "1"),
            ("unitgate_requests_total{route=\"orders\",code=\"503\",home_unit=\"B\",served_unit=\"\"}", "1"),
            ("unitgate_request_duration_seconds_bucket{route=\"orders\",le=\"0.001\"}", "1"),
            ("unitgate_request_duration_seconds_bucket{route=\"orders\",le=\"0.005\"}", "2"),
            ("unitgate_request_duration_seconds_bucket{route=\"orders\",le=\"10\"}", "3"),
            ("unitgate_request_duration_seconds_bucket{route=\"orders\",le=\"+Inf\"}", "4"),
            ("unitgate_request_duration_seconds_sum{route=\"orders\"}", "30.0432"),
            ("unitgate_request_duration_seconds_count{route=\"idle\"}", "0"),
            ("unitgate_cross_unit_total{service=\"echo\",from=\"A\",to=\"B\"}", "1"),
            ("unitgate_instance_backup{service=\"echo\",unit=\"B\",instance=\"127.0.0.1:4\"}", "1"),
            ("unitgate_circuit_open{service=\"echo\",unit=\"A\"}", "0"),
            ("unitgate_rate_limited_total{route=\"orders\",scope=\"local\"}", "2"),
            ("unitgate_split_requests_total{route=\"orders\",service=\"echo-v2\"}", "0"),
            ("unitgate_unit_state{unit=\"B\",state=\"active\"}", "1"),
            ("unitgate_config_reloads_total{result=\"error\"}", "0"),
            ("unitgate_store_up", "1"),
            ("unitgate_fleet_gateways{state=\"in_sync\"}", "1"),
        ] {
            assert!(text.lines().any(|l| l == format!("{series} {value}")), "{series} {value}:\n{text}");
        }
        // Process-wide counters: present, whatever other tests have counted.
        for series in [
            "unitgate_access_log_dropped_total",
            "unitgate_accept_errors_total",
            "unitgate_tracing_spans_exported_total",
            "unitgate_tracing_spans_dropped_total{reason=\"queue_full\"}",
            "unitgate_tracing_spans_dropped_total{reason=\"export_failed\"}",
            "unitgate_redis_up",
        ] {
            let prefix = format!("{series} ");
            assert!(
                text.lines().any(|l| l.starts_with(&prefix)),
                "{series}:\n{text}"
            );
        }
        // A limit scope the route does not use, and TLS without [tls], are absent.
        assert!(!text.contains("scope=\"global\""), "{text}");
        assert!(!text.contains("unitgate_tls_"), "{text}");
    }
}
