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
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::proxy::ProxyServiceBuilder;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2).and_then(|u| u.parse().ok()))
    else {
        eprintln!("usage: unitgate-floor LISTEN UPSTREAM (both IP:port)");
        return ExitCode::FAILURE;
    };
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let flags = &args[3..];
    let timeouts = flags.iter().any(|f| f == "--timeouts");
    let mut options = HttpServerOptions::default();
    options.h2c = flags.iter().any(|f| f == "--h2c");
    let mut proxy = ProxyServiceBuilder::new(&server.configuration, Floor { upstream, timeouts })
        .server_options(options)
        .build();
    let mut listener = ListenerConfig::tcp(listen);
    if let Some(n) = flags
        .iter()
        .position(|f| f == "--read-buffer")
        .and_then(|i| flags.get(i + 1))
        .and_then(|n| n.parse().ok())
    {
        listener = listener.l4_buffer(L4BufferSettings::default().read(n));
    }
    proxy.add_listener(listener);
    server.add_service(proxy);
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}
