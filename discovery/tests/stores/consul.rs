//! The Consul client against a real agent (`consul agent -dev`, on free
//! ports): registrations, and the leader lock with its sessions and health
//! checks, none left behind.

use std::time::{Duration, Instant};

use swarm_discovery::kv::{Kind, KvConfig, KvError, KvPair, Lock, LockLoss, Registration, Store, TlsFiles};
use swarm_testkit::store::{ConsulServer, StoreFixture, TestCa};

use crate::{config, connect, connect_for_locks, dead_addr, keys, start_and_connect, Backend, ClientProfile, KEY};

const DIR: &str = "swarm/docker/swarm/nodes";
/// The shortest TTL Consul accepts (session TTL 10 s).
const TTL: Duration = Duration::from_secs(20);
/// A TTL that does not run out during a test.
const LONG_TTL: Duration = Duration::from_secs(120);
const A: &str = "10.0.0.1:3375";
const B: &str = "10.0.0.2:3375";

impl Backend for ConsulServer {
    const CLIENT: ClientProfile = ClientProfile {
        timeout: Duration::from_secs(5),
        lock_timeout: Duration::from_secs(5),
        fails_within: Duration::from_secs(2),
        // In base64 in a transaction's body, bounded by `txn_max_req_len` (512 KiB).
        ..ClientProfile::on_loopback(Kind::Consul, 380 * 1024)
    };

    /// A Consul lock does not tell its TTL.
    fn granted_ttl(_lock: &Lock) -> Option<Duration> {
        None
    }

    /// One session and one health check per held lock; stores hold none.
    async fn assert_locks_held(&self, _stores: usize, held: &[&Lock], what: &str) {
        assert_eq!(lock_checks(self).len(), held.len(), "{what}: {:?}", lock_checks(self));
        assert_eq!(sessions(self), held.len(), "{what}");
    }
}

crate::contract_tests!(ConsulServer:
    connect_to_a_dead_port_fails_fast,
    racing_candidates_get_one_lock_and_the_loser_leaves_nothing,
    break_lock_ends_only_the_named_holder,
    missing_keys_read_as_none_and_conflict,
    put_and_get_round_trip_bytes_and_versions_grow,
    put_if_and_delete_if_compare_versions,
    racing_conditional_writers_get_one_win,
    listing_shows_put_keys_with_versions,
    big_values_fit_and_too_large_ones_are_refused_clearly,
);
// Not `persistent_keys_survive_a_restart`: a `-dev` agent keeps its data in
// memory and comes back empty (see the fixture).

