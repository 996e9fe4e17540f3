//! The ZooKeeper backend against a real ZooKeeper server (Debian's
//! `zookeeper`, tickTime 500 ms: session timeouts 1–10 s), one private
//! server per test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_discovery::kv::{Kind, KvConfig, KvError, KvPair, Registration, Store, TlsFiles};
use swarm_testkit::store::{StoreFixture, ZkServer};

/// Connect and call timeout used by the tests.
const TIMEOUT: Duration = Duration::from_secs(2);

fn config(addr: &str) -> KvConfig {
    KvConfig {
        kind: Kind::Zk,
        endpoints: vec![addr.to_string()],
        prefix: String::new(),
        path: "docker/swarm/nodes".into(),
        tls: None,
    }
}

async fn connect(server: &ZkServer) -> Store {
    Store::connect(&config(&server.addr), TIMEOUT).await.expect("connect to zookeeper")
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

fn session_timeout(reg: &Registration) -> Duration {
    match reg {
        Registration::Zk(r) => r.session_timeout(),
        _ => panic!("not a ZooKeeper registration"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_direct_children_only() {
    let server = ZkServer::start();
    let store = connect(&server).await;
    assert!(store.list("d/nodes").await.unwrap().is_empty(), "a missing directory is empty");
    let ttl = Duration::from_secs(10);
    let mut regs = Vec::new();
    for (i, addr) in ["10.0.0.3:2375", "10.0.0.1:2375", "10.0.0.2:2375"].iter().enumerate() {
        regs.push(store.register(&format!("d/nodes/{addr}"), format!("v{i}").as_bytes(), ttl).await.unwrap());
    }
    // Ephemeral nodes cannot have children; a deeper key needs a persistent parent.
    let _deeper = store.register("d/nodes/sub/deeper", b"x", ttl).await.unwrap();
    let pairs = store.list("d/nodes").await.unwrap();
    assert_eq!(
        keys(&pairs),
        ["d/nodes/10.0.0.1:2375", "d/nodes/10.0.0.2:2375", "d/nodes/10.0.0.3:2375", "d/nodes/sub"],
        "ZooKeeper directories are nodes too"
    );
    assert_eq!(pairs[0].value, b"v1");
    assert!(pairs[3].value.is_empty());
    assert_eq!(store.list("/d/nodes/").await.unwrap(), pairs);
    assert_eq!(keys(&store.list("d/nodes/sub").await.unwrap()), ["d/nodes/sub/deeper"]);
}

#[tokio::test]
async fn connect_to_a_dead_port_fails_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = Instant::now();
    let err = Store::connect(&config(&format!("127.0.0.1:{port}")), TIMEOUT).await.unwrap_err();
    let took = start.elapsed();
    eprintln!("dead port: {err} after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    match err {
        KvError::Unreachable { store, endpoints, reason } => {
            assert_eq!(store, "zookeeper");
            assert_eq!(endpoints, format!("127.0.0.1:{port}"));
            assert!(reason.to_lowercase().contains("refused"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn tls_is_refused_clearly() {
    let mut config = config("127.0.0.1:2181");
    config.tls = Some(TlsFiles { ca: "/ca.pem".into(), cert: "/cert.pem".into(), key: "/key.pem".into() });
    let err = Store::connect(&config, TIMEOUT).await.unwrap_err();
    assert!(matches!(&err, KvError::Tls(m) if m.contains("not supported")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_dir_wakes_promptly_on_a_new_registration() {
    let server = ZkServer::start();
    let store = Arc::new(connect(&server).await);
    let ttl = Duration::from_secs(10);

    // The directory does not exist yet: the wait notices its creation.
    let waiter = {
        let store = store.clone();
        tokio::spawn(
            async move { (store.wait_dir("w/nodes", Some(&[]), Duration::from_secs(10)).await, Instant::now()) },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = Instant::now();
    let _first = store.register("w/nodes/a:1", b"a", ttl).await.unwrap();
    let (known, woke) = waiter.await.unwrap();
    let known = known.unwrap();
    assert_eq!(keys(&known), ["w/nodes/a:1"]);
    eprintln!("zookeeper wait_dir on a missing dir woke {:?} after the registration started", woke - written);
    assert!(woke - written < Duration::from_millis(500));

    assert_eq!(store.wait_dir("w/nodes", None, Duration::from_secs(10)).await.unwrap(), known);

    // Nothing changes: it returns the same entries after max_wait.
    let start = Instant::now();
    let same = store.wait_dir("w/nodes", Some(&known), Duration::from_millis(600)).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(same, known);
    assert!(waited >= Duration::from_millis(550) && waited < Duration::from_secs(2), "waited {waited:?}");

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
        let registered = Instant::now();
        let (pairs, woke) = waiter.await.unwrap();
        let pairs = pairs.unwrap();
        assert!(keys(&pairs).contains(&format!("w/nodes/n{i}:1").as_str()), "{pairs:?}");
        eprintln!("register took {:?}", registered - written);
        latencies.push(woke.saturating_duration_since(written));
        known = pairs;
    }
    eprintln!("zookeeper wait_dir latencies from the start of register() (new session + create): {latencies:?}");
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
    assert!(start.elapsed() < Duration::from_millis(1000));
    assert!(!keys(&pairs).contains(&"w/nodes/n4:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_removes_at_once() {
    let server = ZkServer::start();
    let store = connect(&server).await;
    let reg = store.register("r/nodes/a:1", b"a", Duration::from_secs(10)).await.unwrap();
    let _other = store.register("r/nodes/b:1", b"b", Duration::from_secs(10)).await.unwrap();
    assert_eq!(store.list("r/nodes").await.unwrap().len(), 2);
    assert_eq!(server.sessions().len(), 3, "the store's and one per registration");
    reg.deregister().await.unwrap();
    assert_eq!(keys(&store.list("r/nodes").await.unwrap()), ["r/nodes/b:1"]);
    assert_eq!(server.sessions().len(), 2, "deregister closes the registration's session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_registration_expires_with_its_session() {
    let server = ZkServer::start();
    let store = connect(&server).await;
    let reg = store.register("e/nodes/a:1", b"a", Duration::from_secs(2)).await.unwrap();
    assert_eq!(session_timeout(&reg), Duration::from_secs(2), "the server grants 2 s (within 1-10 s)");
    // Beyond the server's maximum (20 ticks = 10 s) the server lowers it.
    let long = store.register("e/other/b:1", b"b", Duration::from_secs(180)).await.unwrap();
    assert_eq!(session_timeout(&long), Duration::from_secs(10));
    drop(long);

    // The holder goes away without deregistering: its connection closes,
    // the session is not closed, so the server expires it after 2 s.
    drop(reg);
    let start = Instant::now();
    assert_eq!(store.list("e/nodes").await.unwrap().len(), 1, "still there right after the drop");
    assert_eq!(server.sessions().len(), 3, "dropping closes no session (store, `long`, `reg`)");
    let gone = wait_for(&store, "e/nodes", Duration::from_secs(8), "the node expired", |p| p.is_empty()).await;
    eprintln!("zookeeper: dropped 2 s session's node gone after {gone:?}");
    assert_eq!(server.sessions().len(), 2, "the server expired the session");
    assert!(start.elapsed() >= Duration::from_millis(1500), "expired too early: {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registering_replaces_a_node_left_by_an_old_session() {
    let server = ZkServer::start();
    let store = connect(&server).await;
    let old = store.register("p/nodes/a:1", b"old", Duration::from_secs(2)).await.unwrap();
    drop(old); // a crashed holder: its node stays until the session expires
    let mut new = store.register("p/nodes/a:1", b"new", Duration::from_secs(2)).await.unwrap();
    assert_eq!(store.list("p/nodes").await.unwrap()[0].value, b"new");
    // Well past the old session's expiry, the new node is still there.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        new.refresh().await.unwrap();
        assert_eq!(store.list("p/nodes").await.unwrap()[0].value, b"new");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_a_registration_alive_past_its_ttl() {
    let server = ZkServer::start();
    let store = connect(&server).await;
    let mut reg = store.register("k/nodes/a:1", b"a", Duration::from_secs(2)).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        reg.refresh().await.unwrap();
        assert_eq!(keys(&store.list("k/nodes").await.unwrap()), ["k/nodes/a:1"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    reg.deregister().await.unwrap();
    assert!(store.list("k/nodes").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_is_unreachable_and_works_again_after_restart() {
    let mut server = ZkServer::start();
    let store = connect(&server).await;
    let mut reg = store.register("s/nodes/a:1", b"a", Duration::from_secs(2)).await.unwrap();
    assert_eq!(store.list("s/nodes").await.unwrap().len(), 1);

    server.stop();
    let start = Instant::now();
    let err = store.list("s/nodes").await.unwrap_err();
    eprintln!("zookeeper down: list -> {err} after {:?}", start.elapsed());
    assert!(matches!(err, KvError::Unreachable { store: "zookeeper", .. }), "{err:?}");
    assert!(start.elapsed() < TIMEOUT + Duration::from_secs(1), "took {:?}", start.elapsed());
    // Once the client knows it is disconnected, it fails at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let err = store.list("s/nodes").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    assert!(err.to_string().contains("refused"), "{err}");
    let err = reg.refresh().await.unwrap_err();
    eprintln!("zookeeper down: refresh -> {err}");
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    let err = store.wait_dir("s/nodes", Some(&[]), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");

    // Down for longer than the registration's session timeout: the client
    // gives the session up; after the restart, refresh opens a new one.
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.restart();
    wait_for(&store, "s/nodes", Duration::from_secs(20), "zookeeper answers again", |_| true).await;
    let start = Instant::now();
    loop {
        match reg.refresh().await {
            Ok(()) => break,
            Err(e) if start.elapsed() < Duration::from_secs(15) => {
                eprintln!("refresh after restart: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("refresh keeps failing after the restart: {e}"),
        }
    }
    // The old session's copy of the node (restored with the server's data)
    // expires; ours stays.
    tokio::time::sleep(Duration::from_secs(4)).await;
    reg.refresh().await.unwrap();
    assert_eq!(keys(&store.list("s/nodes").await.unwrap()), ["s/nodes/a:1"]);
    let _b = store.register("s/nodes/b:1", b"b", Duration::from_secs(10)).await.unwrap();
    assert_eq!(keys(&store.list("s/nodes").await.unwrap()), ["s/nodes/a:1", "s/nodes/b:1"]);
}
