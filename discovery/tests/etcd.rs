//! The etcd backend against a real etcd server (Debian's `etcd-server`),
//! one private server per test.

use std::time::{Duration, Instant};

use swarm_discovery::kv::{Kind, KvConfig, KvError, KvPair, Store, TlsFiles};
use swarm_testkit::store::{EtcdServer, StoreFixture, TestCa};

/// Connect and call timeout used by the tests.
const TIMEOUT: Duration = Duration::from_secs(2);

fn config(addr: &str, tls: Option<TlsFiles>) -> KvConfig {
    KvConfig {
        kind: Kind::Etcd,
        endpoints: vec![addr.to_string()],
        prefix: String::new(),
        path: "docker/swarm/nodes".into(),
        tls,
    }
}

async fn connect(server: &EtcdServer) -> Store {
    Store::connect(&config(&server.addr, None), TIMEOUT).await.expect("connect to etcd")
}

fn keys(pairs: &[KvPair]) -> Vec<&str> {
    pairs.iter().map(|p| p.key.as_str()).collect()
}

/// Polls `list(dir)` until `check` holds or `within` passes; returns the time it took.
async fn wait_for(
    store: &Store,
    dir: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&[KvPair]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(pairs) = store.list(dir).await {
            if check(&pairs) {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < within, "timed out after {within:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_direct_children_only() {
    let server = EtcdServer::start();
    let store = connect(&server).await;
    assert!(store.list("d/nodes").await.unwrap().is_empty(), "a missing directory is empty");
    let ttl = Duration::from_secs(30);
    let mut regs = Vec::new();
    for (i, addr) in ["10.0.0.3:2375", "10.0.0.1:2375", "10.0.0.2:2375"].iter().enumerate() {
        regs.push(store.register(&format!("d/nodes/{addr}"), format!("v{i}").as_bytes(), ttl).await.unwrap());
    }
    let _deeper = store.register("d/nodes/10.0.0.1:2375/deeper", b"x", ttl).await.unwrap();
    let _sibling = store.register("d/nodesx/other", b"x", ttl).await.unwrap();
    let pairs = store.list("d/nodes").await.unwrap();
    assert_eq!(keys(&pairs), ["d/nodes/10.0.0.1:2375", "d/nodes/10.0.0.2:2375", "d/nodes/10.0.0.3:2375"]);
    assert_eq!(pairs[0].value, b"v1");
    // Stray slashes in the directory name are tolerated.
    assert_eq!(store.list("/d/nodes/").await.unwrap(), pairs);
}

#[tokio::test]
async fn connect_to_a_dead_port_fails_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = Instant::now();
    let err = Store::connect(&config(&format!("127.0.0.1:{port}"), None), TIMEOUT).await.unwrap_err();
    let took = start.elapsed();
    eprintln!("dead port: {err} after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    match err {
        KvError::Unreachable { store, endpoints, reason } => {
            assert_eq!(store, "etcd");
            assert_eq!(endpoints, format!("127.0.0.1:{port}"));
            assert!(reason.to_lowercase().contains("refused"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_dir_wakes_promptly_on_a_new_registration() {
    let server = EtcdServer::start();
    let store = std::sync::Arc::new(connect(&server).await);
    let ttl = Duration::from_secs(30);
    let _first = store.register("w/nodes/a:1", b"a", ttl).await.unwrap();
    let known = store.wait_dir("w/nodes", None, Duration::from_secs(10)).await.unwrap();
    assert_eq!(keys(&known), ["w/nodes/a:1"], "without `known` it returns at once");

    // Nothing changes: it returns the same entries after max_wait.
    let start = Instant::now();
    let same = store.wait_dir("w/nodes", Some(&known), Duration::from_millis(600)).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(same, known);
    assert!(waited >= Duration::from_millis(550) && waited < Duration::from_secs(2), "waited {waited:?}");

    // A deeper key does not count as a change of the directory.
    let start = Instant::now();
    let waiter = {
        let (store, known) = (store.clone(), known.clone());
        tokio::spawn(async move { store.wait_dir("w/nodes", Some(&known), Duration::from_millis(800)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _deeper = store.register("w/nodes/a:1/deeper", b"x", ttl).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), known);
    assert!(start.elapsed() >= Duration::from_millis(750));

    let mut latencies = Vec::new();
    let mut regs = Vec::new();
    let mut known = known;
    for i in 0..5 {
        let waiter = {
            let (store, known) = (store.clone(), known.clone());
            tokio::spawn(async move {
                let pairs = store.wait_dir("w/nodes", Some(&known), Duration::from_secs(10)).await;
                (pairs, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await; // the watch is in place
        let written = Instant::now();
        regs.push(store.register(&format!("w/nodes/n{i}:1"), b"n", ttl).await.unwrap());
        let (pairs, woke) = waiter.await.unwrap();
        let pairs = pairs.unwrap();
        assert!(keys(&pairs).contains(&format!("w/nodes/n{i}:1").as_str()), "{pairs:?}");
        latencies.push(woke.duration_since(written));
        known = pairs;
    }
    eprintln!("etcd wait_dir latencies after a registration: {latencies:?}");
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(worst < Duration::from_millis(200), "wait_dir woke up too late: {latencies:?}");

    // Deregistering wakes it up too.
    let waiter = {
        let (store, known) = (store.clone(), known.clone());
        tokio::spawn(async move { store.wait_dir("w/nodes", Some(&known), Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    regs.pop().unwrap().deregister().await.unwrap();
    let pairs = waiter.await.unwrap().unwrap();
    assert!(start.elapsed() < Duration::from_millis(500));
    assert!(!keys(&pairs).contains(&"w/nodes/n4:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_removes_at_once() {
    let server = EtcdServer::start();
    let store = connect(&server).await;
    let reg = store.register("r/nodes/a:1", b"a", Duration::from_secs(60)).await.unwrap();
    let _other = store.register("r/nodes/b:1", b"b", Duration::from_secs(60)).await.unwrap();
    assert_eq!(store.list("r/nodes").await.unwrap().len(), 2);
    reg.deregister().await.unwrap();
    assert_eq!(keys(&store.list("r/nodes").await.unwrap()), ["r/nodes/b:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_without_refresh_expires_after_its_ttl() {
    let server = EtcdServer::start();
    let store = connect(&server).await;
    // 1 s is below etcd's minimum and is raised to 2 s.
    let reg = store.register("e/nodes/a:1", b"a", Duration::from_secs(1)).await.unwrap();
    let idle = store.register("e/idle/b:1", b"b", Duration::from_secs(2)).await.unwrap();
    drop(reg); // the holder stops refreshing, as if it had crashed
    let start = Instant::now();
    assert_eq!(store.list("e/nodes").await.unwrap().len(), 1);
    let gone = wait_for(&store, "e/nodes", Duration::from_secs(8), "the key expired", |p| p.is_empty()).await;
    eprintln!("etcd: unrefreshed 2 s lease gone after {gone:?}");
    assert!(start.elapsed() >= Duration::from_millis(1500), "expired too early: {:?}", start.elapsed());
    // Deregistering a registration whose lease already expired is fine.
    wait_for(&store, "e/idle", Duration::from_secs(8), "the idle key expired", |p| p.is_empty()).await;
    idle.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_a_registration_alive_and_recreates_it_after_expiry() {
    let server = EtcdServer::start();
    let store = connect(&server).await;
    let mut reg = store.register("k/nodes/a:1", b"a", Duration::from_secs(2)).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        reg.refresh().await.unwrap();
        assert_eq!(keys(&store.list("k/nodes").await.unwrap()), ["k/nodes/a:1"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The holder pauses longer than the TTL: the key goes away...
    wait_for(&store, "k/nodes", Duration::from_secs(8), "the key expired", |p| p.is_empty()).await;
    // ...and the next refresh puts it back under a new lease.
    reg.refresh().await.unwrap();
    assert_eq!(store.list("k/nodes").await.unwrap(), vec![KvPair { key: "k/nodes/a:1".into(), value: b"a".to_vec() }]);
    // Someone deletes or overwrites it: refresh writes it again.
    let other = store.register("k/nodes/a:1", b"intruder", Duration::from_secs(60)).await.unwrap();
    reg.refresh().await.unwrap();
    assert_eq!(store.list("k/nodes").await.unwrap()[0].value, b"a");
    drop(other);
    reg.deregister().await.unwrap();
    assert!(store.list("k/nodes").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_is_unreachable_and_works_again_after_restart() {
    let mut server = EtcdServer::start();
    let store = connect(&server).await;
    let mut reg = store.register("s/nodes/a:1", b"a", Duration::from_secs(30)).await.unwrap();
    assert_eq!(store.list("s/nodes").await.unwrap().len(), 1);

    server.stop();
    let start = Instant::now();
    let err = store.list("s/nodes").await.unwrap_err();
    eprintln!("etcd down: list -> {err} after {:?}", start.elapsed());
    assert!(matches!(err, KvError::Unreachable { store: "etcd", .. }), "{err:?}");
    assert!(start.elapsed() < TIMEOUT + Duration::from_secs(2), "took {:?}", start.elapsed());
    assert!(matches!(reg.refresh().await, Err(KvError::Unreachable { .. })));
    let err = store.wait_dir("s/nodes", Some(&[]), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");

    server.restart();
    // The client reconnects by itself; allow it a moment.
    wait_for(&store, "s/nodes", Duration::from_secs(15), "etcd answers again", |p| p.len() == 1).await;
    reg.refresh().await.unwrap();
    let _b = store.register("s/nodes/b:1", b"b", Duration::from_secs(30)).await.unwrap();
    assert_eq!(keys(&store.list("s/nodes").await.unwrap()), ["s/nodes/a:1", "s/nodes/b:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let ca = TestCa::generate();
    let server = EtcdServer::start_tls(&ca);
    let files = TlsFiles { ca: ca.ca.clone(), cert: ca.client_cert.clone(), key: ca.client_key.clone() };
    let store = Store::connect(&config(&server.addr, Some(files)), TIMEOUT).await.expect("connect over TLS");
    let reg = store.register("t/nodes/a:1", b"a", Duration::from_secs(30)).await.unwrap();
    assert_eq!(keys(&store.list("t/nodes").await.unwrap()), ["t/nodes/a:1"]);
    reg.deregister().await.unwrap();

    // Plain HTTP/2 to the TLS port.
    let start = Instant::now();
    let err = Store::connect(&config(&server.addr, None), TIMEOUT).await.unwrap_err();
    eprintln!("etcd TLS port without TLS: {err} after {:?}", start.elapsed());
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(4));

    // A client certificate the server's CA did not sign.
    let stranger = TestCa::generate();
    let files = TlsFiles { ca: ca.ca.clone(), cert: stranger.client_cert.clone(), key: stranger.client_key.clone() };
    let start = Instant::now();
    let err = Store::connect(&config(&server.addr, Some(files)), TIMEOUT).await.unwrap_err();
    eprintln!("etcd TLS with a foreign client cert: {err} after {:?}", start.elapsed());
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(4));

    // A CA that did not sign the server's certificate.
    let files = TlsFiles { ca: stranger.ca.clone(), cert: ca.client_cert.clone(), key: ca.client_key.clone() };
    let err = Store::connect(&config(&server.addr, Some(files)), TIMEOUT).await.unwrap_err();
    eprintln!("etcd TLS with the wrong CA: {err}");
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");

    // Unreadable files are reported as TLS errors naming the file.
    let files =
        TlsFiles { ca: ca.dir.path().join("nope.pem"), cert: ca.client_cert.clone(), key: ca.client_key.clone() };
    let err = Store::connect(&config(&server.addr, Some(files)), TIMEOUT).await.unwrap_err();
    assert!(matches!(&err, KvError::Tls(m) if m.contains("nope.pem")), "{err:?}");
}
