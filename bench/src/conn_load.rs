//! `unitgate-bench conn-load`: the connection-per-request load client of the
//! `tls-handshake` scenario, and the [`ConnLoad`] load tool that runs it as a
//! child process (pinned like wrk) and reads its one-line JSON report.
//!
//! N concurrent loops on one tokio thread; each loop: TCP connect, for an
//! `https` URL a full TLS handshake (no session resumption: rustls client,
//! ring, the server's certificate must be the bench's and its handshake
//! signature is verified), one `GET / HTTP/1.1` with `Connection: close`,
//! the whole response, then the server's close (EOF, or a TLS close without
//! close_notify); then the next connection. Bounded by `--duration` and
//! `--max-requests`; a connection not done within `--timeout-ms` fails.
//! Latency runs from the connect to the end of the response.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procs;
use crate::tls;
use crate::wrk::{LoadTool, WrkReport};

#[derive(Debug, Clone, Args)]
pub struct ConnLoadArgs {
    /// `http://host:port/path` or `https://host:port/path` (the host is
    /// also the SNI).
    #[arg(long)]
    pub url: String,
    /// Concurrent connection loops.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub connections: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub duration: u64,
    /// At most this many connections in all.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub max_requests: u64,
    /// The certificate the server must present (PEM), for https.
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// A connection not done within this many ms fails.
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    pub timeout_ms: u64,
}

/// The subcommand: runs the load, prints one JSON line.
pub fn run(args: &ConnLoadArgs) -> Result<()> {
    let report = load(args)?;
    println!("{report}");
    Ok(())
}

/// What one connection loop did.
struct LoopResult {
    ok: u64,
    non_2xx: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Histogram<u64>,
    session: Option<tls::Session>,
}

struct Target {
    addr: SocketAddr,
    request: Vec<u8>,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    timeout: Duration,
    deadline: Instant,
    max: u64,
    started: AtomicU64,
}

fn load(args: &ConnLoadArgs) -> Result<serde_json::Value> {
    let (scheme, rest) = args
        .url
        .split_once("://")
        .ok_or_else(|| anyhow!("--url {}: no scheme", args.url))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, _) = authority
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--url {}: no port", args.url))?;
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| anyhow!("{authority}: no IPv4 address"))?;
    let tls = match scheme {
        "http" => None,
        "https" => {
            let path = args.cert.as_ref().context("https needs --cert")?;
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let der = rustls_pemfile::certs(&mut pem.as_slice())
                .next()
                .ok_or_else(|| anyhow!("{}: no certificate", path.display()))?
                .with_context(|| format!("reading {}", path.display()))?;
            let config = tls::pinned_client(der.as_ref().to_vec())?;
            let name = ServerName::try_from(host.to_owned()).context("server name")?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        }
        other => bail!("--url: scheme {other} is neither http nor https"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: unitgate-bench\r\n\r\n"
    )
    .into_bytes();
    let cpu_before = self_cpu_us()?;
    let start = Instant::now();
    let target = Arc::new(Target {
        addr,
        request,
        tls,
        timeout: Duration::from_millis(args.timeout_ms),
        deadline: start + Duration::from_secs(args.duration),
        max: args.max_requests,
        started: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the load runtime")?;
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.connections.max(1) {
            let hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
            tasks.push(tokio::spawn(connection_loop(Arc::clone(&target), hist)));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.context("a connection loop panicked")?);
        }
        anyhow::Ok(out)
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = self_cpu_us()?.saturating_sub(cpu_before);

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let (mut ok, mut non_2xx, mut errors) = (0, 0, 0);
    let mut first_error = None;
    let mut session = None;
    for r in results {
        ok += r.ok;
        non_2xx += r.non_2xx;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
        session = session.or(r.session);
        hist.add(&r.latency_us).context("merging histograms")?;
    }
    let done = ok + non_2xx;
    Ok(serde_json::json!({
        "requests": done,
        "ok": ok,
        "non_2xx": non_2xx,
        "errors": errors,
        "first_error": first_error,
        "elapsed_secs": elapsed,
        "rps": if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 },
        "p50_us": hist.value_at_quantile(0.50),
        "p99_us": hist.value_at_quantile(0.99),
        "client_cpu_us": cpu_us,
        "session": session.map(|s| s.describe()),
    }))
}

