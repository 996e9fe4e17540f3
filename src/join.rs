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
    let advertise = parse_advertise(args.advertise.as_deref().ok_or("missing mandatory --advertise flag")?)?;
    if args.heartbeat < Duration::from_secs(1) {
        return Err("--heartbeat should be at least one second".into());
    }
    if args.ttl <= args.heartbeat {
        return Err("--ttl must be strictly superior to the heartbeat value".into());
    }
    let backend = args.discovery.backend("join")?;
    let Backend::Kv(config) = backend else {
        return Err(format!(
            "swarm join needs a key-value discovery (consul://, etcd://, zk://); with {url} list the engine's \
             address there instead"
        ));
    };
    if !args.delay.is_zero() {
        let wait = rand::thread_rng().gen_range(Duration::ZERO..args.delay);
        tokio::time::sleep(wait).await;
    }
    let store = Store::connect(&config, CONNECT_TIMEOUT).await.map_err(|e| e.to_string())?;
    let key = join_key(&config.nodes_dir(), &advertise);
    Observed::JoinRegistering { addr: &advertise, discovery: url, heartbeat: args.heartbeat }.emit();
    let mut registration = store.register(&key, advertise.as_bytes(), args.ttl).await.map_err(|e| e.to_string())?;
    let mut ticker = tokio::time::interval(args.heartbeat);
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
    let backend = args.discovery.backend("list")?;
    let entries = tokio::time::timeout(args.timeout, backend.fetch())
        .await
        .map_err(|_| format!("Timed out after {} waiting for {url}", crate::duration::format(args.timeout)))?
        .map_err(|e| e.to_string())?;
    for entry in entries {
        println!("{entry}");
    }
    Ok(())
}
