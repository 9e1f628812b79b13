//! `unitgate-bench results`: every scenario in turn, then bench/RESULTS.md
//! (how to reproduce, the machine, the versions, a table of every target,
//! each scenario's section) and the charts in bench/results/.
//!
//! A scenario is one line of [`SCENARIOS`]: a name (used for its chart
//! files) and a function returning its [`Section`].

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::charts;
use crate::h2load;
use crate::haproxy;
use crate::nginx;
use crate::procs;
use crate::redis;
use crate::report::Machine;
use crate::scenarios::common::Common;
use crate::scenarios::{
    callgrind, failover, full_chain, global_limit, idle_conns, migration, plain, redis_kill,
    reload, routes, soak, tls,
};
use crate::section::Section;
use crate::tools;
use crate::unitgate;
use crate::wrk;

/// A scenario as `results` runs it.
pub type ScenarioFn = fn(&Common) -> Result<Section>;

/// Every scenario, in the order they run and appear in RESULTS.md.
pub const SCENARIOS: &[(&str, ScenarioFn)] = &[
    ("plain", plain::results_section),
    ("full-chain", full_chain::section),
    ("global-limit", global_limit::section),
    ("routes", routes::section),
    ("tls-handshake", tls::handshake_section),
    ("tls-keepalive", tls::keepalive_section),
    ("h2-streams", tls::h2_section),
    ("idle-conns", idle_conns::section),
    ("callgrind", callgrind::section),
    ("reload", reload_section),
    ("failover", failover_section),
    ("redis-kill", redis_kill_section),
    ("migration", migration_section),
    ("soak", soak_section),
];

/// A timeline scenario's own options at their defaults, with the binary and
/// directories of `c`.
fn timeline_args<T: clap::Args + clap::FromArgMatches>(c: &Common) -> Result<T> {
    #[derive(clap::Parser)]
    struct Wrap<T: clap::Args + clap::FromArgMatches> {
        #[command(flatten)]
        inner: T,
    }
    let mut argv = vec![
        "unitgate-bench".into(),
        "--out".into(),
        c.out.clone().into_os_string(),
    ];
    if let Some(bin) = &c.unitgate {
        argv.extend(["--unitgate".into(), bin.clone().into_os_string()]);
    }
    if c.keep_tmp {
        argv.push("--keep-tmp".into());
    }
    let wrap = <Wrap<T> as clap::Parser>::try_parse_from(argv)
        .context("default options of a timeline scenario")?;
    Ok(wrap.inner)
}

fn failover_section(c: &Common) -> Result<Section> {
    failover::run(&timeline_args(c)?)
}

fn redis_kill_section(c: &Common) -> Result<Section> {
    redis_kill::run(&timeline_args(c)?)
}

fn migration_section(c: &Common) -> Result<Section> {
    migration::run(&timeline_args(c)?)
}

fn soak_section(c: &Common) -> Result<Section> {
    soak::run(&timeline_args(c)?)
}

fn reload_section(c: &Common) -> Result<Section> {
    reload::run(&timeline_args(c)?)
}

/// The one command that reproduces RESULTS.md.
const REPRODUCE: &str =
    "cargo build --release -p unitgate -p unitgate-bench && target/release/unitgate-bench results";

#[derive(Debug, Clone, Args)]
pub struct ResultsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Smoke run: 2 s measured, 1 s warmup, 1 round per scenario.
    #[arg(long)]
    pub quick: bool,
    /// Run only these scenarios (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// Where RESULTS.md and results/ are written.
    #[arg(long, value_name = "DIR", default_value = env!("CARGO_MANIFEST_DIR"))]
    pub dir: PathBuf,
}

/// One scenario's outcome.
pub struct Outcome {
    pub name: String,
    pub result: Result<Section, String>,
}

