//! Several mistakes at once: every one is reported, in one pass, with its path.

use super::*;
use crate::parse;

#[test]
fn all_errors_in_one_pass() {
    let text = r#"
[gateway]
unit = "A"
threads = 0
listen = ["localhost:8080"]

[routing]
key = ["body:uid"]

[[units]]
name = "A"
slots = ["0-5999"]
failover = ["A"]

[[units]]
name = "B"
slots = ["5000-9999"]
state = "gone"

[[services]]
name = "orders"
lb = "fastest"
[services.instances]
A = ["127.0.0.1:9001"]
C = ["127.0.0.1:9101"]

[[routes]]
name = "orders"
path_prefix = "/api/orders"
service = "orders"

[[routes]]
name = "orders-v2"
path_prefix = "/api/orders/"
service = "ordrs"
retries = 20

[[routes.rate_limits]]
rate = "100"
scope = "global"

[jwt.main]
algorithms = ["HS256"]
secret_env = "UG_TEST_MULTI_UNSET"
"#;
    let errs = parse(text, no_dir()).expect_err("invalid");
    assert_errors(
        errs,
        &[
            ("gateway.listen[0]", "host names are not supported"),
            ("gateway.threads", "at least 1"),
            ("routing.key[0]", "invalid key source"),
            ("units[0].failover[0]", "cannot fail over to itself"),
            ("units[1].state", "expected one of active, draining, down"),
            ("units[1].slots[0]", "overlap units[0] \"A\""),
            ("services[0].lb", "expected one of round_robin"),
            ("services[0].instances.C", "unknown unit \"C\""),
            ("jwt.main.secret_env", "\"UG_TEST_MULTI_UNSET\" is not set"),
            ("routes[1].service", "unknown service \"ordrs\""),
            ("routes[1].retries", "at most 10"),
            ("routes[1].rate_limits[0].rate", "expected N/s"),
            ("routes[1].rate_limits[0].scope", "needs a [redis] section"),
            ("routes[1]", "same match as routes[0] \"orders\""),
        ],
    );
}

#[test]
fn missing_required_keys_are_reported_together() {
    let text = "[[units]]\n[[services]]\n[[routes]]\n[[routes.rate_limits]]\n";
    let errs = parse(text, no_dir()).expect_err("invalid");
    assert_errors(
        errs,
        &[
            ("units[0].name", "is required"),
            ("services[0].name", "is required"),
            ("gateway.unit", "is required"),
            ("units", "slots not owned by any unit: 0-9999"),
            ("services[0].instances", "no instances"),
            ("routes[0].name", "is required"),
            ("routes[0].service", "is required"),
            ("routes[0].rate_limits[0].rate", "is required"),
        ],
    );
}

#[test]
fn unknown_keys_and_type_errors_of_every_section_come_with_validation_errors() {
    let text = r#"
[gateway]
unit = "A"
listn = ["127.0.0.1:8080"]

[routing]
slots = "many"

[[units]]
name = "A"
slots = ["0-9999"]
state = 3

[[services]]
name = "orders"
[services.instances]
A = ["127.0.0.1:9001"]
[services.health]
kinds = "http"

[[routes]]
name = "orders"
path_prefix = "/api/orders"
service = "orders"

[[routes]]
name = "orders-v2"
pathprefix = "/api/v2"
service = "ordrs"
retries = "twice"
"#;
    let errs = parse(text, no_dir()).expect_err("invalid");
    let shown = errs.to_string();
    assert_errors(
        errs,
        &[
            ("gateway.listn", "unknown field `listn`"),
            (
                "routing.slots",
                "invalid type: string \"many\", expected u64 (line 7",
            ),
            (
                "units[0].state",
                "invalid type: integer `3`, expected a string (line 12",
            ),
            ("services[0].health.kinds", "unknown field `kinds`"),
            ("routes[1].pathprefix", "unknown field `pathprefix`"),
            ("routes[1].retries", "expected u32 (line 30, column 11)"),
            // Validation ran on the rest; the dropped values (routing.slots,
            // units[0].state, routes[1].retries) add no range or "required" noise.
            ("routes[1].service", "unknown service \"ordrs\""),
        ],
    );
    // Unknown keys point at the key.
    for at in [
        "(line 4, column 1)",
        "(line 19, column 1)",
        "(line 28, column 1)",
    ] {
        assert!(shown.contains(at), "missing {at} in:\n{shown}");
    }
}

#[test]
fn bad_elements_keep_their_index_in_the_file() {
    let text = r#"
[gateway]
unit = "A"
listen = [1, "127.0.0.1:8080", 2]
trusted_peers = ["office", 7]

[routing]
allow_empty_routes = true

[[units]]
name = "A"
slots = ["0-9999"]
"#;
    let errs = parse(text, no_dir()).expect_err("invalid");
    assert_errors(
        errs,
        &[
            ("gateway.listen[0]", "expected a string (line 4, column 11)"),
            ("gateway.listen[2]", "expected a string (line 4, column 32)"),
            ("gateway.trusted_peers[1]", "expected a string"),
            // The array lost an element: its validation is left out too, as
            // it could not name the right index; the other arrays' stays.
        ],
    );
    let text = text.replace(", 7]", "]");
    let errs = parse(&text, no_dir()).expect_err("invalid");
    assert_errors(
        errs,
        &[
            ("gateway.listen[0]", "expected a string"),
            ("gateway.listen[2]", "expected a string"),
            ("gateway.trusted_peers[0]", "invalid CIDR \"office\""),
        ],
    );
}

#[test]
fn a_non_table_in_an_array_of_tables_keeps_the_others_in_place() {
    let text = r#"
units = [7, { name = "A", slots = ["0-9999"], state = "gone" }]
[gateway]
unit = "A"
[routing]
allow_empty_routes = true
"#;
    let errs = parse(text, no_dir()).expect_err("invalid");
    assert_errors(
        errs,
        &[
            ("units[0]", "invalid type: integer `7`"),
            ("units[1].state", "expected one of active, draining, down"),
        ],
    );
}

#[test]
fn a_syntax_error_still_stops_everything() {
    let text = "[gateway]\nunit = \"A\"\nlistn = 1\n[[routes]]\nservice = \"x\n";
    let errs = parse(text, no_dir()).expect_err("invalid");
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(errs.0[0].path, "");
    assert!(errs.0[0].message.contains("line 5"), "{errs}");
}
