//! The cluster: the domain's front door. It holds the engines discovery
//! reports and their state, places and creates containers
//! ([`Cluster::create_container`]), resolves names, and tells rescheduling
//! when engines are lost and come back ([`EngineSignal`]). The HTTP layer
//! (`src/api`) calls into it and never the other way round.

pub mod container;
mod create;
pub mod engine;
pub mod events;
pub mod lost_creates;
pub mod monitor;
pub mod networks;
mod placement;
pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use swarm_discovery::{Backend, Entry};

use crate::state::DesiredState;
use swarm_scheduler::{ContainerSnapshot, ScheduleError};
use thiserror::Error;
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::observe::Observed;
use container::Container;
pub use create::{set_swarm_id, CreateError, CreateRequest};
use engine::{Engine, EngineInfo, UNKNOWN_NAME};
use events::{EventBus, NodeTag};
use monitor::MonitorConfig;
pub use placement::PlacementPolicy;

/// API version reported when no engine is known yet.
pub const DEFAULT_API_VERSION: &str = "1.41";
/// How many engine signals rescheduling may lag behind before it misses some.
const SIGNAL_CAPACITY: usize = 256;

/// A change in an engine's availability that the cluster itself acts on.
/// Internal: clients see the matching `engine_*` events on the event bus.
#[derive(Debug, Clone)]
pub enum EngineSignal {
    /// The engine was flagged Unhealthy.
    Lost(Arc<Engine>),
    /// The engine was validated, or answers again after being Unhealthy.
    Back(Arc<Engine>),
}

/// What an engine's monitor task needs from the cluster.
#[derive(Debug)]
pub struct MonitorContext {
    pub config: MonitorConfig,
    /// Events for `docker events`.
    pub events: EventBus,
    /// Engine availability for the cluster's own reactions.
    pub signals: broadcast::Sender<EngineSignal>,
    /// Networks created on every engine (name → create request body); engines
    /// that join later get them too.
    pub cluster_networks: Mutex<BTreeMap<String, Value>>,
    /// The manager's metrics, counted as the engines' facts are observed.
    pub metrics: Arc<Metrics>,
    /// Full refreshes (every container, image, network and volume of an
    /// engine) running at once, across engines: a manager starting over a
    /// thousand engines loads them a few dozen at a time instead of
    /// opening thousands of connections and holding every answer at once.
    pub full_refreshes: tokio::sync::Semaphore,
}

impl MonitorContext {
    /// Tells the cluster's own tasks; nobody listening is fine.
    pub fn signal(&self, signal: EngineSignal) {
        let _ = self.signals.send(signal);
    }

    /// Creates the cluster-wide networks this engine does not have yet.
    pub async fn create_cluster_networks(&self, engine: &Engine) {
        let wanted: Vec<(String, Value)> =
            self.cluster_networks.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (name, body) in wanted {
            if engine.networks().iter().any(|n| n.name == name) {
                continue;
            }
            let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            let error = match engine.client.call(Method::POST, "/networks/create", Some(body)).await {
                Ok((status, _)) if status.is_success() => {
                    let _ = monitor::refresh_kind(engine, monitor::Kind::Networks).await;
                    continue;
                }
                Ok((_, answer)) => engine::error_message(&answer),
                Err(e) => e.to_string(),
            };
            Observed::NetworkCopyFailed { network: &name, addr: &engine.addr, error: &error }.emit();
        }
    }
}

/// A container name is taken somewhere in the cluster.
#[derive(Debug, Error)]
#[error(
    "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". You have to remove (or rename) that container to be able to reuse that name."
)]
pub struct NameInUse {
    /// The name, without its leading `/`.
    pub name: String,
    /// The ID of the container holding it, or `(being created)`.
    pub holder: String,
}

/// An engine together with the task that monitors it.
struct Member {
    engine: Arc<Engine>,
    task: tokio::task::JoinHandle<()>,
}

