//! `[routing]` and `[[units]]`: slots, coverage, failover, key sources, signing keys.

use super::*;
use crate::raw::RawUnit;
use crate::{KeySource, SlotRange, UnitState};

fn unit(text: &str) -> RawUnit {
    from_toml(text)
}

/// Units A (0-4999) and B (5000-9999).
fn two_units() -> RawConfig {
    let mut raw = minimal();
    raw.units[0].slots = vec!["0-4999".into()];
    raw.units
        .push(unit("name = \"B\"\nslots = [\"5000-9999\"]"));
    raw
}

#[test]
fn slots_bounds() {
    let mut raw = minimal();
    raw.routing.slots = 0;
    assert_only_error(&raw, "routing.slots", "between 1 and 1000000");
    raw.routing.slots = 1_000_001;
    assert_only_error(&raw, "routing.slots", "between 1 and 1000000");
    raw.routing.slots = 1_000_000;
    raw.units[0].slots = vec!["0-999999".into()];
    assert_eq!(valid(&raw).routing.slots, 1_000_000);
}

#[test]
fn slot_range_syntax() {
    let mut raw = two_units();
    raw.units[1].slots = vec!["5000-9998".into(), "9999".into()];
    assert_eq!(
        valid(&raw).units[1].slots[1],
        SlotRange {
            start: 9999,
            end: 9999
        }
    );
    for (bad, msg) in [
        ("5000-", "expected \"a-b\" or \"a\""),
        ("x-9999", "expected \"a-b\" or \"a\""),
        ("9999-5000", "start is greater than end"),
        ("5000-10000", "out of bounds"),
    ] {
        raw.units[1].slots = vec![bad.into()];
        // Gaps are not reported when a range is invalid: only the range error.
        assert_only_error(&raw, "units[1].slots[0]", msg);
    }
}

#[test]
fn overlap_names_both_units() {
    let mut raw = two_units();
    raw.units[1].slots = vec!["4000-9999".into()];
    assert_only_error(
        &raw,
        "units[1].slots[0]",
        "slots 4000-9999 overlap units[0] \"A\" (0-4999)",
    );
}

#[test]
fn overlap_within_one_unit() {
    let mut raw = minimal();
    raw.units[0].slots = vec!["0-9999".into(), "10".into()];
    assert_only_error(
        &raw,
        "units[0].slots[1]",
        "overlap units[0].slots[0] (0-9999) of the same unit",
    );
}

#[test]
fn gaps_list_the_first_missing_ranges() {
    let mut raw = two_units();
    raw.units[0].slots = vec!["1-99".into(), "200-4999".into()];
    raw.units[1].slots = vec!["5000-9000".into()];
    assert_only_error(
        &raw,
        "units",
        "slots not owned by any unit: 0, 100-199, 9001-9999",
    );

    let ranges: Vec<String> = (0..10).map(|i| (i * 1000).to_string()).collect();
    raw.units[0].slots = ranges;
    raw.units[1].slots = vec![];
    assert_only_error(
        &raw,
        "units",
        "1-999, 1001-1999, 2001-2999, 3001-3999, 4001-4999 (and 5 more ranges)",
    );
}

#[test]
fn units_are_required_and_unique() {
    let mut raw = minimal();
    raw.units.clear();
    raw.services[0].instances.clear();
    raw.services[0].instances.insert("A".into(), vec![]);
    let errs = invalid(&raw);
    assert!(
        errs.iter()
            .any(|e| e.path == "units" && e.message.contains("at least one unit")),
        "{errs}"
    );

    let mut raw = two_units();
    raw.units[1].name = "A".into();
    assert_only_error(
        &raw,
        "units[1].name",
        "duplicate unit \"A\" (also units[0])",
    );
    raw.units[1].name = "B C".into();
    assert_only_error(&raw, "units[1].name", "invalid name");
    raw.units[1].name = String::new();
    assert_only_error(&raw, "units[1].name", "is required");
}

#[test]
fn failover_rules() {
    let mut raw = two_units();
    raw.units[0].failover = vec!["B".into()];
    raw.units[1].failover = vec!["A".into()];
    let c = valid(&raw);
    assert_eq!(
        (c.units[0].failover.clone(), c.units[1].failover.clone()),
        (vec![1], vec![0])
    );
    raw.units[0].failover = vec!["C".into()];
    assert_only_error(&raw, "units[0].failover[0]", "unknown unit \"C\"");
    raw.units[0].failover = vec!["A".into()];
    assert_only_error(&raw, "units[0].failover[0]", "cannot fail over to itself");
    raw.units[0].failover = vec!["B".into(), "B".into()];
    assert_only_error(&raw, "units[0].failover[1]", "duplicate unit \"B\"");
}

#[test]
fn unit_state() {
    let mut raw = two_units();
    raw.units[1].state = "draining".into();
    assert_eq!(valid(&raw).units[1].state, UnitState::Draining);
    raw.units[1].state = "down".into();
    assert_eq!(valid(&raw).units[1].state, UnitState::Down);
    raw.units[1].state = "offline".into();
    assert_only_error(
        &raw,
        "units[1].state",
        "expected one of active, draining, down",
    );
}

