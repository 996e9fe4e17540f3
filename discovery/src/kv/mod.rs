//! Key-value store discovery: Consul, etcd and ZooKeeper behind one small
//! interface. Engines register under `<prefix>/<path>/<addr>` (path
//! `docker/swarm/nodes` unless `--discovery-opt kv.path=` says otherwise)
//! with their address as value, kept alive by a TTL: a Consul session, an
//! etcd lease, a ZooKeeper ephemeral node.
//!
//! The same stores also keep persistent documents (services' desired
//! state): [`Store::get`], [`Store::put`], the compare-and-swap
//! [`Store::put_if`] and [`Store::delete_if`], [`Store::delete`] and
//! [`Store::list_versioned`]. See [`Versioned`] for what a version is, and
//! each backend's `data` module for how it maps to the store.
//!
//! ## Keys
//!
//! A key is `a/b/c`: slashes at its ends are ignored, an empty key is
//! [`KvError::InvalidKey`]. etcd and Consul keys are flat (a "directory" is
//! a key prefix); ZooKeeper keys are znodes, so putting `a/b/c` creates `a`
//! and `a/b` as persistent znodes with empty values if missing, which then
//! are keys of their own: `get("a")` finds an empty value and a listing of
//! `a` shows `a/b` (on etcd and Consul it shows neither). ZooKeeper also
//! refuses to delete a key that has keys below it.
//!
//! ## Value sizes
//!
//! Each store bounds a value, with its servers' default settings:
//!
//! * ZooKeeper: a request must fit in `jute.maxbuffer` (1 MiB − 1 byte),
//!   and the server answers a bigger one by closing the connection, so the
//!   client refuses values above [`zk::MAX_VALUE_SIZE`] (900 KiB) itself.
//! * Consul: writes go through `/v1/txn`, whose body (the value in base64,
//!   4/3 of its size, plus JSON) is bounded by `txn_max_req_len`, 512 KiB:
//!   values up to about 380 KiB.
//! * etcd: a request is bounded by `--max-request-bytes`, 1.5 MiB.
//!
//! A value over the store's bound is [`KvError::TooLarge`]; values up to
//! 256 KiB fit everywhere.

pub mod consul;
mod errors;
pub mod etcd;
pub mod zk;

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use crate::entry::Entry;

/// Which store a KV URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Consul,
    Etcd,
    Zk,
}

impl Kind {
    pub fn scheme(self) -> &'static str {
        match self {
            Kind::Consul => "consul",
            Kind::Etcd => "etcd",
            Kind::Zk => "zk",
        }
    }
}

/// Client certificate files for TLS to the store (`kv.cacertfile`,
/// `kv.certfile`, `kv.keyfile`); all three or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The contents of the [`TlsFiles`], each checked to be PEM.
pub(crate) struct TlsPem {
    pub(crate) ca: Vec<u8>,
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

/// What each file is, as errors name it: the option as well as the path,
/// since the user wrote the option.
pub(crate) const CA_FILE: &str = "CA certificate (kv.cacertfile)";
pub(crate) const CERT_FILE: &str = "client certificate (kv.certfile)";
pub(crate) const KEY_FILE: &str = "client key (kv.keyfile)";

impl TlsFiles {
    /// Reads the three files, naming the one that is unreadable or not PEM.
    pub(crate) fn read(&self) -> Result<TlsPem, KvError> {
        Ok(TlsPem {
            ca: read_pem(CA_FILE, &self.ca)?,
            cert: read_pem(CERT_FILE, &self.cert)?,
            key: read_pem(KEY_FILE, &self.key)?,
        })
    }
}

/// Reads one PEM file of the TLS setup, naming it in errors.
fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, KvError> {
    let data =
        std::fs::read(path).map_err(|e| KvError::Tls(format!("cannot read the {what} {}: {e}", path.display())))?;
    if !data.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(KvError::Tls(format!("the {what} {} is not a PEM file", path.display())));
    }
    Ok(data)
}

