//! The bare-pingora floor as a contender: `unitgate-floor` (bench/src/bin/floor.rs).

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
}

impl Contender for Floor {
    fn name(&self) -> &str {
        if self.configured {
            "floor+timeouts"
        } else {
            "floor"
        }
    }

    fn start(&self, ctx: &StartCtx<'_>) -> Result<Started> {
        std::fs::create_dir_all(ctx.dir)
            .with_context(|| format!("creating {}", ctx.dir.display()))?;
        contender::with_free_port("floor", |port| {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut cmd = procs::pinned(ctx.cpu, &self.bin);
            cmd.env("RUST_LOG", "warn")
                .arg(addr.to_string())
                .arg(ctx.backend.to_string());
            if self.configured {
                cmd.args(["--timeouts", "--h2c"]);
            }
            let command = procs::command_line(&cmd);
            let mut proc = Managed::spawn(self.name(), cmd, &ctx.dir.join("floor.log"))?;
            procs::wait_http_ok(addr, &mut proc, Duration::from_secs(15))?;
            let mut s = Started::new(self.name(), format!("http://{addr}/"));
            s.measured = Some(proc.pid());
            s.commands.push(command);
            s.own(proc);
            Ok(s)
        })
    }
}

/// `unitgate-floor` beside this binary (cargo builds both into one target dir).
pub fn locate(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !tools::is_executable(p) {
            bail!("--floor {}: no such executable", p.display());
        }
        return Ok(Some(p.to_owned()));
    }
    Ok(std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("unitgate-floor")))
        .filter(|p| tools::is_executable(p)))
}
