//! Running `wrk` (Debian's wrk 4.x) and reading its text report; the
//! [`LoadTool`] trait the scenario runner drives (wrk, h2load, the bench's
//! own connection-per-request client), all reporting a [`WrkReport`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::procs;

/// A load generator: one bounded run against a URL, reduced to a report.
pub trait LoadTool {
    /// Length of a measured run.
    fn duration(&self) -> Duration;
    /// The command of one run of `duration` against `url` (the report
    /// prints it; `run` runs it).
    fn command(&self, url: &str, headers: &[String], duration: Duration) -> Command;
    /// Runs it to completion (bounded) and reads its report.
    fn run(&self, url: &str, headers: &[String], duration: Duration) -> Result<WrkReport>;
    /// The report's settings line for this load: what it sends, how long
    /// the warmup and measured runs are, `rounds` rounds.
    fn describe(&self, warmup: Duration, rounds: usize) -> String;
}

impl LoadTool for Load {
    fn duration(&self) -> Duration {
        self.duration
    }

    fn command(&self, url: &str, headers: &[String], duration: Duration) -> Command {
        Load::command(self, url, headers, duration)
    }

    fn run(&self, url: &str, headers: &[String], duration: Duration) -> Result<WrkReport> {
        Load::run(self, url, headers, duration)
    }

    fn describe(&self, warmup: Duration, rounds: usize) -> String {
        format!(
            "wrk: 1 thread, {} connections, {} s measured after {} s warmup, {rounds} rounds (contenders alternate within each round); medians below",
            self.connections,
            self.duration.as_secs(),
            warmup.as_secs()
        )
    }
}

/// How a load run is shaped.
#[derive(Debug, Clone)]
pub struct Load {
    pub wrk: PathBuf,
    pub connections: u32,
    pub duration: Duration,
    /// CPU wrk is pinned to, if any.
    pub cpu: Option<usize>,
}

impl Load {
    /// The command for one run of `duration` against `url`.
    pub fn command(&self, url: &str, headers: &[String], duration: Duration) -> Command {
        let mut cmd = procs::pinned(self.cpu, &self.wrk);
        cmd.arg("-t1")
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", duration.as_secs().max(1)))
            .arg("--latency");
        for h in headers {
            cmd.arg("-H").arg(h);
        }
        cmd.arg(url);
        cmd
    }

    /// Runs wrk to completion (bounded: `duration` plus a margin) and parses
    /// its report.
    pub fn run(&self, url: &str, headers: &[String], duration: Duration) -> Result<WrkReport> {
        let cmd = self.command(url, headers, duration);
        let line = procs::command_line(&cmd);
        let out = procs::run_capture(cmd, duration + Duration::from_secs(20))?;
        procs::check_interrupted()?;
        if !out.status.success() {
            bail!(
                "{line} failed ({}):\n{}{}",
                out.status,
                out.stdout,
                out.stderr
            );
        }
        parse(&out.stdout).with_context(|| format!("reading the report of {line}:\n{}", out.stdout))
    }
}

/// What the bench takes from a wrk report.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkReport {
    /// Total completed requests ("N requests in").
    pub requests: u64,
    /// Elapsed seconds ("requests in 10.00s").
    pub elapsed_secs: f64,
    /// "Requests/sec:".
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// "Non-2xx or 3xx responses:" (0 when the line is absent).
    pub non_2xx: u64,
    /// Sum of the "Socket errors:" counters (0 when the line is absent).
    pub socket_errors: u64,
    /// The load generator's own CPU µs per request, when it reports it
    /// (the bench's `conn-load` does; wrk and h2load do not).
    pub load_cpu_us: Option<f64>,
}

impl WrkReport {
    /// Responses that were not a success, or never came.
    pub fn errors(&self) -> u64 {
        self.non_2xx + self.socket_errors
    }
}

/// Parses wrk's `--latency` report.
pub fn parse(text: &str) -> Result<WrkReport> {
    let mut requests = None;
    let mut elapsed_secs = None;
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut non_2xx = 0;
    let mut socket_errors = 0;

    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().context("Requests/sec")?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().context("Non-2xx count")?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 3"
            for part in v.split(',') {
                let n = part
                    .split_whitespace()
                    .last()
                    .ok_or_else(|| anyhow!("empty socket error counter"))?;
                socket_errors += n.parse::<u64>().context("socket error counter")?;
            }
        } else if line.contains(" requests in ") {
            // "124491 requests in 3.01s, 17.81MB read"
            let mut words = line.split_whitespace();
            let n = words.next().unwrap_or_default();
            requests = Some(n.parse::<u64>().context("request count")?);
            let secs = words
                .nth(2)
                .map(|w| w.trim_end_matches(','))
                .ok_or_else(|| anyhow!("no elapsed time in {line:?}"))?;
            elapsed_secs = Some(parse_time(secs)?.as_secs_f64());
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = Some(parse_time(v.trim())?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(parse_time(v.trim())?);
        }
    }

    Ok(WrkReport {
        requests: requests.ok_or_else(|| anyhow!("no \"N requests in\" line"))?,
        elapsed_secs: elapsed_secs.ok_or_else(|| anyhow!("no elapsed time"))?,
        rps: rps.ok_or_else(|| anyhow!("no Requests/sec line"))?,
        p50: p50.ok_or_else(|| anyhow!("no 50% latency line (was --latency given?)"))?,
        p99: p99.ok_or_else(|| anyhow!("no 99% latency line (was --latency given?)"))?,
        non_2xx,
        socket_errors,
        load_cpu_us: None,
    })
}

