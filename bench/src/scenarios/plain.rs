//! The plain-proxy scenario: the same nginx backend reached directly, through
//! nginx, haproxy, the bare-pingora floor and unitgate, one worker each, load
//! from wrk; CPU per request and requests/s side by side, with ratios against
//! nginx from the same run.

use anyhow::Result;
use clap::Args;

use crate::contender::{Contender, Direct, Renamed};
use crate::floor::{self, Floor, Lean};
use crate::haproxy::Haproxy;
use crate::nginx::NginxProxy;
use crate::scenarios::common::{self, Bench, Common, ReportParts};
use crate::section::Section;
use crate::tools;
use crate::unitgate::{self, Unitgate, Variant};

/// Plain unitgate with the access log on ÷ off, CPU per request.
pub const LOG_ON_OVER_OFF: f64 = 1.10;

/// How the logging contenders log, for the reports.
pub const LOG_SETTINGS: &str = "access logs: `unitgate` runs with `RUST_LOG=warn` (no access log); `unitgate-log` without `RUST_LOG` (the default filter, the access log on in its text layout, stderr to `unitgate.log` on disk); `unitgate-log-unpinned` the same without taskset; `nginx` has `access_log off`, `nginx-log` `access_log <dir>/access.log combined` (unbuffered, one write per request)";

#[derive(Debug, Clone, Args)]
pub struct PlainArgs {
    #[command(flatten)]
    pub common: Common,
    /// Also run `unitgate-sharded`: sharded placement over two units, every
    /// request with a user key and a valid signed routing cookie, so the
    /// whole unit-routing path runs (compare with plain `unitgate`).
    #[arg(long, conflicts_with = "no_unitgate")]
    pub sharded: bool,
    /// Also run `unitgate-least-conn`: plain unitgate with `lb = "least_conn"`
    /// (compare with plain `unitgate`, round robin; the target is within 2%).
    #[arg(long, conflicts_with = "no_unitgate")]
    pub least_conn: bool,
    /// Leave unitgate out (direct, nginx, haproxy and the floor only).
    #[arg(long, conflicts_with = "unitgate")]
    pub no_unitgate: bool,
    /// Leave haproxy out.
    #[arg(long)]
    pub no_haproxy: bool,
}

/// The subcommand: the report on stdout and in `out/plain.md`.
pub fn run(args: &PlainArgs) -> Result<()> {
    section(args).map(drop)
}

/// The plain scenario as `results` runs it: with haproxy and unitgate-sharded.
pub fn results_section(common: &Common) -> Result<Section> {
    section(&PlainArgs {
        common: common.clone(),
        sharded: true,
        least_conn: true,
        no_unitgate: false,
        no_haproxy: false,
    })
}

