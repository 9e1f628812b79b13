//! `[routing]` and `[[units]]`: the slot space, the shard map and the routing key.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{check, Cx};
use crate::raw::{RawConfig, RawRouting, RawUnit};
use crate::typed::{KeySource, Routing, SlotRange, Unit, UnitState};

/// Upper bound of `routing.slots`.
pub(crate) const MAX_SLOTS: u64 = 1_000_000;

/// How many uncovered ranges a gap error lists before "and N more".
const GAPS_SHOWN: usize = 5;

pub(super) fn routing_and_units(cx: &mut Cx<'_>, raw: &RawConfig) -> (Routing, Vec<Unit>) {
    let r = &raw.routing;
    let slots = match u32::try_from(r.slots) {
        Ok(n) if (1..=MAX_SLOTS).contains(&r.slots) => Some(n),
        _ => {
            cx.errs.push(
                "routing.slots",
                format!("must be between 1 and {MAX_SLOTS}"),
            );
            None
        }
    };
    let routing = routing(cx, r, slots);
    let units = units(cx, &raw.units, slots);
    (routing, units)
}

/// Slot ranges are checked against `slots`, or for syntax only when it is invalid.
fn slot_range(s: &str, slots: Option<u32>) -> Result<SlotRange, String> {
    SlotRange::parse(s, slots.unwrap_or(u32::MAX))
}

fn routing(cx: &mut Cx<'_>, r: &RawRouting, slots: Option<u32>) -> Routing {
    let mut key = Vec::new();
    for (i, s) in r.key.iter().enumerate() {
        let path = format!("routing.key[{i}]");
        if let Some(k) = cx.errs.check(&path, key_source(s)) {
            if let Some(j) = key.iter().position(|e| *e == k) {
                cx.errs.push(
                    path,
                    format!("duplicate key source (also routing.key[{j}])"),
                );
            }
            key.push(k);
        }
    }
    if !check::is_token(&r.cookie) {
        cx.errs.push(
            "routing.cookie",
            format!("invalid cookie name {:?}", r.cookie),
        );
    }
    if r.cookie_ttl_secs == 0 {
        cx.errs
            .push("routing.cookie_ttl_secs", "must be at least 1");
    }
    let signing_keys = signing_keys(cx, r);
    let configured = !r.signing_keys.is_empty() || !r.signing_keys_env.is_empty();
    match &r.active_key {
        None if configured => cx.errs.push(
            "routing.active_key",
            "is required when signing keys are configured",
        ),
        Some(k) if !r.signing_keys.contains_key(k) && !r.signing_keys_env.contains_key(k) => {
            cx.errs.push(
                "routing.active_key",
                format!("{k:?} is not in routing.signing_keys"),
            )
        }
        _ => {}
    }
    let forbidden_writes = r
        .forbidden_writes
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            cx.errs.check(
                format!("routing.forbidden_writes[{i}]"),
                slot_range(s, slots),
            )
        })
        .collect();
    let mut overrides = HashMap::new();
    for (k, unit) in &r.overrides {
        let path = check::key_path("routing.overrides", k);
        if k.is_empty() {
            cx.errs.push(&path, "routing key must not be empty");
        }
        if let Some(id) = cx.unit(path, unit) {
            overrides.insert(k.clone(), id);
        }
    }
    Routing {
        slots: slots.unwrap_or(1),
        epoch: r.epoch,
        key,
        cookie: r.cookie.clone(),
        cookie_ttl: Duration::from_secs(r.cookie_ttl_secs),
        cookie_secure: r.cookie_secure,
        signing_keys,
        active_key: r.active_key.clone(),
        max_hops: r.max_hops,
        forbidden_writes,
        overrides,
        allow_empty_routes: r.allow_empty_routes,
    }
}

/// `jwt:<claim>`, `header:<name>`, `cookie:<name>` or `query:<name>`.
fn key_source(s: &str) -> Result<KeySource, String> {
    let expected = "expected jwt:<claim>, header:<name>, cookie:<name> or query:<name>";
    let Some((kind, name)) = s.split_once(':') else {
        return Err(format!("invalid key source {s:?}: {expected}"));
    };
    if name.is_empty() && matches!(kind, "jwt" | "header" | "cookie" | "query") {
        return Err(format!(
            "invalid key source {s:?}: the name after ':' must not be empty"
        ));
    }
    match kind {
        "jwt" => Ok(KeySource::Jwt(name.to_owned())),
        "header" => check::header_name(name)
            .map(KeySource::Header)
            .map_err(|e| format!("invalid key source {s:?}: {e}")),
        "cookie" if check::is_token(name) => Ok(KeySource::Cookie(name.to_owned())),
        "cookie" => Err(format!(
            "invalid key source {s:?}: invalid cookie name {name:?}"
        )),
        "query" => Ok(KeySource::Query(name.to_owned())),
        _ => Err(format!("invalid key source {s:?}: {expected}")),
    }
}

/// A key id: it is a field of the dot-separated routing cookie.
fn kid(k: &str) -> Result<(), String> {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "invalid key id {k:?}: use letters, digits, '-' or '_'"
        ))
    }
}