/// wrk's time format: a number followed by us, ms, s, m or h.
pub fn parse_time(s: &str) -> Result<Duration> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| anyhow!("time without a unit: {s:?}"))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().with_context(|| format!("time value {s:?}"))?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => bail!("unknown time unit in {s:?}"),
    };
    if !secs.is_finite() || secs < 0.0 {
        bail!("bad time {s:?}");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `wrk -v`'s first line ("wrk debian/4.1.0-3+b2 [epoll] ...").
pub fn version(wrk: &Path) -> String {
    let mut cmd = Command::new(wrk);
    cmd.arg("-v");
    procs::run_capture(cmd, Duration::from_secs(5))
        .ok()
        .and_then(|c| c.stdout.lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
Running 3s test @ http://127.0.0.1:18431/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   647.60us  459.29us   6.34ms   96.24%
    Req/Sec    41.71k     5.78k   54.89k    70.00%
  Latency Distribution
     50%  588.00us
     75%  675.00us
     90%  776.00us
     99%    3.24ms
  124491 requests in 3.01s, 17.81MB read
Requests/sec:  41427.72
Transfer/sec:      5.93MB
";

    const WITH_ERRORS: &str = "\
Running 10s test @ http://127.0.0.1:40001/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms    2.11ms  52.00ms   98.00%
    Req/Sec    30.00k     1.00k   31.00k    70.00%
  Latency Distribution
     50%    0.90ms
     75%    1.00ms
     90%    1.20ms
     99%    1.50s
  300000 requests in 1.00m, 40.00MB read
  Socket errors: connect 2, read 0, write 1, timeout 3
  Non-2xx or 3xx responses: 17
Requests/sec:   4999.50
Transfer/sec:      0.67MB
";

    #[test]
    fn parses_clean_report() {
        let r = parse(CLEAN).expect("valid report");
        assert_eq!(r.requests, 124_491);
        assert!((r.elapsed_secs - 3.01).abs() < 1e-9);
        assert!((r.rps - 41_427.72).abs() < 1e-9);
        assert_eq!(r.p50, Duration::from_micros(588));
        assert_eq!(r.p99, Duration::from_micros(3_240));
        assert_eq!(r.errors(), 0);
    }

    #[test]
    fn parses_errors_and_units() {
        let r = parse(WITH_ERRORS).expect("valid report");
        assert_eq!(r.requests, 300_000);
        assert!((r.elapsed_secs - 60.0).abs() < 1e-9);
        assert_eq!(r.p50, Duration::from_micros(900));
        assert_eq!(r.p99, Duration::from_millis(1_500));
        assert_eq!(r.non_2xx, 17);
        assert_eq!(r.socket_errors, 6);
        assert_eq!(r.errors(), 23);
    }

    #[test]
    fn rejects_report_without_latency() {
        let no_latency: String = CLEAN
            .lines()
            .filter(|l| !l.trim_start().starts_with("99%"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse(&no_latency).is_err());
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }

    #[test]
    fn parses_time_units() {
        assert_eq!(
            parse_time("12.50us").ok(),
            Some(Duration::from_nanos(12_500))
        );
        assert_eq!(parse_time("2.00s").ok(), Some(Duration::from_secs(2)));
        assert!(parse_time("3.0").is_err());
        assert!(parse_time("3.0xs").is_err());
    }

    #[test]
    fn builds_pinned_command() {
        let load = Load {
            wrk: "/usr/bin/wrk".into(),
            connections: 32,
            duration: Duration::from_secs(10),
            cpu: Some(1),
        };
        let cmd = load.command("http://127.0.0.1:1/", &[], Duration::from_secs(10));
        assert_eq!(
            procs::command_line(&cmd),
            "taskset -c 1 /usr/bin/wrk -t1 -c32 -d10s --latency http://127.0.0.1:1/"
        );
    }
}
