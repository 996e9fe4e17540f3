//! The Consul backend against a real `consul agent -dev` (one per test, on
//! free ports, so the tests run in parallel).

use std::time::{Duration, Instant};

use swarm_discovery::kv::{Kind, KvConfig, KvError, KvPair, Registration, Store, TlsFiles};
use swarm_testkit::store::{ConsulServer, StoreFixture};

const TIMEOUT: Duration = Duration::from_secs(5);
const DIR: &str = "swarm/docker/swarm/nodes";
/// The shortest TTL Consul accepts (session TTL 10 s).
const TTL: Duration = Duration::from_secs(20);
/// A TTL that does not run out during a test.
const LONG_TTL: Duration = Duration::from_secs(120);

fn config(endpoints: &[&str]) -> KvConfig {
    KvConfig {
        kind: Kind::Consul,
        endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        prefix: "swarm".into(),
        path: "docker/swarm/nodes".into(),
        tls: None,
    }
}

async fn connect(server: &ConsulServer) -> Store {
    Store::connect(&config(&[&server.addr]), TIMEOUT).await.expect("connect to consul")
}

fn key(name: &str) -> String {
    format!("{DIR}/{name}")
}

fn keys(pairs: &[KvPair]) -> Vec<&str> {
    pairs.iter().map(|p| p.key.as_str()).collect()
}

/// A loopback port nobody listens on.
fn dead_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    format!("127.0.0.1:{port}")
}

/// The session holding `key` according to Consul itself (None if no key or no holder).
fn holder(server: &ConsulServer, key: &str) -> Option<String> {
    let (status, body) = server.request("GET", &format!("/v1/kv/{key}"), b"").expect("raw GET");
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "{body}");
    let entries: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    entries[0]["Session"].as_str().map(str::to_string)
}

#[tokio::test]
async fn connects_and_lists_an_empty_dir() {
    let server = ConsulServer::start();
    let store = connect(&server).await;
    assert_eq!(store.list(DIR).await.expect("list"), vec![]);
    assert_eq!(store.wait_dir(DIR, None, Duration::from_secs(10)).await.expect("wait_dir"), vec![]);
}

