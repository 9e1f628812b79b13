//! The soak's markdown section: figures, errors, disruptions, RSS and fds,
//! the gateway's log, the verdict and its targets.

use std::fmt::Write as _;

use crate::driver::{fmt_us, Record, Summary};
use crate::scenarios::timeline;
use crate::section::{Section, Target};

use super::{Outcome, Sample, SoakArgs, ROUTES};

/// RSS may grow to this factor of the baseline, plus [`RSS_SLACK_KIB`].
const RSS_FACTOR: f64 = 1.25;
const RSS_SLACK_KIB: u64 = 8 * 1024;
/// Open fds may grow by this many over the baseline.
const FD_SLACK: usize = 16;
/// Errors listed one by one (the rest are only counted).
const ERRORS_LISTED: usize = 20;

/// The kind of a disruption, from its action label.
fn kind(label: &str) -> &'static str {
    if label.starts_with("reload") {
        "config file rewrite"
    } else if label.starts_with("admin") {
        "admin API write"
    } else if label.starts_with("kill ") {
        "A instance SIGKILLed"
    } else if label.starts_with("restart ") {
        "A instance restarted"
    } else if label.contains("SIGKILL") {
        "Redis SIGKILLed"
    } else {
        "Redis restarted"
    }
}

const KINDS: [&str; 6] = [
    "config file rewrite",
    "admin API write",
    "A instance SIGKILLed",
    "A instance restarted",
    "Redis SIGKILLed",
    "Redis restarted",
];

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The baseline (first sample at or after the warmup), the middle and the
/// last sample taken while the load ran, and the largest after the warmup.
pub struct Memory {
    pub start: Sample,
    pub middle: Sample,
    pub end: Sample,
    pub max_rss_kib: u64,
    pub max_fds: usize,
}

fn memory(o: &Outcome) -> Option<Memory> {
    let end_ms = o.run.duration.as_millis() as u64;
    let during: Vec<Sample> = o
        .samples
        .iter()
        .copied()
        .filter(|s| s.at_ms >= o.warmup_ms && s.at_ms <= end_ms)
        .collect();
    let start = *during.first()?;
    let end = *during.last()?;
    let mid_ms = (o.warmup_ms + end_ms) / 2;
    let middle = *during.iter().find(|s| s.at_ms >= mid_ms).unwrap_or(&end);
    Some(Memory {
        start,
        middle,
        end,
        max_rss_kib: during.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        max_fds: during.iter().map(|s| s.fds).max().unwrap_or(0),
    })
}

