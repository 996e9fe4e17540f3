//! One Docker engine: its identity, health and cached state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use swarm_proxy::{ProxyError, Upstream};
use swarm_scheduler::{ImageSnapshot, NodeSnapshot};
use thiserror::Error;
use tokio::sync::Notify;

use super::container::Container;
use crate::observe::Observed;

/// Where an engine stands, as `docker info` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Discovered but not (yet) validated as a Docker engine.
    Pending,
    /// Validated and answering; eligible for scheduling.
    Healthy,
    /// Failed `--engine-failure-retry` refreshes in a row; its containers show `Host Down`.
    Unhealthy,
    /// No longer listed by discovery; about to be dropped.
    Disconnected,
}

impl Health {
    /// Every state, for readings that list each one.
    pub const ALL: [Health; 4] = [Health::Pending, Health::Healthy, Health::Unhealthy, Health::Disconnected];

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Pending => "Pending",
            Health::Healthy => "Healthy",
            Health::Unhealthy => "Unhealthy",
            Health::Disconnected => "Disconnected",
        }
    }
}

/// Why talking to an engine failed.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("{addr} answered {status} to {path}: {message}")]
    Status { addr: String, path: String, status: StatusCode, message: String },
    #[error("{addr} sent an invalid answer to {path}: {reason}")]
    Decode { addr: String, path: String, reason: String },
    #[error("cannot get resources for this engine, make sure {0} is a Docker Engine, not a Swarm manager")]
    NotAnEngine(String),
}

/// How long the manager's own reads of an engine (validation, refreshes,
/// inspects) may take: a dockerd that hangs (frozen, or its host silently
/// dropping packets) counts a failed refresh after this long, so it is
/// flagged Unhealthy after `--engine-failure-retry` of them.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An engine could not be reached; names the node.
#[derive(Debug, Error)]
#[error("{node} ({addr}): {source}")]
pub struct Unreachable {
    pub node: String,
    pub addr: String,
    #[source]
    pub source: ProxyError,
}

impl Unreachable {
    pub fn new(engine: &Engine, source: ProxyError) -> Unreachable {
        Unreachable { node: engine.name(), addr: engine.addr.clone(), source }
    }
}

/// What validation learned about an engine; fixed until the next refresh of `/info`.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// Cluster-wide engine ID: the engine's own ID, `|`, its address (so cloned
    /// engines with the same key still differ).
    pub id: String,
    /// The engine's hostname.
    pub name: String,
    /// Engine labels plus `kernelversion`, `operatingsystem`, `ostype`, `storagedriver`.
    pub labels: BTreeMap<String, String>,
    /// Number of CPUs; always > 0.
    pub cpus: i64,
    /// Memory in bytes; always > 0.
    pub memory: i64,
    pub server_version: String,
    /// Highest API version the engine speaks (e.g. `1.41`).
    pub api_version: String,
    /// Lowest API version the engine accepts.
    pub min_api_version: String,
    /// [`node_id`] of `id`, computed once: placements and `docker info`
    /// read it for every engine.
    node_id: String,
    /// The `Node` object the original adds to inspect answers (`ID`, `IP`,
    /// `Addr`, `Name`, `Cpus`, `Memory`, `Labels`), serialized once: every
    /// relayed inspect carries it.
    inspect_node: Bytes,
}

/// The host part of `host:port` (without an IPv6 address's brackets).
fn host_of(addr: &str) -> String {
    addr.rsplit_once(':').map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or(addr).to_string()
}

/// Swarm mode's IDs are 25 lowercase base-36 characters.
const NODE_ID_LEN: usize = 25;

/// The node ID of the engine with cluster-wide ID `engine_id`: the same on
/// every manager and across restarts and upgrades (FNV-1a, 128 bits, in
/// base 36), shaped like swarm mode's IDs.
fn node_id(engine_id: &str) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let mut hash = engine_id.bytes().fold(OFFSET, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    let mut id = String::with_capacity(NODE_ID_LEN);
    for _ in 0..NODE_ID_LEN {
        let digit = (hash % 36) as u32;
        id.push(char::from_digit(digit, 36).unwrap_or('0'));
        hash /= 36;
    }
    id
}

