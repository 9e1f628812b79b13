//! TOML text into the raw schema without stopping at the first mistake.
//!
//! A syntax error still stops everything (nothing can be read past it). After
//! that, the document is deserialised again and again: each pass that fails
//! records its one error (unknown key or wrong type, with path, line and
//! column), drops the value at fault and tries once more, until the rest reads
//! cleanly. The raw structs stay strict (`deny_unknown_fields`) and no key list
//! is duplicated here: serde says what is wrong, this module only steps past it.
//!
//! A dropped value takes its default, so validation can still run on what was
//! read; its errors at or under a dropped path are noise (a wrong-typed
//! `service` would also be "required") and [`Lenient::finish`] leaves them out.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::errors::{ConfigError, ConfigErrors};
use crate::validate::key_path;

/// Past this many errors the file is not worth reading further.
const MAX_ERRORS: usize = 200;

/// What could be read from a document, and what could not.
#[derive(Debug)]
pub(crate) struct Lenient<T> {
    /// The document with every value at fault dropped (defaults in their place).
    pub(crate) value: T,
    /// Unknown keys and type errors, in document order.
    pub(crate) errors: Vec<ConfigError>,
    /// Paths whose values were dropped; validation errors at or under them are noise.
    dropped: Vec<String>,
}

impl<T> Lenient<T> {
    /// Whether validation errors at `path` come from a value dropped here.
    pub(crate) fn covers(&self, path: &str) -> bool {
        self.dropped.iter().any(|d| {
            path.strip_prefix(d.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    /// The value if it was read without a mistake and `extra` is empty; else
    /// the parse errors, then `extra`.
    pub(crate) fn into_clean(self, extra: Vec<ConfigError>) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() && extra.is_empty() {
            return Ok(self.value);
        }
        let mut all = self.errors;
        all.extend(extra);
        Err(ConfigErrors(all))
    }

    /// One report: the parse errors, then `extra` (errors found between
    /// parsing and validating), then `validated`'s errors not caused by a
    /// dropped value.
    pub(crate) fn finish<U>(
        self,
        extra: Vec<ConfigError>,
        validated: Result<U, ConfigErrors>,
    ) -> Result<U, ConfigErrors> {
        let later = match validated {
            Ok(v) if self.errors.is_empty() && extra.is_empty() => return Ok(v),
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        };
        let mut all = self.errors.clone();
        all.extend(extra);
        all.extend(later.into_iter().filter(|e| !self.covers(&e.path)));
        Err(ConfigErrors(all))
    }
}

/// The syntax pass: a TOML table or the one syntax error, with line and column.
pub(crate) fn syntax(text: &str) -> Result<toml::Table, ConfigErrors> {
    text.parse::<toml::Table>().map_err(|e| {
        let at = e.span().map(|s| line_col(text, s.start));
        ConfigErrors::one("", with_position(e.message(), at))
    })
}

/// Reads `table` (parsed from `text`) as a `T`, stepping past every unknown key
/// and wrong-typed value. `Err` only when a mistake cannot be stepped past
/// (no path to drop), carrying every error found up to it.
pub(crate) fn lenient<T: DeserializeOwned>(
    text: &str,
    table: toml::Table,
) -> Result<Lenient<T>, ConfigErrors> {
    // Spans for line and column; the syntax pass succeeded, so this parses too.
    let doc = toml_edit::ImDocument::parse(text).ok();
    let mut tree = toml::Value::Table(table);
    let mut found: Vec<(Option<usize>, ConfigError)> = Vec::new();
    let mut dropped = Vec::new();
    let mut shifts = Shifts::default();
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(tree.clone()) {
            Ok(value) => {
                // Document order; errors without a position go last.
                found.sort_by_key(|(at, _)| at.unwrap_or(usize::MAX));
                return Ok(Lenient {
                    value,
                    errors: found.into_iter().map(|(_, e)| e).collect(),
                    dropped,
                });
            }
            Err(e) => e,
        };
        let here = segments(err.path());
        let original = shifts.original(&here);
        let message = err.inner().message().trim().replace('\n', ": ");
        let want_key = message.starts_with("unknown field");
        let at = doc
            .as_ref()
            .and_then(|d| offset_of(d.as_item(), &original, want_key));
        let message = with_position(&message, at.map(|o| line_col(text, o)));
        found.push((at, ConfigError::new(display(&original), message)));
        match drop_at(&mut tree, &here) {
            Some(Dropped::Value) => dropped.push(display(&original)),
            Some(Dropped::Element) => {
                // Later elements move up one: record it so their paths stay
                // those of the file, and silence validation of the array.
                let array = &original[..original.len() - 1];
                dropped.push(display(array));
                shifts.record(&original);
            }
            None => {
                found.sort_by_key(|(at, _)| at.unwrap_or(usize::MAX));
                return Err(ConfigErrors(found.into_iter().map(|(_, e)| e).collect()));
            }
        }
        if found.len() >= MAX_ERRORS {
            let mut errs: Vec<ConfigError> = found.into_iter().map(|(_, e)| e).collect();
            errs.push(ConfigError::new(
                "",
                format!("stopped after {MAX_ERRORS} errors"),
            ));
            return Err(ConfigErrors(errs));
        }
    }
}

/// `message (line L, column C)`; toml's multi-line messages folded into one line.
fn with_position(message: &str, at: Option<(usize, usize)>) -> String {
    let text = message.trim().replace('\n', ": ");
    match at {
        Some((line, col)) => format!("{text} (line {line}, column {col})"),
        None => text,
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The path serde reported, up to the first step it could not name.
fn segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .map_while(|s| match s {
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Seq { index } => Some(Seg::Index(*index)),
            _ => None,
        })
        .collect()
}

/// `routes[1].pathprefix`, map keys quoted when not bare (as validation does).
fn display(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(&key_path("", k)[1..]),
            Seg::Key(k) => out = key_path(&out, k),
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Elements dropped from arrays so far, by the array's path in the file, as
/// their indices in the file: maps an index in the trimmed tree back.
#[derive(Default)]
struct Shifts(HashMap<String, Vec<usize>>);

impl Shifts {
    fn original(&self, here: &[Seg]) -> Vec<Seg> {
        let mut out = Vec::with_capacity(here.len());
        for s in here {
            let seg = match s {
                Seg::Index(i) => {
                    let mut i = *i;
                    if let Some(gone) = self.0.get(&display(&out)) {
                        // Sorted: each dropped index at or before `i` pushes it on.
                        for g in gone {
                            if *g <= i {
                                i += 1;
                            }
                        }
                    }
                    Seg::Index(i)
                }
                key => key.clone(),
            };
            out.push(seg);
        }
        out
    }

    fn record(&mut self, original: &[Seg]) {
        if let Some((Seg::Index(i), array)) = original.split_last() {
            let gone = self.0.entry(display(array)).or_default();
            let at = gone.partition_point(|g| g < i);
            gone.insert(at, *i);
        }
    }
}

enum Dropped {
    /// A key removed, or an element replaced by an empty table: nothing moved.
    Value,
    /// An element removed from an array: the later ones moved up.
    Element,
}

/// Removes the value at `path` from `tree`. An element of an array of tables
/// that is not a table becomes an empty table, so the indices of its siblings
/// (which validation reports) do not move.
fn drop_at(tree: &mut toml::Value, path: &[Seg]) -> Option<Dropped> {
    let (last, parent) = path.split_last()?;
    let mut node = tree;
    for s in parent {
        node = match (s, node) {
            (Seg::Key(k), toml::Value::Table(t)) => t.get_mut(k)?,
            (Seg::Index(i), toml::Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    match (last, node) {
        (Seg::Key(k), toml::Value::Table(t)) => t.remove(k).map(|_| Dropped::Value),
        (Seg::Index(i), toml::Value::Array(a)) if *i < a.len() => {
            let tables = a.iter().any(toml::Value::is_table);
            if tables && !a[*i].is_table() {
                a[*i] = toml::Value::Table(toml::Table::new());
                Some(Dropped::Value)
            } else {
                a.remove(*i);
                Some(Dropped::Element)
            }
        }
        _ => None,
    }
}

/// A step of the walk through the spanned document.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a toml_edit::Item),
    Value(&'a toml_edit::Value),
    Table(&'a toml_edit::Table),
}

impl<'a> Node<'a> {
    fn table(self) -> Option<&'a dyn toml_edit::TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike),
            Node::Table(t) => Some(t),
        }
    }

    fn element(self, i: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(toml_edit::Item::ArrayOfTables(a)) => a.get(i).map(Node::Table),
            Node::Item(toml_edit::Item::Value(v)) | Node::Value(v) => {
                v.as_array().and_then(|a| a.get(i)).map(Node::Value)
            }
            _ => None,
        }
    }

    fn span(self) -> Option<std::ops::Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
            Node::Table(t) => t.span(),
        }
    }
}

/// Byte offset of the value at `path` (of its key when `want_key`, or when the
/// value has no span, as implicit tables do).
fn offset_of(root: &toml_edit::Item, path: &[Seg], want_key: bool) -> Option<usize> {
    let mut node = Node::Item(root);
    let mut key_span = None;
    for s in path {
        node = match s {
            Seg::Key(k) => {
                let (key, item) = node.table()?.get_key_value(k)?;
                key_span = key.span();
                Node::Item(item)
            }
            Seg::Index(i) => {
                key_span = None;
                node.element(*i)?
            }
        };
    }
    let span = if want_key {
        key_span.or_else(|| node.span())
    } else {
        node.span().or(key_span)
    };
    span.map(|s| s.start)
}
