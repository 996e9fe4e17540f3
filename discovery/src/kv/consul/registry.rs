//! Registrations (keys held by a session) and directory listing and
//! watching with blocking queries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::time::Instant;

use super::api::{
    encode_key, entry_value, go_duration, next_index, pace, session_id, Blocking, RawEntry, MIN_BLOCKING_WAIT,
};
use super::transport::{bad_answer, Transport};
use super::{ConsulStore, STORE};
use crate::kv::{same_entries, KvError, KvPair, Versioned};

/// Consul's default `session_ttl_min`; lower session TTLs are rejected.
const MIN_SESSION_TTL: Duration = Duration::from_secs(10);
/// Consul's fixed maximum session TTL (24 h).
const MAX_SESSION_TTL: Duration = Duration::from_secs(86_400);

/// A key held by a Consul session (see the `consul` module docs for the TTL mapping).
pub struct ConsulRegistration {
    transport: Arc<Transport>,
    /// Without slashes at the ends; never empty.
    key: String,
    value: Vec<u8>,
    /// The session meant to hold the key; replaced when it has ended.
    session: String,
    /// Half the registration's TTL, within Consul's bounds (see [`session_ttl`]).
    session_ttl: Duration,
}

impl std::fmt::Debug for ConsulRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulRegistration")
            .field("key", &self.key)
            .field("session", &self.session)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

/// Per directory: the `X-Consul-Index` of the last read and what it
/// returned, so consecutive `wait_dir` calls block from where the last one
/// left off instead of re-reading first.
#[derive(Debug, Default)]
pub(super) struct DirCache(Mutex<HashMap<String, DirState>>);

#[derive(Debug, Clone)]
struct DirState {
    /// Index to block on; 0 means "read without blocking first".
    index: u64,
    /// The entries that read returned, sorted by key.
    entries: Vec<KvPair>,
}

impl DirCache {
    /// Index to block on for `dir` if the last read showed `known`, else 0.
    fn index_if_showing(&self, dir: &str, known: &[KvPair]) -> u64 {
        let dirs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match dirs.get(dir) {
            Some(state) if same_entries(&state.entries, known) => state.index,
            _ => 0,
        }
    }

    /// Remembers the outcome of a read of `dir`. A failure forgets the
    /// directory: the store may come back with a different history (e.g.
    /// restarted empty), and an old index could then block past real changes.
    fn remember(&self, dir: &str, read: &Result<DirState, KvError>) {
        let mut dirs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok(state) => dirs.insert(dir.to_string(), state.clone()),
            Err(_) => dirs.remove(dir),
        };
    }
}

impl ConsulStore {
    /// The entries directly below `dir`.
    pub async fn list(&self, dir: &str) -> Result<Vec<KvPair>, KvError> {
        let dir = dir.trim_matches('/');
        Ok(self.read_dir(dir, None).await?.entries)
    }

    /// Waits with blocking queries until the content of `dir` differs from
    /// `known` or `until` has passed, then returns the current entries.
    pub async fn wait_dir(&self, dir: &str, known: &[KvPair], until: Instant) -> Result<Vec<KvPair>, KvError> {
        let dir = dir.trim_matches('/');
        loop {
            let round = Instant::now();
            let remaining = until.saturating_duration_since(round);
            // Block only if our last read showed exactly `known`: otherwise the
            // caller is behind (or we have no index yet) and a plain read
            // tells whether the content already differs.
            let index = self.dirs.index_if_showing(dir, known);
            let block = (index > 0 && remaining >= MIN_BLOCKING_WAIT).then(|| Blocking::on(index, remaining));
            let state = self.read_dir(dir, block).await?;
            if !same_entries(&state.entries, known) || Instant::now() + MIN_BLOCKING_WAIT >= until {
                return Ok(state.entries);
            }
            // Nothing changed for us (the index moves on for deeper keys, or
            // Consul's wait ran out): go on blocking, but never spin.
            if block.is_some() {
                pace(round, until).await;
            }
        }
    }

