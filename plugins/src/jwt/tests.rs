//! Verification of signed tokens: each algorithm, the claim checks, and the
//! attacks a verifier must refuse (`alg: none`, algorithm confusion).

use super::test_keys::*;
use super::*;
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use serde_json::json;
use std::time::Duration;
use unitgate_config::JwtKey;

mod hostile;
mod jwks;

pub(super) const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"a-test-secret-of-thirty-two-bytes!";

pub(super) fn config(algorithms: &[JwtAlgorithm], key: JwtKey) -> VerifierConfig {
    VerifierConfig {
        name: "main".into(),
        algorithms: algorithms.to_vec(),
        key,
        issuer: None,
        audience: None,
        leeway: Duration::ZERO,
        forward_claims: Vec::new(),
    }
}

pub(super) fn verifier(algorithms: &[JwtAlgorithm], key: JwtKey) -> Verifier {
    match Verifier::new(&config(algorithms, key)) {
        Ok(v) => v,
        Err(e) => panic!("verifier: {e}"),
    }
}

pub(super) fn hs256() -> Verifier {
    verifier(&[JwtAlgorithm::HS256], JwtKey::Secret(SECRET.to_vec()))
}

pub(super) fn pem(s: &str) -> JwtKey {
    JwtKey::PublicKeyPem(s.as_bytes().to_vec())
}

/// Claims valid at `NOW`.
pub(super) fn claims() -> Value {
    json!({"sub": "user-7", "exp": NOW + 60, "iat": NOW - 10})
}

pub(super) fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("encode")
}

pub(super) fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
        None,
        claims,
    )
}

pub(super) fn b64e(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with this exact header and payload text, HMAC-signed with `secret`
/// under `alg` (the header is not consulted).
pub(super) fn hand_signed(header: &str, payload: &str, alg: Algorithm, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64e(header.as_bytes()), b64e(payload.as_bytes()));
    let sig =
        jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), alg)
            .expect("sign");
    format!("{message}.{sig}")
}

fn rsa_private() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa private key")
}

#[test]
fn hmac_tokens_verify() {
    for (alg, ours) in [
        (Algorithm::HS256, JwtAlgorithm::HS256),
        (Algorithm::HS384, JwtAlgorithm::HS384),
        (Algorithm::HS512, JwtAlgorithm::HS512),
    ] {
        let v = verifier(&[ours], JwtKey::Secret(SECRET.to_vec()));
        let token = sign(alg, &EncodingKey::from_secret(SECRET), None, &claims());
        let got = v.verify(&token, NOW).expect("valid token");
        assert_eq!(got.get_str("sub").as_deref(), Some("user-7"), "{alg:?}");
        assert_eq!(got.get_str("exp"), Some((NOW + 60).to_string()));
    }
}

