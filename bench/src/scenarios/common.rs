//! What every wrk-driven scenario shares: its options ([`Common`]), the
//! setup ([`Bench`]: tools, pinning, scratch directory, the backend nginx,
//! the load), starting contenders, and turning the run into a markdown report
//! and a [`Section`] for RESULTS.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tempfile::TempDir;

use crate::contender::{Contender, StartCtx, Started};
use crate::nginx::{self, Nginx};
use crate::report::{self, Machine, Report};
use crate::scenarios::{self, Pinning, Row, Sample, Scenario};
use crate::section::{Section, Target};
use crate::tools;
use crate::unitgate;
use crate::wrk::{self, Load, LoadTool};

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub duration: u64,
    /// Seconds of the unmeasured warmup run before each measured one (0 = none).
    #[arg(long, default_value_t = 2, value_name = "SECS")]
    pub warmup: u64,
    /// wrk connections (wrk always runs one thread).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub connections: u32,
    /// Rounds; each round measures every contender once, in turn.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub rounds: usize,
    /// The unitgate binary (default: `unitgate` beside this binary, else
    /// target/release/unitgate in the current directory or a parent).
    #[arg(long, value_name = "PATH")]
    pub unitgate: Option<PathBuf>,
    /// The bare-pingora floor binary (default: `unitgate-floor` beside this binary).
    #[arg(long, value_name = "PATH")]
    pub floor: Option<PathBuf>,
    /// The lean forwarder prototype (default: `unitgate-lean` beside this binary).
    #[arg(long, value_name = "PATH")]
    pub lean: Option<PathBuf>,
    /// Do not pin processes to CPUs with taskset.
    #[arg(long)]
    pub no_pin: bool,
    /// Directory for the scenario's own report (`<scenario>.md`).
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/out"))]
    pub out: PathBuf,
    /// Keep the scratch directory (configs, logs) instead of deleting it.
    #[arg(long)]
    pub keep_tmp: bool,
}

impl Common {
    /// The smoke-run shape: 2 s measured, 1 s warmup, 1 round.
    pub fn quick(&self) -> Self {
        Self {
            duration: 2,
            warmup: 1,
            rounds: 1,
            ..self.clone()
        }
    }

    pub fn check(&self) -> Result<()> {
        if self.duration == 0 || self.connections == 0 || self.rounds == 0 {
            bail!("--duration, --connections and --rounds must be at least 1");
        }
        Ok(())
    }

    /// The unitgate binary; these scenarios are about unitgate, so none is an error.
    pub fn unitgate_bin(&self) -> Result<PathBuf> {
        unitgate::locate(self.unitgate.as_deref())?.context(
            "no unitgate binary found (build it with `cargo build --release -p unitgate` \
             or pass --unitgate PATH)",
        )
    }

    pub fn settings_line(&self) -> String {
        format!(
            "wrk: 1 thread, {} connections, {} s measured after {} s warmup, {} rounds (contenders alternate within each round); medians below",
            self.connections, self.duration, self.warmup, self.rounds
        )
    }
}

/// A scenario's running setup: the backend and the load, and the scratch
/// directory everything writes into. Dropping it stops the backend.
pub struct Bench {
    pub common: Common,
    pub machine: Machine,
    pub load_before: String,
    pub pin: Option<Pinning>,
    pub nginx_bin: PathBuf,
    pub wrk_bin: PathBuf,
    pub load: Load,
    pub backend: Nginx,
    pub tmp: TempDir,
}

