//! The data plane's access log, off the `tracing` path.
//!
//! One line per request is the most frequent thing the gateway writes, and
//! through `tracing`'s formatter it cost more CPU than the rest of the
//! request path together (a formatted `String` per line, a channel message
//! per line and one `write` system call per line on the writer thread). Here
//! a worker formats the line straight into its own shard buffer (integers and
//! the cached date without allocation), and a writer thread swaps the
//! buffers out every [`FLUSH_EVERY`] (sooner when one fills) and writes each
//! batch with one call. The request path never waits on the disk: a shard
//! that a stalled writer has let grow to [`MAX_PENDING`] drops lines, counts
//! them (`unitgate_access_log_dropped_total`) and says so in the log once.
//!
//! The lines are those `tracing` wrote before (same fields, same text and
//! JSON layouts), and they go to the same stderr, a batch at a time under
//! its lock, so they never interleave with other log lines.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often pending lines are written at the latest.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A shard this full wakes the writer.
const WAKE_AT: usize = 64 * 1024;
/// A shard this full (the writer is stuck) drops new lines.
pub const MAX_PENDING: usize = 1024 * 1024;
const SHARDS: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Text,
    Json,
}

struct Shard {
    buf: Vec<u8>,
    /// The second `date` was formatted for, and its `YYYY-MM-DDTHH:MM:SS`.
    date_secs: u64,
    date: [u8; 19],
}

/// Where lines go: stderr, or a file reopened on SIGUSR1 (logrotate's
/// convention: rename the file, signal, the gateway writes a new one).
enum Output {
    Stderr,
    File {
        path: std::path::PathBuf,
        file: Option<std::fs::File>,
    },
}

impl Output {
    fn write(&mut self, batch: &[u8]) {
        match self {
            // Nowhere to report a failing stderr: the lines are lost.
            Output::Stderr => {
                let _ = std::io::stderr().lock().write_all(batch);
            }
            Output::File { path, file } => {
                if file.is_none() {
                    *file = open(path);
                }
                if let Some(f) = file {
                    if let Err(e) = f.write_all(batch) {
                        tracing::error!(file = %path.display(), "access log: {e}");
                        *file = None;
                    }
                }
            }
        }
    }

    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            *file = open(path);
            tracing::info!(file = %path.display(), "access log reopened");
        }
    }
}

fn open(path: &std::path::Path) -> Option<std::fs::File> {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(file = %path.display(), "access log: cannot open: {e}");
            None
        }
    }
}

/// Set by SIGUSR1: the writer reopens the file.
static REOPEN: std::sync::LazyLock<std::sync::Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(AtomicBool::new(false)));

struct Logger {
    format: Format,
    output: Mutex<Output>,
    shards: Vec<Mutex<Shard>>,
    wake: (Mutex<bool>, Condvar),
    dropped: AtomicU64,
    warned: AtomicBool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// Starts the access log (once; `enabled = false` leaves it off, as
/// `RUST_LOG=...,access=off` asks), to `file` (appended; reopened on
/// SIGUSR1) or stderr.
pub fn init(format: Format, enabled: bool, file: Option<std::path::PathBuf>) -> Result<(), String> {
    if !enabled {
        return Ok(());
    }
    let output = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("--access-log {}: {e}", path.display()))?;
            signal_hook::flag::register(signal_hook::consts::SIGUSR1, REOPEN.clone())
                .map_err(|e| format!("SIGUSR1 handler: {e}"))?;
            Output::File {
                path,
                file: Some(f),
            }
        }
        None => Output::Stderr,
    };
    let logger = Logger {
        format,
        output: Mutex::new(output),
        shards: (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    buf: Vec::with_capacity(WAKE_AT),
                    date_secs: u64::MAX,
                    date: [b'0'; 19],
                })
            })
            .collect(),
        wake: (Mutex::new(false), Condvar::new()),
        dropped: AtomicU64::new(0),
        warned: AtomicBool::new(false),
    };
    if LOGGER.set(logger).is_err() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(writer_loop)
        .map(|_| ())
        .map_err(|e| format!("access log writer: {e}"))
}

/// Whether lines are being written (checked before building one).
pub fn enabled() -> bool {
    LOGGER.get().is_some()
}

