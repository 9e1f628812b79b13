//! Key loading: JWKS selection by `kid`, and the keys refused at load.

use super::super::test_keys::*;
use super::*;

fn rsa_jwk(kid: &str) -> Value {
    json!({"kty": "RSA", "kid": kid, "use": "sig", "n": RSA_N, "e": RSA_E})
}

fn p256_jwk(kid: &str) -> Value {
    json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": P256_X, "y": P256_Y})
}

fn p384_jwk(kid: &str) -> Value {
    json!({"kty": "EC", "kid": kid, "crv": "P-384", "x": P384_X, "y": P384_Y})
}

fn ed_jwk(kid: &str) -> Value {
    json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": ED_X})
}

fn jwks(keys: &[Value]) -> JwtKey {
    JwtKey::Jwks(json!({ "keys": keys }).to_string().into_bytes())
}

const ASYM: [JwtAlgorithm; 4] = [
    JwtAlgorithm::RS256,
    JwtAlgorithm::ES256,
    JwtAlgorithm::ES384,
    JwtAlgorithm::EdDSA,
];

fn load_error(algorithms: &[JwtAlgorithm], key: JwtKey) -> String {
    match Verifier::new(&config(algorithms, key)) {
        Ok(_) => panic!("key loaded"),
        Err(e) => {
            assert!(e.starts_with("jwt.main: "), "{e}");
            e
        }
    }
}

fn rsa_private() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa")
}

fn p256_private() -> EncodingKey {
    EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()).expect("p256")
}

#[test]
fn jwks_key_is_chosen_by_kid() {
    let v = verifier(
        &ASYM,
        jwks(&[rsa_jwk("r1"), p256_jwk("e1"), p384_jwk("e2"), ed_jwk("d1")]),
    );
    let rs = sign(Algorithm::RS256, &rsa_private(), Some("r1"), &claims());
    assert!(v.verify(&rs, NOW).is_ok());
    let es = sign(Algorithm::ES256, &p256_private(), Some("e1"), &claims());
    assert!(v.verify(&es, NOW).is_ok());
    let p384 = EncodingKey::from_ec_pem(P384_PRIVATE.as_bytes()).expect("p384");
    assert!(v
        .verify(&sign(Algorithm::ES384, &p384, Some("e2"), &claims()), NOW)
        .is_ok());
    let ed = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).expect("ed");
    assert!(v
        .verify(&sign(Algorithm::EdDSA, &ed, Some("d1"), &claims()), NOW)
        .is_ok());

    // Unknown kid; a kid naming a key of another family; no kid among many.
    let unknown = sign(Algorithm::RS256, &rsa_private(), Some("r9"), &claims());
    assert_eq!(v.verify(&unknown, NOW), Err(JwtError::UnknownKey));
    let wrong_family = sign(Algorithm::RS256, &rsa_private(), Some("e1"), &claims());
    assert_eq!(v.verify(&wrong_family, NOW), Err(JwtError::UnknownKey));
    let wrong_curve = sign(Algorithm::ES256, &p256_private(), Some("e2"), &claims());
    assert_eq!(v.verify(&wrong_curve, NOW), Err(JwtError::UnknownKey));
    let no_kid = sign(Algorithm::RS256, &rsa_private(), None, &claims());
    assert_eq!(v.verify(&no_kid, NOW), Err(JwtError::UnknownKey));
    let bad_kid = hand_signed(
        r#"{"alg":"RS256","kid":7}"#,
        &claims().to_string(),
        Algorithm::HS256,
        b"x",
    );
    assert_eq!(v.verify(&bad_kid, NOW), Err(JwtError::Malformed));
}

#[test]
fn jwks_with_one_key_accepts_a_token_without_kid() {
    let v = verifier(&[JwtAlgorithm::RS256], jwks(&[rsa_jwk("only")]));
    let no_kid = sign(Algorithm::RS256, &rsa_private(), None, &claims());
    assert!(v.verify(&no_kid, NOW).is_ok());
    let other_kid = sign(Algorithm::RS256, &rsa_private(), Some("rotated"), &claims());
    assert_eq!(v.verify(&other_kid, NOW), Err(JwtError::UnknownKey));
}

#[test]
fn jwk_alg_pins_the_key_to_one_algorithm() {
    let mut pinned = rsa_jwk("r1");
    pinned["alg"] = json!("RS512");
    let algs = [JwtAlgorithm::RS256, JwtAlgorithm::RS512];
    let v = verifier(&algs, jwks(&[pinned]));
    let rs256 = sign(Algorithm::RS256, &rsa_private(), Some("r1"), &claims());
    assert_eq!(v.verify(&rs256, NOW), Err(JwtError::UnknownKey));
    let rs512 = sign(Algorithm::RS512, &rsa_private(), Some("r1"), &claims());
    assert!(v.verify(&rs512, NOW).is_ok());
}

#[test]
fn jwks_symmetric_keys_are_never_used() {
    // An `oct` key in a JWKS, or an RSA key's kid, must not make HS256 pass.
    let oct = json!({"kty": "oct", "kid": "h", "k": b64e(b"shared")});
    let algs = [JwtAlgorithm::RS256, JwtAlgorithm::HS256];
    let v = verifier(&algs, jwks(&[oct, rsa_jwk("r1")]));
    let by_oct = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"shared"),
        Some("h"),
        &claims(),
    );
    assert_eq!(v.verify(&by_oct, NOW), Err(JwtError::UnknownKey));
    let by_pem = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        Some("r1"),
        &claims(),
    );
    assert_eq!(v.verify(&by_pem, NOW), Err(JwtError::UnknownKey));
}