impl EngineInfo {
    /// The engine's ID as a swarm mode node (see [`node_id`]).
    pub fn node_id(&self) -> String {
        self.node_id.clone()
    }

    /// The engine as inspect answers' `Node` object, serialized.
    pub fn inspect_node(&self) -> Bytes {
        self.inspect_node.clone()
    }

    /// Builds the engine's identity from its `/info` and `/version` answers.
    pub fn from_answers(addr: &str, info: &Value, version: &Value) -> Result<EngineInfo, EngineError> {
        let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_string();
        let cpus = info["NCPU"].as_i64().unwrap_or(0);
        let memory = info["MemTotal"].as_i64().unwrap_or(0);
        let is_swarm = text(info, "ServerVersion").starts_with("swarm/")
            || info["SystemStatus"]
                .as_array()
                .is_some_and(|pairs| pairs.iter().any(|p| p[0] == "Role" || p[0] == "Strategy"));
        if cpus <= 0 || memory <= 0 || is_swarm {
            return Err(EngineError::NotAnEngine(addr.to_string()));
        }
        let mut labels = BTreeMap::new();
        for label in info["Labels"].as_array().into_iter().flatten() {
            if let Some((k, v)) = label.as_str().and_then(|l| l.split_once('=')) {
                labels.insert(k.to_string(), v.to_string());
            }
        }
        labels.insert("kernelversion".into(), text(info, "KernelVersion"));
        labels.insert("operatingsystem".into(), text(info, "OperatingSystem"));
        labels.insert("ostype".into(), text(info, "OSType"));
        labels.insert("storagedriver".into(), text(info, "Driver"));
        let id = format!("{}|{}", text(info, "ID"), addr);
        let name = text(info, "Name");
        let inspect_node = serde_json::json!({
            "ID": id, "IP": host_of(addr), "Addr": addr, "Name": name,
            "Cpus": cpus, "Memory": memory, "Labels": labels,
        });
        Ok(EngineInfo {
            node_id: node_id(&id),
            inspect_node: Bytes::from(inspect_node.to_string()),
            id,
            name,
            labels,
            cpus,
            memory,
            server_version: text(info, "ServerVersion"),
            api_version: text(version, "ApiVersion"),
            min_api_version: text(version, "MinAPIVersion"),
        })
    }
}

/// An engine's network, with the fields the manager reads.
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkRecord {
    #[serde(rename = "Id", default)]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Driver", default)]
    pub driver: String,
    /// `local` for per-engine networks, `swarm` or `global` otherwise.
    #[serde(rename = "Scope", default)]
    pub scope: String,
    #[serde(rename = "Labels", default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "Internal", default)]
    pub internal: bool,
    #[serde(rename = "EnableIPv6", default)]
    pub enable_ipv6: bool,
    #[serde(rename = "Attachable", default)]
    pub attachable: bool,
    /// The engine's own JSON for the network, relayed by `docker network ls`
    /// with only the name changed.
    #[serde(skip, default = "empty_raw")]
    pub raw: Arc<RawValue>,
}

impl NetworkRecord {
    /// Decodes an engine's `/networks` answer.
    pub fn list_from(body: &[u8]) -> Result<Vec<NetworkRecord>, serde_json::Error> {
        let raws: Vec<Box<RawValue>> = serde_json::from_slice(body)?;
        raws.into_iter()
            .map(|raw| {
                // Serde would also read a record from a JSON array, but
                // `raw` is edited as an object when networks are listed.
                if !raw.get().starts_with('{') {
                    return Err(serde::de::Error::custom("a network must be a JSON object"));
                }
                let mut record: NetworkRecord = serde_json::from_str(raw.get())?;
                record.raw = Arc::from(raw);
                Ok(record)
            })
            .collect()
    }
}