/// The keyed HMAC states built at load agree with jsonwebtoken's signer for
/// secrets shorter and longer than a hash block, and refuse a signature that
/// is truncated, extended, of another HS length, or not base64url.
#[test]
fn hmac_states_keyed_at_load_match_the_signer() {
    let long = vec![0xa5u8; 300];
    for secret in [b"k".as_slice(), SECRET, long.as_slice()] {
        for (alg, ours) in [
            (Algorithm::HS256, JwtAlgorithm::HS256),
            (Algorithm::HS384, JwtAlgorithm::HS384),
            (Algorithm::HS512, JwtAlgorithm::HS512),
        ] {
            let all = [
                JwtAlgorithm::HS256,
                JwtAlgorithm::HS384,
                JwtAlgorithm::HS512,
            ];
            let v = verifier(&all, JwtKey::Secret(secret.to_vec()));
            let token = sign(alg, &EncodingKey::from_secret(secret), None, &claims());
            assert!(
                v.verify(&token, NOW).is_ok(),
                "{alg:?}, {} bytes",
                secret.len()
            );
            // A verifier configured with this algorithm alone verifies it too.
            let only = verifier(&[ours], JwtKey::Secret(secret.to_vec()));
            assert!(only.verify(&token, NOW).is_ok());

            let (unsigned, sig) = token.rsplit_once('.').expect("three parts");
            let raw = URL_SAFE_NO_PAD.decode(sig).expect("base64url");
            let truncated = format!("{unsigned}.{}", b64e(&raw[..raw.len() - 1]));
            let mut longer = raw.clone();
            longer.push(0);
            let extended = format!("{unsigned}.{}", b64e(&longer));
            let mut flipped = raw.clone();
            flipped[0] ^= 1;
            let flipped = format!("{unsigned}.{}", b64e(&flipped));
            for bad in [truncated, extended, flipped] {
                assert_eq!(v.verify(&bad, NOW), Err(JwtError::BadSignature), "{alg:?}");
            }
            assert_eq!(
                v.verify(&format!("{unsigned}.{sig}!"), NOW),
                Err(JwtError::Malformed)
            );
        }
    }
    // An HS256 signature under a header that says HS512 is refused.
    let v = verifier(
        &[JwtAlgorithm::HS256, JwtAlgorithm::HS512],
        JwtKey::Secret(SECRET.to_vec()),
    );
    let hs256 = hs(&claims());
    let (_, sig) = hs256.rsplit_once('.').expect("three parts");
    let header = b64e(br#"{"alg":"HS512","typ":"JWT"}"#);
    let payload = hs256.split('.').nth(1).expect("payload");
    assert_eq!(
        v.verify(&format!("{header}.{payload}.{sig}"), NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn rsa_tokens_verify_with_spki_and_pkcs1_pem() {
    for public in [RSA_PUBLIC, RSA_PUBLIC_PKCS1] {
        for (alg, ours) in [
            (Algorithm::RS256, JwtAlgorithm::RS256),
            (Algorithm::RS384, JwtAlgorithm::RS384),
            (Algorithm::RS512, JwtAlgorithm::RS512),
        ] {
            let v = verifier(&[ours], pem(public));
            let token = sign(alg, &rsa_private(), None, &claims());
            assert!(v.verify(&token, NOW).is_ok(), "{alg:?}");
        }
    }
}

#[test]
fn ecdsa_tokens_verify() {
    let v = verifier(&[JwtAlgorithm::ES256], pem(P256_PUBLIC));
    let key = EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()).expect("p256");
    let token = sign(Algorithm::ES256, &key, None, &claims());
    assert_eq!(
        v.verify(&token, NOW)
            .expect("es256")
            .get_str("sub")
            .as_deref(),
        Some("user-7")
    );

    let v = verifier(&[JwtAlgorithm::ES384], pem(P384_PUBLIC));
    let key = EncodingKey::from_ec_pem(P384_PRIVATE.as_bytes()).expect("p384");
    let token = sign(Algorithm::ES384, &key, None, &claims());
    assert!(v.verify(&token, NOW).is_ok());
}

#[test]
fn eddsa_token_verifies() {
    let v = verifier(&[JwtAlgorithm::EdDSA], pem(ED_PUBLIC));
    let key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).expect("ed25519");
    let token = sign(Algorithm::EdDSA, &key, None, &claims());
    assert!(v.verify(&token, NOW).is_ok());
}

#[test]
fn missing_or_bad_signature_is_refused() {
    let v = hs256();
    let token = hs(&claims());
    let (unsigned, sig) = token.rsplit_once('.').expect("three parts");
    assert_eq!(
        v.verify(&format!("{unsigned}."), NOW),
        Err(JwtError::BadSignature)
    );
    assert_eq!(v.verify(unsigned, NOW), Err(JwtError::Malformed));
    // Another secret.
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"other"),
        None,
        &claims(),
    );
    assert_eq!(v.verify(&other, NOW), Err(JwtError::BadSignature));
    // The claims changed under a signature made for others.
    let forged = format!(
        "{}.{}.{sig}",
        unsigned.split('.').next().expect("header"),
        b64e(br#"{"sub":"admin","exp":1700000060}"#)
    );
    assert_eq!(v.verify(&forged, NOW), Err(JwtError::BadSignature));

    // The same for each public-key family: a signature over other claims.
    let cases = [
        (
            JwtAlgorithm::RS256,
            Algorithm::RS256,
            RSA_PUBLIC,
            rsa_private(),
        ),
        (
            JwtAlgorithm::ES256,
            Algorithm::ES256,
            P256_PUBLIC,
            EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()).expect("p256"),
        ),
        (
            JwtAlgorithm::EdDSA,
            Algorithm::EdDSA,
            ED_PUBLIC,
            EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).expect("ed"),
        ),
    ];
    for (ours, alg, public, private) in cases {
        let v = verifier(&[ours], pem(public));
        let good = sign(alg, &private, None, &claims());
        let other = sign(
            alg,
            &private,
            None,
            &json!({"sub": "admin", "exp": NOW + 60}),
        );
        let (head_and_claims, _) = good.rsplit_once('.').expect("three parts");
        let (_, other_sig) = other.rsplit_once('.').expect("three parts");
        let spliced = format!("{head_and_claims}.{other_sig}");
        assert_eq!(
            v.verify(&spliced, NOW),
            Err(JwtError::BadSignature),
            "{alg:?}"
        );
        assert_eq!(
            v.verify(&format!("{head_and_claims}."), NOW),
            Err(JwtError::BadSignature)
        );
    }
}