fn key(name: &str) -> String {
    format!("{DIR}/{name}")
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

async fn take(store: &Store, value: &str, ttl: Duration) -> Lock {
    store.try_lock(KEY, value, ttl).await.expect("try_lock").expect("the lock is free")
}

fn json(server: &ConsulServer, path: &str) -> serde_json::Value {
    let (status, body) = server.request("GET", path, b"").expect("request to the agent");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON from the agent")
}

/// IDs of the lock health checks registered with the agent.
fn lock_checks(server: &ConsulServer) -> Vec<String> {
    let checks = json(server, "/v1/agent/checks");
    let mut ids: Vec<String> =
        checks.as_object().expect("a map").keys().filter(|id| id.starts_with("swarm-leader-")).cloned().collect();
    ids.sort();
    ids
}

fn sessions(server: &ConsulServer) -> usize {
    json(server, "/v1/session/list").as_array().expect("a list").len()
}

/// No lock health check and no session is left on the agent.
fn assert_nothing_left(server: &ConsulServer) {
    assert_eq!(lock_checks(server), Vec::<String>::new());
    assert_eq!(sessions(server), 0);
}

/// Polls `what` every 10 ms until true or `within` passes.
async fn eventually(within: Duration, mut what: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if what() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    what()
}

/// Waits out the anti-entropy stagger of a fresh agent. When a Consul server
/// joins (here: the agent itself, at start) each agent waits a random time of
/// up to 3 s (more in clusters over 128 nodes) before a full sync, and does
/// not push check status changes to the servers meanwhile; a TTL check going
/// critical in that window ends its session only after the stagger. Tests
/// that time expiries start after it.
async fn settle_after_start() {
    tokio::time::sleep(Duration::from_millis(3500)).await;
}

fn is_unreachable(e: &KvError) -> bool {
    matches!(e, KvError::Unreachable { .. })
}

#[tokio::test]
async fn connects_and_lists_an_empty_dir() {
    let (_server, store) = start_and_connect::<ConsulServer>().await;
    assert_eq!(store.list(DIR).await.expect("list"), vec![]);
    assert_eq!(store.wait_dir(DIR, None, Duration::from_secs(10)).await.expect("wait_dir"), vec![]);
}

/// A dead first member does not matter when another one answers.
#[tokio::test]
async fn failover_skips_a_dead_member() {
    let server = ConsulServer::start();
    let config = KvConfig { endpoints: vec![dead_addr(), server.addr.clone()], ..config::<ConsulServer>(&server.addr) };
    let store = Store::connect(&config, ConsulServer::TIMEOUT).await.expect("failover connect");
    let reg = store.register(&key("10.0.0.1:2375"), b"10.0.0.1:2375", LONG_TTL).await.expect("register");
    assert_eq!(keys(&store.list(DIR).await.expect("list")), vec![key("10.0.0.1:2375")]);
    reg.deregister().await.expect("deregister");
}

#[tokio::test]
async fn lists_direct_children_only() {
    let (server, store) = start_and_connect::<ConsulServer>().await;
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
    let (server, store) = start_and_connect::<ConsulServer>().await;
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
    let (server, store) = start_and_connect::<ConsulServer>().await;
    let reg = store.register(&key("10.0.0.1:2375"), b"10.0.0.1:2375", LONG_TTL).await.expect("register");
    assert!(holder(&server, &key("10.0.0.1:2375")).is_some());
    reg.deregister().await.expect("deregister");
    assert_eq!(store.list(DIR).await.expect("list"), vec![]);
    let (status, sessions) = server.request("GET", "/v1/session/list", b"").expect("raw GET");
    assert_eq!((status, sessions.trim()), (200, "[]"), "the session must be destroyed");
}

#[tokio::test]
async fn a_ttl_below_the_minimum_is_refused_clearly() {
    let (server, store) = start_and_connect::<ConsulServer>().await;
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
    let (_server, store) = start_and_connect::<ConsulServer>().await;
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
    let (server, store) = start_and_connect::<ConsulServer>().await;
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
    let (server, store) = start_and_connect::<ConsulServer>().await;
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_renewal_release_and_immediate_takeover() {
    let server = ConsulServer::start();
    let (s1, s2) = (connect_for_locks(&server).await, connect_for_locks(&server).await);
    let ttl = Duration::from_secs(2);

    // Free: wait_holder(None) blocks until someone takes the lock.
    assert_eq!(s2.wait_holder(KEY, None, Duration::ZERO).await.unwrap(), None);
    let waiter = {
        let s = connect_for_locks(&server).await;
        tokio::spawn(async move {
            let r = s.wait_holder(KEY, None, Duration::from_secs(10)).await;
            (r, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let taking = Instant::now();
    let mut a = take(&s1, A, ttl).await;
    let (seen, at) = waiter.await.unwrap();
    assert_eq!(seen.unwrap().as_deref(), Some(A));
    let latency = at.saturating_duration_since(taking);
    println!("wait_holder(None) saw the new holder {latency:?} after try_lock started");
    assert!(latency < Duration::from_millis(100), "{latency:?}");

    // Exclusive: the other connection gets None, and leaves nothing behind.
    assert!(s2.try_lock(KEY, B, ttl).await.unwrap().is_none());
    assert!(s1.try_lock(KEY, A, ttl).await.unwrap().is_none(), "not reentrant either");
    assert_eq!(s2.wait_holder(KEY, None, Duration::from_secs(5)).await.unwrap().as_deref(), Some(A));
    assert_eq!(lock_checks(&server).len(), 1, "{:?}", lock_checks(&server));
    assert_eq!(sessions(&server), 1);

    // Renewals keep it well past the TTL.
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < ttl * 3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let renew = Instant::now();
        a.renew().await.expect("renew");
        slowest = slowest.max(renew.elapsed());
    }
    println!("slowest renew: {slowest:?}");
    assert_eq!(s2.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some(A));
    // A blocking wait on an unchanged holder lasts its max_wait.
    let waited = Instant::now();
    assert_eq!(s2.wait_holder(KEY, Some(A), Duration::from_millis(500)).await.unwrap().as_deref(), Some(A));
    let waited = waited.elapsed();
    assert!(waited >= Duration::from_millis(450) && waited < Duration::from_secs(2), "{waited:?}");

    // Release: a pending wait_holder wakes at once, the other takes over at once.
    let waiter = {
        let s = connect_for_locks(&server).await;
        tokio::spawn(async move {
            let r = s.wait_holder(KEY, Some(A), Duration::from_secs(10)).await;
            (r, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let releasing = Instant::now();
    a.release().await.expect("release");
    let released = releasing.elapsed();
    let b = take(&s2, B, ttl).await;
    let takeover = releasing.elapsed();
    let (seen, at) = waiter.await.unwrap();
    assert_eq!(seen.unwrap(), None);
    let wake = at.saturating_duration_since(releasing);
    println!("release took {released:?}; the other held the lock {takeover:?} after release started");
    println!("wait_holder(Some(holder)) woke {wake:?} after release started");
    assert!(wake < Duration::from_millis(100), "{wake:?}");
    assert!(takeover < Duration::from_millis(200), "{takeover:?}");
    assert_eq!(s1.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some(B));

    // Nothing left behind once released.
    b.release().await.expect("release");
    assert_eq!(s1.wait_holder(KEY, None, Duration::ZERO).await.unwrap(), None);
    assert_nothing_left(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stops_renewing_is_freed_after_the_ttl() {
    let server = ConsulServer::start();
    let (s1, s2) = (connect_for_locks(&server).await, connect_for_locks(&server).await);
    settle_after_start().await;
    for ttl in [Duration::from_secs(1), Duration::from_secs(2)] {
        let mut a = take(&s1, A, ttl).await;
        a.renew().await.expect("renew");
        let last_renewal = Instant::now();
        // "a" freezes. A follower waits for the lock to be free.
        let mut holder = Some(A.to_string());
        while holder.is_some() {
            assert!(last_renewal.elapsed() < ttl * 3, "still held {:?} after the last renewal", last_renewal.elapsed());
            holder = s2.wait_holder(KEY, holder.as_deref(), ttl * 3).await.unwrap();
        }
        let freed = last_renewal.elapsed();
        println!("ttl {ttl:?}: freed {freed:?} after the last renewal");
        assert!(freed >= ttl - Duration::from_millis(50), "freed before the TTL: {freed:?}");
        assert!(freed <= ttl + Duration::from_secs(1), "freed too late: {freed:?}");

        // Free at once for another (no lock delay).
        let mut b = take(&s2, B, ttl).await;
        // The old holder learns it lost the lock, and its release does not hurt the new one.
        match a.renew().await {
            Err(LockLoss::Lost(why)) => println!("old holder: {why}"),
            other => panic!("expected Lost, got {other:?}"),
        }
        a.release().await.expect("release of a lost lock");
        b.renew().await.expect("the new holder keeps its lock");
        assert_eq!(s1.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some(B));
        b.release().await.expect("release");
    }
    assert_nothing_left(&server);

    // A holder dropped without release (a crash) leaves a critical check on
    // the agent; the next lock taken through that agent removes it.
    let ttl = Duration::from_secs(1);
    drop(take(&s1, A, ttl).await);
    let dropped = Instant::now();
    assert_eq!(s2.wait_holder(KEY, Some(A), ttl * 3).await.unwrap(), None);
    println!("dropped holder freed after {:?}", dropped.elapsed());
    assert_eq!(lock_checks(&server).len(), 1, "the dead holder's check");
    let b = take(&s2, B, ttl).await;
    assert!(eventually(Duration::from_secs(2), || lock_checks(&server).len() == 1).await);
    b.release().await.expect("release");
    assert_nothing_left(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_lock_ends_the_holders_session_and_check() {
    let server = ConsulServer::start();
    let (s1, s2) = (connect_for_locks(&server).await, connect_for_locks(&server).await);
    let ttl = Duration::from_secs(2);
    assert!(!s2.break_lock(KEY, A).await.unwrap(), "nothing to break when free");

    let mut a = take(&s1, A, ttl).await;
    assert!(!s2.break_lock(KEY, B).await.unwrap(), "a wrong holder breaks nothing");
    a.renew().await.expect("still held");
    assert_eq!(s2.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some(A));

    let breaking = Instant::now();
    assert!(s2.break_lock(KEY, A).await.unwrap());
    assert_eq!(s2.wait_holder(KEY, None, Duration::ZERO).await.unwrap(), None);
    let b = take(&s2, B, ttl).await;
    println!("break_lock -> new holder: {:?}", breaking.elapsed());
    assert!(matches!(a.renew().await, Err(LockLoss::Lost(_))));
    // The broken holder's check (same agent) went with its session.
    assert_eq!(lock_checks(&server).len(), 1);
    assert_eq!(sessions(&server), 1);
    a.release().await.expect("release of a broken lock");
    b.release().await.expect("release");
    assert_nothing_left(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_and_restart() {
    let mut server = ConsulServer::start();
    let s = connect_for_locks(&server).await;
    let ttl = Duration::from_secs(2);
    let mut a = take(&s, A, ttl).await;
    a.renew().await.expect("renew");

    server.stop();
    let start = Instant::now();
    match a.renew().await {
        Err(LockLoss::Store(e)) if is_unreachable(&e) => println!("renew with the store down: {e}"),
        other => panic!("expected Store(Unreachable), got {other:?}"),
    }
    let took = start.elapsed();
    println!("renew failed after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(matches!(s.try_lock(KEY, B, ttl).await, Err(ref e) if is_unreachable(e)));
    assert!(matches!(s.wait_holder(KEY, Some(A), ttl).await, Err(ref e) if is_unreachable(e)));
    assert!(matches!(s.break_lock(KEY, A).await, Err(ref e) if is_unreachable(e)));

    // Back, but empty: the lock is gone, and can be taken again.
    server.restart();
    assert!(matches!(a.renew().await, Err(LockLoss::Lost(_))));
    a.release().await.expect("release after the store reset");
    let b = take(&s, B, ttl).await;
    b.release().await.expect("release");
    assert_nothing_left(&server);
}

#[tokio::test]
async fn ttl_bounds_and_short_ttls() {
    let server = ConsulServer::start();
    let s = connect_for_locks(&server).await;
    settle_after_start().await;
    assert!(matches!(s.try_lock(KEY, A, Duration::from_millis(50)).await, Err(KvError::InvalidTtl(_))));
    assert!(matches!(s.try_lock("/", A, Duration::from_secs(1)).await, Err(KvError::Protocol { .. })));
    // The shortest TTL works, and expires on time.
    let lock = take(&s, A, Duration::from_millis(100)).await;
    let taken = Instant::now();
    assert_eq!(s.wait_holder(KEY, Some(A), Duration::from_secs(2)).await.unwrap(), None);
    println!("ttl 100ms: freed after {:?}", taken.elapsed());
    assert!(matches!(lock, Lock::Consul(_)));
    let mut lock = lock;
    assert!(matches!(lock.renew().await, Err(LockLoss::Lost(_))));
    lock.release().await.expect("release");
    assert_nothing_left(&server);
}

/// HTTPS with a client certificate (`kv.cacertfile`, `kv.certfile`,
/// `kv.keyfile`) to an agent that requires one: registrations, watches and
/// the leader lock (sessions, agent checks) all work over it, and every
/// mismatch fails fast with a reason that says what to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let ca = TestCa::generate();
    let server = ConsulServer::start_tls(&ca);
    let files = TlsFiles { ca: ca.ca.clone(), cert: ca.client_cert.clone(), key: ca.client_key.clone() };
    let tls = tls_config(&server.addr, Some(files.clone()));
    let store = Store::connect(&tls, ConsulServer::TIMEOUT).await.expect("connect over TLS");
    let first = store.register(&key(A), A.as_bytes(), LONG_TTL).await.expect("register over TLS");
    let known = store.list(DIR).await.expect("list over TLS");
    assert_eq!(keys(&known), [key(A)]);
    // A blocking query over TLS wakes on a new registration.
    let wait = store.wait_dir(DIR, Some(&known), Duration::from_secs(20));
    let register = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.register(&key(B), B.as_bytes(), LONG_TTL).await.expect("register")
    };
    let (got, second) = tokio::join!(wait, register);
    assert_eq!(keys(&got.expect("wait_dir over TLS")), [key(A), key(B)]);
    first.deregister().await.expect("deregister");
    second.deregister().await.expect("deregister");

    // The leader lock: one holder, renewals, release, takeover.
    let other = Store::connect(&tls, ConsulServer::LOCK_TIMEOUT).await.expect("second client over TLS");
    let ttl = Duration::from_secs(2);
    let mut lock = take(&store, "a:1", ttl).await;
    lock.renew().await.expect("renew over TLS");
    assert_eq!(other.wait_holder(KEY, None, Duration::ZERO).await.expect("holder").as_deref(), Some("a:1"));
    assert!(other.try_lock(KEY, "b:1", ttl).await.expect("try_lock").is_none(), "the lock is held");
    lock.release().await.expect("release over TLS");
    let taken = take(&other, "b:1", ttl).await;
    taken.release().await.expect("release");
    assert_nothing_left(&server);

    // Plain HTTP to the HTTPS port.
    let start = Instant::now();
    let err = Store::connect(&tls_config(&server.addr, None), ConsulServer::TIMEOUT).await.unwrap_err();
    eprintln!("consul HTTPS port without TLS: {err} after {:?}", start.elapsed());
    assert!(
        matches!(&err, KvError::Unreachable { reason, .. } if reason.contains("speaks HTTPS") && reason.contains("kv.cacertfile")),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));

    // TLS to an agent that speaks plain HTTP.
    let plain = ConsulServer::start();
    let err = Store::connect(&tls_config(&plain.addr, Some(files.clone())), ConsulServer::TIMEOUT).await.unwrap_err();
    eprintln!("consul TLS to a plain agent: {err}");
    assert!(matches!(&err, KvError::Unreachable { reason, .. } if reason.contains("does not speak TLS")), "{err:?}");

    // A client certificate the agent's CA did not sign.
    let stranger = TestCa::generate();
    let foreign = TlsFiles { cert: stranger.client_cert.clone(), key: stranger.client_key.clone(), ..files.clone() };
    let start = Instant::now();
    let err = Store::connect(&tls_config(&server.addr, Some(foreign)), ConsulServer::TIMEOUT).await.unwrap_err();
    eprintln!("consul TLS with a foreign client cert: {err} after {:?}", start.elapsed());
    assert!(matches!(&err, KvError::Unreachable { reason, .. } if reason.contains("client certificate")), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2));

    // A CA that did not sign the agent's certificate.
    let wrong_ca = TlsFiles { ca: stranger.ca.clone(), ..files.clone() };
    let err = Store::connect(&tls_config(&server.addr, Some(wrong_ca)), ConsulServer::TIMEOUT).await.unwrap_err();
    eprintln!("consul TLS with the wrong CA: {err}");
    assert!(matches!(&err, KvError::Unreachable { reason, .. } if reason.contains("kv.cacertfile")), "{err:?}");

    // Unreadable files are TLS errors naming the option and the file.
    let missing = TlsFiles { key: ca.dir.path().join("nope.pem"), ..files };
    let err = Store::connect(&tls_config(&server.addr, Some(missing)), ConsulServer::TIMEOUT).await.unwrap_err();
    assert!(matches!(&err, KvError::Tls(m) if m.contains("nope.pem") && m.contains("kv.keyfile")), "{err:?}");
}

fn tls_config(addr: &str, tls: Option<TlsFiles>) -> KvConfig {
    KvConfig { tls, ..config::<ConsulServer>(addr) }
}
