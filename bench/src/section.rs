//! What every scenario hands to the report: its markdown section, and the
//! data for its chart (CPU per request per contender as bars, or a timeline
//! of a run with events such as "A killed"). `unitgate-bench results` puts
//! the sections together into `bench/RESULTS.md` and draws the charts.

/// One scenario's contribution to RESULTS.md.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Heading, e.g. "Plain proxy".
    pub title: String,
    /// Markdown body (tables, settings, commands), without the heading.
    pub markdown: String,
    /// Bars for a chart: (contender, proxy CPU µs per request).
    pub bars: Vec<(String, f64)>,
    /// A run over time, for a timeline chart.
    pub timeline: Option<Timeline>,
    /// Target checks: (what, measured, limit, met), e.g.
    /// ("plain unitgate / floor CPU", 1.08, 1.10, true).
    pub targets: Vec<Target>,
}

/// A target of the bench issue and whether this run met it.
#[derive(Debug, Clone)]
pub struct Target {
    pub what: String,
    pub measured: f64,
    pub limit: f64,
    pub met: bool,
}

/// Requests over time, in fixed buckets from the start of the load.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub bucket_ms: u64,
    pub buckets: Vec<Bucket>,
    /// Marked moments: (ms since the start of the load, label).
    pub events: Vec<(u64, String)>,
}

/// One bucket of a timeline.
#[derive(Debug, Clone, Default)]
pub struct Bucket {
    /// Start of the bucket, ms since the start of the load.
    pub start_ms: u64,
    /// Completed with a 2xx, by the unit that served it (`x-unit-served`;
    /// "-" when the response had none).
    pub ok_by_unit: Vec<(String, u64)>,
    /// Failed: non-2xx or transport error.
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}
