//! The bare-pingora floor as a contender: `unitgate-floor` (bench/src/bin/floor.rs),
//! and the lean forwarder prototype beside it: `unitgate-lean` (bench/src/bin/lean.rs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::contender::{self, Contender, StartCtx, Started};
use crate::procs::{self, Managed};
use crate::tools;

#[derive(Debug)]
pub struct Floor {
    pub bin: PathBuf,
    /// `floor+timeouts`: with the per-attempt timeouts and cleartext HTTP/2
    /// listener unitgate configures on top of pingora (`--timeouts --h2c`),
    /// so the report can tell their cost from unitgate's own.
    pub configured: bool,
    /// `--read-buffer BYTES`: the listener's per-connection read buffer
    /// (`None`: pingora's default, 64 KiB). Named `floor-rbufN`.
    pub read_buffer: Option<usize>,
}

impl Floor {
    /// The floor as it is: pingora's defaults.
    pub fn new(bin: PathBuf) -> Self {
        Self {
            bin,
            configured: false,
            read_buffer: None,
        }
    }
}

impl Contender for Floor {
    fn name(&self) -> &str {
        match (self.configured, self.read_buffer) {
            (true, _) => "floor+timeouts",
            (false, Some(0)) => "floor-rbuf0",
            (false, Some(_)) => "floor-rbuf",
            (false, None) => "floor",
        }
    }

    fn start(&self, ctx: &StartCtx<'_>) -> Result<Started> {
        let mut flags: Vec<String> = Vec::new();
        if self.configured {
            flags.extend(["--timeouts".into(), "--h2c".into()]);
        }
        if let Some(n) = self.read_buffer {
            flags.extend(["--read-buffer".into(), n.to_string()]);
        }
        start_bin(self.name(), &self.bin, &flags, ctx)
    }
}

/// `unitgate-lean` (bench/src/bin/lean.rs): the lean HTTP/1.1 forwarder
/// prototype on pingora-core's sessions, without pingora-proxy.
#[derive(Debug)]
pub struct Lean {
    pub bin: PathBuf,
    /// As [`Floor::read_buffer`]; named `lean-rbufN`.
    pub read_buffer: Option<usize>,
}

impl Contender for Lean {
    fn name(&self) -> &str {
        match self.read_buffer {
            Some(0) => "lean-rbuf0",
            Some(_) => "lean-rbuf",
            None => "lean",
        }
    }

    fn start(&self, ctx: &StartCtx<'_>) -> Result<Started> {
        let flags: Vec<String> = self
            .read_buffer
            .map(|n| vec!["--read-buffer".into(), n.to_string()])
            .unwrap_or_default();
        start_bin(self.name(), &self.bin, &flags, ctx)
    }
}

/// Starts `bin LISTEN BACKEND FLAGS…` (the floor's and the lean forwarder's
/// command line) pinned to the proxy CPU, and waits for a 200.
fn start_bin(name: &str, bin: &Path, flags: &[String], ctx: &StartCtx<'_>) -> Result<Started> {
    std::fs::create_dir_all(ctx.dir).with_context(|| format!("creating {}", ctx.dir.display()))?;
    contender::with_free_port(name, |port| {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = procs::pinned(ctx.cpu, bin);
        cmd.env("RUST_LOG", "warn")
            .arg(addr.to_string())
            .arg(ctx.backend.to_string())
            .args(flags);
        let command = procs::command_line(&cmd);
        let mut proc = Managed::spawn(name, cmd, &ctx.dir.join(format!("{name}.log")))?;
        procs::wait_http_ok(addr, &mut proc, ctx.start_timeout(Duration::from_secs(15)))?;
        let mut s = Started::new(name, format!("http://{addr}/"));
        s.measured = Some(proc.pid());
        s.commands.push(command);
        s.own(proc);
        Ok(s)
    })
}

/// `unitgate-floor` beside this binary (cargo builds both into one target dir).
pub fn locate(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    locate_named(explicit, "--floor", "unitgate-floor")
}

/// `unitgate-lean` beside this binary, or `--lean PATH`.
pub fn locate_lean(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    locate_named(explicit, "--lean", "unitgate-lean")
}

fn locate_named(explicit: Option<&Path>, option: &str, file: &str) -> Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !tools::is_executable(p) {
            bail!("{option} {}: no such executable", p.display());
        }
        return Ok(Some(p.to_owned()));
    }
    Ok(std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(file)))
        .filter(|p| tools::is_executable(p)))
}
