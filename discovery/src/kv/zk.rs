//! ZooKeeper backend, through `zookeeper-client` (async, on tokio).
//!
//! * A key `a/b/c` is the znode `/a/b/c`; a directory is a znode whose
//!   children are the entries. [`ZkStore::list`] reads the children's data
//!   in one multi-read round trip.
//! * Change notification is a one-shot child watch on the directory (or an
//!   exists watch while the directory does not exist yet). It fires when an
//!   entry is added or removed — which is what registering and expiring do;
//!   a changed *value* of an existing entry is only seen by the next read.
//! * A registration is an EPHEMERAL znode, so its TTL is the lifetime of the
//!   ZooKeeper session that created it: the node goes away when that session
//!   ends, explicitly or because the server heard nothing from it for the
//!   session timeout. `ttl` is therefore requested as the session timeout,
//!   and the server bounds it to its `minSessionTimeout..maxSessionTimeout`
//!   (by default 2 to 20 ticks: 4 s to 40 s with `tickTime=2000`); see
//!   [`ZkRegistration::session_timeout`] for what was granted. The client
//!   library pings the server by itself, so [`ZkRegistration::refresh`] only
//!   checks that the node is still ours and re-creates it (in a new session
//!   if the old one expired).
//! * Each registration has its own session, separate from the store's
//!   (used for reads and watches), so that a registration can end without
//!   touching the store, and the store's session (10 s, the original swarm's
//!   value) does not decide when a node disappears. The registration's
//!   session is *detached*: dropping a [`ZkRegistration`] without
//!   [`ZkRegistration::deregister`] just closes the connection, and the
//!   server removes the node after the session timeout — the same as when
//!   the process crashes, and the same as an unrefreshed etcd lease.
//!   `deregister` deletes the node at once and closes the session.
//! * The leader lock ([`ZkStore::try_lock`]) is an ephemeral znode too,
//!   in a detached session of its own whose timeout is the lock's TTL: a
//!   lock dropped without [`ZkLock::release`] (a crashed holder) is freed
//!   by the server after the session timeout, rounded up to its next tick.
//!   A granted timeout *shorter* than the TTL (TTL above the server's
//!   `maxSessionTimeout`) is refused, since the holder would count on the
//!   lock longer than the server keeps it; a longer one (TTL below
//!   `minSessionTimeout`) is accepted and only delays a takeover.
//!   [`ZkLock::renew`] checks that the node is still there and owned by
//!   our session; [`ZkLock::release`] deletes it and closes the session;
//!   [`ZkStore::wait_holder`] uses a data (or exists) watch on the node.
//! * TLS to ZooKeeper is not supported (nor was it by the original swarm's
//!   ZooKeeper backend); TLS files in the config are an error.
//!
//! Requests queue inside the client while it is disconnected, so every call
//! here is bounded by the timeout given to [`ZkStore::connect`].
//!
//! Persistent keys (get, put, compare-and-swap) are in the `data` submodule.

mod data;

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use zookeeper_client::{Acls, Client, CreateMode, MultiReadResult, OneshotWatcher, SessionState, Stat};

use super::errors::{error_chain, tcp_probe};
use super::{same_entries, KvConfig, KvError, KvPair};

pub use data::MAX_VALUE_SIZE;

const STORE: &str = "zookeeper";

/// Session timeout asked for the store's own session (reads and watches);
/// the original swarm used 10 s for everything.
const STORE_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Floor for the per-call timeout.
const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Bound on the TCP probe that explains a lock renewal without an answer,
/// so that [`ZkLock::renew`] takes at most the call timeout plus this.
const LOCK_PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Where the ensemble is and how long a call may take.
#[derive(Clone)]
struct Ensemble {
    endpoints: Vec<String>,
    call_timeout: Duration,
}

/// A connected ZooKeeper ensemble.
pub struct ZkStore {
    ensemble: Ensemble,
    /// The store's session; replaced by a new one once it has ended
    /// (expired while the ensemble was unreachable, or closed).
    client: Mutex<Client>,
}

/// An ephemeral znode held by its own session.
pub struct ZkRegistration {
    ensemble: Ensemble,
    /// The session timeout asked for (the registration's TTL).
    ttl: Duration,
    client: Client,
    path: String,
    value: Vec<u8>,
}