#[test]
fn expiry_is_required_and_checked_with_leeway() {
    let v = hs256();
    let expired = hs(&json!({"sub": "u", "exp": NOW - 5}));
    assert_eq!(v.verify(&expired, NOW), Err(JwtError::Expired));
    // `exp` is the first instant the token is no longer valid.
    let at_exp = hs(&json!({"sub": "u", "exp": NOW}));
    assert_eq!(v.verify(&at_exp, NOW), Err(JwtError::Expired));
    assert!(v.verify(&at_exp, NOW - 1).is_ok());
    assert_eq!(
        v.verify(&hs(&json!({"sub": "u"})), NOW),
        Err(JwtError::Malformed)
    );
    let text_exp = hs(&json!({"exp": (NOW + 60).to_string()}));
    assert_eq!(v.verify(&text_exp, NOW), Err(JwtError::Malformed));
    let fractional = hs(&json!({"exp": NOW as f64 + 0.5}));
    assert!(v.verify(&fractional, NOW).is_ok());

    let mut cfg = config(&[JwtAlgorithm::HS256], JwtKey::Secret(SECRET.to_vec()));
    cfg.leeway = Duration::from_secs(30);
    let lenient = Verifier::new(&cfg).expect("verifier");
    assert!(
        lenient.verify(&expired, NOW).is_ok(),
        "5 s late, within 30 s leeway"
    );
    assert_eq!(lenient.verify(&expired, NOW + 25), Err(JwtError::Expired));
}

