//! A scratch redis-server on loopback for the global-limit scenario: no
//! persistence (`--save '' --appendonly no`), its own directory, stopped on
//! drop; and the two things the bench asks it over RESP (`PING`, the script
//! call count from `INFO commandstats`, proof that the limit really went to
//! Redis).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::contender;
use crate::procs::{self, Managed};

/// How long redis-server gets to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running redis-server.
pub struct Redis {
    pub proc: Managed,
    pub addr: SocketAddr,
    pub command: String,
}

/// Starts `redis-server` on a free loopback port, pinned to `cpu`, working in `dir`.
pub fn start(bin: &Path, dir: &Path, cpu: Option<usize>) -> Result<Redis> {
    contender::with_free_port("redis-server", |port| {
        start_on(bin, dir, port, cpu, "redis.log")
    })
}

/// Starts `redis-server` on `port` (logging to `dir/log`) and waits until it
/// answers PING; the redis-kill scenario restarts it on the same port.
pub fn start_on(bin: &Path, dir: &Path, port: u16, cpu: Option<usize>, log: &str) -> Result<Redis> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = procs::pinned(cpu, bin);
    cmd.current_dir(dir)
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--dir")
        .arg(dir);
    let command = procs::command_line(&cmd);
    let mut proc = Managed::spawn("redis-server", cmd, &dir.join(log))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        procs::check_interrupted()?;
        proc.ensure_running().map_err(|e| {
            // redis says "Address already in use" in its log.
            let tail = proc.log_tail();
            if tail.contains("in use") {
                anyhow!("port {port} in use: {tail}")
            } else {
                e
            }
        })?;
        match command_reply(addr, "PING") {
            Ok(r) if r.starts_with("+PONG") => break,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(50));
            }
            last => bail!(
                "redis-server did not answer PING on {addr} within {START_TIMEOUT:?} (last: {last:?}); its output:\n{}",
                proc.log_tail()
            ),
        }
    }
    Ok(Redis {
        proc,
        addr,
        command,
    })
}

/// Sends one inline command and returns the whole reply (a simple string, or
/// a bulk string's contents).
pub fn command_reply(addr: SocketAddr, command: &str) -> Result<String> {
    let timeout = Duration::from_secs(1);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "{command}\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if reply_complete(&buf) {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Whether `buf` holds one whole RESP reply (simple, error, integer or bulk).
fn reply_complete(buf: &[u8]) -> bool {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if buf.first() != Some(&b'$') {
        return true;
    }
    let len: i64 = String::from_utf8_lossy(&buf[1..eol]).parse().unwrap_or(0);
    len < 0 || buf.len() >= eol + 2 + len as usize + 2
}

/// Script calls Redis has served (`EVAL`, `EVALSHA`, `FCALL` and their `_RO`
/// forms), summed from `INFO commandstats`.
pub fn script_calls(addr: SocketAddr) -> Result<u64> {
    let info = command_reply(addr, "INFO commandstats")?;
    Ok(parse_script_calls(&info))
}

fn parse_script_calls(info: &str) -> u64 {
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| l.split_once(':'))
        .filter(|(cmd, _)| cmd.starts_with("eval") || cmd.starts_with("fcall"))
        .filter_map(|(_, stats)| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

/// `redis-server --version`'s line.
pub fn version(bin: &Path) -> String {
    let mut cmd = Command::new(bin);
    cmd.arg("--version");
    procs::run_capture(cmd, Duration::from_secs(5))
        .ok()
        .and_then(|c| c.stdout.lines().next().map(|l| l.trim().to_owned()))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_script_calls() {
        let info = "$200\r\n# Commandstats\r\n\
            cmdstat_ping:calls=3,usec=1,usec_per_call=0.33,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_evalsha:calls=1200,usec=5000,usec_per_call=4.17,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_eval:calls=1,usec=40,usec_per_call=40.00,rejected_calls=0,failed_calls=0\r\n";
        assert_eq!(parse_script_calls(info), 1201);
        assert_eq!(parse_script_calls("# Commandstats\r\n"), 0);
    }

    #[test]
    fn knows_when_a_reply_is_whole() {
        assert!(reply_complete(b"+PONG\r\n"));
        assert!(!reply_complete(b"+PON"));
        assert!(!reply_complete(b"$10\r\nabc"));
        assert!(reply_complete(b"$3\r\nabc\r\n"));
        assert!(reply_complete(b"$-1\r\n"));
    }
}
