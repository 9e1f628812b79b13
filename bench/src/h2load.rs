//! Running `h2load` (nghttp2's HTTP/2 load generator, Debian
//! `nghttp2-client`) as a [`LoadTool`]: a bounded request count over a few
//! connections with many concurrent streams each, its text report and its
//! per-request log (for p50/p99, which the report does not give).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::procs;
use crate::wrk::{parse_time, LoadTool, WrkReport};

#[derive(Debug, Clone)]
pub struct H2load {
    pub bin: PathBuf,
    /// Connections (`-c`).
    pub clients: u32,
    /// Concurrent streams per connection (`-m`).
    pub streams: u32,
    /// Requests per second of a run's nominal duration: a run of d seconds
    /// sends `-n` = this × d requests (the run ends when they are done,
    /// whatever the time; it is killed if it takes 10 × d + 30 s).
    pub per_sec: u64,
    pub duration: Duration,
    pub cpu: Option<usize>,
    /// Where `--log-file` writes (one run at a time, overwritten).
    pub log: PathBuf,
}

impl H2load {
    /// `-n` of a run of `duration`.
    pub fn requests(&self, duration: Duration) -> u64 {
        (self.per_sec * duration.as_secs().max(1)).max(u64::from(self.clients * self.streams))
    }
}

impl LoadTool for H2load {
    fn duration(&self) -> Duration {
        self.duration
    }

    fn command(&self, url: &str, headers: &[String], duration: Duration) -> Command {
        let mut cmd = procs::pinned(self.cpu, &self.bin);
        cmd.arg("-t1")
            .arg(format!("-c{}", self.clients))
            .arg(format!("-m{}", self.streams))
            .arg(format!("-n{}", self.requests(duration)))
            .arg("--log-file")
            .arg(&self.log);
        for h in headers {
            cmd.arg("-H").arg(h);
        }
        cmd.arg(url);
        cmd
    }

    fn run(&self, url: &str, headers: &[String], duration: Duration) -> Result<WrkReport> {
        let _ = fs::remove_file(&self.log);
        let cmd = self.command(url, headers, duration);
        let line = procs::command_line(&cmd);
        let bound = duration * 10 + Duration::from_secs(30);
        let out = procs::run_capture(cmd, bound)?;
        procs::check_interrupted()?;
        if !out.status.success() {
            bail!(
                "{line} failed ({}):\n{}{}",
                out.status,
                out.stdout,
                out.stderr
            );
        }
        let mut r = parse(&out.stdout)
            .with_context(|| format!("reading the report of {line}:\n{}", out.stdout))?;
        let (p50, p99) = log_percentiles(&self.log)?;
        r.p50 = p50;
        r.p99 = p99;
        Ok(r)
    }

    fn describe(&self, warmup: Duration, rounds: usize) -> String {
        format!(
            "h2load: 1 thread, {} connections × {} concurrent streams, `-n {}` requests measured after a `-n {}` warmup run, {rounds} rounds (contenders alternate within each round); p50/p99 from h2load's per-request log; medians below",
            self.clients,
            self.streams,
            self.requests(self.duration),
            self.requests(warmup)
        )
    }
}

