//! JWT verification for routes with `jwt = "<name>"` (request path step 3).
//!
//! A [`Verifier`] is built once per `[jwt.<name>]` table when a config is
//! loaded: keys are parsed and checked then, so a bad key fails the load, not a
//! request. [`Verifier::verify`] checks a compact JWS: the header's `alg` must be
//! one of the configured algorithms (`none` never is), the key is chosen by
//! `kid` for a JWKS and must be of the algorithm's family and curve (so an RSA
//! public key can never serve as an HMAC secret), then the signature, then
//! `exp` (required), `nbf`, `iss` and `aud`, all with the configured leeway.
//! The time is an argument so tests can pin it to the second.
//!
//! This module knows nothing of HTTP beyond parsing the `Authorization` value;
//! the gateway turns a [`JwtError`] into `401 unauthorized`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use unitgate_config::{JwtAlgorithm, JwtVerifier as VerifierConfig};

mod keys;
#[cfg(test)]
mod test_keys;
#[cfg(test)]
mod tests;

use keys::{Keys, Material};

/// Longer tokens are refused before any decoding (a header line this long is
/// an attack or a mistake, not a credential).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// One `[jwt.<name>]` verifier with its keys parsed. Immutable; shared by all
/// requests of a config snapshot.
#[derive(Debug)]
pub struct Verifier {
    algorithms: Vec<JwtAlgorithm>,
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: f64,
    /// (claim, lowercase upstream header).
    forward_claims: Vec<(String, String)>,
}

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(Map<String, Value>);

/// Why a request's token was refused. Every variant means `401 unauthorized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// No bearer token in the request (never returned by [`Verifier::verify`]).
    Missing,
    /// Not three base64url segments of a JSON header and JSON object claims,
    /// no numeric `exp`, or a `crit` header this verifier cannot honour.
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// The header's `alg` is not one of the configured algorithms (or is `none`).
    AlgorithmNotAllowed,
    /// No key for the token's `kid`, or the key cannot verify the token's `alg`.
    UnknownKey,
}

impl JwtError {
    /// Short human text for the 401 body; names no key or claim value.
    pub fn describe(&self) -> &'static str {
        match self {
            JwtError::Missing => "bearer token required",
            JwtError::Malformed => "malformed token",
            JwtError::BadSignature => "invalid token signature",
            JwtError::Expired => "token expired",
            JwtError::NotYetValid => "token not yet valid",
            JwtError::WrongIssuer => "token issuer not accepted",
            JwtError::WrongAudience => "token audience not accepted",
            JwtError::AlgorithmNotAllowed => "token algorithm not allowed",
            JwtError::UnknownKey => "token signing key not known",
        }
    }
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl std::error::Error for JwtError {}

impl Claims {
    /// A claim as text: strings as-is, integers in decimal; `None` for other
    /// types and absent claims. This is what the `jwt:<claim>` key source reads.
    pub fn get_str(&self, claim: &str) -> Option<String> {
        match self.0.get(claim)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        }
    }

    /// A claim's JSON value.
    pub fn get(&self, claim: &str) -> Option<&Value> {
        self.0.get(claim)
    }
}

impl Verifier {
    /// Parses the keys now (PEM: RSA, EC P-256/P-384, Ed25519; a JWKS whose
    /// keys are matched by `kid`; an HMAC secret). The error names the verifier
    /// (`jwt.<name>`) and what is wrong with its key.
    pub fn new(cfg: &VerifierConfig) -> Result<Verifier, String> {
        let keys =
            Keys::new(&cfg.key, &cfg.algorithms).map_err(|e| format!("jwt.{}: {e}", cfg.name))?;
        Ok(Verifier {
            algorithms: cfg.algorithms.clone(),
            keys,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway_secs: cfg.leeway.as_secs_f64(),
            forward_claims: cfg.forward_claims.clone(),
        })
    }

