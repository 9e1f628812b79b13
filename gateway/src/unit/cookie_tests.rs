use super::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn routing(keys: &[(&str, &str)], active: &str) -> Routing {
    Routing {
        slots: 10000,
        epoch: 7,
        key: vec![],
        cookie: "ug_route".into(),
        cookie_ttl: Duration::from_secs(3600),
        cookie_secure: true,
        signing_keys: keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect::<BTreeMap<_, _>>(),
        active_key: Some(active.into()),
        max_hops: 1,
        allow_empty_routes: false,
        forbidden_writes: vec![],
        overrides: Default::default(),
    }
}

const NOW: u64 = 1_800_000_000;

#[test]
fn value_has_the_contract_format_and_signature() {
    let jar = CookieJar::new(&routing(&[("k1", "secret-one")], "k1")).expect("jar");
    let v = jar.value(1234, 7, NOW);
    let (payload, sig) = v.rsplit_once('.').expect("dot");
    assert_eq!(payload, format!("1.1234.7.{}.k1", NOW + 3600));
    let mut mac = HmacSha256::new_from_slice(b"secret-one").expect("key");
    mac.update(payload.as_bytes());
    assert_eq!(sig, URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    assert!(!sig.contains('='));
    assert_eq!(
        jar.set_cookie(1234, 7, NOW),
        format!("ug_route={v}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600; Secure")
    );
}

#[test]
fn verify_accepts_own_and_rotated_keys_only() {
    let old = CookieJar::new(&routing(&[("k1", "one")], "k1")).expect("jar");
    let rotated = CookieJar::new(&routing(&[("k1", "one"), ("k2", "two")], "k2")).expect("jar");
    let v = old.value(5, 7, NOW);
    let c = rotated
        .verify(&v, NOW, 10000)
        .expect("old kid still verifies");
    assert_eq!((c.slot, c.epoch, c.expires), (5, 7, NOW + 3600));
    assert!(
        rotated.value(5, 7, NOW).contains(".k2."),
        "signs with the active key"
    );
    // Dropping k1 makes its cookies unknown-kid.
    let only2 = CookieJar::new(&routing(&[("k2", "two")], "k2")).expect("jar");
    assert_eq!(only2.verify(&v, NOW, 10000), None);
}

#[test]
fn verify_rejects_forged_expired_and_garbled() {
    let jar = CookieJar::new(&routing(&[("k1", "one")], "k1")).expect("jar");
    let good = jar.value(5, 7, NOW);
    assert!(jar.verify(&good, NOW, 10000).is_some());
    // Another slot with the same signature.
    let forged = good.replacen("1.5.", "1.6.", 1);
    assert_eq!(jar.verify(&forged, NOW, 10000), None);
    // Signature tampered.
    let mut bad_sig = good.clone();
    bad_sig.pop();
    bad_sig.push(if good.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(jar.verify(&bad_sig, NOW, 10000), None);
    // Expired.
    assert_eq!(jar.verify(&good, NOW + 3600, 10000), None);
    // Slot out of range for the current slot count.
    assert_eq!(jar.verify(&good, NOW, 5), None);
    for garbage in [
        "",
        "1",
        "x.y.z",
        "2.5.7.1.k1.sig",
        "1.5.7.k1.sig",
        "1.+5.7.9999999999.k1.AAAA",
        "1.5.7.9999999999.k1.!!!",
    ] {
        assert_eq!(jar.verify(garbage, NOW, 10000), None, "{garbage:?}");
    }
    // A cookie signed by someone else's key with our kid.
    let other = CookieJar::new(&routing(&[("k1", "not-ours")], "k1")).expect("jar");
    assert_eq!(jar.verify(&other.value(5, 7, NOW), NOW, 10000), None);
}

#[test]
fn stamping_rule() {
    let jar = CookieJar::new(&routing(&[("k1", "one")], "k1")).expect("jar");
    let c = jar
        .verify(&jar.value(5, 7, NOW), NOW, 10000)
        .expect("valid");
    assert!(jar.needs_stamp(None, 5, 7, NOW));
    assert!(!jar.needs_stamp(Some(&c), 5, 7, NOW));
    assert!(jar.needs_stamp(Some(&c), 6, 7, NOW), "other slot");
    assert!(jar.needs_stamp(Some(&c), 5, 8, NOW), "other epoch");
    assert!(
        !jar.needs_stamp(Some(&c), 5, 7, NOW + 1799),
        "just over half left"
    );
    assert!(
        jar.needs_stamp(Some(&c), 5, 7, NOW + 1801),
        "under half left"
    );
}

#[test]
fn no_keys_no_jar() {
    let mut r = routing(&[], "k1");
    r.active_key = None;
    assert!(CookieJar::new(&r).is_none());
}
