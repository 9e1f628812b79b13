//! `[gateway]`, `[admin]`, `[redis]` and the `_env` secret variants.

use super::*;
use crate::raw::{RawAdmin, RawRedis};
use crate::OnFailure;

#[test]
fn gateway_unit_is_required_and_must_exist() {
    let mut raw = minimal();
    raw.gateway.unit = String::new();
    assert_only_error(&raw, "gateway.unit", "is required");
    raw.gateway.unit = "Z".into();
    assert_only_error(&raw, "gateway.unit", "unknown unit \"Z\"");
}

#[test]
fn gateway_listen_addresses() {
    let mut raw = minimal();
    raw.gateway.listen = vec![];
    assert_only_error(&raw, "gateway.listen", "at least one");
    raw.gateway.listen = vec!["127.0.0.1:80".into(), "localhost:8080".into()];
    assert_only_error(&raw, "gateway.listen[1]", "host names are not supported");
    raw.gateway.listen = vec!["127.0.0.1".into()];
    assert_only_error(&raw, "gateway.listen[0]", "expected IP:port");
    raw.gateway.listen = vec!["127.0.0.1:80".into(), "127.0.0.1:80".into()];
    assert_only_error(&raw, "gateway.listen[1]", "duplicate address");
    raw.gateway.listen = vec!["[::1]:8080".into(), "0.0.0.0:8081".into()];
    assert_eq!(valid(&raw).gateway.listen.len(), 2);
}

#[test]
fn gateway_threads_at_least_one() {
    let mut raw = minimal();
    raw.gateway.threads = Some(0);
    assert_only_error(&raw, "gateway.threads", "at least 1");
    raw.gateway.threads = Some(3);
    assert_eq!(valid(&raw).gateway.threads, 3);
}

#[test]
fn trusted_peers_are_cidrs_or_single_ips() {
    let mut raw = minimal();
    raw.gateway.trusted_peers = vec!["10.0.0.0/8".into(), "192.168.1.7".into(), "::1".into()];
    let peers = valid(&raw).gateway.trusted_peers;
    let s: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    assert_eq!(s, ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]);
    raw.gateway.trusted_peers = vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()];
    assert_only_error(&raw, "gateway.trusted_peers[1]", "invalid CIDR");
    raw.gateway.trusted_peers = vec!["office".into()];
    assert_only_error(&raw, "gateway.trusted_peers[0]", "invalid CIDR");
}

fn admin(text: &str) -> RawConfig {
    let mut raw = minimal();
    raw.admin = Some(from_toml::<RawAdmin>(text));
    raw
}

#[test]
fn admin_token_is_required_and_not_empty() {
    assert_only_error(&admin(""), "admin.token", "token or token_env is required");
    assert_only_error(&admin("token = \"\""), "admin.token", "must not be empty");
    assert_only_error(
        &admin("token = \"a\"\ntoken_env = \"B\""),
        "admin.token",
        "not both",
    );
    let c = valid(&admin("token = \"s3cret\"\nlisten = \"127.0.0.1:9999\""));
    let a = c.admin.expect("admin");
    assert_eq!((a.token.as_str(), a.listen.port()), ("s3cret", 9999));
}

#[test]
fn admin_listen_parses_and_differs_from_gateway() {
    assert_only_error(
        &admin("token = \"t\"\nlisten = \"nowhere\""),
        "admin.listen",
        "expected IP:port",
    );
    assert_only_error(
        &admin("token = \"t\"\nlisten = \"127.0.0.1:8080\""),
        "admin.listen",
        "same address as gateway.listen[0]",
    );
}

#[test]
fn admin_token_env() {
    set_env("UG_TEST_ADMIN_TOKEN_SET", "from-env");
    let c = valid(&admin("token_env = \"UG_TEST_ADMIN_TOKEN_SET\""));
    assert_eq!(c.admin.expect("admin").token, "from-env");
    assert_only_error(
        &admin("token_env = \"UG_TEST_ADMIN_TOKEN_UNSET\""),
        "admin.token_env",
        "environment variable \"UG_TEST_ADMIN_TOKEN_UNSET\" is not set",
    );
    set_env("UG_TEST_ADMIN_TOKEN_EMPTY", "");
    assert_only_error(
        &admin("token_env = \"UG_TEST_ADMIN_TOKEN_EMPTY\""),
        "admin.token_env",
        "\"UG_TEST_ADMIN_TOKEN_EMPTY\" is empty",
    );
}

fn redis(text: &str) -> RawConfig {
    let mut raw = minimal();
    raw.redis = Some(from_toml::<RawRedis>(text));
    raw
}

#[test]
fn redis_url() {
    for ok in [
        "redis://127.0.0.1:6379",
        "rediss://h:1/0",
        "redis+unix:///tmp/r.sock",
        "redis+cluster://a",
    ] {
        assert_eq!(
            valid(&redis(&format!("url = {ok:?}")))
                .redis
                .expect("redis")
                .url,
            ok
        );
    }
    assert_only_error(&redis(""), "redis.url", "url or url_env is required");
    assert_only_error(
        &redis("url = \"http://127.0.0.1:6379\""),
        "redis.url",
        "must be a Redis URL",
    );
    assert_only_error(
        &redis("url = \"127.0.0.1:6379\""),
        "redis.url",
        "must be a Redis URL",
    );
}

#[test]
fn redis_url_env() {
    set_env("UG_TEST_REDIS_URL", "redis://10.0.0.1:6379");
    let c = valid(&redis("url_env = \"UG_TEST_REDIS_URL\""));
    assert_eq!(c.redis.expect("redis").url, "redis://10.0.0.1:6379");
    set_env("UG_TEST_REDIS_URL_BAD", "memcached://x");
    assert_only_error(
        &redis("url_env = \"UG_TEST_REDIS_URL_BAD\""),
        "redis.url_env",
        "must be a Redis URL",
    );
    assert_only_error(
        &redis("url_env = \"UG_TEST_REDIS_URL_UNSET\""),
        "redis.url_env",
        "is not set",
    );
}

#[test]
fn redis_settings() {
    let base = "url = \"redis://x\"\n";
    assert_only_error(
        &redis(&format!("{base}timeout_ms = 0")),
        "redis.timeout_ms",
        "at least 1",
    );
    assert_only_error(
        &redis(&format!("{base}fleet_size = 0")),
        "redis.fleet_size",
        "at least 1",
    );
    assert_only_error(
        &redis(&format!("{base}on_failure = \"retry\"")),
        "redis.on_failure",
        "expected one of local, open, closed",
    );
    let c = valid(&redis(&format!(
        "{base}on_failure = \"closed\"\nfleet_size = 4"
    )));
    let r = c.redis.expect("redis");
    assert_eq!((r.on_failure, r.fleet_size), (OnFailure::Closed, 4));
}
