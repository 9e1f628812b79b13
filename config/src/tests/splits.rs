//! `[[routes.splits]]`: gray release between services.

use super::*;
use crate::{parse, Split};

const BASE: &str = r#"
[gateway]
unit = "A"

[[units]]
name = "A"
slots = ["0-4999"]

[[units]]
name = "B"
slots = ["5000-9999"]

[[services]]
name = "orders"
[services.instances]
A = ["127.0.0.1:9001"]

[[services]]
name = "orders-v2"
[services.instances]
A = ["127.0.0.1:9002"]

[[services]]
name = "orders-v3"
[services.instances]
B = ["127.0.0.1:9003"]

[[routes]]
name = "orders"
path_prefix = "/orders"
service = "orders"
"#;

fn with_splits(splits: &str) -> String {
    format!("{BASE}\n{splits}")
}

#[test]
fn splits_resolve_in_listed_order() {
    let c = parse(
        &with_splits(
            r#"
[[routes.splits]]
service = "orders-v2"
weight = 10
match_header = "X-Canary"
units = ["B"]

[[routes.splits]]
service = "orders-v3"
weight = 90
"#,
        ),
        no_dir(),
    )
    .expect("valid");
    let r = &c.routes[0];
    assert_eq!(
        r.splits,
        vec![
            Split {
                service: 1,
                weight: 10,
                match_header: Some("x-canary".into()),
                units: vec![1],
            },
            Split {
                service: 2,
                weight: 90,
                match_header: None,
                units: vec![],
            },
        ]
    );
    assert!(!r.splits[0].applies_in(0) && r.splits[0].applies_in(1));
    assert!(r.splits[1].applies_in(0), "no units: every unit");
    let none = parse(BASE, no_dir()).expect("valid");
    assert!(none.routes[0].splits.is_empty());
}

#[test]
fn a_header_only_split_and_weight_bounds_are_valid() {
    let c = parse(
        &with_splits("[[routes.splits]]\nservice = \"orders-v2\"\nmatch_header = \"x-canary\"\n"),
        no_dir(),
    )
    .expect("weight defaults to 0");
    assert_eq!(c.routes[0].splits[0].weight, 0);
    parse(
        &with_splits("[[routes.splits]]\nservice = \"orders-v2\"\nweight = 100\n"),
        no_dir(),
    )
    .expect("100 is everyone: the blue/green switch");
}

#[test]
fn every_split_mistake_in_one_pass() {
    let text = with_splits(
        r#"
[[routes.splits]]
service = "ordrs-v2"
weight = 10

[[routes.splits]]
service = "orders"
weight = 5

[[routes.splits]]
service = "orders-v2"
weight = 60
units = ["A", "C", "A"]
match_header = "x canary"

[[routes.splits]]
service = "orders-v3"
weight = 50

[[routes.splits]]
service = "orders-v2"
weight = 250

[[routes.splits]]
weight = 1
"#,
    );
    let errs = parse(&text, no_dir()).expect_err("invalid");
    assert_errors(
        errs,
        &[
            (
                "routes[0].splits[0].service",
                "unknown service \"ordrs-v2\"",
            ),
            ("routes[0].splits[1].service", "the route's own service"),
            ("routes[0].splits[2].match_header", "invalid header name"),
            ("routes[0].splits[2].units[1]", "unknown unit \"C\""),
            ("routes[0].splits[2].units[2]", "duplicate unit \"A\""),
            (
                "routes[0].splits[4].service",
                "duplicate split service \"orders-v2\" (also routes[0].splits[2])",
            ),
            ("routes[0].splits[4].weight", "between 0 and 100"),
            ("routes[0].splits[5].service", "is required"),
            ("routes[0].splits", "weights add up to 126"),
        ],
    );
}

#[test]
fn unknown_keys_and_wrong_types_have_paths() {
    let text = with_splits(
        "[[routes.splits]]\nservice = \"orders-v2\"\nweigth = 10\n\n[[routes.splits]]\nservice = \"orders-v3\"\nweight = \"ten\"\n",
    );
    let errs = parse(&text, no_dir()).expect_err("invalid");
    let shown = errs.to_string();
    assert_eq!(errs.len(), 2, "{shown}");
    assert!(shown.contains("routes[0].splits[0]"), "{shown}");
    assert!(shown.contains("weigth"), "{shown}");
    assert!(shown.contains("routes[0].splits[1].weight"), "{shown}");
}

#[test]
fn splits_round_trip_through_json_and_toml() {
    let raw = parse_raw(&with_splits(
        "[[routes.splits]]\nservice = \"orders-v2\"\nweight = 10\nunits = [\"A\"]\n",
    ))
    .expect("parses");
    let json = serde_json::to_string(&raw).expect("json");
    assert!(
        json.contains(r#""splits":[{"service":"orders-v2","weight":10,"units":["A"]}]"#),
        "{json}"
    );
    let back: RawConfig = serde_json::from_str(&json).expect("json back");
    assert_eq!(back, raw);
    let toml_text = toml::to_string(&raw).expect("toml");
    assert_eq!(parse_raw(&toml_text).expect("toml back"), raw);
    let none = serde_json::to_string(&parse_raw(BASE).expect("parses")).expect("json");
    assert!(!none.contains("splits"), "no splits: not written");
}