#[test]
fn key_sources() {
    let mut raw = minimal();
    raw.routing.key = vec!["header:X-Tenant".into(), "query:u".into()];
    let c = valid(&raw);
    assert_eq!(
        c.routing.key,
        vec![
            KeySource::Header("x-tenant".into()),
            KeySource::Query("u".into())
        ]
    );
    for (bad, msg) in [
        ("header:", "must not be empty"),
        ("jwt:", "must not be empty"),
        ("header:x user", "invalid header name"),
        ("cookie:a;b", "invalid cookie name"),
        ("body:x", "expected jwt:<claim>"),
        ("x-user-id", "expected jwt:<claim>"),
    ] {
        raw.routing.key = vec![bad.into()];
        assert_only_error(&raw, "routing.key[0]", msg);
    }
    raw.routing.key = vec!["cookie:uid".into(), "cookie:uid".into()];
    assert_only_error(&raw, "routing.key[1]", "duplicate key source");
}

#[test]
fn cookie_name_and_ttl() {
    let mut raw = minimal();
    raw.routing.cookie = "ug route".into();
    assert_only_error(&raw, "routing.cookie", "invalid cookie name");
    raw.routing.cookie = "ug_route".into();
    raw.routing.cookie_ttl_secs = 0;
    assert_only_error(&raw, "routing.cookie_ttl_secs", "at least 1");
}

#[test]
fn signing_keys_and_active_key() {
    let mut raw = minimal();
    raw.routing.signing_keys.insert("k1".into(), "one".into());
    assert_only_error(
        &raw,
        "routing.active_key",
        "is required when signing keys are configured",
    );
    raw.routing.active_key = Some("k2".into());
    assert_only_error(
        &raw,
        "routing.active_key",
        "\"k2\" is not in routing.signing_keys",
    );
    raw.routing.signing_keys.insert("k2".into(), "two".into());
    let c = valid(&raw);
    assert_eq!(c.routing.signing_keys.len(), 2);
    raw.routing.signing_keys.insert("k2".into(), String::new());
    assert_only_error(&raw, "routing.signing_keys.k2", "must not be empty");
    raw.routing.signing_keys.insert("k2".into(), "two".into());
    raw.routing
        .signing_keys
        .insert("k.3".into(), "three".into());
    assert_only_error(&raw, "routing.signing_keys.\"k.3\"", "invalid key id");

    let mut raw = minimal();
    raw.routing.active_key = Some("k1".into());
    assert_only_error(
        &raw,
        "routing.active_key",
        "\"k1\" is not in routing.signing_keys",
    );
}

#[test]
fn signing_keys_env_merge() {
    set_env("UG_TEST_SIGNING_K2", "second-secret");
    let mut raw = minimal();
    raw.routing.signing_keys.insert("k1".into(), "first".into());
    raw.routing
        .signing_keys_env
        .insert("k2".into(), "UG_TEST_SIGNING_K2".into());
    raw.routing.active_key = Some("k2".into());
    let c = valid(&raw);
    assert_eq!(
        c.routing.signing_keys.get("k2").map(Vec::as_slice),
        Some(&b"second-secret"[..])
    );
    assert_eq!(
        c.routing.signing_keys.get("k1").map(Vec::as_slice),
        Some(&b"first"[..])
    );

    raw.routing
        .signing_keys_env
        .insert("k1".into(), "UG_TEST_SIGNING_K2".into());
    assert_only_error(
        &raw,
        "routing.signing_keys_env.k1",
        "also in routing.signing_keys",
    );
    raw.routing.signing_keys_env.remove("k1");
    raw.routing
        .signing_keys_env
        .insert("k3".into(), "UG_TEST_SIGNING_UNSET".into());
    assert_only_error(
        &raw,
        "routing.signing_keys_env.k3",
        "\"UG_TEST_SIGNING_UNSET\" is not set",
    );
}

#[test]
fn forbidden_writes_and_overrides() {
    let mut raw = two_units();
    raw.routing.forbidden_writes = vec!["2000-2999".into(), "7".into()];
    raw.routing.overrides.insert("vip-42".into(), "B".into());
    let c = valid(&raw);
    assert!(c.routing.write_forbidden(2500) && c.routing.write_forbidden(7));
    assert!(!c.routing.write_forbidden(3000));
    assert_eq!(c.routing.overrides.get("vip-42"), Some(&1));
    raw.routing.forbidden_writes = vec!["2000-10000".into()];
    assert_only_error(&raw, "routing.forbidden_writes[0]", "out of bounds");
    raw.routing.forbidden_writes.clear();
    raw.routing.overrides.insert("vip 7".into(), "C".into());
    assert_only_error(&raw, "routing.overrides.\"vip 7\"", "unknown unit \"C\"");
}

#[test]
fn slot_lookup() {
    let c = valid(&two_units());
    assert_eq!(
        (
            c.unit_for_slot(0),
            c.unit_for_slot(4999),
            c.unit_for_slot(5000)
        ),
        (Some(0), Some(0), Some(1))
    );
    assert_eq!(c.unit_for_slot(10_000), None);
}
