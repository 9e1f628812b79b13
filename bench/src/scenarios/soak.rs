//! The soak scenario: ten minutes (by default) of mixed idempotent load
//! through a plain route, a globally rate-limited route (Redis) and a sharded
//! route over units A and B, while the config file is rewritten, routes are
//! created, replaced and deleted through the admin API, A's instances are
//! SIGKILLed and restarted, and Redis is SIGKILLed and restarted once. The
//! gateway's RSS and open fds are sampled throughout. The verdict: no error
//! at all (every request is an idempotent GET), RSS and fds flat.
//!
//! The disruptions are driver [`Action`]s, so they run one after the other
//! on the driver's action thread; the state they share (the config version,
//! whether the admin route exists, the processes they kill) is behind one
//! mutex each. The config file is `soak/config.rs`, the report `soak/report.rs`.

mod config;
mod report;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use crate::contender;
use crate::driver::{self, Action, Load, RequestSpec};
use crate::procs::{self, Managed};
use crate::redis;
use crate::scenarios::timeline::{self, CommonArgs};
use crate::section::Section;
use crate::tools;
use crate::unitgate;

use config::{admin_route_json, config, write_atomic, Live, Ports, ADMIN_ROUTE, LIMIT, SLOTS};

/// How long a change (file rewrite, admin write) gets to show on the data plane.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The load's routes, in the order of their request variants.
pub const ROUTES: [&str; 3] = ["plain", "limited", "sharded"];

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Seconds of load with disruptions (after the warmup).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub duration: u64,
    /// Seconds of load before the first disruption; the RSS and fd baseline
    /// is the sample taken at its end.
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    pub warmup: u64,
    /// Keep-alive connections of the load.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub connections: usize,
    /// Total requests per second.
    #[arg(long, default_value_t = 1000.0, value_name = "RPS")]
    pub rate: f64,
    /// Seconds between config file rewrites.
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    pub reload_every: f64,
    /// Seconds between admin API writes (create, replace, delete a route, in turn).
    #[arg(long, default_value_t = 15.0, value_name = "SECS")]
    pub admin_every: f64,
    /// Seconds between SIGKILLs of one of A's instances (A1, A2 in turn).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub kill_every: f64,
    /// Seconds a killed instance stays down before it is restarted on its port.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub restart_after: f64,
    /// When Redis is SIGKILLed, seconds into the disruption phase (default: the middle).
    #[arg(long, value_name = "SECS")]
    pub redis_kill_at: Option<f64>,
    /// Seconds Redis stays down before it is restarted on its port.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub redis_down: f64,
    /// Seconds between RSS / fd samples of the gateway.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub sample_every: f64,
    /// Timeline bucket, ms.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub bucket_ms: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Requests the bench itself sent to the data plane besides the load (the
/// checks that a change was applied): the access log has a line for each.
static PROBES: AtomicU64 = AtomicU64::new(0);

/// Polls `GET path` on the data plane until it answers `want`; how long that took.
fn wait_for(addr: SocketAddr, path: &str, want: u16) -> Result<Duration> {
    let began = Instant::now();
    loop {
        PROBES.fetch_add(1, Ordering::Relaxed);
        let last = match timeline::http_call(addr, "GET", path, &[], None) {
            Ok((code, _)) if code == want => return Ok(began.elapsed()),
            Ok((code, body)) => format!("{code}: {body}"),
            Err(e) => format!("{e:#}"),
        };
        if began.elapsed() >= APPLY_TIMEOUT {
            bail!("GET {path} did not answer {want} within {APPLY_TIMEOUT:?} (last: {last})");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| anyhow!("a soak lock was poisoned"))
}

/// A running unitgate with the access log on (no `RUST_LOG`), as users run it.
pub struct Gateway {
    pub proc: Managed,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub conf_path: PathBuf,
    pub log: PathBuf,
    pub command: String,
}

fn start_gateway(bin: &Path, dir: &Path, base: Ports, live: Live) -> Result<(Gateway, Ports)> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let conf_path = dir.join("unitgate.toml");
    let log = dir.join("unitgate.log");
    contender::with_free_port("unitgate", |port| {
        let ports = Ports {
            port,
            admin: procs::free_port()?,
            ..base
        };
        fs::write(&conf_path, config(&ports, &live))
            .with_context(|| format!("writing {}", conf_path.display()))?;
        let mut cmd = Command::new(bin);
        unitgate::log_env(&mut cmd, true);
        cmd.arg("run").arg("-c").arg(&conf_path);
        let command = procs::command_line(&cmd);
        let mut proc = Managed::spawn("unitgate", cmd, &log)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
        timeline::wait_status(addr, "/plain/x", &[], &mut proc)?;
        timeline::wait_status(admin, "/healthz", &[], &mut proc)?;
        let gw = Gateway {
            proc,
            addr,
            admin,
            conf_path: conf_path.clone(),
            log: log.clone(),
            command,
        };
        Ok((gw, ports))
    })
}

