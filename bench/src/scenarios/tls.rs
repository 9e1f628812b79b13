//! TLS and HTTP/2 at the edge: unitgate terminating TLS itself vs nginx
//! with `ssl`, both serving one ECDSA P-256 certificate made for the run,
//! one worker each, forwarding to the same backend over HTTP/1.1 keep-alive.
//!
//! - `tls-handshake`: a new connection per request (full handshake, no
//!   resumption), load from the bench's own `conn-load` client; the same
//!   servers' plain listeners with a new TCP connection per request beside
//!   them, so the handshake's own cost is the difference.
//! - `tls-keepalive`: keep-alive HTTPS/1.1 from wrk, beside keep-alive HTTP.
//! - `h2-streams`: HTTP/2 with many concurrent streams per connection from
//!   h2load, over TLS (ALPN h2) and as h2c with prior knowledge.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::conn_load::ConnLoad;
use crate::contender::{Contender, Renamed, Started};
use crate::h2load::{self, H2load};
use crate::nginx::{NginxProxy, NginxTls};
use crate::scenarios::common::{self, Bench, Common, ReportParts};
use crate::scenarios::{Row, Sample};
use crate::section::Section;
use crate::tls::{self, BenchCert, Wire};
use crate::tools;
use crate::unitgate::{Unitgate, UnitgateTls, Variant};
use crate::wrk::LoadTool;

/// `tls-handshake` and `tls-keepalive`.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Leave out the cleartext-HTTP companions (nginx-http, unitgate-http).
    #[arg(long)]
    pub no_cleartext: bool,
}

/// `h2-streams`.
#[derive(Debug, Clone, Args)]
pub struct H2Args {
    #[command(flatten)]
    pub common: Common,
    /// h2load connections (`-c`).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub clients: u32,
    /// Concurrent streams per connection (`-m`).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub streams: u32,
    /// Requests per second of --duration: each measured run sends
    /// `-n` = this × --duration requests (the warmup, × --warmup).
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub requests_per_sec: u64,
    /// Leave out the h2c companions (nginx-h2c, unitgate-h2c).
    #[arg(long)]
    pub no_cleartext: bool,
}

/// What every TLS scenario starts with: the backend, the certificate.
struct Setup {
    bench: Bench,
    ug: PathBuf,
    cert: Arc<BenchCert>,
    /// The certificate's PEM, for the load client.
    cert_path: PathBuf,
}

impl Setup {
    fn start(c: &Common) -> Result<Self> {
        let ug = c.unitgate_bin()?;
        let bench = Bench::start(c)?;
        let cert = Arc::new(BenchCert::generate()?);
        let (cert_path, _) = cert.write(&bench.tmp.path().join("cert"))?;
        Ok(Self {
            bench,
            ug,
            cert,
            cert_path,
        })
    }

    fn nginx_tls(&self, name: &str, wire: Wire) -> Box<dyn Contender> {
        Box::new(NginxTls {
            nginx: self.bench.nginx_bin.clone(),
            name: name.into(),
            wire,
            cert: Arc::clone(&self.cert),
        })
    }

    fn unitgate_tls(&self, name: &str, wire: Wire) -> Box<dyn Contender> {
        Box::new(UnitgateTls {
            bin: self.ug.clone(),
            name: name.into(),
            wire,
            cert: Arc::clone(&self.cert),
        })
    }

    /// nginx-https, unitgate-https, and (unless `no_cleartext`) the same
    /// servers' plain configs as nginx-http and unitgate-http.
    fn https_and_http(&self, no_cleartext: bool) -> Vec<Box<dyn Contender>> {
        let mut v = vec![
            self.nginx_tls("nginx-https", Wire::Https1),
            self.unitgate_tls("unitgate-https", Wire::Https1),
        ];
        if !no_cleartext {
            v.push(Box::new(Renamed {
                name: "nginx-http".into(),
                inner: NginxProxy::new(self.bench.nginx_bin.clone()),
            }));
            v.push(Box::new(Renamed {
                name: "unitgate-http".into(),
                inner: Unitgate::new(self.ug.clone(), Variant::Local),
            }));
        }
        v
    }

