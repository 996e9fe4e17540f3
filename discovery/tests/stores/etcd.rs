//! The etcd client against a real etcd server (Debian's `etcd-server`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_discovery::kv::{Kind, KvError, KvPair, Lock, LockLoss, Store, TlsFiles};
use swarm_testkit::store::{EtcdServer, StoreFixture, TestCa};

use crate::contract;
use crate::{
    assert_freed_after, config, connect_for_locks, keys, start_and_connect, wait_for, wait_in_background, Backend,
    ClientProfile, KEY,
};

/// etcd's smallest lease TTL with its default timing.
const TTL: Duration = Duration::from_secs(2);

impl Backend for EtcdServer {
    /// 1.4 MiB: a write must fit in `--max-request-bytes`, 1.5 MiB by default.
    const CLIENT: ClientProfile =
        ClientProfile { lock_ttl: TTL, ..ClientProfile::on_loopback(Kind::Etcd, 1_400 * 1024) };

    fn granted_ttl(lock: &Lock) -> Option<Duration> {
        match lock {
            Lock::Etcd(l) => Some(l.ttl()),
            _ => unreachable!("an etcd store gives etcd locks"),
        }
    }

    /// The server's leases are exactly those of `held` (stores hold none).
    async fn assert_locks_held(&self, _stores: usize, held: &[&Lock], what: &str) {
        let held: Vec<i64> = held.iter().map(|lock| lease_of(lock)).collect();
        assert_eq!(leases(self).await, held, "{what}");
    }
}

