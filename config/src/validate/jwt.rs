//! `[jwt.<name>]`: token verifiers. Key material is read here; parsing PEM and
//! JWKS is the JWT plugin's job.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{check, Cx};
use crate::raw::RawJwt;
use crate::typed::{JwtAlgorithm, JwtKey, JwtVerifier};

pub(super) fn verifiers(cx: &mut Cx<'_>, raw: &BTreeMap<String, RawJwt>) -> Vec<JwtVerifier> {
    raw.iter().map(|(name, j)| verifier(cx, name, j)).collect()
}

fn algorithm(s: &str) -> Result<JwtAlgorithm, String> {
    JwtAlgorithm::ALL
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let names: Vec<&str> = JwtAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
            format!(
                "unknown algorithm {s:?}: expected one of {}",
                names.join(", ")
            )
        })
}

fn verifier(cx: &mut Cx<'_>, name: &str, j: &RawJwt) -> JwtVerifier {
    let base = check::key_path("jwt", name);
    if let Err(e) = check::name(name) {
        cx.errs.push(&base, e);
    }

    let mut algorithms = Vec::new();
    if j.algorithms.is_empty() {
        cx.errs.push(
            format!("{base}.algorithms"),
            "at least one algorithm is required",
        );
    }
    for (i, s) in j.algorithms.iter().enumerate() {
        let path = format!("{base}.algorithms[{i}]");
        if let Some(a) = cx.errs.check(&path, algorithm(s)) {
            if algorithms.contains(&a) {
                cx.errs
                    .push(path, format!("duplicate algorithm {:?}", a.as_str()));
            } else {
                algorithms.push(a);
            }
        }
    }
    let hmac = algorithms.iter().any(|a| a.is_hmac());
    let asymmetric = algorithms.iter().any(|a| !a.is_hmac());
    if hmac && asymmetric {
        cx.errs.push(
            format!("{base}.algorithms"),
            "HS* (shared secret) and RS*/ES*/EdDSA (public key) cannot share one verifier; \
             define two verifiers",
        );
    }

    let key = key(cx, &base, j, hmac, asymmetric);

    let mut forward_claims = Vec::new();
    for (claim, header) in &j.forward_claims {
        let path = check::key_path(&format!("{base}.forward_claims"), claim);
        if claim.is_empty() {
            cx.errs.push(&path, "claim name must not be empty");
        }
        if let Some(h) = cx.errs.check(&path, check::header_name(header)) {
            if forward_claims.iter().any(|(_, other)| *other == h) {
                cx.errs.push(
                    path,
                    format!("header {h:?} is already used by another claim"),
                );
            } else {
                forward_claims.push((claim.clone(), h));
            }
        }
    }

    JwtVerifier {
        name: name.to_owned(),
        algorithms,
        key: key.unwrap_or(JwtKey::Secret(Vec::new())),
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        leeway: Duration::from_secs(j.leeway_secs),
        forward_claims,
    }
}

/// Exactly one of secret / secret_env / public_key_file / jwks_file, and the
/// kind the algorithms need.
fn key(cx: &mut Cx<'_>, base: &str, j: &RawJwt, hmac: bool, asym: bool) -> Option<JwtKey> {
    let given: Vec<&str> = [
        ("secret", j.secret.is_some()),
        ("secret_env", j.secret_env.is_some()),
        ("public_key_file", j.public_key_file.is_some()),
        ("jwks_file", j.jwks_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    match given.as_slice() {
        [] => {
            cx.errs.push(
                base,
                "a key is required: one of secret, secret_env, public_key_file, jwks_file",
            );
            return None;
        }
        [_] => {}
        many => {
            cx.errs.push(
                base,
                format!(
                    "give exactly one of secret, secret_env, public_key_file, jwks_file (got {})",
                    many.join(", ")
                ),
            );
            return None;
        }
    }
    let is_secret = j.secret.is_some() || j.secret_env.is_some();
    let field = given[0];
    if hmac && !is_secret {
        cx.errs.push(
            format!("{base}.{field}"),
            "HS* algorithms need secret or secret_env",
        );
        return None;
    }
    if asym && is_secret {
        cx.errs.push(
            format!("{base}.{field}"),
            "RS*/ES*/EdDSA algorithms need public_key_file or jwks_file",
        );
        return None;
    }
    if is_secret {
        let s = check::secret(
            &mut cx.errs,
            base,
            "secret",
            j.secret.as_ref(),
            j.secret_env.as_ref(),
            true,
        );
        return s.map(|(s, _)| JwtKey::Secret(s.into_bytes()));
    }
    let (file, make): (&String, fn(Vec<u8>) -> JwtKey) = match (&j.public_key_file, &j.jwks_file) {
        (Some(f), _) => (f, JwtKey::PublicKeyPem),
        (None, Some(f)) => (f, JwtKey::Jwks),
        (None, None) => return None,
    };
    let path = format!("{base}.{field}");
    let bytes = cx.errs.check(&path, check::read_file(cx.base_dir, file))?;
    if bytes.is_empty() {
        cx.errs.push(
            path,
            format!("{} is empty", cx.base_dir.join(file).display()),
        );
        return None;
    }
    Some(make(bytes))
}
