//! Manager replication: the primary election runs on the discovery store.
//! This module adapts the store's lock operations to the election.

use std::sync::Arc;
use std::time::Duration;

use swarm_discovery::kv::{join_key, KvConfig, Lock, LockLoss, Store};
use swarm_leadership::{Election, ElectionConfig, HolderWait, Leadership, LockError, LockStore, Role, StoreLock};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::observe::Observed;

/// Where the lock lives below the discovery prefix.
const LEADER_PATH: &str = "docker/swarm/leader";
/// Timeout of every call the election makes to the store: a quarter of
/// the TTL, so one hung renewal leaves room for another before the
/// step-down deadline (within 500 ms to 3 s).
fn call_timeout(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(3))
}

/// The discovery store, connected on first use and kept afterwards (the
/// backends reconnect by themselves).
pub struct KvLocks {
    config: KvConfig,
    /// Bounds each store call (see [`call_timeout`]).
    timeout: Duration,
    store: tokio::sync::Mutex<Option<Arc<Store>>>,
}

impl KvLocks {
    async fn store(&self) -> Result<Arc<Store>, LockError> {
        let mut slot = self.store.lock().await;
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        let store = Arc::new(Store::connect(&self.config, self.timeout).await.map_err(store_error)?);
        *slot = Some(store.clone());
        Ok(store)
    }
}

fn store_error(e: swarm_discovery::kv::KvError) -> LockError {
    LockError::Store(e.to_string())
}

/// A lock held through [`KvLocks`].
pub struct KvLock(Lock);

impl StoreLock for KvLock {
    async fn renew(&mut self) -> Result<(), LockError> {
        self.0.renew().await.map_err(|e| match e {
            LockLoss::Lost(why) => LockError::Lost(why),
            LockLoss::Store(e) => store_error(e),
        })
    }

    async fn release(self) -> Result<(), LockError> {
        self.0.release().await.map_err(store_error)
    }
}

impl LockStore for KvLocks {
    type Lock = KvLock;

    async fn try_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<KvLock>, LockError> {
        let store = self.store().await?;
        Ok(store.try_lock(key, value, ttl).await.map_err(store_error)?.map(KvLock))
    }

    async fn wait_holder(&self, wait: HolderWait<'_>) -> Result<Option<String>, LockError> {
        let store = self.store().await?;
        store.wait_holder(wait.key, wait.known, wait.max_wait).await.map_err(store_error)
    }

    async fn break_lock(&self, key: &str, holder: &str) -> Result<bool, LockError> {
        let store = self.store().await?;
        store.break_lock(key, holder).await.map_err(store_error)
    }
}

/// How often a replica checks that the primary's process is still there.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// While this manager is a replica, connects to the primary's address every
/// [`PROBE_EVERY`]: a refusal means its process is gone, and is reported to
/// the election so that failover does not wait for client traffic (nor for
/// the TTL). A timeout proves nothing (the host may be cut off) and is ignored.
async fn probe_primary(leadership: Arc<Leadership>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let Role::Replica { primary: Some(primary) } = leadership.role() else { continue };
        let connect = tokio::net::TcpStream::connect(primary.as_str());
        if let Ok(Err(e)) = tokio::time::timeout(PROBE_EVERY, connect).await {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                leadership.report_refused(&primary);
            }
        }
    }
}

/// Starts competing for the primary role; the election's events are
/// counted in `metrics`. The returned task ends after `shutdown` turns true,
/// having released the lock if it held it.
pub fn start(
    config: &KvConfig,
    advertise: &str,
    ttl: Duration,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> (Arc<Leadership>, tokio::task::JoinHandle<()>) {
    let locks =
        Arc::new(KvLocks { config: config.clone(), timeout: call_timeout(ttl), store: tokio::sync::Mutex::new(None) });
    let election_config =
        ElectionConfig { key: join_key(&config.prefix, LEADER_PATH), advertise: advertise.to_string(), ttl };
    let (election, leadership) =
        Election::new(locks, election_config, move |event| Observed::Election(&event).record(&metrics));
    tokio::spawn(probe_primary(leadership.clone(), shutdown.clone()));
    let task = tokio::spawn(election.run(shutdown));
    (leadership, task)
}