    /// Writes `key = value` held by a new session (see the `consul` module docs for
    /// how `ttl` maps to the session TTL and its minimum of 20 s).
    ///
    /// If the key is still held by another session (typically a previous
    /// run of the same engine whose session has not expired yet), the
    /// registration is returned anyway with a warning: the old holder keeps
    /// the key visible until it expires, and [`ConsulRegistration::refresh`]
    /// takes the key over once it is free.
    pub async fn register(&self, key: &str, value: &[u8], ttl: Duration) -> Result<ConsulRegistration, KvError> {
        let session_ttl = session_ttl(ttl)?;
        let key = key.trim_matches('/').to_string();
        if key.is_empty() {
            return Err(KvError::Protocol { store: STORE, reason: "cannot register an empty key".into() });
        }
        let transport = self.transport.clone();
        let session = create_session(&transport, &key, session_ttl).await?;
        let registration = ConsulRegistration { transport, key, value: value.to_vec(), session, session_ttl };
        match registration.transport.acquire(&registration.key, &registration.session, value).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                key = %registration.key,
                "consul: the key is still held by another session (an earlier registration?); \
                 it will be taken over at a refresh once that session ends"
            ),
            Err(e) => {
                // Do not leave a useless session behind (it would expire anyway).
                let _ = registration.transport.destroy_session(&registration.session).await;
                return Err(e);
            }
        }
        Ok(registration)
    }

    /// The entries directly below `dir` with their `ModifyIndex`es, sorted
    /// by key; a plain read (no blocking, not remembered for `wait_dir`).
    pub async fn list_versioned(&self, dir: &str) -> Result<Vec<(String, Versioned)>, KvError> {
        let dir = dir.trim_matches('/');
        let (_, raw) = self.transport.read_entries(&dir_path(dir), None, &format!("listing {dir}")).await?;
        children_versioned(dir, raw.unwrap_or_default())
    }

    /// Reads the direct children of `dir` (blocking on `block` if given)
    /// and remembers the answer for the next `wait_dir`.
    async fn read_dir(&self, dir: &str, block: Option<Blocking>) -> Result<DirState, KvError> {
        let read = match self.transport.read_entries(&dir_path(dir), block, &format!("listing {dir}")).await {
            Ok((index, raw)) => children(dir, raw.unwrap_or_default())
                .map(|entries| DirState { index: next_index(block.map_or(0, |b| b.index), index), entries }),
            Err(e) => Err(e),
        };
        self.dirs.remember(dir, &read);
        read
    }
}

impl ConsulRegistration {
    /// Renews the session. If it is gone (expired, or the store came back
    /// empty) a new one is created; in every case the key is written again
    /// if it is not ours any more. Errors if another session holds the key.
    pub async fn refresh(&mut self) -> Result<(), KvError> {
        let path = format!("/v1/session/renew/{}", self.session);
        let reply = self.transport.call(Method::PUT, &path, None, None).await?;
        match reply.status {
            StatusCode::OK => {
                // The session lives, but the key may have been deleted by
                // someone, or never been ours (held by an older session).
                let current = self.transport.get_key(&self.key).await?;
                let ours = current.as_ref().is_some_and(|e| {
                    e.session.as_deref() == Some(self.session.as_str())
                        && entry_value(e).is_ok_and(|value| value == self.value)
                });
                if !ours {
                    self.take_key().await?;
                }
                Ok(())
            }
            StatusCode::NOT_FOUND => {
                tracing::info!(key = %self.key, "consul: session gone, registering again");
                self.session = create_session(&self.transport, &self.key, self.session_ttl).await?;
                self.take_key().await
            }
            _ => Err(bad_answer("renewing the session", &reply)),
        }
    }

    /// Destroys the session (which deletes the key at once, Behavior=delete)
    /// and deletes the key too, in case it was not held by this session.
    pub async fn deregister(self) -> Result<(), KvError> {
        self.transport.destroy_session(&self.session).await?;
        let path = format!("/v1/kv/{}", encode_key(&self.key));
        let reply = self.transport.call(Method::DELETE, &path, None, None).await?;
        if reply.status != StatusCode::OK {
            return Err(bad_answer("deleting the key", &reply));
        }
        Ok(())
    }

    async fn take_key(&self) -> Result<(), KvError> {
        if self.transport.acquire(&self.key, &self.session, &self.value).await? {
            return Ok(());
        }
        let holder = match self.transport.get_key(&self.key).await {
            Ok(Some(entry)) => entry.session.unwrap_or_else(|| "none".into()),
            _ => "unknown".into(),
        };
        Err(KvError::Protocol {
            store: STORE,
            reason: format!(
                "key {} is held by another session ({holder}); it will be taken over once that session ends",
                self.key
            ),
        })
    }
}

/// The recursive read of everything below `dir` (trimmed of slashes).
fn dir_path(dir: &str) -> String {
    if dir.is_empty() {
        "/v1/kv/?recurse".to_string()
    } else {
        format!("/v1/kv/{}/?recurse", encode_key(dir))
    }
}

/// Creates a session that deletes its keys when it ends; LockDelay 0 so
/// a re-registration after expiry can take the key at once.
async fn create_session(transport: &Transport, key: &str, ttl: Duration) -> Result<String, KvError> {
    let body = serde_json::json!({
        "Name": format!("swarm {key}"),
        "TTL": go_duration(ttl),
        "Behavior": "delete",
        "LockDelay": "0s",
    })
    .to_string();
    let reply = transport.call(Method::PUT, "/v1/session/create", Some(body.as_bytes()), None).await?;
    if reply.status != StatusCode::OK {
        let text = String::from_utf8_lossy(&reply.body);
        if text.contains("Session TTL") {
            // A cluster configured with a higher session_ttl_min.
            return Err(KvError::InvalidTtl(format!("Consul refused session TTL {ttl:?}: {}", text.trim())));
        }
        return Err(bad_answer("creating a session", &reply));
    }
    session_id(&reply)
}