/// Lines dropped because the writer could not keep up.
pub fn dropped() -> u64 {
    LOGGER
        .get()
        .map_or(0, |l| l.dropped.load(Ordering::Relaxed))
}

/// Writes every pending line now (before the process exits).
pub fn flush() {
    if let Some(l) = LOGGER.get() {
        write_pending(l, &mut Vec::new());
    }
}

fn writer_loop() {
    let Some(l) = LOGGER.get() else {
        return;
    };
    let mut spare = Vec::with_capacity(WAKE_AT);
    loop {
        {
            let (lock, cv) = &l.wake;
            let woken = lock.lock().unwrap_or_else(|p| p.into_inner());
            let (mut woken, _) = cv
                .wait_timeout_while(woken, FLUSH_EVERY, |w| !*w)
                .unwrap_or_else(|p| p.into_inner());
            *woken = false;
        }
        write_pending(l, &mut spare);
        if REOPEN.swap(false, Ordering::Relaxed) {
            l.output.lock().unwrap_or_else(|p| p.into_inner()).reopen();
        }
    }
}

/// Swaps each shard's buffer with `spare` and writes it; the lock on a
/// shard is held for the swap only.
fn write_pending(l: &Logger, spare: &mut Vec<u8>) {
    let mut out = l.output.lock().unwrap_or_else(|p| p.into_inner());
    for shard in &l.shards {
        {
            let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
            if s.buf.is_empty() {
                continue;
            }
            std::mem::swap(&mut s.buf, spare);
        }
        out.write(spare);
        spare.clear();
    }
}

/// One request's line. Borrowed from the request context: nothing is
/// copied before it is formatted.
pub struct Line<'a> {
    pub request_id: &'a str,
    pub trace_id: u128,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration: Duration,
    /// `None`: the request never got as far as a snapshot (a bare line).
    pub routed: Option<Routed<'a>>,
}

/// The fields of a request the gateway got to route.
pub struct Routed<'a> {
    pub route: &'a str,
    pub service: &'a str,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub upgraded: bool,
    pub home_unit: &'a str,
    pub served_unit: &'a str,
    pub slot: Option<u32>,
    pub crossed: bool,
    pub attempts: u32,
    pub degraded: Option<&'a str>,
    pub limited: bool,
    pub error: Option<&'a dyn std::fmt::Display>,
}