    /// Settings lines every TLS report shares.
    fn settings(&self) -> Vec<String> {
        vec![
            format!(
                "certificate: one ECDSA P-256 key and self-signed certificate for `localhost` made for this run with rcgen (SHA-256 {}), served by every TLS contender; clients send SNI `localhost`",
                self.cert.fingerprint()
            ),
            "unitgate: `threads = 1`, `[gateway] listen_tls` with `[tls] min_version = \"1.2\"` and the certificate as the default (`hosts = []`); ALPN h2 and http/1.1; its plain listener stays idle (the TLS listener is a pingora service of its own, with its own runtime thread, beside the plain one's: the whole process is pinned to the proxy CPU and all its threads are counted)".into(),
            "nginx: `worker_processes 1`, `listen … ssl http2` (ALPN h2 and http/1.1), `ssl_protocols TLSv1.2 TLSv1.3`, session cache and tickets at nginx's defaults; upstream `keepalive 256` (unitgate's upstream pool is 256 too); the `-http` contenders are the plain scenario's nginx (`keepalive 64`)".into(),
        ]
    }

    /// What each TLS contender's session negotiated (one probe each).
    fn session_notes(&self, started: &[Started], wire_of: impl Fn(&str) -> Wire) -> Vec<String> {
        started
            .iter()
            .filter(|s| s.url.starts_with("https://"))
            .map(|s| {
                let wire = wire_of(&s.name);
                let got =
                    tls::url_port(&s.url).and_then(|port| tls::probe(port, wire, Some(&self.cert)));
                match got {
                    Ok(p) => format!(
                        "{}: {} (probe offering one ALPN; served the bench certificate)",
                        s.name,
                        p.session.map_or_else(|| "-".into(), |x| x.describe())
                    ),
                    Err(e) => format!("{}: TLS probe failed: {e:#}", s.name),
                }
            })
            .collect()
    }

    /// Warnings and errors each contender logged over the run (warmups
    /// included): unitgate's log at `RUST_LOG=warn`, nginx's error.log.
    fn log_notes(&self, started: &[Started]) -> Vec<String> {
        started
            .iter()
            .filter_map(|s| {
                let dir = self.bench.tmp.path().join(&s.name);
                let (file, counts) = if s.name.starts_with("unitgate") {
                    let f = dir.join("unitgate.log");
                    let c = log_counts(&f, unitgate_log_key);
                    (f, c)
                } else if s.name.starts_with("nginx") {
                    let f = dir.join("error.log");
                    let c = log_counts(&f, nginx_log_key);
                    (f, c)
                } else {
                    return None;
                };
                let name = file.file_name()?.to_string_lossy().into_owned();
                Some(if counts.is_empty() {
                    format!("{}: no warnings or errors in its {name}", s.name)
                } else {
                    let list: Vec<String> =
                        counts.iter().map(|(k, n)| format!("{n} × `{k}`")).collect();
                    format!(
                        "{} logged (its {name}, warmups included): {}",
                        s.name,
                        list.join("; ")
                    )
                })
            })
            .collect()
    }

    fn finish(self) {
        self.bench.finish();
    }
}

