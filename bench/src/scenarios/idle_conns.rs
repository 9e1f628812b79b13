//! `idle-conns`: what an idle keep-alive client connection costs in memory.
//! nginx (1 worker), unitgate (the plain config: one route to the backend,
//! every other key at its default) and the bare-pingora floor (and the lean
//! forwarder prototype) each get `--conns` client connections (10 000) that
//! each make one request and then stay silent; the server's resident set
//! size before, with them, and after they are closed gives KiB per idle
//! connection. Each round starts every contender fresh.
//!
//! Connections are opened in batches of `--batch` (connect all, one request
//! on each, read every response), over loopback to an ephemeral port, with
//! a deadline for the whole opening (`--open-within`). Idle timeouts are set
//! far above the measurement: unitgate `client_idle_timeout_ms`, nginx
//! `keepalive_timeout` (pingora's own HTTP/1 keep-alive, in the floor and
//! the lean forwarder, has no idle limit once a request has been read).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::contender::{Contender, StartCtx, Started};
use crate::floor::{self, Floor, Lean};
use crate::http1::{self, Conn};
use crate::nginx;
use crate::procs;
use crate::report;
use crate::scenarios::common::{self, Bench, Common};
use crate::scenarios::median;
use crate::section::Section;
use crate::unitgate_variants;

/// How long the servers keep an idle client: far above a round (a few
/// seconds), so no connection is closed for idleness while measured.
const IDLE_SECS: u64 = 600;

/// Connections whose reuse is checked after the measurement (spread evenly).
const REUSE_SAMPLE: usize = 10;

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Idle client connections per contender.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub conns: usize,
    /// Connections opened (and sent their one request) at a time.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub batch: usize,
    /// Seconds within which all connections must be open, else the run fails.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub open_within: u64,
}

/// The subcommand: the report on stdout and in `out/idle-conns.md`.
pub fn run(args: &IdleArgs) -> Result<()> {
    measure(args).map(drop)
}

/// As `results` runs it: the defaults, with the binaries and rounds of `c`.
pub fn section(c: &Common) -> Result<Section> {
    measure(&IdleArgs {
        common: c.clone(),
        conns: 10_000,
        batch: 100,
        open_within: 60,
    })
}

/// nginx as the proxy, made to hold many idle clients.
struct NginxIdle {
    nginx: PathBuf,
    conns: usize,
}

impl Contender for NginxIdle {
    fn name(&self) -> &str {
        "nginx"
    }

    fn start(&self, ctx: &StartCtx<'_>) -> Result<Started> {
        let (dir, backend, conns) = (ctx.dir.to_owned(), ctx.backend, self.conns);
        let n = nginx::start_conf(&self.nginx, "nginx proxy", ctx.dir, ctx.cpu, |port| {
            nginx::many_connections_conf(&dir, port, backend, conns, IDLE_SECS)
        })?;
        let mut s = Started::new(self.name(), format!("http://{}/", n.addr));
        s.measured = Some(n.worker);
        s.commands.push(n.command);
        s.files.push((n.conf_path, n.conf));
        s.version = Some(nginx::version(&self.nginx));
        s.own(n.master);
        Ok(s)
    }
}

/// One contender's figures in one round.
#[derive(Debug, Clone)]
struct Sample {
    contender: String,
    round: usize,
    before_kib: u64,
    with_kib: u64,
    after_kib: u64,
    /// Descriptors the server has open with the clients, and after closing.
    fds_with: usize,
    fds_after: usize,
    open_secs: f64,
    /// Connections still open (no EOF) when the RSS was read.
    still_open: usize,
    /// Of [`REUSE_SAMPLE`] idle connections, how many answered a second request.
    reused_ok: usize,
    /// A request on a new connection while holding the idle ones.
    fresh_status: u16,
    fresh_ms: f64,
}

impl Sample {
    fn kib_per_conn(&self, conns: usize) -> f64 {
        (self.with_kib as f64 - self.before_kib as f64) / conns as f64
    }
}

