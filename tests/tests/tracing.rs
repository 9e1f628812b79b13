//! OTLP/HTTP span export (`[tracing]`): spans reach a real receiver with the
//! request's route, units, slot, status, crossing and attempts, tied to the
//! W3C trace the backend sees; a stalled receiver never slows requests, and
//! what cannot be queued is counted.

use std::time::{Duration, Instant};
use unitgate_tests::otlp::{receiver, stalled_receiver, Span};
use unitgate_tests::{backend, dead_addr, eventually, metric, two_units_config, GatewayProc};

const ROUTING: &str = r#"[routing]
key = ["header:x-user-id"]
signing_keys = { k1 = "top-secret-signing-key" }
active_key = "k1"
"#;

const ROUTES: &str = r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
service = "echo"
placement = "sharded"
"#;

/// A's only instance refuses connections (its requests cross to B).
fn config(instances: &str, tracing: &str) -> String {
    two_units_config(
        "",
        ROUTING,
        instances,
        "",
        &format!("{ROUTES}\n[tracing]\n{tracing}"),
    )
}

async fn span_with(rx: &unitgate_tests::otlp::Receiver, trace_id: &str) -> Span {
    eventually(
        &format!("the span of trace {trace_id}"),
        Duration::from_secs(10),
        || async { rx.spans().into_iter().find(|s| s.trace_id == trace_id) },
    )
    .await
}

/// `00-<trace>-<parent>-<flags>` as the backend received it.
fn upstream_traceparent(r: &unitgate_tests::Reply) -> Vec<String> {
    let h = &r.json()["headers"]["traceparent"];
    let parts: Vec<String> = h
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent upstream: {h}"))
        .split('-')
        .map(str::to_owned)
        .collect();
    assert_eq!(parts.len(), 4, "{parts:?}");
    parts
}

