//! Persistent keys on Consul: reads of `/v1/kv`, writes as transactions
//! (`PUT /v1/txn`).
//!
//! * A key's version is its `ModifyIndex`, the Raft index of its last write.
//!   Consul (1.x) skips a write that would leave the entry as it is (same
//!   value, flags and session): the `ModifyIndex` stays, and the answer
//!   carries it, so writing the same value twice gives the same version.
//! * Writes go through `/v1/txn` rather than `PUT /v1/kv/<key>?cas=`
//!   because only a transaction's answer carries the written entry, hence
//!   its new `ModifyIndex`; a read after the write could see someone else's
//!   later write instead. A transaction is applied whole or not at all; a
//!   rolled-back one answers 409 with the reason of each failed operation,
//!   and the reasons that mean "the key is not as expected" ([`CONFLICTS`])
//!   are a [`Conflict`], any other one an error.
//! * `cas` with index 0 means "only if absent" to Consul, so `put_if(None)`
//!   is `cas` 0 and `put_if(Some(0))` conflicts without asking. `delete-cas`
//!   succeeds on a missing key, so a conditional delete is `check-index`
//!   (which fails on a missing key) then `delete`; a plain delete is `get`
//!   (which fails on a missing key: "did not exist") then `delete`.
//! * The body of a transaction is bounded by `txn_max_req_len` (512 KiB by
//!   default), and the value travels in base64: values up to about 380 KiB.
//!   Consul answers a bigger body with 413, which becomes
//!   [`KvError::TooLarge`].
//! * The transport tries the next endpoint when one gives no answer; a write
//!   that reached the first one anyway then answers a [`Conflict`] (for a
//!   conditional write) though it happened: after a conflict or an error,
//!   read the key again.

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{encode_value, entry_value, RawEntry};
use super::transport::{bad_answer, snippet, Transport};
use super::{ConsulStore, STORE};
use crate::kv::{data_key, Conflict, KvError, Versioned};

/// What Consul 1.x answers for a transaction operation that failed because
/// the key is not as expected: a `cas` on a changed key (`failed to set key
/// "k", index is stale`), a `check-index` or `get` on a missing one (`key
/// "k" doesn't exist`), a `check-index` on a changed one (`current modify
/// index 13 != 5`).
const CONFLICTS: [&str; 3] = ["index is stale", "doesn't exist", "current modify index"];

/// The answer to `/v1/txn` (other fields are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnReply {
    /// One per operation that returns an entry (`set`, `cas`, `get`), in order.
    #[serde(default)]
    results: Option<Vec<TxnResult>>,
    #[serde(default)]
    errors: Option<Vec<TxnOpError>>,
}

#[derive(Debug, Deserialize)]
struct TxnResult {
    #[serde(rename = "KV")]
    kv: Option<RawEntry>,
}

/// Why one operation of a rolled-back transaction failed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnOpError {
    #[serde(default)]
    op_index: usize,
    what: String,
}

/// How a transaction ended.
#[derive(Debug)]
enum Outcome {
    /// Applied: the entries the operations returned.
    Applied(Vec<RawEntry>),
    /// Rolled back because the key was not as expected.
    Conflict,
}

impl ConsulStore {
    /// The value of `key` and its `ModifyIndex`; `None` if absent.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, KvError> {
        let key = data_key(key)?;
        match self.transport.get_key(key).await? {
            Some(entry) => Ok(Some(Versioned { value: entry_value(&entry)?, version: index_of(&entry)? })),
            None => Ok(None),
        }
    }

    /// Writes `key = value` (no session); returns its new `ModifyIndex`.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<u64, KvError> {
        let key = data_key(key)?;
        let op = json!({"KV": {"Verb": "set", "Key": key, "Value": encode_value(value)}});
        match self.transport.txn(key, value.len(), &[op]).await? {
            Outcome::Applied(entries) => written_index(key, &entries),
            Outcome::Conflict => Err(KvError::Protocol { store: STORE, reason: format!("writing {key} was refused") }),
        }
    }

    /// Writes `key = value` if its `ModifyIndex` is `expected` (absent with
    /// `None`): one `cas` operation.
    pub async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<Result<u64, Conflict>, KvError> {
        let key = data_key(key)?;
        let conflict = || Conflict { key: key.to_string(), expected };
        // Index 0 would mean "only if absent" to Consul.
        if expected == Some(0) {
            return Ok(Err(conflict()));
        }
        let index = expected.unwrap_or(0);
        let op = json!({"KV": {"Verb": "cas", "Key": key, "Value": encode_value(value), "Index": index}});
        match self.transport.txn(key, value.len(), &[op]).await? {
            Outcome::Applied(entries) => Ok(Ok(written_index(key, &entries)?)),
            Outcome::Conflict => Ok(Err(conflict())),
        }
    }

    /// Deletes `key` (not the keys below it); `false` if it was absent.
    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let key = data_key(key)?;
        // `get` fails the transaction on a missing key, which is how we know
        // it was absent; Consul's plain DELETE answers `true` either way.
        let ops = [json!({"KV": {"Verb": "get", "Key": key}}), json!({"KV": {"Verb": "delete", "Key": key}})];
        Ok(matches!(self.transport.txn(key, 0, &ops).await?, Outcome::Applied(_)))
    }

    /// Deletes `key` if its `ModifyIndex` is `version`.
    pub async fn delete_if(&self, key: &str, version: u64) -> Result<Result<(), Conflict>, KvError> {
        let key = data_key(key)?;
        let ops = [
            json!({"KV": {"Verb": "check-index", "Key": key, "Index": version}}),
            json!({"KV": {"Verb": "delete", "Key": key}}),
        ];
        match self.transport.txn(key, 0, &ops).await? {
            Outcome::Applied(_) => Ok(Ok(())),
            Outcome::Conflict => Ok(Err(Conflict { key: key.to_string(), expected: Some(version) })),
        }
    }
}

