//! Instances given by host name, through the system resolver. The gateway
//! runs in its own mount namespace with a test-owned file bind-mounted over
//! /etc/hosts, so the test changes what the name resolves to while the
//! gateway runs (glibc reads the hosts file on every lookup): real
//! getaddrinfo, real re-resolution, nothing stubbed.
//!
//! Its own test binary: it points `UNITGATE_BIN` at a wrapper script.

use std::net::SocketAddr;
use std::time::Duration;
use unitgate_tests::{eventually, metric, EchoServer, GatewayProc};

fn unshare_works() -> bool {
    std::process::Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn named_instances_follow_their_addresses_and_survive_a_failed_lookup() {
    if !unshare_works() {
        eprintln!(
            "SKIPPED: needs `unshare -m` (root, util-linux) to give the gateway its own /etc/hosts"
        );
        return;
    }
    // Two instances on one port, at 127.0.0.1 and 127.0.0.2.
    let a1 = EchoServer::start("A", "a1", SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("a1");
    let port = a1.addr.port();
    let a2 = EchoServer::start("A", "a2", SocketAddr::from(([127, 0, 0, 2], port)))
        .await
        .expect("a2 on 127.0.0.2, same port");
    let b1 = unitgate_tests::backend("B", "b1").await;

    let dir = tempfile::tempdir().expect("dir");
    let hosts = dir.path().join("hosts");
    let set_hosts = |ips: &[&str]| {
        let mut text = String::from("127.0.0.1 localhost\n");
        for ip in ips {
            text.push_str(&format!("{ip} orders.test\n"));
        }
        // In place: the bind mount follows the file, not its name.
        std::fs::write(&hosts, text).expect("hosts");
    };
    set_hosts(&["127.0.0.1"]);
    let wrapper = dir.path().join("unitgate-ns");
    let bin = unitgate_tests::unitgate_bin();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare -m sh -c 'mount --bind \"$0\" /etc/hosts && bin=\"$1\" && shift && exec \"$bin\" \"$@\"' {} {} \"$@\"\n",
            hosts.display(),
            bin.display()
        ),
    )
    .expect("wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::env::set_var("UNITGATE_BIN", &wrapper);

    let cfg = format!(
        r#"
[gateway]
unit = "A"
listen = ["{{listen}}"]
threads = 1

[admin]
listen = "{{admin}}"
token = "test-token"

[[units]]
name = "A"
slots = ["0-4999"]
failover = ["B"]

[[units]]
name = "B"
slots = ["5000-9999"]

[[services]]
name = "echo"
connect_timeout_ms = 200
dns_refresh_ms = 200
[services.instances]
A = ["orders.test:{port}"]
B = ["{b1}"]

[[routes]]
name = "root"
path_prefix = "/"
service = "echo"
placement = "local"
"#,
        b1 = b1.addr
    );
    let gw = GatewayProc::start(&cfg).await;

    // Resolved at load: the one address, as an instance of unit A.
    let r = gw.get("/x").await;
    assert_eq!((r.status, r.instance()), (200, "a1"), "{}", gw.stderr());

    // The name moves to 127.0.0.2: traffic follows within the refresh.
    set_hosts(&["127.0.0.2"]);
    eventually(
        "traffic moves to 127.0.0.2",
        Duration::from_secs(5),
        || async { (gw.get("/x").await.instance() == "a2").then_some(()) },
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            gw.get("/x").await.instance(),
            "a2",
            "only the current address"
        );
    }

    // Two records: two instances, both serving.
    set_hosts(&["127.0.0.1", "127.0.0.2"]);
    let seen = eventually("both addresses serve", Duration::from_secs(5), || async {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            seen.insert(gw.get("/x").await.instance().to_owned());
        }
        (seen.len() == 2).then_some(seen)
    })
    .await;
    assert!(seen.contains("a1") && seen.contains("a2"));
    let m = gw.metrics().await;
    let series = format!(
        "unitgate_instance_healthy{{service=\"echo\",unit=\"A\",instance=\"127.0.0.2:{port}\"}}"
    );
    assert_eq!(metric(&m, &series), Some(1.0), "{m}");

    // The name stops resolving: the last good set stays.
    set_hosts(&[]);
    eventually(
        "the failed lookup is logged",
        Duration::from_secs(10),
        || async {
            gw.stderr()
                .contains("keeping its last addresses")
                .then_some(())
        },
    )
    .await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = gw.get("/x").await;
        assert_eq!(r.status, 200, "served by the last good addresses");
        seen.insert(r.instance().to_owned());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    drop(a2);
}