/// Counts of a log's warning/error lines, by `key` (lines it maps to None
/// are not counted).
fn log_counts(path: &Path, key: fn(&str) -> Option<String>) -> BTreeMap<String, u64> {
    let text = fs::read(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(&text).lines() {
        if let Some(k) = key(line) {
            *out.entry(k).or_insert(0) += 1;
        }
    }
    out
}

/// `… ERROR target: message context: … cause: what: …` → `ERROR target:
/// message (cause: what)`; WARN likewise; other levels None.
fn unitgate_log_key(line: &str) -> Option<String> {
    let at = [" ERROR ", " WARN "]
        .iter()
        .filter_map(|l| line.find(l))
        .min()?;
    let rest = line[at..].trim();
    let head = rest.split(" context:").next().unwrap_or(rest);
    let head = head.split(" (").next().unwrap_or(head);
    let mut key: String = head.chars().take(100).collect();
    if let Some((_, cause)) = rest.rsplit_once("cause: ") {
        let cause = cause.trim();
        let cause = cause.strip_prefix("context:").unwrap_or(cause);
        let cause = cause.split([':', ',']).next().unwrap_or_default().trim();
        if !cause.is_empty() {
            key.push_str(&format!(" (cause: {cause})"));
        }
    }
    Some(key)
}

/// `2026/12/02 04:54:12 [warn] 12#12: *5 message, client: …` →
/// `[warn] message`; `[notice]`/`[info]` lines None.
fn nginx_log_key(line: &str) -> Option<String> {
    let open = line.find(" [")?;
    let close = line[open..].find("] ")? + open;
    let level = &line[open + 2..close];
    if !matches!(level, "warn" | "error" | "crit" | "alert" | "emerg") {
        return None;
    }
    let mut msg = line[close + 2..].trim();
    // "12#12: " then an optional "*5 " connection number.
    if let Some((_, m)) = msg.split_once(": ") {
        msg = m;
    }
    if msg.starts_with('*') {
        msg = msg.split_once(' ').map_or(msg, |(_, m)| m);
    }
    let msg = msg.split(", client:").next().unwrap_or(msg);
    Some(format!(
        "[{level}] {}",
        msg.chars().take(100).collect::<String>()
    ))
}

/// "a ÷ b" lines for each pair present: CPU per request and req/s.
fn pair_notes(rows: &[Row], pairs: &[(&str, &str)], per: &str, rate: &str) -> Vec<String> {
    let row = |n: &str| rows.iter().find(|r| r.contender == n);
    pairs
        .iter()
        .filter_map(|(a, b)| {
            let (ra, rb) = (row(a)?, row(b)?);
            let (ca, cb) = (ra.proxy_cpu_us?, rb.proxy_cpu_us?);
            Some(format!(
                "**{a} ÷ {b}**: {:.2}× the CPU per {per} ({ca:.1} vs {cb:.1} µs), {:.2}× the {rate} ({:.0} vs {:.0})",
                ca / cb,
                ra.rps / rb.rps,
                ra.rps,
                rb.rps
            ))
        })
        .collect()
}

/// Median of the load generator's own CPU per request, per contender.
fn client_cpu_note(samples: &[Sample], rows: &[Row]) -> Option<String> {
    let parts: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let v: Vec<f64> = samples
                .iter()
                .filter(|s| s.contender == r.contender)
                .filter_map(|s| s.wrk.load_cpu_us)
                .collect();
            (!v.is_empty()).then(|| format!("{} {:.1}", r.contender, super::median(v)))
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "load client CPU µs per connection (it shares CPU 1 with the backend; if it nears 1 000 000 ÷ req/s it, not the server, set the rate): {}",
            parts.join(", ")
        )
    })
}

/// The TLS share of a new connection: https − http, per server.
fn handshake_cost_note(rows: &[Row]) -> Option<String> {
    let cpu = |n: &str| common::cpu_of(rows, n).ok();
    let ug = cpu("unitgate-https")? - cpu("unitgate-http")?;
    let ng = cpu("nginx-https")? - cpu("nginx-http")?;
    Some(format!(
        "the handshake's own cost (https − http, new connection per request both): unitgate {ug:.1} µs, nginx {ng:.1} µs per connection; unitgate ÷ nginx {:.2}",
        ug / ng
    ))
}

fn section_of(title: &str, rows: &[Row]) -> Section {
    Section {
        title: title.into(),
        markdown: String::new(),
        bars: common::bars(rows),
        timeline: None,
        targets: Vec::new(),
    }
}

pub fn handshake_section(c: &Common) -> Result<Section> {
    handshake(&TlsArgs {
        common: c.clone(),
        no_cleartext: false,
    })
}

