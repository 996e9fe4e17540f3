//! The leader lock: a key acquired by a session bound to a TTL health
//! check of the agent (see [`ConsulStore::try_lock`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use rand::Rng;
use serde::Deserialize;
use tokio::time::Instant;

use super::api::{entry_value, go_duration, next_index, pace, session_id, Blocking, MIN_BLOCKING_WAIT, MIN_ROUND};
use super::transport::{bad_answer, Transport};
use super::{ConsulStore, STORE};
use crate::kv::{KvError, LockLoss};

/// Shortest lock TTL. Consul takes any positive TTL for a check; far below a
/// second, the renewals (a few per TTL) would have to outrun the round trips
/// to the agent.
const MIN_LOCK_TTL: Duration = Duration::from_millis(100);
/// Every lock health check's ID starts with this, so dead ones can be found.
const LOCK_CHECK_PREFIX: &str = "swarm-leader-";
/// How long `try_lock` retries a session whose check the servers do not know
/// yet (a client agent may pass a new check on to them just after answering).
const CHECK_SYNC_WAIT: Duration = Duration::from_secs(2);

/// A held leader lock: the key is acquired by a session bound to a TTL health
/// check of the agent (see [`ConsulStore::try_lock`]).
pub struct ConsulLock {
    transport: Arc<Transport>,
    /// The endpoint (index) of the agent the check is registered with: the
    /// agent API is local to an agent, so the check is passed there only.
    agent: usize,
    /// Without slashes at the ends; never empty.
    key: String,
    /// The session holding the key; bound to `check` and the node's health.
    session: String,
    /// ID of the lock's TTL health check on `agent` (`swarm-leader-<random>`).
    check: String,
}

impl std::fmt::Debug for ConsulLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulLock")
            .field("key", &self.key)
            .field("agent", &self.transport.endpoint(self.agent))
            .field("session", &self.session)
            .field("check", &self.check)
            .finish()
    }
}

/// One check of `/v1/agent/checks` (other fields are ignored).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentCheck {
    status: String,
    #[serde(default)]
    notes: String,
}

/// One session of `/v1/session/info` (other fields are ignored).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionInfo {
    #[serde(default)]
    checks: Option<Vec<String>>,
}

impl ConsulStore {
    /// Takes the lock at `key` with `value` if it is free; `None` if another
    /// session holds it.
    ///
    /// Consul sessions cannot expire fast enough for a failover in seconds
    /// (10 s minimum TTL, and up to twice that before Consul acts), so the
    /// lock's session has no TTL of its own. It is bound instead to a TTL
    /// health check registered with the agent (`swarm-leader-<random>`, TTL
    /// `ttl`) and to the node's `serfHealth`: when the holder stops passing
    /// the check, the check turns critical exactly `ttl` after the last pass
    /// and Consul invalidates the session at once (measured with 1.8: the key
    /// disappears within a few ms of the TTL). The session has `LockDelay 0`,
    /// so another candidate can take the lock the moment it is free, and
    /// `Behavior=delete`, so a free lock is simply an absent key (no stale
    /// holder address left behind for `wait_holder` to filter out).
    ///
    /// One Consul delay remains: an agent pushes check changes to the
    /// servers at once, except during the random stagger (up to 3 s, longer
    /// in clusters over 128 nodes) it waits before a full anti-entropy sync
    /// after a Consul server joins (e.g. just after the agent starts). A
    /// check expiring then ends its session only after the stagger: the lock
    /// is freed later, never earlier.
    ///
    /// Any TTL of at least 100 ms is accepted (Consul takes any positive
    /// check TTL). If the key is held, nothing is left behind: the session is
    /// destroyed and the check deregistered before returning `None`. (If this
    /// future is dropped half-way, its check expires after `ttl`, which ends
    /// its session; the critical check is removed by the next `try_lock` that
    /// wins through the same agent.)
    pub async fn try_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<ConsulLock>, KvError> {
        if ttl < MIN_LOCK_TTL {
            return Err(KvError::InvalidTtl(format!("lock TTL {ttl:?} is too short: the minimum is {MIN_LOCK_TTL:?}")));
        }
        let key = lock_key(key)?;
        // A cheap look first, so candidates waiting for a held lock cause no
        // check and session churn in the cluster.
        if self.transport.get_key(&key).await?.is_some_and(|e| e.session.is_some()) {
            return Ok(None);
        }
        let check = format!("{LOCK_CHECK_PREFIX}{:016x}", rand::thread_rng().gen::<u64>());
        let body = serde_json::json!({
            "ID": check,
            "Name": format!("swarm leader {value}"),
            "Notes": lock_check_notes(&key),
            "TTL": go_duration(ttl),
            "Status": "passing",
        })
        .to_string();
        let (agent, reply) =
            self.transport.call_any(Method::PUT, "/v1/agent/check/register", Some(body.as_bytes()), None).await?;
        if reply.status != StatusCode::OK {
            return Err(bad_answer("registering the lock's health check", &reply));
        }
        let session = match self.transport.create_lock_session(agent, &key, value, &check).await {
            Ok(session) => session,
            Err(e) => {
                let _ = self.transport.deregister_check(agent, &check).await;
                return Err(e);
            }
        };
        let lock = ConsulLock { transport: self.transport.clone(), agent, key, session, check };
        match lock.transport.acquire(&lock.key, &lock.session, value.as_bytes()).await {
            Ok(true) => {
                // Checks of earlier holders that died stay on their agent,
                // critical, for ever: remove those of this agent.
                let (transport, notes, keep) =
                    (lock.transport.clone(), lock_check_notes(&lock.key), lock.check.clone());
                tokio::spawn(async move { transport.sweep_dead_checks(agent, &notes, &keep).await });
                Ok(Some(lock))
            }
            Ok(false) => {
                let key = lock.key.clone();
                if let Err(e) = lock.release().await {
                    // The check expires after `ttl` anyway, ending the session.
                    tracing::warn!(%key, "consul: cannot clean up after losing the race for the lock: {e}");
                }
                Ok(None)
            }
            Err(e) => {
                // The write may have gone through: destroying the session frees the key.
                let _ = lock.release().await;
                Err(e)
            }
        }
    }

