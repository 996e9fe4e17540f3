//! The leader lock of the etcd backend against a real etcd server (Debian's
//! `etcd-server`), one private server per test. Times are printed with
//! `--nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_discovery::kv::{Kind, KvConfig, KvError, Lock, LockLoss, Store};
use swarm_testkit::store::{EtcdServer, StoreFixture};

/// Connect and call timeout: what a manager would use for its election store.
const TIMEOUT: Duration = Duration::from_secs(1);
const KEY: &str = "swarm/docker/swarm/leader";
/// etcd's smallest lease TTL with its default timing.
const TTL: Duration = Duration::from_secs(2);

fn config(addr: &str) -> KvConfig {
    KvConfig {
        kind: Kind::Etcd,
        endpoints: vec![addr.to_string()],
        prefix: "swarm".into(),
        path: "docker/swarm/nodes".into(),
        tls: None,
    }
}

async fn connect(server: &EtcdServer) -> Store {
    Store::connect(&config(&server.addr), TIMEOUT).await.expect("connect to etcd")
}

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

/// Starts `wait_holder(key, Some(known))` in a task; it yields the holder
/// it returned and when.
fn wait_in_background(
    store: &Arc<Store>,
    key: &'static str,
    known: &'static str,
) -> tokio::task::JoinHandle<(Result<Option<String>, KvError>, Instant)> {
    let store = store.clone();
    tokio::spawn(async move {
        let holder = store.wait_holder(key, Some(known), Duration::from_secs(20)).await;
        (holder, Instant::now())
    })
}