/// Starts a killed single-process nginx backend again from its own directory
/// (same config, so the same port) and waits for its 200.
fn restart_backend(
    nginx: &Path,
    name: &str,
    dir: &Path,
    addr: SocketAddr,
    n: u32,
) -> Result<Managed> {
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"));
    let mut proc = Managed::spawn(name, cmd, &dir.join(format!("stderr-{n}.log")))?;
    procs::wait_http_ok(addr, &mut proc, Duration::from_secs(15))?;
    Ok(proc)
}

/// One RSS / fd reading of the gateway.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// ms since the start of the load.
    pub at_ms: u64,
    pub rss_kib: u64,
    pub fds: usize,
    /// The machine's 1-minute load average (`/proc/loadavg`), to read the
    /// latency by: other work on the machine shows there.
    pub load1: f64,
}

fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Samples `pid` every `every` from `start` until `stop` is set.
fn sampler(
    pid: u32,
    start: Instant,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<Sample>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        let mut next = start;
        while !stop.load(Ordering::Relaxed) && procs::check_interrupted().is_ok() {
            if Instant::now() >= next {
                if let (Ok(rss_kib), Ok(fds)) = (procs::rss_kib(pid), procs::open_fds(pid)) {
                    out.push(Sample {
                        at_ms: start.elapsed().as_millis() as u64,
                        rss_kib,
                        fds,
                        load1: load_average(),
                    });
                }
                next += every;
            }
            thread::sleep(Duration::from_millis(50));
        }
        out
    })
}

/// Offsets `first, first + every, …` below `before` (seconds).
fn every(first: f64, step: f64, before: f64) -> Vec<f64> {
    (0..)
        .map(|k| first + step * f64::from(k))
        .take_while(|t| *t < before)
        .collect()
}

/// What the report needs of a run besides the driver's records.
pub struct Outcome {
    pub run: driver::Run,
    pub load: Load,
    pub samples: Vec<Sample>,
    /// ms since the start of the load at which the disruptions begin.
    pub warmup_ms: u64,
    pub probes: u64,
    /// Data-plane `" INFO access: "` lines in the gateway's log (the admin
    /// listener's, `admin=true`, left out).
    pub access_lines: u64,
    /// WARN / ERROR lines of the gateway's log, by message, most frequent first.
    pub log_problems: Vec<(String, u64)>,
    /// Lines of the gateway's /metrics after the run that the report quotes.
    pub metrics: Vec<String>,
    pub conf_first: String,
    pub commands: String,
}

