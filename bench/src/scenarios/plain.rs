//! The plain-proxy scenario: the same nginx backend reached directly, through
//! nginx and through unitgate, one worker each, load from wrk; CPU per request
//! and requests/s side by side, with ratios against nginx from the same run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::contender::{Contender, Direct, StartCtx, Started};
use crate::floor::{self, Floor};
use crate::nginx::{self, NginxProxy};
use crate::report::{self, Machine, Report};
use crate::scenarios::{self, Pinning, Scenario};
use crate::tools;
use crate::unitgate::{self, Unitgate, Variant};
use crate::wrk::{self, Load};

#[derive(Debug, Args)]
pub struct PlainArgs {
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
    /// Also run `unitgate-sharded`: sharded placement over two units, every
    /// request with a user key and a valid signed routing cookie, so the
    /// whole unit-routing path runs (compare with plain `unitgate`).
    #[arg(long, conflicts_with = "no_unitgate")]
    pub sharded: bool,
    /// Leave unitgate out (direct and nginx only).
    #[arg(long, conflicts_with = "unitgate")]
    pub no_unitgate: bool,
    /// Do not pin processes to CPUs with taskset.
    #[arg(long)]
    pub no_pin: bool,
    /// Directory for the report (plain.md).
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/out"))]
    pub out: PathBuf,
    /// Keep the scratch directory (configs, logs) instead of deleting it.
    #[arg(long)]
    pub keep_tmp: bool,
}

pub fn run(args: &PlainArgs) -> Result<()> {
    if args.duration == 0 || args.connections == 0 || args.rounds == 0 {
        bail!("--duration, --connections and --rounds must be at least 1");
    }
    let [nginx_bin, wrk_bin, _taskset] =
        <[PathBuf; 3]>::try_from(tools::ensure(&[tools::NGINX, tools::WRK, tools::TASKSET])?)
            .map_err(|_| anyhow::anyhow!("tools::ensure returned the wrong number of paths"))?;

    let machine = Machine::read();
    let load_before = report::loadavg();
    let pin = Pinning::choose(machine.cpus, !args.no_pin);
    if pin.is_none() && !args.no_pin {
        eprintln!(
            "bench: only {} CPU(s): running without pinning",
            machine.cpus
        );
    }
    let mut notes = Vec::new();

    let mut contenders: Vec<Box<dyn Contender>> = vec![
        Box::new(Direct),
        Box::new(NginxProxy {
            nginx: nginx_bin.clone(),
        }),
    ];
    match floor::locate(args.floor.as_deref())? {
        Some(bin) => contenders.push(Box::new(Floor { bin })),
        None => {
            let msg = "no unitgate-floor binary beside unitgate-bench (cargo build --release -p unitgate-bench); floor left out";
            eprintln!("bench: warning: {msg}");
            notes.push(msg.to_owned());
        }
    }
    if !args.no_unitgate {
        match unitgate::locate(args.unitgate.as_deref())? {
            Some(bin) => {
                if args.sharded {
                    contenders.push(Box::new(Unitgate {
                        bin: bin.clone(),
                        variant: Variant::Sharded,
                    }));
                }
                contenders.push(Box::new(Unitgate {
                    bin,
                    variant: Variant::Local,
                }));
            }
            None => {
                let msg =
                    "no unitgate binary found (build it with `cargo build --release -p unitgate` \
                           or pass --unitgate PATH); unitgate left out of this run";
                eprintln!("bench: warning: {msg}");
                notes.push(msg.to_owned());
            }
        }
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

    let mut started: Vec<Started> = Vec::new();
    for c in &contenders {
        let dir = tmp.path().join(c.name());
        let ctx = StartCtx {
            dir: &dir,
            backend: backend.addr,
            cpu: pin.map(|p| p.proxy),
        };
        let s = c
            .start(&ctx)
            .with_context(|| format!("starting contender {}", c.name()))?;
        eprintln!("bench: {} on {}", s.name, s.url);
        started.push(s);
    }

    let load = Load {
        wrk: wrk_bin.clone(),
        connections: args.connections,
        duration: Duration::from_secs(args.duration),
        cpu: pin.map(|p| p.load),
    };
    let warmup = Duration::from_secs(args.warmup);
    let per_run = args.duration + args.warmup;
    eprintln!(
        "bench: {} rounds × {} contenders × {per_run} s ≈ {} s of load",
        args.rounds,
        started.len(),
        args.rounds as u64 * started.len() as u64 * per_run
    );
    let scenario = Scenario {
        load: &load,
        warmup,
        backend_pid: backend.worker,
        rounds: args.rounds,
    };
    let samples = scenario.run(&mut started)?;
    let rows = scenarios::summarize(&samples);
    for r in rows.iter().filter(|r| r.errors > 0) {
        notes.push(format!(
            "{}: {} failed requests (non-2xx or socket errors) over all rounds; its figures are suspect",
            r.contender, r.errors
        ));
    }

    let mut versions = vec![
        ("nginx".to_owned(), nginx::version(&nginx_bin)),
        ("wrk".to_owned(), wrk::version(&wrk_bin)),
    ];
    let mut commands = vec!["# backend".to_owned(), backend.command.clone()];
    let mut files = vec![(backend.conf_path.clone(), backend.conf.clone())];
    for s in &started {
        if s.name == "unitgate" {
            let v = s
                .version
                .clone()
                .unwrap_or_else(|| "n/a (`unitgate --version` not supported)".into());
            versions.push(("unitgate".into(), v));
        }
        if !s.commands.is_empty() {
            commands.push(format!("# {}", s.name));
            commands.extend(s.commands.iter().cloned());
        }
        files.extend(s.files.iter().cloned());
    }
    for s in &started {
        commands.push(format!("# load: {} (warmup, then measured)", s.name));
        if !warmup.is_zero() {
            commands.push(crate::procs::command_line(
                &load.command(&s.url, &s.headers, warmup),
            ));
        }
        commands.push(crate::procs::command_line(&load.command(
            &s.url,
            &s.headers,
            load.duration,
        )));
    }

    let report = Report {
        title: "unitgate bench: plain proxy".into(),
        settings: vec![
            format!(
                "wrk: 1 thread, {} connections, {} s measured after {} s warmup, {} rounds (contenders alternate within each round); medians below",
                args.connections, args.duration, args.warmup, args.rounds
            ),
            "backend: nginx, 1 worker, `return 200 \"ok\\n\"`; every contender forwards to the same backend".into(),
            "proxy CPU: utime+stime of the proxy process (nginx: its worker; unitgate: the process) over the measured run ÷ requests completed; backend CPU likewise for the backend worker".into(),
            Pinning::describe(pin),
            format!(
                "load average (1/5/15 min) before: {load_before}; after: {} (other work on the machine skews req/s far more than CPU/req)",
                report::loadavg()
            ),
        ],
        rows: &rows,
        baseline: "nginx",
        samples: &samples,
        machine,
        versions,
        commands,
        files,
        notes,
    };
    let md = report.markdown();
    print!("{md}");
    let path = report::write(&args.out, "plain.md", &md)?;
    eprintln!("bench: report written to {}", path.display());

    drop(started);
    drop(backend);
    if args.keep_tmp {
        let kept = tmp.keep();
        eprintln!("bench: scratch directory kept at {}", kept.display());
    }
    Ok(())
}
