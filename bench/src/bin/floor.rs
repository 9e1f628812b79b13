//! `unitgate-floor`: the bare pingora proxy the bench measures unitgate
//! against — one upstream, no routing, no features — built with the same
//! allocator and release profile as unitgate, so the difference between the
//! two is what unitgate's features cost.
//!
//! `unitgate-floor LISTEN UPSTREAM [--timeouts] [--h2c] [--read-buffer BYTES]`, e.g.
//! `unitgate-floor 127.0.0.1:8081 127.0.0.1:8080`.
//!
//! The flags add, one at a time, what unitgate configures on top of bare
//! pingora, so the bench can attribute its cost: `--timeouts` sets the
//! per-attempt connect/read/write timeouts unitgate sets on every peer,
//! `--h2c` accepts cleartext HTTP/2 on the listener as unitgate does.
//! `--read-buffer BYTES` sets the read buffer pingora's listener puts in
//! front of each accepted socket (default 64 KiB; 0 = none), which is most
//! of what an idle keep-alive client costs in memory (`idle-conns`).

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::proxy::ProxyServiceBuilder;
use pingora::server::RunArgs;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

mod shared;

#[global_allocator]
static GLOBAL: unitgate_alloc::MiMalloc = unitgate_alloc::MiMalloc;

struct Floor {
    upstream: SocketAddr,
    timeouts: bool,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        if self.timeouts {
            let t = Some(Duration::from_secs(30));
            peer.options.connection_timeout = Some(Duration::from_secs(5));
            peer.options.read_timeout = t;
            peer.options.write_timeout = t;
        }
        Ok(Box::new(peer))
    }
}

fn main() -> ExitCode {
    let Some(args) = shared::Args::parse("unitgate-floor") else {
        return ExitCode::FAILURE;
    };
    let has = |flag: &str| args.flags.iter().any(|f| f == flag);
    let mut server = shared::server();
    let mut options = HttpServerOptions::default();
    options.h2c = has("--h2c");
    let floor = Floor {
        upstream: args.upstream,
        timeouts: has("--timeouts"),
    };
    let mut proxy = ProxyServiceBuilder::new(&server.configuration, floor)
        .server_options(options)
        .build();
    proxy.add_listener(args.listener());
    server.add_service(proxy);
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}