fn measure(args: &IdleArgs) -> Result<Section> {
    if args.conns == 0 || args.batch == 0 {
        bail!("--conns and --batch must be at least 1");
    }
    // The bench holds every client end; the servers inherit the limit
    // (unitgate raises its own soft limit as well).
    let wanted = args.conns as u64 * 2 + 1024;
    let nofile = procs::raise_open_files(wanted)?;
    if nofile < args.conns as u64 + 256 {
        bail!(
            "RLIMIT_NOFILE is {nofile}: too low for {} connections (raise the hard limit)",
            args.conns
        );
    }
    let c = &args.common;
    let ug = c.unitgate_bin()?;
    let bench = Bench::start(c)?;
    let mut notes = Vec::new();
    let mut contenders: Vec<Box<dyn Contender>> = vec![
        Box::new(NginxIdle {
            nginx: bench.nginx_bin.clone(),
            conns: args.conns,
        }),
        Box::new(unitgate_variants::idle(ug, IDLE_SECS * 1000)),
    ];
    match floor::locate(c.floor.as_deref())? {
        Some(bin) => {
            contenders.push(Box::new(Floor::new(bin.clone())));
            contenders.push(Box::new(Floor {
                read_buffer: Some(0),
                ..Floor::new(bin)
            }));
        }
        None => notes.push("no unitgate-floor binary beside unitgate-bench; floor left out".into()),
    }
    match floor::locate_lean(c.lean.as_deref())? {
        Some(bin) => {
            contenders.push(Box::new(Lean {
                bin: bin.clone(),
                read_buffer: None,
            }));
            contenders.push(Box::new(Lean {
                bin,
                read_buffer: Some(0),
            }));
        }
        None => notes.push("no unitgate-lean binary beside unitgate-bench; lean left out".into()),
    }

    let mut samples = Vec::new();
    let mut started_once: Vec<Started> = Vec::new();
    for round in 1..=c.rounds {
        for contender in &contenders {
            procs::check_interrupted()?;
            let dir = bench
                .tmp
                .path()
                .join(format!("{}-r{round}", contender.name()));
            let ctx = StartCtx {
                dir: &dir,
                backend: bench.backend.addr,
                cpu: bench.pin.map(|p| p.proxy),
                slowdown: 1,
            };
            let mut s = contender
                .start(&ctx)
                .with_context(|| format!("starting {}", contender.name()))?;
            let sample = hold(&mut s, round, args)
                .with_context(|| format!("{} round {round}", contender.name()))?;
            eprintln!(
                "bench: round {round}/{} {:<9} RSS {:>7} KiB → {:>7} KiB with {} idle ({:.2} KiB/conn), {:>7} KiB after closing; opened in {:.2} s",
                c.rounds,
                sample.contender,
                sample.before_kib,
                sample.with_kib,
                args.conns,
                sample.kib_per_conn(args.conns),
                sample.after_kib,
                sample.open_secs
            );
            samples.push(sample);
            // Keep the first round's commands and configs for the report;
            // stop the processes now, so one server at a time holds clients.
            if round == 1 {
                let mut kept = Started::new(&s.name, s.url.clone());
                kept.commands = std::mem::take(&mut s.commands);
                kept.files = std::mem::take(&mut s.files);
                kept.version = s.version.clone();
                started_once.push(kept);
            }
            drop(s);
        }
    }

    let names: Vec<String> = contenders.iter().map(|c| c.name().to_owned()).collect();
    let md = markdown(args, &bench, &names, &samples, &started_once, &notes);
    let section = Section {
        title: "Idle keep-alive connections: memory".into(),
        markdown: String::new(),
        bars: Vec::new(),
        timeline: None,
        targets: Vec::new(),
    };
    bench.finish();
    common::publish(c, "idle-conns.md", &md, section)
}

/// One round of one started contender: RSS before, open the idle
/// connections, RSS with them, the checks, close them, RSS after.
fn hold(s: &mut Started, round: usize, args: &IdleArgs) -> Result<Sample> {
    let pid = s
        .measured
        .context("the contender has no measured process")?;
    let addr: SocketAddr = s
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("parsing the address of {}", s.url))?;
    let req = http1::request(addr, "/", &s.headers);
    thread::sleep(Duration::from_millis(500));
    let before_kib = procs::rss_kib(pid)?;

    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.open_within);
    let mut conns = open_idle(addr, args.conns, args.batch, deadline, &req)?;
    let open_secs = t0.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(1));
    s.ensure_running()?;
    let with_kib = procs::rss_kib(pid)?;
    let fds_with = procs::open_fds(pid)?;
    let still_open = still_open(&conns);

    let t = Instant::now();
    let fresh_status = Conn::connect(addr, Duration::from_secs(5))
        .and_then(|mut c| c.exchange(&req))
        .context("a request on a new connection while holding the idle ones")?;
    let fresh_ms = t.elapsed().as_secs_f64() * 1e3;
    let step = (conns.len() / REUSE_SAMPLE).max(1);
    let reused_ok = conns
        .iter_mut()
        .step_by(step)
        .take(REUSE_SAMPLE)
        .map(|c| c.exchange(&req).is_ok_and(|st| st == 200))
        .filter(|ok| *ok)
        .count();

    drop(conns);
    thread::sleep(Duration::from_secs(1));
    let after_kib = procs::rss_kib(pid)?;
    let fds_after = procs::open_fds(pid)?;
    Ok(Sample {
        contender: s.name.clone(),
        round,
        before_kib,
        with_kib,
        after_kib,
        fds_with,
        fds_after,
        open_secs,
        still_open,
        reused_ok,
        fresh_status,
        fresh_ms,
    })
}

