//! Verification keys: parsed and checked once, at load, from an HMAC secret, a
//! PEM public key or a JWKS. Each key records the one family (and curve) it can
//! verify, so the choice of key can never turn a public key into an HMAC secret
//! or verify with the wrong curve.

use super::{jwt_algorithm, JwtError};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{Map, Value};
use sha2::{Sha256, Sha384, Sha512};
use unitgate_config::{JwtAlgorithm, JwtKey};

/// Weaker RSA keys are refused at load.
const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    Hmac,
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind can verify `alg`.
    pub(super) fn serves(self, alg: JwtAlgorithm) -> bool {
        use JwtAlgorithm as A;
        match self {
            KeyKind::Hmac => matches!(alg, A::HS256 | A::HS384 | A::HS512),
            KeyKind::Rsa => matches!(alg, A::RS256 | A::RS384 | A::RS512),
            KeyKind::P256 => alg == A::ES256,
            KeyKind::P384 => alg == A::ES384,
            KeyKind::Ed25519 => alg == A::EdDSA,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            KeyKind::Hmac => "an HMAC secret",
            KeyKind::Rsa => "an RSA key",
            KeyKind::P256 => "an EC P-256 key",
            KeyKind::P384 => "an EC P-384 key",
            KeyKind::Ed25519 => "an Ed25519 key",
        }
    }
}

#[derive(Debug)]
pub(super) struct Key {
    pub(super) kid: Option<String>,
    pub(super) kind: KeyKind,
    /// A JWK's `alg`: the key then verifies that algorithm only.
    pub(super) alg: Option<JwtAlgorithm>,
    pub(super) material: Material,
}

/// What a key verifies with.
#[derive(Debug)]
pub(super) enum Material {
    /// An HMAC secret's keyed states, hashed once at load: a request clones
    /// one instead of hashing the key's padded blocks again.
    Hmac(Box<HmacKeys>),
    /// A public key, verified through jsonwebtoken.
    Public(DecodingKey),
}

/// HMAC-SHA-256/384/512 states keyed with one secret.
pub(super) struct HmacKeys {
    sha256: Hmac<Sha256>,
    sha384: Hmac<Sha384>,
    sha512: Hmac<Sha512>,
}

impl std::fmt::Debug for HmacKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKeys(..)")
    }
}

impl HmacKeys {
    fn new(secret: &[u8]) -> HmacKeys {
        // HMAC takes a key of any length (longer ones are hashed first).
        HmacKeys {
            sha256: Hmac::new_from_slice(secret).expect("HMAC accepts any key length"),
            sha384: Hmac::new_from_slice(secret).expect("HMAC accepts any key length"),
            sha512: Hmac::new_from_slice(secret).expect("HMAC accepts any key length"),
        }
    }

    /// Whether `signature` is the MAC of `signed` under `alg`, compared in
    /// constant time. `false` for an algorithm other than `HS*`, which
    /// `Keys::select` never pairs with an HMAC key.
    pub(super) fn verify(&self, alg: JwtAlgorithm, signed: &[u8], signature: &[u8]) -> bool {
        fn check<M: Mac + Clone>(mac: &M, signed: &[u8], signature: &[u8]) -> bool {
            let mut mac = mac.clone();
            mac.update(signed);
            mac.verify_slice(signature).is_ok()
        }
        match alg {
            JwtAlgorithm::HS256 => check(&self.sha256, signed, signature),
            JwtAlgorithm::HS384 => check(&self.sha384, signed, signature),
            JwtAlgorithm::HS512 => check(&self.sha512, signed, signature),
            _ => false,
        }
    }
}

