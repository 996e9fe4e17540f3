//! The Consul leader lock against a real agent (`consul agent -dev`, see
//! tests/support/consul.rs): exclusion, renewal, release, expiry of a holder
//! that stops renewing, breaking a dead holder's lock, store outages, and no
//! sessions or checks left behind.

use std::time::{Duration, Instant};

use swarm_discovery::kv::{Kind, KvConfig, KvError, Lock, LockLoss, Store};
use swarm_testkit::store::{ConsulServer, StoreFixture};

const KEY: &str = "swarm/docker/swarm/leader";
const A: &str = "10.0.0.1:3375";
const B: &str = "10.0.0.2:3375";

async fn store(server: &ConsulServer) -> Store {
    let config = KvConfig {
        kind: Kind::Consul,
        endpoints: vec![server.addr.clone()],
        prefix: "swarm".into(),
        path: "docker/swarm/nodes".into(),
        tls: None,
    };
    Store::connect(&config, Duration::from_secs(5)).await.expect("connect to consul")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_renewal_release_and_immediate_takeover() {
    let server = ConsulServer::start();
    let (s1, s2) = (store(&server).await, store(&server).await);
    let ttl = Duration::from_secs(2);

    // Free: wait_holder(None) blocks until someone takes the lock.
    assert_eq!(s2.wait_holder(KEY, None, Duration::ZERO).await.unwrap(), None);
    let waiter = {
        let s = store(&server).await;
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
        let s = store(&server).await;
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
    assert_eq!(lock_checks(&server), Vec::<String>::new());
    assert_eq!(sessions(&server), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stops_renewing_is_freed_after_the_ttl() {
    let server = ConsulServer::start();
    let (s1, s2) = (store(&server).await, store(&server).await);
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
    assert_eq!(lock_checks(&server), Vec::<String>::new());
    assert_eq!(sessions(&server), 0);

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
    assert_eq!(lock_checks(&server), Vec::<String>::new());
    assert_eq!(sessions(&server), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_lock_ends_only_the_named_holder() {
    let server = ConsulServer::start();
    let (s1, s2) = (store(&server).await, store(&server).await);
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
    assert_eq!(lock_checks(&server), Vec::<String>::new());
    assert_eq!(sessions(&server), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_and_restart() {
    let mut server = ConsulServer::start();
    let s = store(&server).await;
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
    assert_eq!(lock_checks(&server), Vec::<String>::new());
    assert_eq!(sessions(&server), 0);
}

#[tokio::test]
async fn ttl_bounds_and_short_ttls() {
    let server = ConsulServer::start();
    let s = store(&server).await;
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
    assert_eq!(lock_checks(&server), Vec::<String>::new());
    assert_eq!(sessions(&server), 0);
}
