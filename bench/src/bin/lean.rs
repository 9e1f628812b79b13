//! `unitgate-lean`: a prototype of a lean HTTP/1.1 keep-alive forwarder, to
//! see how far below the bare-pingora floor (`unitgate-floor`, which runs
//! pingora-proxy's whole request state machine) the common path can go.
//!
//! `unitgate-lean LISTEN UPSTREAM [--read-buffer BYTES]`, e.g.
//! `unitgate-lean 127.0.0.1:8081 127.0.0.1:8080`. `--read-buffer` sets the
//! read buffer pingora's listener puts in front of each accepted socket
//! (default 64 KiB, 0 = none): most of an idle connection's memory.
//!
//! It is an `HttpServerApp` (pingora-core's listener, runtime and HTTP/1
//! server session, as the floor), but instead of pingora-proxy it drives
//! pingora-core's HTTP/1 *client* session itself: the request head (+ a
//! `Content-Length` body) goes to the one fixed upstream over an idle
//! connection from a per-thread cache (or a new one), the response head
//! and body are streamed back, and both connections are kept alive. No
//! routing, no features, no timeouts (the floor sets none either), no h2,
//! no upgrades, no chunked request bodies (refused with 501): a
//! measurement, not a proxy to run.

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::server::{RunArgs, ShutdownWatch};
use pingora::services::listening::Service;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

mod shared;

#[global_allocator]
static GLOBAL: unitgate_alloc::MiMalloc = unitgate_alloc::MiMalloc;

/// Idle upstream connections kept per worker thread (pingora's pool keeps
/// 128 per thread by default).
const POOL_PER_THREAD: usize = 128;

/// Request headers that describe one hop, not the message: never forwarded.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

thread_local! {
    /// This worker thread's idle upstream connections, most recent last.
    static IDLE: RefCell<Vec<Stream>> = const { RefCell::new(Vec::new()) };
}

struct Lean {
    upstream: SocketAddr,
}

/// Why a request could not be forwarded.
enum Failure {
    /// Nothing reached the client yet: the caller may answer 502 or retry.
    BeforeResponse { retryable: bool },
    /// The response had started: the client connection can only be closed.
    AfterResponse,
}

impl Lean {
    async fn connect(&self) -> Option<Stream> {
        let tcp = tokio::net::TcpStream::connect(self.upstream).await.ok()?;
        let mut s = L4Stream::from(tcp);
        s.set_nodelay().ok()?;
        Some(Box::new(s))
    }

    /// An idle cached connection (`true`) or a new one (`false`).
    async fn upstream(&self) -> Option<(Stream, bool)> {
        if let Some(s) = IDLE.with(|p| p.borrow_mut().pop()) {
            return Some((s, true));
        }
        self.connect().await.map(|s| (s, false))
    }

    /// One attempt: the request over `up`, the response back to `down`.
    async fn forward(
        &self,
        down: &mut ServerSession,
        up: Stream,
        body: &Option<Bytes>,
        reused: bool,
    ) -> Result<(), Failure> {
        let before = Failure::BeforeResponse { retryable: reused };
        let mut req = Box::new(down.req_header().clone());
        for h in HOP_BY_HOP {
            req.remove_header(h);
        }
        let mut client = ClientSession::new(up);
        if client.write_request_header(req).await.is_err() {
            return Err(before);
        }
        if let Some(b) = body {
            if client.write_body(b).await.is_err() {
                return Err(before);
            }
        }
        if client.finish_body().await.is_err() {
            return Err(before);
        }
        // Informational responses (100 Continue) are skipped: the body was
        // already sent.
        loop {
            if client.read_response().await.is_err() {
                return Err(before);
            }
            match client.resp_header() {
                Some(h) if h.status.is_informational() && h.status != 101 => continue,
                Some(_) => break,
                None => return Err(before),
            }
        }
        let resp: Box<ResponseHeader> = match client.resp_header() {
            Some(h) => Box::new(h.clone()),
            None => return Err(before),
        };
        if resp.status == 101 {
            // No upgrades in this prototype.
            return Err(Failure::BeforeResponse { retryable: false });
        }
        if down.write_response_header(resp).await.is_err() {
            return Err(Failure::AfterResponse);
        }
        let ServerSession::H1(h1) = down else {
            return Err(Failure::AfterResponse);
        };
        loop {
            match client.read_body_ref().await {
                Ok(Some(chunk)) => {
                    if h1.write_body(chunk).await.is_err() {
                        return Err(Failure::AfterResponse);
                    }
                }
                Ok(None) => break,
                Err(_) => return Err(Failure::AfterResponse),
            }
        }
        if h1.finish_body().await.is_err() {
            return Err(Failure::AfterResponse);
        }
        client.respect_keepalive();
        if let Some(s) = client.reuse().await {
            IDLE.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_PER_THREAD {
                    p.push(s);
                }
            });
        }
        Ok(())
    }
}

#[async_trait]
impl HttpServerApp for Lean {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(session.read_request().await, Ok(true)) {
            return None;
        }
        let h1 = match &mut session {
            ServerSession::H1(h1) => h1,
            _ => return None,
        };
        // A Content-Length body is read whole (the prototype's bodies are
        // small) so a retry on a fresh connection can send it again.
        let body = if h1.is_body_empty() {
            None
        } else if h1.req_header().headers.contains_key("transfer-encoding") {
            let _ = session.respond_error(501).await;
            return None;
        } else {
            let mut buf = Vec::new();
            loop {
                match session.read_request_body().await {
                    Ok(Some(b)) => buf.extend_from_slice(&b),
                    Ok(None) => break,
                    Err(_) => return None,
                }
            }
            Some(Bytes::from(buf))
        };
        let (up, reused) = match self.upstream().await {
            Some(u) => u,
            None => {
                let _ = session.respond_error(502).await;
                return None;
            }
        };
        let mut outcome = self.forward(&mut session, up, &body, reused).await;
        if let Err(Failure::BeforeResponse { retryable: true }) = outcome {
            // A cached connection the upstream had closed: once more on a new one.
            outcome = match self.connect().await {
                Some(up) => self.forward(&mut session, up, &body, false).await,
                None => Err(Failure::BeforeResponse { retryable: false }),
            };
        }
        match outcome {
            Ok(()) => {}
            Err(Failure::BeforeResponse { .. }) => {
                let _ = session.respond_error(502).await;
                return None;
            }
            Err(Failure::AfterResponse) => return None,
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(s)) => Some(ReusedHttpStream::from_reusable_stream(s, settings)),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    let Some(args) = shared::Args::parse("unitgate-lean") else {
        return ExitCode::FAILURE;
    };
    let mut server = shared::server();
    let mut service = Service::new(
        "lean".to_owned(),
        Lean {
            upstream: args.upstream,
        },
    );
    service.add_listener(args.listener());
    server.add_service(service);
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}