pub fn run(args: &SoakArgs) -> Result<Section> {
    if args.duration < 10 || args.connections == 0 || args.rate <= 0.0 {
        bail!("--duration must be at least 10, --connections and --rate positive");
    }
    let intervals = [
        args.reload_every,
        args.admin_every,
        args.kill_every,
        args.restart_after,
        args.redis_down,
        args.sample_every,
    ];
    if intervals.iter().any(|v| !(*v > 0.0 && v.is_finite())) {
        bail!("every interval (--*-every, --restart-after, --redis-down) must be positive");
    }
    let dur = args.duration as f64;
    let redis_at = args.redis_kill_at.unwrap_or(dur / 2.0 + 2.5);
    if !(redis_at > 0.0 && redis_at + args.redis_down < dur) {
        bail!("the Redis kill and restart must fall inside --duration");
    }
    let [nginx_bin, redis_bin] =
        <[PathBuf; 2]>::try_from(tools::ensure(&[tools::NGINX, tools::REDIS])?)
            .map_err(|_| anyhow!("tools::ensure returned the wrong number of paths"))?;
    let bin = args.common.unitgate_bin()?;
    let tmp = args.common.scratch()?;
    let dir = tmp.path();

    let start = |name: &str| timeline::start_backend(&nginx_bin, name, &dir.join(name));
    let plain = start("P")?;
    let a = [start("A1")?, start("A2")?];
    let b = [start("B1")?, start("B2")?];
    let redis_dir = dir.join("redis");
    let redis_port = procs::free_port()?;
    let redis = redis::start_on(&redis_bin, &redis_dir, redis_port, None, "redis.log")?;
    let base = Ports {
        port: 0,
        admin: 0,
        redis: redis_port,
        plain: plain.addr,
        a: [a[0].addr, a[1].addr],
        b: [b[0].addr, b[1].addr],
    };
    let (mut gw, ports) = start_gateway(&bin, &dir.join("unitgate"), base, Live::default())?;
    let conf_first = fs::read_to_string(&gw.conf_path)?;
    eprintln!(
        "bench: soak: unitgate on {} (admin {}), redis on {redis_port}, {} s warmup + {} s",
        gw.addr, gw.admin, args.warmup, args.duration
    );
    let mut commands = vec![
        plain.command.clone(),
        "# (A1, A2, B1, B2 likewise)".into(),
        redis.command.clone(),
        gw.command.clone(),
    ];
    commands.retain(|c| !c.is_empty());

    let live = Arc::new(Mutex::new(Live::default()));
    let a_addrs = [a[0].addr, a[1].addr];
    let [a1, a2] = a;
    let a_procs = Arc::new(Mutex::new([Some(a1.proc), Some(a2.proc)]));
    let redis_proc = Arc::new(Mutex::new(Some(redis.proc)));
    let warm = args.warmup as f64;
    let at = |t: f64| Duration::from_secs_f64(warm + t);
    let mut actions = Vec::new();

    for t in every(args.reload_every, args.reload_every, dur - 5.0) {
        let (live, path, addr) = (Arc::clone(&live), gw.conf_path.clone(), gw.addr);
        actions.push(Action::new(at(t), "reload (file rewrite)", move || {
            let mut l = lock(&live)?;
            l.version += 1;
            write_atomic(&path, &config(&ports, &l))?;
            let want = if l.version % 2 == 1 { 200 } else { 404 };
            let took = wait_for(addr, "/extra/x", want)?;
            Ok(format!(
                "v{}: GET /extra/x answered {want} after {} ms",
                l.version,
                took.as_millis()
            ))
        }));
    }
    for t in every(args.admin_every / 2.0, args.admin_every, dur - 5.0) {
        let (live, admin, addr) = (Arc::clone(&live), gw.admin, gw.addr);
        actions.push(Action::new(at(t), "admin write", move || {
            let mut l = lock(&live)?;
            let n = l.admin_writes;
            l.admin_writes += 1;
            let path = format!("/admin/v1/routes/{ADMIN_ROUTE}");
            let timeout = 3000 + 1000 * u64::from(n % 2);
            let body = admin_route_json(timeout);
            let (method, path, body, ok, now, want) = match n % 3 {
                0 => (
                    "POST",
                    "/admin/v1/routes".to_owned(),
                    Some(body),
                    201,
                    Some(timeout),
                    200,
                ),
                1 => ("PUT", path, Some(body), 200, Some(timeout), 200),
                _ => ("DELETE", path, None, 204, None, 404),
            };
            let (code, resp) = timeline::admin_call(admin, method, &path, body.as_deref())?;
            if code != ok {
                bail!("{method} {path}: {code} (wanted {ok}): {resp}");
            }
            l.admin_route = now;
            let took = wait_for(addr, "/adm/x", want)?;
            Ok(format!(
                "{method} {path}: {code}; GET /adm/x answered {want} after {} ms",
                took.as_millis()
            ))
        }));
    }
    let kills = every(
        args.kill_every / 4.0,
        args.kill_every,
        dur - args.restart_after - 5.0,
    );
    for (k, t) in kills.iter().enumerate() {
        let i = k % 2;
        let name = format!("A{}", i + 1);
        let procs_k = Arc::clone(&a_procs);
        actions.push(Action::new(at(*t), &format!("kill {name}"), move || {
            let g = lock(&procs_k)?;
            let pid = g[i]
                .as_ref()
                .map(Managed::pid)
                .ok_or_else(|| anyhow!("no A{}", i + 1))?;
            timeline::kill9(&[pid])
        }));
        let (procs_r, nginx, bdir, addr) = (
            Arc::clone(&a_procs),
            nginx_bin.clone(),
            dir.join(&name),
            a_addrs[i],
        );
        let n = k as u32 + 2;
        actions.push(Action::new(
            at(t + args.restart_after),
            &format!("restart {name}"),
            move || {
                let mut g = lock(&procs_r)?;
                // Reap the killed one (its drop sees it has exited).
                g[i].take();
                let began = Instant::now();
                g[i] = Some(restart_backend(&nginx, &name, &bdir, addr, n)?);
                Ok(format!(
                    "{name} answering 200 on {addr} {} ms after the start",
                    began.elapsed().as_millis()
                ))
            },
        ));
    }
    {
        let killer = Arc::clone(&redis_proc);
        actions.push(Action::new(at(redis_at), "Redis SIGKILLed", move || {
            let g = lock(&killer)?;
            let pid = g
                .as_ref()
                .map(Managed::pid)
                .ok_or_else(|| anyhow!("no redis"))?;
            timeline::kill9(&[pid])
        }));
        let (restarter, rbin, rdir) = (
            Arc::clone(&redis_proc),
            redis_bin.clone(),
            redis_dir.clone(),
        );
        actions.push(Action::new(
            at(redis_at + args.redis_down),
            "Redis restarted",
            move || {
                let mut g = lock(&restarter)?;
                g.take();
                let began = Instant::now();
                *g = Some(redis::start_on(&rbin, &rdir, redis_port, None, "redis-2.log")?.proc);
                Ok(format!(
                    "answering PING {} ms after the start",
                    began.elapsed().as_millis()
                ))
            },
        ));
    }

    let users: Vec<String> = timeline::users_in_slots(0, 4999, SLOTS, 32)
        .into_iter()
        .chain(timeline::users_in_slots(5000, 9999, SLOTS, 32))
        .collect();
    let total = Duration::from_secs(args.warmup + args.duration);
    let load = Load {
        addr: gw.addr,
        connections: args.connections,
        rate: Some(args.rate),
        duration: total,
        max_requests: (args.rate * total.as_secs_f64() * 1.2) as u64 + 100,
        timeout: Duration::from_secs(5),
        requests: users
            .iter()
            .flat_map(|u| {
                ROUTES.map(|r| RequestSpec::get(&format!("/{r}/x"), &[("x-user-id", u.as_str())]))
            })
            .collect(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = sampler(
        gw.proc.pid(),
        Instant::now(),
        Duration::from_secs_f64(args.sample_every),
        Arc::clone(&stop),
    );
    let run = driver::run(&load, actions, &[]);
    stop.store(true, Ordering::Relaxed);
    let samples = sampling
        .join()
        .map_err(|_| anyhow!("the sampler thread panicked"))?;
    let run = run?;
    gw.proc.ensure_running()?;
    let metrics = metrics_lines(gw.admin);
    drop(gw.proc);
    drop(a_procs);
    drop(redis_proc);
    drop((plain, b));
    let (access_lines, log_problems) = read_log(&gw.log)?;
    let total = run.total();
    eprintln!(
        "bench: soak: {} requests, {} errors, {} RSS / fd samples",
        total.requests,
        total.errors,
        samples.len()
    );
    let outcome = Outcome {
        run,
        load,
        samples,
        warmup_ms: args.warmup * 1000,
        probes: PROBES.load(Ordering::Relaxed),
        access_lines,
        log_problems,
        metrics,
        conf_first,
        commands: commands.join("\n"),
    };
    let section = report::section(args, &outcome);
    args.common.finish(tmp);
    Ok(section)
}

/// The exit status of `unitgate-bench soak`: an error (so a non-zero exit)
/// when a target of the section was not met.
pub fn verdict(s: &Section) -> Result<()> {
    let missed: Vec<&str> = s
        .targets
        .iter()
        .filter(|t| !t.met)
        .map(|t| t.what.as_str())
        .collect();
    if !missed.is_empty() {
        bail!("soak: FAIL ({})", missed.join("; "));
    }
    Ok(())
}

/// The reload and Redis lines of the gateway's /metrics, and its crossing,
/// degraded and rate-limited counters that are not 0.
fn metrics_lines(admin: SocketAddr) -> Vec<String> {
    let Ok((200, body)) = timeline::http_call(admin, "GET", "/metrics", &[], None) else {
        return vec!["(metrics unreadable)".into()];
    };
    body.lines()
        .filter(|l| {
            let nonzero = !l.ends_with(" 0");
            l.starts_with("unitgate_config_reloads_total")
                || l.starts_with("unitgate_redis_up")
                || (nonzero
                    && (l.starts_with("unitgate_cross_unit_total")
                        || l.starts_with("unitgate_degraded_total")
                        || l.starts_with("unitgate_rate_limited_total")))
        })
        .map(str::to_owned)
        .collect()
}

/// Counts the access-log lines of the gateway's log and its WARN / ERROR
/// lines by message (the text after the level, digits folded to `N` so that
/// addresses and counts do not split one message into many).
fn read_log(path: &Path) -> Result<(u64, Vec<(String, u64)>)> {
    use std::io::BufRead;
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut access = 0;
    let mut problems: std::collections::BTreeMap<String, u64> = Default::default();
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let line = String::from_utf8_lossy(&line);
        if line.contains(unitgate::ACCESS_LINE) {
            if !line.contains(" admin=true ") {
                access += 1;
            }
            continue;
        }
        let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
            continue;
        };
        let msg: String = line[at + 1..]
            .chars()
            .map(|c| if c.is_ascii_digit() { 'N' } else { c })
            .take(160)
            .collect();
        *problems.entry(msg).or_default() += 1;
    }
    let mut v: Vec<(String, u64)> = problems.into_iter().collect();
    v.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    Ok((access, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_stay_inside_the_run() {
        assert_eq!(every(20.0, 20.0, 55.0), vec![20.0, 40.0]);
        assert_eq!(every(15.0, 60.0, 600.0 - 15.0).len(), 10);
        assert!(every(5.0, 1.0, 5.0).is_empty());
    }
}
