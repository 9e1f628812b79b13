//! Edge-test kit: certificates (a private CA, leaves, self-signed pairs, all
//! made with rcgen per test), real TLS and HTTP/2 clients, and real
//! backends the echo server cannot play: a TLS echo (HTTP/1.1 or h2), an h2c
//! gRPC-style backend with trailers, and a WebSocket echo.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// A certificate and its key, PEM, with the leaf's DER to compare against.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
    pub der: Vec<u8>,
}

/// A self-signed certificate for `names` (DNS names or IP addresses).
pub fn self_signed(names: &[&str]) -> Pem {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
    Pem {
        cert: c.cert.pem(),
        key: c.key_pair.serialize_pem(),
        der: c.cert.der().to_vec(),
    }
}

/// A self-signed certificate that expired in 2001.
pub fn expired(names: &[&str]) -> Pem {
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let cert = params.self_signed(&key).expect("self-signed");
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// A private certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA");
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    /// A server certificate for `names`.
    pub fn issue(&self, names: &[&str]) -> Pem {
        self.leaf(names, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for mutual TLS).
    pub fn issue_client(&self, name: &str) -> Pem {
        self.leaf(&[name], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> Pem {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed leaf");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// The certificates of a PEM text.
fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .expect("PEM key")
        .expect("a private key")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Roots trusting each of `pems`.
pub fn roots(pems: &[&str]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        for c in certs(pem) {
            roots.add(c).expect("root");
        }
    }
    roots
}

/// How a test client handshakes.
pub struct ClientTls<'a> {
    pub trust: &'a [&'a str],
    pub alpn: &'a [&'a [u8]],
    /// Only TLS 1.2 (for `min_version` tests).
    pub tls12_only: bool,
    /// A client certificate (mutual TLS).
    pub identity: Option<&'a Pem>,
}

impl Default for ClientTls<'_> {
    fn default() -> Self {
        ClientTls {
            trust: &[],
            alpn: &[b"http/1.1"],
            tls12_only: false,
            identity: None,
        }
    }
}

/// A TLS connection to `addr` with SNI `sni` (an IP: no SNI is sent).
pub async fn connect_tls(
    addr: SocketAddr,
    sni: &str,
    opts: &ClientTls<'_>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots(opts.trust));
    let mut config = match opts.identity {
        Some(id) => builder
            .with_client_auth_cert(certs(&id.cert), key(&id.key))
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = opts.alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The leaf certificate `addr` serves for `sni`, trusting `trust`.
pub async fn served_cert(addr: SocketAddr, sni: &str, trust: &[&str]) -> std::io::Result<Vec<u8>> {
    let opts = ClientTls {
        trust,
        ..ClientTls::default()
    };
    let tls = connect_tls(addr, sni, &opts).await?;
    let (_, conn) = tls.get_ref();
    Ok(conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default())
}

/// An HTTPS client (HTTP/2 by ALPN when the server offers it) trusting
/// `ca`, with `host` resolved to `addr`.
pub fn https_client(ca: &str, host: &str, addr: SocketAddr) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .timeout(std::time::Duration::from_secs(20))
        .resolve(host, addr);
    for c in certs(ca) {
        let pem = reqwest::Certificate::from_der(&c).expect("cert");
        b = b.add_root_certificate(pem);
    }
    b.build().expect("https client")
}

/// A cleartext HTTP/2 client (prior knowledge).
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("h2c client")
}

fn server_config(pem: &Pem, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs(&pem.cert), key(&pem.key))
        .expect("server cert");
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

fn echo_response(unit: &str, instance: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let body = serde_json::json!({
        "unit": unit, "instance": instance, "path": req.uri().path(),
        "version": format!("{:?}", req.version()), "headers": headers,
    });
    Response::builder()
        .header("x-echo-unit", unit)
        .header("x-echo-instance", instance)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

/// A TLS echo backend with certificate `pem`: HTTP/2 when `h2`, else
/// HTTP/1.1. Answers like the echo server (`x-echo-unit`, JSON body).
pub async fn tls_echo(unit: &str, instance: &str, pem: &Pem, h2: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(pem, alpn));
    let (unit, instance) = (unit.to_owned(), instance.to_owned());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let (unit, instance) = (unit.clone(), instance.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let r = echo_response(&unit, &instance, &req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    addr
}

/// An h2c (cleartext HTTP/2) backend in the manner of a gRPC server: every
/// request gets `content-type: application/grpc`, a body that echoes the
/// request body, and trailers `grpc-status: 0`, `grpc-message: ok`,
/// `x-backend: <name>`.
pub async fn h2c_grpc_backend(name: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let name = name.to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let name = name.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let body = body.unwrap_or_default();
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        trailers.insert("grpc-message", http::HeaderValue::from_static("ok"));
                        trailers.insert(
                            "x-backend",
                            http::HeaderValue::from_str(&name).expect("name"),
                        );
                        let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                            vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
                        let resp = Response::builder()
                            .header("content-type", "application/grpc")
                            .header("x-path", path)
                            .body(StreamBody::new(futures_util::stream::iter(frames)))
                            .expect("response");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// A WebSocket echo backend: every text or binary message comes back
/// prefixed with `echo:`; the upgrade request's `x-unit-home` header is the
/// first message it sends.
#[allow(clippy::result_large_err)] // tungstenite's callback signature
pub async fn ws_echo() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::server::{Request as WsReq, Response as WsResp};
    use tokio_tungstenite::tungstenite::Message;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut home = String::new();
                let cb = |req: &WsReq, resp: WsResp| {
                    home = req
                        .headers()
                        .get("x-unit-home")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                    return;
                };
                if ws
                    .send(Message::text(format!("home:{home}")))
                    .await
                    .is_err()
                {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("echo:{}", t.as_str())),
                        Message::Binary(b) => {
                            let mut v = b"echo:".to_vec();
                            v.extend_from_slice(&b);
                            Message::binary(v)
                        }
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// What a gRPC-style call over HTTP/2 returned.
#[derive(Debug)]
pub struct GrpcReply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// `None` for a trailers-only answer (everything is in `headers`).
    pub trailers: Option<http::HeaderMap>,
}

impl GrpcReply {
    /// `grpc-status`, from the trailers or a trailers-only header block.
    pub fn grpc_status(&self) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
    }
}

/// One gRPC-style POST over an HTTP/2 connection `io` (h2c, or TLS with
/// ALPN h2), with the raw h2 client so trailers are seen as sent.
pub async fn grpc_call<T>(
    io: T,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> Result<GrpcReply, h2::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, conn) = h2::client::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let uri = format!("http://{authority}{path}");
    let mut req = http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).expect("request");
    let (resp, mut send) = client.send_request(req, body.is_empty())?;
    if !body.is_empty() {
        // The gateway may answer (and close the stream) from the headers
        // alone, before the body is sent: the answer is what counts.
        let _ = send.send_data(Bytes::from_static(body), true);
    }
    let resp = resp.await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut recv = resp.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await?;
    Ok(GrpcReply {
        status,
        headers,
        body: Bytes::from(data),
        trailers,
    })
}
