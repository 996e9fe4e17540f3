//! Persistent keys on ZooKeeper: PERSISTENT znodes, in the store's session.
//!
//! * A key's version is the znode's `mzxid`, the transaction ID of its last
//!   change, not the znode's `version` counter: that one starts at 0 and
//!   starts over when the znode is deleted and created again, so a version
//!   read before such a re-creation could match again (ABA). `mzxid`s only
//!   grow, like etcd revisions and Consul indexes.
//! * ZooKeeper's own conditional operations compare the `version` counter,
//!   so a compare-and-swap reads the stat first (`mzxid` and `version` of
//!   the same state), compares the `mzxid` and then writes or deletes on
//!   that `version`: two round trips. Whatever changes the znode in between
//!   makes the write fail (`BadVersion`, `NoNode`), except a delete and
//!   re-create that brings the counter back to the same value within that
//!   round trip; the window is one round trip, not the caller's whole
//!   read-modify-write.
//! * Putting `a/b/c` creates missing parents `a` and `a/b` as persistent
//!   znodes with empty values (they then show up as keys: see the `kv`
//!   module docs). Deleting a key deletes its znode only, which ZooKeeper
//!   refuses while it has children: that is a [`KvError::Protocol`] saying so.
//! * A request must fit in the server's `jute.maxbuffer` (0xfffff bytes,
//!   1 MiB − 1, by default), path and ACLs included. A bigger one is not
//!   refused with an answer: the server logs "Len error" and closes the
//!   connection, which fails every call in flight on that connection and
//!   makes the client reconnect. Values above [`MAX_VALUE_SIZE`] are
//!   therefore refused here, before anything is sent.

use zookeeper_client::{Client, CreateMode, Stat};

use super::{node_path, ZkStore, STORE};
use crate::kv::{data_key, Conflict, KvError, Versioned};

/// The largest value written to ZooKeeper: 900 KiB, leaving the rest of the
/// server's default `jute.maxbuffer` (1 MiB − 1) for the path, the ACLs and
/// the request's framing (see the module docs).
pub const MAX_VALUE_SIZE: usize = 900 * 1024;

/// A persistent key's znode and the key as errors and conflicts name it.
struct Node {
    key: String,
    path: String,
}

impl Node {
    fn of(key: &str) -> Result<Node, KvError> {
        let key = data_key(key)?;
        Ok(Node { key: key.to_string(), path: node_path(key) })
    }

    fn conflict(&self, expected: Option<u64>) -> Conflict {
        Conflict { key: self.key.clone(), expected }
    }

    /// Refuses a value that would not fit in one request (see the module docs).
    fn check_size(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() <= MAX_VALUE_SIZE {
            return Ok(());
        }
        Err(KvError::TooLarge {
            store: STORE,
            key: self.key.clone(),
            size: value.len(),
            reason: format!(
                "ZooKeeper takes up to {MAX_VALUE_SIZE} bytes here (a request must fit in the server's \
                 jute.maxbuffer, 1 MiB by default)"
            ),
        })
    }
}

