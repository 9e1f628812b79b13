//! `[[routes]]`: match, target, limits and fallback.

use std::time::Duration;

use super::*;
use crate::raw::{RawRedis, RawRoute};
use crate::{HostMatch, LimitKey, LimitScope, Placement, Rate};

fn route(text: &str) -> RawRoute {
    from_toml(text)
}

/// MINIMAL plus one more route built from `text`.
fn with_route(text: &str) -> RawConfig {
    let mut raw = minimal();
    raw.routes.push(route(text));
    raw
}

#[test]
fn service_must_exist() {
    assert_only_error(
        &with_route("name = \"r\"\nservice = \"ordrs\"\npath_prefix = \"/o\""),
        "routes[1].service",
        "unknown service \"ordrs\"",
    );
    assert_only_error(
        &with_route("name = \"r\"\npath_prefix = \"/x\""),
        "routes[1].service",
        "is required",
    );
    let errs = invalid(&with_route(
        "name = \"r\"\nservice = \"ordrs\"\npath_prefix = \"/o\"",
    ));
    assert_eq!(
        errs.to_string(),
        "routes[1].service: unknown service \"ordrs\""
    );
}

#[test]
fn route_names() {
    assert_only_error(
        &with_route("name = \"root\"\nservice = \"echo\"\npath_prefix = \"/x\""),
        "routes[1].name",
        "duplicate route \"root\" (also routes[0])",
    );
    assert_only_error(
        &with_route("service = \"echo\"\npath_prefix = \"/x\""),
        "routes[1].name",
        "is required",
    );
}

#[test]
fn path_prefix_rules() {
    let mut raw = minimal();
    for (given, stored) in [
        ("/", "/"),
        ("/api/", "/api"),
        ("/api//", "/api"),
        ("//", "/"),
        ("/a/b", "/a/b"),
    ] {
        raw.routes[0].path_prefix = given.into();
        assert_eq!(valid(&raw).routes[0].path_prefix, stored);
    }
    for bad in ["api", "", "/a b", "/a?x=1"] {
        raw.routes[0].path_prefix = bad.into();
        assert_only_error(&raw, "routes[0].path_prefix", "invalid path prefix");
    }
}

#[test]
fn hosts() {
    let mut raw = minimal();
    raw.routes[0].hosts = vec!["API.Example.com".into(), "*.Example.com".into()];
    let c = valid(&raw);
    assert_eq!(
        c.routes[0].hosts,
        vec![
            HostMatch::Exact("api.example.com".into()),
            HostMatch::Suffix(".example.com".into())
        ]
    );
    assert!(
        c.routes[0].hosts[1].matches("a.b.example.com")
            && !c.routes[0].hosts[1].matches("example.com")
    );
    for (bad, msg) in [
        ("*", "leave hosts empty"),
        ("api.*.com", "'*' is only allowed"),
        ("*example.com", "'*' is only allowed"),
        ("*.*.example.com", "'*' is only allowed"),
        ("example.com:8080", "without port"),
        ("a..b", "without port"),
        ("", "without port"),
    ] {
        raw.routes[0].hosts = vec![bad.into()];
        assert_only_error(&raw, "routes[0].hosts[0]", msg);
    }
    raw.routes[0].hosts = vec!["a.com".into(), "A.com".into()];
    assert_only_error(&raw, "routes[0].hosts[1]", "duplicate host");
}

#[test]
fn methods() {
    let mut raw = minimal();
    raw.routes[0].methods = vec!["get".into(), "Post".into(), "PURGE".into()];
    assert_eq!(valid(&raw).routes[0].methods, ["GET", "POST", "PURGE"]);
    raw.routes[0].methods = vec!["GET".into(), "GE T".into()];
    assert_only_error(&raw, "routes[0].methods[1]", "invalid method");
    raw.routes[0].methods = vec!["GET".into(), "get".into()];
    assert_only_error(&raw, "routes[0].methods[1]", "duplicate method \"GET\"");
}

