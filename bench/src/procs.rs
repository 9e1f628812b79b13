//! Child processes of a bench run: spawning (optionally pinned to a CPU),
//! stopping them on every exit path, reading their CPU time from `/proc`, and
//! the small network helpers (free port, "is it answering 200 yet").

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Turns SIGINT/SIGTERM/SIGHUP into a flag that the run checks between steps,
/// so that an interrupted run still unwinds and its `Drop` guards stop every
/// process it started (the default action would kill us and orphan them).
pub fn install_interrupt_flag() -> Result<()> {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(flag))
            .with_context(|| format!("registering a handler for signal {sig}"))?;
    }
    Ok(())
}

/// Errors out if the run was interrupted by a signal.
pub fn check_interrupted() -> Result<()> {
    match INTERRUPTED.get() {
        Some(flag) if flag.load(Ordering::Relaxed) => bail!("interrupted"),
        _ => Ok(()),
    }
}

/// A command, prefixed with `taskset -c CPU` when `cpu` is given.
pub fn pinned(cpu: Option<usize>, program: &Path) -> Command {
    match cpu {
        Some(cpu) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpu.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// The command as a shell-like line, for the report.
pub fn command_line(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            parts.push(format!("{}={}", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '"', '\'']) {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// A running child process that is stopped when dropped: SIGTERM, a grace
/// period, then SIGKILL for it and for every descendant seen before the stop
/// (an nginx master killed hard would otherwise leave its worker running).
pub struct Managed {
    name: String,
    child: Child,
    log: Option<std::path::PathBuf>,
    exited: Option<ExitStatus>,
}

impl Managed {
    /// Spawns `cmd` with stdin closed and stdout+stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {}", command_line(&cmd)))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: Some(log.to_owned()),
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Errors out (with the tail of its log) if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("waiting on a child")? {
            self.exited = Some(status);
            let tail = self.log_tail();
            bail!("{} exited early ({status}); its output:\n{tail}", self.name);
        }
        Ok(())
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn stop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exited = Some(status);
            return;
        }
        let descendants = descendants(self.pid());
        let pid = Pid::from_raw(self.pid() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if self.exited.is_none() {
            eprintln!("bench: {} did not stop on SIGTERM, killing it", self.name);
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        // Anything the process left behind (it should have taken its children
        // with it; this covers the SIGKILL path).
        for d in descendants {
            let _ = kill(Pid::from_raw(d as i32), Signal::SIGKILL);
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Output of a short-lived command run to completion.
#[derive(Debug)]
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion with a deadline; the child is killed if it runs
/// past `timeout`.
pub fn run_capture(mut cmd: Command, timeout: Duration) -> Result<Captured> {
    let line = command_line(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {line}"))?;
    let stdout = child.stdout.take().map(reader_thread);
    let stderr = child.stderr.take().map(reader_thread);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting on a child")? {
            break status;
        }
        let interrupted = check_interrupted();
        if interrupted.is_err() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            interrupted?;
            bail!("{line} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let join = |h: Option<thread::JoinHandle<String>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    Ok(Captured {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

fn reader_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The fields of `/proc/<pid>/stat` the bench uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: u32,
    /// User-mode CPU time, clock ticks (field 14).
    pub utime: u64,
    /// Kernel-mode CPU time, clock ticks (field 15).
    pub stime: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_stat(text: &str) -> Result<ProcStat> {
    let close = text
        .rfind(')')
        .ok_or_else(|| anyhow!("no ')' in a /proc stat line"))?;
    // Fields from 3 (state) on.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        let s = rest
            .get(n - 3)
            .ok_or_else(|| anyhow!("/proc stat line has no field {n}"))?;
        s.parse()
            .with_context(|| format!("/proc stat field {n} is not a number: {s:?}"))
    };
    Ok(ProcStat {
        ppid: u32::try_from(field(4)?).context("ppid out of range")?,
        utime: field(14)?,
        stime: field(15)?,
    })
}

pub fn read_stat(pid: u32) -> Result<ProcStat> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text)
}

/// Clock ticks per second for `/proc` CPU times: `getconf CLK_TCK`, or 100
/// (the value on every mainstream Linux build) if that fails.
pub fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        let got = run_capture(
            {
                let mut c = Command::new("getconf");
                c.arg("CLK_TCK");
                c
            },
            Duration::from_secs(5),
        )
        .ok()
        .and_then(|c| c.stdout.trim().parse::<u64>().ok())
        .filter(|&t| t > 0);
        got.unwrap_or_else(|| {
            eprintln!("bench: `getconf CLK_TCK` failed; assuming 100 ticks/s");
            100
        })
    })
}

/// utime+stime of one process (all its threads, not its children), in µs.
pub fn cpu_micros(pid: u32) -> Result<u64> {
    let st = read_stat(pid)?;
    Ok((st.utime + st.stime) * 1_000_000 / clk_tck())
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&text).with_context(|| format!("no VmRSS line in {path}"))
}

/// The `VmRSS:   1234 kB` line of a `/proc/<pid>/status` text, in KiB.
fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// How many file descriptors `pid` has open (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(fs::read_dir(&path)
        .with_context(|| format!("reading {path}"))?
        .count())
}

