//! The load driver of the timeline scenarios (failover, redis-kill, reload):
//! N keep-alive HTTP/1.1 connections on one tokio thread, each looping
//! requests (paced when a total rate is given), bounded by a duration and a
//! request count. Every request's completion time, status, `x-unit-served`
//! and latency is kept, so a run can be cut into buckets (a
//! [`section::Timeline`]) or phases ("before the kill", "while Redis is
//! down") after the fact. Actions (kill a backend, call the admin API) run on
//! their own thread at given offsets while the load runs, and become events
//! of the timeline.
//!
//! Unlike wrk it sees each response's headers; unlike a benchmark tool it is
//! not tuned for the highest request rate: it is meant for a few thousand
//! requests per second, well below what the gateway serves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::procs;
use crate::section::{Bucket, Timeline};

/// Highest latency a histogram tracks (larger values are clamped): 60 s.
const MAX_TRACKED_US: u64 = 60_000_000;
/// Pause after a failed connect, so a dead listener is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);
/// Unit index of a response without `x-unit-served`.
const NO_UNIT: u16 = u16::MAX;

/// One kind of request the driver sends; a run cycles through a list of them.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: hyper::Method,
    /// Path and query, e.g. `/r/00001/x`.
    pub path: String,
    /// Extra headers (`Host` is set by the driver).
    pub headers: Vec<(String, String)>,
}

impl RequestSpec {
    /// `GET path` with the given headers.
    pub fn get(path: &str, headers: &[(&str, &str)]) -> Self {
        Self::new(hyper::Method::GET, path, headers)
    }

    /// `POST path` (empty body) with the given headers.
    pub fn post(path: &str, headers: &[(&str, &str)]) -> Self {
        Self::new(hyper::Method::POST, path, headers)
    }

