//! Instances as strings or `{ addr, weight, backup }` tables; `least_conn`.

use super::*;
use crate::raw::RawInstance;
use crate::{parse, Instance, LbPolicy};

fn with_instances(a: &str) -> String {
    MINIMAL.replace("A = [\"127.0.0.1:9001\"]", &format!("A = {a}"))
}

fn instance(addr: &str, weight: u32, backup: bool) -> Instance {
    Instance {
        addr: addr.parse().expect("addr"),
        weight,
        backup,
        resolved: false,
    }
}

#[test]
fn both_forms_read_into_weighted_instances() {
    let text = with_instances(
        r#"["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 3 }, { addr = "127.0.0.1:9003", backup = true }]"#,
    )
    .replace("name = \"echo\"", "name = \"echo\"\nlb = \"least_conn\"");
    let c = parse(&text, no_dir()).expect("valid");
    let s = &c.services[0];
    assert_eq!(s.lb, LbPolicy::LeastConn);
    assert_eq!(
        s.instances[0].instances,
        [
            instance("127.0.0.1:9001", 1, false),
            instance("127.0.0.1:9002", 3, false),
            instance("127.0.0.1:9003", 1, true),
        ]
    );
}

#[test]
fn written_back_as_a_string_unless_weight_or_backup_differ() {
    let text = with_instances(
        r#"["127.0.0.1:9001", { addr = "127.0.0.1:9002" }, { addr = "127.0.0.1:9003", weight = 2, backup = true }]"#,
    );
    let raw = parse_raw(&text).expect("parses");
    let json = serde_json::to_value(&raw.services[0].instances).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"A": ["127.0.0.1:9001", "127.0.0.1:9002",
            {"addr": "127.0.0.1:9003", "weight": 2, "backup": true}]})
    );
    // The admin API's JSON takes both forms too.
    let back: std::collections::BTreeMap<String, Vec<RawInstance>> =
        serde_json::from_value(json).expect("from json");
    assert_eq!(back, raw.services[0].instances);
    let toml_text = toml::to_string(&raw).expect("to toml");
    assert_eq!(parse_raw(&toml_text).expect("reparse"), raw, "{toml_text}");
    // A table-only list (written as an array of tables) reads back too.
    let mut tables = raw.clone();
    tables.services[0].instances.insert(
        "A".into(),
        vec![RawInstance {
            addr: "127.0.0.1:9001".into(),
            weight: 5,
            backup: false,
        }],
    );
    let toml_text = toml::to_string_pretty(&tables).expect("to toml");
    assert_eq!(
        parse_raw(&toml_text).expect("reparse"),
        tables,
        "{toml_text}"
    );
}

#[test]
fn weights_out_of_range() {
    for bad in [0, 101] {
        let mut raw = minimal();
        raw.services[0].instances.insert(
            "A".into(),
            vec![
                "127.0.0.1:9001".into(),
                RawInstance {
                    addr: "127.0.0.1:9002".into(),
                    weight: bad,
                    backup: false,
                },
            ],
        );
        assert_only_error(
            &raw,
            "services[0].instances.A[1].weight",
            "must be 1 to 100",
        );
    }
}

#[test]
fn a_unit_of_backups_only_is_refused() {
    let mut raw = minimal();
    let backup = |a: &str| RawInstance {
        addr: a.into(),
        weight: 1,
        backup: true,
    };
    raw.services[0].instances.insert(
        "A".into(),
        vec![backup("127.0.0.1:9001"), backup("127.0.0.1:9002")],
    );
    assert_only_error(
        &raw,
        "services[0].instances.A",
        "every instance of the unit is a backup",
    );
}

#[test]
fn the_same_address_in_both_forms_is_a_duplicate() {
    let text = with_instances(r#"["127.0.0.1:9001", { addr = "127.0.0.1:9001", weight = 2 }]"#);
    let errs = parse(&text, no_dir()).expect_err("invalid");
    assert_errors(
        errs,
        &[(
            "services[0].instances.A[1]",
            "duplicate instance \"127.0.0.1:9001\"",
        )],
    );
}

#[test]
fn table_mistakes_are_reported_with_their_path_in_one_pass() {
    let text = with_instances(
        r#"[{ addr = "127.0.0.1:9001", wieght = 2 }, { weight = 2 }, { addr = "10.0.0.1:1", weight = -1 }, "127.0.0.1:9004"]"#,
    );
    let errs = parse(&text, no_dir()).expect_err("invalid");
    let shown = errs.to_string();
    assert!(shown.contains("unknown field `wieght`"), "{shown}");
    assert!(shown.contains("services[0].instances.A[1].addr"), "{shown}");
    assert!(shown.contains("services[0].instances.A"), "{shown}");
    assert!(
        errs.iter()
            .all(|e| e.path.starts_with("services[0].instances.A")),
        "{shown}"
    );
}
