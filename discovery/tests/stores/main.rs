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

/// The constants of a [`Backend`], in one value per store.
struct ClientProfile {
    /// See [`Backend::KIND`].
    kind: Kind,
    /// See [`Backend::TIMEOUT`].
    timeout: Duration,
    /// See [`Backend::LOCK_TIMEOUT`].
    lock_timeout: Duration,
    /// See [`Backend::LOCK_TTL`].
    lock_ttl: Duration,
    /// See [`Backend::FAILS_WITHIN`].
    fails_within: Duration,
    /// See [`Backend::TAKEOVER_WITHIN`].
    takeover_within: Duration,
    /// See [`Backend::MAX_VALUE`].
    max_value: usize,
}

impl ClientProfile {
    /// The values etcd and ZooKeeper meet on loopback, with the store's
    /// `max_value`; a store overrides what differs.
    const fn on_loopback(kind: Kind, max_value: usize) -> ClientProfile {
        ClientProfile {
            kind,
            timeout: Duration::from_secs(2),
            lock_timeout: Duration::from_secs(1),
            lock_ttl: Duration::from_secs(2),
            fails_within: Duration::from_secs(3),
            takeover_within: Duration::from_millis(200),
            max_value,
        }
    }
}

/// A store fixture as the tests drive it.
trait Backend: StoreFixture {
    const KIND: Kind = Self::CLIENT.kind;
    /// Connect and call timeout of the registration tests.
    const TIMEOUT: Duration = Self::CLIENT.timeout;
    /// Connect and call timeout of the lock tests: what a manager would use
    /// for its election store.
    const LOCK_TIMEOUT: Duration = Self::CLIENT.lock_timeout;
    /// The shortest lock TTL the store grants as asked.
    const LOCK_TTL: Duration = Self::CLIENT.lock_ttl;
    /// How fast a connect to a dead port fails.
    const FAILS_WITHIN: Duration = Self::CLIENT.fails_within;
    /// How soon after a release another candidate holds the lock.
    const TAKEOVER_WITHIN: Duration = Self::CLIENT.takeover_within;
    /// A value size the store takes with its default settings, close to
    /// its bound (see the `kv` module docs).
    const MAX_VALUE: usize = Self::CLIENT.max_value;
    /// What the constants above are for this store.
    const CLIENT: ClientProfile;

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

/// A fresh server and a client of it with the registration tests' timeout.
async fn start_and_connect<S: Backend>() -> (S, Store) {
    let server = S::start();
    let store = connect(&server).await;
    (server, store)
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

/// Awaits a [`wait_in_background`] waiter on a lock that its holder stopped
/// renewing: it reports the lock free `expected` after `since`, at most
/// `early` sooner and 1 s later. Returns when that was, after `since`.
async fn assert_freed_after(
    waiter: tokio::task::JoinHandle<(Result<Option<String>, KvError>, Instant)>,
    since: Instant,
    expected: Duration,
    early: Duration,
    what: &str,
) -> Duration {
    let (holder, freed) = waiter.await.unwrap();
    assert_eq!(holder.unwrap(), None, "{what}");
    let after = freed - since;
    assert!(after >= expected - early, "{what}: freed too early, after {after:?}");
    assert!(after <= expected + Duration::from_secs(1), "{what}: freed too late, after {after:?}");
    after
}

/// Sends `signal` (`STOP`, `CONT`) to the server process this test started.
fn signal(pid: u32, signal: &str) {
    assert!(swarm_testkit::process::signal(pid, signal), "kill -{signal} {pid}");
    if signal == "STOP" {
        wait_stopped(pid);
    }
}

/// Waits (up to 2 s) until every thread of `pid` is stopped: `kill -STOP`
/// returns before threads running on another core have stopped, and one of
/// them could still answer a request meant to find the server frozen.
fn wait_stopped(pid: u32) {
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
        tasks.flatten().all(|task| {
            // The state follows the command name, which is in parentheses.
            std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
                .unwrap_or(true) // a thread that just exited stops nothing
        })
    };
    let start = Instant::now();
    while !stopped() {
        assert!(start.elapsed() < Duration::from_secs(2), "process {pid} did not stop after SIGSTOP");
        std::thread::sleep(Duration::from_millis(5));
    }
}
