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
        HeadDeadline {
            inner,
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

/// `AsyncWrite` for a wrapper stream: every call goes to its `inner` stream.
macro_rules! write_through_inner {
    ($t:ty) => {
        impl tokio::io::AsyncWrite for $t {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
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
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}
pub(crate) use write_through_inner;

write_through_inner!(HeadDeadline);

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
