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
            first: true,
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
    first: bool,
}

impl Out<'_> {
    fn begin(&mut self, date: &[u8; 19], micros: u32) {
        if self.json {
            self.buf.extend_from_slice(b"{\"timestamp\":\"");
        }
        self.buf.extend_from_slice(date);
        let _ = write!(self.buf, ".{micros:06}Z");
        if self.json {
            self.buf.extend_from_slice(b"\",\"level\":\"INFO\"");
            self.first = false;
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

    fn key(&mut self, k: &str) {
        if self.json {
            if !self.first {
                self.buf.push(b',');
            }
            self.buf.push(b'"');
            self.buf.extend_from_slice(k.as_bytes());
            self.buf.extend_from_slice(b"\":");
        } else {
            self.buf.push(b' ');
            self.buf.extend_from_slice(k.as_bytes());
            self.buf.push(b'=');
        }
        self.first = false;
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.quoted(v);
    }

    /// A bare value in text (`method=GET`), a string in JSON.
    fn bare(&mut self, k: &str, v: std::fmt::Arguments<'_>) {
        self.key(k);
        if self.json {
            self.buf.push(b'"');
            let _ = self.buf.write_fmt(v);
            self.buf.push(b'"');
        } else {
            let _ = self.buf.write_fmt(v);
        }
    }

    fn num(&mut self, k: &str, v: std::fmt::Arguments<'_>) {
        self.key(k);
        let _ = self.buf.write_fmt(v);
    }

    fn quoted(&mut self, v: &str) {
        self.buf.push(b'"');
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

    fn fields(&mut self, l: &Line<'_>) {
        let ms = l.duration.as_micros();
        self.str("request_id", l.request_id);
        self.bare("trace_id", format_args!("{:032x}", l.trace_id));
        self.key("client");
        match l.client {
            Some(ip) => {
                self.buf.push(b'"');
                let _ = write!(self.buf, "{ip}");
                self.buf.push(b'"');
            }
            None => self.buf.extend_from_slice(b"\"\""),
        }
        self.bare("method", format_args!("{}", l.method));
        self.str("path", l.path);
        let Some(r) = &l.routed else {
            self.num("status", format_args!("{}", l.status));
            self.num(
                "duration_ms",
                format_args!("{}.{:03}", ms / 1000, ms % 1000),
            );
            return;
        };
        self.str("route", r.route);
        self.str("service", r.service);
        self.num("status", format_args!("{}", l.status));
        self.num(
            "duration_ms",
            format_args!("{}.{:03}", ms / 1000, ms % 1000),
        );
        self.num("bytes_in", format_args!("{}", r.bytes_in));
        self.num("bytes_out", format_args!("{}", r.bytes_out));
        self.num("upgraded", format_args!("{}", r.upgraded));
        self.str("home_unit", r.home_unit);
        self.str("served_unit", r.served_unit);
        if let Some(slot) = r.slot {
            self.num("slot", format_args!("{slot}"));
        }
        self.num("crossed", format_args!("{}", r.crossed));
        self.num("attempts", format_args!("{}", r.attempts));
        if let Some(d) = r.degraded {
            self.str("degraded", d);
        }
        self.num("limited", format_args!("{}", r.limited));
        if let Some(e) = r.error {
            self.str("error", &e.to_string());
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
            first: true,
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
