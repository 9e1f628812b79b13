//! unitgate configuration: the raw TOML schema ([`raw`]), the single validation
//! step ([`validate()`]) that reports every error with its path, the typed
//! [`Config`] the gateway, plugins and admin API run on (names resolved to
//! indices, secrets read from the environment, referenced files read), and the
//! split of a config into its per-process and fleet-wide parts ([`fleet`]).
//!
//! This crate must not know pingora, the network or the running gateway: it
//! turns text into a checked value and nothing else. Watching the file, talking
//! to the config store and swapping snapshots belong to the gateway.

mod errors;
pub mod fleet;
mod parse;
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

/// Parses TOML `text` into the raw schema. A syntax error stops parsing (one
/// error, with line and column); past it, every unknown key and wrong-typed
/// value of every section is reported, each with its key path, line and column.
pub fn parse_raw(text: &str) -> Result<RawConfig, ConfigErrors> {
    parse::lenient::<RawConfig>(text, parse::syntax(text)?)?.into_clean(Vec::new())
}

/// Parses and validates TOML `text`; relative file names resolve against
/// `base_dir`. One report: the parse errors of [`parse_raw`], then the
/// validation errors of what could be read (leaving out those caused by a
/// value that could not be read).
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let read = parse::lenient::<RawConfig>(text, parse::syntax(text)?)?;
    let validated = validate(&read.value, base_dir);
    read.finish(Vec::new(), validated)
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    parse(&read_file(path)?, base_dir_of(path))
}

/// The text of the config file at `path`, or an error naming the file.
pub fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one("", format!("cannot read {}: {e}", path.display())))
}

/// The folder relative names in the config file at `path` resolve against.
pub fn base_dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