crate::contract_tests!(EtcdServer:
    connect_to_a_dead_port_fails_fast,
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

/// IDs of the leases the server knows.
async fn leases(server: &EtcdServer) -> Vec<i64> {
    let mut client =
        etcd_client::Client::connect([format!("http://{}", server.addr)], None).await.expect("raw etcd client");
    client.leases().await.expect("list leases").leases().iter().map(|l| l.id()).collect()
}

fn lease_of(lock: &Lock) -> i64 {
    match lock {
        Lock::Etcd(l) => l.lease(),
        _ => unreachable!("an etcd store gives etcd locks"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_store_down_is_reported_quickly_and_survives_a_short_outage() {
    let server = contract::store_down_is_reported_quickly_and_the_lock_survives_a_short_outage::<EtcdServer>().await;
    assert!(leases(&server).await.is_empty(), "no lease left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_direct_children_only() {
    let (_server, store) = start_and_connect::<EtcdServer>().await;
    let around = ["d/nodes/10.0.0.1:2375/deeper", "d/nodesx/other"];
    let _regs = contract::register_three_nodes(&store, Duration::from_secs(30), &around).await;
    let pairs = store.list("d/nodes").await.unwrap();
    assert_eq!(keys(&pairs), ["d/nodes/10.0.0.1:2375", "d/nodes/10.0.0.2:2375", "d/nodes/10.0.0.3:2375"]);
    assert_eq!(pairs[0].value, b"v1");
    // Stray slashes in the directory name are tolerated.
    assert_eq!(store.list("/d/nodes/").await.unwrap(), pairs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_dir_wakes_promptly_on_a_new_registration() {
    let (_server, store) = start_and_connect::<EtcdServer>().await;
    let store = Arc::new(store);
    let ttl = Duration::from_secs(30);
    let _first = store.register("w/nodes/a:1", b"a", ttl).await.unwrap();
    let known = store.wait_dir("w/nodes", None, Duration::from_secs(10)).await.unwrap();
    assert_eq!(keys(&known), ["w/nodes/a:1"], "without `known` it returns at once");
    contract::assert_wait_dir_lasts_max_wait(&store, "w/nodes", &known).await;

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

    contract::assert_wait_dir_wakes_on_changes::<EtcdServer>(&store, known, ttl, Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_removes_at_once() {
    let (_server, store) = start_and_connect::<EtcdServer>().await;
    let (a, _b) = contract::register_a_and_b(&store, Duration::from_secs(60)).await;
    a.deregister().await.unwrap();
    assert_eq!(keys(&store.list("r/nodes").await.unwrap()), ["r/nodes/b:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_without_refresh_expires_after_its_ttl() {
    let (_server, store) = start_and_connect::<EtcdServer>().await;
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
    let (_server, store) = start_and_connect::<EtcdServer>().await;
    let mut reg = contract::registration_kept_alive_by_refresh(&store).await;
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
    let bound = EtcdServer::TIMEOUT + Duration::from_secs(2);
    let (mut server, store, mut reg) =
        contract::stopped_store_is_unreachable::<EtcdServer>(Duration::from_secs(30), bound).await;

    server.restart();
    // The client reconnects by itself; allow it a moment.
    wait_for(&store, "s/nodes", Duration::from_secs(15), "etcd answers again", |p| p.len() == 1).await;
    reg.refresh().await.unwrap();
    let _b = store.register("s/nodes/b:1", b"b", Duration::from_secs(30)).await.unwrap();
    assert_eq!(keys(&store.list("s/nodes").await.unwrap()), ["s/nodes/a:1", "s/nodes/b:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stops_renewing_is_freed_after_the_ttl() {
    const KEY2: &str = "swarm/docker/swarm/leader2";
    let server = EtcdServer::start();
    let a = connect_for_locks(&server).await;
    let b = Arc::new(connect_for_locks(&server).await);
    // Below etcd's minimum: raised to 2 s.
    let crashed = a.try_lock(KEY, "a:1", Duration::from_millis(500)).await.unwrap().expect("lock");
    match &crashed {
        Lock::Etcd(l) => assert_eq!(l.ttl(), TTL),
        _ => unreachable!(),
    }
    let mut frozen = a.try_lock(KEY2, "a:1", TTL).await.unwrap().expect("lock");
    let taken = Instant::now();
    // A crashed holder: the lock is dropped, which must not release it.
    drop(crashed);
    let crashed_waiter = wait_in_background(&b, KEY, "a:1", Duration::from_secs(20));
    // A frozen holder: the lock is kept but not renewed.
    let frozen_waiter = wait_in_background(&b, KEY2, "a:1", Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!crashed_waiter.is_finished(), "dropping a lock does not release it");
    assert!(b.try_lock(KEY, "b:1", TTL).await.unwrap().is_none());
    for (what, waiter) in [("dropped", crashed_waiter), ("unrenewed", frozen_waiter)] {
        let after = assert_freed_after(waiter, taken, TTL, Duration::from_millis(200), what).await;
        eprintln!("etcd: a {what} lock with a {TTL:?} lease was freed {after:?} after it was taken");
    }
    match frozen.renew().await {
        Err(LockLoss::Lost(why)) => eprintln!("etcd: renewing an expired lock: {why}"),
        other => panic!("expected Lost, got {other:?}"),
    }
    frozen.release().await.expect("releasing a lost lock is no error");
    let lock_b = b.try_lock(KEY, "b:1", TTL).await.unwrap().expect("b takes the freed lock");
    lock_b.release().await.unwrap();
    assert!(leases(&server).await.is_empty(), "no lease left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let ca = TestCa::generate();
    let server = EtcdServer::start_tls(&ca);
    let files = TlsFiles { ca: ca.ca.clone(), cert: ca.client_cert.clone(), key: ca.client_key.clone() };
    let store =
        Store::connect(&tls_config(&server.addr, Some(files)), EtcdServer::TIMEOUT).await.expect("connect over TLS");
    let reg = store.register("t/nodes/a:1", b"a", Duration::from_secs(30)).await.unwrap();
    assert_eq!(keys(&store.list("t/nodes").await.unwrap()), ["t/nodes/a:1"]);
    reg.deregister().await.unwrap();

    // Plain HTTP/2 to the TLS port.
    let start = Instant::now();
    let err = Store::connect(&tls_config(&server.addr, None), EtcdServer::TIMEOUT).await.unwrap_err();
    eprintln!("etcd TLS port without TLS: {err} after {:?}", start.elapsed());
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(4));

    // A client certificate the server's CA did not sign.
    let stranger = TestCa::generate();
    let files = TlsFiles { ca: ca.ca.clone(), cert: stranger.client_cert.clone(), key: stranger.client_key.clone() };
    let start = Instant::now();
    let err = Store::connect(&tls_config(&server.addr, Some(files)), EtcdServer::TIMEOUT).await.unwrap_err();
    eprintln!("etcd TLS with a foreign client cert: {err} after {:?}", start.elapsed());
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(4));

    // A CA that did not sign the server's certificate.
    let files = TlsFiles { ca: stranger.ca.clone(), cert: ca.client_cert.clone(), key: ca.client_key.clone() };
    let err = Store::connect(&tls_config(&server.addr, Some(files)), EtcdServer::TIMEOUT).await.unwrap_err();
    eprintln!("etcd TLS with the wrong CA: {err}");
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");

    // Unreadable files are reported as TLS errors naming the file.
    let files =
        TlsFiles { ca: ca.dir.path().join("nope.pem"), cert: ca.client_cert.clone(), key: ca.client_key.clone() };
    let err = Store::connect(&tls_config(&server.addr, Some(files)), EtcdServer::TIMEOUT).await.unwrap_err();
    assert!(matches!(&err, KvError::Tls(m) if m.contains("nope.pem")), "{err:?}");
}

fn tls_config(addr: &str, tls: Option<TlsFiles>) -> swarm_discovery::kv::KvConfig {
    swarm_discovery::kv::KvConfig { tls, ..config::<EtcdServer>(addr) }
}