/// Appends `line` to this thread's shard.
pub fn write(line: &Line<'_>) {
    let Some(l) = LOGGER.get() else {
        return;
    };
    let i = SHARD.with(|s| *s);
    let mut s = l.shards[i].lock().unwrap_or_else(|p| p.into_inner());
    if s.buf.len() >= MAX_PENDING {
        drop(s);
        l.dropped.fetch_add(1, Ordering::Relaxed);
        if !l.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "access log: the writer cannot keep up (stderr blocked or slow); \
                 lines are being dropped, counted in unitgate_access_log_dropped_total"
            );
        }
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let shard = &mut *s;
    if shard.date_secs != now.as_secs() {
        shard.date_secs = now.as_secs();
        shard.date = civil(now.as_secs());
    }
    let full = {
        let mut out = Out {
            buf: &mut shard.buf,
            json: l.format == Format::Json,
        };
        out.begin(&shard.date, now.subsec_micros());
        out.fields(line);
        out.end();
        shard.buf.len() >= WAKE_AT
    };
    drop(s);
    if full {
        let (lock, cv) = &l.wake;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_one();
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time in seconds.
fn civil(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = [b'0'; 19];
    // Exactly 19 bytes for years 0-9999; later years are cut, not a panic.
    let _ = write!(
        &mut out[..],
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    out
}

/// A line being written: `tracing`'s text layout
/// (`<time>  INFO access: k=v k="s"`) or its flattened JSON.
struct Out<'b> {
    buf: &'b mut Vec<u8>,
    json: bool,
}

/// A field's key with what goes before it, in both layouts: ` name=` and
/// `,"name":` (every field follows the time, or in JSON the level, so each
/// has its separator), one copy per field.
#[derive(Clone, Copy)]
struct Key {
    text: &'static str,
    json: &'static str,
}

macro_rules! key {
    ($name:literal) => {
        Key {
            text: concat!(" ", $name, "="),
            json: concat!(",\"", $name, "\":"),
        }
    };
}

impl Out<'_> {
    fn begin(&mut self, date: &[u8; 19], micros: u32) {
        if self.json {
            self.buf.extend_from_slice(b"{\"timestamp\":\"");
        }
        self.buf.extend_from_slice(date);
        self.buf.push(b'.');
        self.digits(u64::from(micros), 6);
        self.buf.push(b'Z');
        if self.json {
            self.buf.extend_from_slice(b"\",\"level\":\"INFO\"");
        } else {
            self.buf.extend_from_slice(b"  INFO access:");
        }
    }

    fn end(&mut self) {
        if self.json {
            self.buf.extend_from_slice(b",\"target\":\"access\"}\n");
        } else {
            self.buf.push(b'\n');
        }
    }

    fn key(&mut self, k: Key) {
        let k = if self.json { k.json } else { k.text };
        self.buf.extend_from_slice(k.as_bytes());
    }

    fn str(&mut self, k: Key, v: &str) {
        self.key(k);
        self.quoted(v);
    }

    /// A bare value in text (`method=GET`), a string in JSON.
    fn bare(&mut self, k: Key, v: &[u8]) {
        self.key(k);
        if self.json {
            self.buf.push(b'"');
            self.buf.extend_from_slice(v);
            self.buf.push(b'"');
        } else {
            self.buf.extend_from_slice(v);
        }
    }

    fn uint(&mut self, k: Key, v: u64) {
        self.key(k);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    fn bool(&mut self, k: Key, v: bool) {
        self.key(k);
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    /// `v` as exactly `width` decimal digits (zero-padded, cut on the left).
    fn digits(&mut self, mut v: u64, width: usize) {
        let start = self.buf.len();
        self.buf.resize(start + width, b'0');
        for b in self.buf[start..].iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }

    fn quoted(&mut self, v: &str) {
        self.buf.push(b'"');
        // Nearly every value needs no escape: one scan, one copy.
        if !v
            .bytes()
            .any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f)
        {
            self.buf.extend_from_slice(v.as_bytes());
            self.buf.push(b'"');
            return;
        }
        for c in v.chars() {
            match c {
                '"' => self.buf.extend_from_slice(b"\\\""),
                '\\' => self.buf.extend_from_slice(b"\\\\"),
                '\n' => self.buf.extend_from_slice(b"\\n"),
                '\r' => self.buf.extend_from_slice(b"\\r"),
                '\t' => self.buf.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    // JSON's \u00XX; Rust's Debug form `\u{1}` in text, as tracing wrote.
                    let _ = if self.json {
                        write!(self.buf, "\\u{:04x}", c as u32)
                    } else {
                        write!(self.buf, "\\u{{{:x}}}", c as u32)
                    };
                }
                c => {
                    let mut b = [0u8; 4];
                    self.buf.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        self.buf.push(b'"');
    }

    fn client(&mut self, ip: Option<IpAddr>) {
        self.key(key!("client"));
        self.buf.push(b'"');
        match ip {
            Some(IpAddr::V4(v4)) => {
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b'.');
                    }
                    self.buf
                        .extend_from_slice(itoa::Buffer::new().format(o).as_bytes());
                }
            }
            Some(ip) => {
                let _ = write!(self.buf, "{ip}");
            }
            None => {}
        }
        self.buf.push(b'"');
    }

    /// Milliseconds with three decimals, from microseconds.
    fn millis(&mut self, d: Duration) {
        self.key(key!("duration_ms"));
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(us / 1000).as_bytes());
        self.buf.push(b'.');
        self.digits(us % 1000, 3);
    }

    fn fields(&mut self, l: &Line<'_>) {
        self.str(key!("request_id"), l.request_id);
        self.bare(key!("trace_id"), &crate::proxy::forward::hex32(l.trace_id));
        self.client(l.client);
        self.bare(key!("method"), l.method.as_bytes());
        self.str(key!("path"), l.path);
        let Some(r) = &l.routed else {
            self.uint(key!("status"), u64::from(l.status));
            self.millis(l.duration);
            return;
        };
        self.str(key!("route"), r.route);
        self.str(key!("service"), r.service);
        self.uint(key!("status"), u64::from(l.status));
        self.millis(l.duration);
        self.uint(key!("bytes_in"), r.bytes_in as u64);
        self.uint(key!("bytes_out"), r.bytes_out as u64);
        self.bool(key!("upgraded"), r.upgraded);
        self.str(key!("home_unit"), r.home_unit);
        self.str(key!("served_unit"), r.served_unit);
        if let Some(slot) = r.slot {
            self.uint(key!("slot"), u64::from(slot));
        }
        self.bool(key!("crossed"), r.crossed);
        self.uint(key!("attempts"), u64::from(r.attempts));
        if let Some(d) = r.degraded {
            self.str(key!("degraded"), d);
        }
        self.bool(key!("limited"), r.limited);
        if let Some(e) = r.error {
            self.str(key!("error"), &e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(json: bool, line: &Line<'_>) -> String {
        let mut buf = Vec::new();
        let mut out = Out {
            buf: &mut buf,
            json,
        };
        out.begin(&civil(1_796_189_412), 32_388);
        out.fields(line);
        out.end();
        String::from_utf8(buf).expect("utf8")
    }

    fn sample<'a>(err: &'a dyn std::fmt::Display) -> Line<'a> {
        Line {
            request_id: "rid-1",
            trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            client: Some("127.0.0.1".parse().expect("ip")),
            method: "GET",
            path: "/orders/\"9\"",
            status: 200,
            duration: Duration::from_micros(2_315_709),
            routed: Some(Routed {
                route: "orders",
                service: "echo",
                bytes_in: 0,
                bytes_out: 30,
                upgraded: false,
                home_unit: "B",
                served_unit: "B",
                slot: Some(7500),
                crossed: false,
                attempts: 1,
                degraded: None,
                limited: false,
                error: Some(err),
            }),
        }
    }

    #[test]
    fn numbers_are_padded_as_fmt_padded_them() {
        let mut line = sample(&"");
        line.trace_id = 0xab;
        line.duration = Duration::from_micros(5);
        line.client = Some("::1".parse().expect("ip"));
        line.routed = None;
        let text = render(false, &line);
        assert!(
            text.contains("trace_id=000000000000000000000000000000ab client=\"::1\""),
            "{text}"
        );
        assert!(text.ends_with("status=200 duration_ms=0.005\n"), "{text}");
        line.client = Some("10.200.3.45".parse().expect("ip"));
        assert!(render(true, &line).contains("\"client\":\"10.200.3.45\""));
    }

    #[test]
    fn dates_are_utc_civil_time() {
        assert_eq!(&civil(0), b"1970-01-01T00:00:00");
        assert_eq!(&civil(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&civil(1_796_189_412), b"2026-12-02T05:30:12");
    }

    #[test]
    fn text_lines_read_like_tracing_s() {
        let line = render(false, &sample(&"boom\n"));
        assert_eq!(
            line,
            "2026-12-02T05:30:12.032388Z  INFO access: request_id=\"rid-1\" \
             trace_id=4bf92f3577b34da6a3ce929d0e0e4736 client=\"127.0.0.1\" method=GET \
             path=\"/orders/\\\"9\\\"\" route=\"orders\" service=\"echo\" status=200 \
             duration_ms=2315.709 bytes_in=0 bytes_out=30 upgraded=false home_unit=\"B\" \
             served_unit=\"B\" slot=7500 crossed=false attempts=1 limited=false \
             error=\"boom\\n\"\n"
        );
    }

    #[test]
    fn json_lines_parse_with_every_field_typed() {
        let line = render(true, &sample(&"a\u{1}b"));
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        assert_eq!(v["timestamp"], "2026-12-02T05:30:12.032388Z");
        assert_eq!(
            (v["level"].as_str(), v["target"].as_str()),
            (Some("INFO"), Some("access"))
        );
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["path"], "/orders/\"9\"");
        assert_eq!(
            (v["status"].as_u64(), v["slot"].as_u64()),
            (Some(200), Some(7500))
        );
        assert_eq!(v["duration_ms"].as_f64(), Some(2315.709));
        assert_eq!(
            (v["crossed"].as_bool(), v["upgraded"].as_bool()),
            (Some(false), Some(false))
        );
        assert_eq!(v["error"], "a\u{1}b");
        assert!(v.get("degraded").is_none(), "absent fields are left out");
    }
}
