//! The local / fleet split: misplaced sections, composing, the fleet document
//! and its hash, `check` of an etcd-mode local file and of a composed pair.

use super::*;
use crate::fleet::*;
use crate::{validate_local, StoreKind};

const DESIGN: &str = include_str!("design.toml");

/// An etcd-mode local file: per-process sections only.
const LOCAL: &str = r#"
[gateway]
unit = "A"
listen = ["127.0.0.1:8080"]

[admin]
token = "t"

[store]
kind = "etcd"
prefix = "/unitgate/prod"
gateway_id = "gw-a1"
"#;

/// A fleet document that composes with [`LOCAL`] into a valid config.
const FLEET: &str = r#"
[[units]]
name = "A"
slots = ["0-9999"]

[[services]]
name = "echo"
[services.instances]
A = ["127.0.0.1:9001"]

[[routes]]
name = "root"
service = "echo"
"#;

#[test]
fn sections_are_split_between_local_and_fleet() {
    assert_eq!(
        LOCAL_SECTIONS,
        ["gateway", "admin", "store", "tls", "tracing"]
    );
    assert_eq!(
        FLEET_SECTIONS,
        ["routing", "units", "services", "routes", "jwt", "redis"]
    );
    assert!(is_local_path("gateway.listen[0]") && is_local_path("store"));
    assert!(is_local_path("tls.certificates[0].cert_file"));
    assert!(!is_local_path("routes[1].service") && !is_local_path("jwt.main.secret"));
}

#[test]
fn an_etcd_local_file_refuses_every_fleet_section_at_once() {
    let text = format!(
        "{LOCAL}\n[routing]\nslots = 100\n[[units]]\nname = \"A\"\n[[routes]]\nname = \"r\"\n\
         [jwt.main]\nalgorithms = [\"HS256\"]\n"
    );
    let errs = parse_local(&text).expect_err("fleet sections in an etcd local file");
    let msg = "fleet-wide section not allowed in a local file with store.kind = \"etcd\"; \
               it lives in etcd under /unitgate/prod";
    assert_errors(
        errs,
        &[
            ("routing", msg),
            ("units", msg),
            ("routes", msg),
            ("jwt", msg),
        ],
    );
    // Parse errors of the same file come in the same report.
    let text = format!("{LOCAL}lease = 3\n[redis]\nurl = \"redis://x\"\n");
    assert_errors(
        parse_local(&text).expect_err("invalid"),
        &[("store.lease", "unknown field `lease`"), ("redis", msg)],
    );
}

#[test]
fn a_file_store_local_file_may_hold_everything() {
    let raw = parse_local(DESIGN).expect("a whole file");
    assert_eq!(raw, parse_raw(DESIGN).expect("design parses"));
    let raw = parse_local(LOCAL).expect("local only");
    assert!(raw.units.is_empty() && raw.routes.is_empty());
}

#[test]
fn a_fleet_document_refuses_per_process_sections() {
    let text = format!(
        "[gateway]\nunit = \"A\"\n[store]\nkind = \"etcd\"\n[admin]\ntoken = \"t\"\n{FLEET}"
    );
    let msg = "per-process section not allowed in a fleet document";
    assert_errors(
        parse_fleet(&text).expect_err("local sections"),
        &[("gateway", msg), ("admin", msg), ("store", msg)],
    );
    // With the fleet document's own parse errors, and unknown top-level keys.
    let text = format!("[gateway]\nunit = \"A\"\n[rooting]\nslots = 1\n{FLEET}")
        .replace("name = \"root\"", "name = \"root\"\nsrvice = \"x\"");
    assert_errors(
        parse_fleet(&text).expect_err("invalid"),
        &[
            ("rooting", "unknown field `rooting`"),
            ("routes[0].srvice", "unknown field `srvice`"),
            ("gateway", msg),
        ],
    );
    assert_eq!(parse_fleet(FLEET).expect("valid").units.len(), 1);
}

#[test]
fn compose_round_trip() {
    let raw = parse_raw(DESIGN).expect("design parses");
    let fleet = RawFleet::from_config(&raw);
    assert_eq!(raw.with_fleet(&fleet), raw);
    // Through the fleet document's text, as the store keeps it.
    let doc = fleet_document(&fleet).expect("to toml");
    assert_eq!(parse_fleet(&doc).expect("reparse"), fleet, "{doc}");
    // A local file composed with the fleet document is the whole file again.
    let local = parse_local(LOCAL).expect("local");
    let composed = local.with_fleet(&parse_fleet(FLEET).expect("fleet"));
    assert_eq!(composed.gateway, local.gateway);
    assert_eq!(composed.store, local.store);
    assert_eq!(composed.units, parse_fleet(FLEET).expect("fleet").units);
    valid(&composed);
}