/// All engines of the cluster.
pub struct Cluster {
    /// With `--tls`/`--tlsverify`: every engine added is reached over TLS
    /// with these configurations; fixed for the cluster's life.
    engine_tls: Option<Arc<swarm_proxy::TlsConfigs>>,
    pub context: Arc<MonitorContext>,
    /// How containers are placed.
    pub policy: PlacementPolicy,
    /// Engines by address, as discovery lists them.
    members: RwLock<BTreeMap<String, Member>>,
    /// Container names being created right now; a name is in here from the
    /// moment a create is accepted until the engine has answered.
    names_in_flight: Mutex<HashSet<String>>,
    /// Which engine (address) owns each exec instance created through the manager.
    exec_owners: Mutex<HashMap<String, String>>,
    /// Containers being created: (reservation number, engine address,
    /// container). Each counts as existing on its engine until the create
    /// has been answered, so concurrent creates see each other's resources,
    /// ports and names. Locked across a whole scheduling decision.
    pending: Mutex<Vec<(u64, String, ContainerSnapshot)>>,
    /// Source of reservation numbers.
    next_pending: AtomicU64,
    /// What operators asked for that the engines cannot tell (node
    /// availability and labels, services and their tasks); read by
    /// placement and the reconciler, written by the API and the reconciler.
    pub state: DesiredState,
    /// Wakes the services' reconciler when the desired state changed.
    pub reconcile: tokio::sync::Notify,
}

impl Drop for Cluster {
    /// Ends the engines' monitor tasks with the cluster (an in-process
    /// manager that is dropped leaves nothing running).
    fn drop(&mut self) {
        for member in self.members.get_mut().values() {
            member.task.abort();
        }
    }
}

/// Ends a pending reservation when dropped.
pub struct PendingReservation<'a> {
    cluster: &'a Cluster,
    number: u64,
}

impl Drop for PendingReservation<'_> {
    fn drop(&mut self) {
        self.cluster.pending.lock().retain(|(n, _, _)| *n != self.number);
    }
}

/// Releases a reserved container name when dropped.
pub struct NameReservation<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl Drop for NameReservation<'_> {
    fn drop(&mut self) {
        self.cluster.names_in_flight.lock().remove(&self.name);
    }
}

impl Cluster {
    /// A cluster with no engine yet; engines are reached over TLS when `engine_tls` is given.
    pub fn new(
        monitor: MonitorConfig,
        policy: PlacementPolicy,
        engine_tls: Option<Arc<swarm_proxy::TlsConfigs>>,
        state: DesiredState,
        metrics: Arc<Metrics>,
    ) -> Arc<Cluster> {
        Arc::new(Cluster {
            engine_tls,
            state,
            reconcile: tokio::sync::Notify::new(),
            context: Arc::new(MonitorContext {
                config: monitor,
                events: EventBus::default(),
                signals: broadcast::channel(SIGNAL_CAPACITY).0,
                cluster_networks: Mutex::new(BTreeMap::new()),
                metrics,
                full_refreshes: tokio::sync::Semaphore::new(monitor::FULL_REFRESHES_AT_ONCE),
            }),
            policy,
            members: RwLock::new(BTreeMap::new()),
            names_in_flight: Mutex::new(HashSet::new()),
            exec_owners: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            next_pending: AtomicU64::new(0),
        })
    }

    /// Follows discovery for as long as the manager runs.
    pub async fn run_discovery(self: Arc<Self>, backend: Backend, heartbeat: Duration) {
        let mut updates = backend.watch(heartbeat);
        let mut failing = false;
        while let Some(update) = updates.recv().await {
            match update {
                Ok(entries) => {
                    if failing {
                        Observed::DiscoveryRecovered { engines: entries.len() }.emit();
                        failing = false;
                    }
                    self.set_entries(&entries);
                }
                Err(e) => {
                    failing = true;
                    Observed::DiscoveryFailed { error: &e.to_string() }.record(self.metrics());
                }
            }
        }
    }