/// Where the store is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvConfig {
    pub kind: Kind,
    /// `host:port` of each store member; never empty.
    pub endpoints: Vec<String>,
    /// Key prefix from the URL path, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// Directory of engine registrations below the prefix (default `docker/swarm/nodes`).
    pub path: String,
    pub tls: Option<TlsFiles>,
}

impl KvConfig {
    /// The directory engines register in: `<prefix>/<path>`, without slashes at the ends.
    pub fn nodes_dir(&self) -> String {
        join_key(&self.prefix, &self.path)
    }
}

/// `a/b` from `a` and `b`, tolerating empty parts and stray slashes.
pub fn join_key(a: &str, b: &str) -> String {
    [a, b].iter().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()).collect::<Vec<_>>().join("/")
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    /// Full key, without leading `/`.
    pub key: String,
    pub value: Vec<u8>,
}

/// A value and the store's marker of its last modification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    /// Consul's `ModifyIndex`, etcd's `mod_revision`, ZooKeeper's `mzxid`
    /// (the transaction ID of the znode's last change, not its `version`
    /// counter, which restarts at 0 when a znode is deleted and created
    /// again). Each is a position in the store's whole history, so a later
    /// write of the same key has a greater version, a key deleted and
    /// written again never gets an old version back, and 0 is never a
    /// version. One exception: Consul skips a write that changes nothing,
    /// so writing the value a key already holds may keep its version there
    /// (etcd and ZooKeeper make a new one); a version still names one
    /// value. Versions are only meaningful for the key they were read
    /// from, on the store they were read from: they say nothing across
    /// backends, and nothing across a store that lost its data (a Consul
    /// `-dev` agent restarted, a restored backup), whose history starts over.
    pub version: u64,
}

/// A conditional write ([`Store::put_if`]) or delete ([`Store::delete_if`])
/// found the key not as expected; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{key} {}", describe_expected(*.expected))]
pub struct Conflict {
    /// The key, as given (without slashes at the ends).
    pub key: String,
    /// What the caller expected: the version, or `None` for "absent".
    pub expected: Option<u64>,
}

fn describe_expected(expected: Option<u64>) -> String {
    match expected {
        Some(version) => format!("is not at version {version}"),
        None => "exists already".into(),
    }
}

/// A key for the persistent operations: without slashes at its ends, and
/// not empty (the root is no key).
pub(crate) fn data_key(key: &str) -> Result<&str, KvError> {
    let trimmed = key.trim_matches('/');
    if trimmed.is_empty() {
        return Err(KvError::InvalidKey { key: key.to_string(), reason: "a key cannot be empty".into() });
    }
    Ok(trimmed)
}

/// The engine addresses registered in a store directory, sorted and
/// without repeats: each value is an address (the key's last part stands in
/// for an empty value); pairs that are not an address are skipped.
pub(crate) fn engines(pairs: &[KvPair]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = pairs
        .iter()
        .filter_map(|p| {
            let value = String::from_utf8_lossy(&p.value).trim().to_string();
            let text = if value.is_empty() { p.key.rsplit('/').next().unwrap_or_default().to_string() } else { value };
            Entry::parse(&text).ok()
        })
        .collect();
    entries.sort();
    entries.dedup();
    entries
}

