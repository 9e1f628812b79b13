//! Value parsers the runtime also uses: rates, slot ranges, host matches.

use std::time::Duration;

use crate::{parse_rate, parse_raw, HostMatch, Rate, SlotRange};

#[test]
fn rates() {
    assert_eq!(
        parse_rate("100/s"),
        Ok(Rate {
            count: 100,
            per: Duration::from_secs(1)
        })
    );
    assert_eq!(
        parse_rate("7/m").map(|r| r.per),
        Ok(Duration::from_secs(60))
    );
    assert_eq!(
        parse_rate("1/h").map(|r| r.to_string()),
        Ok("1/h".to_owned())
    );
    assert_eq!(parse_rate("30/m").map(|r| r.per_second()), Ok(0.5));
    for bad in [
        "",
        "/s",
        "100",
        "x/s",
        "0/s",
        "10/d",
        "1 /s",
        "1/S",
        "99999999999999999999/s",
    ] {
        assert!(parse_rate(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn slot_ranges() {
    assert_eq!(
        SlotRange::parse("3", 10),
        Ok(SlotRange { start: 3, end: 3 })
    );
    let r = SlotRange::parse("2-5", 10).expect("range");
    assert!(r.contains(2) && r.contains(5) && !r.contains(6) && !r.contains(1));
    assert_eq!((r.len(), r.to_string()), (4, "2-5".to_owned()));
    assert_eq!(SlotRange { start: 9, end: 9 }.to_string(), "9");
    assert!(SlotRange::parse("0-10", 10).is_err());
    assert!(SlotRange::parse("5-2", 10).is_err());
    assert!(SlotRange::parse("-2", 10).is_err());
}

#[test]
fn host_matches() {
    let exact = HostMatch::Exact("a.com".into());
    let suffix = HostMatch::Suffix(".a.com".into());
    assert!(exact.matches("a.com") && !exact.matches("b.a.com"));
    assert!(suffix.matches("b.a.com") && suffix.matches("c.b.a.com"));
    assert!(!suffix.matches("a.com") && !suffix.matches("ba.com"));
}

#[test]
fn multi_line_toml_errors_become_one_line() {
    let e = parse_raw("[gateway]\nunit = 'A'\n[gateway]\n").expect_err("duplicate table");
    let text = e.to_string();
    assert!(!text.contains('\n') && text.contains("line 3"), "{text}");
}
