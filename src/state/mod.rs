//! The cluster's desired state: what operators asked for that the engines
//! cannot tell (a node's availability and labels, and later services),
//! kept where it outlives any one manager.
//!
//! Documents carry their own version index (what the API shows as
//! `Version.Index` and expects back on updates) and are written with
//! compare-and-swap on the backend's version, so an update from a stale
//! read, or from a manager that lost the primary role a moment ago, fails
//! instead of overwriting a newer change.
//!
//! The primary works from a copy of the documents ([`DesiredState::reload`]
//! fills it; every successful write updates it), so the scheduler reads a
//! node's availability without a store round trip.

pub mod backend;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use backend::{Backend, Conflict, Stored};

use crate::metrics::Metrics;
use crate::observe::Observed;
pub use crate::services::model::Availability;
use crate::services::{Service, TaskRecord};

/// Why the desired state could not be read or changed.
#[derive(Debug, Error)]
pub enum StateError {
    /// The state file cannot be read or written.
    #[error("state file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A document could not be encoded.
    #[error("cannot encode the desired state: {0}")]
    Encode(String),
    /// A stored document does not parse.
    #[error("the desired state at {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    /// The discovery store failed.
    #[error("{0}")]
    Store(#[from] swarm_discovery::kv::KvError),
    /// The update was made from an older version than the current one
    /// (swarm mode's words).
    #[error("update out of sequence")]
    OutOfSequence,
    /// A service with this name exists already.
    #[error("name conflicts with an existing object: service {0} already exists")]
    NameTaken(String),
}

/// What an operator set on a node (`docker node update`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettings {
    pub availability: Availability,
    /// Node labels (swarm mode's `node.labels.*`), apart from the engine's own.
    pub labels: BTreeMap<String, String>,
}

/// A create answered as failed whose container may still land on an
/// engine (its answer was lost, or the primary died making it): the
/// primary looks for it by its swarm ID, and removes it should it show up,
/// until `until`. On record here so that a new primary carries on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostCreate {
    /// Addresses of the engines it may be on; empty: any engine.
    pub engines: Vec<String>,
    /// Unix seconds after which it is no longer looked for.
    pub until: u64,
}

/// A document and its version index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// Starts at 1 for a document never written; +1 on every update.
    pub index: u64,
    /// When it was last changed (RFC 3339), empty if never.
    pub updated_at: String,
    pub doc: T,
}

/// The documents of one backend directory, by ID, as last read or written,
/// each with the backend version it was read or written at.
struct Collection<T> {
    dir: &'static str,
    items: RwLock<BTreeMap<String, (T, u64)>>,
}

impl<T: Clone + Serialize + DeserializeOwned> Collection<T> {
    fn new(dir: &'static str) -> Collection<T> {
        Collection { dir, items: RwLock::new(BTreeMap::new()) }
    }

    fn key(&self, id: &str) -> String {
        format!("{}/{id}", self.dir)
    }

    async fn reload(&self, backend: &ObservedBackend) -> Result<(), StateError> {
        let mut items = BTreeMap::new();
        let prefix = format!("{}/", self.dir);
        for (key, stored) in backend.list(self.dir).await? {
            let doc: T = serde_json::from_slice(&stored.value)
                .map_err(|e| StateError::Corrupt { key: key.clone(), reason: e.to_string() })?;
            items.insert(key.trim_start_matches(&prefix).to_string(), (doc, stored.version));
        }
        *self.items.write() = items;
        Ok(())
    }

    fn get(&self, id: &str) -> Option<T> {
        self.items.read().get(id).map(|(doc, _)| doc.clone())
    }

    fn all(&self) -> Vec<T> {
        self.items.read().values().map(|(doc, _)| doc.clone()).collect()
    }

    fn entries(&self) -> Vec<(String, T)> {
        self.items.read().iter().map(|(id, (doc, _))| (id.clone(), doc.clone())).collect()
    }

    /// Writes `doc` if the backend still holds what this copy last saw of
    /// `id` (nothing, for a new one).
    async fn put(&self, backend: &ObservedBackend, id: &str, doc: T) -> Result<(), StateError> {
        let seen = self.items.read().get(id).map(|(_, version)| *version);
        let bytes = serde_json::to_vec(&doc).map_err(|e| StateError::Encode(e.to_string()))?;
        match backend.put_if(&self.key(id), &bytes, seen).await? {
            Ok(version) => {
                self.items.write().insert(id.to_string(), (doc, version));
                Ok(())
            }
            Err(Conflict) => {
                // Someone else wrote: read again, so the next attempt starts from theirs.
                self.reload(backend).await?;
                Err(StateError::OutOfSequence)
            }
        }
    }

    /// Removes `id` if the backend still holds what this copy last saw.
    async fn delete(&self, backend: &ObservedBackend, id: &str) -> Result<(), StateError> {
        let Some(seen) = self.items.read().get(id).map(|(_, version)| *version) else {
            return Ok(());
        };
        match backend.delete_if(&self.key(id), seen).await? {
            Ok(()) => {
                self.items.write().remove(id);
                Ok(())
            }
            Err(Conflict) => {
                self.reload(backend).await?;
                Err(StateError::OutOfSequence)
            }
        }
    }
}

