//! The full-chain scenario: unitgate with every feature on one route (JWT
//! HS256, sharded placement with a signed routing cookie, a local per-user
//! limit that never refuses, metrics) next to plain unitgate, the floor and
//! nginx, alternating in one run. Every request must get its 200: a 401 or
//! 429 means the chain is misconfigured and the run fails.

use anyhow::Result;

use crate::contender::{Contender, Renamed};
use crate::floor::{self, Floor};
use crate::nginx::NginxProxy;
use crate::scenarios::common::{self, Bench, Common, ReportParts};
use crate::scenarios::plain;
use crate::section::Section;
use crate::unitgate::{Unitgate, Variant};
use crate::unitgate_variants;

/// Full chain ÷ plain unitgate, CPU per request: performance round 2's
/// target (round 1 allowed 1.35).
const FULL_OVER_PLAIN: f64 = 1.20;

/// Full chain with a 10 % split ÷ the same without, CPU per request: what a
/// gray release may cost.
const SPLIT_OVER_FULL: f64 = 1.02;

pub fn section(c: &Common) -> Result<Section> {
    let ug = c.unitgate_bin()?;
    let bench = Bench::start(c)?;
    let mut notes = Vec::new();
    let mut contenders: Vec<Box<dyn Contender>> = Vec::new();
    match floor::locate(c.floor.as_deref())? {
        Some(bin) => contenders.push(Box::new(Floor::new(bin))),
        None => notes.push("no unitgate-floor binary beside unitgate-bench; floor left out".into()),
    }
    contenders.push(Box::new(Unitgate::new(ug.clone(), Variant::Local)));
    contenders.push(Box::new(Renamed {
        name: "unitgate-log".into(),
        inner: Unitgate {
            access_log: true,
            ..Unitgate::new(ug.clone(), Variant::Local)
        },
    }));
    contenders.push(Box::new(unitgate_variants::full_chain(ug.clone())));
    contenders.push(Box::new(unitgate_variants::full_chain_log(ug.clone())));
    contenders.push(Box::new(unitgate_variants::full_chain_split(ug)));
    contenders.push(Box::new(NginxProxy::new(bench.nginx_bin.clone())));
    contenders.push(Box::new(NginxProxy {
        nginx: bench.nginx_bin.clone(),
        access_log: true,
    }));

    let mut started = bench.start_all(&contenders)?;
    let (samples, rows) = bench.run(&mut started)?;
    common::require_all_ok(
        &samples,
        &[
            "unitgate",
            "unitgate-log",
            "unitgate-full",
            "unitgate-full-log",
            "unitgate-full-split",
        ],
    )?;

    let full = common::cpu_of(&rows, "unitgate-full")?;
    let plain = common::cpu_of(&rows, "unitgate")?;
    let nginx = common::cpu_of(&rows, "nginx")?;
    let split = common::cpu_of(&rows, "unitgate-full-split")?;
    let split_over_full = split / full;
    let over_plain = full / plain;
    let over_nginx = full / nginx;
    notes.push(format!(
        "full chain ÷ plain unitgate: {over_plain:.3} (target ≤ {FULL_OVER_PLAIN:.2}: {}); the chain costs {:.1} µs per request",
        if over_plain <= FULL_OVER_PLAIN { "met" } else { "not met" },
        full - plain
    ));
    notes.push(format!(
        "full chain with a 10 % split ÷ full chain: {split_over_full:.3} (target ≤ {SPLIT_OVER_FULL:.2}: {}); the split costs {:.2} µs per request",
        if split_over_full <= SPLIT_OVER_FULL { "met" } else { "not met" },
        split - full
    ));
    notes.push(format!(
        "full chain ÷ nginx (plain proxy_pass): {over_nginx:.3} (long-term goal ≤ 1.0; reported, not a target)"
    ));
    let plain_log = common::cpu_of(&rows, "unitgate-log")?;
    let full_log = common::cpu_of(&rows, "unitgate-full-log")?;
    let nginx_log = common::cpu_of(&rows, "nginx-log")?;
    notes.push(format!(
        "access log on ÷ off: plain unitgate {:.3}, full chain {:.3} (target ≤ {:.2} each), nginx {:.3}; full chain ÷ plain with the log on: {:.3}",
        plain_log / plain,
        full_log / full,
        plain::LOG_ON_OVER_OFF,
        nginx_log / nginx,
        full_log / plain_log
    ));
    for (what, a, b) in [
        ("full chain ÷ plain unitgate", "unitgate-full", "unitgate"),
        (
            "full chain, access log on ÷ off",
            "unitgate-full-log",
            "unitgate-full",
        ),
        (
            "plain unitgate, access log on ÷ off",
            "unitgate-log",
            "unitgate",
        ),
        (
            "10 % split ÷ full chain",
            "unitgate-full-split",
            "unitgate-full",
        ),
    ] {
        notes.extend(common::paired_note(&samples, what, a, b));
    }
    notes.extend(common::access_log_notes(&started, &samples));
    let md = bench.report_markdown(&ReportParts {
        title: "unitgate bench: full feature chain".into(),
        settings: vec![
            "unitgate-full: `Authorization: Bearer <HS256 token, sub 42>` verified on the route, routing key `jwt:sub` (slot 42, home unit A of two), a valid signed `ug_route` cookie for slot 42, a local per-user limit of 10 000 000/s, metrics (always on)".into(),
            "unitgate-full-split: unitgate-full plus `[[routes.splits]]` sending 10 % of users to `backend-v2` (the same backend under another service name); the bench's one user keeps one bucket, so the figure is the cost of the choice itself".into(),
            "unitgate: plain, `placement = \"local\"`, no key, no token".into(),
            "unitgate-full-log: unitgate-full with the access log on".into(),
            plain::LOG_SETTINGS.into(),
            "every request of unitgate and unitgate-full must get 200 (wrk's non-2xx count 0), else the run fails".into(),
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
        title: "Full feature chain".into(),
        markdown: String::new(),
        bars: common::bars(&rows),
        timeline: None,
        targets: vec![
            common::target(
                "full chain / plain unitgate, CPU per request",
                over_plain,
                FULL_OVER_PLAIN,
            ),
            common::target(
                "full chain access log on / off, CPU per request",
                full_log / full,
                plain::LOG_ON_OVER_OFF,
            ),
            common::target(
                "full chain with a 10 % split / full chain, CPU per request",
                split_over_full,
                SPLIT_OVER_FULL,
            ),
        ],
    };
    drop(started);
    bench.finish();
    common::publish(c, "full-chain.md", &md, section)
}