impl Bench {
    /// Finds the tools (installing missing ones as root), starts the backend.
    pub fn start(common: &Common) -> Result<Self> {
        common.check()?;
        let [nginx_bin, wrk_bin, _taskset] =
            <[PathBuf; 3]>::try_from(tools::ensure(&[tools::NGINX, tools::WRK, tools::TASKSET])?)
                .map_err(|_| anyhow::anyhow!("tools::ensure returned the wrong number of paths"))?;
        let machine = Machine::read();
        let load_before = report::loadavg();
        let pin = Pinning::choose(machine.cpus, !common.no_pin);
        if pin.is_none() && !common.no_pin {
            eprintln!(
                "bench: only {} CPU(s): running without pinning",
                machine.cpus
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("unitgate-bench-")
            .tempdir()
            .context("creating a scratch directory")?;
        let backend = nginx::start(
            &nginx_bin,
            "backend nginx",
            &tmp.path().join("backend"),
            pin.map(|p| p.backend),
            nginx::backend_body,
        )?;
        eprintln!(
            "bench: backend nginx on {} (worker pid {})",
            backend.addr, backend.worker
        );
        let load = Load {
            wrk: wrk_bin.clone(),
            connections: common.connections,
            duration: Duration::from_secs(common.duration),
            cpu: pin.map(|p| p.load),
        };
        Ok(Self {
            common: common.clone(),
            machine,
            load_before,
            pin,
            nginx_bin,
            wrk_bin,
            load,
            backend,
            tmp,
        })
    }

    /// Starts every contender (each in its own scratch subdirectory), pinned
    /// to the proxy CPU.
    pub fn start_all(&self, contenders: &[Box<dyn Contender>]) -> Result<Vec<Started>> {
        let mut started = Vec::new();
        for c in contenders {
            let dir = self.tmp.path().join(c.name());
            let ctx = StartCtx {
                dir: &dir,
                backend: self.backend.addr,
                cpu: self.pin.map(|p| p.proxy),
                slowdown: 1,
            };
            let s = c
                .start(&ctx)
                .with_context(|| format!("starting contender {}", c.name()))?;
            eprintln!("bench: {} on {}", s.name, s.url);
            started.push(s);
        }
        Ok(started)
    }

    /// The runner for this setup; `warmup` overrides the options' warmup.
    pub fn scenario(&self, warmup: Option<Duration>) -> Scenario<'_> {
        self.scenario_with(&self.load, warmup)
    }

    /// The runner for this setup with another load generator than wrk.
    pub fn scenario_with<'a>(
        &self,
        load: &'a dyn LoadTool,
        warmup: Option<Duration>,
    ) -> Scenario<'a> {
        Scenario {
            load,
            warmup: warmup.unwrap_or(Duration::from_secs(self.common.warmup)),
            backend_pid: self.backend.worker,
            rounds: self.common.rounds,
        }
    }

    /// Alternates the contenders over the rounds; medians per contender.
    pub fn run(&self, started: &mut [Started]) -> Result<(Vec<Sample>, Vec<Row>)> {
        self.run_with(started, &self.load)
    }

    /// [`Bench::run`] with another load generator than wrk.
    pub fn run_with(
        &self,
        started: &mut [Started],
        load: &dyn LoadTool,
    ) -> Result<(Vec<Sample>, Vec<Row>)> {
        let per_run = self.common.duration + self.common.warmup;
        eprintln!(
            "bench: {} rounds × {} contenders × {per_run} s ≈ {} s of load",
            self.common.rounds,
            started.len(),
            self.common.rounds as u64 * started.len() as u64 * per_run
        );
        let samples = self.scenario_with(load, None).run(started)?;
        let rows = scenarios::summarize(&samples);
        Ok((samples, rows))
    }

    /// Versions every report names: nginx, wrk, and each started program
    /// that tells its own (first contender of each kind).
    pub fn versions(&self, started: &[Started]) -> Vec<(String, String)> {
        let mut v = vec![
            ("nginx".to_owned(), nginx::version(&self.nginx_bin)),
            ("wrk".to_owned(), wrk::version(&self.wrk_bin)),
        ];
        for s in started {
            let kind = if s.name.starts_with("unitgate") {
                "unitgate"
            } else if s.name.starts_with("nginx") {
                "nginx"
            } else {
                s.name.as_str()
            };
            if kind == "nginx" || v.iter().any(|(k, _)| k == kind) {
                continue;
            }
            if let Some(ver) = &s.version {
                v.push((kind.to_owned(), ver.clone()));
            }
        }
        v
    }

    /// The report of a run: settings (the shared ones after `settings`),
    /// medians with ratios against `baseline`, every round, commands, configs.
    pub fn report_markdown(&self, r: &ReportParts<'_>) -> String {
        let mut commands = vec!["# backend".to_owned(), self.backend.command.clone()];
        let mut files = vec![(self.backend.conf_path.clone(), self.backend.conf.clone())];
        for s in r.started {
            if !s.commands.is_empty() {
                commands.push(format!("# {}", s.name));
                commands.extend(s.commands.iter().cloned());
            }
            files.extend(s.files.iter().cloned());
        }
        commands.extend(r.extra_commands.iter().cloned());
        let warmup = Duration::from_secs(self.common.warmup);
        let load: &dyn LoadTool = r.load.unwrap_or(&self.load);
        for s in r.started {
            commands.push(format!("# load: {} (warmup, then measured)", s.name));
            if !warmup.is_zero() {
                commands.push(crate::procs::command_line(
                    &load.command(&s.url, &s.headers, warmup),
                ));
            }
            commands.push(crate::procs::command_line(&load.command(
                &s.url,
                &s.headers,
                load.duration(),
            )));
        }
        let mut settings = vec![match r.load {
            Some(l) => l.describe(warmup, self.common.rounds),
            None => self.common.settings_line(),
        }];
        settings.extend(r.settings.iter().cloned());
        settings.push(
            "backend: nginx, 1 worker, `return 200 \"ok\\n\"`; every contender forwards to the same backend".into(),
        );
        settings.push("proxy CPU: utime+stime of the proxy process over the measured run ÷ requests completed; backend CPU likewise for the backend worker".into());
        settings.push(Pinning::describe(self.pin));
        settings.push(format!(
            "load average (1/5/15 min) before: {}; after: {} (other work on the machine skews req/s far more than CPU/req)",
            self.load_before,
            report::loadavg()
        ));
        let mut versions = self.versions(r.started);
        versions.extend(r.extra_versions.iter().cloned());
        let mut notes = r.notes.clone();
        for row in r.rows.iter().filter(|row| row.errors > 0) {
            notes.push(format!(
                "{}: {} failed requests (non-2xx or socket errors) over all rounds; its figures are suspect",
                row.contender, row.errors
            ));
        }
        Report {
            title: r.title.clone(),
            settings,
            rows: r.rows,
            baseline: r.baseline,
            samples: r.samples,
            machine: self.machine.clone(),
            versions,
            commands,
            files,
            notes,
        }
        .markdown()
    }

    /// Removes the scratch directory, or keeps it with `--keep-tmp`.
    pub fn finish(self) {
        let Self {
            tmp,
            backend,
            common,
            ..
        } = self;
        drop(backend);
        if common.keep_tmp {
            let kept = tmp.keep();
            eprintln!("bench: scratch directory kept at {}", kept.display());
        }
    }
}