#[test]
fn placement() {
    let mut raw = minimal();
    raw.routes[0].placement = "local".into();
    assert_eq!(valid(&raw).routes[0].placement, Placement::Local);
    raw.routes[0].placement = "unit:A".into();
    assert_eq!(valid(&raw).routes[0].placement, Placement::Unit(0));
    raw.routes[0].placement = "unit:B".into();
    assert_only_error(&raw, "routes[0].placement", "unknown unit \"B\"");
    raw.routes[0].placement = "home".into();
    assert_only_error(
        &raw,
        "routes[0].placement",
        "expected sharded, local or unit:<name>",
    );
}

#[test]
fn retries_timeout_jwt() {
    let mut raw = minimal();
    raw.routes[0].retries = 10;
    raw.routes[0].timeout_ms = 1;
    let c = valid(&raw);
    assert_eq!(
        (c.routes[0].retries, c.routes[0].timeout),
        (10, Duration::from_millis(1))
    );
    raw.routes[0].retries = 11;
    assert_only_error(&raw, "routes[0].retries", "at most 10");
    raw.routes[0].retries = 0;
    raw.routes[0].timeout_ms = 0;
    assert_only_error(&raw, "routes[0].timeout_ms", "at least 1");
    raw.routes[0].timeout_ms = 5;
    raw.routes[0].jwt = Some("main".into());
    assert_only_error(&raw, "routes[0].jwt", "unknown jwt verifier \"main\"");
}

#[test]
fn same_match_is_an_error() {
    let mut raw = minimal();
    raw.routes[0].path_prefix = "/api/".into();
    raw.routes.push(route(
        "name = \"b\"\nservice = \"echo\"\npath_prefix = \"/x\"",
    ));
    raw.routes.push(route(
        "name = \"c\"\nservice = \"echo\"\npath_prefix = \"/api\"\nmethods = [\"GET\"]",
    ));
    assert_only_error(&raw, "routes[2]", "same match as routes[0] \"root\"");

    // Disjoint methods are fine; overlapping ones are not.
    raw.routes[0].methods = vec!["POST".into()];
    valid(&raw);
    raw.routes[0].methods = vec!["post".into(), "get".into()];
    assert_only_error(&raw, "routes[2]", "same match as routes[0] \"root\"");

    // Same host set in another order clashes; a different host set does not.
    raw.routes[0].methods.clear();
    raw.routes[0].hosts = vec!["a.com".into(), "*.b.com".into()];
    raw.routes[2].hosts = vec!["*.B.com".into(), "a.com".into()];
    assert_only_error(&raw, "routes[2]", "same match as routes[0] \"root\"");
    raw.routes[2].hosts = vec!["a.com".into()];
    valid(&raw);
}

fn limit(text: &str) -> RawConfig {
    let mut raw = minimal();
    raw.routes[0].rate_limits = vec![from_toml("rate = \"1/s\""), from_toml(text)];
    raw
}

#[test]
fn rate_limit_rates() {
    let c = valid(&limit(
        "rate = \"100/s\"\nburst = 50\nkey = \"header:X-Api-Key\"",
    ));
    let l = &c.routes[0].rate_limits[1];
    assert_eq!(
        l.rate,
        Rate {
            count: 100,
            per: Duration::from_secs(1)
        }
    );
    assert_eq!(
        (l.burst, &l.key),
        (50, &LimitKey::Header("x-api-key".into()))
    );
    assert_eq!(
        valid(&limit("rate = \"3/h\"")).routes[0].rate_limits[1]
            .rate
            .per,
        Duration::from_secs(3600)
    );
    for (bad, msg) in [
        ("100", "expected N/s"),
        ("x/s", "expected N/s"),
        ("0/s", "at least 1"),
        ("10/d", "unit must be s, m or h"),
        ("-1/s", "expected N/s"),
    ] {
        assert_only_error(
            &limit(&format!("rate = {bad:?}")),
            "routes[0].rate_limits[1].rate",
            msg,
        );
    }
    assert_only_error(
        &limit("key = \"ip\""),
        "routes[0].rate_limits[1].rate",
        "is required",
    );
}

