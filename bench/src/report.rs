//! The markdown report: the median table with same-run ratios, every round's
//! raw figures, the machine, the versions, and the exact commands and
//! generated configs, so a reader can rerun any line by hand.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::scenarios::{fmt_latency, Row, Sample};

/// What the run ran on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(std::thread::available_parallelism().map_or(1, |n| n.get()));
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
        Self {
            cpus,
            model,
            kernel,
        }
    }
}

/// The report's "Machine and versions" section (the machine, `tool`'s
/// version line such as "valgrind: `…`", unitgate's version) and the start
/// of its "Commands" block: the backend's and every contender's commands,
/// with the request headers sent. The caller adds its client's command and
/// closes the block.
pub fn machine_and_commands(
    s: &mut String,
    tool: &str,
    backend_command: &str,
    started: &[crate::contender::Started],
) {
    let machine = Machine::read();
    let _ = writeln!(
        s,
        "\n## Machine and versions\n\n- CPU: {} × {}\n- kernel: {}\n- {tool}",
        machine.cpus, machine.model, machine.kernel,
    );
    let unitgate = started
        .iter()
        .filter(|x| x.name.starts_with("unitgate"))
        .find_map(|x| x.version.as_deref());
    if let Some(v) = unitgate {
        let _ = writeln!(s, "- unitgate: `{v}`");
    }
    let _ = writeln!(s, "\n## Commands\n\n```sh\n# backend\n{backend_command}");
    for x in started {
        let _ = writeln!(s, "# {}\n{}", x.name, x.commands.join("\n"));
        if !x.headers.is_empty() {
            let _ = writeln!(s, "#   request headers: {}", x.headers.join(" / "));
        }
    }
}

/// The 1/5/15-minute load averages, from /proc/loadavg: other work on the
/// machine during a run skews req/s much more than CPU per request.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Everything one scenario's report shows.
#[derive(Debug)]
pub struct Report<'a> {
    pub title: String,
    /// Settings, one line each ("wrk: 1 thread, 32 connections, 10 s …").
    pub settings: Vec<String>,
    pub rows: &'a [Row],
    /// The contender ratios are taken against ("nginx").
    pub baseline: &'a str,
    pub samples: &'a [Sample],
    pub machine: Machine,
    pub versions: Vec<(String, String)>,
    pub commands: Vec<String>,
    pub files: Vec<(PathBuf, String)>,
    pub notes: Vec<String>,
}

