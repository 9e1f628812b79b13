//! A contender is one way of serving the same backend to the load generator:
//! the backend reached directly, nginx in front of it, unitgate in front of it
//! (later: haproxy, a bare pingora floor, unitgate with the feature chain…).
//! Each knows how to start itself and which process's CPU is "the proxy's".

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::procs::{self, Managed};

/// What a contender is given to start.
#[derive(Debug, Clone)]
pub struct StartCtx<'a> {
    /// A scratch directory of its own (configs, logs, pid files).
    pub dir: &'a Path,
    /// The backend every contender forwards to.
    pub backend: SocketAddr,
    /// CPU the proxy is pinned to, if pinning.
    pub cpu: Option<usize>,
    /// How many times longer than usual a start may take (1; more when the
    /// contender runs under valgrind).
    pub slowdown: u32,
}

impl StartCtx<'_> {
    /// `usual`, times [`StartCtx::slowdown`]: how long to wait for the first 200.
    pub fn start_timeout(&self, usual: std::time::Duration) -> std::time::Duration {
        usual * self.slowdown.max(1)
    }
}

pub trait Contender {
    /// Short name used in tables ("direct", "nginx", "unitgate").
    fn name(&self) -> &str;

    /// Starts the contender and returns once it answers 200 on its URL.
    fn start(&self, ctx: &StartCtx<'_>) -> Result<Started>;
}

/// A started contender. Dropping it stops its processes.
pub struct Started {
    pub name: String,
    /// Where wrk sends load.
    pub url: String,
    /// The process whose CPU time counts as the proxy's, if there is a proxy.
    pub measured: Option<u32>,
    /// The exact commands that started it, for the report.
    pub commands: Vec<String>,
    /// Generated config files: (path, contents), for the report.
    pub files: Vec<(PathBuf, String)>,
    /// Version string, when the program tells it.
    pub version: Option<String>,
    /// Extra request headers wrk sends (`Name: value`).
    pub headers: Vec<String>,
    /// Where its access log goes and the text every access line contains
    /// (`""`: every line is one), when it logs requests: the bench counts
    /// the lines after the run against the requests it sent.
    pub access_log: Option<(PathBuf, &'static str)>,
    procs: Vec<Managed>,
}

impl Started {
    pub fn new(name: &str, url: String) -> Self {
        Self {
            name: name.to_owned(),
            url,
            measured: None,
            commands: Vec::new(),
            files: Vec::new(),
            version: None,
            headers: Vec::new(),
            access_log: None,
            procs: Vec::new(),
        }
    }

    /// Hands a process to this contender: it is stopped with it.
    pub fn own(&mut self, p: Managed) {
        self.procs.push(p);
    }

    /// Errors out if any of its processes has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.procs.iter_mut().try_for_each(Managed::ensure_running)
    }
}

/// The backend itself, no proxy: the floor every proxy is compared with.
#[derive(Debug, Default)]
pub struct Direct;

impl Contender for Direct {
    fn name(&self) -> &str {
        "direct"
    }

    fn start(&self, ctx: &StartCtx<'_>) -> Result<Started> {
        Ok(Started::new(
            self.name(),
            format!("http://{}/", ctx.backend),
        ))
    }
}

/// Another contender under another name (the same program measured twice
/// in one scenario, e.g. `nginx-http` beside `nginx-https`).
#[derive(Debug)]
pub struct Renamed<C> {
    pub name: String,
    pub inner: C,
}

impl<C: Contender> Contender for Renamed<C> {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&self, ctx: &StartCtx<'_>) -> Result<Started> {
        let mut s = self.inner.start(ctx)?;
        s.name.clone_from(&self.name);
        Ok(s)
    }
}

/// Calls `start` with a free port, retrying with a new port (up to 3 times)
/// when the start failed because another process took the port in between.
pub fn with_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Result<T>) -> Result<T> {
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        let port = procs::free_port()?;
        match start(port) {
            Ok(t) => return Ok(t),
            Err(e) if attempt < ATTEMPTS && format!("{e:#}").contains("in use") => {
                eprintln!("bench: {what}: port {port} was taken, retrying with another");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
