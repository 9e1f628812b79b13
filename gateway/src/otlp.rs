//! OTLP/HTTP span export (`[tracing]`): one span per sampled request.
//!
//! The request path does as little as it can: whether a request is sampled
//! was decided with its trace ([`crate::proxy::trace`]); an unsampled request
//! costs nothing here. A sampled one builds its [`SpanData`] at the end of
//! the request (the access line's fields, so start and end are known) and
//! hands it to a queue that never blocks: over `queue_size` spans waiting or
//! in export, it is dropped and counted. One thread, `unitgate-otlp`, batches
//! the queue (up to [`BATCH`] spans or [`LINGER`] after the first) and posts
//! each batch with opentelemetry-otlp's HTTP exporter (protobuf); a failed
//! batch is dropped and counted too — the exporter itself retries within its
//! timeout. A reload that changes the endpoint, the service name or the unit
//! is picked up at the next batch.

use crate::access_log::Line;
use crate::proxy::trace::Trace;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Spans per export request, at most.
const BATCH: usize = 512;
/// How long the first span of a batch waits for others.
const LINGER: Duration = Duration::from_millis(500);
/// One export (with the exporter's retries) gives up after this.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as what this snapshot's spans are exported.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub url: String,
    pub service_name: String,
    /// This gateway's unit: a resource attribute.
    pub unit: String,
    pub queue_size: usize,
    /// Trace ids at or below this (low 64 bits) are sampled when started here.
    pub threshold: u64,
}

impl Target {
    pub fn new(t: &unitgate_config::Tracing, unit: &str) -> Target {
        Target {
            url: t.traces_url.clone(),
            service_name: t.service_name.clone(),
            unit: unit.to_owned(),
            queue_size: t.queue_size,
            threshold: t.sample_threshold,
        }
    }
}

enum Msg {
    Span(Arc<Target>, Box<SpanData>),
    /// Export what is queued, then answer.
    Flush(mpsc::SyncSender<()>),
}

/// Spans queued or being exported.
static PENDING: AtomicUsize = AtomicUsize::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED_FULL: AtomicU64 = AtomicU64::new(0);
static DROPPED_FAILED: AtomicU64 = AtomicU64::new(0);
/// The export thread's queue; `None` when the thread could not start.
static QUEUE: OnceLock<Option<Sender<Msg>>> = OnceLock::new();

/// Spans exported, dropped because the queue was full, dropped because their
/// export failed: `unitgate_tracing_spans_{exported,dropped}_total`.
pub fn counts() -> (u64, u64, u64) {
    (
        EXPORTED.load(Ordering::Relaxed),
        DROPPED_FULL.load(Ordering::Relaxed),
        DROPPED_FAILED.load(Ordering::Relaxed),
    )
}