/// An engine's volume, with the fields the manager reads.
#[derive(Debug, Clone, Deserialize)]
pub struct VolumeRecord {
    #[serde(rename = "Name", default)]
    pub name: String,
}

impl VolumeRecord {
    /// Decodes an engine's `/volumes` answer.
    pub fn list_from(body: &[u8]) -> Result<Vec<VolumeRecord>, serde_json::Error> {
        #[derive(Deserialize)]
        struct VolumeList {
            #[serde(rename = "Volumes", default, deserialize_with = "null_as_default")]
            volumes: Vec<VolumeRecord>,
        }
        Ok(serde_json::from_slice::<VolumeList>(body)?.volumes)
    }
}

/// Decodes an engine's `/images/json` answer into what scheduling and
/// `docker info` read.
pub fn images_from(body: &[u8]) -> Result<Vec<ImageSnapshot>, serde_json::Error> {
    #[derive(Deserialize)]
    struct ImageSummary {
        #[serde(rename = "Id", default)]
        id: String,
        #[serde(rename = "RepoTags", default, deserialize_with = "null_as_default")]
        repo_tags: Vec<String>,
        #[serde(rename = "RepoDigests", default, deserialize_with = "null_as_default")]
        repo_digests: Vec<String>,
    }
    let summaries: Vec<ImageSummary> = serde_json::from_slice(body)?;
    Ok(summaries
        .into_iter()
        .map(|i| ImageSnapshot { id: i.id, repo_tags: i.repo_tags, repo_digests: i.repo_digests })
        .collect())
}

/// Docker writes `null` for empty lists and maps.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Placeholder until the record's own JSON is attached (`null`).
fn empty_raw() -> Arc<RawValue> {
    Arc::from(Box::<RawValue>::default())
}

/// Everything the manager knows about an engine right now. Written only by
/// the methods below, which keep each change whole (health with its
/// failure count, a refresh with its time).
#[derive(Debug)]
struct EngineState {
    health: Health,
    /// Failed refreshes in a row that count toward `--engine-failure-retry`
    /// (the monitor counts only refreshes spaced by the refresh interval);
    /// reset by a successful refresh.
    failures: u32,
    /// The error of the last contact (validation or refresh, counted or
    /// not), shown as `└ Error` in `docker info`; `None` exactly when the
    /// last contact succeeded. Placement skips an engine while it is set.
    last_error: Option<String>,
    /// When the state was last refreshed successfully.
    updated_at: SystemTime,
    /// Known once validated; `None` while Pending.
    info: Option<Arc<EngineInfo>>,
    /// Containers by full ID. Written only through a [`RefreshGuard`].
    containers: HashMap<String, Arc<Container>>,
    images: Arc<Vec<ImageSnapshot>>,
    networks: Arc<Vec<NetworkRecord>>,
    volumes: Arc<Vec<VolumeRecord>>,
    /// The scheduler's view of all of the above, built when a placement
    /// first asks for it; every change of the state drops it.
    snapshot: Option<Arc<NodeSnapshot>>,
    /// `docker info`'s counts of `containers`, made when first asked for;
    /// every change of the state drops them. Counting on every `docker
    /// info` meant visiting each cached container: at 30,000 that was
    /// most of the answer's time.
    usage: Option<ContainerUsage>,
}

/// What `docker info` shows of an engine's containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    pub total: usize,
    pub running: usize,
    pub paused: usize,
    /// CPUs reserved by the containers (`--cpu-shares` turned back into CPUs).
    pub reserved_cpus: i64,
    /// Memory reserved by the containers, in bytes.
    pub reserved_memory: i64,
}