/// The scenario-specific parts of a report.
pub struct ReportParts<'a> {
    pub title: String,
    pub settings: Vec<String>,
    pub rows: &'a [Row],
    pub samples: &'a [Sample],
    pub started: &'a [Started],
    pub baseline: &'a str,
    pub notes: Vec<String>,
    pub extra_commands: Vec<String>,
    pub extra_versions: Vec<(String, String)>,
    /// The load generator, when it is not the bench's wrk.
    pub load: Option<&'a dyn LoadTool>,
}

/// Prints the report, writes it to `out/<file>`, and returns the section.
pub fn publish(common: &Common, file: &str, md: &str, mut section: Section) -> Result<Section> {
    print!("{md}");
    let path = report::write(&common.out, file, md)?;
    eprintln!("bench: report written to {}", path.display());
    section.markdown = demote(md);
    Ok(section)
}

/// A report as a RESULTS.md section: without its `# title` line, every
/// heading one level deeper (outside code blocks).
pub fn demote(md: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    let mut lines = md.lines().peekable();
    if lines.peek().is_some_and(|l| l.starts_with("# ")) {
        lines.next();
    }
    for line in lines {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            out.push('#');
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_start().to_owned()
}

/// The chart bars of a run: proxy CPU µs/req per contender that has a proxy.
pub fn bars(rows: &[Row]) -> Vec<(String, f64)> {
    rows.iter()
        .filter_map(|r| r.proxy_cpu_us.map(|v| (r.contender.clone(), v)))
        .collect()
}

/// Median proxy CPU µs/req of `name`.
pub fn cpu_of(rows: &[Row], name: &str) -> Result<f64> {
    rows.iter()
        .find(|r| r.contender == name)
        .and_then(|r| r.proxy_cpu_us)
        .filter(|v| *v > 0.0)
        .with_context(|| format!("no proxy CPU figure for {name}"))
}

/// `a ÷ b`, proxy CPU per request, round by round, and the median of those
/// ratios: a note beside the ratio of the medians the targets use. The two
/// ran one after the other within a round, so a drift of the machine
/// between rounds hits both; the spread of the pairs is this run's noise.
pub fn paired_note(samples: &[Sample], what: &str, a: &str, b: &str) -> Option<String> {
    let cpu = |name: &str, round: usize| {
        samples
            .iter()
            .find(|s| s.contender == name && s.round == round)
            .and_then(|s| s.proxy_cpu_us)
            .filter(|v| *v > 0.0)
    };
    let pairs: Vec<f64> = samples
        .iter()
        .filter(|s| s.contender == a)
        .filter_map(|s| Some(cpu(a, s.round)? / cpu(b, s.round)?))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let each: Vec<String> = pairs.iter().map(|r| format!("{r:.3}")).collect();
    Some(format!(
        "{what}, round by round: {} (median of the rounds {:.3}; the targets use the ratio of the medians)",
        each.join(", "),
        scenarios::median(pairs)
    ))
}

/// A target: `measured <= limit`.
pub fn target(what: &str, measured: f64, limit: f64) -> Target {
    Target {
        what: what.to_owned(),
        measured,
        limit,
        met: measured <= limit,
    }
}

/// Fails when any measured run of `names` had a non-2xx response or a socket
/// error: for those contenders it means the feature chain is misconfigured
/// (a 401 or 429), and the figures measure the refusal, not the proxy.
pub fn require_all_ok(samples: &[Sample], names: &[&str]) -> Result<()> {
    let bad: Vec<String> = samples
        .iter()
        .filter(|s| names.contains(&s.contender.as_str()) && s.wrk.errors() > 0)
        .map(|s| {
            format!(
                "{} round {}: {} non-2xx, {} socket errors of {} requests",
                s.contender, s.round, s.wrk.non_2xx, s.wrk.socket_errors, s.wrk.requests
            )
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "requests that should all get 200 did not (misconfigured chain: 401 = token refused, 429 = limit refused):\n{}",
            bad.join("\n")
        );
    }
    Ok(())
}

/// One line per contender that logs requests: its access lines (counted in
/// its log file after the run) against the requests of its measured runs
/// (warmups and start probes come on top, so fewer lines than measured
/// requests means lines were lost), plus any log line about dropped lines.
pub fn access_log_notes(started: &[Started], samples: &[Sample]) -> Vec<String> {
    // The writer flushes every 50 ms; give the last batch time to land.
    std::thread::sleep(Duration::from_millis(500));
    let mut notes = Vec::new();
    for s in started {
        let Some((path, needle)) = &s.access_log else {
            continue;
        };
        let measured: u64 = samples
            .iter()
            .filter(|x| x.contender == s.name)
            .map(|x| x.wrk.requests)
            .sum();
        match count_lines(path, needle) {
            Ok((lines, bytes, dropped)) => {
                let verdict = if lines < measured {
                    format!("**{} lines missing**", measured - lines)
                } else {
                    "none missing".to_owned()
                };
                notes.push(format!(
                    "{}: {lines} access-log lines ({:.0} MB on disk, `{}`) for {measured} measured requests plus warmups: {verdict}{}",
                    s.name,
                    bytes as f64 / 1e6,
                    path.display(),
                    if dropped > 0 {
                        format!("; {dropped} log lines mention dropped lines")
                    } else {
                        String::new()
                    }
                ));
            }
            Err(e) => notes.push(format!("{}: access log not read: {e:#}", s.name)),
        }
    }
    notes
}

/// (lines containing `needle`, file size, lines mentioning "dropped").
fn count_lines(path: &std::path::Path, needle: &str) -> Result<(u64, u64, u64)> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let bytes = f.metadata().map_or(0, |m| m.len());
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let (mut lines, mut dropped) = (0, 0);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        if text.contains(needle) {
            lines += 1;
        } else if text.contains("dropped") {
            dropped += 1;
        }
    }
    Ok((lines, bytes, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demotes_headings_outside_code() {
        let md = "# Title\n\n- x\n\n## Medians\n\n```sh\n# a comment\n```\n";
        assert_eq!(
            demote(md),
            "- x\n\n### Medians\n\n```sh\n# a comment\n```\n"
        );
    }

    fn cpu(name: &str, round: usize, us: f64) -> Sample {
        Sample {
            round,
            ..scenarios::tests::sample(name, 100.0, Some(us))
        }
    }

    #[test]
    fn paired_ratios_are_taken_within_each_round() {
        // Round 2 is slow for both: its pair is still 1.1.
        let samples = [
            cpu("a", 1, 11.0),
            cpu("b", 1, 10.0),
            cpu("a", 2, 33.0),
            cpu("b", 2, 30.0),
            cpu("a", 3, 24.0),
            cpu("b", 3, 20.0),
        ];
        assert_eq!(
            paired_note(&samples, "a ÷ b", "a", "b").as_deref(),
            Some("a ÷ b, round by round: 1.100, 1.100, 1.200 (median of the rounds 1.100; the targets use the ratio of the medians)")
        );
        assert_eq!(paired_note(&samples, "x", "a", "missing"), None);
    }

    #[test]
    fn target_met_at_the_limit() {
        assert!(target("x", 1.10, 1.10).met);
        assert!(!target("x", 1.11, 1.10).met);
    }
}
