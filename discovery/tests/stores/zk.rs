//! The ZooKeeper client against a real ZooKeeper server (Debian's
//! `zookeeper`, tickTime 500 ms: session timeouts 1–10 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_discovery::kv::{Kind, KvError, Lock, LockLoss, Registration};
use swarm_testkit::store::{StoreFixture, ZkServer};

use crate::contract;
use crate::{
    assert_freed_after, connect, connect_for_locks, keys, start_and_connect, wait_for, wait_in_background, Backend,
    ClientProfile, KEY,
};

const TTL: Duration = Duration::from_secs(2);

impl Backend for ZkServer {
    const CLIENT: ClientProfile = ClientProfile {
        lock_ttl: TTL,
        takeover_within: Duration::from_millis(300),
        ..ClientProfile::on_loopback(Kind::Zk, swarm_discovery::kv::zk::MAX_VALUE_SIZE)
    };

    fn granted_ttl(lock: &Lock) -> Option<Duration> {
        Some(session_timeout(lock))
    }

    /// One session per store and one per held lock.
    async fn assert_locks_held(&self, stores: usize, held: &[&Lock], what: &str) {
        expect_sessions(self, stores + held.len(), what).await;
    }
}

crate::contract_tests!(ZkServer:
    connect_to_a_dead_port_fails_fast,
    tls_is_refused_clearly,
    refresh_keeps_a_registration_alive_past_its_ttl,
    one_holder_renewals_release_and_takeover,
    racing_candidates_get_one_lock_and_the_loser_leaves_nothing,
    break_lock_ends_only_the_named_holder,
    missing_keys_read_as_none_and_conflict,
    put_and_get_round_trip_bytes_and_versions_grow,
    put_if_and_delete_if_compare_versions,
    racing_conditional_writers_get_one_win,
    listing_shows_put_keys_with_versions,
    big_values_fit_and_too_large_ones_are_refused_clearly,
    persistent_keys_survive_a_restart,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_store_down_is_reported_quickly_and_survives_a_short_outage() {
    contract::store_down_is_reported_quickly_and_the_lock_survives_a_short_outage::<ZkServer>().await;
}

fn session_timeout(lock: &Lock) -> Duration {
    match lock {
        Lock::Zk(l) => l.session_timeout(),
        _ => unreachable!("a ZooKeeper store gives ZooKeeper locks"),
    }
}

fn registration_session_timeout(reg: &Registration) -> Duration {
    match reg {
        Registration::Zk(r) => r.session_timeout(),
        _ => panic!("not a ZooKeeper registration"),
    }
}

/// Polls the server's session list until it has `n` sessions (closing is
/// asynchronous on the server's side).
async fn expect_sessions(server: &ZkServer, n: usize, what: &str) {
    let start = Instant::now();
    loop {
        let sessions = server.sessions();
        if sessions.len() == n {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{what}: expected {n} sessions, the server has {sessions:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_direct_children_only() {
    let (_server, store) = start_and_connect::<ZkServer>().await;
    // Ephemeral nodes cannot have children; a deeper key needs a persistent parent.
    let _regs = contract::register_three_nodes(&store, Duration::from_secs(10), &["d/nodes/sub/deeper"]).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_dir_wakes_promptly_on_a_new_registration() {
    let (_server, store) = start_and_connect::<ZkServer>().await;
    let store = Arc::new(store);
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
    contract::assert_wait_dir_lasts_max_wait(&store, "w/nodes", &known).await;
    contract::assert_wait_dir_wakes_on_changes::<ZkServer>(&store, known, ttl, Duration::from_millis(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_removes_at_once() {
    let (server, store) = start_and_connect::<ZkServer>().await;
    let (a, _b) = contract::register_a_and_b(&store, Duration::from_secs(10)).await;
    assert_eq!(server.sessions().len(), 3, "the store's and one per registration");
    a.deregister().await.unwrap();
    assert_eq!(keys(&store.list("r/nodes").await.unwrap()), ["r/nodes/b:1"]);
    assert_eq!(server.sessions().len(), 2, "deregister closes the registration's session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_registration_expires_with_its_session() {
    let (server, store) = start_and_connect::<ZkServer>().await;
    let reg = store.register("e/nodes/a:1", b"a", Duration::from_secs(2)).await.unwrap();
    assert_eq!(registration_session_timeout(&reg), Duration::from_secs(2), "the server grants 2 s (within 1-10 s)");
    // Beyond the server's maximum (20 ticks = 10 s) the server lowers it.
    let long = store.register("e/other/b:1", b"b", Duration::from_secs(180)).await.unwrap();
    assert_eq!(registration_session_timeout(&long), Duration::from_secs(10));
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
    let (_server, store) = start_and_connect::<ZkServer>().await;
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
async fn store_down_is_unreachable_and_works_again_after_restart() {
    let bound = ZkServer::TIMEOUT + Duration::from_secs(1);
    let (mut server, store, mut reg) =
        contract::stopped_store_is_unreachable::<ZkServer>(Duration::from_secs(2), bound).await;
    // Once the client knows it is disconnected, it fails at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let err = store.list("s/nodes").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    assert!(err.to_string().contains("refused"), "{err}");

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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timeouts_outside_the_servers_bounds() {
    let server = ZkServer::start();
    let a = connect_for_locks(&server).await;
    // Below the minimum (2 ticks = 1 s): raised, which only delays a takeover.
    let lock = a.try_lock(KEY, "a:1", Duration::from_millis(300)).await.unwrap().expect("lock");
    assert_eq!(session_timeout(&lock), Duration::from_secs(1));
    lock.release().await.unwrap();
    // Above the maximum (20 ticks = 10 s): the lock would outlive its
    // holder's claim by less than the TTL, so it is refused.
    let Err(err) = a.try_lock(KEY, "a:1", Duration::from_secs(30)).await else { panic!("a 30 s lock was taken") };
    eprintln!("zookeeper: a 30 s lock -> {err}");
    assert!(matches!(&err, KvError::InvalidTtl(m) if m.contains("10s")), "{err:?}");
    assert_eq!(a.wait_holder(KEY, None, Duration::ZERO).await.unwrap(), None, "no node left behind");
    expect_sessions(&server, 1, "no session left behind").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_is_freed_after_its_session_timeout() {
    let server = ZkServer::start();
    let a = connect_for_locks(&server).await;
    let b = Arc::new(connect_for_locks(&server).await);
    let crashed = a.try_lock(KEY, "a:1", TTL).await.unwrap().expect("lock");
    let granted = session_timeout(&crashed);
    // A crashed holder: the connection closes, the session is not closed.
    drop(crashed);
    let dropped = Instant::now();
    let waiter = wait_in_background(&b, KEY, "a:1", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "dropping a lock does not release it");
    expect_sessions(&server, 3, "dropping closes no session").await;
    assert!(b.try_lock(KEY, "b:1", TTL).await.unwrap().is_none());
    let after = assert_freed_after(waiter, dropped, granted, Duration::from_millis(500), "dropped").await;
    eprintln!("zookeeper: a dropped lock with a {granted:?} session was freed {after:?} after the drop");
    let lock_b = b.try_lock(KEY, "b:1", TTL).await.unwrap().expect("b takes the freed lock");
    lock_b.release().await.unwrap();
    expect_sessions(&server, 2, "the server expired the crashed holder's session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_session_timeout_loses_the_lock() {
    let mut server = ZkServer::start();
    let a = connect_for_locks(&server).await;
    let b = Arc::new(connect_for_locks(&server).await);
    let mut lock = a.try_lock(KEY, "a:1", TTL).await.unwrap().expect("lock");
    let granted = session_timeout(&lock);
    server.stop();
    let stopped = Instant::now();
    let err = lock.renew().await.unwrap_err();
    eprintln!("zookeeper down: renew -> {err} after {:?}", stopped.elapsed());
    assert!(matches!(err, LockLoss::Store(KvError::Unreachable { .. })), "{err:?}");
    // The client gives the session up 7/5 of its timeout after it last
    // heard from the server; then renew says the lock is lost.
    let lost = loop {
        match lock.renew().await {
            Err(LockLoss::Lost(why)) => break why,
            Err(LockLoss::Store(_)) if stopped.elapsed() < granted * 3 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("expected Lost, got {other:?}"),
        }
    };
    eprintln!("zookeeper down: renew -> Lost after {:?}: {lost}", stopped.elapsed());
    server.restart();
    let restarted = Instant::now();
    // The server restores the session and expires it after its timeout.
    loop {
        // b's store session may need a moment to reconnect.
        match b.wait_holder(KEY, Some("a:1"), Duration::from_secs(10)).await {
            Ok(None) => break,
            Ok(Some(holder)) => panic!("the lock is held by {holder}"),
            Err(e) if restarted.elapsed() < Duration::from_secs(5) => {
                eprintln!("zookeeper back: wait_holder -> {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let freed = restarted.elapsed();
    eprintln!("zookeeper back: the lost lock was freed {freed:?} after the restart");
    assert!(freed <= granted + Duration::from_secs(2));
    assert!(matches!(lock.renew().await, Err(LockLoss::Lost(_))));
    lock.release().await.expect("releasing a lost lock is no error");
    let lock_b = b.try_lock(KEY, "b:1", TTL).await.unwrap().expect("b takes the freed lock");
    lock_b.release().await.unwrap();
}

/// ZooKeeper keeps a key that has keys below it: deleting it is refused
/// clearly and changes nothing; it can hold a value of its own, and goes
/// once it is a leaf. Paths ZooKeeper refuses are invalid keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_keys_below_it_is_not_deleted() {
    let (_server, store) = start_and_connect::<ZkServer>().await;
    store.put("tree/a/b", b"leaf").await.unwrap();
    let parent = store.get("tree/a").await.unwrap().expect("put created the parent");
    assert_eq!(parent.value, b"");
    let refused = [
        ("delete", store.delete("tree/a").await.map(|_| ())),
        ("delete_if", store.delete_if("tree/a", parent.version).await.map(|_| ())),
    ];
    for (what, result) in refused {
        match result {
            Err(KvError::Protocol { reason, .. }) => assert!(reason.contains("keys below it"), "{what}: {reason}"),
            other => panic!("{what}: expected a Protocol error, got {other:?}"),
        }
    }
    assert_eq!(store.get("tree/a").await.unwrap(), Some(parent.clone()), "unchanged");

    let own = store.put_if("tree/a", b"mine", Some(parent.version)).await.unwrap().expect("a parent is a key");
    assert_eq!(store.get("tree/a/b").await.unwrap().map(|v| v.value), Some(b"leaf".to_vec()), "the child stays");
    assert!(store.delete("tree/a/b").await.unwrap());
    assert_eq!(store.delete_if("tree/a", own).await.unwrap(), Ok(()), "a leaf now");
    assert_eq!(store.get("tree/a").await.unwrap(), None);

    for key in ["a//b", "a/./b", "a/../b"] {
        let err = store.put(key, b"x").await.unwrap_err();
        assert!(matches!(&err, KvError::InvalidKey { .. }), "{key}: {err:?}");
        assert!(matches!(store.get(key).await, Err(KvError::InvalidKey { .. })), "{key}");
    }
}

/// A persistent key outlives the session that wrote it, unlike a
/// registration's ephemeral node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_keys_outlive_the_session_that_wrote_them() {
    let (server, writer) = start_and_connect::<ZkServer>().await;
    let version = writer.put("svc/web", b"{}").await.unwrap();
    let reg = writer.register("svc/nodes/a:1", b"a:1", TTL).await.unwrap();
    reg.deregister().await.unwrap();
    drop(writer); // closes the store's session
    expect_sessions(&server, 0, "the writer's sessions are closed").await;
    let reader = connect(&server).await;
    assert_eq!(reader.get("svc/web").await.unwrap().map(|v| (v.value, v.version)), Some((b"{}".to_vec(), version)));
}