/// What can go wrong talking to a store.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The store could not be reached (connection refused, timeout, DNS).
    #[error("cannot reach {store} at {endpoints}: {reason}")]
    Unreachable { store: &'static str, endpoints: String, reason: String },
    /// TLS material is missing or invalid.
    #[error("TLS to the store: {0}")]
    Tls(String),
    /// The store answered something unexpected.
    #[error("{store}: {reason}")]
    Protocol { store: &'static str, reason: String },
    /// A TTL the store cannot honour (e.g. Consul sessions below 10 s).
    #[error("{0}")]
    InvalidTtl(String),
    /// A key no store takes (empty), or this store does not (e.g. a
    /// ZooKeeper path with `//`).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// A value bigger than the store takes (see the module docs); nothing
    /// was written.
    #[error("{store}: the value of {key} ({size} bytes) is too large: {reason}")]
    TooLarge { store: &'static str, key: String, size: usize, reason: String },
}

/// A connected store.
pub enum Store {
    Consul(consul::ConsulStore),
    /// Boxed: an etcd client is several kilobytes.
    Etcd(Box<etcd::EtcdStore>),
    Zk(zk::ZkStore),
}

/// Calls the same method on whichever backend a [`Store`], [`Lock`] or
/// [`Registration`] holds: `forward!(Store, self, s => s.list(dir).await)`.
macro_rules! forward {
    ($enum:ident, $value:expr, $backend:ident => $call:expr) => {
        match $value {
            $enum::Consul($backend) => $call,
            $enum::Etcd($backend) => $call,
            $enum::Zk($backend) => $call,
        }
    };
}

/// `Debug` for [`Store`] and [`Lock`]: the enum's name and the scheme of the
/// backend it holds, e.g. `Store("etcd")`; the clients inside say nothing useful.
macro_rules! debug_as_scheme {
    ($enum:ident) => {
        impl std::fmt::Debug for $enum {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let kind = match self {
                    $enum::Consul(_) => Kind::Consul,
                    $enum::Etcd(_) => Kind::Etcd,
                    $enum::Zk(_) => Kind::Zk,
                };
                f.debug_tuple(stringify!($enum)).field(&kind.scheme()).finish()
            }
        }
    };
}

debug_as_scheme!(Store);

impl Store {
    /// Connects and checks that the store answers within `timeout`, so a
    /// wrong address fails fast with a clear message.
    pub async fn connect(config: &KvConfig, timeout: Duration) -> Result<Store, KvError> {
        Ok(match config.kind {
            Kind::Consul => Store::Consul(consul::ConsulStore::connect(config, timeout).await?),
            Kind::Etcd => Store::Etcd(Box::new(etcd::EtcdStore::connect(config, timeout).await?)),
            Kind::Zk => Store::Zk(zk::ZkStore::connect(config, timeout).await?),
        })
    }

    /// The entries directly below `dir` (an empty or missing directory is empty).
    pub async fn list(&self, dir: &str) -> Result<Vec<KvPair>, KvError> {
        forward!(Store, self, s => s.list(dir).await)
    }

    /// Waits until the content of `dir` differs from `known` (or until
    /// `max_wait`), then returns the current entries. With `known = None`
    /// it returns at once. Uses the store's native change notification
    /// (Consul blocking query, etcd watch, ZooKeeper child watch).
    pub async fn wait_dir(
        &self,
        dir: &str,
        known: Option<&[KvPair]>,
        max_wait: Duration,
    ) -> Result<Vec<KvPair>, KvError> {
        match known {
            None => self.list(dir).await,
            Some(known) => forward!(Store, self, s => s.wait_dir(dir, known, Instant::now() + max_wait).await),
        }
    }

    /// Writes `key = value` so that it disappears when not refreshed
    /// within `ttl` (Consul session, etcd lease, ZooKeeper ephemeral node).
    pub async fn register(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Registration, KvError> {
        Ok(match self {
            Store::Consul(s) => Registration::Consul(s.register(key, value, ttl).await?),
            Store::Etcd(s) => Registration::Etcd(Box::new(s.register(key, value, ttl).await?)),
            Store::Zk(s) => Registration::Zk(s.register(key, value, ttl).await?),
        })
    }

    /// Takes the lock at `key` with `value` if it is free (`None` if someone
    /// holds it). Without renewal the store frees it within `ttl`: Consul
    /// through a TTL health check bound to the lock's session, etcd through
    /// a lease, ZooKeeper through the session of an ephemeral node.
    pub async fn try_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<Lock>, KvError> {
        Ok(match self {
            Store::Consul(s) => s.try_lock(key, value, ttl).await?.map(Lock::Consul),
            Store::Etcd(s) => s.try_lock(key, value, ttl).await?.map(|l| Lock::Etcd(Box::new(l))),
            Store::Zk(s) => s.try_lock(key, value, ttl).await?.map(Lock::Zk),
        })
    }

    /// The value of the lock's holder (`None` when free); waits up to
    /// `max_wait` for it to differ from `known`, returning at once if it
    /// already differs.
    pub async fn wait_holder(
        &self,
        key: &str,
        known: Option<&str>,
        max_wait: Duration,
    ) -> Result<Option<String>, KvError> {
        forward!(Store, self, s => s.wait_holder(key, known, Instant::now() + max_wait).await)
    }

    /// The value of `key` and its version; `None` if the key does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, KvError> {
        forward!(Store, self, s => s.get(key).await)
    }

    /// Writes `key = value` for good (no TTL), creating or replacing it;
    /// returns the key's new version. On ZooKeeper, missing parents are
    /// created (see the module docs).
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<u64, KvError> {
        forward!(Store, self, s => s.put(key, value).await)
    }

    /// Compare-and-swap: writes `key = value` only if the key is at version
    /// `expected`, or with `expected = None` only if it does not exist.
    /// Returns the new version, or [`Conflict`] (and nothing written) when
    /// the key is not as expected. `Some(0)` always conflicts: 0 is never a
    /// version.
    ///
    /// After an [`KvError::Unreachable`] the write may or may not have
    /// happened; read the key again to know.
    pub async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<Result<u64, Conflict>, KvError> {
        forward!(Store, self, s => s.put_if(key, value, expected).await)
    }

    /// Deletes `key`; `false` if it did not exist. Only that key: keys
    /// below it stay (ZooKeeper refuses to delete a key that has keys below
    /// it, see the module docs).
    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        forward!(Store, self, s => s.delete(key).await)
    }

    /// Compare-and-delete: deletes `key` only if it is at `version`;
    /// [`Conflict`] (and nothing deleted) when it is not, or does not exist.
    pub async fn delete_if(&self, key: &str, version: u64) -> Result<Result<(), Conflict>, KvError> {
        forward!(Store, self, s => s.delete_if(key, version).await)
    }

    /// The keys directly below `dir` with their values and versions, sorted
    /// by key (an empty or missing directory is empty): [`Store::list`]
    /// with versions.
    pub async fn list_versioned(&self, dir: &str) -> Result<Vec<(String, Versioned)>, KvError> {
        forward!(Store, self, s => s.list_versioned(dir).await)
    }

    /// Ends the lock at `key` if its value is `holder` (destroys the Consul
    /// session, revokes the etcd lease, deletes the ZooKeeper node); `false`
    /// when someone else holds it or it is free.
    pub async fn break_lock(&self, key: &str, holder: &str) -> Result<bool, KvError> {
        forward!(Store, self, s => s.break_lock(key, holder).await)
    }
}