pub fn run(args: &ResultsArgs) -> Result<()> {
    let common = if args.quick {
        args.common.quick()
    } else {
        args.common.clone()
    };
    common.check()?;
    for name in &args.only {
        if !SCENARIOS.iter().any(|(n, _)| n == name) {
            let known: Vec<&str> = SCENARIOS.iter().map(|(n, _)| *n).collect();
            bail!(
                "--only {name}: no such scenario (known: {})",
                known.join(", ")
            );
        }
    }
    let mut outcomes = Vec::new();
    for (name, f) in SCENARIOS {
        if !args.only.is_empty() && !args.only.iter().any(|n| n == name) {
            continue;
        }
        procs::check_interrupted()?;
        eprintln!("bench: === scenario {name} ===");
        let result = f(&common).map_err(|e| format!("{e:#}"));
        if let Err(e) = &result {
            eprintln!("bench: scenario {name} failed: {e}");
            // Ctrl-C stops the whole run, not just this scenario.
            procs::check_interrupted()?;
        }
        outcomes.push(Outcome {
            name: (*name).to_owned(),
            result,
        });
    }

    let charts_dir = args.dir.join("results");
    fs::create_dir_all(&charts_dir)
        .with_context(|| format!("creating {}", charts_dir.display()))?;
    let mut charts = Vec::new();
    for o in &outcomes {
        let Ok(s) = &o.result else { continue };
        let mut mine = Vec::new();
        if !s.bars.is_empty() {
            let file = format!("cpu-{}.svg", o.name);
            write(
                &charts_dir.join(&file),
                &charts::cpu_bars(&s.title, &s.bars)?,
            )?;
            mine.push(file);
        }
        if let Some(t) = &s.timeline {
            let file = format!("{}-timeline.svg", o.name);
            write(&charts_dir.join(&file), &charts::timeline(&s.title, t)?)?;
            mine.push(file);
        }
        charts.push((o.name.clone(), mine));
    }

    let header = Header {
        machine: Machine::read(),
        versions: versions(&common),
        quick: args.quick,
        common: common.clone(),
    };
    let path = args.dir.join("RESULTS.md");
    let md = match fs::read_to_string(&path) {
        Ok(existing) if !args.only.is_empty() => {
            let provenance = format!(
                "_From one `unitgate-bench results --only {}` run on {} (its settings below); the other sections are from earlier runs._",
                args.only.join(","),
                today()
            );
            merge(&existing, &outcomes, &charts, &provenance)
        }
        _ => render(&header, &outcomes, &charts),
    };
    write(&path, &md)?;
    eprintln!("bench: results written to {}", path.display());

    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("scenarios failed: {} (see RESULTS.md)", failed.join(", "));
    }
    Ok(())
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    let mut cmd = Command::new("date");
    cmd.args(["-u", "+%Y-%m-%d"]);
    procs::run_capture(cmd, Duration::from_secs(5))
        .map(|c| c.stdout.trim().to_owned())
        .unwrap_or_else(|_| "today".into())
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// What RESULTS.md says about the run before the sections.
pub struct Header {
    pub machine: Machine,
    pub versions: Vec<(String, String)>,
    pub quick: bool,
    pub common: Common,
}

/// Versions of everything a full run uses (each "not found" when absent).
fn versions(common: &Common) -> Vec<(String, String)> {
    let first_line = |program: &str, arg: &str| {
        let mut cmd = Command::new(program);
        cmd.arg(arg);
        procs::run_capture(cmd, Duration::from_secs(5))
            .ok()
            .and_then(|c| {
                format!("{}{}", c.stdout, c.stderr)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_owned())
            })
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "not found".into())
    };
    let found = |program: &str| tools::find(program);
    let ug = unitgate::locate(common.unitgate.as_deref()).ok().flatten();
    vec![
        ("rustc".into(), first_line("rustc", "--version")),
        (
            "nginx".into(),
            found("nginx").map_or("not found".into(), |p| nginx::version(&p)),
        ),
        (
            "haproxy".into(),
            found("haproxy").map_or("not found".into(), |p| haproxy::version(&p)),
        ),
        (
            "redis".into(),
            found("redis-server").map_or("not found".into(), |p| redis::version(&p)),
        ),
        (
            "wrk".into(),
            found("wrk").map_or("not found".into(), |p| wrk::version(&p)),
        ),
        (
            "h2load".into(),
            found("h2load").map_or("not found".into(), |p| h2load::version(&p)),
        ),
        (
            "unitgate".into(),
            ug.and_then(|p| unitgate::version(&p))
                .unwrap_or_else(|| "not found or no --version".into()),
        ),
    ]
}