/// utime+stime of this process (all threads), µs.
fn self_cpu_us() -> Result<u64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Ok(us(u.user_time()) + us(u.system_time()))
}

async fn connection_loop(t: Arc<Target>, latency_us: Histogram<u64>) -> LoopResult {
    let mut r = LoopResult {
        ok: 0,
        non_2xx: 0,
        errors: 0,
        first_error: None,
        latency_us,
        session: None,
    };
    while Instant::now() < t.deadline && t.started.fetch_add(1, Ordering::Relaxed) < t.max {
        let begin = Instant::now();
        match tokio::time::timeout(t.timeout, one(&t, r.session.is_none())).await {
            Ok(Ok((status, session))) => {
                let us = begin.elapsed().as_micros() as u64;
                let _ = r.latency_us.record(us.max(1));
                if (200..300).contains(&status) {
                    r.ok += 1;
                } else {
                    r.non_2xx += 1;
                }
                if session.is_some() {
                    r.session = session;
                }
            }
            Ok(Err(e)) => {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| format!("{e:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| format!("not done within {:?}", t.timeout));
            }
        }
    }
    r
}

/// One connection: connect, (handshake), GET, response, the server's close.
async fn one(t: &Target, want_session: bool) -> Result<(u16, Option<tls::Session>)> {
    let tcp = TcpStream::connect(t.addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    match &t.tls {
        None => Ok((exchange(tcp, &t.request).await?, None)),
        Some((connector, name)) => {
            let s = connector
                .connect(name.clone(), tcp)
                .await
                .context("TLS handshake")?;
            let session = want_session.then(|| tls::Session::of(s.get_ref().1));
            Ok((exchange(s, &t.request).await?, session))
        }
    }
}

/// Writes the request, reads the whole response and then until the server
/// closes; the status.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &[u8]) -> Result<u16> {
    s.write_all(request).await.context("writing the request")?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let status = loop {
        let n = s.read(&mut chunk).await.context("reading the response")?;
        if n == 0 {
            // EOF: a response without a length ends here.
            let (status, _) = parse_head(&buf)?
                .ok_or_else(|| anyhow!("connection closed before a response head"))?;
            break status;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((status, true)) = parse_head(&buf)? {
            // Complete: now wait for the server's close (`Connection: close`),
            // so the server's close path is part of each request, as with a
            // real client. A read error here (no close_notify) is a close.
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
            break status;
        }
    };
    Ok(status)
}

/// The status and whether the response in `buf` is complete, once the head
/// is in (`None` before): complete when the Content-Length body or the last
/// chunk is in; a response with neither is complete only at EOF.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, bool)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP/1.x response: {status_line:?}"))?;
    let body = &buf[end + 4..];
    let mut complete = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            let len: usize = v.parse().context("content-length")?;
            complete = body.len() >= len;
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
            complete = body.ends_with(b"0\r\n\r\n");
        }
    }
    Ok(Some((status, complete)))
}

/// `conn-load` as a load tool: this binary, pinned to `cpu`.
#[derive(Debug, Clone)]
pub struct ConnLoad {
    pub exe: PathBuf,
    pub connections: u32,
    pub duration: Duration,
    pub cpu: Option<usize>,
    /// The bench certificate (PEM), for https URLs.
    pub cert: PathBuf,
    /// At most this many connections per second of a run (a bound, far
    /// above what one core reaches).
    pub max_per_sec: u64,
}

impl LoadTool for ConnLoad {
    fn duration(&self) -> Duration {
        self.duration
    }

    fn command(&self, url: &str, _headers: &[String], duration: Duration) -> Command {
        let secs = duration.as_secs().max(1);
        let mut cmd = procs::pinned(self.cpu, &self.exe);
        cmd.arg("conn-load")
            .arg("--url")
            .arg(url)
            .arg("--connections")
            .arg(self.connections.to_string())
            .arg("--duration")
            .arg(secs.to_string())
            .arg("--max-requests")
            .arg((self.max_per_sec * secs).to_string());
        if url.starts_with("https://") {
            cmd.arg("--cert").arg(&self.cert);
        }
        cmd
    }

