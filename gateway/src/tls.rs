//! TLS at the edge. The gateway terminates TLS itself, in [`crate::edge`],
//! rather than in pingora's listener: the handshake then runs under the
//! connection limit and the head deadline, a failed handshake is counted and
//! logged at debug (pingora logs every one at ERROR, which a port scanner
//! turns into a flood), and the whole server config (certificates chosen by
//! SNI, `min_version`, the trusted-peer CA) belongs to the snapshot, so a
//! reload changes any of it for new handshakes without touching a listener
//! or an open connection.

use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use unitgate_config::{Tls, TlsVersion};

use crate::edge::HeadDeadline;

/// Failed downstream handshakes since start (`unitgate_tls_handshake_errors_total`).
pub static HANDSHAKE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// The rustls server config of a validated `[tls]`: built once per snapshot.
pub fn server_config(tls: &Tls) -> Result<Arc<ServerConfig>, String> {
    for w in expiry_warnings(tls) {
        tracing::warn!("tls: {w}");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match &tls.trusted_peer_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in ca {
                roots
                    .add(der.clone().into())
                    .map_err(|e| format!("tls.trusted_peer_ca: {e}"))?;
            }
            // Ordinary clients present no certificate; one that presents a
            // certificate must present one from this CA.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("tls.trusted_peer_ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(tls)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `[tls]` as `/admin/v1/status` shows it: the certificates being served.
pub fn status(tls: &Tls) -> serde_json::Value {
    let certificates: Vec<_> = tls
        .certificates
        .iter()
        .map(|c| {
            serde_json::json!({
                "cert_file": c.cert_file,
                "key_file": c.key_file,
                "hosts": c.hosts,
                "not_after": c.not_after,
            })
        })
        .collect();
    serde_json::json!({
        "min_version": match tls.min_version {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        },
        "certificates": certificates,
        "handshake_errors": HANDSHAKE_ERRORS.load(Ordering::Relaxed),
    })
}

/// Expired certificates, as warnings (the config is still applied: an
/// expired certificate is the operator's to replace, not a reason to stop).
pub fn expiry_warnings(tls: &Tls) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    tls.certificates
        .iter()
        .filter(|c| c.not_after <= now)
        .map(|c| format!("{}: the certificate has expired", c.cert_file))
        .collect()
}

/// Certificates by SNI: the exact name, then `*.` and the name without its
/// first label, then the default entry; no match and no default fails the
/// handshake.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` keyed by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn new(tls: &Tls) -> Self {
        let mut r = SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        };
        for c in &tls.certificates {
            if c.hosts.is_empty() {
                r.default = Some(c.key.clone());
            }
            for h in &c.hosts {
                match h.strip_prefix("*.") {
                    Some(suffix) => r.wildcard.insert(suffix.to_owned(), c.key.clone()),
                    None => r.exact.insert(h.clone(), c.key.clone()),
                };
            }
        }
        r
    }

    fn lookup(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = name.and_then(|name| {
            // rustls hands the SNI over lowercased and without a trailing dot.
            if let Some(k) = self.exact.get(name) {
                return Some(k.clone());
            }
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent).cloned()
        });
        found.or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}

/// A client connection after its TLS handshake, as pingora's HTTP server
/// sees it: ALPN picks HTTP/2 or HTTP/1.1, and the digest marks it as TLS
/// (`x-forwarded-proto: https`) and says whether the client presented a
/// certificate of the trusted-peer CA.
pub struct TlsStream {
    inner: tokio_rustls::server::TlsStream<HeadDeadline>,
    digest: Arc<SslDigest>,
    alpn: Option<ALPN>,
    reply: crate::edge::ParserReply,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("inner", self.head())
            .field("alpn", &self.alpn)
            .finish()
    }
}

