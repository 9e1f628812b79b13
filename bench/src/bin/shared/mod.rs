//! What the two bench proxies (`unitgate-floor`, `unitgate-lean`) share:
//! their command line, a one-worker server, and the listener.

use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use std::net::SocketAddr;

/// `NAME LISTEN UPSTREAM [FLAGS...]`.
pub struct Args {
    pub listen: String,
    pub upstream: SocketAddr,
    pub flags: Vec<String>,
}

impl Args {
    /// The process's arguments; `None` (with the usage on stderr) when
    /// LISTEN or UPSTREAM is missing or UPSTREAM is no `IP:port`.
    pub fn parse(name: &str) -> Option<Args> {
        let mut args = std::env::args().skip(1);
        let (listen, upstream) = (args.next(), args.next().and_then(|u| u.parse().ok()));
        let (Some(listen), Some(upstream)) = (listen, upstream) else {
            eprintln!("usage: {name} LISTEN UPSTREAM (both IP:port)");
            return None;
        };
        Some(Args {
            listen,
            upstream,
            flags: args.collect(),
        })
    }

    /// The listener on LISTEN; `--read-buffer BYTES` sets the read buffer
    /// pingora puts in front of every accepted socket (default 64 KiB;
    /// 0 = none, reads go straight to the socket).
    pub fn listener(&self) -> ListenerConfig {
        let mut l = ListenerConfig::tcp(&self.listen);
        if let Some(n) = self
            .flags
            .iter()
            .position(|f| f == "--read-buffer")
            .and_then(|i| self.flags.get(i + 1))
            .and_then(|n| n.parse().ok())
        {
            l = l.l4_buffer(L4BufferSettings::default().read(n));
        }
        l
    }
}

/// A bootstrapped one-worker server that stops at once on a signal.
pub fn server() -> Server {
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}
