//! The key-value store clients against real servers (etcd, Consul,
//! ZooKeeper from `scripts/install-deps.sh`), one private server per test.
//!
//! [`contract`] holds what every store must do, written once and run
//! against each store; the store modules hold what only that store does.
//! Times are printed with `--nocapture`.

mod consul;
mod contract;
mod etcd;
mod zk;

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_discovery::kv::{Kind, KvConfig, KvError, KvPair, Lock, Store};
use swarm_testkit::store::StoreFixture;

/// The leader key of the lock tests.
const KEY: &str = "swarm/docker/swarm/leader";

/// A store fixture as the tests drive it.
trait Backend: StoreFixture {
    const KIND: Kind;
    /// Connect and call timeout of the registration tests.
    const TIMEOUT: Duration;
    /// Connect and call timeout of the lock tests: what a manager would use
    /// for its election store.
    const LOCK_TIMEOUT: Duration;
    /// The shortest lock TTL the store grants as asked.
    const LOCK_TTL: Duration;
    /// How fast a connect to a dead port fails.
    const FAILS_WITHIN: Duration;
    /// How soon after a release another candidate holds the lock.
    const TAKEOVER_WITHIN: Duration;

    /// The TTL the store granted `lock`, if the client tells it.
    fn granted_ttl(lock: &Lock) -> Option<Duration>;

    /// Asserts that the server holds the resources of exactly the locks in
    /// `held` (leases, sessions, health checks), besides those of the `stores`
    /// connected clients.
    async fn assert_locks_held(&self, stores: usize, held: &[&Lock], what: &str);
}

/// A client config for `addr`.
fn config<S: Backend>(addr: &str) -> KvConfig {
    KvConfig {
        kind: S::KIND,
        endpoints: vec![addr.to_string()],
        prefix: "swarm".into(),
        path: "docker/swarm/nodes".into(),
        tls: None,
    }
}

/// A client of `server` with the registration tests' timeout.
async fn connect<S: Backend>(server: &S) -> Store {
    Store::connect(&config::<S>(server.addr()), S::TIMEOUT).await.expect("connect to the store")
}

/// A client of `server` with the lock tests' timeout.
async fn connect_for_locks<S: Backend>(server: &S) -> Store {
    Store::connect(&config::<S>(server.addr()), S::LOCK_TIMEOUT).await.expect("connect to the store")
}

fn keys(pairs: &[KvPair]) -> Vec<&str> {
    pairs.iter().map(|p| p.key.as_str()).collect()
}

/// A loopback address nobody listens on.
fn dead_addr() -> String {
    format!("127.0.0.1:{}", swarm_testkit::process::free_port())
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

/// Starts `wait_holder(key, Some(known), max_wait)` in a task; it yields the
/// holder it returned and when.
fn wait_in_background(
    store: &Arc<Store>,
    key: &'static str,
    known: &'static str,
    max_wait: Duration,
) -> tokio::task::JoinHandle<(Result<Option<String>, KvError>, Instant)> {
    let store = store.clone();
    tokio::spawn(async move {
        let holder = store.wait_holder(key, Some(known), max_wait).await;
        (holder, Instant::now())
    })
}

/// Sends `signal` (`STOP`, `CONT`) to the server process this test started.
fn signal(pid: u32, signal: &str) {
    assert!(swarm_testkit::process::signal(pid, signal), "kill -{signal} {pid}");
}
