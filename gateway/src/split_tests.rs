use super::*;

fn config(splits: &str) -> Config {
    let text = format!(
        r#"
[gateway]
unit = "A"
listen = ["127.0.0.1:1"]
[[units]]
name = "A"
slots = ["0-4999"]
[[units]]
name = "B"
slots = ["5000-9999"]
[[services]]
name = "v1"
[services.instances]
A = ["127.0.0.1:9001"]
[[services]]
name = "v2"
[services.instances]
A = ["127.0.0.1:9002"]
[[services]]
name = "v3"
[services.instances]
B = ["127.0.0.1:9003"]
[[routes]]
name = "r"
service = "v1"
{splits}
"#
    );
    unitgate_config::parse(&text, std::path::Path::new(".")).expect("valid config")
}

fn splits(c: &Config) -> RouteSplits {
    RouteSplits::build(c, &c.routes[0], None).expect("route has splits")
}

fn req(headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/", None).expect("valid request");
    for (n, v) in headers {
        r.append_header(n.to_string(), *v).expect("valid header");
    }
    r
}

/// The service name a user gets in `unit`.
fn served<'a>(s: &'a RouteSplits, user: &str, unit: UnitId) -> &'a str {
    let c = s.choose(&req(&[]), Some(user), 0, unit);
    &s.choices[usize::from(c)].name
}

#[test]
fn bucket_is_crc32_of_split_and_key_mod_100() {
    for key in ["42", "alice", "", "Zoë"] {
        let want = crc32fast::hash(format!("split:{key}").as_bytes()) % 100;
        assert_eq!(bucket(Some(key), 7), want as usize, "{key:?}");
    }
    for slot in [0, 7, 4999, 10_000, u32::MAX] {
        let want = crc32fast::hash(format!("split:{slot}").as_bytes()) % 100;
        assert_eq!(bucket(None, slot), want as usize, "slot {slot}");
    }
}

#[test]
fn no_splits_no_table() {
    let c = config("");
    assert!(RouteSplits::build(&c, &c.routes[0], None).is_none());
}

#[test]
fn buckets_go_to_splits_in_listed_order() {
    let c = config(
        "[[routes.splits]]\nservice = \"v2\"\nweight = 10\n[[routes.splits]]\nservice = \"v3\"\nweight = 30\n",
    );
    let s = splits(&c);
    for i in 0..2000 {
        let user = format!("u{i}");
        let b = bucket(Some(&user), 0);
        let want = match b {
            0..=9 => "v2",
            10..=39 => "v3",
            _ => "v1",
        };
        assert_eq!(served(&s, &user, 0), want, "{user} bucket {b}");
        assert_eq!(served(&s, &user, 1), want, "the same in every unit");
    }
}

#[test]
fn raising_the_weight_moves_only_the_added_buckets() {
    let users: Vec<String> = (0..3000).map(|i| format!("user-{i}")).collect();
    let mut before: Vec<bool> = vec![false; users.len()];
    for w in [0, 1, 10, 50, 100] {
        let c = config(&format!(
            "[[routes.splits]]\nservice = \"v2\"\nweight = {w}\n"
        ));
        let s = splits(&c);
        let now: Vec<bool> = users.iter().map(|u| served(&s, u, 0) == "v2").collect();
        for (i, u) in users.iter().enumerate() {
            assert!(!before[i] || now[i], "{u} moved back at weight {w}");
            assert_eq!(now[i], bucket(Some(u), 0) < w, "{u} at weight {w}");
        }
        before = now;
    }
    assert!(before.iter().all(|&v| v), "weight 100: everyone");
}

#[test]
fn match_header_wins_over_weights_and_units_filter() {
    let c = config(
        r#"
[[routes.splits]]
service = "v2"
weight = 0
match_header = "x-canary"
units = ["B"]
[[routes.splits]]
service = "v3"
weight = 100
units = ["A"]
"#,
    );
    let s = splits(&c);
    let name =
        |r: &RequestHeader, unit| &*s.choices[usize::from(s.choose(r, Some("7"), 7, unit))].name;
    let canary = req(&[("X-Canary", "1")]);
    let plain = req(&[]);
    assert_eq!(name(&canary, 1), "v2", "header, in its unit");
    assert_eq!(name(&canary, 0), "v3", "the header split is not in unit A");
    assert_eq!(name(&plain, 0), "v3", "weight 100 in A");
    assert_eq!(name(&plain, 1), "v1", "v3 is A-only: B users stay");
    assert_eq!(s.choices[1].requests.load(Ordering::Relaxed), 1);
    assert_eq!(s.choices[2].requests.load(Ordering::Relaxed), 2);
    assert_eq!(s.choices[0].requests.load(Ordering::Relaxed), 1);
    assert_eq!(s.choices[2].header, "v3");
}

#[test]
fn counters_carry_over_by_service_name() {
    let c = config("[[routes.splits]]\nservice = \"v2\"\nweight = 10\n");
    let old = splits(&c);
    old.choices[1].requests.fetch_add(5, Ordering::Relaxed);
    let c2 = config(
        "[[routes.splits]]\nservice = \"v3\"\nweight = 5\n[[routes.splits]]\nservice = \"v2\"\nweight = 20\n",
    );
    let new = RouteSplits::build(&c2, &c2.routes[0], Some(&old)).expect("splits");
    assert_eq!(&*new.choices[2].name, "v2");
    assert_eq!(new.choices[2].requests.load(Ordering::Relaxed), 5);
    assert_eq!(new.choices[1].requests.load(Ordering::Relaxed), 0);
}

#[test]
fn share_is_close_to_the_weight() {
    for w in [1u32, 20, 50] {
        let c = config(&format!(
            "[[routes.splits]]\nservice = \"v2\"\nweight = {w}\n"
        ));
        let s = splits(&c);
        let n = (0..10_000)
            .filter(|i| served(&s, &format!("{i}"), 0) == "v2")
            .count();
        let share = n as f64 / 100.0;
        assert!((share - f64::from(w)).abs() <= 1.5, "weight {w}: {share}%");
    }
}