    fn run(&self, url: &str, headers: &[String], duration: Duration) -> Result<WrkReport> {
        let cmd = self.command(url, headers, duration);
        let line = procs::command_line(&cmd);
        let out = procs::run_capture(cmd, duration + Duration::from_secs(20))?;
        procs::check_interrupted()?;
        if !out.status.success() {
            bail!(
                "{line} failed ({}):\n{}{}",
                out.status,
                out.stdout,
                out.stderr
            );
        }
        parse_report(&out.stdout)
            .with_context(|| format!("reading the report of {line}:\n{}", out.stdout))
    }

    fn describe(&self, warmup: Duration, rounds: usize) -> String {
        format!(
            "load: `unitgate-bench conn-load` (src/conn_load.rs), {} concurrent loops on one thread, each a new connection per request (connect, full TLS handshake for https — no resumption, the client checks the certificate is the bench's and verifies the handshake signature —, one `GET /` with `Connection: close`, the response, the server's close); {} s measured after {} s warmup, {rounds} rounds (contenders alternate within each round); medians below",
            self.connections,
            self.duration.as_secs(),
            warmup.as_secs()
        )
    }
}

/// The JSON line of `conn-load` as a [`WrkReport`].
pub fn parse_report(text: &str) -> Result<WrkReport> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow!("no JSON report line"))?;
    let v: serde_json::Value = serde_json::from_str(line).context("parsing the JSON report")?;
    let u = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| anyhow!("report has no {k}"))
    };
    let f = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| anyhow!("report has no {k}"))
    };
    let requests = u("requests")?;
    let client_cpu = u("client_cpu_us")?;
    if let Some(e) = v.get("first_error").and_then(serde_json::Value::as_str) {
        eprintln!("bench: conn-load: {} errors, the first: {e}", u("errors")?);
    }
    Ok(WrkReport {
        requests,
        elapsed_secs: f("elapsed_secs")?,
        rps: f("rps")?,
        p50: Duration::from_micros(u("p50_us")?),
        p99: Duration::from_micros(u("p99_us")?),
        non_2xx: u("non_2xx")?,
        socket_errors: u("errors")?,
        load_cpu_us: (requests > 0).then(|| client_cpu as f64 / requests as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_completeness() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(parse_head(&head[..10]).ok(), Some(None));
        assert_eq!(parse_head(head).ok(), Some(Some((200, false))));
        let full = [head.as_slice(), b"ok\n"].concat();
        assert_eq!(parse_head(&full).ok(), Some(Some((200, true))));
        let chunked = b"HTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n";
        assert_eq!(parse_head(chunked).ok(), Some(Some((503, true))));
        let no_len = b"HTTP/1.0 200 OK\r\n\r\nok";
        assert_eq!(parse_head(no_len).ok(), Some(Some((200, false))));
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn reads_the_json_report() {
        let r = parse_report(
            r#"{"requests":1000,"ok":1000,"non_2xx":0,"errors":2,"first_error":null,"elapsed_secs":2.0,"rps":500.0,"p50_us":900,"p99_us":4000,"client_cpu_us":150000,"session":null}"#,
        )
        .expect("valid");
        assert_eq!(r.requests, 1000);
        assert_eq!(r.socket_errors, 2);
        assert_eq!(r.p99, Duration::from_millis(4));
        assert_eq!(r.load_cpu_us, Some(150.0));
    }

    #[test]
    fn builds_the_command() {
        let l = ConnLoad {
            exe: "/b/unitgate-bench".into(),
            connections: 32,
            duration: Duration::from_secs(10),
            cpu: Some(1),
            cert: "/t/cert.pem".into(),
            max_per_sec: 50_000,
        };
        assert_eq!(
            procs::command_line(&l.command("https://localhost:1/", &[], Duration::from_secs(2))),
            "taskset -c 1 /b/unitgate-bench conn-load --url https://localhost:1/ --connections 32 --duration 2 --max-requests 100000 --cert /t/cert.pem"
        );
    }
}