/// Opens `n` connections, `batch` at a time, each with one request whose
/// 200 is read; fails on any other answer or past `deadline`.
fn open_idle(
    addr: SocketAddr,
    n: usize,
    batch: usize,
    deadline: Instant,
    req: &[u8],
) -> Result<Vec<Conn>> {
    let timeout = Duration::from_secs(5);
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    while conns.len() < n {
        procs::check_interrupted()?;
        if Instant::now() >= deadline {
            bail!(
                "only {} of {n} connections open by the deadline",
                conns.len()
            );
        }
        let k = batch.min(n - conns.len());
        let first = conns.len();
        let mut fresh = Vec::with_capacity(k);
        for i in 0..k {
            fresh.push(
                Conn::connect(addr, timeout)
                    .with_context(|| format!("opening connection {}", first + i + 1))?,
            );
        }
        for (i, c) in fresh.iter_mut().enumerate() {
            c.send(req)
                .with_context(|| format!("request on connection {}", first + i + 1))?;
        }
        for (i, c) in fresh.iter_mut().enumerate() {
            let st = c
                .read_response()
                .with_context(|| format!("response on connection {}", first + i + 1))?;
            if st != 200 {
                bail!("connection {}: status {st}, not 200", first + i + 1);
            }
        }
        conns.extend(fresh);
    }
    Ok(conns)
}