#[test]
fn fleet_hash_depends_on_content_only() {
    let a = parse_fleet(FLEET).expect("fleet");
    // Same content: other order, spacing, comments, inline tables, a default spelled out.
    let b = parse_fleet(
        r#"
[[routes]]
service   = "echo"   # the one route
name = "root"
path_prefix = "/"

[[units]]
slots = ["0-9999"]
name = "A"

[[services]]
name = "echo"
instances = { A = ["127.0.0.1:9001"] }
"#,
    )
    .expect("fleet");
    let h = fleet_hash(&a);
    assert_eq!(h, fleet_hash(&b));
    assert_eq!(h.len(), 32);
    assert!(
        h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
        "{h}"
    );
    // Not the local file: two gateways with different local files, same fleet.
    let one = parse_raw(&format!("{LOCAL}{FLEET}")).expect("one");
    let mut other = one.clone();
    other.gateway.listen = vec!["127.0.0.1:9090".into()];
    other.store = None;
    assert_eq!(fleet_hash(&RawFleet::from_config(&one)), h);
    assert_eq!(fleet_hash(&RawFleet::from_config(&other)), h);
    // Any change of content changes it.
    let mut c = a.clone();
    c.routing.epoch += 1;
    assert_ne!(fleet_hash(&c), h);
}

#[test]
fn validate_local_checks_the_per_process_sections_alone() {
    let raw = parse_local(LOCAL).expect("local");
    let l = match validate_local(&raw, no_dir()) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        (l.unit.as_str(), l.store.gateway_id.as_str()),
        ("A", "gw-a1")
    );
    assert_eq!(
        l.gateway.listen,
        vec!["127.0.0.1:8080".parse().expect("addr")]
    );
    assert!(matches!(&l.store.kind, StoreKind::Etcd { prefix, .. } if prefix == "/unitgate/prod"));
    assert_eq!(l.admin.map(|a| a.token), Some("t".to_owned()));

    let mut bad = raw.clone();
    bad.gateway.unit = String::new();
    bad.gateway.listen = vec!["nowhere".into()];
    bad.admin = Some(from_toml("listen = \"127.0.0.1:1\""));
    let errs = validate_local(&bad, no_dir()).expect_err("invalid");
    assert_errors(
        errs,
        &[
            ("gateway.unit", "is required"),
            ("gateway.listen[0]", "expected IP:port"),
            ("admin.token", "token or token_env is required"),
        ],
    );
}

#[test]
fn check_an_etcd_local_file() {
    match check(LOCAL, no_dir()) {
        Ok(Checked::Local(l)) => assert_eq!(l.unit, "A"),
        Ok(Checked::Full(_)) => panic!("an etcd local file is checked on its own"),
        Err(e) => panic!("{e}"),
    }
    // Misplaced sections, parse errors and validation errors in one report.
    let text = LOCAL
        .replace(
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"localhost:80\"]\nthread = 2",
        )
        .replace("prefix = \"/unitgate/prod\"", "prefix = \"unitgate\"")
        + FLEET;
    let errs = match check(&text, no_dir()) {
        Err(e) => e,
        Ok(_) => panic!("expected errors"),
    };
    assert_errors(
        errs,
        &[
            ("gateway.thread", "unknown field `thread`"),
            ("units", "fleet-wide section not allowed"),
            ("services", "fleet-wide section not allowed"),
            ("routes", "fleet-wide section not allowed"),
            ("gateway.listen[0]", "host names are not supported"),
            ("store.prefix", "must start with \"/\""),
        ],
    );
}

#[test]
fn check_a_file_store_file_validates_everything() {
    match check(DESIGN, no_dir()) {
        Ok(Checked::Full(c)) => assert_eq!(c.units.len(), 2),
        Ok(Checked::Local(_)) => panic!("a file store holds everything"),
        Err(e) => panic!("{e}"),
    }
    let text = DESIGN.replace("service = \"orders\"", "service = \"ordrs\"");
    let errs = match check(&text, no_dir()) {
        Err(e) => e,
        Ok(_) => panic!("expected errors"),
    };
    assert_errors(errs, &[("routes[0].service", "unknown service \"ordrs\"")]);
}

#[test]
fn check_composed_puts_each_error_under_its_file() {
    let c = match check_composed(LOCAL, FLEET, no_dir()) {
        Ok(c) => c,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!((c.units.len(), c.store.gateway_id.as_str()), (1, "gw-a1"));

    let local = LOCAL.replace("token = \"t\"", "tokn = \"t\"");
    let fleet = format!("[redis]\nurl = \"x\"\n{FLEET}")
        .replace("service = \"echo\"", "service = \"ordrs\"\nretrys = 2");
    let e = check_composed(&local, &fleet, no_dir()).expect_err("invalid");
    assert_errors(
        crate::ConfigErrors(e.local),
        &[
            ("admin.tokn", "unknown field `tokn`"),
            ("admin.token", "token or token_env is required"),
        ],
    );
    assert_errors(
        crate::ConfigErrors(e.fleet),
        &[
            ("routes[0].retrys", "unknown field `retrys`"),
            ("routes[0].service", "unknown service \"ordrs\""),
            ("redis.url", "must be a Redis URL"),
        ],
    );
    // A syntax error in one file does not hide the other's errors.
    let e = check_composed("[gateway\n", &fleet, no_dir()).expect_err("invalid");
    assert_eq!(e.local.len(), 1);
    assert!(e.local[0].message.contains("line 1"), "{:?}", e.local);
    assert_eq!(e.fleet.len(), 1, "{:?}", e.fleet);
}
