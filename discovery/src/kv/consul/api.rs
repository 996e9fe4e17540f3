//! The Consul calls and answers that registrations and locks share: KV
//! reads (plain or as blocking queries), sessions and key acquisition.

use std::fmt::Write as _;
use std::time::Duration;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::{Method, StatusCode};
use rand::Rng;
use serde::Deserialize;
use tokio::time::Instant;

use super::transport::{bad_answer, snippet, Reply, Transport};
use super::STORE;
use crate::kv::KvError;

/// Consul caps the `wait` of a blocking query at 10 minutes.
const MAX_BLOCKING_WAIT: Duration = Duration::from_secs(600);
/// Below this much time left, a wait reads once instead of blocking.
pub(super) const MIN_BLOCKING_WAIT: Duration = Duration::from_millis(5);
/// Shortest time between two blocking rounds that saw no change, so a store
/// that keeps answering at once (index trouble) is not hammered.
pub(super) const MIN_ROUND: Duration = Duration::from_millis(20);

/// Standard base64 as Go encodes `[]byte` in JSON, accepted with or
/// without `=` padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One KV entry as Consul returns it (other fields are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RawEntry {
    pub(super) key: String,
    /// Base64; `null` for an empty value.
    pub(super) value: Option<String>,
    /// The session holding the key, if any.
    pub(super) session: Option<String>,
    /// The index of the key's last write: its version. Missing (0) only in
    /// answers that carry no entry state.
    #[serde(default)]
    pub(super) modify_index: u64,
}

#[derive(Deserialize)]
struct SessionCreated {
    #[serde(rename = "ID")]
    id: String,
}

/// A blocking query: Consul answers once the index of what is read moves
/// past `index`, or after `wait` (plus up to `wait / 16` of its own jitter).
#[derive(Debug, Clone, Copy)]
pub(super) struct Blocking {
    /// Never 0: Consul treats index 0 as "do not block".
    pub(super) index: u64,
    pub(super) wait: Duration,
}

impl Blocking {
    /// Blocks on `index` (not 0) for most of `remaining`, see [`blocking_wait`].
    pub(super) fn on(index: u64, remaining: Duration) -> Blocking {
        Blocking { index, wait: blocking_wait(remaining, rand::thread_rng().gen::<f64>()) }
    }
}