#[tokio::test]
async fn a_dead_address_fails_fast_and_failover_skips_it() {
    let dead = dead_addr();
    let start = Instant::now();
    let err = Store::connect(&config(&[&dead]), TIMEOUT).await.expect_err("nobody listens there");
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    match &err {
        KvError::Unreachable { store, endpoints, reason } => {
            assert_eq!(*store, "consul");
            assert_eq!(endpoints, &dead);
            assert!(reason.to_lowercase().contains("refused"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    eprintln!("dead address: {err} (after {:?})", start.elapsed());

    // A dead first member does not matter when another one answers.
    let server = ConsulServer::start();
    let store = Store::connect(&config(&[&dead, &server.addr]), TIMEOUT).await.expect("failover connect");
    let reg = store.register(&key("10.0.0.1:2375"), b"10.0.0.1:2375", LONG_TTL).await.expect("register");
    assert_eq!(keys(&store.list(DIR).await.expect("list")), vec![key("10.0.0.1:2375")]);
    reg.deregister().await.expect("deregister");
}

#[tokio::test]
async fn tls_is_refused_clearly() {
    let mut cfg = config(&["127.0.0.1:1"]);
    cfg.tls = Some(TlsFiles { ca: "ca.pem".into(), cert: "cert.pem".into(), key: "key.pem".into() });
    match Store::connect(&cfg, TIMEOUT).await {
        Err(KvError::Tls(msg)) => assert!(msg.contains("not supported"), "{msg}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn lists_direct_children_only() {
    let server = ConsulServer::start();
    let store = connect(&server).await;
    let mut regs = Vec::new();
    for addr in ["10.0.0.2:2375", "10.0.0.1:2375", "10.0.0.3:2376"] {
        regs.push(store.register(&key(addr), addr.as_bytes(), LONG_TTL).await.expect("register"));
    }
    // Neither deeper keys, the directory key itself nor a sibling directory count.
    for (path, value) in
        [(format!("{DIR}/10.0.0.1:2375/deeper"), "x"), (format!("{DIR}/"), ""), (format!("{DIR}X/y"), "y")]
    {
        let (status, body) = server.request("PUT", &format!("/v1/kv/{path}"), value.as_bytes()).expect("raw PUT");
        assert_eq!((status, body.trim()), (200, "true"));
    }
    let expected: Vec<KvPair> = ["10.0.0.1:2375", "10.0.0.2:2375", "10.0.0.3:2376"]
        .iter()
        .map(|a| KvPair { key: key(a), value: a.as_bytes().to_vec() })
        .collect();
    assert_eq!(store.list(DIR).await.expect("list"), expected);
    assert_eq!(store.list(&format!("/{DIR}/")).await.expect("list with slashes"), expected);
    assert_eq!(store.wait_dir(DIR, None, Duration::from_secs(10)).await.expect("wait_dir"), expected);
    for reg in regs {
        reg.deregister().await.expect("deregister");
    }
    assert_eq!(store.list(DIR).await.expect("list"), vec![]);
}

#[tokio::test]
async fn wait_dir_wakes_up_at_once_on_changes() {
    let server = ConsulServer::start();
    let store = connect(&server).await;
    let first = store.register(&key("10.0.0.1:2375"), b"10.0.0.1:2375", LONG_TTL).await.expect("register");
    let known = store.list(DIR).await.expect("list");

    // Nothing changes: the wait lasts about max_wait and returns the same content.
    let start = Instant::now();
    let same = store.wait_dir(DIR, Some(&known), Duration::from_millis(1500)).await.expect("wait_dir");
    let waited = start.elapsed();
    assert_eq!(same, known);
    assert!(waited >= Duration::from_millis(1300) && waited < Duration::from_millis(2500), "waited {waited:?}");

    // A new registration while a wait is pending wakes it up.
    let wait = async {
        let got = store.wait_dir(DIR, Some(&known), Duration::from_secs(20)).await;
        (got, Instant::now())
    };
    let register = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start = Instant::now();
        let reg = store.register(&key("10.0.0.2:2375"), b"10.0.0.2:2375", LONG_TTL).await.expect("register");
        (reg, start, Instant::now())
    };
    let ((got, woke), (second, reg_start, reg_done)) = tokio::join!(wait, register);
    let got = got.expect("wait_dir");
    assert_eq!(keys(&got), vec![key("10.0.0.1:2375"), key("10.0.0.2:2375")]);
    let latency = woke.saturating_duration_since(reg_done);
    eprintln!(
        "wait_dir woke {latency:?} after register() returned, {:?} after it started",
        woke.saturating_duration_since(reg_start)
    );
    assert!(latency < Duration::from_millis(200), "wait_dir took {latency:?} to notice the new key");

    // Consecutive waits block from the last index: a deregistration wakes the next one.
    let wait = async {
        let got = store.wait_dir(DIR, Some(&got), Duration::from_secs(20)).await;
        (got, Instant::now())
    };
    let deregister = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        first.deregister().await.expect("deregister");
        Instant::now()
    };
    let ((after, woke), done) = tokio::join!(wait, deregister);
    assert_eq!(keys(&after.expect("wait_dir")), vec![key("10.0.0.2:2375")]);
    let latency = woke.saturating_duration_since(done);
    assert!(latency < Duration::from_millis(200), "wait_dir took {latency:?} to notice the removal");

    // A caller behind the store gets the news without blocking.
    let start = Instant::now();
    let now = store.wait_dir(DIR, Some(&known), Duration::from_secs(20)).await.expect("wait_dir");
    assert_eq!(keys(&now), vec![key("10.0.0.2:2375")]);
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());

    // Changes deeper down do not end a wait.
    let start = Instant::now();
    let wait = store.wait_dir(DIR, Some(&now), Duration::from_millis(1500));
    let deeper = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, _) = server.request("PUT", &format!("/v1/kv/{DIR}/10.0.0.2:2375/x"), b"x").expect("raw PUT");
        assert_eq!(status, 200);
    };
    let (same, ()) = tokio::join!(wait, deeper);
    assert_eq!(same.expect("wait_dir"), now);
    assert!(start.elapsed() >= Duration::from_millis(1300), "returned after {:?}", start.elapsed());
    second.deregister().await.expect("deregister");
}

#[tokio::test]
async fn deregister_removes_the_key_at_once() {
    let server = ConsulServer::start();
    let store = connect(&server).await;
    let reg = store.register(&key("10.0.0.1:2375"), b"10.0.0.1:2375", LONG_TTL).await.expect("register");
    assert!(holder(&server, &key("10.0.0.1:2375")).is_some());
    reg.deregister().await.expect("deregister");
    assert_eq!(store.list(DIR).await.expect("list"), vec![]);
    let (status, sessions) = server.request("GET", "/v1/session/list", b"").expect("raw GET");
    assert_eq!((status, sessions.trim()), (200, "[]"), "the session must be destroyed");
}

#[tokio::test]
async fn a_ttl_below_the_minimum_is_refused_clearly() {
    let server = ConsulServer::start();
    let store = connect(&server).await;
    for ttl in [Duration::from_secs(19), Duration::from_secs(5)] {
        match store.register(&key("10.0.0.1:2375"), b"x", ttl).await {
            Err(KvError::InvalidTtl(msg)) => {
                assert!(msg.contains("minimum is 20s"), "{msg}");
                eprintln!("ttl {ttl:?}: {msg}");
            }
            Err(other) => panic!("expected InvalidTtl, got {other:?}"),
            Ok(_) => panic!("ttl {ttl:?} must be refused"),
        }
    }
    assert_eq!(store.list(DIR).await.expect("list"), vec![]);
    let (_, sessions) = server.request("GET", "/v1/session/list", b"").expect("raw GET");
    assert_eq!(sessions.trim(), "[]");
}

/// The one slow test: an abandoned registration expires after its TTL while
/// a refreshed one lives on.
#[tokio::test]
async fn abandoned_registrations_expire_and_refreshed_ones_live() {
    let server = ConsulServer::start();
    let store = connect(&server).await;
    let mut kept = store.register(&key("10.0.0.1:2375"), b"10.0.0.1:2375", TTL).await.expect("register");
    let _abandoned = store.register(&key("10.0.0.2:2375"), b"10.0.0.2:2375", TTL).await.expect("register");
    let start = Instant::now();
    let mut known = store.list(DIR).await.expect("list");
    assert_eq!(keys(&known).len(), 2);
    let mut last_refresh = Instant::now();
    while keys(&known).len() == 2 {
        assert!(start.elapsed() < Duration::from_secs(35), "the abandoned key did not expire within 35 s");
        if last_refresh.elapsed() >= Duration::from_secs(3) {
            kept.refresh().await.expect("refresh");
            last_refresh = Instant::now();
        }
        known = store.wait_dir(DIR, Some(&known), Duration::from_secs(3)).await.expect("wait_dir");
    }
    let expired_after = start.elapsed();
    eprintln!("abandoned registration (ttl {TTL:?}) expired after {expired_after:?}");
    assert!(expired_after >= Duration::from_secs(10), "expired before the session TTL: {expired_after:?}");
    assert_eq!(keys(&known), vec![key("10.0.0.1:2375")]);
    // The refreshed one outlives its TTL.
    while start.elapsed() < TTL + Duration::from_secs(5) {
        kept.refresh().await.expect("refresh");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert_eq!(keys(&store.list(DIR).await.expect("list")), vec![key("10.0.0.1:2375")]);
}

#[tokio::test]
async fn refresh_recreates_a_lost_key() {
    let server = ConsulServer::start();
    let store = connect(&server).await;
    let k = key("10.0.0.1:2375");
    let mut reg = store.register(&k, b"10.0.0.1:2375", LONG_TTL).await.expect("register");

    // Session destroyed behind our back (as if it had expired): the key goes with it.
    let session = holder(&server, &k).expect("held");
    let (status, _) = server.request("PUT", &format!("/v1/session/destroy/{session}"), b"").expect("raw PUT");
    assert_eq!(status, 200);
    assert_eq!(store.list(DIR).await.expect("list"), vec![]);
    reg.refresh().await.expect("refresh");
    let new_session = holder(&server, &k).expect("held again");
    assert_ne!(new_session, session);
    assert_eq!(store.list(DIR).await.expect("list"), vec![KvPair { key: k.clone(), value: b"10.0.0.1:2375".to_vec() }]);

    // Key deleted while the session lives.
    let (status, _) = server.request("DELETE", &format!("/v1/kv/{k}"), b"").expect("raw DELETE");
    assert_eq!(status, 200);
    reg.refresh().await.expect("refresh");
    assert_eq!(holder(&server, &k), Some(new_session));
    reg.deregister().await.expect("deregister");
}

#[tokio::test]
async fn a_held_key_is_taken_over_once_free() {
    let server = ConsulServer::start();
    let store = connect(&server).await;
    let k = key("10.0.0.1:2375");
    let old = store.register(&k, b"old", LONG_TTL).await.expect("register");
    let old_session = holder(&server, &k).expect("held");
    // A second registration of the same key (say, a restarted `swarm join`).
    let mut new = store.register(&k, b"new", LONG_TTL).await.expect("register while held");
    assert_eq!(holder(&server, &k), Some(old_session));
    match new.refresh().await {
        Err(KvError::Protocol { reason, .. }) => assert!(reason.contains("held by another session"), "{reason}"),
        other => panic!("expected a Protocol error while the key is held, got {other:?}"),
    }
    old.deregister().await.expect("deregister");
    new.refresh().await.expect("refresh takes the key over");
    assert_eq!(store.list(DIR).await.expect("list"), vec![KvPair { key: k.clone(), value: b"new".to_vec() }]);
    new.deregister().await.expect("deregister");
}

#[tokio::test]
async fn survives_a_store_outage() {
    let mut server = ConsulServer::start();
    let store = connect(&server).await;
    let k = key("10.0.0.1:2375");
    let mut reg: Registration = store.register(&k, b"10.0.0.1:2375", LONG_TTL).await.expect("register");
    let known = store.list(DIR).await.expect("list");
    assert_eq!(keys(&known), vec![k.clone()]);

    server.stop();
    let start = Instant::now();
    match store.list(DIR).await {
        Err(KvError::Unreachable { store, .. }) => assert_eq!(store, "consul"),
        other => panic!("expected Unreachable while the store is down, got {other:?}"),
    }
    assert!(matches!(
        store.wait_dir(DIR, Some(&known), Duration::from_secs(10)).await,
        Err(KvError::Unreachable { .. })
    ));
    assert!(matches!(reg.refresh().await, Err(KvError::Unreachable { .. })));
    assert!(start.elapsed() < Duration::from_secs(2), "errors took {:?}", start.elapsed());

    // Back, but empty (a -dev agent keeps no data): the holder re-registers.
    server.restart();
    assert_eq!(store.list(DIR).await.expect("list after restart"), vec![]);
    reg.refresh().await.expect("refresh after restart");
    assert_eq!(store.list(DIR).await.expect("list"), known);

    // Watching works again, from the new store's index.
    let wait = async {
        let got = store.wait_dir(DIR, Some(&known), Duration::from_secs(20)).await;
        (got, Instant::now())
    };
    let register = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reg = store.register(&key("10.0.0.2:2375"), b"10.0.0.2:2375", LONG_TTL).await.expect("register");
        (reg, Instant::now())
    };
    let ((got, woke), (second, done)) = tokio::join!(wait, register);
    assert_eq!(keys(&got.expect("wait_dir")), vec![k, key("10.0.0.2:2375")]);
    assert!(woke.saturating_duration_since(done) < Duration::from_millis(200));
    second.deregister().await.expect("deregister");
    reg.deregister().await.expect("deregister");
}

#[tokio::test]
async fn servers_run_side_by_side() {
    let (a, b) = (ConsulServer::start(), ConsulServer::start());
    assert_ne!(a.addr, b.addr);
    let (sa, sb) = (connect(&a).await, connect(&b).await);
    let reg = sa.register(&key("10.0.0.1:2375"), b"a", LONG_TTL).await.expect("register");
    assert_eq!(keys(&sa.list(DIR).await.expect("list")).len(), 1);
    assert_eq!(sb.list(DIR).await.expect("list"), vec![]);
    reg.deregister().await.expect("deregister");
}
