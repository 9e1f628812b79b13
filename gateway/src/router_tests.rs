use super::*;

fn routes(spec: &[(&str, &[&str], &str, &[&str])]) -> Vec<Route> {
    let mut text = String::from(
        "[gateway]\nunit = \"A\"\n[[units]]\nname = \"A\"\nslots = [\"0-9999\"]\n\
         [[services]]\nname = \"s\"\n[services.instances]\nA = [\"127.0.0.1:1\"]\n",
    );
    for (name, hosts, prefix, methods) in spec {
        text.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\nservice = \"s\"\nhosts = {hosts:?}\n\
             path_prefix = \"{prefix}\"\nmethods = {methods:?}\n"
        ));
    }
    unitgate_config::parse(&text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
        .routes
}

fn name_of(r: &[Route], m: Match) -> &str {
    match m {
        Match::Route(id) => &r[id].name,
        Match::MethodNotAllowed => "405",
        Match::NoRoute => "404",
    }
}

#[test]
fn longest_prefix_segment_aware() {
    let r = routes(&[
        ("root", &[], "/", &[]),
        ("api", &[], "/api", &[]),
        ("orders", &[], "/api/orders/", &[]),
    ]);
    let router = Router::new(&r);
    let look = |p| name_of(&r, router.lookup("h", p, "GET"));
    assert_eq!(look("/api/orders/1/items"), "orders");
    assert_eq!(look("/api/orders"), "orders");
    assert_eq!(look("/api/orders/"), "orders");
    assert_eq!(look("/api/ordersx"), "api");
    assert_eq!(look("/apix"), "root");
    assert_eq!(look("/"), "root");
    assert_eq!(look(""), "root");
}

#[test]
fn hosts_before_any_host_and_most_specific_suffix_first() {
    let r = routes(&[
        ("any", &[], "/x", &[]),
        ("exact", &["a.example.com"], "/x", &[]),
        ("wide", &["*.example.com"], "/x", &[]),
        ("narrow", &["*.eu.example.com"], "/x", &[]),
    ]);
    let router = Router::new(&r);
    let look = |h| name_of(&r, router.lookup(h, "/x/1", "GET"));
    assert_eq!(look("a.example.com"), "exact");
    assert_eq!(look("b.example.com"), "wide");
    assert_eq!(look("b.eu.example.com"), "narrow");
    assert_eq!(look("example.com"), "any");
    assert_eq!(look("other.test"), "any");
}

#[test]
fn methods_fall_back_then_405_then_404() {
    let r = routes(&[
        ("get-api", &[], "/api", &["GET"]),
        ("post-orders", &[], "/api/orders", &["POST"]),
        ("purge", &[], "/cache", &["PURGE"]),
    ]);
    let router = Router::new(&r);
    assert_eq!(
        name_of(&r, router.lookup("h", "/api/orders", "POST")),
        "post-orders"
    );
    assert_eq!(
        name_of(&r, router.lookup("h", "/api/orders", "GET")),
        "get-api"
    );
    assert_eq!(name_of(&r, router.lookup("h", "/api/orders", "PUT")), "405");
    assert_eq!(
        name_of(&r, router.lookup("h", "/cache/x", "PURGE")),
        "purge"
    );
    assert_eq!(name_of(&r, router.lookup("h", "/cache/x", "GET")), "405");
    assert_eq!(name_of(&r, router.lookup("h", "/other", "GET")), "404");
}

#[test]
fn lookup_cost_does_not_depend_on_route_count() {
    let many: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("r{i}"), format!("/svc{i}/v1")))
        .collect();
    let spec: Vec<(&str, &[&str], &str, &[&str])> = many
        .iter()
        .map(|(n, p)| (n.as_str(), &[][..], p.as_str(), &[][..]))
        .collect();
    let r = routes(&spec);
    let router = Router::new(&r);
    assert_eq!(
        name_of(&r, router.lookup("h", "/svc9999/v1/x", "GET")),
        "r9999"
    );
    assert_eq!(name_of(&r, router.lookup("h", "/svc5/v2", "GET")), "404");
}
