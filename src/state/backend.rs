//! Where desired-state documents are kept: versioned values under keys,
//! written only with compare-and-swap so that two managers that both
//! believe they are primary (the instant of a failover) cannot overwrite
//! each other's changes unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use swarm_discovery::kv::{join_key, KvConfig, Store};

use super::StateError;

/// A stored value and the backend's version of it (only compared for
/// equality, per key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub value: Vec<u8>,
    pub version: u64,
}

/// A compare-and-swap lost: someone else changed the key first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict;

/// The backends: kept in memory only (lost with the process), in a file
/// that survives restarts (static discovery with `--state-dir`), or in the
/// discovery store (etcd, Consul, ZooKeeper), shared by every manager.
pub enum Backend {
    Memory(Mutex<BTreeMap<String, Stored>>),
    File(FileBackend),
    /// Boxed: a store client is several kilobytes.
    Kv(Box<KvBackend>),
}

/// Keys below `root` in the discovery store, connected on first use (the
/// store may be down when the manager starts).
pub struct KvBackend {
    config: KvConfig,
    /// `<discovery prefix>/docker/swarm/state`.
    root: String,
    /// The connection, made on first use and kept.
    store: tokio::sync::OnceCell<Store>,
}

/// How long one call to the store may take.
const KV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl KvBackend {
    pub fn new(config: KvConfig) -> KvBackend {
        let root = join_key(&config.prefix, "docker/swarm/state");
        KvBackend { config, root, store: tokio::sync::OnceCell::new() }
    }

    async fn store(&self) -> Result<&Store, StateError> {
        self.store.get_or_try_init(|| Store::connect(&self.config, KV_TIMEOUT)).await.map_err(StateError::from)
    }

    fn key(&self, key: &str) -> String {
        join_key(&self.root, key)
    }

    async fn list(&self, dir: &str) -> Result<Vec<(String, Stored)>, StateError> {
        let root = format!("{}/", self.root);
        let listed = self.store().await?.list_versioned(&self.key(dir)).await?;
        Ok(listed
            .into_iter()
            .map(|(key, v)| (key.trim_start_matches(&root).to_string(), Stored { value: v.value, version: v.version }))
            .collect())
    }

    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<Result<u64, Conflict>, StateError> {
        Ok(self.store().await?.put_if(&self.key(key), value, expected).await?.map_err(|_| Conflict))
    }

    async fn delete_if(&self, key: &str, version: u64) -> Result<Result<(), Conflict>, StateError> {
        Ok(self.store().await?.delete_if(&self.key(key), version).await?.map_err(|_| Conflict))
    }
}

impl Backend {
    pub fn memory() -> Backend {
        Backend::Memory(Mutex::new(BTreeMap::new()))
    }

    /// The value at `key`, if any (the collections read whole directories).
    #[cfg(test)]
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, StateError> {
        match self {
            Backend::Memory(map) => Ok(map.lock().get(key).cloned()),
            Backend::File(file) => Ok(file.entries.lock().get(key).cloned()),
            Backend::Kv(_) => unreachable!("the tests use the memory and file backends"),
        }
    }

    /// Every key below `dir/` with its value.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, Stored)>, StateError> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let pick = |map: &BTreeMap<String, Stored>| {
            map.range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        match self {
            Backend::Memory(map) => Ok(pick(&map.lock())),
            Backend::File(file) => Ok(pick(&file.entries.lock())),
            Backend::Kv(kv) => kv.list(dir).await,
        }
    }

    /// Writes `value` at `key` if its version is still `expected` (`None`:
    /// only if absent); returns the new version.
    pub async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<Result<u64, Conflict>, StateError> {
        let swap = |map: &mut BTreeMap<String, Stored>| {
            let current = map.get(key).map(|s| s.version);
            if current != expected {
                return Err(Conflict);
            }
            let version = current.unwrap_or(0) + 1;
            map.insert(key.to_string(), Stored { value: value.to_vec(), version });
            Ok(version)
        };
        match self {
            Backend::Memory(map) => Ok(swap(&mut map.lock())),
            Backend::File(file) => file.change(swap),
            Backend::Kv(kv) => kv.put_if(key, value, expected).await,
        }
    }
}

