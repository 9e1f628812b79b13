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
