//! The client connection before pingora sees it: a whole-head deadline.
//!
//! pingora 0.9 times out each read of a request head, not the head as a
//! whole, so a client trickling one byte a second holds a connection (and
//! its buffer) for as long as it likes. [`Edge`] wraps every accepted stream
//! in a [`HeadDeadline`]: from accept, and from the first byte after an idle
//! keep-alive gap, the head must be complete within `client_header_timeout`
//! or reads fail (the connection is closed, as nginx does). The proxy marks
//! the head complete in its first filter ([`head_complete`]); the end of the
//! request ([`request_done`]) makes the connection idle again, so keep-alive
//! idleness (`client_idle_timeout`) and body uploads never count.
//!
//! A head pingora cannot parse never reaches a filter: pingora answers it
//! itself with a bare `400` (empty body, no request id) and logs nothing.
//! [`ParserReply`] sees that answer go out while a head is still being read
//! and sends the contract's JSON `400 bad_request` in its place, with an
//! access-log line.

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::snapshot::SharedSnapshot;
use crate::tls::TlsStream;

/// Waiting for a head: the deadline runs.
const HEAD: u8 = 0;
/// A head arrived; the request is being served.
const SERVING: u8 = 1;
/// Between requests: the deadline starts with the next byte.
const IDLE: u8 = 2;

pub struct HeadDeadline {
    inner: Stream,
    /// pingora's own 400s are rewritten here over plain TCP; a TLS stream
    /// takes it over ([`HeadDeadline::take_parser_reply`]), as the writes
    /// here are then ciphertext.
    reply: ParserReply,
    timeout: Duration,
    phase: AtomicU8,
    timer: Option<Pin<Box<Sleep>>>,
    /// Nothing read yet: an HTTP/2 preface ends the deadline for good (HTTP/2
    /// has its own idle handling and no per-request stream to mark).
    first_read: bool,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("inner", &self.inner)
            .finish()
    }
}

impl HeadDeadline {
    pub fn new(inner: Stream, timeout: Duration) -> Self {
        let peer = inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        HeadDeadline {
            inner,
            reply: ParserReply::new(peer),
            timeout,
            phase: AtomicU8::new(HEAD),
            timer: Some(Box::pin(tokio::time::sleep(timeout))),
            first_read: true,
        }
    }

    /// The client has sent nothing yet (a TCP probe that closes at once).
    pub fn nothing_received(&self) -> bool {
        self.first_read
    }

    /// The connection no longer has request heads to time (HTTP/2).
    pub fn serve_forever(&mut self) {
        self.phase.store(SERVING, Ordering::Relaxed);
        self.timer = None;
    }

    fn head(&self) -> &HeadDeadline {
        self
    }

    /// A request head is being read (no filter has run for it yet).
    pub fn reading_head(&self) -> bool {
        self.phase.load(Ordering::Relaxed) != SERVING
    }

    /// Hands the rewriting to a TLS stream over this one.
    pub fn take_parser_reply(&mut self) -> ParserReply {
        std::mem::replace(&mut self.reply, ParserReply::off())
    }