/// `tls-handshake`.
pub fn handshake(args: &TlsArgs) -> Result<Section> {
    let c = &args.common;
    let s = Setup::start(c)?;
    let load = ConnLoad {
        exe: std::env::current_exe().context("locating unitgate-bench itself")?,
        connections: c.connections,
        duration: Duration::from_secs(c.duration),
        cpu: s.bench.pin.map(|p| p.load),
        cert: s.cert_path.clone(),
        max_per_sec: 50_000,
    };
    let contenders = s.https_and_http(args.no_cleartext);
    let mut started = s.bench.start_all(&contenders)?;
    let (samples, rows) = s.bench.run_with(&mut started, &load)?;
    let names: Vec<&str> = started.iter().map(|x| x.name.as_str()).collect();
    common::require_all_ok(&samples, &names)?;

    let mut notes = pair_notes(
        &rows,
        &[
            ("unitgate-https", "nginx-https"),
            ("unitgate-http", "nginx-http"),
        ],
        "new connection",
        "connections/s",
    );
    notes.extend(handshake_cost_note(&rows));
    notes.extend(client_cpu_note(&samples, &rows));
    notes.extend(s.session_notes(&started, |_| Wire::Https1));
    notes.extend(s.log_notes(&started));
    let mut settings = vec![
        "each request is a new connection: req/s = connections (for https: full handshakes) per second, proxy CPU µs/req = server CPU per connection (handshake + one proxied `GET /` + close)".to_owned(),
    ];
    settings.extend(s.settings());
    let md = s.bench.report_markdown(&ReportParts {
        title: "unitgate bench: TLS handshakes (a new connection per request)".into(),
        settings,
        rows: &rows,
        samples: &samples,
        started: &started,
        baseline: "nginx-https",
        notes,
        extra_commands: Vec::new(),
        extra_versions: Vec::new(),
        load: Some(&load),
    });
    let section = section_of("TLS handshakes (a new connection per request)", &rows);
    drop(started);
    s.finish();
    common::publish(c, "tls-handshake.md", &md, section)
}

pub fn keepalive_section(c: &Common) -> Result<Section> {
    keepalive(&TlsArgs {
        common: c.clone(),
        no_cleartext: false,
    })
}

/// `tls-keepalive`.
pub fn keepalive(args: &TlsArgs) -> Result<Section> {
    let c = &args.common;
    let s = Setup::start(c)?;
    let contenders = s.https_and_http(args.no_cleartext);
    let mut started = s.bench.start_all(&contenders)?;
    let (samples, rows) = s.bench.run(&mut started)?;
    let names: Vec<&str> = started.iter().map(|x| x.name.as_str()).collect();
    common::require_all_ok(&samples, &names)?;

    let mut notes = pair_notes(
        &rows,
        &[
            ("unitgate-https", "nginx-https"),
            ("unitgate-http", "nginx-http"),
        ],
        "request",
        "req/s",
    );
    let cpu = |n: &str| common::cpu_of(&rows, n).ok();
    if let (Some(uh), Some(u), Some(nh), Some(n)) = (
        cpu("unitgate-https"),
        cpu("unitgate-http"),
        cpu("nginx-https"),
        cpu("nginx-http"),
    ) {
        notes.push(format!(
            "https − http per keep-alive request: unitgate {:+.1} µs (https {:.2}× its http), nginx {:+.1} µs (https {:.2}× its http)",
            uh - u,
            uh / u,
            nh - n,
            nh / n
        ));
    }
    notes.extend(s.session_notes(&started, |_| Wire::Https1));
    notes.extend(s.log_notes(&started));
    let mut settings = vec![
        "wrk speaks HTTP/1.1 over TLS (OpenSSL; no ALPN, so both servers serve HTTP/1.1), keep-alive: the handshakes are one per connection at the start of each run".to_owned(),
    ];
    settings.extend(s.settings());
    let md = s.bench.report_markdown(&ReportParts {
        title: "unitgate bench: HTTPS keep-alive".into(),
        settings,
        rows: &rows,
        samples: &samples,
        started: &started,
        baseline: "nginx-https",
        notes,
        extra_commands: Vec::new(),
        extra_versions: Vec::new(),
        load: None,
    });
    let section = section_of("HTTPS keep-alive", &rows);
    drop(started);
    s.finish();
    common::publish(c, "tls-keepalive.md", &md, section)
}

pub fn h2_section(c: &Common) -> Result<Section> {
    h2(&H2Args {
        common: c.clone(),
        clients: 4,
        streams: 32,
        requests_per_sec: 20_000,
        no_cleartext: false,
    })
}