    /// The value of the lock's holder, `None` when the key is absent or held
    /// by no session. Returns at once if that differs from `known`, else
    /// waits for a change with blocking queries on the key (woken within
    /// milliseconds by a release or an expiry), at most until `until`.
    pub async fn wait_holder(&self, key: &str, known: Option<&str>, until: Instant) -> Result<Option<String>, KvError> {
        let key = lock_key(key)?;
        let (got, mut holder) = self.transport.read_holder(&key, None).await?;
        let mut index = next_index(0, got);
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            if holder.as_deref() != known || remaining < MIN_BLOCKING_WAIT {
                return Ok(holder);
            }
            let round = Instant::now();
            let block = (index > 0).then(|| Blocking::on(index, remaining));
            let (got, now) = self.transport.read_holder(&key, block).await?;
            index = next_index(block.map_or(0, |b| b.index), got);
            holder = now;
            // Unchanged for us (Consul's wait ran out, or the index moved for
            // another reason): block again, but never spin.
            if holder.as_deref() == known {
                pace(round, until).await;
            }
        }
    }

    /// Ends the lock at `key` if its value is `holder` and a session holds
    /// it, by destroying that session (the key goes with it, at once);
    /// `false` if it is free or held with another value.
    ///
    /// The holder's health check is deregistered too when it lives on the
    /// agent this store talks to (elsewhere that is a no-op; such a check
    /// turns critical after its TTL and is removed by the next lock taken
    /// through its agent).
    pub async fn break_lock(&self, key: &str, holder: &str) -> Result<bool, KvError> {
        let key = lock_key(key)?;
        let Some(entry) = self.transport.get_key(&key).await? else { return Ok(false) };
        let Some(session) = entry.session.as_deref() else { return Ok(false) };
        if entry_value(&entry)? != holder.as_bytes() {
            return Ok(false);
        }
        // Before the destroy, which forgets the session.
        let checks = self.transport.session_checks(session).await.unwrap_or_default();
        self.transport.destroy_session(session).await?;
        for check in checks.iter().filter(|c| c.starts_with(LOCK_CHECK_PREFIX)) {
            let path = format!("/v1/agent/check/deregister/{check}");
            if let Err(e) = self.transport.call(Method::PUT, &path, None, None).await {
                tracing::debug!(%check, "consul: cannot deregister the check of a broken lock: {e}");
            }
        }
        tracing::debug!(%key, %holder, %session, "consul: broke the lock");
        Ok(true)
    }
}

impl ConsulLock {
    /// Passes the lock's health check on its agent, then checks that the key
    /// is still held by this lock's session. `Lost` if the check or the key
    /// is gone (the check expired, the lock was broken, the agent restarted
    /// empty), `Store` if Consul cannot be asked.
    pub async fn renew(&mut self) -> Result<(), LockLoss> {
        let path = format!("/v1/agent/check/pass/{}", self.check);
        let reply = self.transport.call_at(self.agent, Method::PUT, &path, None).await?;
        if reply.status != StatusCode::OK {
            // 1.8 answers 500 `CheckID "…" does not have associated TTL` for an unknown check.
            let text = String::from_utf8_lossy(&reply.body);
            if reply.status == StatusCode::NOT_FOUND || text.contains("does not have associated TTL") {
                return Err(LockLoss::Lost(format!(
                    "the lock's health check {} is gone from the Consul agent at {} (agent restarted?)",
                    self.check,
                    self.transport.endpoint(self.agent)
                )));
            }
            return Err(LockLoss::Store(bad_answer("passing the lock's health check", &reply)));
        }
        // After the pass: a session ended before it shows here.
        match self.transport.get_key(&self.key).await? {
            Some(entry) if entry.session.as_deref() == Some(self.session.as_str()) => Ok(()),
            Some(entry) => Err(LockLoss::Lost(format!(
                "the lock {} is held by another session ({}); ours ({}) ended",
                self.key,
                entry.session.as_deref().unwrap_or("none"),
                self.session
            ))),
            None => Err(LockLoss::Lost(format!(
                "the lock {} is gone: its session {} ended (health check expired, lock broken, or store reset)",
                self.key, self.session
            ))),
        }
    }