pub fn section(args: &SoakArgs, o: &Outcome) -> Section {
    let run = &o.run;
    let total = run.total();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "unitgate (`threads = 2`, in unit A, the access log on: no `RUST_LOG`, stderr to a file) \
         with three routes: `plain` (`/plain`, local placement, one nginx), `limited` (`/limited`, \
         the same backend behind a global per-user limit of `{}`, `[redis] on_failure = \"local\"`, \
         `timeout_ms = 50`) and `sharded` (`/sharded`, placement by `x-user-id` over units A and \
         B, two single-process nginx instances each, `retries = 2`, health checks every 500 ms, \
         outlier ejection after 3 failures). Half of the 64 users are homed in A, half in B; \
         every request is a GET (idempotent).\n\n\
         - load: {} (the bench's own driver); the first {} s are the warmup (no disruption), \
         the next {} s have the disruptions\n\
         - every {:.0} s the config file is rewritten (temp file + rename; the gateway's watcher \
         applies it, no admin call): odd versions add a route `/extra`, and the plain route's \
         `timeout_ms` changes every other version; each rewrite waits until `GET /extra/x` \
         answers 200 (odd) or 404 (even)\n\
         - every {:.0} s an admin API write, in turn `POST /admin/v1/routes` (create \
         `soak-admin` on `/adm`), `PUT /admin/v1/routes/soak-admin` (another `timeout_ms`), \
         `DELETE /admin/v1/routes/soak-admin`; each waits until `GET /adm/x` answers 200 or 404 \
         (the file rewrites keep the admin route while it exists)\n\
         - every {:.0} s one of A's instances (A1, A2 in turn) gets SIGKILL, and is started \
         again {:.0} s later on the same port\n\
         - once, Redis gets SIGKILL and is started again {:.0} s later on the same port\n\
         - every {:.0} s the gateway's RSS (`VmRSS` of `/proc/PID/status`) and open fds \
         (entries of `/proc/PID/fd`) are sampled\n",
        super::LIMIT,
        o.load.describe(),
        args.warmup,
        args.duration,
        args.reload_every,
        args.admin_every,
        args.kill_every,
        args.restart_after,
        args.redis_down,
        args.sample_every,
    );

    let _ = writeln!(
        md,
        "| route | {}|---|{}| all | {} |",
        Summary::HEADER,
        Summary::ALIGN,
        total.cells()
    );
    for (k, r) in ROUTES.iter().enumerate() {
        let s = run.summary_of(
            |x| x.variant as usize % ROUTES.len() == k,
            run.elapsed.as_millis() as u64,
        );
        let _ = writeln!(md, "| `{r}` | {} |", s.cells());
    }
    md.push('\n');
    md.push_str(&timeline::errors_markdown(run));
    md.push_str(&errors_listed(o));

    md.push_str("\n### Disruptions\n\n");
    md.push_str(&disruptions(o));

    let mem = memory(o);
    md.push_str("\n### RSS and open fds of the gateway\n\n");
    md.push_str(&memory_markdown(o, mem.as_ref()));

    md.push_str("\n### Over time\n\n");
    md.push_str(&windows(o));

    md.push_str("\n### The gateway's log and metrics\n\n");
    let expected = total.requests + o.probes;
    let _ = writeln!(
        md,
        "- data-plane access-log lines: {} for {} load requests + {} of the bench's own checks = {expected} \
         (a few more are the start-up probes){}",
        o.access_lines,
        total.requests,
        o.probes,
        if o.access_lines >= expected {
            String::new()
        } else {
            format!(" (**{} missing**)", expected - o.access_lines)
        }
    );
    if o.log_problems.is_empty() {
        md.push_str("- WARN / ERROR lines: none\n");
    } else {
        let n: u64 = o.log_problems.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            md,
            "- WARN / ERROR lines: {n}, by message (digits as `N`, first 15):"
        );
        for (msg, k) in o.log_problems.iter().take(15) {
            let _ = writeln!(md, "  - {k} × `{}`", msg.replace('`', "'"));
        }
    }
    md.push_str(
        "- /metrics after the run (reloads, Redis; crossing, degraded and rate-limited counters when not 0):\n\n```text\n",
    );
    for l in &o.metrics {
        md.push_str(l);
        md.push('\n');
    }
    md.push_str("```\n");

    let (verdict, targets) = verdict(total.errors, mem.as_ref(), failed_actions(o));
    let _ = writeln!(md, "\n{verdict}");
    let _ = writeln!(
        md,
        "\nThe timeline chart: {} ms buckets; its events are the instance and Redis kills \
         and restarts (the rewrites and admin writes are too many to mark).\n\n\
         ### Commands and config\n\n```sh\n{}\n```\n\nThe config as started (version 0):\n\n\
         ```toml\n{}```",
        args.bucket_ms, o.commands, o.conf_first
    );
    let mut tl = run.timeline(args.bucket_ms);
    tl.events
        .retain(|(_, l)| l.starts_with("kill") || l.starts_with("Redis"));
    Section {
        title: "Soak".into(),
        markdown: md,
        bars: Vec::new(),
        timeline: Some(tl),
        targets,
    }
}

fn failed_actions(o: &Outcome) -> usize {
    o.run.actions.iter().filter(|a| a.result.is_err()).count()
}

/// The verdict line and the targets: no errors, RSS and fds flat, every
/// disruption done.
fn verdict(errors: u64, mem: Option<&Memory>, failed: usize) -> (String, Vec<Target>) {
    let mut why = Vec::new();
    let mut targets = vec![Target {
        what: "soak: errors (idempotent requests)".into(),
        measured: errors as f64,
        limit: 0.0,
        met: errors == 0,
    }];
    if errors > 0 {
        why.push(format!("{errors} errors"));
    }
    match mem {
        Some(m) => {
            let rss_limit = (m.start.rss_kib as f64 * RSS_FACTOR) as u64 + RSS_SLACK_KIB;
            let fd_limit = m.start.fds + FD_SLACK;
            let rss_ok = m.end.rss_kib <= rss_limit;
            let fd_ok = m.end.fds <= fd_limit;
            if !rss_ok {
                why.push(format!(
                    "RSS end {} > {} (1.25 × {} + 8 MiB)",
                    mib(m.end.rss_kib),
                    mib(rss_limit),
                    mib(m.start.rss_kib)
                ));
            }
            if !fd_ok {
                why.push(format!(
                    "fds end {} > {fd_limit} ({} + {FD_SLACK})",
                    m.end.fds, m.start.fds
                ));
            }
            targets.push(Target {
                what: "soak: RSS at the end, MiB (≤ 1.25 × after warmup + 8)".into(),
                measured: m.end.rss_kib as f64 / 1024.0,
                limit: rss_limit as f64 / 1024.0,
                met: rss_ok,
            });
            targets.push(Target {
                what: "soak: open fds at the end (≤ after warmup + 16)".into(),
                measured: m.end.fds as f64,
                limit: fd_limit as f64,
                met: fd_ok,
            });
        }
        None => {
            why.push("no RSS / fd sample after the warmup".into());
            targets.push(Target {
                what: "soak: RSS / fd samples".into(),
                measured: 0.0,
                limit: 1.0,
                met: false,
            });
        }
    }
    if failed > 0 {
        why.push(format!("{failed} disruptions failed"));
    }
    targets.push(Target {
        what: "soak: failed disruptions".into(),
        measured: failed as f64,
        limit: 0.0,
        met: failed == 0,
    });
    let line = if why.is_empty() {
        "**Verdict: PASS** — 0 errors, RSS and open fds flat, every disruption done.".to_owned()
    } else {
        format!("**Verdict: FAIL** — {}.", why.join("; "))
    };
    (line, targets)
}

