//! Small checks shared by the section validators. Each returns `Err(message)`
//! and leaves the path to the caller.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::errors::Errors;

/// `base.key`, quoting the key TOML-style when it is not a bare key.
pub(crate) fn key_path(base: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        format!("{base}.{key}")
    } else {
        format!("{base}.{key:?}")
    }
}

/// A name of a unit, service or route: it appears in URLs of the admin API, in
/// `x-unit-*` headers and in metric labels, so keep it to a safe alphabet.
pub(crate) fn name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is required".to_owned());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "invalid name {s:?}: use letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// RFC 7230 `token` (header names, methods, cookie names).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header name, returned lowercased.
pub(crate) fn header_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("header name must not be empty".to_owned());
    }
    if !is_token(s) {
        return Err(format!(
            "invalid header name {s:?}: only RFC 7230 token characters"
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// A header value: visible ASCII, space and tab (no CR/LF, no control bytes).
pub(crate) fn header_value(s: &str) -> Result<(), String> {
    if s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        Ok(())
    } else {
        Err(format!(
            "invalid header value {s:?}: only visible ASCII, space and tab are allowed"
        ))
    }
}

/// `IP:port` (IPv6 as `[::1]:80`); a host name gets its own message.
pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some((host, port)) = s.rsplit_once(':') {
        if port.parse::<u16>().is_ok() && !host.is_empty() && host.parse::<IpAddr>().is_err() {
            return Err(format!(
                "invalid address {s:?}: host names are not supported, give IP:port"
            ));
        }
    }
    Err(format!(
        "invalid address {s:?}: expected IP:port, e.g. 127.0.0.1:8080"
    ))
}

/// An instance address: `IP:port`, or `host:port` with a valid DNS name.
pub(crate) enum InstanceAddr {
    Ip(SocketAddr),
    Named(String, u16),
}

pub(crate) fn instance_addr(s: &str) -> Result<InstanceAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(InstanceAddr::Ip(a));
    }
    let bad = || {
        format!("invalid address {s:?}: expected IP:port or host:port, e.g. 10.0.0.5:8080 or orders.internal:8080")
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.parse::<IpAddr>().is_err()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid || port == 0 {
        return Err(bad());
    }
    Ok(InstanceAddr::Named(host, port))
}

/// A CIDR block; a bare IP is a single host (/32 or /128).
pub(crate) fn cidr(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    Err(format!(
        "invalid CIDR {s:?}: expected e.g. 10.0.0.0/8 or a single IP"
    ))
}

/// One of the `choices` (exact match), as its value.
pub(crate) fn choice<T: Copy>(s: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            format!("invalid value {s:?}: expected one of {}", names.join(", "))
        })
}

/// A duration in milliseconds that must be at least 1 ms.
pub(crate) fn millis(errs: &mut Errors, path: impl Into<String>, ms: u64) -> Duration {
    if ms == 0 {
        errs.push(path, "must be at least 1");
    }
    Duration::from_millis(ms)
}

/// A count that must be at least 1.
pub(crate) fn at_least_one(errs: &mut Errors, path: impl Into<String>, n: u64) {
    if n == 0 {
        errs.push(path, "must be at least 1");
    }
}

/// Reads a file named in the config; relative paths resolve against `base_dir`.
pub(crate) fn read_file(base_dir: &Path, file: &str) -> Result<Vec<u8>, String> {
    if file.is_empty() {
        return Err("file name must not be empty".to_owned());
    }
    let path = base_dir.join(file);
    std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Reads `VAR` for a `<field>_env = "VAR"` key; unset, empty or non-UTF-8 is an error.
pub(crate) fn env_var(var: &str) -> Result<String, String> {
    if var.is_empty() {
        return Err("environment variable name must not be empty".to_owned());
    }
    match std::env::var(var) {
        Ok(v) if v.is_empty() => Err(format!("environment variable {var:?} is empty")),
        Ok(v) => Ok(v),
        Err(std::env::VarError::NotPresent) => {
            Err(format!("environment variable {var:?} is not set"))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("environment variable {var:?} is not valid UTF-8"))
        }
    }
}

/// Resolves a secret given as `<field> = "value"` or `<field>_env = "VAR"` under
/// `base` (e.g. `admin` + `token`). Returns the value and the path it came from.
/// `None` on error or when neither key is given (an error only if `required`).
pub(crate) fn secret(
    errs: &mut Errors,
    base: &str,
    field: &str,
    value: Option<&String>,
    env: Option<&String>,
    required: bool,
) -> Option<(String, String)> {
    let value_path = format!("{base}.{field}");
    let env_path = format!("{base}.{field}_env");
    match (value, env) {
        (Some(_), Some(_)) => {
            errs.push(
                &value_path,
                format!("give {field} or {field}_env, not both"),
            );
            None
        }
        (Some(v), None) if v.is_empty() => {
            errs.push(&value_path, "must not be empty");
            None
        }
        (Some(v), None) => Some((v.clone(), value_path)),
        (None, Some(var)) => errs.check(&env_path, env_var(var)).map(|v| (v, env_path)),
        (None, None) => {
            if required {
                errs.push(&value_path, format!("{field} or {field}_env is required"));
            }
            None
        }
    }
}