/// The session TTL for a registration TTL: half of it (see the `consul` module
/// docs), within Consul's bounds of 10 s to 24 h.
fn session_ttl(ttl: Duration) -> Result<Duration, KvError> {
    let session = ttl / 2;
    if session < MIN_SESSION_TTL {
        return Err(KvError::InvalidTtl(format!(
            "TTL {ttl:?} is too short for Consul: the minimum is {:?} (the session TTL is half the TTL, \
             because Consul may take up to twice the session TTL to expire it, and Consul refuses \
             session TTLs under {MIN_SESSION_TTL:?})",
            MIN_SESSION_TTL * 2,
        )));
    }
    if session > MAX_SESSION_TTL {
        return Err(KvError::InvalidTtl(format!(
            "TTL {ttl:?} is too long for Consul: the maximum is {:?} (twice Consul's longest session TTL of 24h)",
            MAX_SESSION_TTL * 2,
        )));
    }
    Ok(session)
}

/// The entries directly below `dir`: `dir/child`, not `dir/` itself nor
/// `dir/child/deeper`. Values are base64-decoded; sorted by key.
fn children(dir: &str, raw: Vec<RawEntry>) -> Result<Vec<KvPair>, KvError> {
    Ok(children_versioned(dir, raw)?.into_iter().map(|(key, v)| KvPair { key, value: v.value }).collect())
}

/// [`children`] with each entry's `ModifyIndex` as its version.
pub(super) fn children_versioned(dir: &str, raw: Vec<RawEntry>) -> Result<Vec<(String, Versioned)>, KvError> {
    let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    let mut out = Vec::new();
    for entry in raw {
        let Some(child) = entry.key.strip_prefix(&prefix) else { continue };
        if child.is_empty() || child.contains('/') {
            continue;
        }
        let value = entry_value(&entry)?;
        out.push((entry.key, Versioned { value, version: entry.modify_index }));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(key: &str, value: Option<&str>) -> RawEntry {
        RawEntry { key: key.into(), value: value.map(Into::into), session: None, modify_index: 0 }
    }

    #[test]
    fn keeps_direct_children_only() {
        let entries = children(
            "docker/swarm/nodes",
            vec![
                raw("docker/swarm/nodes/", None),
                raw("docker/swarm/nodes/b:2375", Some("Yg==")),
                raw("docker/swarm/nodes/a:2375", None),
                raw("docker/swarm/nodes/a:2375/deeper", Some("eA==")),
                raw("docker/swarm/nodesX", Some("eA==")),
                raw("elsewhere/key", Some("eA==")),
            ],
        )
        .expect("valid entries");
        assert_eq!(
            entries,
            vec![
                KvPair { key: "docker/swarm/nodes/a:2375".into(), value: vec![] },
                KvPair { key: "docker/swarm/nodes/b:2375".into(), value: b"b".to_vec() },
            ]
        );
        let top = children("", vec![raw("a", None), raw("a/b", None)]).expect("valid entries");
        assert_eq!(top, vec![KvPair { key: "a".into(), value: vec![] }]);
        assert!(matches!(children("d", vec![raw("d/x", Some("%%"))]), Err(KvError::Protocol { .. })));
    }

    #[test]
    fn maps_ttl_to_half_with_consul_bounds() {
        assert_eq!(session_ttl(Duration::from_secs(180)), Ok(Duration::from_secs(90)));
        assert_eq!(session_ttl(Duration::from_secs(20)), Ok(Duration::from_secs(10)));
        assert_eq!(session_ttl(Duration::from_secs(21)), Ok(Duration::from_millis(10_500)));
        match session_ttl(Duration::from_millis(19_999)) {
            Err(KvError::InvalidTtl(msg)) => assert!(msg.contains("minimum is 20s"), "{msg}"),
            other => panic!("expected InvalidTtl, got {other:?}"),
        }
        assert!(matches!(session_ttl(Duration::from_secs(10)), Err(KvError::InvalidTtl(_))));
        assert!(matches!(session_ttl(Duration::from_secs(172_801)), Err(KvError::InvalidTtl(_))));
        assert_eq!(session_ttl(Duration::from_secs(172_800)), Ok(MAX_SESSION_TTL));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any entries give the sorted direct children of the directory, or
        /// a protocol error for a value that is not base64.
        #[test]
        fn children_are_direct_and_sorted(
            dir in "[ab/]{0,4}",
            raw in prop::collection::vec(("[ab/]{0,6}", prop::option::of("[A-Za-z0-9+/=%]{0,8}"), any::<u64>()), 0..8),
        ) {
            let dir = dir.trim_matches('/').to_string();
            let raw: Vec<RawEntry> = raw
                .into_iter()
                .map(|(key, value, modify_index)| RawEntry { key, value, session: None, modify_index })
                .collect();
            if let Ok(children) = children_versioned(&dir, raw) {
                let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
                for (key, _) in &children {
                    let child = key.strip_prefix(&prefix);
                    prop_assert!(child.is_some_and(|c| !c.is_empty() && !c.contains('/')), "{}", key);
                }
                prop_assert!(children.windows(2).all(|w| w[0].0 <= w[1].0));
            }
        }
    }
}