    /// Frees the lock at once: destroys the session (Consul deletes the key
    /// in the same write), then deregisters the health check. Both are
    /// attempted; the first error is returned.
    pub async fn release(self) -> Result<(), KvError> {
        let destroyed = self.transport.destroy_session(&self.session).await;
        let deregistered = self.transport.deregister_check(self.agent, &self.check).await;
        destroyed.and(deregistered)
    }
}

impl Transport {
    /// A session bound to the node's health and the lock's `check`, created
    /// on the agent holding the check; no TTL of its own, no lock delay,
    /// deleting the key when it ends.
    async fn create_lock_session(&self, agent: usize, key: &str, value: &str, check: &str) -> Result<String, KvError> {
        let body = serde_json::json!({
            "Name": format!("swarm leader {value} ({key})"),
            "Checks": ["serfHealth", check],
            "LockDelay": "0s",
            "Behavior": "delete",
        })
        .to_string();
        let started = Instant::now();
        loop {
            let reply = self.call_at(agent, Method::PUT, "/v1/session/create", Some(body.as_bytes())).await?;
            if reply.status == StatusCode::OK {
                return session_id(&reply);
            }
            if String::from_utf8_lossy(&reply.body).contains("Missing check") && started.elapsed() < CHECK_SYNC_WAIT {
                tokio::time::sleep(MIN_ROUND).await;
                continue;
            }
            return Err(bad_answer("creating the lock's session", &reply));
        }
    }

    async fn deregister_check(&self, agent: usize, check: &str) -> Result<(), KvError> {
        let reply = self.call_at(agent, Method::PUT, &format!("/v1/agent/check/deregister/{check}"), None).await?;
        if reply.status != StatusCode::OK {
            return Err(bad_answer("deregistering the lock's health check", &reply));
        }
        Ok(())
    }

    /// The checks a session is bound to (empty if the session is unknown).
    async fn session_checks(&self, session: &str) -> Result<Vec<String>, KvError> {
        let reply = self.call(Method::GET, &format!("/v1/session/info/{session}"), None, None).await?;
        if reply.status != StatusCode::OK {
            return Err(bad_answer("reading a session", &reply));
        }
        let infos: Vec<SessionInfo> = serde_json::from_slice(&reply.body)
            .map_err(|e| KvError::Protocol { store: STORE, reason: format!("reading a session: {e}") })?;
        Ok(infos.into_iter().flat_map(|i| i.checks.unwrap_or_default()).collect())
    }

    /// Deregisters the critical checks of `agent` of the same lock (same
    /// `notes`) other than `keep`. A critical check has invalidated every
    /// session bound to it (and no session can be created on one), so
    /// nothing uses them any more: they are left by holders that died.
    /// Best effort.
    async fn sweep_dead_checks(&self, agent: usize, notes: &str, keep: &str) {
        let checks: HashMap<String, AgentCheck> = match self.call_at(agent, Method::GET, "/v1/agent/checks", None).await
        {
            Ok(reply) if reply.status == StatusCode::OK => match serde_json::from_slice(&reply.body) {
                Ok(checks) => checks,
                Err(_) => return,
            },
            _ => return,
        };
        for (id, check) in checks {
            if id.starts_with(LOCK_CHECK_PREFIX) && id != keep && check.notes == notes && check.status == "critical" {
                match self.deregister_check(agent, &id).await {
                    Ok(()) => tracing::debug!(check = %id, "consul: removed the health check of a dead lock holder"),
                    Err(e) => tracing::debug!(check = %id, "consul: cannot remove a dead lock check: {e}"),
                }
            }
        }
    }

    /// The lock holder at `key` (see [`ConsulStore::wait_holder`]), as a
    /// blocking query if `block` is given, with the `X-Consul-Index`.
    async fn read_holder(&self, key: &str, block: Option<Blocking>) -> Result<(u64, Option<String>), KvError> {
        let (index, entry) = self.read_key(key, block).await?;
        let holder = match entry {
            Some(entry) if entry.session.is_some() => Some(String::from_utf8_lossy(&entry_value(&entry)?).into_owned()),
            _ => None,
        };
        Ok((index, holder))
    }
}

/// The `Notes` of a lock's health check: tells which lock it belongs to.
fn lock_check_notes(key: &str) -> String {
    format!("swarm leader lock {key}: the holder passes this check to keep the lock")
}

/// A lock key without slashes at the ends; never empty.
fn lock_key(key: &str) -> Result<String, KvError> {
    let key = key.trim_matches('/');
    if key.is_empty() {
        return Err(KvError::Protocol { store: STORE, reason: "a lock needs a non-empty key".into() });
    }
    Ok(key.to_string())
}
