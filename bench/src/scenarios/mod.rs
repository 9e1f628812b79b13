//! Scenarios, and the runner they share: warm up, measure one contender with
//! wrk while reading the proxy's and the backend's CPU time, alternate the
//! contenders in rounds, and reduce the rounds to medians.

pub mod callgrind;
pub mod common;
pub mod failover;
pub mod full_chain;
pub mod global_limit;
pub mod idle_conns;
pub mod migration;
pub mod plain;
pub mod redis_kill;
pub mod reload;
pub mod results;
pub mod routes;
pub mod slow_instance;
pub mod soak;
pub mod timeline;
pub mod tls;

use std::time::Duration;

use anyhow::{bail, Result};

use crate::contender::Started;
use crate::procs;
use crate::wrk::{LoadTool, WrkReport};

/// Which CPU each party runs on. The proxy under test gets a core to itself
/// (CPU 0) so its throughput and CPU per request are not disturbed by the
/// load generator; the backend (cheap: `return 200`) and wrk share CPU 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinning {
    pub proxy: usize,
    pub backend: usize,
    pub load: usize,
}

impl Pinning {
    /// The standard layout when the machine has at least 2 CPUs and pinning
    /// is wanted; `None` (no pinning) otherwise.
    pub fn choose(cpus: usize, wanted: bool) -> Option<Self> {
        (wanted && cpus >= 2).then_some(Self {
            proxy: 0,
            backend: 1,
            load: 1,
        })
    }

    pub fn describe(pin: Option<Self>) -> String {
        match pin {
            Some(p) => format!(
                "pinning (taskset): proxy under test on CPU {}, backend nginx on CPU {}, wrk on CPU {}",
                p.proxy, p.backend, p.load
            ),
            None => "pinning: none (scheduler places every process)".into(),
        }
    }
}

/// One measured wrk run of one contender.
#[derive(Debug, Clone)]
pub struct Sample {
    pub contender: String,
    pub round: usize,
    pub wrk: WrkReport,
    /// Proxy CPU µs per request (`None` for the direct contender).
    pub proxy_cpu_us: Option<f64>,
    /// Backend worker CPU µs per request.
    pub backend_cpu_us: f64,
}

/// Runs the measured loops of a scenario.
pub struct Scenario<'a> {
    pub load: &'a dyn LoadTool,
    /// Unmeasured run before each measured one (0 = none).
    pub warmup: Duration,
    /// The backend process whose CPU is read in every run.
    pub backend_pid: u32,
    pub rounds: usize,
}

impl Scenario<'_> {
    /// Measures every contender once per round, in order, round after round
    /// (so slow drifts of the machine hit every contender alike).
    pub fn run(&self, contenders: &mut [Started]) -> Result<Vec<Sample>> {
        let mut samples = Vec::new();
        for round in 1..=self.rounds {
            for c in contenders.iter_mut() {
                let s = self.measure(c, round)?;
                eprintln!(
                    "bench: round {round}/{} {:<10} {:>10.0} req/s  p50 {:>8}  p99 {:>8}  proxy {:>7}  backend {:>6.2} µs/req{}",
                    self.rounds,
                    s.contender,
                    s.wrk.rps,
                    fmt_latency(s.wrk.p50),
                    fmt_latency(s.wrk.p99),
                    s.proxy_cpu_us.map_or("-".into(), |v| format!("{v:.2}")),
                    s.backend_cpu_us,
                    match s.wrk.errors() {
                        0 => String::new(),
                        n => format!("  ({n} errors)"),
                    }
                );
                samples.push(s);
            }
        }
        Ok(samples)
    }

    /// One warmup (unmeasured) then one measured run against `c`.
    pub fn measure(&self, c: &mut Started, round: usize) -> Result<Sample> {
        procs::check_interrupted()?;
        c.ensure_running()?;
        if !self.warmup.is_zero() {
            self.load.run(&c.url, &c.headers, self.warmup)?;
        }
        let proxy_before = c.measured.map(procs::cpu_micros).transpose()?;
        let backend_before = procs::cpu_micros(self.backend_pid)?;
        let wrk = self.load.run(&c.url, &c.headers, self.load.duration())?;
        let backend_after = procs::cpu_micros(self.backend_pid)?;
        let proxy_after = c.measured.map(procs::cpu_micros).transpose()?;
        c.ensure_running()?;
        if wrk.requests == 0 {
            bail!(
                "{}: the load completed no requests against {}",
                c.name,
                c.url
            );
        }
        let per_req =
            |before: u64, after: u64| after.saturating_sub(before) as f64 / wrk.requests as f64;
        Ok(Sample {
            contender: c.name.clone(),
            round,
            proxy_cpu_us: proxy_before.zip(proxy_after).map(|(b, a)| per_req(b, a)),
            backend_cpu_us: per_req(backend_before, backend_after),
            wrk,
        })
    }
}