/// The first errors one by one: when, which route, what, and the last
/// disruption before it.
fn errors_listed(o: &Outcome) -> String {
    let errs: Vec<&Record> = o.run.records.iter().filter(|r| !r.ok()).collect();
    if errs.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\nThe first {} errors (time of completion; latency; the last disruption begun before it was sent):\n\n",
        errs.len().min(ERRORS_LISTED)
    );
    for r in errs.iter().take(ERRORS_LISTED) {
        let sent_ms = r.sent_us() / 1000;
        let last = o
            .run
            .actions
            .iter()
            .filter(|a| a.ran && a.start_ms <= sent_ms)
            .max_by_key(|a| a.start_ms)
            .map_or("none".to_owned(), |a| {
                format!("{} at {:.3} s", a.label, a.start_ms as f64 / 1000.0)
            });
        let _ = writeln!(
            s,
            "- {:.3} s: `{}` {} after {} (last disruption: {last})",
            r.done_us as f64 / 1e6,
            ROUTES[r.variant as usize % ROUTES.len()],
            match r.status {
                0 => "no response".to_owned(),
                c => format!("status {c}"),
            },
            fmt_us(r.latency_us)
        );
    }
    s
}

/// Per kind: how many ran, failed, were skipped, and the longest; then every
/// failure.
fn disruptions(o: &Outcome) -> String {
    let mut s = String::from(
        "| disruption | done | failed | skipped | longest (incl. the check it was applied) |\n|---|---:|---:|---:|---:|\n",
    );
    for k in KINDS {
        let mine: Vec<_> = o
            .run
            .actions
            .iter()
            .filter(|a| kind(&a.label) == k)
            .collect();
        let done = mine.iter().filter(|a| a.ran && a.result.is_ok()).count();
        let failed = mine.iter().filter(|a| a.ran && a.result.is_err()).count();
        let skipped = mine.iter().filter(|a| !a.ran).count();
        let longest = mine.iter().filter(|a| a.ran).map(|a| a.took).max();
        let _ = writeln!(
            s,
            "| {k} | {done} | {failed} | {skipped} | {} |",
            longest.map_or("—".into(), |d| format!("{} ms", d.as_millis()))
        );
    }
    for a in o.run.actions.iter().filter(|a| a.result.is_err()) {
        let _ = writeln!(
            s,
            "\n- at {:.3} s {} **failed**: {}",
            a.start_ms as f64 / 1000.0,
            a.label,
            a.result.as_ref().err().map_or("", String::as_str)
        );
    }
    let redis: Vec<String> = o
        .run
        .actions
        .iter()
        .filter(|a| a.label.starts_with("Redis"))
        .map(|a| {
            format!(
                "{} at {:.1} s ({})",
                a.label,
                a.start_ms as f64 / 1000.0,
                a.result.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    let _ = writeln!(s, "\n{}.", redis.join("; "));
    s
}

fn memory_markdown(o: &Outcome, mem: Option<&Memory>) -> String {
    let Some(m) = mem else {
        return "No sample was taken after the warmup.\n".into();
    };
    let mut s =
        String::from("| when | at | RSS | open fds | load avg |\n|---|---:|---:|---:|---:|\n");
    for (label, x) in [
        ("after the warmup (baseline)", m.start),
        ("middle", m.middle),
        ("end (last sample under load)", m.end),
    ] {
        let _ = writeln!(
            s,
            "| {label} | {:.0} s | {} | {} | {:.2} |",
            x.at_ms as f64 / 1000.0,
            mib(x.rss_kib),
            x.fds,
            x.load1
        );
    }
    let _ = writeln!(
        s,
        "| max after the warmup | | {} | {} | |",
        mib(m.max_rss_kib),
        m.max_fds
    );
    let _ = writeln!(
        s,
        "\nLimits: RSS at the end ≤ 1.25 × baseline + 8 MiB = {}; open fds at the end ≤ baseline + {FD_SLACK} = {}. \
         {} samples in all (the first at {:.0} s: {}, {} fds). The load average is the \
         machine's (1 minute, `/proc/loadavg`): other work on this 2-core machine raises the \
         latency, not the errors.",
        mib((m.start.rss_kib as f64 * RSS_FACTOR) as u64 + RSS_SLACK_KIB),
        m.start.fds + FD_SLACK,
        o.samples.len(),
        o.samples.first().map_or(0.0, |x| x.at_ms as f64 / 1000.0),
        o.samples.first().map_or("-".into(), |x| mib(x.rss_kib)),
        o.samples.first().map_or(0, |x| x.fds),
    );
    s
}

/// The run in windows (60 s, or 10 s for runs under 5 minutes): requests,
/// errors, latency, disruptions begun, and the last RSS / fd sample in it.
fn windows(o: &Outcome) -> String {
    let run = &o.run;
    let total_ms = run.duration.as_millis() as u64;
    let w = if total_ms >= 300_000 { 60_000 } else { 10_000 };
    let mut s = String::from(
        "| window | requests | errors | p50 | p99 | max | disruptions begun | RSS | fds | load avg |\n|---|---:|---:|---:|---:|---:|---|---:|---:|---:|\n",
    );
    let n = total_ms.div_ceil(w);
    for i in 0..n {
        let (from, to) = (
            i * w,
            if i + 1 == n {
                u64::MAX / 1000
            } else {
                (i + 1) * w
            },
        );
        let sum = run.summary(from, to);
        let mut begun: Vec<(&str, usize)> = Vec::new();
        for a in run
            .actions
            .iter()
            .filter(|a| a.ran && a.start_ms >= from && a.start_ms < to)
        {
            let k = kind(&a.label);
            match begun.iter_mut().find(|(x, _)| *x == k) {
                Some((_, c)) => *c += 1,
                None => begun.push((k, 1)),
            }
        }
        let sample = o
            .samples
            .iter()
            .rev()
            .find(|x| x.at_ms >= from && x.at_ms < to);
        let _ = writeln!(
            s,
            "| {}–{} s | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            from / 1000,
            (from + w).min(total_ms) / 1000,
            sum.requests,
            sum.errors,
            fmt_us(sum.p50_us),
            fmt_us(sum.p99_us),
            fmt_us(sum.max_us),
            if begun.is_empty() {
                "—".to_owned()
            } else {
                begun
                    .iter()
                    .map(|(k, c)| format!("{c}× {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            sample.map_or("-".into(), |x| mib(x.rss_kib)),
            sample.map_or("-".into(), |x| x.fds.to_string()),
            sample.map_or("-".into(), |x| format!("{:.2}", x.load1)),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, rss_kib: u64, fds: usize) -> Sample {
        Sample {
            at_ms,
            rss_kib,
            fds,
            load1: 0.0,
        }
    }

    fn mem(start: Sample, end: Sample) -> Memory {
        Memory {
            start,
            middle: start,
            end,
            max_rss_kib: end.rss_kib.max(start.rss_kib),
            max_fds: end.fds.max(start.fds),
        }
    }

    #[test]
    fn passes_when_flat_and_error_free() {
        let m = mem(sample(0, 40_000, 50), sample(1, 40_000 * 5 / 4 + 8192, 66));
        let (line, targets) = verdict(0, Some(&m), 0);
        assert!(line.starts_with("**Verdict: PASS**"), "{line}");
        assert!(targets.iter().all(|t| t.met), "{targets:?}");
    }

    #[test]
    fn fails_and_says_why() {
        let m = mem(sample(0, 40_000, 50), sample(1, 40_000 * 5 / 4 + 8193, 67));
        let (line, targets) = verdict(3, Some(&m), 1);
        assert!(line.starts_with("**Verdict: FAIL**"), "{line}");
        for needle in [
            "3 errors",
            "RSS end",
            "fds end 67 > 66",
            "1 disruptions failed",
        ] {
            assert!(line.contains(needle), "{needle} in {line}");
        }
        assert_eq!(targets.iter().filter(|t| !t.met).count(), 4);
        let (none, _) = verdict(0, None, 0);
        assert!(none.contains("no RSS / fd sample"), "{none}");
    }

    #[test]
    fn kinds_of_labels() {
        assert_eq!(kind("reload (file rewrite)"), "config file rewrite");
        assert_eq!(kind("admin write"), "admin API write");
        assert_eq!(kind("kill A2"), "A instance SIGKILLed");
        assert_eq!(kind("restart A1"), "A instance restarted");
        assert_eq!(kind("Redis SIGKILLed"), "Redis SIGKILLed");
        assert_eq!(kind("Redis restarted"), "Redis restarted");
    }
}
