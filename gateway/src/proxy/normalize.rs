//! Request-path normalisation: the one path that route matching,
//! authentication and the backend all see.
//!
//! Without it, `/public/../api/admin`, `//api/admin`, `/api/./admin` or
//! `/api/%61dmin` would match a public route here and then be resolved to the
//! protected path by the backend: an authentication bypass. So, before
//! matching, the path is put in the normal form of RFC 3986 §6.2.2:
//!
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!    decoded, and the hex digits of every other triplet are uppercased;
//! 2. empty segments are dropped (`//` is `/`);
//! 3. dot segments are removed (§5.2.4): `.` goes, `..` takes the segment
//!    before it with it, never above the root.
//!
//! Refused (the caller answers `400 bad_request`), because no normal form is
//! safe for every backend:
//! - `%2F` (an encoded `/`): some backends decode it into a separator after
//!   we matched on it as data, so it could reach any path;
//! - `%00`, and a `%` not followed by two hex digits;
//! - a dot segment with parameters (`..;x`, `.;x`), which servlet containers
//!   resolve as `..` / `.`.
//!
//! The request then goes upstream with the normalised path (and the query
//! unchanged), so what was authorised is what is served.

use std::fmt;

/// Why a path has no safe normal form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    EncodedSlash,
    EncodedNul,
    BadPercent,
    DotSegmentParams,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::EncodedSlash => "the path contains an encoded '/' (%2F), which is refused",
            PathError::EncodedNul => "the path contains an encoded NUL (%00)",
            PathError::BadPercent => "the path has a '%' that is not followed by two hex digits",
            PathError::DotSegmentParams => {
                "the path has a dot segment with parameters (\"..;\" or \".;\")"
            }
        })
    }
}

/// The normal form of `path`; `Ok(None)` when it already is normal (the
/// common case: one scan, no allocation). Paths that do not start with `/`
/// (`*`, empty) are left alone.
pub fn normalize(path: &str) -> Result<Option<String>, PathError> {
    if !path.starts_with('/') || is_normal(path.as_bytes()) {
        return Ok(None);
    }
    let decoded = decode_unreserved(path)?;
    let out = remove_dot_segments(&decoded)?;
    Ok((out != path).then_some(out))
}

/// True when nothing below would change `path`: no `%`, no empty segment and
/// no segment that starts with a dot. Conservative: a `false` only means the
/// slow path runs.
fn is_normal(path: &[u8]) -> bool {
    let mut prev_slash = false;
    for &b in path {
        match b {
            b'%' => return false,
            b'/' if prev_slash => return false,
            b'.' if prev_slash => return false,
            _ => {}
        }
        prev_slash = b == b'/';
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 1: decodes `%XX` of unreserved characters, uppercases the others.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    // Copy runs between '%'s as whole slices: `path` is valid UTF-8 and a
    // '%' is never inside a multi-byte character, so every slice is too.
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + off;
        out.push_str(&path[i..at]);
        let (hi, lo) = match (bytes.get(at + 1), bytes.get(at + 2)) {
            (Some(&h), Some(&l)) => (h, l),
            _ => return Err(PathError::BadPercent),
        };
        let v = match (hex(hi), hex(lo)) {
            (Some(h), Some(l)) => h << 4 | l,
            _ => return Err(PathError::BadPercent),
        };
        match v {
            b'/' => return Err(PathError::EncodedSlash),
            0 => return Err(PathError::EncodedNul),
            v if is_unreserved(v) => out.push(char::from(v)),
            _ => {
                out.push('%');
                out.push(char::from(hi.to_ascii_uppercase()));
                out.push(char::from(lo.to_ascii_uppercase()));
            }
        }
        i = at + 3;
    }
    out.push_str(&path[i..]);
    Ok(out)
}

/// Steps 2 and 3 on an absolute path. The result starts with `/`, has no
/// empty, `.` or `..` segment, and ends with `/` when the input did or when
/// its last segment was a dot segment (`/a/b/..` is `/a/`).
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in path.split('/').skip(1) {
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s if s.starts_with(".;") || s.starts_with("..;") => {
                return Err(PathError::DotSegmentParams)
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;
