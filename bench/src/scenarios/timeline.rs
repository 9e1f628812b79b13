//! What the timeline scenarios (failover, redis-kill, reload) share: their
//! common CLI options, starting unitgate from a config text with a data and an
//! admin port, single-process backends that one SIGKILL stops, a blocking
//! HTTP/1.1 call for the admin API, and the markdown of a run over time.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::contender;
use crate::driver::{fmt_us, Run, Summary};
use crate::nginx;
use crate::procs::{self, Managed};
use crate::report;
use crate::section::Section;
use crate::unitgate;

/// How long a started process gets to answer its first 200.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The admin token of every generated config.
pub const ADMIN_TOKEN: &str = "bench-admin-token";

/// Options every timeline scenario takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The unitgate binary (default: `unitgate` beside this binary, else
    /// target/release/unitgate in the current directory or a parent).
    #[arg(long, value_name = "PATH")]
    pub unitgate: Option<PathBuf>,
    /// Directory for the report (<scenario>.md).
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/out"))]
    pub out: PathBuf,
    /// Keep the scratch directory (configs, logs) instead of deleting it.
    #[arg(long)]
    pub keep_tmp: bool,
}

impl CommonArgs {
    /// The unitgate binary; unlike `plain`, these scenarios cannot run without.
    pub fn unitgate_bin(&self) -> Result<PathBuf> {
        unitgate::locate(self.unitgate.as_deref())?.ok_or_else(|| {
            anyhow!(
                "no unitgate binary found (build it with `cargo build --release -p unitgate` or pass --unitgate PATH)"
            )
        })
    }

    pub fn scratch(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("unitgate-bench-")
            .tempdir()
            .context("creating a scratch directory")
    }

    /// Keeps `tmp` if asked to, saying where.
    pub fn finish(&self, tmp: tempfile::TempDir) {
        if self.keep_tmp {
            let kept = tmp.keep();
            eprintln!("bench: scratch directory kept at {}", kept.display());
        }
    }
}

/// Prints the section (with its heading) and writes it to `out/name`.
pub fn emit(section: &Section, out: &Path, name: &str) -> Result<()> {
    let md = format!("# {}\n\n{}", section.title, section.markdown);
    print!("{md}");
    let path = report::write(out, name, &md)?;
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}

/// A running unitgate with its data-plane and admin addresses.
pub struct Gateway {
    pub proc: Managed,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub conf_path: PathBuf,
    pub command: String,
}

/// Writes `conf(data_port, admin_port)` to `dir/unitgate.toml`, starts
/// unitgate on it and waits until `GET ready_path` on the data plane answers
/// 200 (`None`: until the admin `/healthz` does).
pub fn start_unitgate(
    bin: &Path,
    dir: &Path,
    ready_path: Option<&str>,
    conf: impl Fn(u16, u16) -> String,
) -> Result<Gateway> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let conf_path = dir.join("unitgate.toml");
    contender::with_free_port("unitgate", |port| {
        let admin_port = procs::free_port()?;
        fs::write(&conf_path, conf(port, admin_port))
            .with_context(|| format!("writing {}", conf_path.display()))?;
        let mut cmd = std::process::Command::new(bin);
        cmd.env("RUST_LOG", "warn")
            .arg("run")
            .arg("-c")
            .arg(&conf_path);
        let command = procs::command_line(&cmd);
        let mut proc = Managed::spawn("unitgate", cmd, &dir.join("unitgate.log"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        match ready_path {
            Some(p) => wait_status(addr, p, &[], &mut proc)?,
            None => wait_status(admin, "/healthz", &[], &mut proc)?,
        }
        Ok(Gateway {
            proc,
            addr,
            admin,
            conf_path: conf_path.clone(),
            command,
        })
    })
}

/// Polls `GET path` until it answers 200, the process exits or a deadline.
pub fn wait_status(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    proc: &mut Managed,
) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        procs::check_interrupted()?;
        proc.ensure_running()?;
        let last = match http_call(addr, "GET", path, headers, None) {
            Ok((200, _)) => return Ok(()),
            Ok((code, body)) => format!("status {code}: {body}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "http://{addr}{path} did not answer 200 within {START_TIMEOUT:?} (last: {last}); output:\n{}",
                proc.log_tail()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), 5 s
/// deadline; returns the status and the body.
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: unitgate-bench\r\n"
    );
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    let body = body.unwrap_or("");
    let _ = write!(
        req,
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .to_owned();
    Ok((code, body))
}

/// An admin API call with the bench's bearer token.
pub fn admin_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    http_call(admin, method, path, &[("Authorization", &auth)], body)
}

