//! unitgate configuration: the raw TOML schema ([`raw`]), the single validation
//! step ([`validate()`]) that reports every error with its path, and the typed
//! [`Config`] the gateway, plugins and admin API run on (names resolved to
//! indices, secrets read from the environment, referenced files read).
//!
//! This crate must not know pingora, the network or the running gateway: it
//! turns text into a checked value and nothing else. Watching the file and
//! swapping snapshots belong to the gateway.

mod errors;
mod rate;
pub mod raw;
mod typed;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use errors::{ConfigError, ConfigErrors};
pub use rate::{parse_rate, Rate};
pub use raw::RawConfig;
pub use typed::*;
pub use validate::{validate, validate_local};

/// Parses TOML `text` into the raw schema. Syntax errors, wrong types and
/// unknown keys stop parsing; the one error carries the key path (when known)
/// and the line and column.
pub fn parse_raw(text: &str) -> Result<RawConfig, ConfigErrors> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e
            .path()
            .iter()
            .next()
            .map(|_| e.path().to_string())
            .unwrap_or_default();
        let inner = e.into_inner();
        let at = inner.span().map(|span| line_col(text, span.start));
        // One error per line in `ConfigErrors`'s Display: fold toml's multi-line messages.
        let text = inner.message().trim().replace('\n', ": ");
        let message = match at {
            Some((line, col)) => format!("{text} (line {line}, column {col})"),
            None => text,
        };
        ConfigErrors::one(path, message)
    })
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses and validates TOML `text`; relative file names resolve against `base_dir`.
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    validate(&parse_raw(text)?, base_dir)
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one("", format!("cannot read {}: {e}", path.display())))?;
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parse(&text, base_dir)
}