impl ZkStore {
    /// The data of `/key` and its `mzxid`; `None` if there is no such znode.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, KvError> {
        let node = Node::of(key)?;
        let client = self.client().await?;
        match self.ensemble.call(client.get_data(&node.path)).await? {
            Ok((value, stat)) => Ok(Some(Versioned { value, version: version_of(&stat)? })),
            Err(zookeeper_client::Error::NoNode) => Ok(None),
            Err(e) => Err(self.data_error(&node, e)),
        }
    }

    /// Writes `/key` (creating it and missing parents as persistent
    /// znodes); returns its new `mzxid`.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<u64, KvError> {
        let node = Node::of(key)?;
        node.check_size(value)?;
        let client = self.client().await?;
        // Set, or create when missing; a create that finds the znode there
        // after all (a racing writer) sets again. A few rounds, not a loop
        // against a writer that keeps deleting it.
        for _ in 0..3 {
            match self.ensemble.call(client.set_data(&node.path, value, None)).await? {
                Ok(stat) => return version_of(&stat),
                Err(zookeeper_client::Error::NoNode) => {}
                Err(e) => return Err(self.data_error(&node, e)),
            }
            match self.create_persistent(&client, &node, value).await? {
                Some(stat) => return version_of(&stat),
                None => continue,
            }
        }
        Err(KvError::Protocol {
            store: STORE,
            reason: format!("cannot write {}: it keeps being deleted and created", node.key),
        })
    }

    /// Creates `/key` if `expected` is `None`; otherwise writes it if its
    /// `mzxid` is `expected` (see the module docs for the two round trips).
    pub async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<Result<u64, Conflict>, KvError> {
        let node = Node::of(key)?;
        node.check_size(value)?;
        let client = self.client().await?;
        let Some(expected_version) = expected else {
            return match self.create_persistent(&client, &node, value).await? {
                Some(stat) => Ok(Ok(version_of(&stat)?)),
                None => Ok(Err(node.conflict(None))),
            };
        };
        let Some(stat) = self.stat_at(&client, &node, expected_version).await? else {
            return Ok(Err(node.conflict(expected)));
        };
        match self.ensemble.call(client.set_data(&node.path, value, Some(stat.version))).await? {
            Ok(stat) => Ok(Ok(version_of(&stat)?)),
            Err(zookeeper_client::Error::BadVersion | zookeeper_client::Error::NoNode) => {
                Ok(Err(node.conflict(expected)))
            }
            Err(e) => Err(self.data_error(&node, e)),
        }
    }

    /// Deletes `/key`; `false` if it did not exist. An error if it has
    /// children (see the module docs).
    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let node = Node::of(key)?;
        let client = self.client().await?;
        match self.ensemble.call(client.delete(&node.path, None)).await? {
            Ok(()) => Ok(true),
            Err(zookeeper_client::Error::NoNode) => Ok(false),
            Err(e) => Err(self.data_error(&node, e)),
        }
    }

    /// Deletes `/key` if its `mzxid` is `version`.
    pub async fn delete_if(&self, key: &str, version: u64) -> Result<Result<(), Conflict>, KvError> {
        let node = Node::of(key)?;
        let client = self.client().await?;
        let Some(stat) = self.stat_at(&client, &node, version).await? else {
            return Ok(Err(node.conflict(Some(version))));
        };
        match self.ensemble.call(client.delete(&node.path, Some(stat.version))).await? {
            Ok(()) => Ok(Ok(())),
            Err(zookeeper_client::Error::BadVersion | zookeeper_client::Error::NoNode) => {
                Ok(Err(node.conflict(Some(version))))
            }
            Err(e) => Err(self.data_error(&node, e)),
        }
    }

    /// The children of `/dir` with their data and `mzxid`s, sorted by key
    /// (a missing directory is empty).
    pub async fn list_versioned(&self, dir: &str) -> Result<Vec<(String, Versioned)>, KvError> {
        let client = self.client().await?;
        let children = match self.ensemble.call(client.list_children(&node_path(dir))).await? {
            Ok(children) => children,
            Err(zookeeper_client::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(self.ensemble.error(e)),
        };
        let children = self.read_children_with_stats(&client, dir, children).await?;
        children
            .into_iter()
            .map(|(key, value, stat)| Ok((key, Versioned { value, version: version_of(&stat)? })))
            .collect()
    }

    /// The znode's stat if its `mzxid` is `version`; `None` if it is not,
    /// or the znode does not exist.
    async fn stat_at(&self, client: &Client, node: &Node, version: u64) -> Result<Option<Stat>, KvError> {
        match self.ensemble.call(client.check_stat(&node.path)).await? {
            Ok(Some(stat)) if u64::try_from(stat.mzxid).ok() == Some(version) => Ok(Some(stat)),
            Ok(_) => Ok(None),
            Err(e) => Err(self.data_error(node, e)),
        }
    }

    /// Creates the znode as PERSISTENT (missing parents too); `None` if it exists.
    async fn create_persistent(&self, client: &Client, node: &Node, value: &[u8]) -> Result<Option<Stat>, KvError> {
        match self.ensemble.create(client, &node.path, value, CreateMode::Persistent).await? {
            Ok(stat) => Ok(Some(stat)),
            Err(zookeeper_client::Error::NodeExists) => Ok(None),
            Err(e) => Err(self.data_error(node, e)),
        }
    }

    /// Maps an error of an operation on `node`: a path the client refuses
    /// is an invalid key, a znode with children cannot be deleted.
    fn data_error(&self, node: &Node, e: zookeeper_client::Error) -> KvError {
        match e {
            zookeeper_client::Error::BadArguments(why) => {
                KvError::InvalidKey { key: node.key.clone(), reason: format!("not a ZooKeeper path: {why}") }
            }
            zookeeper_client::Error::NotEmpty => KvError::Protocol {
                store: STORE,
                reason: format!("cannot delete {}: ZooKeeper keeps keys below it; delete those first", node.key),
            },
            e => self.ensemble.error(e),
        }
    }
}

/// A znode's `mzxid` as a version (positive for every znode but the root).
fn version_of(stat: &Stat) -> Result<u64, KvError> {
    match u64::try_from(stat.mzxid) {
        Ok(version) if version > 0 => Ok(version),
        _ => Err(KvError::Protocol {
            store: STORE,
            reason: format!("answer without a valid mzxid ({}): a server older than 3.5?", stat.mzxid),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_above_the_bound_are_refused_before_sending() {
        let node = Node::of("/svc/a/").unwrap();
        assert_eq!(node.path, "/svc/a");
        assert!(node.check_size(&vec![0; MAX_VALUE_SIZE]).is_ok());
        match node.check_size(&vec![0; MAX_VALUE_SIZE + 1]) {
            Err(KvError::TooLarge { store, key, size, .. }) => {
                assert_eq!((store, key.as_str(), size), (STORE, "svc/a", MAX_VALUE_SIZE + 1));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