/// Raises this process's soft limit on open files to its hard limit, or,
/// when the hard limit is below `wanted` and we may (root), both to
/// `wanted`. Children started afterwards inherit it. Returns the soft limit
/// now in force.
pub fn raise_open_files(wanted: u64) -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if hard < wanted && setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return Ok(wanted);
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .with_context(|| format!("raising RLIMIT_NOFILE from {soft} to {hard}"))?;
    }
    Ok(hard)
}

/// Direct children of `pid`: `/proc/<pid>/task/*/children` where the kernel
/// has it (CONFIG_PROC_CHILDREN), otherwise a scan of `/proc/*/stat` for ppid.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        let mut seen_file = false;
        for t in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(t.path().join("children")) {
                seen_file = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|s| s.parse::<u32>().ok()),
                );
            }
        }
        if seen_file {
            out.sort_unstable();
            out.dedup();
            return out;
        }
    }
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if read_stat(child).is_ok_and(|st| st.ppid == pid) {
                out.push(child);
            }
        }
    }
    out.sort_unstable();
    out
}

/// All descendants of `pid`, depth first.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = children(pid);
    while let Some(p) = stack.pop() {
        if out.contains(&p) {
            continue;
        }
        out.push(p);
        stack.extend(children(p));
    }
    out
}

/// The process's command line with NULs turned into spaces.
pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// A port on 127.0.0.1 that was free a moment ago (bound to :0, released).
/// A race with another process taking it is possible but shows up as a clear
/// "address in use" start failure.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr().context("reading a bound address")?.port())
}

/// One `GET /` over a fresh connection; returns the status code.
#[allow(dead_code)] // the plain probe; the waits go through `http_get_status_req`
pub fn http_get_status(addr: SocketAddr) -> Result<u16> {
    http_get_status_req(addr, "/", &[])
}

/// One `GET path` with extra `headers` (`Name: value`) over a fresh
/// connection; returns the status code.
pub fn http_get_status_req(addr: SocketAddr, path: &str, headers: &[String]) -> Result<u16> {
    let timeout = Duration::from_secs(1);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: unitgate-bench\r\n{extra}\r\n"
    )?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let got = s.read(&mut buf[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let code = head
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {head:?}"))?;
    Ok(code)
}

/// Polls `GET /` on `addr` until it answers 200, the process dies, or the
/// deadline passes.
pub fn wait_http_ok(addr: SocketAddr, proc: &mut Managed, timeout: Duration) -> Result<()> {
    wait_http_ok_req(addr, "/", &[], proc, timeout)
}

/// Like [`wait_http_ok`], for `GET path` with extra `headers`: a route that
/// needs a token or a cookie is only "up" when that request gets its 200.
pub fn wait_http_ok_req(
    addr: SocketAddr,
    path: &str,
    headers: &[String],
    proc: &mut Managed,
    timeout: Duration,
) -> Result<()> {
    wait_ok_with(&format!("http://{addr}{path}"), proc, timeout, || {
        http_get_status_req(addr, path, headers)
    })
}

/// Polls `probe` (a request to `what`, returning its status) until it
/// answers 200, the process dies, or the deadline passes.
pub fn wait_ok_with(
    what: &str,
    proc: &mut Managed,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<u16>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        check_interrupted()?;
        proc.ensure_running()?;
        let last = match probe() {
            Ok(200) => return Ok(()),
            Ok(code) => format!("status {code}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer 200 on {what} within {timeout:?} (last: {last}); its output:\n{}",
                proc.name,
                proc.log_tail()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_line() {
        let line = "7730 (nginx) S 7728 7728 7728 0 -1 4194624 1193 0 0 0 \
                    731 1204 0 0 20 0 1 0 5853 11395072 1146 18446744073709551615 \
                    1 1 0 0 0 0 0 1073746432 402745927 0 0 0 17 1 0 0 0 0 0";
        let st = parse_stat(line).expect("valid line");
        assert_eq!(
            st,
            ProcStat {
                ppid: 7728,
                utime: 731,
                stime: 1204
            }
        );
    }

    #[test]
    fn parses_stat_with_parens_and_spaces_in_name() {
        let line = "42 (weird) (name x) R 1 42 42 0 -1 0 0 0 0 0 5 7 0 0 20 0 3 0 1 0 0";
        let st = parse_stat(line).expect("valid line");
        assert_eq!(st.ppid, 1);
        assert_eq!((st.utime, st.stime), (5, 7));
    }

    #[test]
    fn rejects_short_stat() {
        assert!(parse_stat("1 (init) S 0 1 1").is_err());
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tnginx\nVmPeak:\t  20000 kB\nVmRSS:\t    5120 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vm_rss(status), Some(5120));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).expect("own rss") > 0);
    }

    #[test]
    fn reads_own_stat() {
        let st = read_stat(std::process::id()).expect("own stat");
        assert!(st.ppid > 0);
    }
}