#[test]
fn jwks_skips_keys_it_cannot_use() {
    let keys = [
        json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": RSA_E}),
        json!({"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": RSA_N, "e": RSA_E}),
        json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"}),
        json!({"kty": "OKP", "kid": "x", "crv": "X25519", "x": ED_X}),
        json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
        json!({"kty": "weird"}),
        p256_jwk("not-configured"),
        rsa_jwk("sig"),
    ];
    let v = verifier(&[JwtAlgorithm::RS256], jwks(&keys));
    // Only `sig` is usable, so a token without kid picks it.
    let no_kid = sign(Algorithm::RS256, &rsa_private(), None, &claims());
    assert!(v.verify(&no_kid, NOW).is_ok());
    let enc = sign(Algorithm::RS256, &rsa_private(), Some("enc"), &claims());
    assert_eq!(v.verify(&enc, NOW), Err(JwtError::UnknownKey));
}

#[test]
fn bad_jwks_fail_the_load() {
    let rs = [JwtAlgorithm::RS256];
    let raw = |s: &str| JwtKey::Jwks(s.as_bytes().to_vec());
    let cases: Vec<(&[JwtAlgorithm], JwtKey, &str)> = vec![
        (&rs, raw("not json"), "not a JSON object"),
        (&rs, raw("[]"), "not a JSON object"),
        (&rs, raw(r#"{"keys": {}}"#), "no \"keys\" array"),
        (&rs, raw(r#"{"keys": [1]}"#), "keys[0] is not an object"),
        (
            &rs,
            jwks(&[]),
            "no RSA, EC (P-256, P-384) or Ed25519 signing key",
        ),
        (&rs, jwks(&[p256_jwk("e1")]), "no RSA, EC"),
        (
            &rs,
            jwks(&[rsa_jwk("a"), rsa_jwk("a")]),
            "key \"a\": kid appears twice",
        ),
        (
            &rs,
            jwks(&[json!({"kty": "RSA", "kid": "a", "e": RSA_E})]),
            "key \"a\": n is missing",
        ),
        (
            &rs,
            jwks(&[json!({"kty": "RSA", "n": "%%%", "e": RSA_E})]),
            "keys[0]: n or e is not base64url",
        ),
        (
            &rs,
            jwks(&[json!({"kty": "RSA", "n": 5, "e": RSA_E})]),
            "n is not a string",
        ),
        (
            &rs,
            jwks(&[json!({"kty": "RSA", "n": b64e(&[0xc3; 128]), "e": RSA_E})]),
            "RSA key of 1024 bits",
        ),
        (
            &rs,
            jwks(&[json!({"kty": "RSA", "kid": 3, "n": RSA_N, "e": RSA_E})]),
            "kid is not a string",
        ),
        (
            &ASYM,
            jwks(&[json!({"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_X})]),
            "not a point on P-256",
        ),
        (
            &ASYM,
            jwks(&[json!({"kty": "EC", "crv": "P-256", "x": P384_X, "y": P384_Y})]),
            "not a point on P-256",
        ),
        // A short Ed25519 key must be refused here, not panic later.
        (
            &ASYM,
            jwks(&[json!({"kty": "OKP", "crv": "Ed25519", "x": b64e(&[9; 16])})]),
            "Ed25519",
        ),
        (
            &ASYM,
            jwks(&[json!({"kty": "OKP", "crv": "Ed25519", "x": b64e(&[9; 40])})]),
            "Ed25519",
        ),
        (
            &ASYM,
            jwks(&[json!({"kty": "OKP", "crv": "Ed25519"})]),
            "x is missing",
        ),
    ];
    for (algorithms, key, want) in cases {
        let e = load_error(algorithms, key);
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }
}

#[test]
fn bad_pem_keys_fail_the_load() {
    let rs = [JwtAlgorithm::RS256];
    let cases: Vec<(&[JwtAlgorithm], JwtKey, &str)> = vec![
        (&rs, pem(RSA_PRIVATE), "holds a private key"),
        (&ASYM, pem(P256_PRIVATE), "holds a private key"),
        (
            &rs,
            pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            "certificate",
        ),
        (
            &rs,
            pem("-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n"),
            "unsupported PEM block \"FOO\"",
        ),
        (&rs, pem("ssh-rsa AAAAB3NzaC1yc2E"), "no PEM block"),
        (
            &rs,
            JwtKey::PublicKeyPem(vec![0xff, 0xfe, 0x00]),
            "not PEM text",
        ),
        (
            &rs,
            pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            "not an RSA, EC",
        ),
        (&rs, pem(RSA1024_PUBLIC), "RSA key of 1024 bits"),
        (
            &rs,
            pem(P256_PUBLIC),
            "the key is an EC P-256 key and verifies none of the algorithms [RS256]",
        ),
        (&[JwtAlgorithm::ES384], pem(P256_PUBLIC), "EC P-256 key"),
        (
            &[JwtAlgorithm::ES256, JwtAlgorithm::RS256],
            pem(ED_PUBLIC),
            "[ES256, RS256]",
        ),
    ];
    for (algorithms, key, want) in cases {
        let e = load_error(algorithms, key);
        assert!(
            e.contains("public_key_file") || e.contains("the key is"),
            "{e}"
        );
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }
}
