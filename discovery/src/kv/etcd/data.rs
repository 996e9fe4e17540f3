//! Persistent keys on etcd: plain puts without a lease, and the
//! compare-and-swap operations as transactions on the key's
//! `mod_revision`.
//!
//! * A key's version is its `mod_revision`: the store revision of its last
//!   write. A write's own revision is the response header's revision (etcd
//!   makes one revision per write or transaction), so [`EtcdStore::put`]
//!   and [`EtcdStore::put_if`] know the new version without a read.
//! * "Absent" is `create_revision == 0`, as for the leader lock. Comparing
//!   `mod_revision == 0` would mean the same to etcd, which is why
//!   `put_if(Some(0))` must not reach the store: it conflicts at once.
//! * A request bigger than `--max-request-bytes` (1.5 MiB by default) is
//!   refused with "etcdserver: request is too large", and one bigger than
//!   that plus 512 KiB already by gRPC ("received message larger than
//!   max"): both become [`KvError::TooLarge`].
//! * Reads accept answers of up to `MAX_READ` (64 MiB), not the client's
//!   default of 4 MiB.

use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};

use super::{dir_prefix, direct_children, EtcdStore, STORE};
use crate::kv::{data_key, Conflict, KvError, Versioned};

impl EtcdStore {
    fn kv(&self) -> KvClient {
        self.conn.kv()
    }

    /// The value of `key` and its `mod_revision`; `None` if absent.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, KvError> {
        let key = data_key(key)?;
        let resp = self.conn.call(self.kv().get(key, None)).await?;
        resp.kvs().first().map(|kv| versioned(kv.value(), kv.mod_revision())).transpose()
    }

    /// Writes `key = value` without a lease; returns its new `mod_revision`.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<u64, KvError> {
        let key = data_key(key)?;
        let resp = self.conn.call(self.kv().put(key, value, None)).await.map_err(|e| too_large(e, key, value))?;
        revision(resp.header().map(|h| h.revision()))
    }

    /// Writes `key = value` if its `mod_revision` is `expected` (absent with
    /// `None`), in one transaction.
    pub async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<Result<u64, Conflict>, KvError> {
        let key = data_key(key)?;
        let Some(compare) = compare_with(key, expected) else {
            return Ok(Err(Conflict { key: key.to_string(), expected }));
        };
        let txn = Txn::new().when([compare]).and_then([TxnOp::put(key, value, None)]);
        let resp = self.conn.call(self.kv().txn(txn)).await.map_err(|e| too_large(e, key, value))?;
        if !resp.succeeded() {
            return Ok(Err(Conflict { key: key.to_string(), expected }));
        }
        Ok(Ok(revision(resp.header().map(|h| h.revision()))?))
    }

    /// Deletes `key` (not the keys below it); `false` if it was absent.
    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let key = data_key(key)?;
        Ok(self.conn.call(self.kv().delete(key, None)).await?.deleted() > 0)
    }

    /// Deletes `key` if its `mod_revision` is `version`, in one transaction.
    pub async fn delete_if(&self, key: &str, version: u64) -> Result<Result<(), Conflict>, KvError> {
        let key = data_key(key)?;
        let conflict = || Conflict { key: key.to_string(), expected: Some(version) };
        let Some(compare) = compare_with(key, Some(version)) else {
            return Ok(Err(conflict()));
        };
        let txn = Txn::new().when([compare]).and_then([TxnOp::delete(key, None)]);
        let resp = self.conn.call(self.kv().txn(txn)).await?;
        Ok(if resp.succeeded() { Ok(()) } else { Err(conflict()) })
    }

    /// The keys directly below `dir` with values and `mod_revision`s, sorted by key.
    pub async fn list_versioned(&self, dir: &str) -> Result<Vec<(String, Versioned)>, KvError> {
        let prefix = dir_prefix(dir);
        let resp = self.conn.call(self.kv().get(prefix.as_bytes(), Some(GetOptions::new().with_prefix()))).await?;
        let children = direct_children(&prefix, resp.kvs().iter().map(|kv| (kv.key(), kv)));
        children.into_iter().map(|(key, kv)| Ok((key, versioned(kv.value(), kv.mod_revision())?))).collect()
    }
}