impl ContainerUsage {
    fn of<'a>(containers: impl Iterator<Item = &'a Arc<Container>>) -> ContainerUsage {
        containers.fold(ContainerUsage::default(), |mut usage, c| {
            usage.total += 1;
            usage.running += usize::from(c.state == "running");
            usage.paused += usize::from(c.state == "paused");
            usage.reserved_cpus = usage.reserved_cpus.saturating_add(c.snapshot.reserved_cpus);
            usage.reserved_memory = usage.reserved_memory.saturating_add(c.snapshot.reserved_memory);
            usage
        })
    }

    pub fn stopped(&self) -> usize {
        self.total - self.running - self.paused
    }
}

/// A consistent copy of an engine's health and identity.
#[derive(Debug, Clone)]
pub struct EngineStatus {
    pub health: Health,
    pub last_error: Option<String>,
    pub updated_at: SystemTime,
    /// `None` while Pending.
    pub info: Option<Arc<EngineInfo>>,
}

/// The name of an engine not validated yet.
pub const UNKNOWN_NAME: &str = "(unknown)";

/// One engine of the cluster. Shared by the API and the engine's own tasks.
#[derive(Debug)]
pub struct Engine {
    /// `host:port` as discovery reported it; the engine's key in the cluster.
    pub addr: String,
    /// Host part of `addr`, used to rewrite `0.0.0.0` port bindings.
    pub ip: String,
    /// Pooled HTTP client to the engine.
    pub client: Upstream,
    /// Mutable state; locked only for short, non-blocking sections, and
    /// never twice in one expression (parking_lot's fair lock would deadlock
    /// behind a queued writer).
    state: RwLock<EngineState>,
    /// Wakes the refresh loop for an immediate refresh.
    pub wake: Notify,
    /// Notified when the engine is flagged Unhealthy, so requests waiting
    /// for its answer give up rather than wait for an engine that hangs.
    flagged: Notify,
    /// Held by every change to the container cache, from the engine call
    /// that learned it to the cache write, so changes land in the order
    /// they were learned: an older answer never overwrites a newer one.
    refresh_lock: tokio::sync::Mutex<()>,
    /// Containers an engine event said changed, not refreshed yet; taken
    /// in batches by the engine's event refresher (see `monitor`).
    changed: parking_lot::Mutex<HashSet<String>>,
    /// Wakes the event refresher when `changed` gains an entry.
    changed_wake: Notify,
}

/// The right to change an engine's container cache; see [`Engine::lock_containers`].
pub struct RefreshGuard<'a> {
    engine: &'a Engine,
    _ordered: tokio::sync::MutexGuard<'a, ()>,
}

impl RefreshGuard<'_> {
    /// Puts `containers` in place of the cache: a full refresh, where an
    /// entry the engine did not list is gone.
    pub fn replace_all(&self, containers: HashMap<String, Arc<Container>>) {
        let old = std::mem::replace(&mut self.engine.state_mut().containers, containers);
        let dropped: Vec<String> = {
            let state = self.engine.state.read();
            old.into_keys().filter(|id| !state.containers.contains_key(id)).collect()
        };
        if !dropped.is_empty() {
            let node = self.engine.name();
            for id in &dropped {
                Observed::ContainerDropped { id, node: &node, why: "not in the engine's full list" }.emit();
            }
        }
    }

    pub fn upsert(&self, container: Arc<Container>) {
        self.engine.state_mut().containers.insert(container.id.clone(), container);
    }

    /// Adds `container` unless an entry for its ID is there (a refresh
    /// already brought the engine's own).
    pub fn insert_if_absent(&self, container: Arc<Container>) {
        self.engine.state_mut().containers.entry(container.id.clone()).or_insert(container);
    }

    /// Drops `id` from the cache; `why` is logged (at debug level) if it
    /// was there.
    pub fn remove(&self, id: &str, why: &'static str) {
        if self.engine.state_mut().containers.remove(id).is_some() {
            Observed::ContainerDropped { id, node: &self.engine.name(), why }.emit();
        }
    }
}

