//! `[tls]`, `gateway.listen_tls` and the upstream TLS keys of a service:
//! real certificate files, generated per test.

use std::path::Path;

use super::*;
use crate::raw::RawTls;
use crate::{Protocol, TlsVersion};

/// A self-signed certificate for `names` written as `<stem>.pem` / `<stem>.key`.
fn write_pair(dir: &Path, stem: &str, names: &[&str]) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
    std::fs::write(dir.join(format!("{stem}.pem")), c.cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{stem}.key")), c.key_pair.serialize_pem()).expect("write key");
}

fn with_tls(text: &str) -> RawConfig {
    let mut raw = minimal();
    raw.gateway.listen_tls = vec!["127.0.0.1:8443".into()];
    raw.tls = Some(from_toml::<RawTls>(text));
    raw
}

fn check_in(dir: &Path, raw: &RawConfig) -> Result<Config, ConfigErrors> {
    validate(raw, dir)
}

#[test]
fn certificates_are_read_matched_and_dated() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path(), "api", &["api.example.com"]);
    write_pair(dir.path(), "any", &["localhost"]);
    let raw = with_tls(
        r#"min_version = "1.3"
[[certificates]]
cert_file = "api.pem"
key_file = "api.key"
hosts = ["API.example.com", "*.example.com"]
[[certificates]]
cert_file = "any.pem"
key_file = "any.key"
"#,
    );
    let c = check_in(dir.path(), &raw).expect("valid");
    let tls = c.tls.expect("tls");
    assert_eq!(tls.min_version, TlsVersion::V1_3);
    assert_eq!(
        tls.certificates[0].hosts,
        ["api.example.com", "*.example.com"]
    );
    assert!(tls.certificates[1].hosts.is_empty(), "the default entry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        tls.certificates[0].not_after > now,
        "rcgen certificates are valid for years"
    );
    assert_eq!(c.gateway.listen_tls.len(), 1);
}

#[test]
fn unreadable_and_mismatched_pairs_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path(), "a", &["a.example.com"]);
    write_pair(dir.path(), "b", &["b.example.com"]);
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").expect("write");
    let raw = with_tls(
        r#"[[certificates]]
cert_file = "a.pem"
key_file = "b.key"
hosts = ["a.example.com"]
[[certificates]]
cert_file = "missing.pem"
key_file = "a.key"
hosts = ["c.example.com"]
[[certificates]]
cert_file = "junk.pem"
key_file = "a.key"
hosts = ["d.example.com"]
"#,
    );
    let errs = check_in(dir.path(), &raw).expect_err("invalid");
    assert_errors(
        errs,
        &[
            (
                "tls.certificates[0].key_file",
                "b.key does not match the certificate in",
            ),
            ("tls.certificates[1].cert_file", "missing.pem"),
            (
                "tls.certificates[2].cert_file",
                "junk.pem: no PEM certificate",
            ),
        ],
    );
}

#[test]
fn host_names_defaults_and_listeners_are_checked_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path(), "a", &["a"]);
    let raw = with_tls(
        r#"min_version = "1.1"
[[certificates]]
cert_file = "a.pem"
key_file = "a.key"
hosts = ["a.example.com", "bad name", "*."]
[[certificates]]
cert_file = "a.pem"
key_file = "a.key"
hosts = ["A.example.com"]
[[certificates]]
cert_file = "a.pem"
key_file = "a.key"
[[certificates]]
cert_file = "a.pem"
key_file = "a.key"
"#,
    );
    let errs = check_in(dir.path(), &raw).expect_err("invalid");
    assert_errors(
        errs,
        &[
            ("tls.min_version", "1.1"),
            ("tls.certificates[0].hosts[1]", "not a host name"),
            ("tls.certificates[0].hosts[2]", "not a host name"),
            ("tls.certificates[1].hosts[0]", "named by two certificates"),
            ("tls.certificates[3].hosts", "a second default certificate"),
        ],
    );

    let mut raw = minimal();
    raw.gateway.listen_tls = vec!["127.0.0.1:8443".into(), "127.0.0.1:8080".into()];
    assert_errors(
        invalid(&raw),
        &[
            ("gateway.listen_tls[1]", "duplicate address"),
            ("gateway.listen_tls", "need a certificate"),
        ],
    );
}

#[test]
fn upstream_protocols_and_tls_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path(), "ca", &["ca"]);
    let mut raw = minimal();
    raw.services[0].protocol = "h2".into();
    raw.services[0].ca_file = "ca.pem".into();
    let c = check_in(dir.path(), &raw).expect("valid");
    let s = &c.services[0];
    assert_eq!(s.protocol, Protocol::H2);
    let tls = s.tls.as_ref().expect("h2 implies TLS");
    assert_eq!(tls.ca.as_ref().map(Vec::len), Some(1));
    assert_eq!(s.idle_timeout, std::time::Duration::from_secs(300));

    let mut raw = minimal();
    raw.services[0].protocol = "h2c".into();
    assert!(valid(&raw).services[0].tls.is_none());
    raw.services[0].tls = true;
    assert_only_error(&raw, "services[0].tls", "cleartext");

    let mut raw = minimal();
    raw.services[0].protocol = "h3".into();
    raw.services[0].tls_sni = "api.internal".into();
    assert_errors(
        invalid(&raw),
        &[
            ("services[0].protocol", "h3"),
            ("services[0].tls_sni", "only applies with tls = true"),
        ],
    );
}