#[test]
fn not_before_is_checked_when_present() {
    let v = hs256();
    let future = hs(&json!({"exp": NOW + 600, "nbf": NOW + 10}));
    assert_eq!(v.verify(&future, NOW), Err(JwtError::NotYetValid));
    assert!(v.verify(&future, NOW + 10).is_ok());
    let bad_nbf = hs(&json!({"exp": NOW + 600, "nbf": "soon"}));
    assert_eq!(v.verify(&bad_nbf, NOW), Err(JwtError::Malformed));

    let mut cfg = config(&[JwtAlgorithm::HS256], JwtKey::Secret(SECRET.to_vec()));
    cfg.leeway = Duration::from_secs(30);
    let lenient = Verifier::new(&cfg).expect("verifier");
    assert!(lenient.verify(&future, NOW).is_ok());
    let far = hs(&json!({"exp": NOW + 600, "nbf": NOW + 31}));
    assert_eq!(lenient.verify(&far, NOW), Err(JwtError::NotYetValid));
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let mut cfg = config(&[JwtAlgorithm::HS256], JwtKey::Secret(SECRET.to_vec()));
    cfg.issuer = Some("https://id.example.com".into());
    cfg.audience = Some("orders".into());
    let v = Verifier::new(&cfg).expect("verifier");
    let token = |iss: Value, aud: Value| {
        let mut c = claims();
        c["iss"] = iss;
        c["aud"] = aud;
        hs(&c)
    };
    let iss = json!("https://id.example.com");
    assert!(v.verify(&token(iss.clone(), json!("orders")), NOW).is_ok());
    assert!(v
        .verify(&token(iss.clone(), json!(["billing", "orders"])), NOW)
        .is_ok());
    for aud in [
        json!("billing"),
        json!(["billing"]),
        json!([]),
        Value::Null,
        json!(7),
    ] {
        assert_eq!(
            v.verify(&token(iss.clone(), aud.clone()), NOW),
            Err(JwtError::WrongAudience),
            "{aud}"
        );
    }
    for bad in [
        json!("https://evil.example.com"),
        Value::Null,
        json!(["https://id.example.com"]),
    ] {
        assert_eq!(
            v.verify(&token(bad.clone(), json!("orders")), NOW),
            Err(JwtError::WrongIssuer),
            "{bad}"
        );
    }
    // Unconfigured: any (or no) iss and aud pass.
    let open = hs256();
    assert!(open
        .verify(&token(json!("anyone"), json!("anything")), NOW)
        .is_ok());
    assert!(open.verify(&hs(&claims()), NOW).is_ok());
}