impl Report<'_> {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        // `writeln!` to a String cannot fail; the results are ignored.
        let _ = writeln!(s, "# {}\n", self.title);
        for line in &self.settings {
            let _ = writeln!(s, "- {line}");
        }
        s.push('\n');
        self.medians(&mut s);
        self.ratios(&mut s);
        if !self.notes.is_empty() {
            s.push_str("\n## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        self.rounds(&mut s);
        self.environment(&mut s);
        s
    }

    fn baseline_row(&self) -> Option<&Row> {
        self.rows.iter().find(|r| r.contender == self.baseline)
    }

    fn medians(&self, s: &mut String) {
        let base = self.baseline_row().and_then(|b| b.proxy_cpu_us);
        let _ = writeln!(
            s,
            "## Medians\n\n\
             | contender | req/s | p50 | p99 | proxy CPU µs/req | backend CPU µs/req | ratio vs {} |\n\
             |---|---:|---:|---:|---:|---:|---:|",
            self.baseline
        );
        for r in self.rows {
            let ratio = match (r.proxy_cpu_us, base) {
                (Some(p), Some(b)) if b > 0.0 => format!("{:.2}", p / b),
                _ => "—".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {:.0} | {} | {} | {} | {:.2} | {ratio} |",
                r.contender,
                r.rps,
                fmt_latency(r.p50),
                fmt_latency(r.p99),
                r.proxy_cpu_us.map_or("—".into(), |v| format!("{v:.2}")),
                r.backend_cpu_us,
            );
        }
        let _ = writeln!(
            s,
            "\n*ratio vs {b}* = the contender's proxy CPU per request ÷ {b}'s, both medians of this run.",
            b = self.baseline
        );
    }

    fn ratios(&self, s: &mut String) {
        let Some(base) = self.baseline_row() else {
            return;
        };
        for r in self.rows.iter().filter(|r| r.contender != self.baseline) {
            let rps = if base.rps > 0.0 {
                r.rps / base.rps
            } else {
                0.0
            };
            match (r.proxy_cpu_us, base.proxy_cpu_us) {
                (Some(p), Some(b)) if b > 0.0 => {
                    let _ = writeln!(
                        s,
                        "- {}: {:.2}× {}'s CPU per request, {:.2}× its req/s.",
                        r.contender,
                        p / b,
                        self.baseline,
                        rps
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "- {}: no proxy; {:.2}× {}'s req/s.",
                        r.contender, rps, self.baseline
                    );
                }
            }
        }
    }

    fn rounds(&self, s: &mut String) {
        s.push_str(
            "\n## Every round\n\n\
             | round | contender | requests | errors | req/s | p50 | p99 | proxy CPU µs/req | backend CPU µs/req |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for x in self.samples {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {:.2} |",
                x.round,
                x.contender,
                x.wrk.requests,
                x.wrk.errors(),
                x.wrk.rps,
                fmt_latency(x.wrk.p50),
                fmt_latency(x.wrk.p99),
                x.proxy_cpu_us.map_or("—".into(), |v| format!("{v:.2}")),
                x.backend_cpu_us,
            );
        }
    }

    fn environment(&self, s: &mut String) {
        let m = &self.machine;
        let _ = writeln!(
            s,
            "\n## Machine\n\n- CPUs: {} × {}\n- kernel: {}",
            m.cpus, m.model, m.kernel
        );
        s.push_str("\n## Versions\n\n");
        for (what, v) in &self.versions {
            let _ = writeln!(s, "- {what}: `{v}`");
        }
        s.push_str("\n## Commands\n\n```sh\n");
        for c in &self.commands {
            let _ = writeln!(s, "{c}");
        }
        s.push_str("```\n");
        for (path, text) in &self.files {
            let lang = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => "toml",
                Some("cfg") => "haproxy",
                _ => "nginx",
            };
            let _ = writeln!(s, "\n`{}`:\n\n```{lang}\n{}```", path.display(), text);
        }
    }
}

/// Writes `text` to `dir/name`, creating `dir`.
pub fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(name: &str, rps: f64, proxy: Option<f64>) -> Row {
        Row {
            contender: name.into(),
            rps,
            p50: Duration::from_micros(500),
            p99: Duration::from_millis(2),
            proxy_cpu_us: proxy,
            backend_cpu_us: 4.0,
            errors: 0,
        }
    }

    #[test]
    fn table_has_ratios_against_the_baseline() {
        let rows = [
            row("direct", 40_000.0, None),
            row("nginx", 20_000.0, Some(20.0)),
            row("unitgate", 25_000.0, Some(15.0)),
        ];
        let r = Report {
            title: "plain".into(),
            settings: vec![],
            rows: &rows,
            baseline: "nginx",
            samples: &[],
            machine: Machine {
                cpus: 2,
                model: "test".into(),
                kernel: "6".into(),
            },
            versions: vec![],
            commands: vec![],
            files: vec![],
            notes: vec![],
        };
        let md = r.markdown();
        assert!(
            md.contains("| direct | 40000 | 500µs | 2.00ms | — | 4.00 | — |"),
            "{md}"
        );
        assert!(
            md.contains("| nginx | 20000 | 500µs | 2.00ms | 20.00 | 4.00 | 1.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| unitgate | 25000 | 500µs | 2.00ms | 15.00 | 4.00 | 0.75 |"),
            "{md}"
        );
        assert!(md.contains("- unitgate: 0.75× nginx's CPU per request, 1.25× its req/s."));
    }
}