/// `h2-streams`.
pub fn h2(args: &H2Args) -> Result<Section> {
    let c = &args.common;
    let h2load_bin = tools::ensure(&[tools::H2LOAD])?
        .pop()
        .context("tools::ensure returned no path")?;
    let s = Setup::start(c)?;
    let load = H2load {
        bin: h2load_bin.clone(),
        clients: args.clients.max(1),
        streams: args.streams.max(1),
        per_sec: args.requests_per_sec.max(1),
        duration: Duration::from_secs(c.duration),
        cpu: s.bench.pin.map(|p| p.load),
        log: s.bench.tmp.path().join("h2load-requests.log"),
    };
    let mut contenders = vec![
        s.nginx_tls("nginx-h2", Wire::H2),
        s.unitgate_tls("unitgate-h2", Wire::H2),
    ];
    if !args.no_cleartext {
        contenders.push(s.nginx_tls("nginx-h2c", Wire::H2c));
        contenders.push(s.unitgate_tls("unitgate-h2c", Wire::H2c));
    }
    let mut started = s.bench.start_all(&contenders)?;
    let (samples, rows) = s.bench.run_with(&mut started, &load)?;
    let names: Vec<&str> = started.iter().map(|x| x.name.as_str()).collect();
    common::require_all_ok(&samples, &names)?;

    let mut notes = pair_notes(
        &rows,
        &[("unitgate-h2", "nginx-h2"), ("unitgate-h2c", "nginx-h2c")],
        "request",
        "req/s",
    );
    notes.extend(s.session_notes(&started, |_| Wire::H2));
    notes.extend(s.log_notes(&started));
    let mut settings = vec![
        "HTTP/2 to the proxies (over TLS with ALPN h2, and h2c with prior knowledge on a plain listener: unitgate's `gateway.h2c` default, nginx `listen … http2`); HTTP/1.1 keep-alive from the proxies to the backend".to_owned(),
        "duration is nominal here: each run is a fixed request count (`-n`), so its length follows the contender's speed".to_owned(),
    ];
    settings.extend(s.settings());
    let md = s.bench.report_markdown(&ReportParts {
        title: "unitgate bench: HTTP/2, many streams per connection".into(),
        settings,
        rows: &rows,
        samples: &samples,
        started: &started,
        baseline: "nginx-h2",
        notes,
        extra_commands: Vec::new(),
        extra_versions: vec![("h2load".into(), h2load::version(&h2load_bin))],
        load: Some(&load as &dyn LoadTool),
    });
    let section = section_of("HTTP/2, many streams per connection", &rows);
    drop(started);
    s.finish();
    common::publish(c, "h2-streams.md", &md, section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unitgate_log_keys() {
        let l = "2026-12-02T04:53:59.375623Z ERROR pingora_proxy: Fail to proxy: Downstream ReadError context: peer: addr: 127.0.0.1:39001, scheme: HTTP cause:  context: during HTTP body-or-idle state cause: peer closed connection without sending TLS close_notify: https://docs.rs/x, status: 0";
        assert_eq!(
            unitgate_log_key(l).as_deref(),
            Some("ERROR pingora_proxy: Fail to proxy: Downstream ReadError (cause: peer closed connection without sending TLS close_notify)")
        );
        let w = "2026-12-02T04:54:34.204472Z  WARN rustls::msgs::handshake: Illegal SNI extension: ignoring IP address presented as hostname (3132372e302e302e31)";
        assert_eq!(
            unitgate_log_key(w).as_deref(),
            Some("WARN rustls::msgs::handshake: Illegal SNI extension: ignoring IP address presented as hostname")
        );
        let c = "2026-12-02T04:54:40.635843Z ERROR pingora_proxy: Fail to proxy: Downstream ConnectionClosed context: peer: addr: 127.0.0.1:39001, scheme: HTTP cause:  context: Prematurely before response header is sent, status: 0";
        assert_eq!(
            unitgate_log_key(c).as_deref(),
            Some("ERROR pingora_proxy: Fail to proxy: Downstream ConnectionClosed (cause: Prematurely before response header is sent)")
        );
        assert_eq!(unitgate_log_key("2026 INFO x: running"), None);
    }

    #[test]
    fn nginx_log_keys() {
        let l =
            "2026/12/02 04:54:12 [error] 12#12: *5 upstream timed out, client: 127.0.0.1, server: ";
        assert_eq!(
            nginx_log_key(l).as_deref(),
            Some("[error] upstream timed out")
        );
        assert_eq!(
            nginx_log_key("2026/12/02 04:54:12 [notice] 12#12: start"),
            None
        );
    }
}
