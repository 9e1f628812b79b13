//! TLS for the bench: the one certificate every TLS contender serves (ECDSA
//! P-256, self-signed for `localhost`, made with rcgen at the start of a
//! run), the client configs, and the probe that says a contender answers
//! 200 on the wire it is measured on (HTTP/1.1 or HTTP/2 over TLS, or h2c
//! on a plain listener), with what the TLS session negotiated.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use tokio::net::TcpStream;

/// The name the certificate is for, and the SNI every TLS client sends
/// (`https://localhost:PORT/`; /etc/hosts maps it to 127.0.0.1). A hostname,
/// not an IP: clients that put an IP literal in SNI (wrk with an IP URL)
/// make rustls log a warning per handshake.
pub const HOST: &str = "localhost";

/// The certificate and key every TLS contender of a run serves.
#[derive(Debug, Clone)]
pub struct BenchCert {
    pub cert_pem: String,
    /// PKCS#8 PEM.
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl BenchCert {
    /// A fresh ECDSA P-256 key and a self-signed certificate for `localhost`.
    pub fn generate() -> Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating an ECDSA P-256 key")?;
        let cert = rcgen::CertificateParams::new(vec![HOST.into()])
            .context("certificate parameters")?
            .self_signed(&key)
            .context("self-signing the bench certificate")?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        fs::write(&cert, &self.cert_pem).with_context(|| format!("writing {}", cert.display()))?;
        fs::write(&key, &self.key_pem).with_context(|| format!("writing {}", key.display()))?;
        Ok((cert, key))
    }

    /// SHA-256 of the DER certificate, hex, for the report.
    pub fn fingerprint(&self) -> String {
        sha2::Sha256::digest(&self.der)
            .iter()
            .fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }
}

/// What a contender is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
    /// TLS, ALPN `http/1.1`.
    Https1,
    /// TLS, ALPN `h2`.
    H2,
}

impl Wire {
    pub fn tls(self) -> bool {
        matches!(self, Wire::Https1 | Wire::H2)
    }

    /// The URL the load is sent to for a listener on 127.0.0.1:`port`.
    pub fn url(self, port: u16) -> String {
        if self.tls() {
            format!("https://{HOST}:{port}/")
        } else {
            format!("http://127.0.0.1:{port}/")
        }
    }

    fn alpn(self) -> Option<&'static [u8]> {
        match self {
            Wire::Https1 => Some(b"http/1.1"),
            Wire::H2 => Some(b"h2"),
            Wire::H2c => None,
        }
    }

    fn http2(self) -> bool {
        matches!(self, Wire::H2c | Wire::H2)
    }
}

/// The crypto provider of every bench TLS client: ring, as the gateway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that verifies the server's certificate as a browser would
/// (webpki chain to the bench certificate as the one root, name `localhost`).
/// TLS 1.2 and 1.3, no session resumption.
pub fn verifying_client(cert: &BenchCert) -> Result<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.der.clone()))
        .context("adding the bench certificate as a root")?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("client protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The load client's config: the server's certificate must be byte-equal to
/// `der` (no chain walk), and the handshake signature is verified with it, so
/// each handshake costs the client what it costs a real client minus the
/// chain check. TLS 1.2 and 1.3, no session resumption (every handshake is
/// full), ALPN `http/1.1`.
pub fn pinned_client(der: Vec<u8>) -> Result<ClientConfig> {
    let provider = provider();
    let verifier = Pinned {
        der,
        algs: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("client protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts exactly one certificate; verifies signatures made with it.
#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// What a TLS session negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub version: String,
    pub suite: String,
    pub kx: String,
    pub alpn: String,
}

impl Session {
    pub fn of(conn: &rustls::CommonState) -> Self {
        let name = |o: Option<String>| o.unwrap_or_else(|| "-".into());
        Self {
            version: name(conn.protocol_version().map(|v| format!("{v:?}"))),
            suite: name(
                conn.negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite())),
            ),
            kx: name(
                conn.negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name())),
            ),
            alpn: name(
                conn.alpn_protocol()
                    .map(|a| String::from_utf8_lossy(a).into_owned()),
            ),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{}, {}, key exchange {}, ALPN {}",
            self.version, self.suite, self.kx, self.alpn
        )
    }
}

/// A probe's answer.
#[derive(Debug, Clone)]
pub struct Probe {
    pub status: u16,
    /// For a TLS wire: what the session negotiated.
    pub session: Option<Session>,
}

/// One `GET /` to 127.0.0.1:`port` on `wire` (TLS: verified against `cert`,
/// which must be the certificate served, and the expected ALPN must be
/// chosen), over a fresh connection, within a second.
pub fn probe(port: u16, wire: Wire, cert: Option<&BenchCert>) -> Result<Probe> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a probe runtime")?;
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), probe_async(port, wire, cert))
            .await
            .map_err(|_| anyhow!("no answer within 1 s"))?
    })
}

/// The port of a bench URL (`scheme://host:port/…`).
pub fn url_port(url: &str) -> Result<u16> {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or_default();
    rest.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| anyhow!("no port in {url:?}"))
}

async fn probe_async(port: u16, wire: Wire, cert: Option<&BenchCert>) -> Result<Probe> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let url = wire.url(port);
    let Some(alpn) = wire.alpn() else {
        let status = exchange(TokioIo::new(tcp), wire.http2(), &url).await?;
        return Ok(Probe {
            status,
            session: None,
        });
    };
    let cert = cert.context("a TLS probe needs the bench certificate")?;
    let mut config = verifying_client(cert)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    let name = ServerName::try_from(HOST).context("server name")?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let (_, conn) = tls.get_ref();
    let session = Session::of(conn);
    let served = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    if served.as_deref() != Some(cert.der.as_slice()) {
        bail!("the server did not present the bench certificate");
    }
    if conn.alpn_protocol() != Some(alpn) {
        bail!(
            "ALPN: offered {} only, the server chose {}",
            String::from_utf8_lossy(alpn),
            session.alpn
        );
    }
    let status = exchange(TokioIo::new(tls), wire.http2(), &url).await?;
    Ok(Probe {
        status,
        session: Some(session),
    })
}

/// One GET over an established connection; the status (body read to the end).
async fn exchange<T>(io: TokioIo<T>, http2: bool, url: &str) -> Result<u16>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let uri: hyper::Uri = url.parse().context("probe URL")?;
    let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let response = if http2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(uri)
            .header(hyper::header::USER_AGENT, "unitgate-bench")
            .body(Empty::<Bytes>::new())?;
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get("/")
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONNECTION, "close")
            .header(hyper::header::USER_AGENT, "unitgate-bench")
            .body(Empty::<Bytes>::new())?;
        sender.send_request(req).await?
    };
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_is_p256_for_localhost() {
        let c = BenchCert::generate().expect("generated");
        assert!(c.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(c.fingerprint().len(), 64);
        assert!(pinned_client(c.der.clone()).is_ok());
        assert!(verifying_client(&c).is_ok());
    }

    #[test]
    fn urls_and_ports() {
        assert_eq!(Wire::H2.url(8443), "https://localhost:8443/");
        assert_eq!(Wire::H2c.url(8080), "http://127.0.0.1:8080/");
        assert_eq!(url_port("https://localhost:8443/").ok(), Some(8443));
        assert_eq!(url_port("http://127.0.0.1:80/x").ok(), Some(80));
        assert!(url_port("http://localhost/").is_err());
    }
}