impl ZkStore {
    /// Opens the store's session within `timeout` (fails at once when no
    /// endpoint accepts connections).
    pub async fn connect(config: &KvConfig, timeout: Duration) -> Result<ZkStore, KvError> {
        if let Some(tls) = &config.tls {
            return Err(KvError::Tls(format!(
                "TLS to ZooKeeper is not supported (kv.cacertfile {} given)",
                tls.ca.display()
            )));
        }
        let ensemble = Ensemble { endpoints: config.endpoints.clone(), call_timeout: timeout.max(MIN_CALL_TIMEOUT) };
        let client = ensemble.open_session(STORE_SESSION_TIMEOUT, false, timeout).await?;
        Ok(ZkStore { ensemble, client: Mutex::new(client) })
    }

    /// The store's session, re-opened if it has ended.
    async fn client(&self) -> Result<Client, KvError> {
        let mut client = self.client.lock().await;
        if client.state().is_terminated() {
            tracing::info!(state = %client.state(), "ZooKeeper session ended, opening a new one");
            *client = self.ensemble.open_session(STORE_SESSION_TIMEOUT, false, self.ensemble.call_timeout).await?;
        }
        let client = client.clone();
        self.ensemble.fail_fast_if_down(&client).await?;
        Ok(client)
    }

    /// The children of `/dir` with their data, sorted by key (a missing
    /// directory is empty).
    pub async fn list(&self, dir: &str) -> Result<Vec<KvPair>, KvError> {
        let client = self.client().await?;
        let path = node_path(dir);
        match self.ensemble.call(client.list_children(&path)).await? {
            Ok(children) => self.read_children(&client, dir, children).await,
            Err(zookeeper_client::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(self.ensemble.error(e)),
        }
    }

    /// Reads the data of `children` of `dir` in one multi-read request (one
    /// round trip however many entries); children deleted meanwhile are
    /// left out.
    async fn read_children(&self, client: &Client, dir: &str, children: Vec<String>) -> Result<Vec<KvPair>, KvError> {
        let children = self.read_children_with_stats(client, dir, children).await?;
        Ok(children.into_iter().map(|(key, value, _)| KvPair { key, value }).collect())
    }

    /// [`ZkStore::read_children`] with each child's stat, sorted by key.
    async fn read_children_with_stats(
        &self,
        client: &Client,
        dir: &str,
        children: Vec<String>,
    ) -> Result<Vec<(String, Vec<u8>, Stat)>, KvError> {
        if children.is_empty() {
            return Ok(Vec::new());
        }
        let dir_key = dir.trim_matches('/');
        let keys: Vec<String> =
            children.iter().map(|c| if dir_key.is_empty() { c.clone() } else { format!("{dir_key}/{c}") }).collect();
        let mut reader = client.new_multi_reader();
        for key in &keys {
            reader.add_get_data(&node_path(key)).map_err(|e| self.ensemble.error(e))?;
        }
        let results = self.ensemble.call(reader.commit()).await?.map_err(|e| self.ensemble.error(e))?;
        if results.len() != keys.len() {
            return Err(KvError::Protocol {
                store: STORE,
                reason: format!("multi-read of {} nodes returned {} results", keys.len(), results.len()),
            });
        }
        let mut pairs = Vec::with_capacity(keys.len());
        for (key, result) in keys.into_iter().zip(results) {
            match result {
                MultiReadResult::Data { data, stat } => pairs.push((key, data, stat)),
                MultiReadResult::Error { err: zookeeper_client::Error::NoNode } => {}
                MultiReadResult::Error { err } => return Err(self.ensemble.error(err)),
                _ => {
                    return Err(KvError::Protocol {
                        store: STORE,
                        reason: "multi-read returned no data for a node".into(),
                    })
                }
            }
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(pairs)
    }

    /// Returns the entries of `dir` once they differ from `known`, or after
    /// at `until` (then unchanged). Reads the children and sets a child watch
    /// in one request, so nothing happening after the read is missed.
    ///
    /// ZooKeeper re-arms watches itself after a reconnect, so losing the
    /// connection during the wait is not an event: the wait then ends at
    /// `until` with the last entries read, and the next call reports the
    /// store unreachable if it still is.
    pub async fn wait_dir(&self, dir: &str, known: &[KvPair], until: Instant) -> Result<Vec<KvPair>, KvError> {
        let path = node_path(dir);
        loop {
            let client = self.client().await?;
            let (current, watcher) = match self.ensemble.call(client.get_and_watch_children(&path)).await? {
                Ok((children, _, watcher)) => (self.read_children(&client, dir, children).await?, watcher),
                // No directory yet: watch for it to appear.
                Err(zookeeper_client::Error::NoNode) => match self.ensemble.watch_creation(&client, &path).await? {
                    Some(watcher) => (Vec::new(), watcher),
                    None => continue, // created meanwhile: watch its children
                },
                Err(e) => return Err(self.ensemble.error(e)),
            };
            if !same_entries(known, &current) {
                return Ok(current);
            }
            match tokio::time::timeout_at(until, watcher.changed()).await {
                Err(_) => return Ok(current), // `until` passed without a change
                Ok(event) => {
                    // A node event means "look again"; a session event
                    // (expired, closed) makes the next round re-connect.
                    tracing::trace!(?event, "ZooKeeper watch fired");
                }
            }
        }
    }

    /// Creates `/key` as an ephemeral node of a new session of its own
    /// whose timeout is `ttl` (bounded by the server); see the module docs.
    pub async fn register(&self, key: &str, value: &[u8], ttl: Duration) -> Result<ZkRegistration, KvError> {
        let client = self.ensemble.open_session(ttl, true, self.ensemble.call_timeout).await?;
        tracing::debug!(key, ?ttl, granted = ?client.session_timeout(), "ZooKeeper registration session");
        let registration = ZkRegistration {
            ensemble: self.ensemble.clone(),
            ttl,
            client,
            path: node_path(key),
            value: value.to_vec(),
        };
        registration.create_node().await?;
        Ok(registration)
    }
}

impl ZkRegistration {
    /// The session timeout the server granted: how long the node outlives
    /// its holder.
    pub fn session_timeout(&self) -> Duration {
        self.client.session_timeout()
    }

    /// Checks that the node still exists and belongs to our session. The
    /// session itself is kept alive by the client's pings; if it expired
    /// (e.g. the ensemble was unreachable for longer than the timeout), a
    /// new session is opened and the node created again.
    pub async fn refresh(&mut self) -> Result<(), KvError> {
        if self.client.state().is_terminated() {
            self.reopen().await?;
        }
        self.ensemble.fail_fast_if_down(&self.client).await?;
        match self.ensure_node().await {
            Err(KvError::Unreachable { .. }) if self.client.state().is_terminated() => {
                // The session ended while we asked: once more, with a new one.
                self.reopen().await?;
                self.ensure_node().await
            }
            result => result,
        }
    }

    /// Deletes the node at once and closes the session.
    pub async fn deregister(self) -> Result<(), KvError> {
        let deleted = match self.ensemble.call(self.client.delete(&self.path, None)).await {
            Ok(Ok(())) | Ok(Err(zookeeper_client::Error::NoNode)) => Ok(()),
            Ok(Err(e)) => Err(self.ensemble.error(e)),
            Err(e) => Err(e),
        };
        self.close_session().await;
        deleted
    }

    /// Closes the session for good (see [`Ensemble::close_detached`]).
    async fn close_session(self) {
        self.ensemble.close_detached(self.client).await;
    }

    async fn reopen(&mut self) -> Result<(), KvError> {
        tracing::info!(path = %self.path, "ZooKeeper registration session ended, opening a new one");
        self.client = self.ensemble.open_session(self.ttl, true, self.ensemble.call_timeout).await?;
        Ok(())
    }

    /// Makes sure the node exists and is owned by our session.
    async fn ensure_node(&self) -> Result<(), KvError> {
        let stat = self.ensemble.call(self.client.check_stat(&self.path)).await?.map_err(|e| self.ensemble.error(e))?;
        match stat {
            Some(stat) if stat.ephemeral_owner == self.client.session_id().0 => Ok(()),
            _ => self.create_node().await,
        }
    }

    /// Creates the ephemeral node, creating missing parents as persistent
    /// nodes. A node already there (left by an earlier session of ours that
    /// has not expired yet, or by another holder) is replaced.
    async fn create_node(&self) -> Result<(), KvError> {
        // The node can come back between our delete and create (a racing
        // holder); give up after a few rounds rather than loop.
        for _ in 0..3 {
            if self.ensemble.create_ephemeral(&self.client, &self.path, &self.value).await? {
                return Ok(());
            }
            match self.ensemble.call(self.client.delete(&self.path, None)).await? {
                Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
                Err(e) => return Err(self.ensemble.error(e)),
            }
        }
        Err(KvError::Protocol {
            store: STORE,
            reason: format!("cannot create {}: {}", self.path, zookeeper_client::Error::NodeExists),
        })
    }
}

/// Client errors: the ensemble not answering or our session gone count as
/// unreachable, everything else as an unexpected answer.
fn is_unreachable(e: &zookeeper_client::Error) -> bool {
    use zookeeper_client::Error::*;
    matches!(e, NoHosts | Timeout | ConnectionLoss | SessionExpired | SessionMoved | ClientClosed)
}

impl Ensemble {
    /// Opens a session asking for `session_timeout`, within `timeout`.
    /// Fails at once when no endpoint accepts connections.
    async fn open_session(
        &self,
        session_timeout: Duration,
        detached: bool,
        timeout: Duration,
    ) -> Result<Client, KvError> {
        let mut connector = Client::connector().with_session_timeout(session_timeout).with_fail_eagerly();
        if detached {
            connector = connector.with_detached();
        }
        let connect_string = self.endpoints.join(",");
        match tokio::time::timeout(timeout, connector.connect(&connect_string)).await {
            Ok(Ok(client)) if !client.state().is_terminated() => Ok(client),
            Ok(Ok(client)) => Err(self.unreachable(format!("session {} right after connecting", client.state()))),
            Ok(Err(e)) if is_unreachable(&e) => Err(self.unreachable(self.explain(&e).await)),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => Err(self.unreachable(self.explain(&zookeeper_client::Error::Timeout).await)),
        }
    }

    /// Closes a detached session for good: a detached client does not
    /// close its session when dropped, so re-attach a regular client to it
    /// and drop that one, which sends the close request (and the server
    /// deletes the session's ephemeral nodes). Best effort: if it fails,
    /// the server expires the session after its timeout anyway.
    async fn close_detached(&self, client: Client) {
        let session = client.session().clone();
        let timeout = client.session_timeout();
        let state = client.state();
        drop(client);
        if state.is_terminated() {
            return;
        }
        let connect_string = self.endpoints.join(",");
        let attach = Client::connector()
            .with_session(session)
            .with_session_timeout(timeout)
            .with_fail_eagerly()
            .connect(&connect_string);
        if let Ok(Ok(client)) = tokio::time::timeout(self.call_timeout, attach).await {
            let mut state = client.state_watcher();
            drop(client);
            let closed = async { while !state.changed().await.is_terminated() {} };
            let _ = tokio::time::timeout(self.call_timeout, closed).await;
        }
    }

    /// Creates `path` as an ephemeral node of `client`'s session, creating
    /// missing parents as persistent nodes; `false` if the node exists.
    async fn create_ephemeral(&self, client: &Client, path: &str, data: &[u8]) -> Result<bool, KvError> {
        match self.create(client, path, data, CreateMode::Ephemeral).await? {
            Ok(_) => Ok(true),
            Err(zookeeper_client::Error::NodeExists) => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Creates `path` with `mode`, creating missing parents as persistent
    /// nodes; the new node's stat, or the server's answer (e.g. `NodeExists`)
    /// for the caller to interpret.
    async fn create(
        &self,
        client: &Client,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> Result<Result<Stat, zookeeper_client::Error>, KvError> {
        let options = mode.with_acls(Acls::anyone_all());
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        for _ in 0..3 {
            match self.call(client.create(path, data, &options)).await? {
                Ok((stat, _)) => return Ok(Ok(stat)),
                Err(zookeeper_client::Error::NoNode) => {
                    if let Some(parent) = parent_path(path) {
                        match self.call(client.mkdir(parent, &persistent)).await? {
                            Ok(()) | Err(zookeeper_client::Error::NodeExists) => {}
                            Err(e) => return Ok(Err(e)),
                        }
                    }
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Err(KvError::Protocol { store: STORE, reason: format!("cannot create {path}: its parent keeps disappearing") })
    }

    /// Sets a watch for the creation of `path`, which was just found
    /// missing; `None` when it exists by now (the caller reads it again).
    async fn watch_creation(&self, client: &Client, path: &str) -> Result<Option<OneshotWatcher>, KvError> {
        match self.call(client.check_and_watch_stat(path)).await? {
            Ok((None, watcher)) => Ok(Some(watcher)),
            Ok((Some(_), _)) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Runs one call bounded by the call timeout. The outer error is a call
    /// that got no answer in time (explained by a TCP probe); the inner
    /// result is the server's answer, for the caller to interpret.
    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, zookeeper_client::Error>>,
    ) -> Result<Result<T, zookeeper_client::Error>, KvError> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(result) => Ok(result),
            Err(_) => Err(self.unreachable(self.explain(&zookeeper_client::Error::Timeout).await)),
        }
    }

    /// While the client is disconnected, requests wait for it to reconnect;
    /// if no endpoint even accepts a TCP connection, say so right away
    /// instead of after the call timeout.
    async fn fail_fast_if_down(&self, client: &Client) -> Result<(), KvError> {
        if client.state() != SessionState::Disconnected {
            return Ok(());
        }
        match tcp_probe(&self.endpoints, Duration::from_millis(500)).await {
            Ok(()) => Ok(()),
            Err(why) => Err(self.unreachable(why)),
        }
    }

    /// The error for a lock call without an answer within the call
    /// timeout: a short TCP probe tells "nothing listens" apart from "the
    /// server does not answer".
    async fn no_answer(&self) -> KvError {
        let reason = match tcp_probe(&self.endpoints, LOCK_PROBE_TIMEOUT).await {
            Err(why) => why,
            Ok(()) => {
                format!("no answer within {:?} (the port is open, but ZooKeeper does not answer)", self.call_timeout)
            }
        };
        self.unreachable(reason)
    }

    fn unreachable(&self, reason: String) -> KvError {
        KvError::Unreachable { store: STORE, endpoints: self.endpoints.join(","), reason }
    }

    /// Maps an error the client reported.
    fn error(&self, e: zookeeper_client::Error) -> KvError {
        if is_unreachable(&e) {
            let reason = match e {
                zookeeper_client::Error::Timeout => format!("no answer within {:?}", self.call_timeout),
                other => error_chain(&other),
            };
            self.unreachable(reason)
        } else {
            KvError::Protocol { store: STORE, reason: error_chain(&e) }
        }
    }

    /// Why a session could not be opened or a call got no answer: a TCP
    /// probe tells "nothing listens" apart from "something listens but does
    /// not answer".
    async fn explain(&self, e: &zookeeper_client::Error) -> String {
        let what = match e {
            zookeeper_client::Error::Timeout => format!("no answer within {:?}", self.call_timeout),
            other => error_chain(other),
        };
        match tcp_probe(&self.endpoints, Duration::from_secs(1)).await {
            Err(why) => why,
            Ok(()) => format!("{what} (the port is open, but ZooKeeper does not answer)"),
        }
    }
}

/// The znode path of a key: `/` + key without stray slashes.
fn node_path(key: &str) -> String {
    format!("/{}", key.trim_matches('/'))
}

/// The parent of a znode path, or `None` for a node directly below `/`.
fn parent_path(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

/// A held leader lock: an ephemeral znode of a session of its own (see the
/// module docs). The session is detached: dropping the lock without
/// [`ZkLock::release`] just closes the connection, and the server frees the
/// lock after the session timeout, as when the holder's process dies.
pub struct ZkLock {
    ensemble: Ensemble,
    client: Client,
    path: String,
}

impl ZkStore {
    /// Takes the lock at `key` with `value` if nobody holds it: opens a
    /// session asking for `ttl` as its timeout and creates `/key` as an
    /// ephemeral node of it (persistent parents as needed). `None` (and the
    /// session closed) when the node exists.
    ///
    /// The server bounds session timeouts to `minSessionTimeout ..=
    /// maxSessionTimeout` (by default 2 to 20 × `tickTime`). A longer
    /// timeout than asked (`ttl` below the minimum) only delays a takeover
    /// after a crash; a shorter one would let the lock go while its holder
    /// still counts on it, so that is refused with [`KvError::InvalidTtl`].
    /// [`ZkLock::session_timeout`] says what was granted.
    pub async fn try_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<ZkLock>, KvError> {
        let path = node_path(key);
        // Cheap check in the store's session first, so that a held lock
        // costs no session.
        let store_client = self.client().await?;
        if self.ensemble.call(store_client.check_stat(&path)).await?.map_err(|e| self.ensemble.error(e))?.is_some() {
            return Ok(None);
        }
        let client = self.ensemble.open_session(ttl, true, self.ensemble.call_timeout).await?;
        let granted = client.session_timeout();
        tracing::debug!(key, ?ttl, ?granted, "ZooKeeper lock session");
        if granted.as_millis() < ttl.as_millis() {
            self.ensemble.close_detached(client).await;
            return Err(KvError::InvalidTtl(format!(
                "ZooKeeper granted a session timeout of {granted:?} for the lock {path}, less than the TTL of \
                 {ttl:?} (the server's maxSessionTimeout, 20 × tickTime by default, bounds it)"
            )));
        }
        match self.ensemble.create_ephemeral(&client, &path, value.as_bytes()).await {
            Ok(true) => Ok(Some(ZkLock { ensemble: self.ensemble.clone(), client, path })),
            Ok(false) => {
                self.ensemble.close_detached(client).await;
                Ok(None)
            }
            Err(e) => {
                // Closing the session also removes the node if the create
                // went through after all.
                self.ensemble.close_detached(client).await;
                Err(e)
            }
        }
    }

    /// The current holder of the lock at `key` (`None` when free), at once
    /// if it differs from `known`; otherwise waits, with a data watch on the
    /// node (or an exists watch while it is missing), until it differs or
    /// `until` passes.
    pub async fn wait_holder(&self, key: &str, known: Option<&str>, until: Instant) -> Result<Option<String>, KvError> {
        let path = node_path(key);
        loop {
            let client = self.client().await?;
            let (current, watcher) = match self.ensemble.call(client.get_and_watch_data(&path)).await? {
                Ok((data, _, watcher)) => (Some(String::from_utf8_lossy(&data).into_owned()), watcher),
                Err(zookeeper_client::Error::NoNode) => match self.ensemble.watch_creation(&client, &path).await? {
                    Some(watcher) => (None, watcher),
                    None => continue, // created meanwhile: read it
                },
                Err(e) => return Err(self.ensemble.error(e)),
            };
            if current.as_deref() != known {
                return Ok(current);
            }
            match tokio::time::timeout_at(until, watcher.changed()).await {
                Err(_) => return Ok(current), // `until` passed without a change
                Ok(event) => tracing::trace!(?event, "ZooKeeper lock watch fired"),
            }
        }
    }

    /// Deletes the lock's node if its value is `holder` (and it did not
    /// change since it was read). `false` when someone else holds it or it
    /// is free.
    pub async fn break_lock(&self, key: &str, holder: &str) -> Result<bool, KvError> {
        let path = node_path(key);
        let client = self.client().await?;
        let stat = match self.ensemble.call(client.get_data(&path)).await? {
            Ok((data, stat)) if data == holder.as_bytes() => stat,
            Ok(_) | Err(zookeeper_client::Error::NoNode) => return Ok(false),
            Err(e) => return Err(self.ensemble.error(e)),
        };
        match self.ensemble.call(client.delete(&path, Some(stat.version))).await? {
            Ok(()) => Ok(true),
            Err(zookeeper_client::Error::NoNode | zookeeper_client::Error::BadVersion) => Ok(false),
            Err(e) => Err(self.ensemble.error(e)),
        }
    }
}

impl ZkLock {
    /// The session timeout the server granted: how long the lock outlives
    /// a holder that died.
    pub fn session_timeout(&self) -> Duration {
        self.client.session_timeout()
    }

    /// Checks that the node exists and belongs to our session (the client
    /// library keeps the session alive by itself). `Lost` when the session
    /// has expired or the node is gone or someone else's; the store
    /// unreachable when it does not answer within the call timeout (plus a
    /// short probe), at once when its port refuses connections.
    pub async fn renew(&mut self) -> Result<(), super::LockLoss> {
        use super::LockLoss;
        let path = &self.path;
        let lost = |why: String| LockLoss::Lost(format!("the lock {path}: {why}"));
        let state = self.client.state();
        if state.is_terminated() {
            return Err(lost(format!("its session is {state}")));
        }
        let check = async {
            self.ensemble.fail_fast_if_down(&self.client).await?;
            Ok::<_, KvError>(self.client.check_stat(path).await)
        };
        let stat = match tokio::time::timeout(self.ensemble.call_timeout, check).await {
            Err(_) => return Err(LockLoss::Store(self.ensemble.no_answer().await)),
            Ok(Err(e)) => return Err(LockLoss::Store(e)),
            Ok(Ok(Ok(stat))) => stat,
            Ok(Ok(Err(zookeeper_client::Error::SessionExpired))) => return Err(lost("its session expired".into())),
            Ok(Ok(Err(e))) => {
                let state = self.client.state();
                if state.is_terminated() {
                    return Err(lost(format!("its session is {state}")));
                }
                return Err(LockLoss::Store(self.ensemble.error(e)));
            }
        };
        let ours = self.client.session_id().0;
        match stat {
            Some(stat) if stat.ephemeral_owner == ours => Ok(()),
            Some(stat) => {
                Err(lost(format!("the node belongs to session {:#x}, ours is {ours:#x}", stat.ephemeral_owner)))
            }
            None => Err(lost("the node is gone".into())),
        }
    }

    /// Deletes the node (if it is still ours) and closes the session. A
    /// lock already lost is no error: it is free, or someone else's.
    pub async fn release(self) -> Result<(), KvError> {
        let result = if self.client.state().is_terminated() { Ok(()) } else { self.delete_own_node().await };
        self.ensemble.close_detached(self.client).await;
        result
    }

    async fn delete_own_node(&self) -> Result<(), KvError> {
        let stat = match self.ensemble.call(self.client.check_stat(&self.path)).await? {
            Ok(stat) => stat,
            Err(zookeeper_client::Error::SessionExpired) => return Ok(()), // its nodes are gone with it
            Err(e) => return Err(self.ensemble.error(e)),
        };
        match stat {
            Some(stat) if stat.ephemeral_owner == self.client.session_id().0 => {
                match self.ensemble.call(self.client.delete(&self.path, Some(stat.version))).await? {
                    Ok(()) | Err(zookeeper_client::Error::NoNode | zookeeper_client::Error::SessionExpired) => Ok(()),
                    Err(e) => Err(self.ensemble.error(e)),
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_keys() {
        assert_eq!(node_path("docker/swarm/nodes"), "/docker/swarm/nodes");
        assert_eq!(node_path("/docker/swarm/nodes/"), "/docker/swarm/nodes");
        assert_eq!(node_path(""), "/");
    }

    #[test]
    fn parents_of_paths() {
        assert_eq!(parent_path("/a/b/c"), Some("/a/b"));
        assert_eq!(parent_path("/a"), None);
        assert_eq!(parent_path("/"), None);
    }

    #[test]
    fn unreachable_errors() {
        assert!(is_unreachable(&zookeeper_client::Error::ConnectionLoss));
        assert!(is_unreachable(&zookeeper_client::Error::SessionExpired));
        assert!(!is_unreachable(&zookeeper_client::Error::NoAuth));
        assert!(!is_unreachable(&zookeeper_client::Error::NodeExists));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Paths built from any key are absolute; parents are shorter paths.
        #[test]
        fn paths_of_any_key(key in "[ab/]{0,8}|.{0,12}") {
            let path = node_path(&key);
            prop_assert!(path.starts_with('/'));
            if let Some(parent) = parent_path(&path) {
                prop_assert!(parent.starts_with('/') && parent.len() < path.len());
            }
        }
    }
}
