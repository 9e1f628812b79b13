//! `[store]`: kinds, defaults, the default gateway id, and its checks.

use std::path::Path;

use super::*;
use crate::raw::RawStore;
use crate::{Store, StoreKind};

fn store(text: &str) -> RawConfig {
    let mut raw = minimal();
    raw.store = Some(from_toml::<RawStore>(text));
    raw
}

#[test]
fn absent_store_is_a_file_store_with_defaults() {
    let c = valid(&minimal());
    let id = format!("{}:8080", crate::validate::hostname());
    assert_eq!(
        c.store,
        Store {
            kind: StoreKind::File,
            gateway_id: id,
            lease_secs: 10,
        }
    );
    // The machine's host name, trimmed: never empty, never with the newline.
    let host = crate::validate::hostname();
    assert!(
        !host.is_empty() && !host.contains(char::is_whitespace),
        "{host:?}"
    );
}

#[test]
fn default_gateway_id_uses_the_first_listen_port() {
    let mut raw = store("");
    raw.gateway.listen = vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()];
    let id = valid(&raw).store.gateway_id;
    assert_eq!(id, format!("{}:7001", crate::validate::hostname()));
}

#[test]
fn etcd_defaults_and_cache_file_next_to_the_config() {
    let c = match validate(&store("kind = \"etcd\""), Path::new("/etc/unitgate")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        c.store.kind,
        StoreKind::Etcd {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/unitgate".into(),
            cache_file: "/etc/unitgate/last-good.toml".into(),
        }
    );
    let raw = store(
        "kind = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\", \"http://etcd-2:2379\", \"http://[::1]:2379\"]\n\
         prefix = \"/unitgate/prod\"\ngateway_id = \"gw-a1\"\ncache_file = \"/var/lib/ug/last.toml\"\nlease_secs = 30",
    );
    let c = valid(&raw);
    assert_eq!(
        (c.store.gateway_id.as_str(), c.store.lease_secs),
        ("gw-a1", 30)
    );
    let StoreKind::Etcd {
        endpoints,
        prefix,
        cache_file,
    } = c.store.kind
    else {
        panic!("etcd store expected");
    };
    assert_eq!((endpoints.len(), prefix.as_str()), (3, "/unitgate/prod"));
    assert_eq!(cache_file, Path::new("/var/lib/ug/last.toml"));
}

#[test]
fn store_kind() {
    assert_only_error(
        &store("kind = \"consul\""),
        "store.kind",
        "expected one of file, etcd",
    );
}

#[test]
fn etcd_endpoints() {
    let etcd = |endpoints: &str| store(&format!("kind = \"etcd\"\nendpoints = {endpoints}"));
    assert_only_error(&etcd("[]"), "store.endpoints", "at least one endpoint");
    assert_only_error(
        &etcd("[\"https://10.0.0.1:2379\"]"),
        "store.endpoints[0]",
        "https is not supported",
    );
    for bad in [
        "10.0.0.1:2379",
        "http://10.0.0.1",
        "http://:2379",
        "http://10.0.0.1:0",
        "http://10.0.0.1:2379/v3",
        "http://[zz]:2379",
    ] {
        assert_only_error(
            &etcd(&format!("[\"http://127.0.0.1:1\", {bad:?}]")),
            "store.endpoints[1]",
            "expected http://host:port",
        );
    }
    assert_only_error(
        &etcd("[\"http://a:1\", \"http://a:1\"]"),
        "store.endpoints[1]",
        "duplicate endpoint (also store.endpoints[0])",
    );
}

#[test]
fn etcd_prefix_and_cache_file() {
    let etcd = |extra: &str| store(&format!("kind = \"etcd\"\n{extra}"));
    assert_only_error(
        &etcd("prefix = \"unitgate\""),
        "store.prefix",
        "must start with \"/\"",
    );
    assert_only_error(
        &etcd("prefix = \"/unitgate/\""),
        "store.prefix",
        "must not end with \"/\"",
    );
    assert_only_error(
        &etcd("prefix = \"/\""),
        "store.prefix",
        "must not end with \"/\"",
    );
    assert_only_error(
        &etcd("cache_file = \"\""),
        "store.cache_file",
        "must not be empty",
    );
}

#[test]
fn gateway_id_and_lease() {
    assert_only_error(
        &store("gateway_id = \"\""),
        "store.gateway_id",
        "must not be empty",
    );
    assert_only_error(
        &store("gateway_id = \"gw/a1\""),
        "store.gateway_id",
        "must not contain '/'",
    );
    for bad in [0, 1, 301] {
        assert_only_error(
            &store(&format!("lease_secs = {bad}")),
            "store.lease_secs",
            "between 2 and 300",
        );
    }
    for ok in [2, 300] {
        assert_eq!(
            valid(&store(&format!("lease_secs = {ok}")))
                .store
                .lease_secs,
            ok
        );
    }
}

#[test]
fn file_store_ignores_the_etcd_only_keys() {
    let c = valid(&store(
        "kind = \"file\"\nendpoints = [\"https://x\"]\nprefix = \"bad/\"\ncache_file = \"\"",
    ));
    assert_eq!(c.store.kind, StoreKind::File);
}

#[test]
fn an_absent_store_is_not_written_back() {
    let text = toml::to_string(&minimal()).expect("to toml");
    assert!(!text.contains("[store]"), "{text}");
    let raw = store("kind = \"etcd\"");
    let text = toml::to_string(&raw).expect("to toml");
    assert_eq!(parse_raw(&text).expect("reparse"), raw);
}