/// Sends `signal` (`STOP`, `CONT`) to the server process this test started.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_renewals_release_and_takeover() {
    let server = EtcdServer::start();
    let a = connect(&server).await;
    let b = Arc::new(connect(&server).await);
    let mut lock = a.try_lock(KEY, "a:1", TTL).await.unwrap().expect("a takes the free lock");
    assert!(b.try_lock(KEY, "b:1", TTL).await.unwrap().is_none(), "the lock is exclusive");
    assert_eq!(leases(&server).await, [lease_of(&lock)], "the loser's lease is revoked");
    let start = Instant::now();
    assert_eq!(b.wait_holder(KEY, None, Duration::from_secs(5)).await.unwrap().as_deref(), Some("a:1"));
    assert!(start.elapsed() < Duration::from_millis(100), "a different holder is returned at once");
    // A leading slash names the same key.
    assert_eq!(b.wait_holder(&format!("/{KEY}"), None, Duration::ZERO).await.unwrap().as_deref(), Some("a:1"));

    // Renewals keep it well past the TTL.
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < TTL * 3 {
        let renew = Instant::now();
        lock.renew().await.expect("renew");
        slowest = slowest.max(renew.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("etcd: slowest renewal {slowest:?}");
    assert_eq!(b.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some("a:1"));
    assert!(b.try_lock(KEY, "b:1", TTL).await.unwrap().is_none());

    // A waiting follower sees the release at once and can take over.
    let waiter = wait_in_background(&b, KEY, "a:1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "wait_holder waits while the holder is unchanged");
    let released = Instant::now();
    lock.release().await.expect("release");
    let release_took = released.elapsed();
    let (holder, woke) = waiter.await.unwrap();
    assert_eq!(holder.unwrap(), None);
    let wake = woke - released;
    let mut lock_b = b.try_lock(KEY, "b:1", TTL).await.unwrap().expect("b takes the released lock");
    let takeover = released.elapsed();
    eprintln!("etcd: release took {release_took:?}; wait_holder woke {wake:?} after release started; b acquired after {takeover:?}");
    assert!(wake < Duration::from_millis(100), "wait_holder woke after {wake:?}");
    assert!(takeover < Duration::from_millis(200), "took over after {takeover:?}");
    assert_eq!(a.wait_holder(KEY, Some("a:1"), Duration::from_secs(1)).await.unwrap().as_deref(), Some("b:1"));
    lock_b.renew().await.expect("the new holder renews");
    lock_b.release().await.expect("release");
    assert!(leases(&server).await.is_empty(), "no lease left behind");
    assert_eq!(a.wait_holder(KEY, None, Duration::ZERO).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_candidates_get_one_lock_and_the_loser_leaves_no_lease() {
    const RACE: &str = "race/leader";
    let server = EtcdServer::start();
    let a = connect(&server).await;
    let b = connect(&server).await;
    for round in 0..5 {
        let (la, lb) = tokio::join!(a.try_lock(RACE, "a:1", TTL), b.try_lock(RACE, "b:1", TTL));
        let (la, lb) = (la.unwrap(), lb.unwrap());
        let (winner, lock) = match (la, lb) {
            (Some(l), None) => ("a:1", l),
            (None, Some(l)) => ("b:1", l),
            _ => panic!("round {round}: exactly one must win"),
        };
        assert_eq!(leases(&server).await, [lease_of(&lock)], "round {round}: the loser's lease is revoked");
        assert_eq!(a.wait_holder(RACE, None, Duration::ZERO).await.unwrap().as_deref(), Some(winner));
        lock.release().await.unwrap();
        assert!(leases(&server).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stops_renewing_is_freed_after_the_ttl() {
    const KEY2: &str = "swarm/docker/swarm/leader2";
    let server = EtcdServer::start();
    let a = connect(&server).await;
    let b = Arc::new(connect(&server).await);
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
    let crashed_waiter = wait_in_background(&b, KEY, "a:1");
    // A frozen holder: the lock is kept but not renewed.
    let frozen_waiter = wait_in_background(&b, KEY2, "a:1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!crashed_waiter.is_finished(), "dropping a lock does not release it");
    assert!(b.try_lock(KEY, "b:1", TTL).await.unwrap().is_none());
    for (what, waiter) in [("dropped", crashed_waiter), ("unrenewed", frozen_waiter)] {
        let (holder, freed) = waiter.await.unwrap();
        assert_eq!(holder.unwrap(), None);
        let after = freed - taken;
        eprintln!("etcd: a {what} lock with a {TTL:?} lease was freed {after:?} after it was taken");
        assert!(after >= TTL - Duration::from_millis(200), "{what}: freed too early, after {after:?}");
        assert!(after <= TTL + Duration::from_secs(1), "{what}: freed too late, after {after:?}");
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
async fn break_lock_ends_only_the_named_holder() {
    let server = EtcdServer::start();
    let a = connect(&server).await;
    let b = Arc::new(connect(&server).await);
    let ttl = Duration::from_secs(30);
    assert!(!b.break_lock(KEY, "a:1").await.unwrap(), "a free lock is not broken");
    let mut lock = a.try_lock(KEY, "a:1", ttl).await.unwrap().expect("lock");
    assert!(!b.break_lock(KEY, "z:9").await.unwrap(), "a wrong holder breaks nothing");
    lock.renew().await.expect("still ours");
    assert_eq!(b.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some("a:1"));

    let waiter = wait_in_background(&b, KEY, "a:1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let broken = Instant::now();
    assert!(b.break_lock(KEY, "a:1").await.unwrap(), "the right holder's lock is ended");
    let (holder, woke) = waiter.await.unwrap();
    assert_eq!(holder.unwrap(), None);
    let lock_b = b.try_lock(KEY, "b:1", ttl).await.unwrap().expect("b takes the broken lock at once");
    eprintln!(
        "etcd: break_lock -> wait_holder woke after {:?}, b acquired after {:?}",
        woke - broken,
        broken.elapsed()
    );
    assert!(woke - broken < Duration::from_millis(100));
    match lock.renew().await {
        Err(LockLoss::Lost(why)) => eprintln!("etcd: renewing a broken lock: {why}"),
        other => panic!("expected Lost, got {other:?}"),
    }
    lock.release().await.expect("releasing a broken lock is no error");
    assert_eq!(a.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some("b:1"), "b's lock survives");
    lock_b.release().await.unwrap();
    assert!(leases(&server).await.is_empty(), "no lease left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_is_reported_quickly_and_the_lock_survives_a_short_outage() {
    let mut server = EtcdServer::start();
    let a = connect(&server).await;
    let b = connect(&server).await;
    let ttl = Duration::from_secs(10);
    let mut lock = a.try_lock(KEY, "a:1", ttl).await.unwrap().expect("lock");
    lock.renew().await.unwrap();

    // A frozen server: connections stay open but nothing answers.
    let pid = server.pid().unwrap();
    signal(pid, "STOP");
    let start = Instant::now();
    let result = lock.renew().await;
    let took = start.elapsed();
    signal(pid, "CONT");
    eprintln!("etcd frozen: renew -> {result:?} after {took:?}");
    assert!(matches!(result, Err(LockLoss::Store(KvError::Unreachable { .. }))), "{result:?}");
    assert!(took < Duration::from_millis(1500), "renew took {took:?}");
    lock.renew().await.expect("renew once the server runs again");

    server.stop();
    for round in 0..2 {
        let start = Instant::now();
        let err = lock.renew().await.unwrap_err();
        let took = start.elapsed();
        eprintln!("etcd down: renew #{round} -> {err} after {took:?}");
        assert!(matches!(err, LockLoss::Store(KvError::Unreachable { store: "etcd", .. })), "{err:?}");
        assert!(took < Duration::from_secs(2), "renew took {took:?}");
    }
    let start = Instant::now();
    let Err(err) = b.try_lock(KEY, "b:1", ttl).await else { panic!("try_lock on a stopped store succeeded") };
    eprintln!("etcd down: try_lock -> {err} after {:?}", start.elapsed());
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    let start = Instant::now();
    let err = b.wait_holder(KEY, Some("a:1"), ttl).await.unwrap_err();
    eprintln!("etcd down: wait_holder -> {err} after {:?}", start.elapsed());
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    let err = b.break_lock(KEY, "a:1").await.unwrap_err();
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");

    server.restart();
    let start = Instant::now();
    loop {
        match lock.renew().await {
            Ok(()) => break,
            Err(LockLoss::Store(e)) if start.elapsed() < Duration::from_secs(8) => {
                eprintln!("etcd back: renew -> {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the lock did not survive a short outage: {e:?}"),
        }
    }
    eprintln!("etcd back: renewed {:?} after the restart", start.elapsed());
    assert!(b.try_lock(KEY, "b:1", ttl).await.unwrap().is_none());
    lock.release().await.unwrap();
    assert!(leases(&server).await.is_empty(), "no lease left behind");
}