impl Engine {
    /// An engine at `addr`, reached over TLS when `tls` is given.
    pub fn new(addr: &str, tls: Option<Arc<swarm_proxy::TlsConfigs>>) -> Result<Engine, ProxyError> {
        Ok(Engine {
            addr: addr.to_string(),
            ip: host_of(addr),
            client: Upstream::new(addr, tls)?,
            state: RwLock::new(EngineState {
                health: Health::Pending,
                failures: 0,
                last_error: None,
                updated_at: SystemTime::now(),
                info: None,
                containers: HashMap::new(),
                images: Arc::new(Vec::new()),
                networks: Arc::new(Vec::new()),
                volumes: Arc::new(Vec::new()),
                snapshot: None,
                usage: None,
            }),
            wake: Notify::new(),
            flagged: Notify::new(),
            refresh_lock: tokio::sync::Mutex::new(()),
            changed: parking_lot::Mutex::new(HashSet::new()),
            changed_wake: Notify::new(),
        })
    }

    /// The engine's name, or `(unknown)` while Pending.
    pub fn name(&self) -> String {
        self.state.read().info.as_ref().map_or_else(|| UNKNOWN_NAME.to_string(), |i| i.name.clone())
    }

    pub fn info(&self) -> Option<Arc<EngineInfo>> {
        self.state.read().info.clone()
    }

    pub fn health(&self) -> Health {
        self.state.read().health
    }

    pub fn is_healthy(&self) -> bool {
        self.health() == Health::Healthy
    }

    pub fn status(&self) -> EngineStatus {
        let state = self.state.read();
        EngineStatus {
            health: state.health,
            last_error: state.last_error.clone(),
            updated_at: state.updated_at,
            info: state.info.clone(),
        }
    }

    /// The cached containers, in no particular order.
    pub fn containers(&self) -> Vec<Arc<Container>> {
        self.state.read().containers.values().cloned().collect()
    }

    /// The cached containers, counted as `docker info` shows them.
    pub fn container_usage(&self) -> ContainerUsage {
        if let Some(usage) = self.state.read().usage {
            return usage;
        }
        let mut state = self.state.write();
        let usage = ContainerUsage::of(state.containers.values());
        state.usage = Some(usage);
        usage
    }

    /// The cached container with full ID `id`.
    pub fn container(&self, id: &str) -> Option<Arc<Container>> {
        self.state.read().containers.get(id).cloned()
    }

    /// The first cached container `wanted` accepts.
    pub fn find_container(&self, wanted: impl Fn(&Container) -> bool) -> Option<Arc<Container>> {
        self.state.read().containers.values().find(|c| wanted(c)).cloned()
    }

    /// The cached containers that `keep` selects.
    pub fn containers_where(&self, keep: impl Fn(&Container) -> bool) -> Vec<Arc<Container>> {
        self.state.read().containers.values().filter(|c| keep(c)).cloned().collect()
    }

    pub fn images(&self) -> Arc<Vec<ImageSnapshot>> {
        self.state.read().images.clone()
    }

    pub fn networks(&self) -> Arc<Vec<NetworkRecord>> {
        self.state.read().networks.clone()
    }

    pub fn volumes(&self) -> Arc<Vec<VolumeRecord>> {
        self.state.read().volumes.clone()
    }