    pub fn new(method: hyper::Method, path: &str, headers: &[(&str, &str)]) -> Self {
        Self {
            method,
            path: path.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Load {
    pub addr: SocketAddr,
    /// Keep-alive connections, each sending one request at a time.
    pub connections: usize,
    /// Total requests per second over all connections; `None` = as fast as
    /// each connection gets answers.
    pub rate: Option<f64>,
    /// No request is started after this much time.
    pub duration: Duration,
    /// No more than this many requests are started.
    pub max_requests: u64,
    /// A request not answered (body included) within this fails.
    pub timeout: Duration,
    /// Request `i` of the run is `requests[i % len]`.
    pub requests: Vec<RequestSpec>,
}

impl Load {
    pub fn describe(&self) -> String {
        format!(
            "{} keep-alive connections, {}, {} s (at most {} requests), per-request timeout {} ms, {} request variants in turn",
            self.connections,
            self.rate
                .map_or("unpaced".to_owned(), |r| format!("{r:.0} req/s in total (paced per connection)")),
            self.duration.as_secs_f64(),
            self.max_requests,
            self.timeout.as_millis(),
            self.requests.len()
        )
    }
}

/// Tags a response for the scenario: `(status, headers, body) -> tag`, kept
/// in [`Record::tag`] (e.g. "503 with `write_forbidden`", "answered by the
/// echo of unit B"). It runs on the driver's thread: keep it cheap.
pub type Classify = Arc<dyn Fn(u16, &hyper::HeaderMap, &[u8]) -> u32 + Send + Sync>;

/// What a run can have beyond a [`Load`] (none of the original timeline
/// scenarios needs it).
#[derive(Clone, Default)]
pub struct Extra {
    /// When not empty, connection `i` goes to `addrs[i % len]` instead of
    /// `Load::addr` (a load spread over several gateways).
    pub addrs: Vec<SocketAddr>,
    /// Tags every response (no response: tag 0).
    pub classify: Option<Classify>,
}

/// Something done while the load runs, `at` after its start; what it returns
/// (or its error) is reported. It runs on a thread of its own, so it may
/// block (kill a process, make an HTTP call), but must be bounded in time.
pub struct Action {
    pub at: Duration,
    pub label: String,
    pub run: Box<dyn FnOnce() -> Result<String> + Send>,
}

impl Action {
    pub fn new(
        at: Duration,
        label: &str,
        run: impl FnOnce() -> Result<String> + Send + 'static,
    ) -> Self {
        Self {
            at,
            label: label.to_owned(),
            run: Box::new(run),
        }
    }
}

/// What an action did.
#[derive(Debug, Clone)]
pub struct ActionOutcome {
    pub label: String,
    /// When it started, ms since the start of the load.
    pub start_ms: u64,
    pub took: Duration,
    /// Its report, or its error; `Err("skipped …")` when the load ended first.
    pub result: Result<String, String>,
    /// False when it was skipped (then `start_ms` is when it was due, and it
    /// is no event of the timeline).
    pub ran: bool,
}

/// One finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Completion, µs since the start of the load.
    pub done_us: u64,
    pub latency_us: u64,
    /// HTTP status; 0 = transport error or timeout (no response).
    pub status: u16,
    /// Index into [`Run::units`]; `NO_UNIT` when there was no `x-unit-served`.
    pub unit: u16,
    /// Index of the request variant (`Load::requests`) it was.
    pub variant: u32,
    /// Index into `Extra::addrs` of the address it went to (0 without).
    pub target: u16,
    /// What `Extra::classify` said of the response (0 without one).
    pub tag: u32,
}

impl Record {
    /// When it was sent (its first attempt to get a connection included),
    /// µs since the start of the load.
    pub fn sent_us(&self) -> u64 {
        self.done_us.saturating_sub(self.latency_us)
    }
}

impl Record {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A finished run: every request, the actions, the events.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Sorted by completion time.
    pub records: Vec<Record>,
    /// Unit names seen in `x-unit-served`, sorted.
    pub units: Vec<String>,
    /// Events: the caller's and one per action start, sorted by time.
    pub events: Vec<(u64, String)>,
    pub actions: Vec<ActionOutcome>,
    /// From the start of the load to the last response.
    pub elapsed: Duration,
    /// The load's duration (no request started after it).
    pub duration: Duration,
    /// Transport-level failures by message (first 200 bytes), for the report.
    pub transport_errors: BTreeMap<String, u64>,
}

/// Latency and outcome figures over a set of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub ok: u64,
    /// Non-2xx or no response.
    pub errors: u64,
    /// Requests per second over the span given to [`Run::summary`].
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Summary {
    /// One table row: requests | errors | req/s | p50 | p99 | p99.9 | max.
    pub fn cells(&self) -> String {
        format!(
            "{} | {} | {:.0} | {} | {} | {} | {}",
            self.requests,
            self.errors,
            self.rps,
            fmt_us(self.p50_us),
            fmt_us(self.p99_us),
            fmt_us(self.p999_us),
            fmt_us(self.max_us)
        )
    }

    pub const HEADER: &'static str = "requests | errors | req/s | p50 | p99 | p99.9 | max |\n";
    pub const ALIGN: &'static str = "---:|---:|---:|---:|---:|---:|---:|\n";
}

/// µs as ms with two decimals ("1.25 ms"), or µs below 1 ms.
pub fn fmt_us(us: u64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

fn histogram() -> Histogram<u64> {
    // Valid bounds (1 <= low, high >= 2 * low, sigfig <= 5): cannot fail.
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("valid histogram bounds")
}

impl Run {
    /// Figures over the requests completed in `[from_ms, to_ms)`; `rps` is
    /// taken over that span (clipped to the run).
    pub fn summary(&self, from_ms: u64, to_ms: u64) -> Summary {
        let span_ms = to_ms
            .min(self.elapsed.as_millis() as u64)
            .saturating_sub(from_ms);
        self.summary_of(
            |r| r.done_us >= from_ms * 1000 && r.done_us < to_ms.saturating_mul(1000),
            span_ms,
        )
    }

    /// Figures over the requests for which `keep` holds; `rps` is their
    /// count over `span_ms` (0 when `span_ms` is 0).
    pub fn summary_of(&self, keep: impl Fn(&Record) -> bool, span_ms: u64) -> Summary {
        let mut h = histogram();
        let mut s = Summary::default();
        for r in self.records.iter().filter(|r| keep(r)) {
            s.requests += 1;
            if r.ok() {
                s.ok += 1;
            } else {
                s.errors += 1;
            }
            h.saturating_record(r.latency_us.max(1));
        }
        if span_ms > 0 {
            s.rps = s.requests as f64 * 1000.0 / span_ms as f64;
        }
        if s.requests > 0 {
            s.p50_us = h.value_at_quantile(0.50);
            s.p99_us = h.value_at_quantile(0.99);
            s.p999_us = h.value_at_quantile(0.999);
            s.max_us = h.max();
        }
        s
    }

    /// The whole run.
    pub fn total(&self) -> Summary {
        self.summary(0, u64::MAX / 1000)
    }

    /// The run in buckets of `bucket_ms` (the last one may be partial), with
    /// every seen unit in every bucket (zeros included) so series line up.
    pub fn timeline(&self, bucket_ms: u64) -> Timeline {
        let bucket_ms = bucket_ms.max(1);
        let last_us = self.records.last().map_or(0, |r| r.done_us);
        let span_ms = (self.elapsed.as_millis() as u64).max(last_us / 1000 + 1);
        let n = span_ms.div_ceil(bucket_ms) as usize;
        let mut names: Vec<String> = self.units.clone();
        let has_none = self.records.iter().any(|r| r.ok() && r.unit == NO_UNIT);
        if has_none {
            names.push("-".into());
        }
        let mut hists: Vec<Histogram<u64>> = (0..n).map(|_| histogram()).collect();
        let mut buckets: Vec<Bucket> = (0..n)
            .map(|i| Bucket {
                start_ms: i as u64 * bucket_ms,
                ok_by_unit: names.iter().map(|u| (u.clone(), 0)).collect(),
                ..Bucket::default()
            })
            .collect();
        for r in &self.records {
            let i = ((r.done_us / 1000 / bucket_ms) as usize).min(n.saturating_sub(1));
            let (Some(b), Some(h)) = (buckets.get_mut(i), hists.get_mut(i)) else {
                continue;
            };
            h.saturating_record(r.latency_us.max(1));
            if r.ok() {
                let u = if r.unit == NO_UNIT {
                    self.units.len()
                } else {
                    usize::from(r.unit)
                };
                if let Some(slot) = b.ok_by_unit.get_mut(u) {
                    slot.1 += 1;
                }
            } else {
                b.errors += 1;
            }
        }
        for (b, h) in buckets.iter_mut().zip(&hists) {
            if !h.is_empty() {
                b.p50_us = h.value_at_quantile(0.50);
                b.p99_us = h.value_at_quantile(0.99);
            }
        }
        Timeline {
            bucket_ms,
            buckets,
            events: self.events.clone(),
        }
    }

    /// After `from_ms`, how long until every request is an ok served by
    /// `unit`: the completion of the last request after `from_ms` that is not
    /// (an error, or served elsewhere), minus `from_ms`; 0 when there is none.
    /// `None` when no request after `from_ms` was served by `unit` at all.
    pub fn settled_on(&self, unit: &str, from_ms: u64) -> Option<u64> {
        let idx = self.units.iter().position(|u| u == unit)?;
        let idx = u16::try_from(idx).ok()?;
        let after = self.records.iter().filter(|r| r.done_us >= from_ms * 1000);
        let mut served = false;
        let mut last_other: Option<u64> = None;
        for r in after {
            if r.ok() && r.unit == idx {
                served = true;
            } else {
                last_other = Some(r.done_us);
            }
        }
        served.then(|| last_other.map_or(0, |us| (us / 1000).saturating_sub(from_ms)))
    }

    /// Oks after `from_ms` served by each unit (`-` for none).
    pub fn ok_by_unit(&self, from_ms: u64, to_ms: u64) -> Vec<(String, u64)> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for r in self.records.iter().filter(|r| {
            r.ok() && r.done_us >= from_ms * 1000 && r.done_us < to_ms.saturating_mul(1000)
        }) {
            let name = self
                .units
                .get(usize::from(r.unit))
                .map_or("-", String::as_str);
            *counts.entry(name.to_owned()).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// Statuses other than 2xx and their counts (0 = no response).
    pub fn error_statuses(&self) -> BTreeMap<u16, u64> {
        let mut m = BTreeMap::new();
        for r in self.records.iter().filter(|r| !r.ok()) {
            *m.entry(r.status).or_default() += 1;
        }
        m
    }

    /// The actions as a markdown list.
    pub fn actions_markdown(&self) -> String {
        let mut s = String::new();
        for a in &self.actions {
            let _ = writeln!(
                s,
                "- at {} ms: {} — {} ({} ms)",
                a.start_ms,
                a.label,
                match &a.result {
                    Ok(r) => r.clone(),
                    Err(e) => format!("**failed**: {e}"),
                },
                a.took.as_millis()
            );
        }
        s
    }
}

/// What one connection gathered.
#[derive(Default)]
struct ConnResult {
    records: Vec<Record>,
    units: Vec<String>,
    transport_errors: BTreeMap<String, u64>,
}

struct Shared {
    load: Load,
    extra: Extra,
    start: Instant,
    started: AtomicU64,
}

/// Runs the load, with `actions` at their offsets and `events` (ms, label)
/// marked on the timeline, and returns every request's record.
pub fn run(load: &Load, actions: Vec<Action>, events: &[(u64, String)]) -> Result<Run> {
    run_with(load, &Extra::default(), actions, events)
}

/// [`run`] with the [`Extra`]s: several target addresses, a response tag.
pub fn run_with(
    load: &Load,
    extra: &Extra,
    actions: Vec<Action>,
    events: &[(u64, String)],
) -> Result<Run> {
    if load.connections == 0 || load.requests.is_empty() || load.max_requests == 0 {
        bail!("a load needs at least one connection, one request and a max_requests >= 1");
    }
    if load.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("the request rate must be positive");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the driver's tokio runtime")?;
    let start = Instant::now();
    let deadline = start + load.duration;
    let actor = thread::Builder::new()
        .name("bench-actions".into())
        .spawn(move || run_actions(start, deadline, actions))
        .context("starting the actions thread")?;
    let shared = Arc::new(Shared {
        load: load.clone(),
        extra: extra.clone(),
        start,
        started: AtomicU64::new(0),
    });
    let conns: Vec<ConnResult> = rt.block_on(async {
        let tasks: Vec<_> = (0..load.connections)
            .map(|i| tokio::spawn(connection(i, Arc::clone(&shared))))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(
                t.await
                    .map_err(|e| anyhow!("a load connection panicked: {e}"))?,
            );
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let elapsed = start.elapsed();
    let outcomes = actor
        .join()
        .map_err(|_| anyhow!("the actions thread panicked"))?;
    procs::check_interrupted()?;
    let mut run = merge(conns);
    run.elapsed = elapsed;
    run.duration = load.duration;
    run.events = events.to_vec();
    run.events.extend(
        outcomes
            .iter()
            .filter(|o| o.ran)
            .map(|o| (o.start_ms, o.label.clone())),
    );
    run.events.sort();
    run.actions = outcomes;
    Ok(run)
}

/// Joins the connections' records, re-indexing units into one sorted list.
fn merge(conns: Vec<ConnResult>) -> Run {
    let mut units: Vec<String> = conns.iter().flat_map(|c| c.units.clone()).collect();
    units.sort();
    units.dedup();
    let mut run = Run::default();
    for c in conns {
        let map: Vec<u16> = c
            .units
            .iter()
            .map(|u| {
                units
                    .iter()
                    .position(|x| x == u)
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(NO_UNIT)
            })
            .collect();
        run.records.extend(c.records.into_iter().map(|mut r| {
            if r.unit != NO_UNIT {
                r.unit = map.get(usize::from(r.unit)).copied().unwrap_or(NO_UNIT);
            }
            r
        }));
        for (k, v) in c.transport_errors {
            *run.transport_errors.entry(k).or_default() += v;
        }
    }
    run.records.sort_by_key(|r| r.done_us);
    run.units = units;
    run
}

fn run_actions(start: Instant, deadline: Instant, mut actions: Vec<Action>) -> Vec<ActionOutcome> {
    actions.sort_by_key(|a| a.at);
    let mut out = Vec::new();
    for a in actions {
        let due = start + a.at;
        let mut skipped = None;
        loop {
            let now = Instant::now();
            if procs::check_interrupted().is_err() {
                skipped = Some("skipped: interrupted");
                break;
            }
            if due >= deadline {
                skipped = Some("skipped: after the end of the load");
                break;
            }
            if now >= due {
                break;
            }
            thread::sleep((due - now).min(Duration::from_millis(20)));
        }
        let begun = Instant::now();
        let start_ms = match skipped {
            Some(_) => a.at.as_millis() as u64,
            None => begun.duration_since(start).as_millis() as u64,
        };
        let ran = skipped.is_none();
        let result = match skipped {
            Some(why) => Err(why.to_owned()),
            None => (a.run)().map_err(|e| format!("{e:#}")),
        };
        if let Err(e) = &result {
            eprintln!("bench: action {:?}: {e}", a.label);
        }
        out.push(ActionOutcome {
            label: a.label,
            start_ms,
            took: begun.elapsed(),
            result,
            ran,
        });
    }
    out
}

fn elapsed_us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends when the sender is dropped or the server closes the connection.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One connection's loop: pace, send, record; reconnect after an error.
async fn connection(id: usize, shared: Arc<Shared>) -> ConnResult {
    let load = &shared.load;
    let start = shared.start;
    let deadline = tokio::time::Instant::from_std(start + load.duration);
    let interval = load
        .rate
        .map(|r| Duration::from_secs_f64(load.connections as f64 / r));
    // Stagger the paced connections over one interval.
    let mut next = tokio::time::Instant::from_std(start)
        + interval.map_or(Duration::ZERO, |i| i * id as u32 / load.connections as u32);
    let mut out = ConnResult::default();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let extra = &shared.extra;
    let (addr, target) = match extra.addrs.len() {
        0 => (load.addr, 0),
        n => (extra.addrs[id % n], (id % n) as u16),
    };
    let host = addr.to_string();
    loop {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next.min(deadline)).await;
            next += iv;
            // Behind by more than an interval (slow answers): no backlog.
            let now = tokio::time::Instant::now();
            if next + iv < now {
                next = now;
            }
        }
        if tokio::time::Instant::now() >= deadline || procs::check_interrupted().is_err() {
            break;
        }
        let seq = shared.started.fetch_add(1, Ordering::Relaxed);
        if seq >= load.max_requests {
            break;
        }
        let variant = (seq % load.requests.len() as u64) as usize;
        let spec = &load.requests[variant];
        let began = Instant::now();
        let outcome = request(&mut sender, load, addr, spec, &host, extra).await;
        let latency_us = began.elapsed().as_micros() as u64;
        let (status, unit, tag) = match outcome {
            Ok(r) => r,
            Err(e) => {
                sender = None;
                let msg: String = format!("{e:#}").chars().take(200).collect();
                *out.transport_errors.entry(msg).or_default() += 1;
                (0, None, 0)
            }
        };
        let unit = match unit {
            None => NO_UNIT,
            Some(u) => match out.units.iter().position(|x| *x == u) {
                Some(p) => u16::try_from(p).unwrap_or(NO_UNIT),
                None => {
                    out.units.push(u);
                    u16::try_from(out.units.len() - 1).unwrap_or(NO_UNIT)
                }
            },
        };
        out.records.push(Record {
            done_us: elapsed_us(start),
            latency_us,
            status,
            unit,
            variant: variant as u32,
            target,
            tag,
        });
        if status == 0 {
            // A dead listener answers connects at once: do not spin on it.
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    out
}

/// One request over the connection in `sender` (made, or remade when the
/// server closed it between requests); returns (status, x-unit-served, tag).
async fn request(
    sender: &mut Option<SendRequest<Empty<Bytes>>>,
    load: &Load,
    addr: SocketAddr,
    spec: &RequestSpec,
    host: &str,
    extra: &Extra,
) -> Result<(u16, Option<String>, u32)> {
    let fut = async {
        // A connection the server closed after its last answer (e.g. a
        // `Connection: close` response) is not an error of this request.
        let usable = match sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            *sender = Some(connect(addr, load.timeout).await?);
        }
        let s = sender.as_mut().ok_or_else(|| anyhow!("no connection"))?;
        let mut b = hyper::Request::builder()
            .method(spec.method.clone())
            .uri(spec.path.as_str())
            .header(hyper::header::HOST, host);
        for (k, v) in &spec.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(Empty::<Bytes>::new())?;
        let resp = s.send_request(req).await?;
        let status = resp.status().as_u16();
        let unit = resp
            .headers()
            .get("x-unit-served")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        let tag = extra
            .classify
            .as_ref()
            .map_or(0, |c| c(status, &parts.headers, &body));
        Ok::<_, anyhow::Error>((status, unit, tag))
    };
    tokio::time::timeout(load.timeout, fut)
        .await
        .map_err(|_| anyhow!("timed out after {} ms", load.timeout.as_millis()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(done_ms: u64, latency_us: u64, status: u16, unit: u16) -> Record {
        Record {
            done_us: done_ms * 1000,
            latency_us,
            status,
            unit,
            variant: 0,
            target: 0,
            tag: 0,
        }
    }

    /// A: index 0, B: index 1.
    fn sample() -> Run {
        Run {
            records: vec![
                rec(10, 100, 200, 0),
                rec(50, 300, 200, 0),
                rec(120, 1000, 200, 0),
                rec(150, 5000, 0, NO_UNIT),
                rec(180, 2000, 503, NO_UNIT),
                rec(210, 400, 200, 1),
                rec(250, 500, 200, 1),
            ],
            units: vec!["A".into(), "B".into()],
            events: vec![(100, "kill A".into())],
            elapsed: Duration::from_millis(300),
            ..Run::default()
        }
    }

    #[test]
    fn buckets_count_oks_by_unit_and_errors() {
        let t = sample().timeline(100);
        assert_eq!(t.bucket_ms, 100);
        assert_eq!(t.buckets.len(), 3);
        type Row = (u64, Vec<(String, u64)>, u64);
        let b: Vec<Row> = t
            .buckets
            .iter()
            .map(|b| (b.start_ms, b.ok_by_unit.clone(), b.errors))
            .collect();
        assert_eq!(
            b,
            vec![
                (0, vec![("A".into(), 2), ("B".into(), 0)], 0),
                (100, vec![("A".into(), 1), ("B".into(), 0)], 2),
                (200, vec![("A".into(), 0), ("B".into(), 2)], 0),
            ]
        );
        assert_eq!(t.events, vec![(100, "kill A".to_owned())]);
        // Latency percentiles per bucket, within the histogram's precision.
        assert!(
            (99..=101).contains(&t.buckets[0].p50_us),
            "{:?}",
            t.buckets[0]
        );
        assert!((299..=301).contains(&t.buckets[0].p99_us));
        assert!((4990..=5010).contains(&t.buckets[1].p99_us));
    }

    #[test]
    fn an_empty_bucket_has_zeros() {
        let mut r = sample();
        r.elapsed = Duration::from_millis(450);
        let t = r.timeline(100);
        assert_eq!(t.buckets.len(), 5);
        assert_eq!(t.buckets[4].errors, 0);
        assert_eq!((t.buckets[4].p50_us, t.buckets[4].p99_us), (0, 0));
    }

    #[test]
    fn oks_without_a_unit_header_get_a_dash_series() {
        let mut r = sample();
        r.records.push(rec(260, 100, 200, NO_UNIT));
        let t = r.timeline(100);
        assert_eq!(
            t.buckets[2].ok_by_unit,
            vec![("A".into(), 0), ("B".into(), 2), ("-".into(), 1)]
        );
    }

    #[test]
    fn summary_over_a_span() {
        let r = sample();
        let all = r.total();
        assert_eq!((all.requests, all.ok, all.errors), (7, 5, 2));
        assert!((all.rps - 7.0 / 0.3).abs() < 1e-6, "{}", all.rps);
        assert!((4990..=5010).contains(&all.max_us));
        let before = r.summary(0, 100);
        assert_eq!((before.requests, before.errors), (2, 0));
        assert!((299..=301).contains(&before.max_us));
        let empty = r.summary(400, 500);
        assert_eq!(empty, Summary::default());
    }

    #[test]
    fn settled_is_the_last_request_not_served_by_the_unit() {
        let r = sample();
        assert_eq!(r.settled_on("B", 100), Some(80));
        assert_eq!(r.settled_on("B", 200), Some(0));
        assert_eq!(r.settled_on("A", 100), Some(150));
        assert_eq!(r.settled_on("C", 0), None);
    }

    #[test]
    fn statuses_and_oks_by_unit() {
        let mut r = sample();
        r.records.push(rec(1500, 100, 429, NO_UNIT));
        r.elapsed = Duration::from_millis(1800);
        assert_eq!(
            r.error_statuses().into_iter().collect::<Vec<_>>(),
            vec![(0, 1), (429, 1), (503, 1)]
        );
        assert_eq!(
            r.ok_by_unit(100, 1000),
            vec![("A".to_owned(), 1), ("B".to_owned(), 2)]
        );
    }

    /// A keep-alive HTTP/1.1 server on a free port: answers every request
    /// `200` with `x-unit-served: A`, except `/fail` (`503`, no unit header).
    fn tiny_server() -> SocketAddr {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        thread::spawn(move || {
            for conn in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut w = conn.try_clone().expect("clone");
                    let mut r = BufReader::new(conn);
                    loop {
                        let mut first = String::new();
                        if r.read_line(&mut first).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut line = String::new();
                        while r.read_line(&mut line).unwrap_or(0) > 2 {
                            line.clear();
                        }
                        let resp: &[u8] = if first.starts_with("GET /fail ") {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\nx-unit-served: A\r\ncontent-length: 3\r\n\r\nok\n"
                        };
                        if w.write_all(resp).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn drives_a_real_server_with_actions() {
        let addr = tiny_server();
        let load = Load {
            addr,
            connections: 2,
            rate: Some(400.0),
            duration: Duration::from_millis(500),
            max_requests: 150,
            timeout: Duration::from_secs(2),
            requests: vec![
                RequestSpec::get("/", &[("x-user-id", "1")]),
                RequestSpec::get("/", &[]),
                RequestSpec::get("/fail", &[]),
            ],
        };
        let act = Action::new(Duration::from_millis(100), "poke", || Ok("done".into()));
        let late = Action::new(Duration::from_secs(5), "never", || Ok("ran".into()));
        let run = run(&load, vec![act, late], &[(50, "mark".into())]).expect("run");
        // Paced at 400/s for 0.5 s: about 200, capped at 150 by max_requests.
        let t = run.total();
        assert!((50..=150).contains(&t.requests), "{t:?}");
        assert_eq!(
            t.errors,
            run.records.iter().filter(|r| r.status == 503).count() as u64
        );
        assert!(
            t.errors * 3 >= t.requests - 2 && t.errors * 3 <= t.requests + 2,
            "{t:?}"
        );
        assert_eq!(run.units, vec!["A".to_owned()]);
        assert_eq!(run.ok_by_unit(0, 10_000), vec![("A".to_owned(), t.ok)]);
        assert!(
            run.transport_errors.is_empty(),
            "{:?}",
            run.transport_errors
        );
        let labels: Vec<&str> = run.events.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, vec!["mark", "poke"]);
        assert_eq!(run.actions[0].result, Ok("done".to_owned()));
        assert!(run.actions[1].result.is_err(), "{:?}", run.actions[1]);
        assert!(run.actions[0].start_ms >= 100);
    }

    #[test]
    fn spreads_connections_over_addresses_and_tags_responses() {
        let (one, two) = (tiny_server(), tiny_server());
        let load = Load {
            addr: one,
            connections: 4,
            rate: Some(400.0),
            duration: Duration::from_millis(300),
            max_requests: 1000,
            timeout: Duration::from_secs(2),
            requests: vec![RequestSpec::get("/", &[]), RequestSpec::get("/fail", &[])],
        };
        let classify: Classify = Arc::new(|status, headers, body| {
            u32::from(status == 200 && body == b"ok\n" && headers.contains_key("x-unit-served"))
        });
        let extra = Extra {
            addrs: vec![one, two],
            classify: Some(classify),
        };
        let run = run_with(&load, &extra, vec![], &[]).expect("run");
        assert!(run.records.len() >= 20, "{}", run.records.len());
        for r in &run.records {
            assert_eq!(r.tag, u32::from(r.variant == 0), "{r:?}");
            assert_eq!(r.status == 200, r.variant == 0, "{r:?}");
            assert!(r.sent_us() <= r.done_us);
        }
        for target in [0, 1] {
            assert!(run.records.iter().any(|r| r.target == target));
        }
    }

    #[test]
    fn a_dead_listener_counts_as_errors_without_spinning() {
        let port = procs::free_port().expect("port");
        let load = Load {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            connections: 1,
            rate: None,
            duration: Duration::from_millis(200),
            max_requests: 1000,
            timeout: Duration::from_secs(1),
            requests: vec![RequestSpec::get("/", &[])],
        };
        let run = run(&load, vec![], &[]).expect("run");
        let t = run.total();
        // One failed connect per RECONNECT_PAUSE at most.
        assert!(t.requests >= 1 && t.requests <= 25, "{t:?}");
        assert_eq!(t.errors, t.requests);
        assert!(!run.transport_errors.is_empty());
    }

    #[test]
    fn merge_reindexes_units() {
        let a = ConnResult {
            records: vec![rec(5, 1, 200, 0)],
            units: vec!["B".into()],
            ..ConnResult::default()
        };
        let b = ConnResult {
            records: vec![rec(3, 1, 200, 0), rec(4, 1, 200, 1)],
            units: vec!["A".into(), "B".into()],
            ..ConnResult::default()
        };
        let run = merge(vec![a, b]);
        assert_eq!(run.units, vec!["A".to_owned(), "B".to_owned()]);
        let got: Vec<(u64, u16)> = run.records.iter().map(|r| (r.done_us, r.unit)).collect();
        assert_eq!(got, vec![(3000, 0), (4000, 1), (5000, 1)]);
    }
}