impl Key {
    fn serves(&self, alg: JwtAlgorithm) -> bool {
        self.kind.serves(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Debug)]
pub(super) enum Keys {
    /// A secret or a PEM public key: used whatever the token's `kid`.
    One(Key),
    /// The usable keys of a JWKS (at least one; `kid`s unique).
    Set(Vec<Key>),
}

impl Keys {
    pub(super) fn new(key: &JwtKey, algorithms: &[JwtAlgorithm]) -> Result<Keys, String> {
        let keys = match key {
            JwtKey::Secret(secret) => Keys::One(Key {
                kid: None,
                kind: KeyKind::Hmac,
                alg: None,
                material: Material::Hmac(Box::new(HmacKeys::new(secret))),
            }),
            JwtKey::PublicKeyPem(pem) => {
                Keys::One(pem_key(pem).map_err(|e| format!("public_key_file: {e}"))?)
            }
            JwtKey::Jwks(json) => Keys::Set(jwks(json, algorithms)?),
        };
        if let Keys::One(k) = &keys {
            if !algorithms.iter().any(|a| k.serves(*a)) {
                return Err(format!(
                    "the key is {} and verifies none of the algorithms [{}]",
                    k.kind.describe(),
                    names(algorithms)
                ));
            }
        }
        Ok(keys)
    }

    /// The key for a token with this `kid` and (allowed) `alg`. Without a `kid`
    /// a JWKS must hold exactly one usable key.
    pub(super) fn select(&self, kid: Option<&str>, alg: JwtAlgorithm) -> Result<&Key, JwtError> {
        let key = match (self, kid) {
            (Keys::One(key), _) => key,
            (Keys::Set(keys), Some(kid)) => keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(JwtError::UnknownKey)?,
            (Keys::Set(keys), None) => match keys.as_slice() {
                [only] => only,
                _ => return Err(JwtError::UnknownKey),
            },
        };
        if key.serves(alg) {
            Ok(key)
        } else {
            Err(JwtError::UnknownKey)
        }
    }
}

fn names(algorithms: &[JwtAlgorithm]) -> String {
    let names: Vec<&str> = algorithms.iter().map(|a| a.as_str()).collect();
    names.join(", ")
}

/// A PEM `PUBLIC KEY` (SPKI: RSA, EC P-256/P-384, Ed25519) or `RSA PUBLIC KEY`.
fn pem_key(pem: &[u8]) -> Result<Key, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_string())?;
    let label = text
        .split_once("-----BEGIN ")
        .and_then(|(_, rest)| rest.split_once("-----"))
        .map(|(label, _)| label)
        .ok_or("no PEM block (-----BEGIN PUBLIC KEY-----)")?;
    match label {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        "CERTIFICATE" => {
            return Err("holds a certificate; give its public key \
                        (openssl x509 -pubkey -noout -in cert.pem)"
                .into())
        }
        l if l.ends_with("PRIVATE KEY") => {
            return Err("holds a private key; give the public key \
                        (openssl pkey -pubout -in key.pem)"
                .into())
        }
        l => return Err(format!("unsupported PEM block {l:?}; expected PUBLIC KEY")),
    }
    let key = |kind, decoding| Key {
        kid: None,
        kind,
        alg: None,
        material: Material::Public(decoding),
    };
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        check_rsa(&k)?;
        return Ok(key(KeyKind::Rsa, k));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok(key(ec_curve(&k)?, k));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        check_ed25519(&k)?;
        return Ok(key(KeyKind::Ed25519, k));
    }
    Err("not an RSA, EC (P-256, P-384) or Ed25519 public key".into())
}

/// Whether `key` can build a verifier for `alg`: jsonwebtoken parses EC and
/// Ed25519 keys when it builds one, so a bad key shows here as an `Err`.
fn probe(key: &DecodingKey, alg: Algorithm) -> bool {
    jsonwebtoken::crypto::verify("", b"", key, alg).is_ok()
}

fn ec_curve(key: &DecodingKey) -> Result<KeyKind, String> {
    if probe(key, Algorithm::ES256) {
        Ok(KeyKind::P256)
    } else if probe(key, Algorithm::ES384) {
        Ok(KeyKind::P384)
    } else {
        Err("not a valid EC P-256 or P-384 public key".into())
    }
}

fn check_ed25519(key: &DecodingKey) -> Result<(), String> {
    // jsonwebtoken slices the first 32 bytes without a length check.
    let ok = matches!(key.kind(), DecodingKeyKind::SecretOrDer(b) if b.len() == 32);
    if ok && probe(key, Algorithm::EdDSA) {
        Ok(())
    } else {
        Err("not a valid Ed25519 public key (32 bytes)".into())
    }
}