/// `signing_keys` merged with `signing_keys_env`.
fn signing_keys(cx: &mut Cx<'_>, r: &RawRouting) -> BTreeMap<String, Vec<u8>> {
    let mut keys = BTreeMap::new();
    for (k, secret) in &r.signing_keys {
        let path = check::key_path("routing.signing_keys", k);
        if cx.errs.check(&path, kid(k)).is_none() {
            continue;
        }
        if secret.is_empty() {
            cx.errs.push(path, "must not be empty");
            continue;
        }
        keys.insert(k.clone(), secret.as_bytes().to_vec());
    }
    for (k, var) in &r.signing_keys_env {
        let path = check::key_path("routing.signing_keys_env", k);
        if cx.errs.check(&path, kid(k)).is_none() {
            continue;
        }
        if r.signing_keys.contains_key(k) {
            cx.errs.push(
                path,
                format!("key id {k:?} is also in routing.signing_keys"),
            );
            continue;
        }
        if let Some(secret) = cx.errs.check(path, check::env_var(var)) {
            keys.insert(k.clone(), secret.into_bytes());
        }
    }
    keys
}

fn units(cx: &mut Cx<'_>, raw: &[RawUnit], slots: Option<u32>) -> Vec<Unit> {
    if raw.is_empty() {
        cx.errs.push("units", "at least one unit is required");
    }
    let mut all_ranges_ok = true;
    let mut units = Vec::with_capacity(raw.len());
    for (i, u) in raw.iter().enumerate() {
        let mut ranges = Vec::new();
        for (j, s) in u.slots.iter().enumerate() {
            match cx
                .errs
                .check(format!("units[{i}].slots[{j}]"), slot_range(s, slots))
            {
                Some(r) => ranges.push(r),
                None => all_ranges_ok = false,
            }
        }
        let mut failover = Vec::new();
        for (j, name) in u.failover.iter().enumerate() {
            let path = format!("units[{i}].failover[{j}]");
            if *name == u.name {
                cx.errs.push(path, "a unit cannot fail over to itself");
            } else if u.failover[..j].contains(name) {
                cx.errs
                    .push(path, format!("duplicate unit {name:?} in failover"));
            } else if let Some(id) = cx.unit(path, name) {
                failover.push(id);
            }
        }
        let state = cx.errs.check(
            format!("units[{i}].state"),
            check::choice(
                &u.state,
                &[
                    ("active", UnitState::Active),
                    ("draining", UnitState::Draining),
                    ("down", UnitState::Down),
                ],
            ),
        );
        units.push(Unit {
            name: u.name.clone(),
            slots: ranges,
            failover,
            state: state.unwrap_or(UnitState::Active),
        });
    }
    if let Some(slots) = slots {
        if !units.is_empty() {
            coverage(cx, &units, slots, all_ranges_ok);
        }
    }
    units
}

/// Every slot must be owned by exactly one unit: reports overlaps (always) and
/// gaps (only when every range parsed, else the gaps would be noise).
fn coverage(cx: &mut Cx<'_>, units: &[Unit], slots: u32, report_gaps: bool) {
    // (range, unit index, index in the unit's slots list)
    let mut pieces: Vec<(SlotRange, usize, usize)> = units
        .iter()
        .enumerate()
        .flat_map(|(u, unit)| unit.slots.iter().enumerate().map(move |(j, r)| (*r, u, j)))
        .collect();
    pieces.sort_by_key(|(r, u, j)| (r.start, r.end, *u, *j));
    let mut gaps = Vec::new();
    let mut next: u64 = 0; // first slot not yet covered
    let mut furthest: Option<(SlotRange, usize, usize)> = None;
    for &(r, u, j) in &pieces {
        match furthest {
            Some((f, fu, fj)) if r.start <= f.end => {
                let other = if fu == u {
                    format!("units[{fu}].slots[{fj}] ({f}) of the same unit")
                } else {
                    format!("units[{fu}] {:?} ({f})", units[fu].name)
                };
                cx.errs.push(
                    format!("units[{u}].slots[{j}]"),
                    format!("slots {r} overlap {other}"),
                );
            }
            _ if u64::from(r.start) > next => gaps.push((next, u64::from(r.start) - 1)),
            _ => {}
        }
        if furthest.is_none_or(|(f, _, _)| r.end > f.end) {
            furthest = Some((r, u, j));
            next = u64::from(r.end) + 1;
        }
    }
    if next < u64::from(slots) {
        gaps.push((next, u64::from(slots) - 1));
    }
    if report_gaps && !gaps.is_empty() {
        let shown: Vec<String> = gaps
            .iter()
            .take(GAPS_SHOWN)
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        let mut msg = format!("slots not owned by any unit: {}", shown.join(", "));
        if gaps.len() > GAPS_SHOWN {
            msg.push_str(&format!(" (and {} more ranges)", gaps.len() - GAPS_SHOWN));
        }
        cx.errs.push("units", msg);
    }
}
