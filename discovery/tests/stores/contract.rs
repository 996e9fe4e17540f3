//! What every store client must do, written once. Each item starts its own
//! server of type `S`; the store modules run the items that apply to them
//! with [`contract_tests!`](crate::contract_tests), and call the helpers
//! below from their own tests. The persistent-key items are in [`data`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_discovery::kv::{KvError, LockLoss, Registration, Store, TlsFiles};

use crate::{config, connect_for_locks, keys, signal, wait_in_background, Backend, KEY};

mod data;
pub use data::*;

/// One `#[tokio::test]` per named contract item, run with the fixture `$server`.
#[macro_export]
macro_rules! contract_tests {
    ($server:ty: $($item:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $item() {
                $crate::contract::$item::<$server>().await;
            }
        )+
    };
}

/// A dead port is reported as Unreachable, naming the store and the
/// endpoint, within [`Backend::FAILS_WITHIN`].
pub async fn connect_to_a_dead_port_fails_fast<S: Backend>() {
    let dead = crate::dead_addr();
    let start = Instant::now();
    let err = Store::connect(&config::<S>(&dead), S::TIMEOUT).await.unwrap_err();
    let took = start.elapsed();
    eprintln!("dead port: {err} after {took:?}");
    assert!(took < S::FAILS_WITHIN, "took {took:?}");
    match err {
        KvError::Unreachable { store, endpoints, reason } => {
            assert_eq!(store, S::NAME);
            assert_eq!(endpoints, dead);
            assert!(reason.to_lowercase().contains("refused"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

/// A store without TLS support refuses TLS settings with a clear error.
pub async fn tls_is_refused_clearly<S: Backend>() {
    let mut config = config::<S>("127.0.0.1:1");
    config.tls = Some(TlsFiles { ca: "/ca.pem".into(), cert: "/cert.pem".into(), key: "/key.pem".into() });
    let err = Store::connect(&config, S::TIMEOUT).await.unwrap_err();
    assert!(matches!(&err, KvError::Tls(m) if m.contains("not supported")), "{err:?}");
}

/// On a fresh store, a missing `d/nodes` lists as empty; then registers
/// `d/nodes/10.0.0.{3,1,2}:2375` with the values `v0`, `v1`, `v2`, and the
/// keys `around` them (value `x`) that a listing of `d/nodes` must handle.
/// The keys stay as long as the returned registrations.
pub async fn register_three_nodes(store: &Store, ttl: Duration, around: &[&str]) -> Vec<Registration> {
    assert!(store.list("d/nodes").await.unwrap().is_empty(), "a missing directory is empty");
    let mut regs = Vec::new();
    for (i, addr) in ["10.0.0.3:2375", "10.0.0.1:2375", "10.0.0.2:2375"].iter().enumerate() {
        regs.push(store.register(&format!("d/nodes/{addr}"), format!("v{i}").as_bytes(), ttl).await.unwrap());
    }
    for key in around {
        regs.push(store.register(key, b"x", ttl).await.unwrap());
    }
    regs
}

/// Registers `r/nodes/a:1` and `r/nodes/b:1` for `ttl`, checks that both are
/// listed and returns their registrations.
pub async fn register_a_and_b(store: &Store, ttl: Duration) -> (Registration, Registration) {
    let a = store.register("r/nodes/a:1", b"a", ttl).await.unwrap();
    let b = store.register("r/nodes/b:1", b"b", ttl).await.unwrap();
    assert_eq!(store.list("r/nodes").await.unwrap().len(), 2);
    (a, b)
}

/// Without changes, `wait_dir` returns the same entries after `max_wait`.
pub async fn assert_wait_dir_lasts_max_wait(store: &Store, dir: &str, known: &[swarm_discovery::kv::KvPair]) {
    let start = Instant::now();
    let same = store.wait_dir(dir, Some(known), Duration::from_millis(600)).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(same, known);
    assert!(waited >= Duration::from_millis(550) && waited < Duration::from_secs(2), "waited {waited:?}");
}

/// A pending `wait_dir` on `w/nodes` wakes within 200 ms of each of five
/// registrations, and within `deregister_within` of a deregistration.
pub async fn assert_wait_dir_wakes_on_changes<S: Backend>(
    store: &Arc<Store>,
    known: Vec<swarm_discovery::kv::KvPair>,
    ttl: Duration,
    deregister_within: Duration,
) {
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
        eprintln!("register took {:?}", written.elapsed());
        let (pairs, woke) = waiter.await.unwrap();
        let pairs = pairs.unwrap();
        assert!(keys(&pairs).contains(&format!("w/nodes/n{i}:1").as_str()), "{pairs:?}");
        latencies.push(woke.saturating_duration_since(written));
        known = pairs;
    }
    eprintln!("{} wait_dir latencies from the start of register(): {latencies:?}", S::NAME);
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
    assert!(start.elapsed() < deregister_within);
    assert!(!keys(&pairs).contains(&"w/nodes/n4:1"));
}

/// Registers `k/nodes/a:1` with a 2 s TTL and refreshes it every 500 ms:
/// it stays listed for 5 s, well past its TTL. Returns the registration.
pub async fn registration_kept_alive_by_refresh(store: &Store) -> Registration {
    let mut reg = store.register("k/nodes/a:1", b"a", Duration::from_secs(2)).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        reg.refresh().await.unwrap();
        assert_eq!(keys(&store.list("k/nodes").await.unwrap()), ["k/nodes/a:1"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    reg
}

/// A registration refreshed every 500 ms stays listed well past its TTL, and
/// deregistering removes it at once.
pub async fn refresh_keeps_a_registration_alive_past_its_ttl<S: Backend>() {
    let (_server, store) = crate::start_and_connect::<S>().await;
    let reg = registration_kept_alive_by_refresh(&store).await;
    reg.deregister().await.unwrap();
    assert!(store.list("k/nodes").await.unwrap().is_empty());
}

/// One holder at a time; renewals keep the lock past its TTL; a waiting
/// follower sees a release at once and takes over.
pub async fn one_holder_renewals_release_and_takeover<S: Backend>() {
    let server = S::start();
    let ttl = S::LOCK_TTL;
    let a = connect_for_locks(&server).await;
    let b = Arc::new(connect_for_locks(&server).await);
    server.assert_locks_held(2, &[], "the stores' own").await;
    let mut lock = a.try_lock(KEY, "a:1", ttl).await.unwrap().expect("a takes the free lock");
    if let Some(granted) = S::granted_ttl(&lock) {
        assert_eq!(granted, ttl, "granted as asked");
    }
    assert!(b.try_lock(KEY, "b:1", ttl).await.unwrap().is_none(), "the lock is exclusive");
    server.assert_locks_held(2, &[&lock], "the loser leaves nothing").await;
    let start = Instant::now();
    assert_eq!(b.wait_holder(KEY, None, Duration::from_secs(5)).await.unwrap().as_deref(), Some("a:1"));
    assert!(start.elapsed() < Duration::from_millis(100), "a different holder is returned at once");
    // A leading slash names the same key.
    assert_eq!(b.wait_holder(&format!("/{KEY}"), None, Duration::ZERO).await.unwrap().as_deref(), Some("a:1"));

    // Renewals keep it well past the TTL.
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < ttl * 3 {
        let renew = Instant::now();
        lock.renew().await.expect("renew");
        slowest = slowest.max(renew.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("{}: slowest renewal {slowest:?}", S::NAME);
    assert_eq!(b.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some("a:1"));
    assert!(b.try_lock(KEY, "b:1", ttl).await.unwrap().is_none());

    // A waiting follower sees the release at once and can take over.
    let waiter = wait_in_background(&b, KEY, "a:1", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "wait_holder waits while the holder is unchanged");
    let released = Instant::now();
    lock.release().await.expect("release");
    let release_took = released.elapsed();
    let (holder, woke) = waiter.await.unwrap();
    assert_eq!(holder.unwrap(), None);
    let wake = woke - released;
    let mut lock_b = b.try_lock(KEY, "b:1", ttl).await.unwrap().expect("b takes the released lock");
    let takeover = released.elapsed();
    eprintln!(
        "{}: release took {release_took:?}; wait_holder woke {wake:?} after release started; b acquired after \
         {takeover:?}",
        S::NAME
    );
    assert!(wake < Duration::from_millis(100), "wait_holder woke after {wake:?}");
    assert!(takeover < S::TAKEOVER_WITHIN, "took over after {takeover:?}");
    assert_eq!(a.wait_holder(KEY, Some("a:1"), Duration::from_secs(1)).await.unwrap().as_deref(), Some("b:1"));
    server.assert_locks_held(2, &[&lock_b], "release ended a's lock").await;
    lock_b.renew().await.expect("the new holder renews");
    lock_b.release().await.expect("release");
    server.assert_locks_held(2, &[], "release ended b's lock").await;
    assert_eq!(a.wait_holder(KEY, None, Duration::ZERO).await.unwrap(), None);
}

/// Two candidates racing for a free lock: exactly one wins, and the loser
/// leaves nothing behind.
pub async fn racing_candidates_get_one_lock_and_the_loser_leaves_nothing<S: Backend>() {
    const RACE: &str = "race/leader";
    let server = S::start();
    let ttl = S::LOCK_TTL;
    let a = connect_for_locks(&server).await;
    let b = connect_for_locks(&server).await;
    for round in 0..5 {
        let (la, lb) = tokio::join!(a.try_lock(RACE, "a:1", ttl), b.try_lock(RACE, "b:1", ttl));
        let (winner, lock) = match (la.unwrap(), lb.unwrap()) {
            (Some(l), None) => ("a:1", l),
            (None, Some(l)) => ("b:1", l),
            _ => panic!("round {round}: exactly one must win"),
        };
        server.assert_locks_held(2, &[&lock], &format!("round {round}: the winner's only")).await;
        assert_eq!(a.wait_holder(RACE, None, Duration::ZERO).await.unwrap().as_deref(), Some(winner));
        lock.release().await.unwrap();
        server.assert_locks_held(2, &[], &format!("round {round}: released")).await;
    }
}

/// `break_lock` ends the lock of the named holder only; the broken holder
/// learns it lost the lock, and its release does not hurt the new one.
pub async fn break_lock_ends_only_the_named_holder<S: Backend>() {
    let server = S::start();
    let a = connect_for_locks(&server).await;
    let b = Arc::new(connect_for_locks(&server).await);
    let ttl = Duration::from_secs(10);
    assert!(!b.break_lock(KEY, "a:1").await.unwrap(), "a free lock is not broken");
    let mut lock = a.try_lock(KEY, "a:1", ttl).await.unwrap().expect("lock");
    assert!(!b.break_lock(KEY, "z:9").await.unwrap(), "a wrong holder breaks nothing");
    lock.renew().await.expect("still ours");
    assert_eq!(b.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some("a:1"));

    let waiter = wait_in_background(&b, KEY, "a:1", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let broken = Instant::now();
    assert!(b.break_lock(KEY, "a:1").await.unwrap(), "the right holder's lock is ended");
    let (holder, woke) = waiter.await.unwrap();
    assert_eq!(holder.unwrap(), None);
    let lock_b = b.try_lock(KEY, "b:1", ttl).await.unwrap().expect("b takes the broken lock at once");
    eprintln!(
        "{}: break_lock -> wait_holder woke after {:?}, b acquired after {:?}",
        S::NAME,
        woke - broken,
        broken.elapsed()
    );
    assert!(woke - broken < Duration::from_millis(100));
    match lock.renew().await {
        Err(LockLoss::Lost(why)) => eprintln!("{}: renewing a broken lock: {why}", S::NAME),
        other => panic!("expected Lost, got {other:?}"),
    }
    lock.release().await.expect("releasing a broken lock is no error");
    assert_eq!(a.wait_holder(KEY, None, Duration::ZERO).await.unwrap().as_deref(), Some("b:1"), "b's lock survives");
    server.assert_locks_held(2, &[&lock_b], "a's lock is ended").await;
    lock_b.release().await.unwrap();
    server.assert_locks_held(2, &[], "b's lock is ended").await;
}

/// A frozen or stopped server is reported quickly by every lock call, and a
/// lock survives an outage shorter than its TTL. Returns the server for
/// store-specific checks.
pub async fn store_down_is_reported_quickly_and_the_lock_survives_a_short_outage<S: Backend>() -> S {
    let mut server = S::start();
    let a = connect_for_locks(&server).await;
    let b = connect_for_locks(&server).await;
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
    eprintln!("{} frozen: renew -> {result:?} after {took:?}", S::NAME);
    assert!(matches!(result, Err(LockLoss::Store(KvError::Unreachable { .. }))), "{result:?}");
    assert!(took < Duration::from_millis(1500), "renew took {took:?}");
    lock.renew().await.expect("renew once the server runs again");

    server.stop();
    for round in 0..2 {
        let start = Instant::now();
        let err = lock.renew().await.unwrap_err();
        let took = start.elapsed();
        eprintln!("{} down: renew #{round} -> {err} after {took:?}", S::NAME);
        assert!(matches!(&err, LockLoss::Store(KvError::Unreachable { store, .. }) if *store == S::NAME), "{err:?}");
        assert!(took < Duration::from_secs(2), "renew took {took:?}");
    }
    let start = Instant::now();
    let Err(err) = b.try_lock(KEY, "b:1", ttl).await else { panic!("try_lock on a stopped store succeeded") };
    eprintln!("{} down: try_lock -> {err} after {:?}", S::NAME, start.elapsed());
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    let start = Instant::now();
    let err = b.wait_holder(KEY, Some("a:1"), ttl).await.unwrap_err();
    eprintln!("{} down: wait_holder -> {err} after {:?}", S::NAME, start.elapsed());
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    let err = b.break_lock(KEY, "a:1").await.unwrap_err();
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");

    server.restart();
    let start = Instant::now();
    loop {
        match lock.renew().await {
            Ok(()) => break,
            Err(LockLoss::Store(e)) if start.elapsed() < Duration::from_secs(8) => {
                eprintln!("{} back: renew -> {e}", S::NAME);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the lock did not survive a short outage: {e:?}"),
        }
    }
    eprintln!("{} back: renewed {:?} after the restart", S::NAME, start.elapsed());
    let b_holder = loop {
        // b's connection may need a moment to come back.
        match b.try_lock(KEY, "b:1", ttl).await {
            Ok(l) => break l,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                eprintln!("{} back: try_lock -> {e}", S::NAME);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(b_holder.is_none(), "the lock is still a's");
    lock.release().await.unwrap();
    assert_eq!(b.wait_holder(KEY, None, Duration::ZERO).await.unwrap(), None);
    server
}

/// A fresh server with one registration (`s/nodes/a:1`, TTL `ttl`), then
/// stopped: `list` fails as Unreachable within `bound`, and so do `refresh`
/// and a `wait_dir`. Returns the stopped server, the client and the
/// registration, to go on with the store's recovery.
pub async fn stopped_store_is_unreachable<S: Backend>(ttl: Duration, bound: Duration) -> (S, Store, Registration) {
    let (mut server, store) = crate::start_and_connect::<S>().await;
    let mut reg = store.register("s/nodes/a:1", b"a", ttl).await.unwrap();
    assert_eq!(store.list("s/nodes").await.unwrap().len(), 1);

    server.stop();
    let start = Instant::now();
    let err = store.list("s/nodes").await.unwrap_err();
    eprintln!("{} down: list -> {err} after {:?}", S::NAME, start.elapsed());
    assert!(matches!(err, KvError::Unreachable { store, .. } if store == S::NAME), "{err:?}");
    assert!(start.elapsed() < bound, "took {:?}", start.elapsed());
    let err = reg.refresh().await.unwrap_err();
    eprintln!("{} down: refresh -> {err}", S::NAME);
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    let err = store.wait_dir("s/nodes", Some(&[]), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, KvError::Unreachable { .. }), "{err:?}");
    (server, store, reg)
}
