//! Unit tests. Rule tests edit a minimal valid [`RawConfig`] and check that the
//! one error expected (path and message) is the only one reported, so a test
//! cannot pass on an unrelated mistake.

mod balancing;
mod examples;
mod fleet;
mod gateway;
mod hardening;
mod jwt;
mod multi;
mod parse;
mod routes;
mod routing;
mod services;
mod splits;
mod store;
mod tls;
mod values;

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{parse_raw, validate, Config, ConfigErrors, RawConfig};

/// The smallest valid configuration: one unit, one service, one route.
pub(crate) const MINIMAL: &str = r#"
[gateway]
unit = "A"

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

pub(crate) fn minimal() -> RawConfig {
    parse_raw(MINIMAL).expect("MINIMAL parses")
}

/// Deserialises one raw struct from a TOML snippet.
pub(crate) fn from_toml<T: DeserializeOwned>(text: &str) -> T {
    toml::from_str(text).expect("snippet parses")
}

/// Base dir for configs that name no files.
pub(crate) fn no_dir() -> &'static Path {
    Path::new("/nonexistent-unitgate-test-dir")
}

pub(crate) fn valid(raw: &RawConfig) -> Config {
    match validate(raw, no_dir()) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

pub(crate) fn invalid(raw: &RawConfig) -> ConfigErrors {
    match validate(raw, no_dir()) {
        Ok(_) => panic!("expected validation errors, got a valid config"),
        Err(e) => e,
    }
}

/// Asserts that validation reports exactly one error, at `path`, whose message
/// contains `needle`.
#[track_caller]
pub(crate) fn assert_only_error(raw: &RawConfig, path: &str, needle: &str) {
    assert_errors(invalid(raw), &[(path, needle)]);
}

/// Asserts that `errs` are exactly `expected` (path, message fragment), in order.
#[track_caller]
pub(crate) fn assert_errors(errs: ConfigErrors, expected: &[(&str, &str)]) {
    let ok = errs.len() == expected.len()
        && errs
            .iter()
            .zip(expected)
            .all(|(e, (p, m))| e.path == *p && e.message.contains(m));
    assert!(ok, "expected errors {expected:?}\ngot:\n{errs}");
}

/// Sets a process environment variable for a test. Each test uses its own
/// variable names so tests running in parallel cannot interfere.
pub(crate) fn set_env(var: &str, value: &str) {
    std::env::set_var(var, value);
}
