//! Route-table scale: unitgate with 1, 10, 1 000 and 10 000 routes (distinct
//! prefixes `/r/00000`…, all to the one backend), each its own contender in
//! the same run; wrk requests a path under the route before last, near the
//! end of the table. The lookup should not grow with the table.

use anyhow::Result;

use crate::contender::Contender;
use crate::scenarios::common::{self, Bench, Common, ReportParts};
use crate::section::Section;
use crate::unitgate_variants;

/// Route-table sizes, each a contender.
pub const SIZES: [usize; 4] = [1, 10, 1_000, 10_000];

/// 10 000 routes ÷ 1 route, CPU per request: the target.
const LARGEST_OVER_ONE: f64 = 1.10;

pub fn section(c: &Common) -> Result<Section> {
    let ug = c.unitgate_bin()?;
    let bench = Bench::start(c)?;
    let contenders: Vec<Box<dyn Contender>> = SIZES
        .iter()
        .map(|&n| Box::new(unitgate_variants::routes(ug.clone(), n)) as Box<dyn Contender>)
        .collect();
    let mut started = bench.start_all(&contenders)?;
    let (samples, rows) = bench.run(&mut started)?;
    let names: Vec<String> = contenders.iter().map(|c| c.name().to_owned()).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    common::require_all_ok(&samples, &name_refs)?;

    let first = names.first().map_or("", String::as_str);
    let last = names.last().map_or("", String::as_str);
    let ratio = common::cpu_of(&rows, last)? / common::cpu_of(&rows, first)?;
    let md = bench.report_markdown(&ReportParts {
        title: "unitgate bench: route-table scale".into(),
        settings: vec![
            format!(
                "unitgate with {} routes (`/r/00000`, `/r/00001`, …, `placement = \"local\"`, all to the one backend); wrk requests `<prefix of the route before last>/x`",
                SIZES.map(|n| n.to_string()).join(", ")
            ),
        ],
        rows: &rows,
        samples: &samples,
        started: &started,
        baseline: first,
        notes: vec![format!(
            "{last} ÷ {first}: {ratio:.3} (target ≤ {LARGEST_OVER_ONE:.2}: {})",
            if ratio <= LARGEST_OVER_ONE { "met" } else { "not met" }
        )],
        extra_commands: Vec::new(),
        extra_versions: Vec::new(),
        load: None,
    });
    let section = Section {
        title: "Route-table scale".into(),
        markdown: String::new(),
        bars: common::bars(&rows),
        timeline: None,
        targets: vec![common::target(
            "10 000 routes / 1 route, CPU per request",
            ratio,
            LARGEST_OVER_ONE,
        )],
    };
    drop(started);
    bench.finish();
    common::publish(c, "routes.md", &md, section)
}