/// Connections the server has not closed (a non-blocking peek would block:
/// no EOF, no data).
fn still_open(conns: &[Conn]) -> usize {
    conns
        .iter()
        .filter(|c| {
            if c.stream.set_nonblocking(true).is_err() {
                return false;
            }
            let mut b = [0u8; 1];
            let open = matches!(c.stream.peek(&mut b),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            let _ = c.stream.set_nonblocking(false);
            open
        })
        .count()
}

fn mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

fn markdown(
    args: &IdleArgs,
    bench: &Bench,
    names: &[String],
    samples: &[Sample],
    started: &[Started],
    notes: &[String],
) -> String {
    let n = args.conns;
    let mut s = String::new();
    let _ = writeln!(s, "# unitgate bench: idle keep-alive connections, memory\n");
    for line in [
        format!("{n} client connections per contender, each one `GET /` (200 read) then silent; opened {} at a time (connect all, a request on each, every response read) over loopback, all within {} s; RSS (`VmRSS` of the measured process: the nginx worker, the unitgate / floor / lean process) 0.5 s after start and one readiness request, 1 s after the last connection opened, and 1 s after all were closed", args.batch, args.open_within),
        format!("{} round(s), every contender started fresh in each, one at a time holding clients; medians below", args.common.rounds),
        format!("idle timeouts far above the run: nginx `keepalive_timeout {IDLE_SECS}s` (and `worker_connections {}`, `worker_rlimit_nofile`), unitgate `client_idle_timeout_ms = {}` (its plain config otherwise at the defaults, `RUST_LOG=warn`), floor and lean: pingora's HTTP/1 keep-alive (no idle limit once a request was read)", n + 1024, IDLE_SECS * 1000),
        "the proxies forward each first request to the backend (nginx, `return 200`), so their idle upstream connections (nginx `keepalive 64`; pingora's pool, up to 128 per thread; lean's cache, up to 128) count in the RSS with the clients: at most one batch of them".to_owned(),
        "KiB per connection = (RSS with − RSS before) ÷ connections; \"after closing\" is what the process keeps once its descriptors are gone (the rounds table gives its open descriptors with the clients and after): memory the allocator keeps, not connections".to_owned(),
        "floor-rbuf0 and lean-rbuf0: the same binaries with `--read-buffer 0`: pingora's listener without the 64 KiB read buffer it puts in front of every accepted socket by default (`L4BufferSettings`, `DEFAULT_L4_READ_BUFFER_SIZE`); unitgate's client listeners are built that way (`read(0)`)".to_owned(),
        "checks while holding them: connections the server still holds open (a non-blocking peek sees no EOF), a request on a new connection (its status and time), a second request on 10 of the idle connections".to_owned(),
        crate::scenarios::Pinning::describe(bench.pin),
        format!("load average (1/5/15 min) before: {}; after: {}", bench.load_before, report::loadavg()),
    ] {
        let _ = writeln!(s, "- {line}");
    }
    let _ = writeln!(
        s,
        "\n## Medians\n\n| contender | RSS before (MiB) | RSS with {n} idle (MiB) | KiB per connection | × nginx | RSS after closing (MiB) | opened in (s) | still open | fresh request | idle reused |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    );
    let med = |name: &str, f: &dyn Fn(&Sample) -> f64| {
        median(
            samples
                .iter()
                .filter(|x| x.contender == name)
                .map(f)
                .collect(),
        )
    };
    let nginx_per = med("nginx", &|x| x.kib_per_conn(n));
    for name in names {
        let mine: Vec<&Sample> = samples.iter().filter(|x| &x.contender == name).collect();
        if mine.is_empty() {
            continue;
        }
        let per = med(name, &|x| x.kib_per_conn(n));
        let worst_open = mine.iter().map(|x| x.still_open).min().unwrap_or(0);
        let worst_reuse = mine.iter().map(|x| x.reused_ok).min().unwrap_or(0);
        let statuses: Vec<String> = mine.iter().map(|x| x.fresh_status.to_string()).collect();
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {per:.2} | {} | {} | {:.2} | {worst_open} / {n} | {} in {:.1} ms | {worst_reuse} / {REUSE_SAMPLE} |",
            mib(med(name, &|x| x.before_kib as f64)),
            mib(med(name, &|x| x.with_kib as f64)),
            if nginx_per > 0.0 {
                format!("{:.2}", per / nginx_per)
            } else {
                "—".into()
            },
            mib(med(name, &|x| x.after_kib as f64)),
            med(name, &|x| x.open_secs),
            statuses.join("/"),
            med(name, &|x| x.fresh_ms),
        );
    }
    let _ = writeln!(
        s,
        "\n\"still open\" and \"idle reused\" are the worst round; \"fresh request\" lists every round's status.\n\n## Rounds\n\n| round | contender | RSS before (KiB) | RSS with (KiB) | KiB/conn | RSS after (KiB) | server fds with / after | opened in (s) |\n|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for x in samples {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} | {} | {} / {} | {:.2} |",
            x.round,
            x.contender,
            x.before_kib,
            x.with_kib,
            x.kib_per_conn(n),
            x.after_kib,
            x.fds_with,
            x.fds_after,
            x.open_secs
        );
    }
    let mut all_notes = notes.to_vec();
    for x in samples {
        if x.still_open < n || x.reused_ok < REUSE_SAMPLE.min(n) || x.fresh_status != 200 {
            all_notes.push(format!(
                "{} round {}: {} of {n} still open, {} of {REUSE_SAMPLE} idle connections answered a second request, a new connection got {}",
                x.contender, x.round, x.still_open, x.reused_ok, x.fresh_status
            ));
        }
    }
    if !all_notes.is_empty() {
        s.push_str("\n## Notes\n\n");
        for note in &all_notes {
            let _ = writeln!(s, "- {note}");
        }
    }
    report::machine_and_commands(
        &mut s,
        &format!("nginx: `{}`", nginx::version(&bench.nginx_bin)),
        &bench.backend.command,
        started,
    );
    let _ = writeln!(
        s,
        "# clients: unitgate-bench idle-conns --conns {n} --batch {} --open-within {} --rounds {}\n```",
        args.batch, args.open_within, args.common.rounds
    );
    s.push_str("\n## Configs\n");
    let mut files = vec![(bench.backend.conf_path.clone(), bench.backend.conf.clone())];
    files.extend(started.iter().flat_map(|x| x.files.iter().cloned()));
    for (path, text) in files {
        let _ = writeln!(
            s,
            "\n`{}`:\n\n```\n{}\n```",
            path.display(),
            text.trim_end()
        );
    }
    s
}
