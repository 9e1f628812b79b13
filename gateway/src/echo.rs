//! An HTTP echo backend that says which unit and instance answered.
//!
//! Used by `unitgate demo` (as in-process instances) and by the integration
//! tests (as real backends on real sockets). Switches change its behaviour at
//! run time: a forced status, a delay, a failing health check.
//!
//! - `GET /healthz`: 200 `ok`, or 503 while unhealthy.
//! - `GET /bytes/<n>`: streams `n` bytes without holding them in memory.
//! - anything else: a JSON echo of the request (`unit`, `instance`, `method`,
//!   `path`, `headers`, `body_bytes`), the request body read and counted, never kept.

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

type Body = BoxBody<Bytes, std::io::Error>;

/// Run-time switches and counters of one echo instance.
#[derive(Debug)]
pub struct EchoState {
    pub unit: String,
    pub instance: String,
    /// Non-zero: answer every non-health request with this status.
    pub status: AtomicU16,
    /// Delay before answering, in milliseconds.
    pub delay_ms: AtomicU64,
    pub healthy: AtomicBool,
    /// Non-health requests served.
    pub served: AtomicU64,
}

/// A running echo instance; dropping it (or [`EchoServer::stop`]) closes the
/// listener and every open connection at once, like a crashed process.
#[derive(Debug)]
pub struct EchoServer {
    pub addr: SocketAddr,
    pub state: Arc<EchoState>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Binds `addr` (use port 0 for an ephemeral port) and starts serving.
    pub async fn start(unit: &str, instance: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let state = Arc::new(EchoState {
            unit: unit.to_owned(),
            instance: instance.to_owned(),
            status: AtomicU16::new(0),
            delay_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            served: AtomicU64::new(0),
        });
        Ok(Self::serve(listener, state))
    }

    /// Serves on an already bound listener with existing state (a restart
    /// keeps the switches and counters).
    pub fn serve(listener: TcpListener, state: Arc<EchoState>) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task drops them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let st = st.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| handle(st.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        EchoServer { addr, state, task }
    }

    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::Relaxed);
    }

    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

async fn handle(st: Arc<EchoState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/healthz" {
        return Ok(if st.healthy.load(Ordering::Relaxed) {
            full(StatusCode::OK, "text/plain", "ok\n")
        } else {
            full(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "unhealthy\n")
        });
    }
    st.served.fetch_add(1, Ordering::Relaxed);
    let delay = st.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut resp = match req.uri().path().strip_prefix("/bytes/") {
        Some(n) => bytes_response(n.parse().unwrap_or(0)),
        None => echo_response(&st, req).await,
    };
    let forced = st.status.load(Ordering::Relaxed);
    if forced != 0 {
        *resp.status_mut() =
            StatusCode::from_u16(forced).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let h = resp.headers_mut();
    if let Ok(v) = st.unit.parse() {
        h.insert("x-echo-unit", v);
    }
    if let Ok(v) = st.instance.parse() {
        h.insert("x-echo-instance", v);
    }
    Ok(resp)
}

async fn echo_response(st: &EchoState, req: Request<Incoming>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let mut headers: BTreeMap<&str, String> = BTreeMap::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str())
            .and_modify(|prev| {
                prev.push_str(", ");
                prev.push_str(&v);
            })
            .or_insert(v);
    }
    let body = serde_json::json!({
        "unit": st.unit,
        "instance": st.instance,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    full(StatusCode::OK, "application/json", body.to_string())
}

fn bytes_response(total: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    static BLOCK: [u8; CHUNK as usize] = [b'x'; CHUNK as usize];
    let chunks = stream::unfold(total, |left| async move {
        if left == 0 {
            return None;
        }
        let n = left.min(CHUNK);
        let frame = Frame::data(Bytes::from_static(&BLOCK[..n as usize]));
        Some((Ok::<_, std::io::Error>(frame), left - n))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    if let Ok(v) = total.to_string().parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_LENGTH, v);
    }
    resp
}