impl Transport {
    /// Polls `/v1/status/leader` until it names a leader (the caller bounds the time).
    pub(super) async fn wait_for_leader(&self) -> Result<(), KvError> {
        loop {
            let reply = self.call(Method::GET, "/v1/status/leader", None, None).await?;
            if reply.status != StatusCode::OK {
                return Err(self.unreachable(format!(
                    "GET /v1/status/leader answered HTTP {}: is this a Consul agent? {}",
                    reply.status,
                    snippet(&reply.body)
                )));
            }
            let leader: String = serde_json::from_slice(&reply.body).map_err(|_| {
                self.unreachable(format!(
                    "GET /v1/status/leader answered {}: is this a Consul agent?",
                    snippet(&reply.body)
                ))
            })?;
            if !leader.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GETs the KV entries at `path` (a `/v1/kv/...` path, with or without
    /// a query), as a blocking query if `block` is given. Returns the
    /// `X-Consul-Index` (0 if missing) and the entries, `None` when Consul
    /// has none there (404). `what` names the read in errors.
    pub(super) async fn read_entries(
        &self,
        path: &str,
        block: Option<Blocking>,
        what: &str,
    ) -> Result<(u64, Option<Vec<RawEntry>>), KvError> {
        let mut path = path.to_string();
        let mut timeout = self.timeout();
        if let Some(Blocking { index, wait }) = block {
            let separator = if path.contains('?') { '&' } else { '?' };
            // `wait=0` would mean Consul's default of 5 minutes.
            let wait_param = go_duration(wait.max(Duration::from_millis(1)));
            let _ = write!(path, "{separator}index={index}&wait={wait_param}");
            // Consul may add up to wait/16 of jitter of its own.
            timeout += wait + wait / 16;
        }
        let reply = self.call(Method::GET, &path, None, Some(timeout)).await?;
        let index = reply.index.unwrap_or(0);
        match reply.status {
            StatusCode::NOT_FOUND => Ok((index, None)),
            StatusCode::OK => {
                let raw: Vec<RawEntry> = serde_json::from_slice(&reply.body).map_err(|e| KvError::Protocol {
                    store: STORE,
                    reason: format!("{what}: unexpected answer ({e}): {}", snippet(&reply.body)),
                })?;
                Ok((index, Some(raw)))
            }
            _ => Err(bad_answer(what, &reply)),
        }
    }

    pub(super) async fn get_key(&self, key: &str) -> Result<Option<RawEntry>, KvError> {
        Ok(self.read_key(key, None).await?.1)
    }

    /// Reads one key, as a blocking query if `block` is given; returns the
    /// `X-Consul-Index` (0 if missing) and the entry if present.
    pub(super) async fn read_key(
        &self,
        key: &str,
        block: Option<Blocking>,
    ) -> Result<(u64, Option<RawEntry>), KvError> {
        let path = format!("/v1/kv/{}", encode_key(key));
        let (index, entries) = self.read_entries(&path, block, &format!("reading {key}")).await?;
        Ok((index, entries.and_then(|raw| raw.into_iter().find(|e| e.key == key))))
    }

    pub(super) async fn destroy_session(&self, session: &str) -> Result<(), KvError> {
        let reply = self.call(Method::PUT, &format!("/v1/session/destroy/{session}"), None, None).await?;
        if reply.status != StatusCode::OK {
            return Err(bad_answer("destroying the session", &reply));
        }
        Ok(())
    }

    /// `PUT ?acquire=`: writes the value and locks the key to `session`.
    /// False if another session holds the key.
    pub(super) async fn acquire(&self, key: &str, session: &str, value: &[u8]) -> Result<bool, KvError> {
        let path = format!("/v1/kv/{}?acquire={session}", encode_key(key));
        let reply = self.call(Method::PUT, &path, Some(value), None).await?;
        if reply.status != StatusCode::OK {
            return Err(bad_answer(&format!("writing {key}"), &reply));
        }
        serde_json::from_slice::<bool>(&reply.body).map_err(|_| bad_answer(&format!("writing {key}"), &reply))
    }
}

/// The ID in the answer to `/v1/session/create`.
pub(super) fn session_id(reply: &Reply) -> Result<String, KvError> {
    let created: SessionCreated = serde_json::from_slice(&reply.body).map_err(|e| KvError::Protocol {
        store: STORE,
        reason: format!("creating a session: unexpected answer ({e}): {}", snippet(&reply.body)),
    })?;
    if created.id.is_empty() {
        return Err(bad_answer("creating a session (empty ID)", reply));
    }
    Ok(created.id)
}

/// The decoded value of an entry (`null` is empty).
pub(super) fn entry_value(entry: &RawEntry) -> Result<Vec<u8>, KvError> {
    match entry.value.as_deref() {
        None => Ok(Vec::new()),
        Some(encoded) => BASE64.decode(encoded).map_err(|e| KvError::Protocol {
            store: STORE,
            reason: format!("the value of {} is not valid base64: {e}", entry.key),
        }),
    }
}

/// A value as Consul takes it in JSON (`/v1/txn`): standard base64.
pub(super) fn encode_value(value: &[u8]) -> String {
    BASE64.encode(value)
}

/// Percent-encodes a key for the URL path (`/` stays a separator; Consul
/// gets the decoded path).
pub(super) fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':' | b'@') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A duration as Consul reads it (Go's `time.ParseDuration`): whole
/// milliseconds, e.g. `10500ms`, the finest precision Consul acts on.
pub(super) fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The `wait` to ask for when `remaining` is left: Consul adds up to 1/16
/// of jitter itself, so ask for 16/17 of it, capped at Consul's 10 minutes,
/// and take off up to another 1/16 at random (`jitter` in [0, 1)) so many
/// watchers do not all come back at the same moment.
fn blocking_wait(remaining: Duration, jitter: f64) -> Duration {
    let base = (remaining * 16 / 17).min(MAX_BLOCKING_WAIT);
    base.saturating_sub(base.mul_f64(jitter.clamp(0.0, 1.0) / 16.0))
}

/// The index to block on next, after a query on `sent` (0: a plain read)
/// answered `got`. Consul's rules: an index that goes backwards means the
/// store was reset (restore, new cluster), so start over with a plain read
/// (0); and never block on 0, which Consul treats as "do not block" (use 1
/// instead).
pub(super) fn next_index(sent: u64, got: u64) -> u64 {
    if got < sent {
        0
    } else {
        got.max(1)
    }
}

/// After a blocking round that started at `round` and saw no change,
/// sleeps out the rest of [`MIN_ROUND`] (never past `deadline`), so a
/// store that keeps answering at once is not hammered.
pub(super) async fn pace(round: Instant, deadline: Instant) {
    let spent = round.elapsed();
    if spent < MIN_ROUND {
        tokio::time::sleep((MIN_ROUND - spent).min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(value: &str) -> RawEntry {
        RawEntry { key: "k".into(), value: Some(value.into()), session: None, modify_index: 0 }
    }

    #[test]
    fn decodes_values_as_go_encodes_them() {
        let null = RawEntry { key: "k".into(), value: None, session: None, modify_index: 0 };
        assert_eq!(entry_value(&null), Ok(Vec::new()));
        assert_eq!(entry_value(&raw("")), Ok(Vec::new()));
        assert_eq!(entry_value(&raw("aGk=")), Ok(b"hi".to_vec()));
        assert_eq!(entry_value(&raw("aGk")), Ok(b"hi".to_vec()));
        assert_eq!(entry_value(&raw("MTAuMC4wLjE6MjM3NQ==")), Ok(b"10.0.0.1:2375".to_vec()));
        assert_eq!(entry_value(&raw("/+8=")), Ok(vec![0xff, 0xef]));
        assert_eq!(entry_value(&raw(&encode_value(&[0xff, 0, 0xef]))), Ok(vec![0xff, 0, 0xef]));
        for bad in ["a", "aG!k", "aGk==="] {
            assert!(matches!(entry_value(&raw(bad)), Err(KvError::Protocol { .. })), "{bad}");
        }
    }

    #[test]
    fn index_resets() {
        assert_eq!(next_index(0, 42), 42); // plain read
        assert_eq!(next_index(42, 42), 42); // wait ran out
        assert_eq!(next_index(42, 50), 50); // change
        assert_eq!(next_index(42, 7), 0); // went backwards: read afresh
        assert_eq!(next_index(42, 0), 0); // missing/zero after blocking: read afresh
        assert_eq!(next_index(0, 0), 1); // zero on a plain read: block on 1, never 0
    }

    #[test]
    fn blocking_wait_stays_within_the_remaining_time() {
        let remaining = Duration::from_secs(17);
        assert_eq!(blocking_wait(remaining, 0.0), Duration::from_secs(16));
        let jittered = blocking_wait(remaining, 0.999);
        assert!(jittered >= Duration::from_secs(15) && jittered < Duration::from_secs(16));
        // With Consul's own jitter of up to 1/16 on top, still within `remaining`.
        for r in [0.0, 0.5, 0.999] {
            let w = blocking_wait(remaining, r);
            assert!(w + w / 16 <= remaining);
        }
        assert_eq!(blocking_wait(Duration::from_secs(3600), 0.0), MAX_BLOCKING_WAIT);
        assert_eq!(blocking_wait(Duration::ZERO, 0.5), Duration::ZERO);
    }

    #[test]
    fn formats_go_durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10000ms");
        assert_eq!(go_duration(Duration::from_millis(10_500)), "10500ms");
        assert_eq!(go_duration(Duration::from_micros(100_900)), "100ms");
    }

    #[test]
    fn encodes_keys_for_the_path() {
        assert_eq!(encode_key("docker/swarm/nodes/10.0.0.1:2375"), "docker/swarm/nodes/10.0.0.1:2375");
        assert_eq!(encode_key("n/[::1]:2375"), "n/%5B::1%5D:2375");
        assert_eq!(encode_key("a b?c#d%"), "a%20b%3Fc%23d%25");
    }
}

#[cfg(test)]
pub(super) mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// JSON values with Consul's key names at any depth, of any type.
    pub(in crate::kv::consul) fn consul_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[A-Za-z0-9+/=%:/\\\\]{0,12}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        let key = prop_oneof![
            Just("Key"),
            Just("Value"),
            Just("Session"),
            Just("ModifyIndex"),
            Just("ID"),
            Just("Results"),
            Just("Errors"),
            Just("KV"),
            Just("OpIndex"),
            Just("What"),
            Just("other"),
        ];
        leaf.prop_recursive(3, 32, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key.clone().prop_map(str::to_string), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever a KV read answers decodes into entries or fails, and
        /// every decoded entry's value decodes or fails.
        #[test]
        fn kv_answers_never_panic(body in prop::collection::vec(any::<u8>(), 0..64), value in consul_json()) {
            let shaped = serde_json::to_vec(&value).unwrap_or_default();
            for bytes in [&body, &shaped] {
                if let Ok(entries) = serde_json::from_slice::<Vec<RawEntry>>(bytes) {
                    for entry in &entries {
                        let _ = entry_value(entry);
                    }
                }
                let reply = Reply { status: StatusCode::OK, index: None, body: bytes::Bytes::from(bytes.clone()) };
                if let Ok(id) = session_id(&reply) {
                    prop_assert!(!id.is_empty());
                }
                prop_assert!(snippet(bytes).chars().count() <= 203);
            }
        }

        /// Values round-trip through the base64 Consul uses.
        #[test]
        fn values_round_trip(value in prop::collection::vec(any::<u8>(), 0..64)) {
            let entry = RawEntry { key: "k".into(), value: Some(encode_value(&value)), session: None, modify_index: 1 };
            prop_assert_eq!(entry_value(&entry), Ok(value));
        }

        /// Any base64-ish text decodes or is a protocol error.
        #[test]
        fn any_value_text_never_panics(text in "[A-Za-z0-9+/=_-]{0,40}|.{0,20}") {
            let entry = RawEntry { key: "k".into(), value: Some(text), session: None, modify_index: 1 };
            let _ = entry_value(&entry);
        }

        /// A blocking index is never 0 unless the store went back.
        #[test]
        fn next_index_never_blocks_on_zero(sent in any::<u64>(), got in any::<u64>()) {
            let next = next_index(sent, got);
            prop_assert!(next > 0 || got < sent);
        }
    }
}