    /// The state, to change it; the scheduler's view of it is dropped.
    fn state_mut(&self) -> parking_lot::RwLockWriteGuard<'_, EngineState> {
        let mut state = self.state.write();
        state.snapshot = None;
        state.usage = None;
        state
    }

    /// The scheduler's view of this engine, shared until the engine's state
    /// changes; `None` while Pending.
    pub fn node_snapshot(&self) -> Option<Arc<NodeSnapshot>> {
        if let Some(snapshot) = &self.state.read().snapshot {
            return Some(snapshot.clone());
        }
        let mut state = self.state.write();
        if let Some(snapshot) = &state.snapshot {
            return Some(snapshot.clone());
        }
        let info = state.info.as_ref().filter(|_| state.health != Health::Pending)?;
        let mut node = NodeSnapshot::new(&info.id, &info.name, &self.addr);
        node.node_id = info.node_id();
        node.labels = info.labels.clone();
        node.total_cpus = info.cpus;
        node.total_memory = info.memory;
        // A placement decision, not a health verdict: a create sent to an
        // engine that just failed to answer would most likely fail too.
        node.healthy = state.health == Health::Healthy && state.last_error.is_none();
        node.failure_count = state.failures;
        node.containers = state.containers.values().map(|c| c.snapshot.clone()).collect();
        node.images = state.images.clone();
        let node = Arc::new(node);
        state.snapshot = Some(node.clone());
        Some(node)
    }

    /// Takes the right to change the container cache, waiting for the
    /// change in progress to land first.
    pub async fn lock_containers(&self) -> RefreshGuard<'_> {
        RefreshGuard { engine: self, _ordered: self.refresh_lock.lock().await }
    }

    /// Validation succeeded: the engine is Healthy with this identity.
    pub(super) fn validated(&self, info: Arc<EngineInfo>) {
        let mut state = self.state_mut();
        state.info = Some(info);
        state.health = Health::Healthy;
        state.failures = 0;
        state.last_error = None;
        state.updated_at = SystemTime::now();
    }

    /// Validation failed; the engine stays Pending.
    pub(super) fn validation_failed(&self, error: String) {
        self.state_mut().last_error = Some(error);
    }

    pub(super) fn set_info(&self, info: Arc<EngineInfo>) {
        self.state_mut().info = Some(info);
    }

    /// A refresh succeeded. Returns the failed refreshes before it when the
    /// engine was Unhealthy (it is Healthy again).
    pub(super) fn refresh_succeeded(&self) -> Option<u32> {
        let mut state = self.state_mut();
        let revived = (state.health == Health::Unhealthy).then_some(state.failures);
        state.health = Health::Healthy;
        state.failures = 0;
        state.last_error = None;
        state.updated_at = SystemTime::now();
        revived
    }

    /// A refresh that counts toward the retry count failed. Returns the
    /// failure count when this failure made a Healthy engine Unhealthy
    /// (after `failure_retry` in a row).
    pub(super) fn refresh_failed(&self, error: String, failure_retry: u32) -> Option<u32> {
        let flagged = {
            let mut state = self.state_mut();
            state.failures = state.failures.saturating_add(1);
            state.last_error = Some(error);
            let flagged = state.health == Health::Healthy && state.failures >= failure_retry;
            if flagged {
                state.health = Health::Unhealthy;
            }
            flagged.then_some(state.failures)
        };
        if flagged.is_some() {
            self.flagged.notify_waiters();
        }
        flagged
    }

    /// Runs `request` (a call to this engine) unless the engine is flagged
    /// Unhealthy first: then the engine's last error is returned. A request
    /// to an engine that is not Healthy already just runs.
    pub async fn unless_flagged<T>(&self, request: impl std::future::Future<Output = T>) -> Result<T, String> {
        let flagged = self.flagged.notified();
        tokio::pin!(flagged);
        flagged.as_mut().enable();
        if !self.is_healthy() {
            return Ok(request.await);
        }
        tokio::select! {
            done = request => Ok(done),
            _ = flagged => Err(self.status().last_error.unwrap_or_default()),
        }
    }

    /// A refresh failed that does not count toward the retry count (it came
    /// sooner than the refresh interval after a counted one): only the
    /// error is kept.
    pub(super) fn contact_failed(&self, error: String) {
        self.state_mut().last_error = Some(error);
    }

    /// Notes that an engine event changed container `id`.
    pub(super) fn mark_changed(&self, id: String) {
        if self.changed.lock().insert(id) {
            self.changed_wake.notify_one();
        }
    }

    /// Waits until some container is marked changed.
    pub(super) async fn changes_marked(&self) {
        self.changed_wake.notified().await;
    }

    /// The containers marked changed so far, and no longer marked.
    pub(super) fn take_changed(&self) -> Vec<String> {
        std::mem::take(&mut *self.changed.lock()).into_iter().collect()
    }

    /// Counted failed refreshes in a row.
    pub(super) fn failures(&self) -> u32 {
        self.state.read().failures
    }

    /// Discovery no longer lists the engine.
    pub(super) fn disconnected(&self) {
        self.state_mut().health = Health::Disconnected;
    }

    pub(super) fn set_images(&self, images: Vec<ImageSnapshot>) {
        self.state_mut().images = Arc::new(images);
    }

    pub(super) fn set_networks(&self, networks: Vec<NetworkRecord>) {
        self.state_mut().networks = Arc::new(networks);
    }

    pub(super) fn set_volumes(&self, volumes: Vec<VolumeRecord>) {
        self.state_mut().volumes = Arc::new(volumes);
    }

    pub(super) fn touch(&self) {
        self.state_mut().updated_at = SystemTime::now();
    }

    /// GETs `path`; non-2xx answers are errors, and so is no answer within
    /// [`READ_TIMEOUT`].
    pub async fn get_bytes(&self, path: &str) -> Result<bytes::Bytes, EngineError> {
        let (status, body) = self.client.call_within(Method::GET, path, None, READ_TIMEOUT).await?;
        if !status.is_success() {
            return Err(EngineError::Status {
                addr: self.addr.clone(),
                path: path.to_string(),
                status,
                message: error_message(&body),
            });
        }
        Ok(body)
    }

    /// GETs `path` and decodes the JSON answer; non-2xx answers are errors.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        let body = self.get_bytes(path).await?;
        serde_json::from_slice(&body).map_err(|e| self.decode_error(path, e))
    }

    /// The error for an answer to `path` that does not decode.
    pub fn decode_error(&self, path: &str, e: serde_json::Error) -> EngineError {
        EngineError::Decode { addr: self.addr.clone(), path: path.to_string(), reason: e.to_string() }
    }

    /// Asks the engine who it is (`/info`, `/version`).
    pub async fn fetch_info(&self) -> Result<EngineInfo, EngineError> {
        let (info, version) = tokio::try_join!(self.get_json("/info"), self.get_json("/version"))?;
        EngineInfo::from_answers(&self.addr, &info, &version)
    }
}