    fn arm(&mut self) {
        let at = Instant::now() + self.timeout;
        match &mut self.timer {
            Some(t) => t.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }
}

fn of(stream: Option<&Stream>) -> Option<&HeadDeadline> {
    let any = stream?.as_any();
    any.downcast_ref::<HeadDeadline>()
        .or_else(|| any.downcast_ref::<TlsStream>().map(TlsStream::head))
}

/// The request head is complete: stop its deadline.
pub fn head_complete(stream: Option<&Stream>) {
    if let Some(d) = of(stream) {
        d.phase.store(SERVING, Ordering::Relaxed);
    }
}

/// The request is finished: the next byte starts the next head's deadline.
pub fn request_done(stream: Option<&Stream>) {
    if let Some(d) = of(stream) {
        d.phase.store(IDLE, Ordering::Relaxed);
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.phase.load(Ordering::Relaxed) {
            SERVING => Pin::new(&mut this.inner).poll_read(cx, buf),
            IDLE => {
                let before = buf.filled().len();
                let r = Pin::new(&mut this.inner).poll_read(cx, buf);
                if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                    this.phase.store(HEAD, Ordering::Relaxed);
                    this.arm();
                }
                r
            }
            _ => {
                let before = buf.filled().len();
                if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_read(cx, buf) {
                    if this.first_read && buf.filled().len() > before {
                        this.first_read = false;
                        if buf.filled()[before..].starts_with(H2_PREFACE) {
                            this.phase.store(SERVING, Ordering::Relaxed);
                            this.timer = None;
                        }
                    }
                    return Poll::Ready(r);
                }
                let expired = this
                    .timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "client_header_timeout: the request head did not arrive in time",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

/// What pingora writes for a head it could not parse: `HTTP/1.x 400 `.
fn is_pingora_400(buf: &[u8]) -> bool {
    buf.len() > 12 && buf.starts_with(b"HTTP/1.") && &buf[8..13] == b" 400 "
}

/// Replaces pingora's bare 400 for an unparsable head with the contract's
/// JSON error (and logs the request as a bare line): the bytes pingora
/// hands over are reported written, ours go to the client instead.
pub struct ParserReply {
    peer: Option<std::net::IpAddr>,
    state: Reply,
}

enum Reply {
    /// Writes pass; a 400 while a head is read starts ours.
    Watching,
    /// Our answer and how much of it is written.
    Sending(bytes::Bytes, usize),
    /// Answered: the connection is closing; later writes are dropped.
    Answered,
    /// Another stream rewrites (TLS over this one): writes pass.
    Off,
}

impl ParserReply {
    pub fn new(peer: Option<std::net::IpAddr>) -> Self {
        ParserReply {
            peer,
            state: Reply::Watching,
        }
    }

    fn off() -> Self {
        ParserReply {
            peer: None,
            state: Reply::Off,
        }
    }

    fn start(&mut self) {
        let id = crate::proxy::forward::new_request_id();
        let id = id.to_str().unwrap_or_default();
        let body = crate::proxy::respond::error_body(
            crate::proxy::respond::ErrorCode::BadRequest,
            "the request head could not be parsed",
            id,
        );
        let mut out = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nx-request-id: {id}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        crate::access_log::write(&crate::access_log::Line {
            request_id: id,
            trace_id: 0,
            client: self.peer,
            method: "-",
            path: "-",
            status: 400,
            duration: Duration::ZERO,
            routed: None,
        });
        self.state = Reply::Sending(out.into(), 0);
    }

    /// `poll_write` of `inner`, with pingora's parser 400 swapped for ours
    /// while `reading_head`.
    pub fn poll_write<W: tokio::io::AsyncWrite + ?Sized>(
        &mut self,
        reading_head: bool,
        mut inner: Pin<&mut W>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.state {
            Reply::Off => return inner.poll_write(cx, buf),
            Reply::Answered => return Poll::Ready(Ok(buf.len())),
            Reply::Watching if !(reading_head && is_pingora_400(buf)) => {
                return inner.poll_write(cx, buf)
            }
            Reply::Watching => self.start(),
            Reply::Sending(..) => {}
        }
        if let Reply::Sending(out, pos) = &mut self.state {
            while *pos < out.len() {
                match inner.as_mut().poll_write(cx, &out[*pos..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                    }
                    Poll::Ready(Ok(n)) => *pos += n,
                    other => return other,
                }
            }
        }
        self.state = Reply::Answered;
        Poll::Ready(Ok(buf.len()))
    }

    /// Vectored writes are passed through unless a 400 may be among them.
    pub fn poll_write_vectored<W: tokio::io::AsyncWrite + ?Sized>(
        &mut self,
        reading_head: bool,
        inner: Pin<&mut W>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.state {
            Reply::Off => return inner.poll_write_vectored(cx, bufs),
            Reply::Watching if !reading_head => return inner.poll_write_vectored(cx, bufs),
            _ => {}
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.poll_write(reading_head, inner, cx, first)
    }
}

/// `AsyncWrite` for a wrapper stream with a [`ParserReply`] in `reply`:
/// its `head()` is the [`HeadDeadline`] whose phase says whether a head is
/// being read.
macro_rules! write_with_parser_reply {
    ($t:ty) => {
        impl tokio::io::AsyncWrite for $t {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let this = &mut *self;
                let reading = this.head().reading_head();
                this.reply
                    .poll_write(reading, std::pin::Pin::new(&mut this.inner), cx, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let this = &mut *self;
                let reading = this.head().reading_head();
                this.reply.poll_write_vectored(
                    reading,
                    std::pin::Pin::new(&mut this.inner),
                    cx,
                    bufs,
                )
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}
pub(crate) use write_with_parser_reply;

write_with_parser_reply!(HeadDeadline);

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    /// pingora peeks for an HTTP/2 preface before reading anything: a
    /// client that sends nothing must meet the deadline here too.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let Some(deadline) = self.timer.as_ref().map(|t| t.deadline()) else {
            return self.inner.try_peek(buf).await;
        };
        match tokio::time::timeout_at(deadline, self.inner.try_peek(buf)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client_header_timeout: nothing arrived in time",
            )),
        }
    }
}

/// The data-plane app: pingora's proxy behind the head deadline, the
/// connection limit and, on TLS listeners, the TLS handshake.
pub struct Edge<A> {
    pub proxy: Arc<A>,
    pub snapshot: SharedSnapshot,
    /// `gateway.max_connections` (read at start), shared by the plain and
    /// the TLS listeners: connections over it are held, unread, until one
    /// in service closes.
    pub limit: Option<Arc<tokio::sync::Semaphore>>,
    /// This app serves `gateway.listen_tls`: handshake first.
    pub tls: bool,
}

impl<A> Edge<A> {
    pub fn new(proxy: Arc<A>, snapshot: SharedSnapshot) -> Self {
        let max = snapshot.load().config.gateway.max_connections;
        Edge {
            proxy,
            snapshot,
            limit: (max > 0).then(|| Arc::new(tokio::sync::Semaphore::new(max as usize))),
            tls: false,
        }
    }

    /// The same app for the TLS listeners, sharing the connection limit.
    pub fn for_tls(&self) -> Self {
        Edge {
            proxy: self.proxy.clone(),
            snapshot: self.snapshot.clone(),
            limit: self.limit.clone(),
            tls: true,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Edge<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _permit = match &self.limit {
            Some(limit) => Some(limit.clone().acquire_owned().await.ok()?),
            None => None,
        };
        let snap = self.snapshot.load_full();
        let timeout = snap.config.gateway.client_header_timeout;
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let head = HeadDeadline::new(stream, timeout);
        let stream: Stream = if self.tls {
            // The handshake's reads run under the head deadline.
            let config = snap.tls.clone()?;
            drop(snap);
            let accept = tokio_rustls::TlsAcceptor::from(config).accept(head);
            match accept.into_fallible().await {
                Ok(s) => Box::new(TlsStream::new(s)),
                Err((e, head)) => {
                    crate::tls::handshake_failed(peer, &e, head.nothing_received());
                    return None;
                }
            }
        } else {
            Box::new(head)
        };
        self.proxy.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await
    }
}