/// A contender's medians over its rounds.
#[derive(Debug, Clone)]
pub struct Row {
    pub contender: String,
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub proxy_cpu_us: Option<f64>,
    pub backend_cpu_us: f64,
    /// Failed requests summed over all rounds.
    pub errors: u64,
}

/// Reduces samples to one row per contender (in first-seen order), each
/// figure being the median of that figure over the rounds.
pub fn summarize(samples: &[Sample]) -> Vec<Row> {
    let mut names: Vec<&str> = Vec::new();
    for s in samples {
        if !names.contains(&s.contender.as_str()) {
            names.push(&s.contender);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.contender == name).collect();
            let med = |f: &dyn Fn(&Sample) -> f64| median(mine.iter().map(|s| f(s)).collect());
            let proxy: Vec<f64> = mine.iter().filter_map(|s| s.proxy_cpu_us).collect();
            Row {
                contender: name.to_owned(),
                rps: med(&|s| s.wrk.rps),
                p50: Duration::from_secs_f64(med(&|s| s.wrk.p50.as_secs_f64())),
                p99: Duration::from_secs_f64(med(&|s| s.wrk.p99.as_secs_f64())),
                proxy_cpu_us: (!proxy.is_empty()).then(|| median(proxy)),
                backend_cpu_us: med(&|s| s.backend_cpu_us),
                errors: mine.iter().map(|s| s.wrk.errors()).sum(),
            }
        })
        .collect()
}

/// Median (mean of the two middle values for an even count); 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Latency as wrk prints it: µs below 1 ms, ms below 1 s, else s.
pub fn fmt_latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample(name: &str, rps: f64, proxy: Option<f64>) -> Sample {
        Sample {
            contender: name.into(),
            round: 1,
            wrk: WrkReport {
                requests: 100,
                elapsed_secs: 1.0,
                rps,
                p50: Duration::from_micros(500),
                p99: Duration::from_millis(2),
                non_2xx: 0,
                socket_errors: 1,
                load_cpu_us: None,
            },
            proxy_cpu_us: proxy,
            backend_cpu_us: 3.0,
        }
    }

    #[test]
    fn medians_per_contender_in_first_seen_order() {
        let samples = [
            sample("direct", 10.0, None),
            sample("nginx", 5.0, Some(9.0)),
            sample("direct", 30.0, None),
            sample("nginx", 7.0, Some(11.0)),
            sample("direct", 20.0, None),
            sample("nginx", 6.0, Some(10.0)),
        ];
        let rows = summarize(&samples);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].contender, "direct");
        assert_eq!(rows[0].rps, 20.0);
        assert_eq!(rows[0].proxy_cpu_us, None);
        assert_eq!(rows[0].errors, 3);
        assert_eq!(rows[1].contender, "nginx");
        assert_eq!(rows[1].rps, 6.0);
        assert_eq!(rows[1].proxy_cpu_us, Some(10.0));
    }

    #[test]
    fn median_of_even_and_empty() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn formats_latency() {
        assert_eq!(fmt_latency(Duration::from_micros(588)), "588µs");
        assert_eq!(fmt_latency(Duration::from_micros(3_240)), "3.24ms");
        assert_eq!(fmt_latency(Duration::from_millis(1_500)), "1.50s");
    }
}
