//! The split of a config into its per-process part (the local file) and its
//! fleet-wide part (a fleet document, kept in etcd with `store.kind = "etcd"`).
//!
//! `[gateway]`, `[admin]` and `[store]` are per process ([`LOCAL_SECTIONS`]);
//! `[routing]`, `[[units]]`, `[[services]]`, `[[routes]]`, `[jwt.*]` and
//! `[redis]` are fleet-wide ([`FLEET_SECTIONS`]). A gateway composes the two
//! with [`RawConfig::with_fleet`] and validates the result as one config with
//! [`crate::validate()`]. Whether a section is *present* is read from the
//! document's top-level keys: the raw structs default every absent section.
//!
//! Nothing here talks to etcd; the gateway does, with these texts and hashes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::errors::{ConfigError, ConfigErrors};
use crate::parse::{self, Lenient};
use crate::raw::{RawConfig, RawJwt, RawRedis, RawRoute, RawRouting, RawService, RawUnit};
use crate::typed::{Config, LocalConfig};
use crate::validate::{validate, validate_local};

/// Per-process sections: they stay in each gateway's local file.
pub const LOCAL_SECTIONS: &[&str] = &["gateway", "admin", "store", "tls", "tracing"];

/// Fleet-wide sections: every gateway of the fleet must agree on them.
pub const FLEET_SECTIONS: &[&str] = &["routing", "units", "services", "routes", "jwt", "redis"];

/// A fleet document: the fleet-wide sections only, with the same raw types
/// (and the same defaults) as [`RawConfig`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub units: Vec<RawUnit>,
    #[serde(default)]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub jwt: BTreeMap<String, RawJwt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RawRedis>,
}

impl RawFleet {
    /// The fleet-wide sections of a whole config (e.g. for `fleet init` from a
    /// file that still holds everything).
    pub fn from_config(raw: &RawConfig) -> RawFleet {
        RawFleet {
            routing: raw.routing.clone(),
            units: raw.units.clone(),
            services: raw.services.clone(),
            routes: raw.routes.clone(),
            jwt: raw.jwt.clone(),
            redis: raw.redis.clone(),
        }
    }
}

impl RawConfig {
    /// This config's per-process sections with `fleet`'s fleet-wide ones:
    /// what a gateway in a fleet validates and runs. Fleet-wide sections of
    /// `self`, if any, are replaced.
    pub fn with_fleet(&self, fleet: &RawFleet) -> RawConfig {
        RawConfig {
            gateway: self.gateway.clone(),
            admin: self.admin.clone(),
            store: self.store.clone(),
            tls: self.tls.clone(),
            tracing: self.tracing.clone(),
            routing: fleet.routing.clone(),
            units: fleet.units.clone(),
            services: fleet.services.clone(),
            routes: fleet.routes.clone(),
            jwt: fleet.jwt.clone(),
            redis: fleet.redis.clone(),
        }
    }
}

/// The fleet document as TOML (pretty; sections and keys in schema order, map
/// keys sorted), for the store and `cache_file`. Fails only on values TOML
/// cannot hold, e.g. an integer above `i64::MAX` set through the admin API.
pub fn fleet_document(fleet: &RawFleet) -> Result<String, ConfigErrors> {
    toml::to_string_pretty(fleet)
        .map_err(|e| ConfigErrors::one("", format!("cannot write the fleet document as TOML: {e}")))
}