/// jsonwebtoken parses RSA keys only per signature check; parse it now.
fn check_rsa(key: &DecodingKey) -> Result<(), String> {
    let public = match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => RsaPublicKey::from_pkcs1_der(der)
            .map_err(|e| format!("not a valid RSA public key: {e}"))?,
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
                .map_err(|e| format!("not a valid RSA public key: {e}"))?
        }
    };
    let bits = public.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA key of {bits} bits; at least {MIN_RSA_BITS} required"
        ));
    }
    Ok(())
}

/// The keys of a JWKS (`{"keys": [...]}`) that can verify one of `algorithms`.
/// Keys for encryption (`use` other than `sig`), of types or curves we do not
/// support, or pinned by `alg` to an algorithm not configured are skipped;
/// a supported key with bad parameters fails the load.
fn jwks(json: &[u8], algorithms: &[JwtAlgorithm]) -> Result<Vec<Key>, String> {
    let set: Map<String, Value> =
        serde_json::from_slice(json).map_err(|e| format!("jwks_file: not a JSON object: {e}"))?;
    let Some(Value::Array(entries)) = set.get("keys") else {
        return Err("jwks_file: no \"keys\" array".into());
    };
    let mut keys: Vec<Key> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Value::Object(jwk) = entry else {
            return Err(format!("jwks_file: keys[{i}] is not an object"));
        };
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(format!("jwks_file: keys[{i}].kid is not a string")),
        };
        let at = match &kid {
            Some(kid) => format!("jwks_file: key {kid:?}"),
            None => format!("jwks_file: keys[{i}]"),
        };
        let Some(key) = jwk_key(jwk).map_err(|e| format!("{at}: {e}"))? else {
            continue;
        };
        if !algorithms.iter().any(|a| key.serves(*a)) {
            continue;
        }
        if kid.is_some() && keys.iter().any(|k| k.kid == kid) {
            return Err(format!("{at}: kid appears twice"));
        }
        keys.push(Key { kid, ..key });
    }
    if keys.is_empty() {
        return Err(format!(
            "jwks_file: no RSA, EC (P-256, P-384) or Ed25519 signing key for the algorithms [{}]",
            names(algorithms)
        ));
    }
    Ok(keys)
}

/// One JWK as a key (its `kid` left unset); `Ok(None)` for a key to skip.
fn jwk_key(jwk: &Map<String, Value>) -> Result<Option<Key>, String> {
    let field = |name: &str| match jwk.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(format!("{name} is not a string")),
        None => Err(format!("{name} is missing")),
    };
    if jwk.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return Ok(None);
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => {
            match JwtAlgorithm::ALL.into_iter().find(|a| a.as_str() == name) {
                Some(alg) => Some(alg),
                None => return Ok(None),
            }
        }
        Some(_) => return Err("alg is not a string".into()),
    };
    let (kind, decoding) = match field("kty")? {
        "RSA" => {
            let k = DecodingKey::from_rsa_components(field("n")?, field("e")?)
                .map_err(|e| format!("n or e is not base64url: {e}"))?;
            check_rsa(&k)?;
            (KeyKind::Rsa, k)
        }
        "EC" => {
            let kind = match field("crv")? {
                "P-256" => KeyKind::P256,
                "P-384" => KeyKind::P384,
                _ => return Ok(None),
            };
            let k = DecodingKey::from_ec_components(field("x")?, field("y")?)
                .map_err(|e| format!("x or y is not base64url: {e}"))?;
            let alg = if kind == KeyKind::P256 {
                JwtAlgorithm::ES256
            } else {
                JwtAlgorithm::ES384
            };
            if !probe(&k, jwt_algorithm(alg)) {
                return Err(format!("x, y are not a point on {}", field("crv")?));
            }
            (kind, k)
        }
        "OKP" => {
            if field("crv")? != "Ed25519" {
                return Ok(None);
            }
            let k = DecodingKey::from_ed_components(field("x")?)
                .map_err(|e| format!("x is not base64url: {e}"))?;
            check_ed25519(&k)?;
            (KeyKind::Ed25519, k)
        }
        _ => return Ok(None),
    };
    Ok(Some(Key {
        kid: None,
        kind,
        alg,
        material: Material::Public(decoding),
    }))
}
