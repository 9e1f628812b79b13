//! `[tls]` and the TLS keys of `[[services]]`: every file named is read and
//! parsed here, each certificate matched to its key, so a running gateway
//! never meets a certificate it cannot serve.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use super::check;
use crate::errors::Errors;
use crate::raw::{RawCertificate, RawService, RawTls};
use crate::typed::{Certificate, Protocol, Tls, TlsVersion, UpstreamTls};

/// `[tls]`.
pub(super) fn tls(errs: &mut Errors, t: &RawTls, base_dir: &Path) -> Tls {
    let min_version = errs
        .check(
            "tls.min_version",
            check::choice(
                &t.min_version,
                &[("1.2", TlsVersion::V1_2), ("1.3", TlsVersion::V1_3)],
            ),
        )
        .unwrap_or(TlsVersion::V1_2);
    let mut certificates: Vec<Certificate> = Vec::new();
    let mut defaults = 0;
    for (i, c) in t.certificates.iter().enumerate() {
        let base = format!("tls.certificates[{i}]");
        let hosts = hosts(errs, &base, c, &certificates);
        if c.hosts.is_empty() {
            defaults += 1;
            if defaults == 2 {
                errs.push(
                    format!("{base}.hosts"),
                    "a second default certificate (hosts = []): only one entry may have no hosts",
                );
            }
        }
        if let Some((key, not_after)) = pair(errs, &base, c, base_dir) {
            certificates.push(Certificate {
                cert_file: c.cert_file.clone(),
                key_file: c.key_file.clone(),
                hosts,
                key,
                not_after,
            });
        }
    }
    let trusted_peer_ca = (!t.trusted_peer_ca.is_empty())
        .then(|| ca(errs, "tls.trusted_peer_ca", &t.trusted_peer_ca, base_dir))
        .flatten();
    Tls {
        min_version,
        certificates,
        trusted_peer_ca,
    }
}

/// The entry's SNI names, lowercased: each a host name or `*.` and one.
/// A name another entry has already claimed is an error.
fn hosts(errs: &mut Errors, base: &str, c: &RawCertificate, seen: &[Certificate]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (j, h) in c.hosts.iter().enumerate() {
        let path = format!("{base}.hosts[{j}]");
        let name = h.to_ascii_lowercase();
        let bare = name.strip_prefix("*.").unwrap_or(&name);
        let valid = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            errs.push(
                path,
                format!("{h:?} is not a host name or a wildcard \"*.name\""),
            );
            continue;
        }
        if out.contains(&name) || seen.iter().any(|s| s.hosts.contains(&name)) {
            errs.push(path, format!("{h:?} is named by two certificates"));
            continue;
        }
        out.push(name);
    }
    out
}

/// Reads, parses and matches one cert/key pair; the leaf's notAfter.
fn pair(
    errs: &mut Errors,
    base: &str,
    c: &RawCertificate,
    base_dir: &Path,
) -> Option<(Arc<CertifiedKey>, i64)> {
    let cert_path = format!("{base}.cert_file");
    let key_path = format!("{base}.key_file");
    let cert_pem = errs.check(&cert_path, check::read_file(base_dir, &c.cert_file));
    let key_pem = errs.check(&key_path, check::read_file(base_dir, &c.key_file));
    let (cert_pem, key_pem) = (cert_pem?, key_pem?);
    let cert_name = base_dir.join(&c.cert_file).display().to_string();
    let key_name = base_dir.join(&c.key_file).display().to_string();
    let chain = errs.check(&cert_path, pem_certs(&cert_pem, &cert_name));
    let key = errs.check(&key_path, private_key(&key_pem, &key_name));
    let (chain, key) = (chain?, key?);
    let not_after = errs.check(&cert_path, not_after(&chain[0], &cert_name))?;
    let certified = CertifiedKey::new(chain, key);
    if let Err(e) = certified.keys_match() {
        errs.push(
            key_path,
            format!("{key_name} does not match the certificate in {cert_name}: {e}"),
        );
        return None;
    }
    Some((Arc::new(certified), not_after))
}

/// Every certificate of a PEM file, in order; at least one.
pub(crate) fn pem_certs(pem: &[u8], name: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{name}: not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{name}: no PEM certificate in it"));
    }
    for (i, c) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| format!("{name}: certificate {} cannot be parsed: {e}", i + 1))?;
    }
    Ok(certs)
}

fn private_key(pem: &[u8], name: &str) -> Result<Arc<dyn rustls::sign::SigningKey>, String> {
    let key = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("{name}: not a PEM key file: {e}"))?
        .ok_or_else(|| format!("{name}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)"))?;
    rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{name}: unsupported private key: {e}"))
}

fn not_after(leaf: &CertificateDer<'_>, name: &str) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("{name}: the certificate cannot be parsed: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// A CA file: its certificates as DER.
fn ca(errs: &mut Errors, path: &str, file: &str, base_dir: &Path) -> Option<Vec<Vec<u8>>> {
    let pem = errs.check(path, check::read_file(base_dir, file))?;
    let name = base_dir.join(file).display().to_string();
    let certs = errs.check(path, pem_certs(&pem, &name))?;
    Some(certs.into_iter().map(|c| c.to_vec()).collect())
}

/// `protocol`, `tls`, `tls_sni`, `ca_file` of a service.
pub(super) fn upstream(
    errs: &mut Errors,
    base: &str,
    s: &RawService,
    base_dir: &Path,
) -> (Protocol, Option<UpstreamTls>) {
    let protocol = errs
        .check(
            format!("{base}.protocol"),
            check::choice(
                &s.protocol,
                &[
                    ("http1", Protocol::Http1),
                    ("h2", Protocol::H2),
                    ("h2c", Protocol::H2c),
                ],
            ),
        )
        .unwrap_or(Protocol::Http1);
    let tls = s.tls || protocol == Protocol::H2;
    if protocol == Protocol::H2c && s.tls {
        errs.push(
            format!("{base}.tls"),
            "protocol \"h2c\" is cleartext HTTP/2: use protocol = \"h2\" for HTTP/2 over TLS",
        );
    }
    if !tls {
        for (key, set) in [
            ("tls_sni", !s.tls_sni.is_empty()),
            ("ca_file", !s.ca_file.is_empty()),
        ] {
            if set {
                errs.push(
                    format!("{base}.{key}"),
                    "only applies with tls = true or protocol = \"h2\"",
                );
            }
        }
        return (protocol, None);
    }
    let ca = (!s.ca_file.is_empty())
        .then(|| ca(errs, &format!("{base}.ca_file"), &s.ca_file, base_dir))
        .flatten();
    let sni = s.tls_sni.to_ascii_lowercase();
    (protocol, Some(UpstreamTls { sni, ca }))
}
