use super::*;
use proptest::prelude::*;

fn norm(p: &str) -> String {
    match normalize(p) {
        Ok(Some(n)) => n,
        Ok(None) => p.to_owned(),
        Err(e) => panic!("{p:?} refused: {e}"),
    }
}

#[test]
fn the_reported_bypasses_normalise_to_the_protected_path() {
    let cases = [
        ("/public/../api/admin/secret.txt", "/api/admin/secret.txt"),
        ("//api/admin/secret.txt", "/api/admin/secret.txt"),
        ("/api//admin/secret.txt", "/api/admin/secret.txt"),
        ("/api/./admin/secret.txt", "/api/admin/secret.txt"),
        ("/api/%61dmin/secret.txt", "/api/admin/secret.txt"),
        ("/api/%61%64%6D%69%6e/x", "/api/admin/x"),
        ("/api/orders/../admin/x", "/api/admin/x"),
        ("/api/orders/%2e%2e/admin/x", "/api/admin/x"),
        ("/api/orders/%2E./admin/x", "/api/admin/x"),
        ("/a/b/../../../../api/admin", "/api/admin"),
    ];
    for (input, want) in cases {
        assert_eq!(norm(input), want, "{input}");
    }
}

#[test]
fn normal_paths_are_left_alone_without_allocating() {
    for p in [
        "/",
        "/api/orders",
        "/api/orders/",
        "/a.b/c..d/e.",
        "/x~y_z-1",
        "*",
        "",
    ] {
        assert_eq!(normalize(p), Ok(None), "{p}");
    }
    // A leading-dot name that is not a dot segment is kept as it is.
    assert_eq!(normalize("/.well-known/x"), Ok(None));
}

#[test]
fn trailing_slashes_and_dot_segments_at_the_end() {
    assert_eq!(norm("/a/b/.."), "/a/");
    assert_eq!(norm("/a/b/."), "/a/b/");
    assert_eq!(norm("/a//"), "/a/");
    assert_eq!(norm("/.."), "/");
    assert_eq!(norm("//"), "/");
    assert_eq!(norm("/a/%2e"), "/a/");
}

#[test]
fn other_percent_triplets_are_kept_with_uppercase_hex() {
    assert_eq!(norm("/a%20b/%e4%b8%ad"), "/a%20b/%E4%B8%AD");
    assert_eq!(norm("/q%3fx"), "/q%3Fx");
    assert_eq!(norm("/%7euser"), "/~user");
}

#[test]
fn unsafe_paths_are_refused() {
    assert_eq!(normalize("/api%2Fadmin/x"), Err(PathError::EncodedSlash));
    assert_eq!(normalize("/api%2fadmin/x"), Err(PathError::EncodedSlash));
    assert_eq!(normalize("/a%00b"), Err(PathError::EncodedNul));
    assert_eq!(normalize("/a%zz"), Err(PathError::BadPercent));
    assert_eq!(normalize("/a%4"), Err(PathError::BadPercent));
    assert_eq!(normalize("/a%"), Err(PathError::BadPercent));
    assert_eq!(
        normalize("/public/..;/api/admin"),
        Err(PathError::DotSegmentParams)
    );
    assert_eq!(normalize("/a/.;x/b"), Err(PathError::DotSegmentParams));
}

/// Paths built from the pieces attackers combine.
fn hostile_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just("/.".to_owned()),
        Just("/..".to_owned()),
        Just("/./".to_owned()),
        Just("/../".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E%2e".to_owned()),
        Just("%61".to_owned()),
        Just("%7e".to_owned()),
        Just("%20".to_owned()),
        Just(".".to_owned()),
        "[a-z]{1,4}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    #[test]
    fn output_has_no_empty_or_dot_segment(p in hostile_path()) {
        if let Ok(out) = normalize(&p) {
            let out = out.unwrap_or(p.clone());
            prop_assert!(out.starts_with('/'));
            for bad in ["//", "/./", "/../"] {
                prop_assert!(!out.contains(bad), "{p:?} -> {out:?}");
            }
            prop_assert!(!out.ends_with("/.") && !out.ends_with("/.."), "{p:?} -> {out:?}");
            prop_assert!(!out.to_ascii_lowercase().contains("%2e"), "{p:?} -> {out:?}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing(p in hostile_path()) {
        if let Ok(out) = normalize(&p) {
            let once = out.unwrap_or(p.clone());
            prop_assert_eq!(normalize(&once), Ok(None), "{:?} -> {:?}", p, once);
        }
    }

    #[test]
    fn arbitrary_ascii_never_panics_and_is_stable(p in "/[ -~]{0,40}") {
        if let Ok(Some(once)) = normalize(&p) {
            prop_assert_eq!(normalize(&once), Ok(None));
        }
    }
}