/// True if both hold the same keys with the same values, in any order.
fn same_entries(a: &[KvPair], b: &[KvPair]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    fn sorted(x: &[KvPair]) -> Vec<(&str, &[u8])> {
        let mut v: Vec<(&str, &[u8])> = x.iter().map(|p| (p.key.as_str(), p.value.as_slice())).collect();
        v.sort();
        v
    }
    sorted(a) == sorted(b)
}

/// A held lock.
pub enum Lock {
    Consul(consul::ConsulLock),
    /// Boxed: it holds an etcd client.
    Etcd(Box<etcd::EtcdLock>),
    Zk(zk::ZkLock),
}

debug_as_scheme!(Lock);

/// Why renewing a lock failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LockLoss {
    /// The store says the lock is no longer ours.
    #[error("{0}")]
    Lost(String),
    /// The store could not be asked.
    #[error(transparent)]
    Store(#[from] KvError),
}

impl Lock {
    /// Proves to the store that the holder is alive, and that the lock is
    /// still ours.
    pub async fn renew(&mut self) -> Result<(), LockLoss> {
        forward!(Lock, self, l => l.renew().await)
    }

    /// Frees the lock at once.
    pub async fn release(self) -> Result<(), KvError> {
        forward!(Lock, self, l => l.release().await)
    }
}