/// RESULTS.md: reproduce, machine, versions, targets, then each section with
/// its charts (`charts`: scenario name → chart files in results/).
pub fn render(h: &Header, outcomes: &[Outcome], charts: &[(String, Vec<String>)]) -> String {
    let mut s = String::new();
    // `writeln!` to a String cannot fail; the results are ignored.
    let _ = writeln!(
        s,
        "# unitgate bench results\n\n\
         Generated by `unitgate-bench results`{}. Reproduce with one command, from the repository root:\n\n\
         ```sh\n{REPRODUCE}\n```\n\n\
         Ratios are taken within one run (contenders alternate within each round); absolute figures move with the machine.\n",
        if h.quick {
            " --quick (a smoke run: 2 s per measurement, 1 round; figures are rough)"
        } else {
            ""
        }
    );
    let c = &h.common;
    let _ = writeln!(
        s,
        "## Machine\n\n- CPU: {} × {}\n- kernel: {}\n- load: wrk, 1 thread, {} connections, {} s measured after {} s warmup, {} round(s)\n",
        h.machine.cpus, h.machine.model, h.machine.kernel, c.connections, c.duration, c.warmup, c.rounds
    );
    s.push_str("## Versions\n\n");
    for (what, v) in &h.versions {
        let _ = writeln!(s, "- {what}: `{v}`");
    }
    s.push_str(
        "\n## Targets\n\n| scenario | target | measured | limit | met |\n|---|---|---:|---:|---|\n",
    );
    s.push_str(&target_rows(outcomes));
    for o in outcomes {
        let (_, text) = section_text(o, charts);
        s.push('\n');
        s.push_str(&text);
    }
    s
}

/// The Targets table's rows of `outcomes`.
fn target_rows(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    for o in outcomes {
        match &o.result {
            Ok(sec) => {
                for t in &sec.targets {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {:.3} | ≤ {:.2} | {} |",
                        o.name,
                        t.what,
                        t.measured,
                        t.limit,
                        if t.met { "yes" } else { "**no**" }
                    );
                }
            }
            Err(_) => {
                let _ = writeln!(s, "| {} | (scenario failed) | — | — | **no** |", o.name);
            }
        }
    }
    s
}

/// One outcome's `## title` section (heading, charts, body): its title and text.
fn section_text(o: &Outcome, charts: &[(String, Vec<String>)]) -> (String, String) {
    let mut s = String::new();
    match &o.result {
        Ok(sec) => {
            let _ = writeln!(s, "## {}\n", sec.title);
            let files = charts
                .iter()
                .find(|(n, _)| n == &o.name)
                .map(|(_, f)| f.as_slice())
                .unwrap_or_default();
            for f in files {
                let _ = writeln!(s, "![{}](results/{f})\n", sec.title);
            }
            s.push_str(sec.markdown.trim_end());
            s.push('\n');
            (sec.title.clone(), s)
        }
        Err(e) => {
            let title = format!("{} (failed)", o.name);
            let _ = writeln!(s, "## {title}\n\nThe scenario failed:\n\n```text\n{e}\n```");
            (title, s)
        }
    }
}

/// A markdown file cut at its `## ` headings (outside code blocks): the
/// text before the first, then (title, text with the heading) per section.
fn split_sections(md: &str) -> (String, Vec<(String, String)>) {
    let mut pre = String::new();
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut in_code = false;
    for line in md.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code {
            if let Some(title) = line.strip_prefix("## ") {
                sections.push((title.trim().to_owned(), String::new()));
            }
        }
        let buf = match sections.last_mut() {
            Some((_, text)) => text,
            None => &mut pre,
        };
        buf.push_str(line);
        buf.push('\n');
    }
    (pre, sections)
}

/// Whether an existing section titled `existing` is the one `title`
/// replaces: the same title, or it with a parenthesised remark after it
/// ("… (appended, 2026-12-02)") or the scenario's "name (failed)".
fn same_section(existing: &str, title: &str, name: &str) -> bool {
    existing == title
        || existing.starts_with(&format!("{title} ("))
        || existing == format!("{name} (failed)")
}