/// The fleet config's identity: the first 16 bytes of sha256 over its
/// canonical JSON, as 32 lowercase hex digits. Gateways compare it across the
/// fleet, so it depends on the fleet document's content only: not on its
/// formatting, key order, defaults spelled out or left out, nor on any local file.
pub fn fleet_hash(fleet: &RawFleet) -> String {
    // Cannot fail: every map key is a string and every value has a JSON form.
    let json = serde_json::to_vec(fleet).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a gateway's local (`--config`) file. With `store.kind = "etcd"` each
/// fleet-wide section it contains is an error (all of them, with the parse
/// errors); with `kind = "file"` it may hold everything, as [`crate::parse_raw`].
pub fn parse_local(text: &str) -> Result<RawConfig, ConfigErrors> {
    let (read, misplaced) = read_local(text)?;
    read.into_clean(misplaced)
}

/// Parses a fleet document: fleet-wide sections only; a per-process section
/// in it is an error, reported with every parse error of the rest.
pub fn parse_fleet(text: &str) -> Result<RawFleet, ConfigErrors> {
    let (read, misplaced) = read_fleet(text)?;
    read.into_clean(misplaced)
}

/// Whether an error at `path` belongs to a per-process section (else to a
/// fleet-wide one): which file of a composed check it is in.
pub fn is_local_path(path: &str) -> bool {
    let section = path.split(['.', '[']).next().unwrap_or_default();
    LOCAL_SECTIONS.contains(&section)
}

/// What [`check`] found valid.
#[derive(Debug)]
pub enum Checked {
    /// A whole config (`store.kind = "file"`).
    Full(Box<Config>),
    /// A `store.kind = "etcd"` local file on its own; the fleet config lives in etcd.
    Local(Box<LocalConfig>),
}

/// `unitgate check --config FILE`: every error of the file in one report
/// (parse errors of every section, misplaced sections, validation errors).
/// With `store.kind = "etcd"` only the per-process sections are validated
/// ([`validate_local`]), else the whole config.
pub fn check(text: &str, base_dir: &Path) -> Result<Checked, ConfigErrors> {
    let (read, misplaced) = read_local(text)?;
    if is_etcd(&read.value) {
        let validated = validate_local(&read.value, base_dir);
        read.finish(misplaced, validated)
            .map(|l| Checked::Local(Box::new(l)))
    } else {
        let validated = validate(&read.value, base_dir);
        read.finish(misplaced, validated)
            .map(|c| Checked::Full(Box::new(c)))
    }
}

/// The errors of [`check_composed`], by the file they are in.
#[derive(Debug, Default)]
pub struct ComposedErrors {
    /// In the local file (per-process sections, misplaced fleet sections).
    pub local: Vec<ConfigError>,
    /// In the fleet document (fleet-wide sections, misplaced local sections).
    pub fleet: Vec<ConfigError>,
}

/// `unitgate check --config FILE --fleet FLEET.toml`: the local file composed
/// with a fleet document, validated as the gateway would run it. Every error
/// of both files in one report, each under the file it is in. The local
/// file's own fleet-wide sections (allowed with `kind = "file"`) are replaced
/// by the fleet document's.
pub fn check_composed(
    local_text: &str,
    fleet_text: &str,
    base_dir: &Path,
) -> Result<Config, ComposedErrors> {
    let (local, fleet) = match (read_local(local_text), read_fleet(fleet_text)) {
        (Ok(l), Ok(f)) => (l, f),
        // A syntax error in either: what each file can say on its own.
        (l, f) => {
            return Err(ComposedErrors {
                local: errors_of(l),
                fleet: errors_of(f),
            })
        }
    };
    let ((l, misplaced_fleet), (f, misplaced_local)) = (local, fleet);
    let composed = l.value.with_fleet(&f.value);
    let mut out = ComposedErrors {
        local: l.errors.iter().cloned().chain(misplaced_fleet).collect(),
        fleet: f.errors.iter().cloned().chain(misplaced_local).collect(),
    };
    match validate(&composed, base_dir) {
        Ok(c) if out.local.is_empty() && out.fleet.is_empty() => return Ok(c),
        Ok(_) => {}
        Err(errs) => {
            for e in errs {
                if is_local_path(&e.path) {
                    if !l.covers(&e.path) {
                        out.local.push(e);
                    }
                } else if !f.covers(&e.path) {
                    out.fleet.push(e);
                }
            }
        }
    }
    Err(out)
}

fn is_etcd(raw: &RawConfig) -> bool {
    raw.store.as_ref().is_some_and(|s| s.kind == "etcd")
}

/// The local file read leniently, and its misplaced fleet-wide sections
/// (only with `store.kind = "etcd"`).
fn read_local(text: &str) -> Result<(Lenient<RawConfig>, Vec<ConfigError>), ConfigErrors> {
    let table = parse::syntax(text)?;
    let present: Vec<&str> = FLEET_SECTIONS
        .iter()
        .copied()
        .filter(|s| table.contains_key(*s))
        .collect();
    let read = parse::lenient::<RawConfig>(text, table)?;
    let misplaced = match &read.value.store {
        Some(store) if is_etcd(&read.value) => present
            .into_iter()
            .map(|s| {
                ConfigError::new(
                    s,
                    format!(
                        "fleet-wide section not allowed in a local file with store.kind = \"etcd\"; \
                         it lives in etcd under {}",
                        store.prefix
                    ),
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok((read, misplaced))
}

/// The fleet document read leniently past its per-process sections, and those.
fn read_fleet(text: &str) -> Result<(Lenient<RawFleet>, Vec<ConfigError>), ConfigErrors> {
    let mut table = parse::syntax(text)?;
    let misplaced = LOCAL_SECTIONS
        .iter()
        .filter(|s| table.remove(**s).is_some())
        .map(|s| {
            ConfigError::new(
                *s,
                "per-process section not allowed in a fleet document; \
                 it stays in each gateway's local file",
            )
        })
        .collect();
    Ok((parse::lenient::<RawFleet>(text, table)?, misplaced))
}

fn errors_of<T>(r: Result<(Lenient<T>, Vec<ConfigError>), ConfigErrors>) -> Vec<ConfigError> {
    match r {
        Ok((read, misplaced)) => read.errors.iter().cloned().chain(misplaced).collect(),
        Err(e) => e.0,
    }
}