#[test]
fn alg_none_is_always_refused() {
    let v = hs256();
    let payload = b64e(claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let header = b64e(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        let unsigned = format!("{header}.{payload}.");
        assert_eq!(
            v.verify(&unsigned, NOW),
            Err(JwtError::AlgorithmNotAllowed),
            "{alg}"
        );
        // Even carrying a signature that would be right for HS256.
        let signed = hand_signed(
            &format!(r#"{{"alg":"{alg}"}}"#),
            &claims().to_string(),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(
            v.verify(&signed, NOW),
            Err(JwtError::AlgorithmNotAllowed),
            "{alg}"
        );
    }
    let no_alg = hand_signed(
        r#"{"typ":"JWT"}"#,
        &claims().to_string(),
        Algorithm::HS256,
        SECRET,
    );
    assert_eq!(v.verify(&no_alg, NOW), Err(JwtError::Malformed));
}

#[test]
fn only_configured_algorithms_are_accepted() {
    let v = hs256();
    let hs512 = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET),
        None,
        &claims(),
    );
    assert_eq!(v.verify(&hs512, NOW), Err(JwtError::AlgorithmNotAllowed));
    // Names we never support, even signed correctly by some reading.
    for alg in ["PS256", "ES512", "hs256", "HS256 ", "RS1"] {
        let t = hand_signed(
            &format!(r#"{{"alg":"{alg}"}}"#),
            &claims().to_string(),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(
            v.verify(&t, NOW),
            Err(JwtError::AlgorithmNotAllowed),
            "{alg}"
        );
    }
    let rs = verifier(&[JwtAlgorithm::RS256], pem(RSA_PUBLIC));
    let rs512 = sign(Algorithm::RS512, &rsa_private(), None, &claims());
    assert_eq!(rs.verify(&rs512, NOW), Err(JwtError::AlgorithmNotAllowed));
}

#[test]
fn rsa_public_key_is_never_an_hmac_secret() {
    // The classic confusion: HS256 with the verifier's own public key as secret.
    let pem_secret = RSA_PUBLIC.as_bytes();
    let der_secret = match DecodingKey::from_rsa_pem(pem_secret).expect("rsa").kind() {
        jsonwebtoken::DecodingKeyKind::SecretOrDer(der) => der.clone(),
        other => panic!("unexpected {other:?}"),
    };
    for secret in [pem_secret, der_secret.as_slice()] {
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret),
            None,
            &claims(),
        );
        let rs = verifier(&[JwtAlgorithm::RS256], pem(RSA_PUBLIC));
        assert_eq!(rs.verify(&forged, NOW), Err(JwtError::AlgorithmNotAllowed));
        // Even were HS256 allowed beside RS256 (config validation forbids it),
        // the key is an RSA key and serves no HMAC algorithm.
        let mixed = verifier(&[JwtAlgorithm::RS256, JwtAlgorithm::HS256], pem(RSA_PUBLIC));
        assert_eq!(mixed.verify(&forged, NOW), Err(JwtError::UnknownKey));
        // And jsonwebtoken itself refuses an RSA key for HMAC.
        let (message, sig) = forged.rsplit_once('.').expect("three parts");
        let rsa_key = DecodingKey::from_rsa_pem(pem_secret).expect("rsa");
        let lib = jsonwebtoken::crypto::verify(sig, message.as_bytes(), &rsa_key, Algorithm::HS256);
        assert!(!matches!(lib, Ok(true)), "{lib:?}");
    }
}

#[test]
fn a_key_serves_only_its_own_family_and_curve() {
    let p256 = EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()).expect("p256");
    let p384 = EncodingKey::from_ec_pem(P384_PRIVATE.as_bytes()).expect("p384");
    let asym = [
        JwtAlgorithm::RS256,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
    ];
    let rsa_keyed = verifier(&asym, pem(RSA_PUBLIC));
    let es = sign(Algorithm::ES256, &p256, None, &claims());
    assert_eq!(rsa_keyed.verify(&es, NOW), Err(JwtError::UnknownKey));
    let p256_keyed = verifier(&asym, pem(P256_PUBLIC));
    assert!(p256_keyed.verify(&es, NOW).is_ok());
    let es384 = sign(Algorithm::ES384, &p384, None, &claims());
    assert_eq!(p256_keyed.verify(&es384, NOW), Err(JwtError::UnknownKey));
    let rs = sign(Algorithm::RS256, &rsa_private(), None, &claims());
    assert_eq!(p256_keyed.verify(&rs, NOW), Err(JwtError::UnknownKey));
}

#[test]
fn claims_as_text() {
    let token = hs(&json!({
        "exp": NOW + 60, "sub": "u-1", "uid": 42, "neg": -3, "ratio": 1.5,
        "admin": true, "roles": ["a"], "org": {"id": 1}, "nothing": null
    }));
    let c = hs256().verify(&token, NOW).expect("valid");
    assert_eq!(c.get_str("sub").as_deref(), Some("u-1"));
    assert_eq!(c.get_str("uid").as_deref(), Some("42"));
    assert_eq!(c.get_str("neg").as_deref(), Some("-3"));
    for none in ["ratio", "admin", "roles", "org", "nothing", "absent"] {
        assert_eq!(c.get_str(none), None, "{none}");
    }
    assert_eq!(c.get("roles"), Some(&json!(["a"])));
}

#[test]
fn every_error_has_its_own_text() {
    use JwtError::*;
    let all = [
        Missing,
        Malformed,
        BadSignature,
        Expired,
        NotYetValid,
        WrongIssuer,
        WrongAudience,
        AlgorithmNotAllowed,
        UnknownKey,
    ];
    let texts: std::collections::HashSet<&str> = all.iter().map(|e| e.describe()).collect();
    assert_eq!(texts.len(), all.len());
    assert!(texts.iter().all(|t| !t.is_empty()));
    assert_eq!(Expired.to_string(), "token expired");
}

#[test]
fn verifier_is_shareable_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Verifier>();
    shareable::<Claims>();
}
