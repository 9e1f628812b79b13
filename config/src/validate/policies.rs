//! Route policies: `[[routes.rate_limits]]` and `[routes.fallback]`.

use super::{check, Cx};
use crate::rate::parse_rate;
use crate::raw::{RawFallback, RawRateLimit};
use crate::typed::{Fallback, LimitKey, LimitScope, Rate, RateLimit};

/// Headers the gateway computes itself for a fallback response.
const COMPUTED_HEADERS: [&str; 3] = ["content-type", "content-length", "transfer-encoding"];

pub(super) fn rate_limit(cx: &mut Cx<'_>, base: &str, l: &RawRateLimit) -> RateLimit {
    let rate = if l.rate.is_empty() {
        cx.errs
            .push(format!("{base}.rate"), "is required, e.g. \"100/s\"");
        None
    } else {
        cx.errs.check(format!("{base}.rate"), parse_rate(&l.rate))
    };
    let key = match l.key.as_str() {
        "user" => Some(LimitKey::User),
        "ip" => Some(LimitKey::Ip),
        "route" => Some(LimitKey::Route),
        k => match k.strip_prefix("header:") {
            Some(h) => cx
                .errs
                .check(format!("{base}.key"), check::header_name(h))
                .map(LimitKey::Header),
            None => {
                cx.errs.push(
                    format!("{base}.key"),
                    format!("invalid value {k:?}: expected one of user, ip, route, header:<name>"),
                );
                None
            }
        },
    };
    let scope = cx.errs.check(
        format!("{base}.scope"),
        check::choice(
            &l.scope,
            &[("local", LimitScope::Local), ("global", LimitScope::Global)],
        ),
    );
    if scope == Some(LimitScope::Global) && !cx.has_redis {
        cx.errs.push(
            format!("{base}.scope"),
            "a global limit needs a [redis] section",
        );
    }
    RateLimit {
        key: key.unwrap_or(LimitKey::User),
        rate: rate.unwrap_or(Rate {
            count: 1,
            per: std::time::Duration::from_secs(1),
        }),
        burst: l.burst,
        scope: scope.unwrap_or(LimitScope::Local),
    }
}

pub(super) fn fallback(cx: &mut Cx<'_>, base: &str, f: &RawFallback) -> Fallback {
    if !(100..=599).contains(&f.status) {
        cx.errs
            .push(format!("{base}.status"), "must be between 100 and 599");
    }
    if f.content_type.is_empty() {
        cx.errs
            .push(format!("{base}.content_type"), "must not be empty");
    } else {
        cx.errs.check(
            format!("{base}.content_type"),
            check::header_value(&f.content_type),
        );
    }
    let body = match (&f.body, &f.body_file) {
        (Some(_), Some(_)) => {
            cx.errs.push(
                format!("{base}.body_file"),
                "give body or body_file, not both",
            );
            Vec::new()
        }
        (Some(b), None) => b.as_bytes().to_vec(),
        (None, Some(file)) => cx
            .errs
            .check(
                format!("{base}.body_file"),
                check::read_file(cx.base_dir, file),
            )
            .unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    let mut headers = Vec::new();
    for (name, value) in &f.headers {
        let path = check::key_path(&format!("{base}.headers"), name);
        let Some(lower) = cx.errs.check(&path, check::header_name(name)) else {
            continue;
        };
        if COMPUTED_HEADERS.contains(&lower.as_str()) {
            let hint = if lower == "content-type" {
                " (use content_type)"
            } else {
                ""
            };
            cx.errs
                .push(&path, format!("{lower} is set by the gateway{hint}"));
            continue;
        }
        if headers.iter().any(|(n, _)| *n == lower) {
            cx.errs.push(
                &path,
                format!("duplicate header {lower:?} (names are case-insensitive)"),
            );
            continue;
        }
        if cx.errs.check(path, check::header_value(value)).is_some() {
            headers.push((lower, value.clone()));
        }
    }
    Fallback {
        status: f.status,
        content_type: f.content_type.clone(),
        body,
        headers,
    }
}