/// The backend, with every failed call observed: the errors of the store
/// itself (the discovery store, the state file), not conflicts or unreadable
/// documents, which are answers.
struct ObservedBackend {
    backend: Backend,
    metrics: Arc<Metrics>,
}

impl ObservedBackend {
    fn noted<T>(&self, result: Result<T, StateError>) -> Result<T, StateError> {
        if let Err(e) = &result {
            Observed::StateStoreFailed { error: &e.to_string() }.record(&self.metrics);
        }
        result
    }

    async fn list(&self, dir: &str) -> Result<Vec<(String, Stored)>, StateError> {
        self.noted(self.backend.list(dir).await)
    }

    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<Result<u64, Conflict>, StateError> {
        self.noted(self.backend.put_if(key, value, expected).await)
    }

    async fn delete_if(&self, key: &str, version: u64) -> Result<Result<(), Conflict>, StateError> {
        self.noted(self.backend.delete_if(key, version).await)
    }
}

/// The desired state of one cluster.
pub struct DesiredState {
    backend: ObservedBackend,
    /// Node settings; nodes without a document are active with no labels.
    nodes: Collection<Versioned<NodeSettings>>,
    /// Services by ID.
    services: Collection<Service>,
    /// Tasks by ID, with what they were created with.
    tasks: Collection<TaskRecord>,
    /// Lost creates by swarm ID; read by the primary's sweep only, which
    /// reads them from the backend each time (replicas add to them).
    lost_creates: Collection<LostCreate>,
    /// The primary term (`Leadership::primary_term`; 0 without replication)
    /// in which the copies were last read whole; `None` before the first
    /// read. Until then the copies may be empty for want of reading, or
    /// miss what another primary changed.
    read_in_term: parking_lot::Mutex<Option<u64>>,
    /// Held while the copies are read again, so concurrent callers wait
    /// for one read rather than start their own.
    reloading: tokio::sync::Mutex<()>,
    /// When the node settings were last read whole: a replica, which does
    /// not write them, reads them again for its `docker info` when older
    /// than asked.
    nodes_read_at: parking_lot::Mutex<Option<std::time::Instant>>,
    /// Held from the name check of a new service to its write, so two
    /// creates with one name cannot both pass the check (every write goes
    /// through the primary, so one process-wide lock covers them).
    service_names: tokio::sync::Mutex<()>,
}

impl DesiredState {
    /// The desired state kept in `backend`; its failures count in `metrics`.
    pub fn new(backend: Backend, metrics: Arc<Metrics>) -> DesiredState {
        DesiredState {
            backend: ObservedBackend { backend, metrics },
            nodes: Collection::new("nodes"),
            services: Collection::new("services"),
            tasks: Collection::new("tasks"),
            lost_creates: Collection::new("lost_creates"),
            read_in_term: parking_lot::Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            nodes_read_at: parking_lot::Mutex::new(None),
            service_names: tokio::sync::Mutex::new(()),
        }
    }

    /// Makes the copies current for primary term `term`: reads every
    /// document again unless that was done in this term already (another
    /// primary may have changed them since this manager last read them).
    pub async fn refresh_for(&self, term: u64) -> Result<(), StateError> {
        if *self.read_in_term.lock() == Some(term) {
            return Ok(());
        }
        let _one = self.reloading.lock().await;
        if *self.read_in_term.lock() == Some(term) {
            return Ok(());
        }
        self.reload().await?;
        *self.read_in_term.lock() = Some(term);
        Ok(())
    }

    /// Reads the node settings again unless they were read within
    /// `max_age` (a replica's `docker info`: the primary changes them).
    /// The read is marked done when it starts, so concurrent callers do not
    /// read too; one that fails is tried again after `max_age`.
    pub async fn refresh_nodes(&self, max_age: std::time::Duration) -> Result<(), StateError> {
        {
            let mut read_at = self.nodes_read_at.lock();
            if read_at.is_some_and(|at| at.elapsed() < max_age) {
                return Ok(());
            }
            *read_at = Some(std::time::Instant::now());
        }
        self.nodes.reload(&self.backend).await
    }

    /// Reads every document again.
    async fn reload(&self) -> Result<(), StateError> {
        self.nodes.reload(&self.backend).await?;
        *self.nodes_read_at.lock() = Some(std::time::Instant::now());
        self.services.reload(&self.backend).await?;
        self.tasks.reload(&self.backend).await?;
        Ok(())
    }

    /// The settings of node `id` (defaults if never set).
    pub fn node(&self, id: &str) -> Versioned<NodeSettings> {
        self.nodes.get(id).unwrap_or(Versioned { index: 1, updated_at: String::new(), doc: NodeSettings::default() })
    }

    /// Replaces node `id`'s settings if they are still at version `index`;
    /// returns the new index.
    pub async fn update_node(&self, id: &str, index: u64, settings: NodeSettings) -> Result<u64, StateError> {
        if self.node(id).index != index {
            return Err(StateError::OutOfSequence);
        }
        let next = Versioned { index: index + 1, updated_at: now_rfc3339(), doc: settings };
        self.nodes.put(&self.backend, id, next).await?;
        Ok(index + 1)
    }