    /// Verifies a compact JWS at `now_unix` (seconds since the epoch). `Ok`
    /// holds the verified claims. Never panics, whatever `token` holds.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header = json_object(header_b64)?;
        // RFC 7515 4.1.11: extensions listed in `crit` must be understood; we
        // understand none, so such a token cannot be verified as its issuer meant.
        if header.contains_key("crit") {
            return Err(JwtError::Malformed);
        }
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.as_str(),
            _ => return Err(JwtError::Malformed),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(JwtError::Malformed),
        };
        // `none` and every name we do not support fall out here.
        let alg = self
            .algorithms
            .iter()
            .copied()
            .find(|a| a.as_str() == alg)
            .ok_or(JwtError::AlgorithmNotAllowed)?;
        let key = self.keys.select(kid, alg)?;

        let payload = b64(payload_b64)?;
        let signature = b64(signature_b64)?;
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        let valid = match &key.material {
            Material::Hmac(hmac) => hmac.verify(alg, signed.as_bytes(), &signature),
            // jsonwebtoken's verifiers also refuse a key of another family
            // than `alg` (an `Err` here), on top of `select`'s check.
            Material::Public(decoding) => matches!(
                jsonwebtoken::crypto::verify(
                    signature_b64,
                    signed.as_bytes(),
                    decoding,
                    jwt_algorithm(alg),
                ),
                Ok(true)
            ),
        };
        if !valid {
            return Err(JwtError::BadSignature);
        }

        let claims: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)?;
        self.check_claims(&claims, now_unix)?;
        Ok(Claims(claims))
    }

    /// `exp` (required), `nbf`, `iss`, `aud`, for a token whose signature held.
    fn check_claims(&self, claims: &Map<String, Value>, now_unix: u64) -> Result<(), JwtError> {
        // Unix seconds fit an f64 exactly; `exp`/`nbf` may be fractional (RFC 7519 2).
        let now = now_unix as f64;
        let exp = numeric_date(claims, "exp")?.ok_or(JwtError::Malformed)?;
        if now >= exp + self.leeway_secs {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")? {
            if now + self.leeway_secs < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(issuer) = &self.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == issuer => {}
                _ => return Err(JwtError::WrongIssuer),
            }
        }
        if let Some(audience) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => {
                    auds.iter().any(|a| a.as_str() == Some(audience.as_str()))
                }
                _ => false,
            };
            if !ok {
                return Err(JwtError::WrongAudience);
            }
        }
        Ok(())
    }

    /// Headers to set upstream: (lowercase header name, claim value) for each
    /// `forward_claims` entry whose claim is present. Strings as-is, numbers and
    /// booleans as text; other JSON types, and values that are not valid header
    /// values (control characters), are left out. The gateway should remove
    /// these headers from the client's request first, so that a client cannot
    /// supply one a token lacks.
    pub fn forwarded(&self, claims: &Claims) -> Vec<(String, String)> {
        self.forward_claims
            .iter()
            .filter_map(|(claim, header)| {
                let value = match claims.0.get(claim)? {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                http::HeaderValue::from_str(&value).ok()?;
                Some((header.clone(), value))
            })
            .collect()
    }
}

/// The bearer token of an `Authorization` header value (`Bearer <token>`, the
/// scheme case-insensitive), if any.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let value = header_value.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches([' ', '\t']);
    // A byte scan: a char pattern would decode the whole token as UTF-8.
    if token.is_empty() || token.bytes().any(|b| b == b' ' || b == b'\t') {
        return None;
    }
    Some(token)
}

fn b64(segment: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed)
}

fn json_object(segment: &str) -> Result<Map<String, Value>, JwtError> {
    serde_json::from_slice(&b64(segment)?).map_err(|_| JwtError::Malformed)
}

/// A NumericDate claim: `Ok(None)` when absent, `Malformed` when not a number.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(JwtError::Malformed),
        Some(_) => Err(JwtError::Malformed),
    }
}

fn jwt_algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}