/// A key kept alive by its holder.
pub enum Registration {
    Consul(consul::ConsulRegistration),
    /// Boxed: it holds an etcd client.
    Etcd(Box<etcd::EtcdRegistration>),
    Zk(zk::ZkRegistration),
}

impl Registration {
    /// Renews the TTL; re-creates the key if it expired meanwhile.
    pub async fn refresh(&mut self) -> Result<(), KvError> {
        forward!(Registration, self, r => r.refresh().await)
    }

    /// Removes the key at once.
    pub async fn deregister(self) -> Result<(), KvError> {
        forward!(Registration, self, r => r.deregister().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_keys() {
        assert_eq!(join_key("swarm", "docker/swarm/nodes"), "swarm/docker/swarm/nodes");
        assert_eq!(join_key("", "/docker/swarm/nodes/"), "docker/swarm/nodes");
        assert_eq!(join_key("/a/", ""), "a");
    }

    #[test]
    fn engines_come_from_values_or_keys() {
        let pairs = [
            KvPair { key: "d/10.0.0.2:2375".into(), value: b"10.0.0.2:2375".to_vec() },
            KvPair { key: "d/10.0.0.1:2375".into(), value: Vec::new() },
            KvPair { key: "d/junk".into(), value: b"not an address".to_vec() },
        ];
        let shown: Vec<String> = engines(&pairs).iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.1:2375", "10.0.0.2:2375"]);
    }

    #[test]
    fn data_keys_lose_their_slashes_and_are_not_empty() {
        assert_eq!(data_key("/svc/a/"), Ok("svc/a"));
        assert_eq!(data_key("svc"), Ok("svc"));
        for empty in ["", "/", "//"] {
            assert!(matches!(data_key(empty), Err(KvError::InvalidKey { .. })), "{empty:?}");
        }
    }

    #[test]
    fn conflicts_say_what_was_expected() {
        let stale = Conflict { key: "svc/a".into(), expected: Some(7) };
        assert_eq!(stale.to_string(), "svc/a is not at version 7");
        let exists = Conflict { key: "svc/a".into(), expected: None };
        assert_eq!(exists.to_string(), "svc/a exists already");
    }

    #[test]
    fn compares_entries_as_sets() {
        let pair = |key: &str, value: &str| KvPair { key: key.into(), value: value.as_bytes().to_vec() };
        let a = [pair("d/a", "1"), pair("d/b", "2")];
        let b = [pair("d/b", "2"), pair("d/a", "1")];
        assert!(same_entries(&a, &b));
        assert!(!same_entries(&a, &[pair("d/a", "1")]));
        assert!(!same_entries(&a, &[pair("d/a", "1"), pair("d/b", "3")]));
        assert!(same_entries(&[], &[]));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a store holds under the nodes directory (any bytes as
        /// values, any keys), the engines are valid, sorted and unique.
        #[test]
        fn engines_from_any_pairs(
            pairs in prop::collection::vec(
                (
                    "[a-z0-9.:/\\[\\]]{0,16}|.{0,8}",
                    prop_oneof![
                        prop::collection::vec(any::<u8>(), 0..16),
                        "[a-z0-9.:\\[\\] ]{0,16}".prop_map(String::into_bytes),
                    ],
                ),
                0..8,
            ),
        ) {
            let pairs: Vec<KvPair> = pairs.into_iter().map(|(key, value)| KvPair { key, value }).collect();
            let found = engines(&pairs);
            prop_assert!(found.windows(2).all(|w| w[0] < w[1]));
            for entry in &found {
                let again = Entry::parse(&entry.to_string());
                prop_assert_eq!(again.as_ref(), Ok(entry));
            }
        }

        #[test]
        fn data_keys_of_any_text(key in ".{0,12}") {
            if let Ok(trimmed) = data_key(&key) {
                prop_assert!(!trimmed.is_empty() && !trimmed.starts_with('/') && !trimmed.ends_with('/'));
            }
        }
    }
}