impl Backend {
    /// Removes `key` if its version is still `version`.
    pub async fn delete_if(&self, key: &str, version: u64) -> Result<Result<(), Conflict>, StateError> {
        let remove = |map: &mut BTreeMap<String, Stored>| {
            if map.get(key).map(|s| s.version) != Some(version) {
                return Err(Conflict);
            }
            map.remove(key);
            Ok(())
        };
        match self {
            Backend::Memory(map) => Ok(remove(&mut map.lock())),
            Backend::File(file) => file.change(remove),
            Backend::Kv(kv) => kv.delete_if(key, version).await,
        }
    }
}

/// Every document in one JSON file, rewritten whole (to a temporary file,
/// then renamed over the old one) on each change, so a crash leaves either
/// the old or the new content.
pub struct FileBackend {
    path: PathBuf,
    /// The file's content; changed only together with a successful rewrite.
    entries: Mutex<BTreeMap<String, Stored>>,
}

/// The file's name under `--state-dir`.
pub const STATE_FILE: &str = "swarm-state.json";

impl FileBackend {
    /// Opens (or starts) the state file in `dir`.
    pub fn open(dir: &Path) -> Result<FileBackend, StateError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StateError::File { path: dir.to_path_buf(), reason: e.to_string() })?;
        let path = dir.join(STATE_FILE);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StateError::File { path: path.clone(), reason: format!("not a state file: {e}") })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(StateError::File { path, reason: e.to_string() }),
        };
        Ok(FileBackend { path, entries: Mutex::new(entries) })
    }

    /// Applies `change` to a copy of the entries and, if it succeeds, writes
    /// the copy out before it becomes the content.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Stored>) -> Result<T, Conflict>,
    ) -> Result<Result<T, Conflict>, StateError> {
        let mut entries = self.entries.lock();
        let mut next = entries.clone();
        let outcome = match change(&mut next) {
            Ok(outcome) => outcome,
            Err(conflict) => return Ok(Err(conflict)),
        };
        let failed = |e: std::io::Error| StateError::File { path: self.path.clone(), reason: e.to_string() };
        let bytes = serde_json::to_vec(&next).map_err(|e| StateError::Encode(e.to_string()))?;
        let aside = self.path.with_extension("json.new");
        std::fs::write(&aside, bytes).map_err(failed)?;
        std::fs::rename(&aside, &self.path).map_err(failed)?;
        *entries = next;
        Ok(Ok(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn contract(backend: &Backend) {
        assert_eq!(backend.get("a/x").await.unwrap(), None);
        let v1 = backend.put_if("a/x", b"one", None).await.unwrap().unwrap();
        assert_eq!(backend.put_if("a/x", b"again", None).await.unwrap(), Err(Conflict), "only if absent");
        let v2 = backend.put_if("a/x", b"two", Some(v1)).await.unwrap().unwrap();
        assert_ne!(v1, v2);
        assert_eq!(backend.put_if("a/x", b"stale", Some(v1)).await.unwrap(), Err(Conflict));
        assert_eq!(backend.get("a/x").await.unwrap().map(|s| s.value), Some(b"two".to_vec()));
        backend.put_if("a/y", b"", None).await.unwrap().unwrap();
        backend.put_if("ab/z", b"elsewhere", None).await.unwrap().unwrap();
        let listed: Vec<String> = backend.list("a").await.unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(listed, ["a/x", "a/y"]);
        assert_eq!(backend.delete_if("a/y", 99).await.unwrap(), Err(Conflict));
        let version = backend.get("a/y").await.unwrap().map(|s| s.version).unwrap();
        assert_eq!(backend.delete_if("a/y", version).await.unwrap(), Ok(()));
        assert_eq!(backend.get("a/y").await.unwrap(), None);
    }

    #[tokio::test]
    async fn memory_and_file_backends_keep_the_same_contract() {
        contract(&Backend::memory()).await;
        let dir = tempfile::tempdir().unwrap();
        contract(&Backend::File(FileBackend::open(dir.path()).unwrap())).await;
        // The file outlives the backend.
        let reopened = Backend::File(FileBackend::open(dir.path()).unwrap());
        assert_eq!(reopened.get("a/x").await.unwrap().map(|s| s.value), Some(b"two".to_vec()));
        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join(STATE_FILE), "not json").unwrap();
        assert!(matches!(FileBackend::open(bad.path()), Err(StateError::File { .. })));
    }
}
