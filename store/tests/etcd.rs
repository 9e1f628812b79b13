//! The store against real etcd members from the testkit.

// A failed call is the test failing; its error is the report.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use unitgate_store::testkit::{EtcdCluster, EtcdProc};
use unitgate_store::{EtcdStore, Expect, Options, StoreError, WatchEvent};

/// Every test gets its own prefix, so a stray key can never satisfy another test.
fn prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("/unitgate/test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn store(endpoints: Vec<String>, timeout: Duration) -> EtcdStore {
    let opts = Options {
        timeout,
        connect_timeout: Duration::from_millis(500),
    };
    EtcdStore::new(endpoints, &prefix(), opts)
}

fn store_on(etcd: &EtcdProc) -> EtcdStore {
    store(vec![etcd.endpoint()], Duration::from_secs(2))
}

/// Polls `check` every 50 ms until it is true or `within` has passed.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn raw_client(endpoint: String) -> etcd_client::Client {
    etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap()
}

/// The lease id holding `key` (absolute), 0 if none, None if absent.
async fn lease_of(client: &mut etcd_client::Client, key: &str) -> Option<i64> {
    let resp = client.get(key, None).await.unwrap();
    resp.kvs().first().map(|kv| kv.lease())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_has_no_config() {
    let etcd = EtcdProc::start();
    let store = store_on(&etcd);
    let (doc, revision) = store.read_config().await.unwrap();
    assert_eq!(doc, None);
    assert!(revision >= 1, "header revision {revision}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_absent_twice_conflicts_and_names_the_winner() {
    let etcd = EtcdProc::start();
    let store = store_on(&etcd);
    let rev = store
        .write_config("epoch = 1", Expect::Absent)
        .await
        .unwrap();
    let err = store
        .write_config("epoch = 2", Expect::Absent)
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Conflict { current: Some(rev) });
    let (doc, header) = store.read_config().await.unwrap();
    let doc = doc.unwrap();
    assert_eq!((doc.text.as_str(), doc.mod_revision), ("epoch = 1", rev));
    assert!(header >= rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_revision_conflicts_and_the_fresh_one_wins() {
    let etcd = EtcdProc::start();
    let store = store_on(&etcd);
    let r1 = store.write_config("a", Expect::Absent).await.unwrap();
    let r2 = store.write_config("b", Expect::Revision(r1)).await.unwrap();
    assert!(r2 > r1);
    let err = store
        .write_config("c", Expect::Revision(r1))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Conflict { current: Some(r2) });
    let r3 = store.write_config("c", Expect::Revision(r2)).await.unwrap();
    assert_eq!(
        store.read_config().await.unwrap().0.unwrap().mod_revision,
        r3
    );
    // Revision(n) on an absent key conflicts with current None.
    let err = store
        .put("nothing", b"x", Expect::Revision(r3))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Conflict { current: None });
    store.put("anything", b"x", Expect::Any).await.unwrap();
    store.put("anything", b"y", Expect::Any).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_a_put_within_a_second() {
    let etcd = EtcdProc::start();
    let store = store_on(&etcd);
    let (_, revision) = store.read_config().await.unwrap();
    let mut watch = store.watch_config(revision + 1).await.unwrap();
    let writer = store.clone();
    let written = tokio::spawn(async move {
        writer
            .write_config("epoch = 7", Expect::Absent)
            .await
            .unwrap()
    });
    let event = tokio::time::timeout(Duration::from_secs(1), watch.next()).await;
    let rev = written.await.unwrap();
    match event {
        Ok(Some(WatchEvent::Put(doc))) => {
            assert_eq!(doc.text, "epoch = 7");
            assert_eq!(doc.mod_revision, rev);
        }
        other => panic!("expected the put within 1 s, got {other:?}"),
    }
    store.delete("config").await.unwrap();
    match tokio::time::timeout(Duration::from_secs(1), watch.next()).await {
        Ok(Some(WatchEvent::Deleted { mod_revision })) => assert!(mod_revision > rev),
        other => panic!("expected the delete, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_says_compacted() {
    let etcd = EtcdProc::start();
    let store = store_on(&etcd);
    let r1 = store.write_config("1", Expect::Absent).await.unwrap();
    let r2 = store.write_config("2", Expect::Revision(r1)).await.unwrap();
    let r3 = store.write_config("3", Expect::Revision(r2)).await.unwrap();
    raw_client(etcd.endpoint())
        .await
        .compact(r3, None)
        .await
        .unwrap();
    let mut watch = store.watch_config(r1).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(2), watch.next()).await;
    assert_eq!(
        event.unwrap(),
        Some(WatchEvent::Compacted {
            compact_revision: r3
        })
    );
    assert_eq!(watch.next().await, None, "Compacted ends the watch");
    // From the compaction point on, history is there again.
    let mut watch = store.watch_config(r3).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(2), watch.next()).await {
        Ok(Some(WatchEvent::Put(doc))) => {
            assert_eq!((doc.text.as_str(), doc.mod_revision), ("3", r3))
        }
        other => panic!("expected the put at {r3}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_under_the_prefix_can_be_listed_got_put_and_deleted() {
    let etcd = EtcdProc::start();
    let store = store_on(&etcd);
    let other = store_on(&etcd); // another prefix: must stay invisible
    other.put("gateways/gw-z", b"z", Expect::Any).await.unwrap();

    assert_eq!(store.get("gateways/gw-a1").await.unwrap(), None);
    let ra = store
        .put("gateways/gw-a1", b"A1", Expect::Absent)
        .await
        .unwrap();
    let rb = store
        .put("gateways/gw-b1", b"B1", Expect::Absent)
        .await
        .unwrap();
    store
        .put("gatewaysX", b"not under gateways/", Expect::Any)
        .await
        .unwrap();
    store
        .put("migrations/m-3", b"{}", Expect::Any)
        .await
        .unwrap();

    assert_eq!(
        store.get("gateways/gw-a1").await.unwrap(),
        Some((b"A1".to_vec(), ra))
    );
    let listed = store.list("gateways").await.unwrap();
    assert_eq!(
        listed,
        vec![
            ("gw-a1".to_owned(), b"A1".to_vec(), ra),
            ("gw-b1".to_owned(), b"B1".to_vec(), rb),
        ]
    );
    assert_eq!(store.list("gateways/").await.unwrap(), listed);

    store.delete("gateways/gw-a1").await.unwrap();
    store.delete("gateways/gw-a1").await.unwrap(); // absent: still fine
    assert_eq!(store.get("gateways/gw-a1").await.unwrap(), None);
    let names: Vec<String> = store
        .list("gateways")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, vec!["gw-b1"]);
    assert_eq!(store.list("nothing-here").await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_key_is_visible_and_expires_after_its_ttl_when_abandoned() {
    let etcd = EtcdProc::start();
    let store = store_on(&etcd);
    let key = store.leased_key("gateways/gw-a1", 2, b"epoch=1".to_vec());
    let visible = eventually(Duration::from_secs(3), || async {
        store.get("gateways/gw-a1").await.unwrap().is_some() && key.is_live()
    })
    .await;
    assert!(visible, "leased key never appeared");
    // Renewed: still there well past one TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        store.get("gateways/gw-a1").await.unwrap().is_some(),
        "lease not renewed"
    );

    key.set(b"epoch=2".to_vec());
    let updated = eventually(Duration::from_secs(2), || async {
        store.get("gateways/gw-a1").await.unwrap().map(|v| v.0) == Some(b"epoch=2".to_vec())
    })
    .await;
    assert!(updated, "set() never reached etcd");

    let abandoned = Instant::now();
    key.abandon();
    let gone = eventually(Duration::from_secs(5), || async {
        store.get("gateways/gw-a1").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "abandoned key outlived its lease");
    assert!(
        abandoned.elapsed() >= Duration::from_millis(500),
        "gone after {:?}: was revoked, not expired",
        abandoned.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_leased_key_goes_at_once() {
    let etcd = EtcdProc::start();
    let store = store_on(&etcd);
    let key = store.leased_key("gateways/gw-a1", 30, b"x".to_vec());
    assert!(eventually(Duration::from_secs(3), || async { key.is_live() }).await);
    assert!(store.get("gateways/gw-a1").await.unwrap().is_some());
    drop(key);
    let gone = eventually(Duration::from_secs(1), || async {
        store.get("gateways/gw-a1").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "a dropped key with a 30 s lease must go within 1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_goes_to_the_next_owner_only_when_the_lease_is_gone() {
    let etcd = EtcdProc::start();
    let store = store_on(&etcd);
    let first = store
        .try_acquire("lock/migration", 2, "gw-a1")
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_held());
    assert!(store
        .try_acquire("lock/migration", 2, "gw-b1")
        .await
        .unwrap()
        .is_none());
    let holder = store.get("lock/migration").await.unwrap().unwrap().0;
    assert_eq!(holder, b"gw-a1");
    // Held past one TTL: the lease is renewed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(first.is_held());
    assert!(store
        .try_acquire("lock/migration", 2, "gw-b1")
        .await
        .unwrap()
        .is_none());

    let abandoned = Instant::now();
    first.abandon();
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        if let Some(l) = store
            .try_acquire("lock/migration", 2, "gw-b1")
            .await
            .unwrap()
        {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        abandoned.elapsed() >= Duration::from_millis(500),
        "taken before expiry"
    );
    assert!(second.is_held());
    assert_eq!(
        store.get("lock/migration").await.unwrap().unwrap().0,
        b"gw-b1"
    );

    second.release().await.unwrap();
    assert_eq!(store.get("lock/migration").await.unwrap(), None);
    let third = store
        .try_acquire("lock/migration", 2, "gw-c1")
        .await
        .unwrap();
    assert!(third.is_some(), "released: free at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_unavailable_within_its_timeout() {
    // Nobody listens on this port once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let timeout = Duration::from_millis(800);
    let store = store(vec![format!("http://127.0.0.1:{port}")], timeout);
    for _ in 0..2 {
        let started = Instant::now();
        let err = store.read_config().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < timeout + Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_store_survives_an_etcd_restart() {
    let mut etcd = EtcdProc::start();
    let timeout = Duration::from_secs(1);
    let store = store(vec![etcd.endpoint()], timeout);
    let rev = store.write_config("before", Expect::Absent).await.unwrap();
    let key = store.leased_key("gateways/gw-a1", 2, b"up".to_vec());
    assert!(eventually(Duration::from_secs(3), || async { key.is_live() }).await);
    let mut raw = raw_client(etcd.endpoint()).await;
    let full = format!("{}/gateways/gw-a1", store.prefix());
    let old_lease = lease_of(&mut raw, &full).await.unwrap();
    assert_ne!(old_lease, 0);
    let mut watch = store.watch_config(rev + 1).await.unwrap();
    let leader = store
        .try_acquire("lock/migration", 2, "gw-a1")
        .await
        .unwrap()
        .unwrap();

    etcd.kill();
    // The watch ends (the caller re-reads and re-watches) and the
    // leadership is given up, both without waiting for etcd to come back.
    match tokio::time::timeout(Duration::from_secs(3), watch.next()).await {
        Ok(None) => {}
        other => panic!("watch should end when etcd dies, got {other:?}"),
    }
    assert!(
        eventually(Duration::from_secs(3), || async { !leader.is_held() }).await,
        "leadership still claimed with etcd down"
    );
    let slack = Duration::from_millis(700);
    for call in ["read", "write", "get", "watch", "acquire"] {
        let started = Instant::now();
        let err = match call {
            "read" => store.read_config().await.err(),
            "write" => store
                .write_config("during", Expect::Revision(rev))
                .await
                .err(),
            "get" => store.get("gateways/gw-a1").await.err(),
            "watch" => store.watch_config(rev).await.err(),
            _ => store.try_acquire("lock/migration", 2, "gw-a1").await.err(),
        };
        let took = started.elapsed();
        assert!(
            matches!(err, Some(StoreError::Unavailable(_))),
            "{call}: {err:?}"
        );
        assert!(took < timeout + slack, "{call} took {took:?}");
    }
    assert!(
        eventually(Duration::from_secs(4), || async { !key.is_live() }).await,
        "the leased key still claims to be live with etcd down"
    );

    etcd.restart();
    // The same EtcdStore, not a new one.
    let back = eventually(Duration::from_secs(5), || async {
        store.read_config().await.is_ok()
    })
    .await;
    assert!(back, "the store did not reconnect");
    let doc = store.read_config().await.unwrap().0.unwrap();
    assert_eq!((doc.text.as_str(), doc.mod_revision), ("before", rev));
    store
        .write_config("after", Expect::Revision(rev))
        .await
        .unwrap();

    // The leased key is put again under a new lease by itself.
    let mut raw = raw_client(etcd.endpoint()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lease = lease_of(&mut raw, &full).await;
        if key.is_live() && matches!(lease, Some(l) if l != 0 && l != old_lease) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leased key not re-put under a new lease ({lease:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    key.set(b"back".to_vec());
    let updated = eventually(Duration::from_secs(2), || async {
        store
            .get("gateways/gw-a1")
            .await
            .ok()
            .flatten()
            .map(|v| v.0)
            == Some(b"back".to_vec())
    })
    .await;
    assert!(updated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_serves_with_one_member_down() {
    let mut cluster = EtcdCluster::start(3);
    let store = store(cluster.endpoints(), Duration::from_secs(2));
    let mut rev = store
        .write_config("epoch = 1", Expect::Absent)
        .await
        .unwrap();

    cluster.kill(0);
    // Killing the leader costs an election; after that every call works.
    let settled = eventually(Duration::from_secs(10), || async {
        store.read_config().await.is_ok()
    })
    .await;
    assert!(settled, "no reads after one member of three died");
    for i in 0..20 {
        let (doc, _) = store.read_config().await.unwrap();
        assert_eq!(doc.unwrap().mod_revision, rev, "read {i}");
        rev = store
            .write_config(&format!("epoch = {}", i + 2), Expect::Revision(rev))
            .await
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    cluster.restart(0);
    let (doc, _) = store.read_config().await.unwrap();
    assert_eq!(doc.unwrap().text, "epoch = 21");
}