pub fn section(args: &PlainArgs) -> Result<Section> {
    let bench = Bench::start(&args.common)?;
    let mut notes = Vec::new();

    let mut contenders: Vec<Box<dyn Contender>> = vec![
        Box::new(Direct),
        Box::new(NginxProxy::new(bench.nginx_bin.clone())),
        Box::new(NginxProxy {
            nginx: bench.nginx_bin.clone(),
            access_log: true,
        }),
    ];
    if !args.no_haproxy {
        match tools::ensure(&[tools::HAPROXY]) {
            Ok(bins) => contenders.extend(
                bins.into_iter()
                    .map(|bin| Box::new(Haproxy { bin }) as Box<dyn Contender>),
            ),
            Err(e) => {
                let msg = format!("haproxy left out: {e:#}");
                eprintln!("bench: warning: {msg}");
                notes.push(msg);
            }
        }
    }
    match floor::locate(args.common.floor.as_deref())? {
        Some(bin) => {
            contenders.push(Box::new(Floor::new(bin.clone())));
            contenders.push(Box::new(Floor {
                configured: true,
                ..Floor::new(bin)
            }));
        }
        None => {
            let msg = "no unitgate-floor binary beside unitgate-bench (cargo build --release -p unitgate-bench); floor left out";
            eprintln!("bench: warning: {msg}");
            notes.push(msg.to_owned());
        }
    }
    match floor::locate_lean(args.common.lean.as_deref())? {
        Some(bin) => contenders.push(Box::new(Lean {
            bin,
            read_buffer: None,
        })),
        None => {
            let msg = "no unitgate-lean binary beside unitgate-bench (cargo build --release -p unitgate-bench); lean left out";
            eprintln!("bench: warning: {msg}");
            notes.push(msg.to_owned());
        }
    }
    if !args.no_unitgate {
        match unitgate::locate(args.common.unitgate.as_deref())? {
            Some(bin) => {
                if args.sharded {
                    contenders.push(Box::new(Unitgate::new(bin.clone(), Variant::Sharded)));
                }
                if args.least_conn {
                    contenders.push(Box::new(Unitgate::new(bin.clone(), Variant::LeastConn)));
                }
                contenders.push(Box::new(Unitgate::new(bin.clone(), Variant::Local)));
                contenders.push(Box::new(Renamed {
                    name: "unitgate-log".into(),
                    inner: Unitgate {
                        access_log: true,
                        ..Unitgate::new(bin.clone(), Variant::Local)
                    },
                }));
                contenders.push(Box::new(Renamed {
                    name: "unitgate-log-unpinned".into(),
                    inner: Unitgate {
                        access_log: true,
                        pinned: false,
                        ..Unitgate::new(bin, Variant::Local)
                    },
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

    let mut started = bench.start_all(&contenders)?;
    let (samples, rows) = bench.run(&mut started)?;

    let mut targets = Vec::new();
    if let (Ok(ug), Ok(fl)) = (
        common::cpu_of(&rows, "unitgate"),
        common::cpu_of(&rows, "floor"),
    ) {
        targets.push(common::target(
            "plain unitgate / floor, CPU per request",
            ug / fl,
            1.10,
        ));
        if let Ok(ft) = common::cpu_of(&rows, "floor+timeouts") {
            notes.push(format!(
                "floor+timeouts (the floor with unitgate's per-attempt connect/read/write timeouts and h2c listener): {:.2}× the floor; plain unitgate is {:.2}× floor+timeouts",
                ft / fl,
                ug / ft
            ));
        }
    }
    for (what, a, b) in [
        ("plain unitgate ÷ floor", "unitgate", "floor"),
        ("access log on ÷ off", "unitgate-log", "unitgate"),
        (
            "least_conn ÷ round robin",
            "unitgate-least-conn",
            "unitgate",
        ),
    ] {
        notes.extend(common::paired_note(&samples, what, a, b));
    }
    if let (Ok(lean), Ok(fl)) = (
        common::cpu_of(&rows, "lean"),
        common::cpu_of(&rows, "floor"),
    ) {
        let ug = common::cpu_of(&rows, "unitgate").ok();
        notes.push(format!(
            "lean (the lean forwarder prototype, no pingora-proxy): {:.2}× the floor{}, CPU per request (reported, not a target)",
            lean / fl,
            ug.map_or(String::new(), |u| format!(", {:.2}× plain unitgate", lean / u))
        ));
    }
    if let (Ok(lc), Ok(rr)) = (
        common::cpu_of(&rows, "unitgate-least-conn"),
        common::cpu_of(&rows, "unitgate"),
    ) {
        targets.push(common::target(
            "plain unitgate least_conn / round_robin, CPU per request",
            lc / rr,
            1.02,
        ));
    }
    if let (Ok(on), Ok(off)) = (
        common::cpu_of(&rows, "unitgate-log"),
        common::cpu_of(&rows, "unitgate"),
    ) {
        targets.push(common::target(
            "plain unitgate access log on / off, CPU per request",
            on / off,
            LOG_ON_OVER_OFF,
        ));
        if let Ok(un) = common::cpu_of(&rows, "unitgate-log-unpinned") {
            notes.push(format!(
                "unitgate, access log on, unpinned ÷ pinned: {:.3} (reported, not a target)",
                un / on
            ));
        }
    }
    if let (Ok(on), Ok(off)) = (
        common::cpu_of(&rows, "nginx-log"),
        common::cpu_of(&rows, "nginx"),
    ) {
        notes.push(format!(
            "nginx access log (`combined`, to a file) on ÷ off: {:.3}",
            on / off
        ));
    }
    notes.extend(common::access_log_notes(&started, &samples));
    let md = bench.report_markdown(&ReportParts {
        title: "unitgate bench: plain proxy".into(),
        settings: vec![
            "haproxy: `nbthread 1`, one server with `http-reuse always`, keep-alive both sides, no logging, `haproxy -db` (foreground, one process)".into(),
            LOG_SETTINGS.into(),
        ],
        rows: &rows,
        samples: &samples,
        started: &started,
        baseline: "nginx",
        notes,
        extra_commands: Vec::new(),
        extra_versions: Vec::new(),
        load: None,
    });
    let section = Section {
        title: "Plain proxy".into(),
        markdown: String::new(),
        bars: common::bars(&rows),
        timeline: None,
        targets,
    };
    drop(started);
    bench.finish();
    common::publish(&args.common, "plain.md", &md, section)
}
