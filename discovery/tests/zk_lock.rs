//! The leader lock of the ZooKeeper backend against a real ZooKeeper server
//! (Debian's `zookeeper`, tickTime 500 ms: session timeouts 1–10 s), one
//! private server per test. Times are printed with `--nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_discovery::kv::{Kind, KvConfig, KvError, Lock, LockLoss, Store};
use swarm_testkit::store::{StoreFixture, ZkServer};

/// Connect and call timeout: what a manager would use for its election store.
const TIMEOUT: Duration = Duration::from_secs(1);
const KEY: &str = "swarm/docker/swarm/leader";
const TTL: Duration = Duration::from_secs(2);

fn config(addr: &str) -> KvConfig {
    KvConfig {
        kind: Kind::Zk,
        endpoints: vec![addr.to_string()],
        prefix: "swarm".into(),
        path: "docker/swarm/nodes".into(),
        tls: None,
    }
}

async fn connect(server: &ZkServer) -> Store {
    Store::connect(&config(&server.addr), TIMEOUT).await.expect("connect to zookeeper")
}

fn session_timeout(lock: &Lock) -> Duration {
    match lock {
        Lock::Zk(l) => l.session_timeout(),
        _ => unreachable!("a ZooKeeper store gives ZooKeeper locks"),
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

/// Starts `wait_holder(key, Some(known))` in a task; it yields the holder
/// it returned and when.
fn wait_in_background(
    store: &Arc<Store>,
    key: &'static str,
    known: &'static str,
) -> tokio::task::JoinHandle<(Result<Option<String>, KvError>, Instant)> {
    let store = store.clone();
    tokio::spawn(async move {
        let holder = store.wait_holder(key, Some(known), Duration::from_secs(30)).await;
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
    let server = ZkServer::start();
    let a = connect(&server).await;
    let b = Arc::new(connect(&server).await);
    expect_sessions(&server, 2, "the stores' sessions").await;
    let mut lock = a.try_lock(KEY, "a:1", TTL).await.unwrap().expect("a takes the free lock");
    assert_eq!(session_timeout(&lock), TTL, "granted as asked (within 1-10 s)");
    assert!(b.try_lock(KEY, "b:1", TTL).await.unwrap().is_none(), "the lock is exclusive");
    expect_sessions(&server, 3, "the stores' and the holder's sessions").await;
    let start = Instant::now();
    assert_eq!(b.wait_holder(KEY, None, Duration::from_secs(5)).await.unwrap().as_deref(), Some("a:1"));
    assert!(start.elapsed() < Duration::from_millis(100), "a different holder is returned at once");
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
    eprintln!("zookeeper: slowest renewal {slowest:?}");
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
    let lock_b = b.try_lock(KEY, "b:1", TTL).await.unwrap().expect("b takes the released lock");
    let takeover = released.elapsed();
    eprintln!(
        "zookeeper: release took {release_took:?} (delete + session close); wait_holder woke {wake:?} after \
         release started; b acquired after {takeover:?}"
    );
    assert!(wake < Duration::from_millis(100), "wait_holder woke after {wake:?}");
    assert!(takeover < Duration::from_millis(300), "took over after {takeover:?}");
    assert_eq!(a.wait_holder(KEY, Some("a:1"), Duration::from_secs(1)).await.unwrap().as_deref(), Some("b:1"));
    expect_sessions(&server, 3, "release closed a's lock session").await;
    lock_b.release().await.expect("release");
    expect_sessions(&server, 2, "release closed b's lock session").await;
    assert_eq!(a.wait_holder(KEY, None, Duration::ZERO).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_candidates_get_one_lock_and_the_loser_leaves_no_session() {
    const RACE: &str = "race/leader";
    let server = ZkServer::start();
    let a = connect(&server).await;
    let b = connect(&server).await;
    for round in 0..5 {
        let (la, lb) = tokio::join!(a.try_lock(RACE, "a:1", TTL), b.try_lock(RACE, "b:1", TTL));
        let (la, lb) = (la.unwrap(), lb.unwrap());
        assert!(la.is_some() != lb.is_some(), "round {round}: exactly one wins");
        expect_sessions(&server, 3, "the stores' and the winner's sessions").await;
        let (winner, lock) = match (la, lb) {
            (Some(l), None) => ("a:1", l),
            (None, Some(l)) => ("b:1", l),
            _ => unreachable!(),
        };
        assert_eq!(a.wait_holder(RACE, None, Duration::ZERO).await.unwrap().as_deref(), Some(winner));
        lock.release().await.unwrap();
        expect_sessions(&server, 2, "the stores' sessions").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timeouts_outside_the_servers_bounds() {
    let server = ZkServer::start();
    let a = connect(&server).await;
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
    let a = connect(&server).await;
    let b = Arc::new(connect(&server).await);
    let crashed = a.try_lock(KEY, "a:1", TTL).await.unwrap().expect("lock");
    let granted = session_timeout(&crashed);
    // A crashed holder: the connection closes, the session is not closed.
    drop(crashed);
    let dropped = Instant::now();
    let waiter = wait_in_background(&b, KEY, "a:1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "dropping a lock does not release it");
    expect_sessions(&server, 3, "dropping closes no session").await;
    assert!(b.try_lock(KEY, "b:1", TTL).await.unwrap().is_none());
    let (holder, freed) = waiter.await.unwrap();
    assert_eq!(holder.unwrap(), None);
    let after = freed - dropped;
    eprintln!("zookeeper: a dropped lock with a {granted:?} session was freed {after:?} after the drop");
    assert!(after >= granted - Duration::from_millis(500), "freed too early, after {after:?}");
    assert!(after <= granted + Duration::from_secs(1), "freed too late, after {after:?}");
    let lock_b = b.try_lock(KEY, "b:1", TTL).await.unwrap().expect("b takes the freed lock");
    lock_b.release().await.unwrap();
    expect_sessions(&server, 2, "the server expired the crashed holder's session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_session_timeout_loses_the_lock() {
    let mut server = ZkServer::start();
    let a = connect(&server).await;
    let b = Arc::new(connect(&server).await);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_lock_ends_only_the_named_holder() {
    let server = ZkServer::start();
    let a = connect(&server).await;
    let b = Arc::new(connect(&server).await);
    let ttl = Duration::from_secs(10);
    assert!(!b.break_lock(KEY, "a:1").await.unwrap(), "a free lock is not broken");
    let mut lock = a.try_lock(KEY, "a:1", ttl).await.unwrap().expect("lock");
    assert!(!b.break_lock(KEY, "z:9").await.unwrap(), "a wrong holder breaks nothing");
    lock.renew().await.expect("still ours");

    let waiter = wait_in_background(&b, KEY, "a:1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let broken = Instant::now();
    assert!(b.break_lock(KEY, "a:1").await.unwrap(), "the right holder's lock is ended");
    let (holder, woke) = waiter.await.unwrap();
    assert_eq!(holder.unwrap(), None);
    let lock_b = b.try_lock(KEY, "b:1", ttl).await.unwrap().expect("b takes the broken lock at once");
    eprintln!(
        "zookeeper: break_lock -> wait_holder woke after {:?}, b acquired after {:?}",
        woke - broken,
        broken.elapsed()
    );
    assert!(woke - broken < Duration::from_millis(100));
    match lock.renew().await {
        Err(LockLoss::Lost(why)) => eprintln!("zookeeper: renewing a broken lock: {why}"),
        other => panic!("expected Lost, got {other:?}"),
    }
    lock.release().await.expect("releasing a broken lock is no error");
    assert_eq!(a.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some("b:1"), "b's lock survives");
    expect_sessions(&server, 3, "a's lock session is closed").await;
    lock_b.release().await.unwrap();
    expect_sessions(&server, 2, "b's lock session is closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_is_reported_quickly_and_the_lock_survives_a_short_outage() {
    let mut server = ZkServer::start();
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
    eprintln!("zookeeper frozen: renew -> {result:?} after {took:?}");
    assert!(matches!(result, Err(LockLoss::Store(KvError::Unreachable { .. }))), "{result:?}");
    assert!(took < Duration::from_millis(1500), "renew took {took:?}");
    lock.renew().await.expect("renew once the server runs again");

    server.stop();
    for round in 0..2 {
        let start = Instant::now();
        let err = lock.renew().await.unwrap_err();
        let took = start.elapsed();
        eprintln!("zookeeper down: renew #{round} -> {err} after {took:?}");
        assert!(matches!(err, LockLoss::Store(KvError::Unreachable { store: "zookeeper", .. })), "{err:?}");
        assert!(took < Duration::from_secs(2), "renew took {took:?}");
    }
    let start = Instant::now();
    let Err(err) = b.try_lock(KEY, "b:1", ttl).await else { panic!("try_lock on a stopped store succeeded") };
    eprintln!("zookeeper down: try_lock -> {err} after {:?}", start.elapsed());
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    let err = b.wait_holder(KEY, Some("a:1"), ttl).await.unwrap_err();
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    let err = b.break_lock(KEY, "a:1").await.unwrap_err();
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");

    server.restart();
    let start = Instant::now();
    loop {
        match lock.renew().await {
            Ok(()) => break,
            Err(LockLoss::Store(e)) if start.elapsed() < Duration::from_secs(8) => {
                eprintln!("zookeeper back: renew -> {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the lock did not survive a short outage: {e:?}"),
        }
    }
    eprintln!("zookeeper back: renewed {:?} after the restart", start.elapsed());
    let b_holder = loop {
        // b's store session may need a moment to reconnect.
        match b.try_lock(KEY, "b:1", ttl).await {
            Ok(l) => break l,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                eprintln!("zookeeper back: try_lock -> {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(b_holder.is_none(), "the lock is still a's");
    lock.release().await.unwrap();
    assert_eq!(b.wait_holder(KEY, None, Duration::ZERO).await.unwrap(), None);
}
