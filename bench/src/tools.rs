//! The external programs a run needs (nginx, wrk, taskset), found on PATH or
//! in the sbin directories, and installed from Debian's packages when missing
//! and we are root.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::procs;

/// A program and the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const NGINX: Tool = Tool {
    program: "nginx",
    package: "nginx-light",
};
pub const WRK: Tool = Tool {
    program: "wrk",
    package: "wrk",
};
pub const TASKSET: Tool = Tool {
    program: "taskset",
    package: "util-linux",
};
pub const HAPROXY: Tool = Tool {
    program: "haproxy",
    package: "haproxy",
};
pub const REDIS: Tool = Tool {
    program: "redis-server",
    package: "redis-server",
};
pub const H2LOAD: Tool = Tool {
    program: "h2load",
    package: "nghttp2-client",
};
pub const VALGRIND: Tool = Tool {
    program: "valgrind",
    package: "valgrind",
};
pub const ETCD: Tool = Tool {
    program: "etcd",
    package: "etcd-server",
};

/// Looks `program` up on PATH, then in /usr/sbin and /sbin (nginx lives there
/// and a non-root PATH often lacks them).
pub fn find(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds every tool; installs the missing ones with apt-get when running as
/// root, otherwise fails with the command to run.
pub fn ensure(tools: &[Tool]) -> Result<Vec<PathBuf>> {
    let missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| find(t.program).is_none())
        .collect();
    if !missing.is_empty() {
        let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
        let names: Vec<&str> = missing.iter().map(|t| t.program).collect();
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "missing {}; install them with: sudo apt-get install -y {}",
                names.join(", "),
                packages.join(" ")
            );
        }
        eprintln!(
            "bench: {} missing; running apt-get install -y {}",
            names.join(", "),
            packages.join(" ")
        );
        if !apt_install(&packages)? {
            eprintln!("bench: apt-get install failed; running apt-get update and retrying");
            apt(&["update"])?;
            if !apt_install(&packages)? {
                bail!("apt-get install -y {} failed", packages.join(" "));
            }
        }
    }
    tools
        .iter()
        .map(|t| match find(t.program) {
            Some(p) => Ok(p),
            None => bail!(
                "{} still not found after installing {}",
                t.program,
                t.package
            ),
        })
        .collect()
}

fn apt_install(packages: &[&str]) -> Result<bool> {
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend_from_slice(packages);
    apt(&args)
}

fn apt(args: &[&str]) -> Result<bool> {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    let out = procs::run_capture(cmd, Duration::from_secs(600))?;
    if !out.status.success() {
        eprintln!("{}{}", out.stdout, out.stderr);
    }
    Ok(out.status.success())
}
