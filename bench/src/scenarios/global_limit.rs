//! The global-limit scenario: plain unitgate vs unitgate with a global rate
//! limit (tokens leased from Redis in batches, one script call per batch,
//! Redis on loopback) whose rate admits everything, alternating in one run. Besides the proxy's CPU it
//! reads Redis's own CPU and script-call count around each measured run, so
//! the cost of the global check is given on both sides of the wire.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::contender::{Contender, Started};
use crate::procs;
use crate::redis;
use crate::scenarios::common::{self, Bench, Common, ReportParts};
use crate::scenarios::{self, fmt_latency, median, Sample};
use crate::section::Section;
use crate::tools;
use crate::unitgate::{Unitgate, Variant};
use crate::unitgate_variants;

/// (unitgate-global's CPU + Redis's) ÷ plain unitgate's, per request.
const GLOBAL_OVER_PLAIN: f64 = 1.20;

/// Redis figures of one measured run.
struct RedisRun {
    contender: String,
    cpu_us: f64,
    calls: u64,
    calls_per_req: f64,
}

pub fn section(c: &Common) -> Result<Section> {
    let ug = c.unitgate_bin()?;
    let redis_bin = tools::ensure(&[tools::REDIS])?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("tools::ensure returned no path"))?;
    let bench = Bench::start(c)?;
    let redis = redis::start(
        &redis_bin,
        &bench.tmp.path().join("redis"),
        bench.pin.map(|p| p.backend),
    )?;
    eprintln!("bench: redis-server on {}", redis.addr);
    let contenders: Vec<Box<dyn Contender>> = vec![
        Box::new(Unitgate::new(ug.clone(), Variant::Local)),
        Box::new(unitgate_variants::global_limit(ug, redis.addr)),
    ];
    let mut started = bench.start_all(&contenders)?;

    // Warmup runs outside the Redis readings, so Redis's CPU is divided by
    // the measured requests only.
    let warmup = Duration::from_secs(c.warmup);
    let runner = bench.scenario(Some(Duration::ZERO));
    let mut samples: Vec<Sample> = Vec::new();
    let mut redis_runs = Vec::new();
    for round in 1..=c.rounds {
        for s in started.iter_mut() {
            if !warmup.is_zero() {
                bench.load.run(&s.url, &s.headers, warmup)?;
            }
            let (sample, r) = measure_with_redis(&runner, s, round, &redis)?;
            eprintln!(
                "bench: round {round}/{} {:<16} {:>8.0} req/s  p50 {:>8}  p99 {:>8}  proxy {:>7.2}  redis {:>6.2} µs/req  {:.4} script calls/req",
                c.rounds,
                sample.contender,
                sample.wrk.rps,
                fmt_latency(sample.wrk.p50),
                fmt_latency(sample.wrk.p99),
                sample.proxy_cpu_us.unwrap_or(0.0),
                r.cpu_us,
                r.calls_per_req
            );
            samples.push(sample);
            redis_runs.push(r);
        }
    }
    common::require_all_ok(&samples, &["unitgate", "unitgate-global"])?;
    let rows = scenarios::summarize(&samples);
    let redis_med = |name: &str, f: &dyn Fn(&RedisRun) -> f64| {
        median(
            redis_runs
                .iter()
                .filter(|r| r.contender == name)
                .map(f)
                .collect(),
        )
    };
    let calls = redis_med("unitgate-global", &|r| r.calls_per_req);
    // Leases take a batch per call, so a call per request is not expected;
    // a measured run with none at all means the limit never reached Redis.
    if let Some(r) = redis_runs
        .iter()
        .find(|r| r.contender == "unitgate-global" && r.calls == 0)
    {
        bail!(
            "unitgate-global made no Redis script call in a measured run ({:.2} µs Redis CPU per request): the global limit is not reaching Redis",
            r.cpu_us
        );
    }
    let plain = common::cpu_of(&rows, "unitgate")?;
    let global = common::cpu_of(&rows, "unitgate-global")?;
    let redis_cpu = redis_med("unitgate-global", &|r| r.cpu_us);
    let extra_gateway = global - plain;
    let over_plain = (global + redis_cpu) / plain;

    let mut md = bench.report_markdown(&ReportParts {
        title: "unitgate bench: global rate limit (Redis)".into(),
        settings: vec![
            "unitgate-global: the plain config plus `[[routes.rate_limits]] key = \"user\", rate = \"10000000/s\", scope = \"global\"` and `[redis] on_failure = \"closed\"` (a Redis failure shows as 429 and fails the run)".into(),
            format!(
                "redis-server on loopback, no persistence, pinned with the backend{}",
                bench.pin.map_or(String::new(), |p| format!(" (CPU {})", p.backend))
            ),
        ],
        rows: &rows,
        samples: &samples,
        started: &started,
        baseline: "unitgate",
        notes: vec![
            format!(
                "cost of the global check per request: {extra_gateway:.2} µs in the gateway (unitgate-global − unitgate) + {redis_cpu:.2} µs in Redis = {:.2} µs; {calls:.4} script calls per request ({:.0} requests per call)",
                extra_gateway + redis_cpu,
                1.0 / calls.max(1e-9)
            ),
            format!(
                "(unitgate-global + Redis) ÷ unitgate, CPU per request: {over_plain:.3} (target ≤ {GLOBAL_OVER_PLAIN:.2}: {})",
                if over_plain <= GLOBAL_OVER_PLAIN { "met" } else { "not met" }
            ),
        ],
        extra_commands: vec!["# redis".into(), redis.command.clone()],
        extra_versions: vec![("redis".into(), redis::version(&redis_bin))],
        load: None,
    });
    md.push_str("\n## Redis per measured run\n\n| round | contender | Redis CPU µs/req | script calls/req |\n|---:|---|---:|---:|\n");
    for (s, r) in samples.iter().zip(&redis_runs) {
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.4} |\n",
            s.round, r.contender, r.cpu_us, r.calls_per_req
        ));
    }
    let section = Section {
        title: "Global rate limit (Redis)".into(),
        markdown: String::new(),
        bars: common::bars(&rows),
        timeline: None,
        targets: vec![common::target(
            "global limit (gateway + Redis) / plain unitgate, CPU per request",
            over_plain,
            GLOBAL_OVER_PLAIN,
        )],
    };
    drop(started);
    drop(redis);
    bench.finish();
    common::publish(c, "global-limit.md", &md, section)
}

/// One measured run (no warmup) with Redis's CPU time and script calls read
/// just around it.
fn measure_with_redis(
    runner: &scenarios::Scenario<'_>,
    s: &mut Started,
    round: usize,
    redis: &redis::Redis,
) -> Result<(Sample, RedisRun)> {
    let cpu_before = procs::cpu_micros(redis.proc.pid())?;
    let calls_before = redis::script_calls(redis.addr)?;
    let sample = runner.measure(s, round)?;
    let cpu_after = procs::cpu_micros(redis.proc.pid())?;
    let calls_after = redis::script_calls(redis.addr)?;
    let n = sample.wrk.requests.max(1) as f64;
    let run = RedisRun {
        contender: sample.contender.clone(),
        cpu_us: cpu_after.saturating_sub(cpu_before) as f64 / n,
        calls: calls_after.saturating_sub(calls_before),
        calls_per_req: calls_after.saturating_sub(calls_before) as f64 / n,
    };
    Ok((sample, run))
}
