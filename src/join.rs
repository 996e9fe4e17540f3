//! `swarm join` and `swarm list`.

use std::time::Duration;

use rand::Rng;
use swarm_discovery::kv::{join_key, Store};
use swarm_discovery::Backend;

use crate::cli::{parse_advertise, JoinArgs, ListArgs};
use crate::observe::Observed;

/// How long connecting to the store may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Registers the engine's address every heartbeat until SIGINT/SIGTERM,
/// then deregisters it at once.
pub async fn join(args: JoinArgs) -> Result<(), String> {
    let url = args.discovery.url("join")?;
    let advertise = args.advertise.as_deref().filter(|a| !a.is_empty()).ok_or("missing mandatory --advertise flag")?;
    let advertise = parse_advertise(advertise)?;
    let delay = args.delay.to_std().ok_or("--delay should not be a negative number")?;
    let heartbeat = args
        .heartbeat
        .to_std()
        .filter(|hb| *hb >= Duration::from_secs(1))
        .ok_or("--heartbeat should be at least one second")?;
    let ttl = args
        .ttl
        .to_std()
        .filter(|ttl| *ttl > heartbeat)
        .ok_or("--ttl must be strictly superior to the heartbeat value")?;
    let backend = args.discovery.backend("join")?;
    let Backend::Kv(config) = backend else {
        return Err(format!(
            "swarm join needs a key-value discovery (consul://, etcd://, zk://); with {url} list the engine's \
             address there instead"
        ));
    };
    if !delay.is_zero() {
        let wait = rand::thread_rng().gen_range(Duration::ZERO..delay);
        tokio::time::sleep(wait).await;
    }
    let store = Store::connect(&config, CONNECT_TIMEOUT).await.map_err(|e| e.to_string())?;
    let key = join_key(&config.nodes_dir(), &advertise);
    Observed::JoinRegistering { addr: &advertise, discovery: url, heartbeat }.emit();
    let mut registration = store.register(&key, advertise.as_bytes(), ttl).await.map_err(|e| e.to_string())?;
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = registration.refresh().await {
                    Observed::JoinRefreshFailed { addr: &advertise, error: &e.to_string() }.emit();
                }
            }
            _ = &mut shutdown => {
                return registration
                    .deregister()
                    .await
                    .map_err(|e| format!("Failed to deregister {advertise}: {e}"));
            }
        }
    }
}

/// Prints the registered addresses, one per line.
pub async fn list(args: ListArgs) -> Result<(), String> {
    let url = args.discovery.url("list")?;
    let timeout = args.timeout.to_std().filter(|t| !t.is_zero()).ok_or("--timeout should be a positive number")?;
    let backend = args.discovery.backend("list")?;
    let entries = tokio::time::timeout(timeout, backend.fetch())
        .await
        .map_err(|_| format!("Timed out after {} waiting for {url}", crate::duration::format(timeout)))?
        .map_err(|e| e.to_string())?;
    for entry in entries {
        println!("{entry}");
    }
    Ok(())
}