/// What the bench takes from h2load's report: `finished in`, `requests:`,
/// `status codes:`. Requests = succeeded; socket errors = total − succeeded
/// (failed, errored, timed out, never started); non-2xx = 3xx + 4xx + 5xx.
/// The latencies are left at zero (see [`log_percentiles`]).
pub fn parse(text: &str) -> Result<WrkReport> {
    let mut elapsed = None;
    let mut rps = None;
    let mut total_succeeded = None;
    let mut non_2xx = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "1.58s, 25336.53 req/s, 1.32MB/s"
            let mut parts = rest.split(", ");
            elapsed = Some(parse_time(parts.next().unwrap_or_default())?);
            let r = parts
                .next()
                .and_then(|p| p.strip_suffix(" req/s"))
                .ok_or_else(|| anyhow!("no req/s in {line:?}"))?;
            rps = Some(r.parse::<f64>().context("req/s")?);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // "40000 total, 40000 started, 40000 done, 40000 succeeded, 0 failed, …"
            let count = |what: &str| -> Result<u64> {
                rest.split(", ")
                    .find_map(|p| p.strip_suffix(what))
                    .ok_or_else(|| anyhow!("no {what:?} in {line:?}"))?
                    .trim()
                    .parse()
                    .with_context(|| format!("{what} count"))
            };
            total_succeeded = Some((count(" total")?, count(" succeeded")?));
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            // "40000 2xx, 0 3xx, 0 4xx, 0 5xx"
            let mut other = 0;
            for p in rest.split(", ") {
                let (n, class) = p
                    .split_once(' ')
                    .ok_or_else(|| anyhow!("bad status count {p:?}"))?;
                if class != "2xx" {
                    other += n.parse::<u64>().context("status count")?;
                }
            }
            non_2xx = Some(other);
        }
    }
    let (total, succeeded) = total_succeeded.ok_or_else(|| anyhow!("no \"requests:\" line"))?;
    let elapsed = elapsed.ok_or_else(|| anyhow!("no \"finished in\" line"))?;
    Ok(WrkReport {
        requests: succeeded,
        elapsed_secs: elapsed.as_secs_f64(),
        rps: rps.ok_or_else(|| anyhow!("no req/s"))?,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        non_2xx: non_2xx.ok_or_else(|| anyhow!("no \"status codes:\" line"))?,
        socket_errors: total.saturating_sub(succeeded),
        load_cpu_us: None,
    })
}

/// p50 and p99 of the third column (µs from the request's start to the end
/// of its response) of h2load's `--log-file`.
pub fn log_percentiles(path: &Path) -> Result<(Duration, Duration)> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    percentiles(&text).with_context(|| format!("{} has no request lines", path.display()))
}

fn percentiles(text: &str) -> Option<(Duration, Duration)> {
    let mut us: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    if us.is_empty() {
        return None;
    }
    us.sort_unstable();
    let at = |q: f64| {
        let i = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
        Duration::from_micros(us[i])
    };
    Some((at(0.50), at(0.99)))
}

/// `h2load --version` ("h2load nghttp2/1.52.0").
pub fn version(bin: &Path) -> String {
    let mut cmd = Command::new(bin);
    cmd.arg("--version");
    procs::run_capture(cmd, Duration::from_secs(5))
        .ok()
        .and_then(|c| c.stdout.lines().next().map(|l| l.trim().to_owned()))
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
starting benchmark...
spawning thread #0: 4 total client(s). 40000 total requests
TLS Protocol: TLSv1.3
Application protocol: h2
progress: 100% done

finished in 1.58s, 25336.53 req/s, 1.32MB/s
requests: 40000 total, 40000 started, 40000 done, 39990 succeeded, 10 failed, 10 errored, 0 timeout
status codes: 39980 2xx, 0 3xx, 4 4xx, 6 5xx
traffic: 1.05MB (1095861) total, 659.90KB (675741) headers (space savings 76.21%), 58.59KB (60000) data
";

    #[test]
    fn parses_the_report() {
        let r = parse(REPORT).expect("valid");
        assert_eq!(r.requests, 39_990);
        assert_eq!(r.socket_errors, 10);
        assert_eq!(r.non_2xx, 10);
        assert!((r.elapsed_secs - 1.58).abs() < 1e-9);
        assert!((r.rps - 25_336.53).abs() < 1e-9);
        let short = REPORT.replace("1.58s, 25336.53", "941us, 0.00");
        assert!((parse(&short).expect("valid").elapsed_secs - 0.000_941).abs() < 1e-9);
        assert!(parse("starting benchmark...").is_err());
    }

    #[test]
    fn percentiles_of_the_log() {
        let log: String = (1..=100)
            .map(|i| format!("1796187620384628\t200\t{}\n", i * 10))
            .collect();
        assert_eq!(
            percentiles(&log),
            Some((Duration::from_micros(500), Duration::from_micros(990)))
        );
        assert_eq!(percentiles(""), None);
    }

    #[test]
    fn builds_the_command() {
        let h = H2load {
            bin: "/usr/bin/h2load".into(),
            clients: 4,
            streams: 32,
            per_sec: 20_000,
            duration: Duration::from_secs(10),
            cpu: Some(1),
            log: "/t/h2load.log".into(),
        };
        assert_eq!(
            procs::command_line(&h.command("https://localhost:1/", &[], Duration::from_secs(2))),
            "taskset -c 1 /usr/bin/h2load -t1 -c4 -m32 -n40000 --log-file /t/h2load.log https://localhost:1/"
        );
    }
}