/// The transaction's condition for "`key` is at `expected`" (absent with
/// `None`); `None` when no key can be at it (0, or beyond etcd's i64
/// revisions), so the caller answers a conflict without asking.
fn compare_with(key: &str, expected: Option<u64>) -> Option<Compare> {
    match expected {
        None => Some(Compare::create_revision(key, CompareOp::Equal, 0)),
        Some(0) => None,
        Some(version) => {
            let version = i64::try_from(version).ok()?;
            Some(Compare::mod_revision(key, CompareOp::Equal, version))
        }
    }
}

/// A stored value with its `mod_revision`, which etcd keeps positive.
fn versioned(value: &[u8], mod_revision: i64) -> Result<Versioned, KvError> {
    Ok(Versioned { value: value.to_vec(), version: revision(Some(mod_revision))? })
}

/// A revision from an answer as a version: present and positive.
fn revision(revision: Option<i64>) -> Result<u64, KvError> {
    match revision.map(u64::try_from) {
        Some(Ok(revision)) if revision > 0 => Ok(revision),
        other => Err(KvError::Protocol { store: STORE, reason: format!("answer without a valid revision: {other:?}") }),
    }
}

/// What etcd answers to an oversized request: its own check, or gRPC's
/// (whose limit is 512 KiB above etcd's).
const TOO_LARGE: [&str; 2] = ["request is too large", "received message larger than max"];

/// etcd's refusal of an oversized request as [`KvError::TooLarge`]; other
/// errors unchanged.
fn too_large(error: KvError, key: &str, value: &[u8]) -> KvError {
    match error {
        KvError::Protocol { reason, .. } if TOO_LARGE.iter().any(|t| reason.contains(t)) => KvError::TooLarge {
            store: STORE,
            key: key.to_string(),
            size: value.len(),
            reason: format!("{reason} (the server's --max-request-bytes, 1.5 MiB by default, bounds a write)"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_is_at_version_zero() {
        assert!(compare_with("k", Some(0)).is_none());
        assert!(compare_with("k", Some(u64::MAX)).is_none());
        assert!(compare_with("k", Some(7)).is_some());
        assert!(compare_with("k", None).is_some());
    }

    #[test]
    fn revisions_are_positive() {
        assert_eq!(revision(Some(42)), Ok(42));
        for bad in [None, Some(0), Some(-1)] {
            assert!(matches!(revision(bad), Err(KvError::Protocol { .. })), "{bad:?}");
        }
    }

    #[test]
    fn oversized_requests_are_too_large() {
        let refused =
            KvError::Protocol { store: STORE, reason: "etcdserver: request is too large (InvalidArgument)".into() };
        assert!(matches!(too_large(refused, "k", b"v"), KvError::TooLarge { size: 1, .. }));
        let by_grpc = KvError::Protocol {
            store: STORE,
            reason: "grpc: received message larger than max (2097167 vs. 2097152) (ResourceExhausted)".into(),
        };
        assert!(matches!(too_large(by_grpc, "k", b"v"), KvError::TooLarge { .. }));
        let other = KvError::Protocol { store: STORE, reason: "something else".into() };
        assert!(matches!(too_large(other, "k", b"v"), KvError::Protocol { .. }));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any revision an answer carries is a positive version or a protocol error.
        #[test]
        fn revisions_from_any_answer(answer in any::<Option<i64>>()) {
            match revision(answer) {
                Ok(version) => prop_assert!(version > 0 && answer == i64::try_from(version).ok()),
                Err(e) => prop_assert!(matches!(e, KvError::Protocol { .. }), "{:?}", e),
            }
        }
    }
}
