//! SVG charts for RESULTS.md, drawn with plotters' SVG backend only. Text is
//! written as SVG `<text>` elements and laid out with plotters' built-in size
//! estimate (no `ttf` feature), so no system font or fontconfig is needed.
//!
//! - [`cpu_bars`]: horizontal bars of proxy CPU µs per request per contender.
//! - [`timeline`]: per bucket, the requests served OK stacked by unit plus
//!   the errors, with events (e.g. "A killed") as vertical lines. A series
//!   whose name has a space is labelled with its name alone.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::section::Timeline;

const FONT: &str = "sans-serif";

/// Colours for units, in the order units first appear; errors are red.
const UNIT_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];
const ERROR_COLOUR: RGBColor = RGBColor(214, 39, 40);

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

/// Horizontal bars, one per `(label, value)`, each with its value at its end.
pub fn cpu_bars(title: &str, bars: &[(String, f64)]) -> Result<String> {
    const W: u32 = 860;
    const ROW: u32 = 34;
    const TOP: u32 = 50;
    const LEFT: i32 = 230;
    const RIGHT: i32 = 90;
    let h = TOP + ROW * bars.len().max(1) as u32 + 40;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        root.draw(&Text::new(
            title.to_owned(),
            (10, 12),
            (FONT, 20).into_font().color(&BLACK),
        ))
        .map_err(err)?;
        let max = bars.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
        let span = (W as i32 - LEFT - RIGHT) as f64;
        let scale = if max > 0.0 { span / max } else { 0.0 };
        let label = (FONT, 14).into_font().color(&BLACK);
        for (i, (name, value)) in bars.iter().enumerate() {
            let y = TOP as i32 + (i as u32 * ROW) as i32;
            let x1 = LEFT + (value * scale).round() as i32;
            root.draw(&Text::new(name.clone(), (10, y + 8), label.clone()))
                .map_err(err)?;
            root.draw(&Rectangle::new(
                [(LEFT, y + 4), (x1.max(LEFT + 1), y + ROW as i32 - 4)],
                UNIT_COLOURS[0].filled(),
            ))
            .map_err(err)?;
            root.draw(&Text::new(
                format!("{value:.1}"),
                (x1 + 6, y + 8),
                label.clone(),
            ))
            .map_err(err)?;
        }
        let axis_y = TOP as i32 + (bars.len() as u32 * ROW) as i32 + 4;
        root.draw(&PathElement::new(
            vec![(LEFT, TOP as i32), (LEFT, axis_y)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            "proxy CPU µs per request (median; lower is better)".to_owned(),
            (LEFT, axis_y + 10),
            (FONT, 13).into_font().color(&BLACK),
        ))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The units of a timeline in first-seen order.
fn units(t: &Timeline) -> Vec<String> {
    let mut units: Vec<String> = Vec::new();
    for b in &t.buckets {
        for (u, _) in &b.ok_by_unit {
            if !units.contains(u) {
                units.push(u.clone());
            }
        }
    }
    units
}

/// Stacked bars per bucket (OK by unit, then errors), events as vertical lines.
pub fn timeline(title: &str, t: &Timeline) -> Result<String> {
    let units = units(t);
    let bucket = t.bucket_ms.max(1);
    let end_ms = t
        .buckets
        .iter()
        .map(|b| b.start_ms + bucket)
        .chain(t.events.iter().map(|(ms, _)| *ms))
        .max()
        .unwrap_or(bucket);
    let top = t
        .buckets
        .iter()
        .map(|b| b.ok_by_unit.iter().map(|(_, n)| n).sum::<u64>() + b.errors)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.15;
    let secs = |ms: u64| ms as f64 / 1000.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..secs(end_ms), 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("seconds since the start of the load")
            .y_desc(format!("requests per {bucket} ms"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 12))
            .draw()
            .map_err(err)?;
        // One series per unit (and errors), each rectangle stacked on the
        // ones below it in the same bucket.
        let layers: Vec<(String, RGBColor)> = units
            .iter()
            .enumerate()
            .map(|(i, u)| {
                // A series name with a space is a label of its own (the
                // migration scenario's "writes → A"), else a unit name.
                let label = if u.contains(' ') {
                    u.clone()
                } else {
                    format!("ok, unit {u}")
                };
                (label, UNIT_COLOURS[i % UNIT_COLOURS.len()])
            })
            .chain(std::iter::once(("errors".to_owned(), ERROR_COLOUR)))
            .collect();
        for (layer, (name, colour)) in layers.iter().enumerate() {
            let colour = *colour;
            let rects = t.buckets.iter().filter_map(|b| {
                let count = |u: &str| {
                    b.ok_by_unit
                        .iter()
                        .filter(|(x, _)| x == u)
                        .map(|(_, n)| *n)
                        .sum::<u64>()
                };
                let below: u64 = units.iter().take(layer).map(|u| count(u)).sum();
                let mine = match units.get(layer) {
                    Some(u) => count(u),
                    None => b.errors,
                };
                (mine > 0).then(|| {
                    Rectangle::new(
                        [
                            (secs(b.start_ms), below as f64),
                            (secs(b.start_ms + bucket), (below + mine) as f64),
                        ],
                        colour.filled(),
                    )
                })
            });
            chart
                .draw_series(rects)
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        for (ms, label) in &t.events {
            let x = secs(*ms);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, top)],
                    BLACK.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((x, top * 0.97))
                        + Text::new(label.clone(), (5, 0), (FONT, 14).into_font().color(&BLACK)),
                ))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::section::Bucket;

    fn well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn bars_have_labels_and_values() {
        let bars = vec![
            ("nginx".to_owned(), 32.3),
            ("haproxy".to_owned(), 28.0),
            ("unitgate-full".to_owned(), 110.25),
        ];
        let svg = cpu_bars("Plain proxy", &bars).expect("chart");
        well_formed(&svg);
        for needle in [
            "Plain proxy",
            "nginx",
            "haproxy",
            "unitgate-full",
            "110.2",
            "32.3",
        ] {
            assert!(svg.contains(needle), "missing {needle:?}");
        }
        assert!(svg.matches("<rect").count() >= 4, "background + 3 bars");
    }

    #[test]
    fn empty_bars_still_draw() {
        well_formed(&cpu_bars("nothing", &[]).expect("chart"));
    }

    #[test]
    fn timeline_stacks_units_and_marks_events() {
        let buckets = (0..20)
            .map(|i| Bucket {
                start_ms: i * 500,
                ok_by_unit: if i < 8 {
                    vec![("A".into(), 900), ("B".into(), 100)]
                } else {
                    vec![("B".into(), 950)]
                },
                errors: if i == 8 { 40 } else { 0 },
                p50_us: 500,
                p99_us: 2000,
            })
            .collect();
        let t = Timeline {
            bucket_ms: 500,
            buckets,
            events: vec![(4_000, "A killed".into()), (7_500, "A back".into())],
        };
        let svg = timeline("Failover", &t).expect("chart");
        well_formed(&svg);
        for needle in [
            "Failover",
            "A killed",
            "A back",
            "ok, unit A",
            "ok, unit B",
            "errors",
        ] {
            assert!(svg.contains(needle), "missing {needle:?}");
        }
        assert_eq!(units(&t), ["A", "B"]);
    }
}