    pub fn services(&self) -> Vec<Service> {
        self.services.all()
    }

    pub fn service(&self, id: &str) -> Option<Service> {
        self.services.get(id)
    }

    /// Stores `service` (new, or changed from the copy last read).
    pub async fn put_service(&self, service: Service) -> Result<(), StateError> {
        let id = service.id.clone();
        self.services.put(&self.backend, &id, service).await
    }

    /// Stores a new service unless another one has its name (compared
    /// without case, as swarmkit's name index does).
    pub async fn create_service(&self, service: Service) -> Result<(), StateError> {
        let _names = self.service_names.lock().await;
        if self.services.all().iter().any(|s| s.spec.name.eq_ignore_ascii_case(&service.spec.name)) {
            return Err(StateError::NameTaken(service.spec.name));
        }
        self.put_service(service).await
    }

    pub async fn remove_service(&self, id: &str) -> Result<(), StateError> {
        self.services.delete(&self.backend, id).await
    }

    pub fn tasks(&self) -> Vec<TaskRecord> {
        self.tasks.all()
    }

    pub fn task(&self, id: &str) -> Option<TaskRecord> {
        self.tasks.get(id)
    }

    pub async fn put_task(&self, record: TaskRecord) -> Result<(), StateError> {
        let id = record.task.id.clone();
        self.tasks.put(&self.backend, &id, record).await
    }

    pub async fn remove_task(&self, id: &str) -> Result<(), StateError> {
        self.tasks.delete(&self.backend, id).await
    }

    /// Puts the create stamped `swarm_id` on record as lost.
    pub async fn record_lost_create(&self, swarm_id: &str, record: LostCreate) -> Result<(), StateError> {
        self.lost_creates.put(&self.backend, swarm_id, record).await
    }

    /// The lost creates on record, read from the backend.
    pub async fn lost_creates(&self) -> Result<Vec<(String, LostCreate)>, StateError> {
        self.lost_creates.reload(&self.backend).await?;
        Ok(self.lost_creates.entries())
    }

    /// Takes a lost create off the record (found and removed, or given up).
    pub async fn forget_lost_create(&self, swarm_id: &str) -> Result<(), StateError> {
        self.lost_creates.delete(&self.backend, swarm_id).await
    }
}

/// Now, as RFC 3339 with nanoseconds (Docker's timestamps).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn node_updates_need_the_current_index() {
        let state = DesiredState::new(Backend::memory(), Arc::new(Metrics::new()));
        assert_eq!(state.node("n1").index, 1);
        assert_eq!(state.node("n1").doc.availability, Availability::Active);
        let drained = NodeSettings { availability: Availability::Drain, labels: BTreeMap::new() };
        assert_eq!(state.update_node("n1", 1, drained.clone()).await.unwrap(), 2);
        assert_eq!(state.node("n1").doc, drained);
        assert!(matches!(state.update_node("n1", 1, NodeSettings::default()).await, Err(StateError::OutOfSequence)));
        assert_eq!(state.node("n1").doc, drained, "a stale update changes nothing");
        // Another manager reading the same backend sees it.
        state.reload().await.unwrap();
        assert_eq!((state.node("n1").index, state.node("n2").index), (2, 1));
    }

    #[tokio::test]
    async fn copies_are_read_again_once_per_primary_term() {
        let state = DesiredState::new(Backend::memory(), Arc::new(Metrics::new()));
        state.refresh_for(1).await.unwrap();
        // Another primary's write, which this manager's copy does not see.
        let drained = Versioned {
            index: 2,
            updated_at: now_rfc3339(),
            doc: NodeSettings { availability: Availability::Drain, labels: BTreeMap::new() },
        };
        let bytes = serde_json::to_vec(&drained).unwrap();
        state.backend.put_if("nodes/n1", &bytes, None).await.unwrap().unwrap();
        state.refresh_for(1).await.unwrap();
        assert_eq!(state.node("n1").index, 1, "read once per term");
        state.refresh_for(2).await.unwrap();
        assert_eq!(state.node("n1").doc.availability, Availability::Drain);
    }

    #[tokio::test]
    async fn lost_creates_are_read_from_the_backend_each_time() {
        let state = DesiredState::new(Backend::memory(), Arc::new(Metrics::new()));
        state.record_lost_create("a", LostCreate { engines: Vec::new(), until: 10 }).await.unwrap();
        // A replica's record, which this copy never saw.
        let theirs = LostCreate { engines: vec!["10.0.0.1:2375".into()], until: 20 };
        state.backend.put_if("lost_creates/b", &serde_json::to_vec(&theirs).unwrap(), None).await.unwrap().unwrap();
        let read = state.lost_creates().await.unwrap();
        assert_eq!(read.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(read[1].1, theirs);
        state.forget_lost_create("b").await.unwrap();
        assert_eq!(state.lost_creates().await.unwrap().len(), 1);
    }
}