#[test]
fn rate_limit_key_and_scope() {
    for (k, want) in [
        ("user", LimitKey::User),
        ("ip", LimitKey::Ip),
        ("route", LimitKey::Route),
    ] {
        assert_eq!(
            valid(&limit(&format!("rate = \"1/m\"\nkey = {k:?}"))).routes[0].rate_limits[1].key,
            want
        );
    }
    let p = "routes[0].rate_limits[1]";
    assert_only_error(
        &limit("rate = \"1/m\"\nkey = \"tenant\""),
        &format!("{p}.key"),
        "expected one of user, ip, route, header:<name>",
    );
    assert_only_error(
        &limit("rate = \"1/m\"\nkey = \"header:\""),
        &format!("{p}.key"),
        "must not be empty",
    );
    assert_only_error(
        &limit("rate = \"1/m\"\nscope = \"cluster\""),
        &format!("{p}.scope"),
        "expected one of local, global",
    );
    assert_only_error(
        &limit("rate = \"1/m\"\nscope = \"global\""),
        &format!("{p}.scope"),
        "needs a [redis] section",
    );
    let mut raw = limit("rate = \"1/m\"\nscope = \"global\"");
    raw.redis = Some(from_toml::<RawRedis>("url = \"redis://127.0.0.1\""));
    assert_eq!(
        valid(&raw).routes[0].rate_limits[1].scope,
        LimitScope::Global
    );
}

fn fallback(text: &str) -> RawConfig {
    let mut raw = minimal();
    raw.routes[0].fallback = Some(from_toml(text));
    raw
}

#[test]
fn fallback_rules() {
    let c = valid(&fallback(
        "status = 200\nbody = \"{}\"\nheaders = { \"Cache-Control\" = \"no-store\" }",
    ));
    let f = c.routes[0].fallback.as_ref().expect("fallback");
    assert_eq!((f.status, f.body.as_slice()), (200, &b"{}"[..]));
    assert_eq!(
        f.headers,
        vec![("cache-control".to_owned(), "no-store".to_owned())]
    );

    let p = "routes[0].fallback";
    assert_only_error(
        &fallback("status = 99"),
        &format!("{p}.status"),
        "between 100 and 599",
    );
    assert_only_error(
        &fallback("status = 600"),
        &format!("{p}.status"),
        "between 100 and 599",
    );
    assert_only_error(
        &fallback("headers = { \"bad header\" = \"x\" }"),
        &format!("{p}.headers.\"bad header\""),
        "invalid header name",
    );
    assert_only_error(
        &fallback("headers = { x-a = \"line\\r\\nbreak\" }"),
        &format!("{p}.headers.x-a"),
        "invalid header value",
    );
    assert_only_error(
        &fallback("headers = { content-type = \"text/plain\" }"),
        &format!("{p}.headers.content-type"),
        "use content_type",
    );
    assert_only_error(
        &fallback("headers = { X-A = \"1\", x-a = \"2\" }"),
        &format!("{p}.headers.x-a"),
        "duplicate header",
    );
    assert_only_error(
        &fallback("content_type = \"\""),
        &format!("{p}.content_type"),
        "must not be empty",
    );
    assert_only_error(
        &fallback("body = \"a\"\nbody_file = \"b\""),
        &format!("{p}.body_file"),
        "not both",
    );
    assert_only_error(
        &fallback("body_file = \"missing.json\""),
        &format!("{p}.body_file"),
        "cannot read /nonexistent-unitgate-test-dir/missing.json",
    );
}

#[test]
fn fallback_body_file_relative_and_absolute() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("down.html"), "<p>down</p>").expect("write");
    let mut raw = minimal();
    raw.routes[0].fallback = Some(from_toml("body_file = \"down.html\""));
    let c = crate::validate(&raw, dir.path()).expect("valid");
    assert_eq!(
        c.routes[0].fallback.as_ref().map(|f| f.body.as_slice()),
        Some(&b"<p>down</p>"[..])
    );
    let abs = dir.path().join("down.html");
    raw.routes[0].fallback = Some(from_toml(&format!(
        "body_file = {:?}",
        abs.display().to_string()
    )));
    assert!(valid(&raw).routes[0].fallback.is_some());
}
