//! `[jwt.<name>]`: algorithms, key sources, files, env secrets, forward_claims.

use std::path::Path;

use super::*;
use crate::raw::RawJwt;
use crate::{JwtAlgorithm, JwtKey};

fn with_jwt(text: &str) -> RawConfig {
    let mut raw = minimal();
    raw.jwt.insert("main".into(), from_toml::<RawJwt>(text));
    raw.routes[0].jwt = Some("main".into());
    raw
}

#[test]
fn hmac_secret() {
    let c = valid(&with_jwt("algorithms = [\"HS256\", \"hs512\"]\nsecret = \"k\"\nissuer = \"i\"\naudience = \"a\"\nleeway_secs = 5"));
    let j = &c.jwt[0];
    assert_eq!(j.algorithms, [JwtAlgorithm::HS256, JwtAlgorithm::HS512]);
    assert_eq!(j.key, JwtKey::Secret(b"k".to_vec()));
    assert_eq!(
        (j.issuer.as_deref(), j.audience.as_deref()),
        (Some("i"), Some("a"))
    );
    assert_eq!(c.routes[0].jwt, Some(0));
}

#[test]
fn algorithms_rules() {
    assert_only_error(
        &with_jwt("secret = \"k\""),
        "jwt.main.algorithms",
        "at least one algorithm",
    );
    assert_only_error(
        &with_jwt("algorithms = [\"HS256\", \"none\"]\nsecret = \"k\""),
        "jwt.main.algorithms[1]",
        "unknown algorithm \"none\"",
    );
    assert_only_error(
        &with_jwt("algorithms = [\"HS256\", \"HS256\"]\nsecret = \"k\""),
        "jwt.main.algorithms[1]",
        "duplicate algorithm",
    );
    let errs = invalid(&with_jwt(
        "algorithms = [\"HS256\", \"RS256\"]\nsecret = \"k\"",
    ));
    assert_errors(
        errs,
        &[
            ("jwt.main.algorithms", "cannot share one verifier"),
            ("jwt.main.secret", "need public_key_file or jwks_file"),
        ],
    );
}

#[test]
fn exactly_one_key_source() {
    assert_only_error(
        &with_jwt("algorithms = [\"HS256\"]"),
        "jwt.main",
        "a key is required",
    );
    assert_only_error(
        &with_jwt("algorithms = [\"HS256\"]\nsecret = \"k\"\nsecret_env = \"V\""),
        "jwt.main",
        "give exactly one of secret, secret_env, public_key_file, jwks_file (got secret, secret_env)",
    );
    assert_only_error(
        &with_jwt("algorithms = [\"RS256\"]\npublic_key_file = \"a\"\njwks_file = \"b\""),
        "jwt.main",
        "got public_key_file, jwks_file",
    );
}

#[test]
fn key_kind_must_fit_algorithms() {
    assert_only_error(
        &with_jwt("algorithms = [\"HS256\"]\njwks_file = \"j.json\""),
        "jwt.main.jwks_file",
        "need secret or secret_env",
    );
    assert_only_error(
        &with_jwt("algorithms = [\"ES256\"]\nsecret = \"k\""),
        "jwt.main.secret",
        "need public_key_file or jwks_file",
    );
    assert_only_error(
        &with_jwt("algorithms = [\"EdDSA\"]\nsecret_env = \"X\""),
        "jwt.main.secret_env",
        "need public_key_file or jwks_file",
    );
}

#[test]
fn empty_and_env_secrets() {
    assert_only_error(
        &with_jwt("algorithms = [\"HS256\"]\nsecret = \"\""),
        "jwt.main.secret",
        "must not be empty",
    );
    set_env("UG_TEST_JWT_SECRET", "env-secret");
    let c = valid(&with_jwt(
        "algorithms = [\"HS384\"]\nsecret_env = \"UG_TEST_JWT_SECRET\"",
    ));
    assert_eq!(c.jwt[0].key, JwtKey::Secret(b"env-secret".to_vec()));
    assert_only_error(
        &with_jwt("algorithms = [\"HS384\"]\nsecret_env = \"UG_TEST_JWT_SECRET_UNSET\""),
        "jwt.main.secret_env",
        "environment variable \"UG_TEST_JWT_SECRET_UNSET\" is not set",
    );
    set_env("UG_TEST_JWT_SECRET_EMPTY", "");
    assert_only_error(
        &with_jwt("algorithms = [\"HS384\"]\nsecret_env = \"UG_TEST_JWT_SECRET_EMPTY\""),
        "jwt.main.secret_env",
        "is empty",
    );
}

#[test]
fn key_files_are_read_relative_to_base_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pub.pem"), "-----BEGIN PUBLIC KEY-----\n").expect("write");
    std::fs::write(dir.path().join("jwks.json"), "{\"keys\":[]}").expect("write");
    std::fs::write(dir.path().join("empty.pem"), "").expect("write");
    let check = |text: &str| crate::validate(&with_jwt(text), dir.path());

    let c =
        check("algorithms = [\"RS256\", \"ES256\"]\npublic_key_file = \"pub.pem\"").expect("valid");
    assert_eq!(
        c.jwt[0].key,
        JwtKey::PublicKeyPem(b"-----BEGIN PUBLIC KEY-----\n".to_vec())
    );
    let c = check("algorithms = [\"EdDSA\"]\njwks_file = \"jwks.json\"").expect("valid");
    assert_eq!(c.jwt[0].key, JwtKey::Jwks(b"{\"keys\":[]}".to_vec()));

    let errs =
        check("algorithms = [\"RS256\"]\npublic_key_file = \"nope.pem\"").expect_err("missing");
    assert_errors(errs, &[("jwt.main.public_key_file", "cannot read")]);
    let errs = check("algorithms = [\"RS256\"]\njwks_file = \"empty.pem\"").expect_err("empty");
    assert_errors(errs, &[("jwt.main.jwks_file", "is empty")]);
    assert!(dir.path().join("pub.pem").is_file() && !Path::new("pub.pem").exists());
}

#[test]
fn forward_claims() {
    let c = valid(&with_jwt("algorithms = [\"HS256\"]\nsecret = \"k\"\nforward_claims = { sub = \"X-User-Id\", tenant = \"x-tenant\" }"));
    assert_eq!(
        c.jwt[0].forward_claims,
        vec![
            ("sub".to_owned(), "x-user-id".to_owned()),
            ("tenant".to_owned(), "x-tenant".to_owned())
        ]
    );
    assert_only_error(
        &with_jwt(
            "algorithms = [\"HS256\"]\nsecret = \"k\"\nforward_claims = { sub = \"x user\" }",
        ),
        "jwt.main.forward_claims.sub",
        "invalid header name",
    );
    assert_only_error(
        &with_jwt("algorithms = [\"HS256\"]\nsecret = \"k\"\nforward_claims = { a = \"x-u\", b = \"X-U\" }"),
        "jwt.main.forward_claims.b",
        "already used",
    );
}

#[test]
fn verifiers_are_indexed_by_name_order() {
    let mut raw = with_jwt("algorithms = [\"HS256\"]\nsecret = \"k\"");
    raw.jwt.insert(
        "alpha".into(),
        from_toml("algorithms = [\"HS512\"]\nsecret = \"k2\""),
    );
    let c = valid(&raw);
    assert_eq!((c.jwt_id("alpha"), c.jwt_id("main")), (Some(0), Some(1)));
    assert_eq!(c.routes[0].jwt, Some(1));
}
