//! JWT authentication through the real binary: every way a token can be
//! wrong is a 401, and a valid token's claims route the user and reach the
//! backend.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};
use unitgate_tests::{backend, two_units_config, GatewayProc, Reply};

const SECRET: &str = "an-hs256-secret-for-tests";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A compact JWS with `header` and `claims`, HMAC-SHA256-signed with `key`
/// (or unsigned when `key` is None).
fn token(header: serde_json::Value, claims: serde_json::Value, key: Option<&[u8]>) -> String {
    let enc = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let signing_input = format!("{}.{}", enc(&header), enc(&claims));
    let sig = match key {
        Some(k) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(k).expect("key");
            mac.update(signing_input.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
        None => String::new(),
    };
    format!("{signing_input}.{sig}")
}

fn hs256(claims: serde_json::Value) -> String {
    token(
        serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        claims,
        Some(SECRET.as_bytes()),
    )
}

fn good_claims(sub: &str) -> serde_json::Value {
    serde_json::json!({"sub": sub, "iss": "https://id.test", "aud": "orders", "exp": now() + 600})
}

async fn start() -> (GatewayProc, Vec<unitgate_tests::EchoServer>) {
    let (a, b) = (backend("A", "a1").await, backend("B", "b1").await);
    let pem = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/rsa_public.pem");
    let extra = format!(
        r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
service = "echo"
jwt = "main"

[[routes]]
name = "rsa"
path_prefix = "/rsa"
service = "echo"
jwt = "rsa"

[[routes]]
name = "open"
path_prefix = "/open"
service = "echo"

[jwt.main]
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "https://id.test"
audience = "orders"
leeway_secs = 5
forward_claims = {{ sub = "x-user-id" }}

[jwt.rsa]
algorithms = ["RS256"]
public_key_file = "{pem}"
"#
    );
    let routing = "[routing]\nkey = [\"jwt:sub\", \"header:x-user-id\"]\n";
    let instances = format!("A = [\"{}\"]\nB = [\"{}\"]", a.addr, b.addr);
    let gw = GatewayProc::start(&two_units_config("", routing, &instances, "", &extra)).await;
    (gw, vec![a, b])
}

async fn with_token(gw: &GatewayProc, path: &str, token: &str) -> Reply {
    gw.send(gw.client.get(gw.url(path)).bearer_auth(token))
        .await
}

fn assert_invalid(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.body);
    assert_eq!(r.json()["error"], "unauthorized", "{what}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\""),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_and_invalid_tokens_are_401() {
    let (gw, backends) = start().await;
    let r = gw.get("/orders/1").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer"),
        "no token: no error attribute"
    );

    let mut claims = good_claims("42");
    let wrong_key = token(
        serde_json::json!({"alg": "HS256"}),
        claims.clone(),
        Some(b"not-the-secret"),
    );
    assert_invalid(
        &with_token(&gw, "/orders/1", &wrong_key).await,
        "bad signature",
    );
    claims["exp"] = serde_json::json!(now() - 60);
    assert_invalid(
        &with_token(&gw, "/orders/1", &hs256(claims)).await,
        "expired",
    );
    let mut claims = good_claims("42");
    claims["iss"] = "https://evil.test".into();
    assert_invalid(
        &with_token(&gw, "/orders/1", &hs256(claims)).await,
        "wrong issuer",
    );
    let mut claims = good_claims("42");
    claims["aud"] = "payments".into();
    assert_invalid(
        &with_token(&gw, "/orders/1", &hs256(claims)).await,
        "wrong audience",
    );
    let none = token(serde_json::json!({"alg": "none"}), good_claims("42"), None);
    assert_invalid(&with_token(&gw, "/orders/1", &none).await, "alg none");
    assert_invalid(
        &with_token(&gw, "/orders/1", "garbage.token").await,
        "garbage",
    );

    // Algorithm confusion: HS256 "signed" with the verifier's RSA public key.
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/rsa_public.pem"
    ))
    .expect("pem");
    let confused = token(
        serde_json::json!({"alg": "HS256"}),
        good_claims("42"),
        Some(&pem),
    );
    assert_invalid(
        &with_token(&gw, "/rsa/1", &confused).await,
        "RS256/HS256 confusion",
    );

    assert!(
        backends.iter().all(|b| b.served() == 0),
        "no refused request reached a backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_token_routes_by_sub_and_forwards_it() {
    let (gw, _b) = start().await;
    // sub 7500 -> slot 7500 -> unit B, whatever x-user-id the client sends.
    let r = gw
        .send(
            gw.client
                .get(gw.url("/orders/1"))
                .bearer_auth(hs256(good_claims("7500")))
                .header("x-user-id", "42"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.unit(), "B");
    let h = &r.json()["headers"];
    assert_eq!(
        h["x-user-id"], "7500",
        "the claim overwrote the client's header"
    );
    assert_eq!(h["x-unit-slot"], "7500");
    // Leeway: expired 3 s ago, within the 5 s leeway.
    let mut claims = good_claims("42");
    claims["exp"] = serde_json::json!(now() - 3);
    assert_eq!(
        with_token(&gw, "/orders/1", &hs256(claims)).await.unit(),
        "A"
    );
    // Routes without jwt need no token.
    assert_eq!(gw.get("/open/x").await.status, 200);
}