/// RESULTS.md after a `--only` run: `existing` with the sections of the
/// scenarios that ran replaced in place (or appended), their rows of the
/// Targets table replaced (or added), and everything else kept as it was.
/// `provenance` goes under each replaced section's heading.
pub fn merge(
    existing: &str,
    outcomes: &[Outcome],
    charts: &[(String, Vec<String>)],
    provenance: &str,
) -> String {
    let (pre, mut sections) = split_sections(existing);
    for o in outcomes {
        let (title, text) = section_text(o, charts);
        let text = match text.split_once("\n\n") {
            Some((heading, rest)) => format!("{heading}\n\n{provenance}\n\n{rest}"),
            None => text,
        };
        let sec_title = o.result.as_ref().map_or(title.clone(), |s| s.title.clone());
        match sections
            .iter_mut()
            .find(|(t, _)| same_section(t, &sec_title, &o.name))
        {
            Some(slot) => *slot = (title, text),
            None => {
                if let Some((_, last)) = sections.last_mut() {
                    if !last.ends_with("\n\n") {
                        last.push('\n');
                    }
                }
                sections.push((title, text));
            }
        }
    }
    if let Some((_, table)) = sections.iter_mut().find(|(t, _)| t == "Targets") {
        let ran: Vec<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
        let mut kept = String::new();
        let mut last_row = 0;
        for line in table.lines() {
            let scenario = line
                .strip_prefix("| ")
                .and_then(|r| r.split(" |").next())
                .unwrap_or_default();
            if line.starts_with("| ") && ran.contains(&scenario) {
                continue;
            }
            kept.push_str(line);
            kept.push('\n');
            if line.starts_with('|') {
                last_row = kept.len();
            }
        }
        kept.insert_str(last_row, &target_rows(outcomes));
        *table = kept;
    }
    let mut out = pre;
    for (_, text) in sections {
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::section::Target;

    fn header() -> Header {
        Header {
            machine: Machine {
                cpus: 2,
                model: "Test CPU".into(),
                kernel: "6.1".into(),
            },
            versions: vec![("nginx".into(), "nginx/1.22.1".into())],
            quick: true,
            common: Common {
                duration: 2,
                warmup: 1,
                connections: 32,
                rounds: 1,
                unitgate: None,
                floor: None,
                lean: None,
                no_pin: false,
                out: "out".into(),
                keep_tmp: false,
            },
        }
    }

    #[test]
    fn renders_targets_sections_and_failures() {
        let outcomes = vec![
            Outcome {
                name: "routes".into(),
                result: Ok(Section {
                    title: "Route-table scale".into(),
                    markdown: "### Medians\n\n| a | b |\n".into(),
                    bars: vec![("unitgate-1-routes".into(), 90.0)],
                    timeline: None,
                    targets: vec![Target {
                        what: "10 000 routes / 1 route".into(),
                        measured: 1.04,
                        limit: 1.10,
                        met: true,
                    }],
                }),
            },
            Outcome {
                name: "full-chain".into(),
                result: Err("unitgate-full round 1: 300 non-2xx".into()),
            },
        ];
        let charts = vec![("routes".to_owned(), vec!["cpu-routes.svg".to_owned()])];
        let md = render(&header(), &outcomes, &charts);
        for needle in [
            REPRODUCE,
            "- CPU: 2 × Test CPU",
            "- nginx: `nginx/1.22.1`",
            "| routes | 10 000 routes / 1 route | 1.040 | ≤ 1.10 | yes |",
            "| full-chain | (scenario failed) | — | — | **no** |",
            "## Route-table scale",
            "![Route-table scale](results/cpu-routes.svg)",
            "## full-chain (failed)",
            "300 non-2xx",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
    }

    #[test]
    fn merge_replaces_the_sections_and_target_rows_that_ran() {
        let existing = "# r\n\n## Targets\n\n| scenario | target | measured | limit | met |\n|---|---|---:|---:|---|\n| plain | a | 1.000 | ≤ 1.10 | yes |\n| routes | old | 9.000 | ≤ 1.10 | **no** |\n\n## Plain proxy\n\nplain text\n\n```sh\n## not a heading\n```\n\n## Route-table scale (appended, 2026-12-01)\n\nold routes\n";
        let outcomes = vec![
            Outcome {
                name: "routes".into(),
                result: Ok(Section {
                    title: "Route-table scale".into(),
                    markdown: "new routes".into(),
                    targets: vec![Target {
                        what: "new".into(),
                        measured: 1.0,
                        limit: 1.1,
                        met: true,
                    }],
                    ..Section::default()
                }),
            },
            Outcome {
                name: "idle-conns".into(),
                result: Ok(Section {
                    title: "Idle".into(),
                    markdown: "idle body".into(),
                    ..Section::default()
                }),
            },
        ];
        let md = merge(existing, &outcomes, &[], "_fresh_");
        assert!(md.starts_with("# r\n\n## Targets\n"), "{md}");
        assert!(md.contains("| plain | a | 1.000 | ≤ 1.10 | yes |\n| routes | new | 1.000 | ≤ 1.10 | yes |\n\n## Plain proxy"), "{md}");
        assert!(!md.contains("old"), "{md}");
        assert!(md.contains("plain text\n\n```sh\n## not a heading\n```\n\n## Route-table scale\n\n_fresh_\n\nnew routes\n"), "{md}");
        assert!(
            md.ends_with("new routes\n\n## Idle\n\n_fresh_\n\nidle body\n"),
            "{md}"
        );
    }

    #[test]
    fn scenario_names_are_unique() {
        for (i, (a, _)) in SCENARIOS.iter().enumerate() {
            assert!(SCENARIOS[i + 1..].iter().all(|(b, _)| a != b), "{a} twice");
        }
    }
}
