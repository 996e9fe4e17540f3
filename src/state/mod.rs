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

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use backend::{Backend, Conflict};

pub use crate::services::model::Availability;

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
    /// The update was made from an older version than the current one
    /// (swarm mode's words).
    #[error("update out of sequence")]
    OutOfSequence,
}

/// What an operator set on a node (`docker node update`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettings {
    pub availability: Availability,
    /// Node labels (swarm mode's `node.labels.*`), apart from the engine's own.
    pub labels: BTreeMap<String, String>,
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

/// The backend directory of node settings, one document per node ID.
const NODES: &str = "nodes";

/// The desired state of one cluster.
pub struct DesiredState {
    backend: Backend,
    /// Node settings as last read or written, by node ID; nodes without a
    /// document are active with no labels.
    nodes: RwLock<BTreeMap<String, Versioned<NodeSettings>>>,
}

impl DesiredState {
    pub fn new(backend: Backend) -> DesiredState {
        DesiredState { backend, nodes: RwLock::new(BTreeMap::new()) }
    }

    /// Reads every document again (at start, and when this manager becomes
    /// primary: another one may have changed them meanwhile).
    pub async fn reload(&self) -> Result<(), StateError> {
        let mut nodes = BTreeMap::new();
        for (key, stored) in self.backend.list(NODES).await? {
            let doc: Versioned<NodeSettings> = serde_json::from_slice(&stored.value)
                .map_err(|e| StateError::Corrupt { key: key.clone(), reason: e.to_string() })?;
            nodes.insert(key.trim_start_matches(&format!("{NODES}/")).to_string(), doc);
        }
        *self.nodes.write() = nodes;
        Ok(())
    }

    /// The settings of node `id` (defaults if never set).
    pub fn node(&self, id: &str) -> Versioned<NodeSettings> {
        self.nodes.read().get(id).cloned().unwrap_or_else(|| Versioned {
            index: 1,
            updated_at: String::new(),
            doc: NodeSettings::default(),
        })
    }

    /// Replaces node `id`'s settings if they are still at version `index`;
    /// returns the new index.
    pub async fn update_node(&self, id: &str, index: u64, settings: NodeSettings) -> Result<u64, StateError> {
        let key = format!("{NODES}/{id}");
        let stored = self.backend.get(&key).await?;
        let current = match &stored {
            Some(stored) => {
                serde_json::from_slice::<Versioned<NodeSettings>>(&stored.value)
                    .map_err(|e| StateError::Corrupt { key: key.clone(), reason: e.to_string() })?
                    .index
            }
            None => 1,
        };
        if current != index {
            return Err(StateError::OutOfSequence);
        }
        let next = Versioned { index: index + 1, updated_at: now_rfc3339(), doc: settings };
        let bytes = serde_json::to_vec(&next).map_err(|e| StateError::Encode(e.to_string()))?;
        match self.backend.put_if(&key, &bytes, stored.map(|s| s.version)).await? {
            Ok(_) => {
                self.nodes.write().insert(id.to_string(), next);
                Ok(index + 1)
            }
            Err(Conflict) => Err(StateError::OutOfSequence),
        }
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
        let state = DesiredState::new(Backend::memory());
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
}