/// The queue, the export thread started on first use.
fn sender() -> Option<&'static Sender<Msg>> {
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            let started = std::thread::Builder::new()
                .name("unitgate-otlp".into())
                .spawn(move || export_loop(rx));
            match started {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!("span export disabled: cannot start its thread: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// Queues the span of a finished, sampled request; never blocks.
pub fn record(target: &Arc<Target>, trace: &Trace, line: &Line<'_>) {
    if PENDING.fetch_add(1, Ordering::Relaxed) >= target.queue_size {
        PENDING.fetch_sub(1, Ordering::Relaxed);
        DROPPED_FULL.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let span = Box::new(span_of(trace, line));
    match sender() {
        Some(tx) if tx.send(Msg::Span(target.clone(), span)).is_ok() => {}
        _ => {
            PENDING.fetch_sub(1, Ordering::Relaxed);
            DROPPED_FAILED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Exports what is queued, waiting at most `within` (at shutdown).
pub fn flush(within: Duration) {
    if PENDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let Some(tx) = sender() else { return };
    let (done, wait) = mpsc::sync_channel(1);
    if tx.send(Msg::Flush(done)).is_ok() && wait.recv_timeout(within).is_err() {
        tracing::warn!("spans still queued at exit were not exported within {within:?}");
    }
}

fn span_of(trace: &Trace, l: &Line<'_>) -> SpanData {
    let end = SystemTime::now();
    let start = end.checked_sub(l.duration).unwrap_or(end);
    let mut attributes = Vec::with_capacity(16);
    attributes.push(KeyValue::new("http.request.method", l.method.to_owned()));
    attributes.push(KeyValue::new("url.path", l.path.to_owned()));
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(l.status),
    ));
    if let Some(ip) = l.client {
        attributes.push(KeyValue::new("client.address", ip.to_string()));
    }
    attributes.push(KeyValue::new(
        "unitgate.request_id",
        l.request_id.to_owned(),
    ));
    let mut name = l.method.to_owned();
    if let Some(r) = &l.routed {
        if !r.route.is_empty() {
            name.push(' ');
            name.push_str(r.route);
        }
        let text = [
            ("unitgate.route", r.route),
            ("unitgate.service", r.service),
            ("unitgate.home_unit", r.home_unit),
            ("unitgate.served_unit", r.served_unit),
        ];
        for (key, value) in text.into_iter().filter(|(_, v)| !v.is_empty()) {
            attributes.push(KeyValue::new(key, value.to_owned()));
        }
        if let Some(slot) = r.slot {
            attributes.push(KeyValue::new("unitgate.slot", i64::from(slot)));
        }
        attributes.push(KeyValue::new("unitgate.crossed", r.crossed));
        attributes.push(KeyValue::new("unitgate.attempts", i64::from(r.attempts)));
        if let Some(d) = r.degraded {
            attributes.push(KeyValue::new("unitgate.degraded", d.to_owned()));
        }
        if r.limited {
            attributes.push(KeyValue::new("unitgate.limited", true));
        }
        if let Some(e) = r.error {
            attributes.push(KeyValue::new("error.type", e.to_string()));
        }
    }
    // A server span is an error when the server failed (5xx, or no answer).
    let status = if l.status >= 500 || l.status == 0 {
        Status::error(format!("status {}", l.status))
    } else {
        Status::Unset
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace.id),
            SpanId::from(trace.span),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: if trace.parent == 0 {
            SpanId::INVALID
        } else {
            SpanId::from(trace.parent)
        },
        parent_span_is_remote: trace.parent != 0,
        span_kind: SpanKind::Server,
        name: name.into(),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope(),
    }
}

fn scope() -> InstrumentationScope {
    static SCOPE: OnceLock<InstrumentationScope> = OnceLock::new();
    SCOPE
        .get_or_init(|| {
            InstrumentationScope::builder("unitgate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build()
        })
        .clone()
}

/// The exporter of one target, built on this thread (reqwest's blocking
/// client must not be made inside a tokio runtime).
struct Exporter {
    target: Arc<Target>,
    inner: opentelemetry_otlp::SpanExporter,
}

impl Exporter {
    fn new(target: &Arc<Target>) -> Result<Exporter, String> {
        let mut inner = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(target.url.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .with_headers(Default::default())
            .build()
            .map_err(|e| e.to_string())?;
        let resource = Resource::builder_empty()
            .with_service_name(target.service_name.clone())
            .with_attribute(KeyValue::new("unitgate.unit", target.unit.clone()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        inner.set_resource(&resource);
        Ok(Exporter {
            target: target.clone(),
            inner,
        })
    }
}

fn export_loop(rx: Receiver<Msg>) {
    let mut exporter: Option<Exporter> = None;
    let mut failures = 0u64;
    let mut batch: Vec<(Arc<Target>, SpanData)> = Vec::with_capacity(BATCH);
    loop {
        let mut flush = None;
        match rx.recv() {
            Ok(Msg::Span(t, s)) => batch.push((t, *s)),
            Ok(Msg::Flush(done)) => flush = Some(done),
            Err(_) => return,
        }
        let deadline = Instant::now() + LINGER;
        while flush.is_none() && batch.len() < BATCH {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Msg::Span(t, s)) => batch.push((t, *s)),
                Ok(Msg::Flush(done)) => flush = Some(done),
                Err(_) => break,
            }
        }
        // Spans of one target go together; a reload between them splits the batch.
        while !batch.is_empty() {
            let target = batch[0].0.clone();
            let cut = batch
                .iter()
                .position(|(t, _)| **t != *target)
                .unwrap_or(batch.len());
            let spans: Vec<SpanData> = batch.drain(..cut).map(|(_, s)| s).collect();
            let n = spans.len();
            if exporter.as_ref().is_none_or(|e| *e.target != *target) {
                exporter = match Exporter::new(&target) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        tracing::warn!(url = %target.url, "span exporter not built: {e}");
                        None
                    }
                };
            }
            let result = match &exporter {
                Some(e) => {
                    futures_executor::block_on(e.inner.export(spans)).map_err(|e| e.to_string())
                }
                None => Err("no exporter".to_owned()),
            };
            match result {
                Ok(()) => {
                    EXPORTED.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    DROPPED_FAILED.fetch_add(n as u64, Ordering::Relaxed);
                    failures += 1;
                    // The 1st, 2nd, 4th, 8th... failure: a down collector
                    // does not fill the log.
                    if failures.is_power_of_two() {
                        tracing::warn!(
                            url = %target.url,
                            failures,
                            "{n} spans not exported: {e}"
                        );
                    }
                }
            }
            PENDING.fetch_sub(n, Ordering::Relaxed);
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}