    /// Adds engines discovery newly lists and drops those it no longer lists.
    pub fn set_entries(&self, entries: &[Entry]) {
        let wanted: HashSet<String> = entries.iter().map(ToString::to_string).collect();
        let mut members = self.members.write();
        let gone: Vec<String> = members.keys().filter(|a| !wanted.contains(*a)).cloned().collect();
        for addr in gone {
            if let Some(member) = members.remove(&addr) {
                member.task.abort();
                member.engine.disconnected();
                if let Some(info) = member.engine.info() {
                    Observed::EngineRemoved { name: &info.name, addr: &addr }.emit();
                    let tag = NodeTag::new(&info, &addr, &member.engine.ip);
                    self.context.events.publish(tag.swarm_event("engine_disconnect"));
                }
            }
        }
        for addr in wanted {
            if members.contains_key(&addr) {
                continue;
            }
            match Engine::new(&addr, self.engine_tls.clone()) {
                Ok(engine) => {
                    let engine = Arc::new(engine);
                    let task = tokio::spawn(monitor::run(engine.clone(), self.context.clone()));
                    members.insert(addr, Member { engine, task });
                }
                Err(e) => Observed::EngineValidationFailed { addr: &addr, error: &e.to_string() }.emit(),
            }
        }
    }

    /// The manager's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.context.metrics
    }

    /// All engines, in no particular order: for lookups that do not show
    /// the order (sorting a thousand engines by name is not free).
    fn engines_unordered(&self) -> Vec<Arc<Engine>> {
        self.members.read().values().map(|m| m.engine.clone()).collect()
    }

    /// All engines, ordered by name then address.
    pub fn engines(&self) -> Vec<Arc<Engine>> {
        // Sorted by name as `Engine::name` gives it, without copying names.
        let mut engines: Vec<(Option<Arc<EngineInfo>>, Arc<Engine>)> =
            self.members.read().values().map(|m| (m.engine.info(), m.engine.clone())).collect();
        fn name(info: &Option<Arc<EngineInfo>>) -> &str {
            info.as_ref().map_or(UNKNOWN_NAME, |i| i.name.as_str())
        }
        engines.sort_by(|a, b| (name(&a.0), &a.1.addr).cmp(&(name(&b.0), &b.1.addr)));
        engines.into_iter().map(|(_, e)| e).collect()
    }

    pub fn healthy_engines(&self) -> Vec<Arc<Engine>> {
        self.engines().into_iter().filter(|e| e.is_healthy()).collect()
    }

    /// The engine with this name, cluster ID, engine ID or address.
    pub fn engine(&self, key: &str) -> Option<Arc<Engine>> {
        self.engines().into_iter().find(|e| {
            e.addr == key
                || e.info().is_some_and(|i| i.name == key || i.id == key || i.id.split('|').next() == Some(key))
        })
    }

    /// Looks for the container with full ID `id` on the healthy engines
    /// themselves, for an ID the caches do not hold yet: a container made a
    /// moment ago through a primary that died before this manager saw its
    /// `create` event (the replica that relayed the create found it on the
    /// engines and gave the client its ID). The container found is cached.
    /// Only full IDs are looked for, so a miss by name, prefix or image (as
    /// `docker inspect` tries) costs no engine call.
    pub async fn find_container_on_engines(&self, id: &str) -> Option<(Arc<Engine>, Arc<Container>)> {
        use futures_util::StreamExt;
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut lookups = futures_util::stream::iter(self.healthy_engines())
            .map(|engine| async move {
                let found = monitor::refresh_container(&engine, id).await.ok().flatten();
                found.map(|container| (engine, container))
            })
            .buffer_unordered(ENGINE_LOOKUPS_AT_ONCE);
        while let Some(result) = lookups.next().await {
            if result.is_some() {
                return result;
            }
        }
        None
    }

    /// Finds a container the way the original does: full ID, swarm ID,
    /// name (`name`, `/name`, `node/name`), then a unique ID prefix.
    pub fn find_container(&self, key: &str) -> Option<(Arc<Engine>, Arc<Container>)> {
        let key = key.trim();
        if key.is_empty() {
            return None;
        }
        let by_id = self.engines_unordered().into_iter().find_map(|e| e.container(key).map(|c| (e, c)));
        if let Some(found) = by_id {
            return Some(found);
        }
        let engines = self.engines();
        // Each pass looks inside every engine's cache without copying it.
        let first = |wanted: &dyn Fn(&Engine, &Container) -> bool| {
            engines.iter().find_map(|e| e.find_container(|c| wanted(e, c)).map(|c| (e.clone(), c)))
        };
        if let Some(found) = first(&|_, c| c.labels.get(SWARM_ID_LABEL).map(String::as_str) == Some(key)) {
            return Some(found);
        }
        let bare = key.strip_prefix('/').unwrap_or(key);
        if let Some(found) = first(&|_, c| c.name == bare) {
            return Some(found);
        }
        if let Some((node, name)) = bare.split_once('/') {
            let on_node: Vec<&Arc<Engine>> = engines.iter().filter(|e| e.name() == node).collect();
            if let Some(found) =
                on_node.iter().find_map(|e| e.find_container(|c| c.name == name).map(|c| ((*e).clone(), c)))
            {
                return Some(found);
            }
        }
        let mut prefixed = engines
            .iter()
            .flat_map(|e| e.containers_where(|c| c.id.starts_with(key)).into_iter().map(move |c| (e.clone(), c)));
        match (prefixed.next(), prefixed.next()) {
            (Some(found), None) => Some(found),
            _ => None,
        }
    }

    /// Reserves `name` for a container being created or renamed, failing
    /// when the name is taken anywhere in the cluster.
    pub fn reserve_name(&self, name: &str) -> Result<NameReservation<'_>, NameInUse> {
        let bare = name.strip_prefix('/').unwrap_or(name).to_string();
        let holder = self.engines_unordered().into_iter().find_map(|e| e.find_container(|c| c.name == bare));
        if let Some(holder) = holder {
            return Err(NameInUse { name: bare, holder: holder.id.clone() });
        }
        if !self.names_in_flight.lock().insert(bare.clone()) {
            return Err(NameInUse { name: bare, holder: "(being created)".into() });
        }
        Ok(NameReservation { cluster: self, name: bare })
    }

    /// Runs a scheduling decision with the pending creates locked, so that
    /// deciding and reserving are one step. `decide` sees the pending
    /// containers by engine address and returns the chosen engine's address
    /// and the container to reserve there.
    fn with_pending<T>(
        &self,
        decide: impl FnOnce(
            &[(u64, String, ContainerSnapshot)],
        ) -> Result<(T, Option<(String, ContainerSnapshot)>), ScheduleError>,
    ) -> Result<(T, Option<PendingReservation<'_>>), ScheduleError> {
        let mut pending = self.pending.lock();
        let (result, reserve) = decide(&pending)?;
        let reservation = reserve.map(|(addr, snapshot)| {
            let number = self.next_pending.fetch_add(1, Ordering::Relaxed);
            pending.push((number, addr, snapshot));
            PendingReservation { cluster: self, number }
        });
        Ok((result, reservation))
    }

    /// Reserves `snapshot` on `addr` outside a decision (a retry on the next node).
    fn reserve_pending(&self, addr: &str, snapshot: ContainerSnapshot) -> PendingReservation<'_> {
        let number = self.next_pending.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().push((number, addr.to_string(), snapshot));
        PendingReservation { cluster: self, number }
    }

    pub fn record_exec(&self, exec_id: &str, engine_addr: &str) {
        self.exec_owners.lock().insert(exec_id.to_string(), engine_addr.to_string());
    }

    pub fn exec_owner(&self, exec_id: &str) -> Option<Arc<Engine>> {
        let addr = self.exec_owners.lock().get(exec_id).cloned()?;
        self.engine(&addr)
    }

    /// The highest API version every healthy engine speaks.
    pub fn api_version(&self) -> String {
        let infos: Vec<Arc<EngineInfo>> =
            self.engines_unordered().iter().filter(|e| e.is_healthy()).filter_map(|e| e.info()).collect();
        infos
            .iter()
            .map(|i| i.api_version.as_str())
            .filter(|v| !v.is_empty())
            .min_by(|a, b| compare_versions(a, b))
            .unwrap_or(DEFAULT_API_VERSION)
            .to_string()
    }
}

/// Engines asked at once when a container is looked for on the engines.
const ENGINE_LOOKUPS_AT_ONCE: usize = 32;

/// The label holding the manager's own ID for each container it created.
pub const SWARM_ID_LABEL: &str = "com.docker.swarm.id";

/// Orders dotted version numbers numerically (`1.9` < `1.41`).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a).cmp(&parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_versions_numerically() {
        assert_eq!(compare_versions("1.9", "1.41"), std::cmp::Ordering::Less);
        assert_eq!(compare_versions("1.41", "1.41"), std::cmp::Ordering::Equal);
    }
}