/// A backend that is one process: nginx with `master_process off`, so one
/// SIGKILL stops it (no worker left behind to keep serving).
pub struct Backend {
    pub proc: Managed,
    pub addr: SocketAddr,
    pub command: String,
}

/// Starts a single-process nginx backend (`return 200 "ok\n"`) in `dir`.
pub fn start_backend(nginx_bin: &Path, name: &str, dir: &Path) -> Result<Backend> {
    let l = nginx::launch(nginx_bin, name, dir, None, |port| {
        nginx::conf(dir, &nginx::backend_body(port))
            .replace("master_process on;", "master_process off;")
    })?;
    Ok(Backend {
        proc: l.proc,
        addr: l.addr,
        command: l.command,
    })
}

/// SIGKILL to each pid; says which.
pub fn kill9(pids: &[u32]) -> Result<String> {
    for &p in pids {
        let pid = i32::try_from(p).map_err(|_| anyhow!("pid {p} out of range"))?;
        kill(Pid::from_raw(pid), Signal::SIGKILL).with_context(|| format!("SIGKILL {p}"))?;
    }
    Ok(format!("SIGKILL sent to pid(s) {pids:?}"))
}

/// A markdown table of the run per second: requests, errors, oks by unit,
/// p50 / p99 / max of the requests completed in that second.
pub fn per_second_table(run: &Run) -> String {
    let mut s = String::from("| second | requests | errors |");
    for u in &run.units {
        let _ = write!(s, " ok by {u} |");
    }
    s.push_str(" p50 | p99 | max |\n|---:|---:|---:|");
    for _ in &run.units {
        s.push_str("---:|");
    }
    s.push_str("---:|---:|---:|\n");
    // The last second also takes the answers that arrive just after the
    // load stopped sending.
    let secs = (run.duration.as_millis() as u64).div_ceil(1000).max(1);
    for sec in 0..secs {
        let from = sec * 1000;
        let to = if sec + 1 == secs {
            u64::MAX / 1000
        } else {
            from + 1000
        };
        let sum = run.summary(from, to);
        let oks = run.ok_by_unit(from, to);
        let _ = write!(
            s,
            "| {sec}–{} s | {} | {} |",
            sec + 1,
            sum.requests,
            sum.errors
        );
        for u in &run.units {
            let n = oks.iter().find(|(x, _)| x == u).map_or(0, |(_, n)| *n);
            let _ = write!(s, " {n} |");
        }
        let _ = writeln!(
            s,
            " {} | {} | {} |",
            fmt_us(sum.p50_us),
            fmt_us(sum.p99_us),
            fmt_us(sum.max_us)
        );
    }
    s
}

/// A markdown table of named phases of one run: (label, from_ms, to_ms).
pub fn phase_table(run: &Run, phases: &[(&str, u64, u64)]) -> String {
    let mut s = format!("| phase | {}|---|{}", Summary::HEADER, Summary::ALIGN);
    for (label, from, to) in phases {
        let _ = writeln!(s, "| {label} | {} |", run.summary(*from, *to).cells());
    }
    s
}

/// "Errors: none", or a list of the non-2xx statuses and transport errors.
pub fn errors_markdown(run: &Run) -> String {
    let statuses = run.error_statuses();
    if statuses.is_empty() {
        return "Errors: none\n".into();
    }
    let mut s = String::from("Errors:\n\n");
    for (code, n) in statuses {
        match code {
            0 => {
                let _ = writeln!(s, "- {n} without a response:");
                for (msg, k) in &run.transport_errors {
                    let _ = writeln!(s, "  - {k} × `{msg}`");
                }
            }
            c => {
                let _ = writeln!(s, "- {n} × status {c}");
            }
        }
    }
    s
}

/// `key % slots` falls in `[lo, hi]`: `n` decimal user ids homed there,
/// spread over the range (ids above `slots` so they are not the slot itself).
pub fn users_in_slots(lo: u64, hi: u64, slots: u64, n: usize) -> Vec<String> {
    let width = hi - lo + 1;
    (0..n as u64)
        .map(|i| {
            let slot = lo + (i * 7919) % width;
            (slots * (1000 + i) + slot).to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_land_in_their_slots() {
        let users = users_in_slots(0, 4999, 10_000, 64);
        assert_eq!(users.len(), 64);
        let mut distinct = users.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 64);
        for u in &users {
            let key: u64 = u.parse().expect("decimal");
            assert!(key % 10_000 < 5000, "{u}");
        }
        for u in users_in_slots(5000, 9999, 10_000, 8) {
            let key: u64 = u.parse().expect("decimal");
            assert!((5000..10_000).contains(&(key % 10_000)), "{u}");
        }
    }
}