impl TlsStream {
    /// Wraps a finished handshake; an HTTP/2 connection leaves the head
    /// deadline for good (HTTP/2 has its own, per stream).
    pub fn new(mut inner: tokio_rustls::server::TlsStream<HeadDeadline>) -> Self {
        let (_, conn) = inner.get_ref();
        let alpn = match conn.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            Some(b"http/1.1") => Some(ALPN::H1),
            _ => None,
        };
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or_default();
        // Verified by the handshake: a client certificate is only accepted
        // from the trusted-peer CA.
        let peer_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let digest = Arc::new(SslDigest::new(cipher, version, None, None, peer_cert));
        if alpn == Some(ALPN::H2) {
            inner.get_mut().0.serve_forever();
        }
        let reply = inner.get_mut().0.take_parser_reply();
        TlsStream {
            inner,
            digest,
            alpn,
            reply,
        }
    }

    pub fn head(&self) -> &HeadDeadline {
        self.inner.get_ref().0
    }
}

/// Whether this request's connection is TLS, and whether its client proved
/// to be a trusted peer with a certificate.
pub fn of_session(digest: Option<&pingora::protocols::Digest>) -> (bool, bool) {
    match digest.and_then(|d| d.ssl_digest.as_ref()) {
        Some(d) => (true, !d.cert_digest.is_empty()),
        None => (false, false),
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            // A client that closes without close_notify (most do, browsers
            // and wrk among them) has closed the connection, as over plain
            // TCP: HTTP's own framing says whether a message was cut short.
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

crate::edge::write_with_parser_reply!(TlsStream);

#[async_trait::async_trait]
impl Shutdown for TlsStream {
    async fn shutdown(&mut self) {
        // close_notify, then the TCP shutdown; errors mean the peer is gone.
        let _ = AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for TlsStream {
    fn id(&self) -> UniqueIDType {
        self.head().id()
    }
}

impl Ssl for TlsStream {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.digest.clone())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl GetTimingDigest for TlsStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.head().get_timing_digest()
    }
}

impl GetProxyDigest for TlsStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.head().get_proxy_digest()
    }
}

impl GetSocketDigest for TlsStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.head().get_socket_digest()
    }
}

impl Peek for TlsStream {}

/// Counts and logs (at debug: scanners and wrong names are routine) a
/// failed handshake. A connection closed before it sent anything (a load
/// balancer's TCP probe) is no handshake and is not counted.
pub fn handshake_failed(peer: Option<std::net::SocketAddr>, e: &std::io::Error, silent: bool) {
    if silent {
        tracing::debug!(?peer, "TLS connection closed before a ClientHello: {e}");
        return;
    }
    let n = HANDSHAKE_ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
    // The first, then every power of two: visible, never a flood.
    if n.is_power_of_two() {
        tracing::info!(?peer, count = n, "TLS handshake failed: {e}");
    } else {
        tracing::debug!(?peer, count = n, "TLS handshake failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).expect("rcgen");
        let der = rustls::pki_types::PrivateKeyDer::try_from(c.key_pair.serialize_der())
            .expect("key der");
        let signing = rustls::crypto::ring::sign::any_supported_type(&der).expect("signing key");
        Arc::new(CertifiedKey::new(vec![c.cert.der().clone()], signing))
    }

    #[test]
    fn sni_prefers_exact_then_one_label_wildcard_then_default() {
        let (exact, wild, default) = (key(), key(), key());
        let r = SniResolver {
            exact: HashMap::from([("api.example.com".to_owned(), exact.clone())]),
            wildcard: HashMap::from([("example.com".to_owned(), wild.clone())]),
            default: Some(default.clone()),
        };
        let is =
            |name, k: &Arc<CertifiedKey>| Arc::ptr_eq(&r.lookup(name).expect("a certificate"), k);
        assert!(is(Some("api.example.com"), &exact));
        assert!(is(Some("www.example.com"), &wild));
        assert!(
            is(Some("a.b.example.com"), &default),
            "a wildcard covers one label"
        );
        assert!(is(Some("example.com"), &default));
        assert!(is(None, &default), "no SNI: the default");
        let strict = SniResolver { default: None, ..r };
        assert!(
            strict.lookup(Some("other.org")).is_none(),
            "no default: no certificate"
        );
    }
}