#[tokio::test(flavor = "multi_thread")]
async fn sampled_requests_reach_an_otlp_receiver_as_one_span_each() {
    let rx = receiver().await;
    let b = backend("B", "b1").await;
    let instances = format!("A = [\"{}\"]\nB = [\"{}\"]", dead_addr(), b.addr);
    let tracing = format!(
        "otlp_endpoint = \"{}\"\nsample_ratio = 1.0\nservice_name = \"edge-gw\"\n",
        rx.url()
    );
    let gw = GatewayProc::start(&config(&instances, &tracing)).await;

    // An inbound sampled trace, home A, crossing to B.
    let inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = gw
        .send(
            gw.client
                .get(gw.url("/orders/1?q=x"))
                .header("x-user-id", "100")
                .header("traceparent", inbound),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.unit(), "B");
    let up = upstream_traceparent(&r);
    assert_eq!(up[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(up[3], "01");
    let s = span_with(&rx, "4bf92f3577b34da6a3ce929d0e0e4736").await;
    assert_eq!(
        s.span_id, up[2],
        "the backend's parent is the gateway's span"
    );
    assert_eq!(s.parent_span_id, "00f067aa0ba902b7", "the inbound parent");
    assert_eq!(s.name, "GET orders");
    assert_eq!(s.kind, 2, "a server span");
    assert_eq!(s.status, 0, "unset: the request succeeded");
    assert_eq!(s.attr("unitgate.route"), Some("orders"));
    assert_eq!(s.attr("unitgate.service"), Some("echo"));
    assert_eq!(s.attr("unitgate.home_unit"), Some("A"));
    assert_eq!(s.attr("unitgate.served_unit"), Some("B"));
    assert_eq!(s.attr("unitgate.slot"), Some("100"));
    assert_eq!(s.attr("unitgate.crossed"), Some("true"));
    assert_eq!(s.attr("unitgate.attempts"), Some("2"), "{s:?}");
    assert_eq!(s.attr("http.response.status_code"), Some("200"));
    assert_eq!(s.attr("http.request.method"), Some("GET"));
    assert_eq!(s.attr("url.path"), Some("/orders/1"));
    assert_eq!(s.attr("client.address"), Some("127.0.0.1"));
    assert!(s
        .attr("unitgate.request_id")
        .is_some_and(|id| !id.is_empty()));
    assert_eq!(
        s.resource.get("service.name").map(String::as_str),
        Some("edge-gw")
    );
    assert_eq!(
        s.resource.get("unitgate.unit").map(String::as_str),
        Some("A")
    );
    assert!(
        s.end_unix_nano >= s.start_unix_nano && s.start_unix_nano > 0,
        "{s:?}"
    );

    // A trace started here (ratio 1): sampled, and says so upstream.
    let r = gw.get_as("7500", "/orders/2").await;
    assert_eq!(r.status, 200);
    let up = upstream_traceparent(&r);
    assert_eq!(up[3], "01", "a sampled trace started by the gateway");
    let s = span_with(&rx, &up[1]).await;
    assert_eq!(s.span_id, up[2]);
    assert_eq!(s.parent_span_id, "", "a root span");
    assert_eq!(s.attr("unitgate.home_unit"), Some("B"));
    assert_eq!(s.attr("unitgate.served_unit"), Some("B"));
    assert_eq!(s.attr("unitgate.crossed"), Some("false"));
    assert_eq!(s.attr("unitgate.attempts"), Some("1"));

    // An unrouted request is a span too; a 4xx is not a server error.
    let r = gw.get("/nowhere").await;
    assert_eq!(r.status, 404);
    let s = eventually("the 404's span", Duration::from_secs(10), || async {
        rx.spans()
            .into_iter()
            .find(|s| s.attr("http.response.status_code") == Some("404"))
    })
    .await;
    assert_eq!(s.name, "GET");
    assert_eq!(s.status, 0, "unset for a 404");
    assert_eq!(s.attr("url.path"), Some("/nowhere"));

    assert!(
        rx.posts().iter().all(|c| c == "application/x-protobuf"),
        "{:?}",
        rx.posts()
    );
    let m = gw.metrics().await;
    let exported = metric(&m, "unitgate_tracing_spans_exported_total").unwrap_or_default();
    assert!(exported >= 3.0, "exported {exported}");
    assert_eq!(
        metric(
            &m,
            "unitgate_tracing_spans_dropped_total{reason=\"queue_full\"}"
        ),
        Some(0.0)
    );
    unitgate_tests::promtool_check_metrics(&m);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_ratio_records_only_traces_sampled_upstream() {
    let rx = receiver().await;
    let b = backend("B", "b1").await;
    let instances = format!("A = [\"{}\"]\nB = [\"{}\"]", b.addr, b.addr);
    let tracing = format!("otlp_endpoint = \"{}/\"\nsample_ratio = 0.0\n", rx.url());
    let gw = GatewayProc::start(&config(&instances, &tracing)).await;
    let mut unsampled = Vec::new();
    for user in ["1", "2", "3", "7000"] {
        let r = gw.get_as(user, "/orders/x").await;
        assert_eq!(r.status, 200);
        let up = upstream_traceparent(&r);
        assert_eq!(up[3], "00", "not sampled: the ratio is 0");
        unsampled.push(up[1].clone());
    }
    // An inbound trace that was sampled by the caller is followed.
    let inbound = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = gw
        .send(
            gw.client
                .get(gw.url("/orders/y"))
                .header("x-user-id", "9")
                .header("traceparent", inbound),
        )
        .await;
    assert_eq!(upstream_traceparent(&r)[3], "01");
    span_with(&rx, "0af7651916cd43dd8448eb211c80319c").await;
    // Spans leave in order: the sampled one arrived, none of those before it did.
    let spans = rx.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert!(unsampled
        .iter()
        .all(|t| spans.iter().all(|s| &s.trace_id != t)));
    // The URL given without a path got /v1/traces (the receiver refuses others).
    assert_eq!(rx.posts().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_receiver_never_slows_requests_and_drops_are_counted() {
    let stalled = stalled_receiver().await;
    let b = backend("B", "b1").await;
    let instances = format!("A = [\"{}\"]\nB = [\"{}\"]", b.addr, b.addr);
    let tracing =
        format!("otlp_endpoint = \"http://{stalled}\"\nsample_ratio = 1.0\nqueue_size = 4\n");
    let gw = GatewayProc::start(&config(&instances, &tracing)).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..60 {
        let t = Instant::now();
        let r = gw.get_as(&i.to_string(), "/orders/z").await;
        assert_eq!(r.status, 200);
        slowest = slowest.max(t.elapsed());
    }
    let took = started.elapsed();
    assert!(
        slowest < Duration::from_millis(500),
        "slowest request {slowest:?}"
    );
    assert!(took < Duration::from_secs(5), "60 requests took {took:?}");
    let m = gw.metrics().await;
    let full = metric(
        &m,
        "unitgate_tracing_spans_dropped_total{reason=\"queue_full\"}",
    )
    .unwrap_or_default();
    assert!(full >= 56.0, "at most 4 spans wait; dropped {full}\n{m}");
    assert_eq!(
        metric(&m, "unitgate_tracing_spans_exported_total"),
        Some(0.0)
    );
}

#[test]
fn check_reports_every_bad_tracing_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.toml");
    let text = config(
        "A = [\"127.0.0.1:1\"]\nB = [\"127.0.0.1:2\"]",
        "otlp_endpoint = \"collector:4318\"\nsample_ratio = 1.5\nqueue_size = 0\n",
    )
    .replace("{listen}", "127.0.0.1:18080")
    .replace("{admin}", "127.0.0.1:18081");
    std::fs::write(&path, text).expect("write");
    let (code, out, err) = unitgate_tests::run_cli(&["check", "-c", path.to_str().expect("utf-8")]);
    assert_ne!(code, 0, "{out}{err}");
    let all = format!("{out}{err}");
    for key in [
        "tracing.otlp_endpoint",
        "tracing.sample_ratio",
        "tracing.queue_size",
    ] {
        assert!(all.contains(key), "{key} not reported:\n{all}");
    }
    // https:// parses as a URL, but the exporter has no TLS client: refused
    // up front instead of failing every export at run time.
    let https = config(
        "A = [\"127.0.0.1:1\"]\nB = [\"127.0.0.1:2\"]",
        "otlp_endpoint = \"https://collector.example:4318\"\n",
    )
    .replace("{listen}", "127.0.0.1:18080")
    .replace("{admin}", "127.0.0.1:18081");
    std::fs::write(&path, https).expect("write");
    let (code, out, err) = unitgate_tests::run_cli(&["check", "-c", path.to_str().expect("utf-8")]);
    let all = format!("{out}{err}");
    assert_ne!(code, 0, "{all}");
    assert!(
        all.contains("tracing.otlp_endpoint") && all.contains("https:// is not supported"),
        "{all}"
    );
}