/// The `message` of a Docker error answer, or the raw text.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_identity_from_info() {
        let info = json!({"ID": "ABCD", "Name": "node-01", "NCPU": 2, "MemTotal": 1024,
            "Labels": ["storage=ssd"], "KernelVersion": "6.1", "OperatingSystem": "Debian",
            "OSType": "linux", "Driver": "vfs", "ServerVersion": "20.10.24"});
        let version = json!({"ApiVersion": "1.41", "MinAPIVersion": "1.12"});
        let e = EngineInfo::from_answers("10.0.0.1:2375", &info, &version).unwrap();
        assert_eq!(e.id, "ABCD|10.0.0.1:2375");
        assert_eq!(e.labels["storage"], "ssd");
        assert_eq!(e.labels["storagedriver"], "vfs");
        assert_eq!(e.api_version, "1.41");
    }

    #[test]
    fn only_counted_failures_flag_an_engine() {
        let engine = Engine::new("10.0.0.1:2375", None).unwrap();
        let info = json!({"ID": "ABCD", "Name": "node-01", "NCPU": 2, "MemTotal": 1024});
        engine.validated(Arc::new(EngineInfo::from_answers(&engine.addr, &info, &json!({})).unwrap()));
        engine.contact_failed("refused".into());
        assert_eq!((engine.health(), engine.failures()), (Health::Healthy, 0));
        assert!(!engine.node_snapshot().unwrap().healthy, "placement skips an engine whose last contact failed");
        assert_eq!(engine.refresh_failed("refused".into(), 2), None);
        assert_eq!(engine.refresh_failed("refused".into(), 2), Some(2));
        assert_eq!(engine.health(), Health::Unhealthy);
        assert_eq!(engine.refresh_failed("refused".into(), 2), None, "flagged once");
        assert_eq!(engine.refresh_succeeded(), Some(3));
        assert_eq!((engine.health(), engine.failures()), (Health::Healthy, 0));
        assert!(engine.node_snapshot().unwrap().healthy);
    }

    #[test]
    fn refuses_a_swarm_manager() {
        let manager = json!({"ID": "x", "NCPU": 2, "MemTotal": 1024, "ServerVersion": "swarm/1.2.9"});
        let err = EngineInfo::from_answers("h:1", &manager, &json!({})).unwrap_err();
        assert!(err.to_string().contains("not a Swarm manager"), "{err}");
        let empty = json!({"ID": "x", "NCPU": 0, "MemTotal": 0});
        assert!(EngineInfo::from_answers("h:1", &empty, &json!({})).is_err());
    }

    #[test]
    fn node_ids_look_like_swarm_modes_and_are_stable() {
        let id = node_id("ABCD:EFGH|10.0.0.1:2375");
        assert_eq!(id.len(), NODE_ID_LEN);
        assert!(id.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()), "{id}");
        assert_eq!(id, node_id("ABCD:EFGH|10.0.0.1:2375"));
        assert_ne!(id, node_id("ABCD:EFGH|10.0.0.2:2375"));
        // Pinned: a node's ID must never change with a rebuild or an upgrade.
        assert_eq!(id, "07t3iddavty7o4ab88uaampl8");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::proptest_json::engine_json;
    use proptest::prelude::*;

    /// Bytes an engine may answer: JSON shaped like its answers, or junk.
    fn answer_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            engine_json().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            prop::collection::vec(engine_json(), 0..4).prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            prop::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        /// Any `/info` and `/version` answers give an identity with
        /// resources and the engine's own labels, or "not an engine".
        #[test]
        fn identity_from_any_answers(info in engine_json(), version in engine_json()) {
            match EngineInfo::from_answers("h:1", &info, &version) {
                Ok(e) => {
                    prop_assert!(e.cpus > 0 && e.memory > 0);
                    for key in ["kernelversion", "operatingsystem", "ostype", "storagedriver"] {
                        prop_assert!(e.labels.contains_key(key));
                    }
                    prop_assert_eq!(e.node_id().len(), NODE_ID_LEN);
                }
                Err(e) => prop_assert!(matches!(e, EngineError::NotAnEngine(_))),
            }
        }

        /// Engine labels are `k=v` strings; any strings are split or skipped.
        #[test]
        fn labels_of_any_strings(labels in prop::collection::vec("[a-z=é ]{0,8}|.{0,8}", 0..6)) {
            let info = serde_json::json!({"ID": "x", "NCPU": 1, "MemTotal": 1, "Labels": labels});
            let e = EngineInfo::from_answers("h:1", &info, &Value::Null).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for label in labels.iter().filter(|l| l.contains('=')) {
                let (k, _) = label.split_once('=').unwrap_or_default();
                prop_assert!(e.labels.contains_key(k));
            }
        }

        /// Any list answer decodes or is a decode error; a decoded network
        /// keeps its own JSON, an object.
        #[test]
        fn lists_from_any_answer(body in answer_bytes()) {
            let _ = images_from(&body);
            let _ = VolumeRecord::list_from(&body);
            if let Ok(networks) = NetworkRecord::list_from(&body) {
                for n in networks {
                    prop_assert!(serde_json::from_str::<Value>(n.raw.get()).is_ok_and(|v| v.is_object()));
                }
            }
            let _ = error_message(&body);
        }
    }

    #[test]
    fn a_network_is_an_object() {
        // Serde reads a struct from an array of its fields too.
        let listed = br#"[["id","name","bridge","local",null,null,false,false,false]]"#;
        assert!(NetworkRecord::list_from(listed).is_err());
        let listed = br#"[{"Id":"id","Name":"name","Labels":null}]"#;
        assert_eq!(NetworkRecord::list_from(listed).map(|n| n[0].name.clone()).ok().as_deref(), Some("name"));
    }
}