impl Transport {
    /// Runs the transaction `ops` on `key` (whose value has `size` bytes,
    /// for a [`KvError::TooLarge`]).
    async fn txn(&self, key: &str, size: usize, ops: &[Value]) -> Result<Outcome, KvError> {
        let body = serde_json::to_vec(ops)
            .map_err(|e| KvError::Protocol { store: STORE, reason: format!("encoding a transaction: {e}") })?;
        let what = format!("writing {key}");
        let reply = self.call(Method::PUT, "/v1/txn", Some(&body), None).await?;
        let parse = || {
            serde_json::from_slice::<TxnReply>(&reply.body).map_err(|e| KvError::Protocol {
                store: STORE,
                reason: format!("{what}: unexpected answer ({e}): {}", snippet(&reply.body)),
            })
        };
        match reply.status {
            StatusCode::OK => {
                let results = parse()?.results.unwrap_or_default();
                Ok(Outcome::Applied(results.into_iter().filter_map(|r| r.kv).collect()))
            }
            StatusCode::CONFLICT => {
                let errors = parse()?.errors.unwrap_or_default();
                if !errors.is_empty() && errors.iter().all(|e| is_conflict(&e.what)) {
                    return Ok(Outcome::Conflict);
                }
                let reasons: Vec<String> =
                    errors.iter().map(|e| format!("operation {}: {}", e.op_index, e.what)).collect();
                Err(KvError::Protocol { store: STORE, reason: format!("{what}: rolled back: {}", reasons.join("; ")) })
            }
            StatusCode::PAYLOAD_TOO_LARGE => Err(KvError::TooLarge {
                store: STORE,
                key: key.to_string(),
                size,
                reason: format!(
                    "{} (a write's body carries the value in base64, 4/3 of its size)",
                    snippet(&reply.body)
                ),
            }),
            _ => Err(bad_answer(&what, &reply)),
        }
    }
}

/// True for a failed operation's reason that means "not as expected".
fn is_conflict(what: &str) -> bool {
    CONFLICTS.iter().any(|c| what.contains(c))
}

/// The `ModifyIndex` of the entry a `set` or `cas` on `key` returned.
fn written_index(key: &str, entries: &[RawEntry]) -> Result<u64, KvError> {
    match entries.iter().find(|e| e.key == key) {
        Some(entry) => index_of(entry),
        None => Err(KvError::Protocol { store: STORE, reason: format!("writing {key}: the answer has no entry") }),
    }
}

/// An entry's `ModifyIndex`, which Consul keeps positive.
fn index_of(entry: &RawEntry) -> Result<u64, KvError> {
    match entry.modify_index {
        0 => Err(KvError::Protocol { store: STORE, reason: format!("{}: an entry without a ModifyIndex", entry.key) }),
        index => Ok(index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_told_from_other_failures() {
        for what in [
            "failed to set key \"a/b\", index is stale",
            "failed to check index, key \"a/c\" doesn't exist",
            "failed index check for key \"a/b\", current modify index 13 != 5",
            "key \"a/c\" doesn't exist",
        ] {
            assert!(is_conflict(what), "{what}");
        }
        assert!(!is_conflict("Permission denied"));
    }

    #[test]
    fn reads_transaction_answers() {
        let applied = br#"{"Results":[{"KV":{"LockIndex":0,"Key":"a/b","Flags":0,"Value":null,"CreateIndex":13,"ModifyIndex":13}}],"Errors":null}"#;
        let reply: TxnReply = serde_json::from_slice(applied).unwrap();
        let entries: Vec<RawEntry> = reply.results.unwrap().into_iter().filter_map(|r| r.kv).collect();
        assert_eq!(written_index("a/b", &entries), Ok(13));
        assert!(matches!(written_index("a/c", &entries), Err(KvError::Protocol { .. })));

        let rolled_back =
            br#"{"Results":null,"Errors":[{"OpIndex":0,"What":"failed to set key \"a/b\", index is stale"}]}"#;
        let reply: TxnReply = serde_json::from_slice(rolled_back).unwrap();
        assert!(reply.results.is_none());
        assert_eq!(reply.errors.unwrap()[0].op_index, 0);
    }
}

#[cfg(test)]
mod proptests {
    use super::super::api::proptests::consul_json;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a transaction answers decodes or fails; a decoded
        /// answer gives an index or a protocol error.
        #[test]
        fn txn_answers_never_panic(body in prop::collection::vec(any::<u8>(), 0..64), value in consul_json()) {
            let shaped = serde_json::to_vec(&value).unwrap_or_default();
            for bytes in [&body, &shaped] {
                let Ok(reply) = serde_json::from_slice::<TxnReply>(bytes) else { continue };
                let entries: Vec<RawEntry> = reply.results.unwrap_or_default().into_iter().filter_map(|r| r.kv).collect();
                if let Ok(index) = written_index("k", &entries) {
                    prop_assert!(index > 0);
                }
                for error in reply.errors.unwrap_or_default() {
                    let _ = is_conflict(&error.what);
                }
            }
        }
    }
}
