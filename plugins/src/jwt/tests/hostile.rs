//! Inputs from clients: garbage tokens (never a panic, never a pass),
//! `Authorization` parsing, and the headers forwarded upstream.

use super::*;

/// Tiny deterministic generator so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn verifiers() -> Vec<Verifier> {
    vec![
        hs256(),
        verifier(
            &[JwtAlgorithm::RS256],
            pem(super::super::test_keys::RSA_PUBLIC),
        ),
        verifier(
            &[JwtAlgorithm::EdDSA],
            pem(super::super::test_keys::ED_PUBLIC),
        ),
    ]
}

#[test]
fn garbage_tokens_are_refused_without_panic() {
    let header = b64e(br#"{"alg":"HS256"}"#);
    let payload = b64e(claims().to_string().as_bytes());
    let long = "a".repeat(MAX_TOKEN_LEN + 1);
    let fixed: Vec<String> = vec![
        "".into(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        format!("{header}.{payload}.sig.extra"),
        format!("{header}.{payload}"),
        "eyJ.eyJ.eyJ".into(),
        "!!!.###.$$$".into(),
        format!("{header}=.{payload}.AAAA"),
        format!("{header}.{payload}=.AAAA"),
        format!("{header}.{payload}.A"),
        format!("{header}.{payload}.+/+/"),
        format!("{}.{payload}.AAAA", b64e(b"not json")),
        format!("{}.{payload}.AAAA", b64e(b"[1,2,3]")),
        format!("{}.{payload}.AAAA", b64e(b"\"HS256\"")),
        format!("{}.{payload}.AAAA", b64e(br#"{"alg":256}"#)),
        format!("{}.{payload}.AAAA", b64e(br#"{"alg":null}"#)),
        format!("{}.{payload}.AAAA", b64e(&[0xff, 0xfe, 0xfd])),
        format!("{header}.{}.AAAA", b64e(b"{")),
        format!("{header}.{}.AAAA", b64e(&[0; 64])),
        "\u{0}\u{1}.\u{2}.\u{3}".into(),
        "ключ.токен.подпись".into(),
        "🦀.🦀.🦀".into(),
        format!("{long}.{long}.{long}"),
        long,
    ];
    for v in verifiers() {
        for t in &fixed {
            assert!(v.verify(t, NOW).is_err(), "{t:?}");
        }
    }
    let hs = hs256();
    // Wrong segment counts, and bad base64 or JSON in any segment, are
    // malformed; the payload's JSON is read only once the signature held.
    for t in fixed[..20].iter().chain(&fixed[22..]) {
        assert_eq!(hs.verify(t, NOW), Err(JwtError::Malformed), "{t:?}");
    }
    for t in &fixed[20..22] {
        assert_eq!(hs.verify(t, NOW), Err(JwtError::BadSignature), "{t:?}");
    }
}

#[test]
fn correctly_signed_but_malformed_contents_are_refused() {
    let v = hs256();
    let secret: &[u8] = b"a-test-secret-of-thirty-two-bytes!";
    let hdr = r#"{"alg":"HS256"}"#;
    for payload in ["[1,2]", "\"text\"", "42", "null", "{", "not json"] {
        let t = hand_signed(hdr, payload, Algorithm::HS256, secret);
        assert_eq!(v.verify(&t, NOW), Err(JwtError::Malformed), "{payload}");
    }
    let exp = format!(r#"{{"exp":{}}}"#, NOW + 60);
    assert!(v
        .verify(&hand_signed(hdr, &exp, Algorithm::HS256, secret), NOW)
        .is_ok());
    // A `crit` extension we do not understand.
    let crit = hand_signed(
        r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
        &exp,
        Algorithm::HS256,
        secret,
    );
    assert_eq!(v.verify(&crit, NOW), Err(JwtError::Malformed));
}

#[test]
fn random_and_mutated_tokens_never_panic_nor_pass() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let alphabet: Vec<char> = "ABCabc019-_.=+/ {}\"\0é".chars().collect();
    let good = hs(&claims());
    let verifiers = verifiers();
    for _ in 0..2000 {
        let len = rng.below(120);
        let t: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        for v in &verifiers {
            assert!(v.verify(&t, NOW).is_err(), "{t:?}");
        }
    }
    // Each one-character change and each truncation of a valid token fails.
    let hs = hs256();
    assert!(hs.verify(&good, NOW).is_ok());
    let chars: Vec<char> = good.chars().collect();
    for i in 0..chars.len() {
        for c in ['A', 'B', '_', '.', '-'] {
            if chars[i] == c {
                continue;
            }
            let mut m = chars.clone();
            m[i] = c;
            let t: String = m.into_iter().collect();
            assert!(hs.verify(&t, NOW).is_err(), "position {i} -> {c}: {t}");
        }
        let prefix: String = chars[..i].iter().collect();
        assert!(hs.verify(&prefix, NOW).is_err(), "prefix {i}");
    }
}

#[test]
fn forwarded_claims_become_headers() {
    let mut cfg = config(
        &[JwtAlgorithm::HS256],
        JwtKey::Secret(b"a-test-secret-of-thirty-two-bytes!".to_vec()),
    );
    cfg.forward_claims = [
        ("sub", "x-user-id"),
        ("uid", "x-uid"),
        ("ratio", "x-ratio"),
        ("admin", "x-admin"),
        ("roles", "x-roles"),
        ("org", "x-org"),
        ("absent", "x-absent"),
        ("nothing", "x-nothing"),
        ("evil", "x-evil"),
    ]
    .iter()
    .map(|(c, h)| (c.to_string(), h.to_string()))
    .collect();
    let v = Verifier::new(&cfg).expect("verifier");
    let token = hs(&json!({
        "exp": NOW + 60, "sub": "user 7", "uid": 42, "ratio": 0.5, "admin": false,
        "roles": ["a"], "org": {"id": 1}, "nothing": null, "evil": "x\r\nset-cookie: a=b"
    }));
    let claims = v.verify(&token, NOW).expect("valid");
    let got = v.forwarded(&claims);
    let want: Vec<(String, String)> = [
        ("x-user-id", "user 7"),
        ("x-uid", "42"),
        ("x-ratio", "0.5"),
        ("x-admin", "false"),
    ]
    .iter()
    .map(|(h, v)| (h.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
    assert!(hs256().forwarded(&claims).is_empty());
}

#[test]
fn bearer_token_parsing() {
    let cases: [(&str, Option<&str>); 20] = [
        ("Bearer abc.def.ghi", Some("abc.def.ghi")),
        ("bearer abc", Some("abc")),
        ("BEARER abc", Some("abc")),
        ("BeArEr abc", Some("abc")),
        ("  Bearer   abc  ", Some("abc")),
        ("Bearer\tabc", Some("abc")),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer    ", None),
        ("Bearerabc", None),
        ("Bearer a b", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Token abc", None),
        ("abc", None),
        ("", None),
        ("Bearer: abc", None),
        ("\tBearer\t\tabc\t", Some("abc")),
        ("Bearer a\tb", None),
        ("Bearer é.ü", Some("é.ü")),
        ("Bäarer abc", None),
    ];
    for (value, want) in cases {
        assert_eq!(bearer_token(value), want, "{value:?}");
    }
}
