//! Client limits and the empty route table: new keys, their defaults and ranges.

use std::time::Duration;

use super::*;
use crate::parse;

#[test]
fn an_empty_route_table_is_refused() {
    let mut raw = minimal();
    raw.routes.clear();
    assert_only_error(
        &raw,
        "routes",
        "no routes: a gateway with an empty route table answers 404 to everything; \
         set routing.allow_empty_routes = true if that is intended",
    );
}

#[test]
fn an_empty_route_table_is_allowed_with_the_flag() {
    let mut raw = minimal();
    raw.routes.clear();
    raw.routing.allow_empty_routes = true;
    let c = valid(&raw);
    assert!(c.routes.is_empty() && c.routing.allow_empty_routes);
    // The flag changes nothing when there are routes.
    let mut raw = minimal();
    raw.routing.allow_empty_routes = true;
    assert_eq!(valid(&raw).routes.len(), 1);
    // And it is read from the file.
    let text = "[routing]\nallow_empty_routes = true\n";
    assert!(parse_raw(text).expect("parses").routing.allow_empty_routes);
}

#[test]
fn client_limit_defaults() {
    let c = valid(&minimal());
    let g = &c.gateway;
    assert_eq!(g.client_header_timeout, Duration::from_millis(10_000));
    assert_eq!(g.client_idle_timeout, Duration::from_millis(60_000));
    assert_eq!((g.max_header_bytes, g.max_connections), (65_536, 0));
    assert_eq!(c.routes[0].max_body_bytes, 0);
    assert_eq!(c.services[0].dns_refresh, Duration::from_millis(5000));
}

#[test]
fn client_limits_are_read() {
    let text = MINIMAL
        .replace(
            "[gateway]\n",
            "[gateway]\nclient_header_timeout_ms = 500\nclient_idle_timeout_ms = 7000\n\
             max_header_bytes = 1024\nmax_connections = 100\n",
        )
        .replace(
            "service = \"echo\"\n",
            "service = \"echo\"\nmax_body_bytes = 1048576\n",
        )
        .replace(
            "name = \"echo\"\n",
            "name = \"echo\"\ndns_refresh_ms = 100\n",
        );
    let c = match parse(&text, no_dir()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let g = &c.gateway;
    assert_eq!(g.client_header_timeout, Duration::from_millis(500));
    assert_eq!(g.client_idle_timeout, Duration::from_millis(7000));
    assert_eq!((g.max_header_bytes, g.max_connections), (1024, 100));
    assert_eq!(c.routes[0].max_body_bytes, 1_048_576);
    assert_eq!(c.services[0].dns_refresh, Duration::from_millis(100));
}

#[test]
fn client_limit_ranges() {
    let mut raw = minimal();
    raw.gateway.client_header_timeout_ms = 0;
    assert_only_error(&raw, "gateway.client_header_timeout_ms", "at least 1");
    let mut raw = minimal();
    raw.gateway.client_idle_timeout_ms = 0;
    assert_only_error(&raw, "gateway.client_idle_timeout_ms", "at least 1");
    for bad in [0, 1023, 1_048_577] {
        let mut raw = minimal();
        raw.gateway.max_header_bytes = bad;
        assert_only_error(&raw, "gateway.max_header_bytes", "between 1024 and 1048576");
    }
    let mut raw = minimal();
    raw.gateway.max_header_bytes = 1_048_576;
    assert_eq!(valid(&raw).gateway.max_header_bytes, 1_048_576);
    for bad in [0, 99] {
        let mut raw = minimal();
        raw.services[0].dns_refresh_ms = bad;
        assert_only_error(&raw, "services[0].dns_refresh_ms", "at least 100");
    }
}

#[test]
fn instances_by_host_name_are_kept_for_the_resolver() {
    let mut raw = minimal();
    raw.services[0].instances.insert(
        "A".into(),
        vec!["Orders.Internal.:8080".into(), "127.0.0.1:1".into()],
    );
    let c = valid(&raw);
    let ui = &c.services[0].instances[0];
    assert_eq!(ui.instances.len(), 1);
    assert_eq!(
        (ui.named[0].host.as_str(), ui.named[0].port),
        ("orders.internal", 8080),
        "lowercased, without the root dot"
    );
    raw.services[0]
        .instances
        .insert("A".into(), vec!["bad_-name-:8080".into(), "x:0".into()]);
    assert_errors(
        invalid(&raw),
        &[
            (
                "services[0].instances.A[0]",
                "expected IP:port or host:port",
            ),
            (
                "services[0].instances.A[1]",
                "expected IP:port or host:port",
            ),
        ],
    );
}
