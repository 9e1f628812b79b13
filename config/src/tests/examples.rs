//! Every shipped example under config/examples validates (CI also runs
//! `unitgate check` on them).

use std::path::Path;

#[test]
fn every_example_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = crate::load(&path) {
                panic!("{} is invalid:\n{e}", path.display());
            }
            seen.push(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
    }
    seen.sort();
    assert_eq!(seen, ["single-unit.toml", "tls.toml", "two-units.toml"]);
}

#[test]
fn two_units_example_shape() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/two-units.toml");
    let c = crate::load(&path).expect("valid");
    assert_eq!(c.units.len(), 2);
    assert_eq!(c.routing.signing_keys.len(), 2);
    let s = &c.services[0];
    assert!(s.instances.iter().all(|i| i.instances.len() == 2) && s.instances.len() == 2);
    assert!(s.outlier.is_some() && s.circuit_breaker.is_some());
    assert!(c.routes.iter().any(|r| r.fallback.is_some()));
}
