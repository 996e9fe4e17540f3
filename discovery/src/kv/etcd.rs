//! etcd backend, speaking the etcd v3 gRPC API through `etcd-client`.
//!
//! * Keys are flat in etcd v3: a registration `dir/addr` is stored under
//!   exactly that key, and a "directory" is the set of keys starting with
//!   `dir/`. [`EtcdStore::list`] keeps only the keys directly below `dir`.
//! * Change notification is an etcd watch on the prefix `dir/`, started at
//!   the revision right after the read it compares against, so no change
//!   between the read and the watch is lost.
//! * A registration is a key attached to a lease: the lease's TTL is the
//!   registration's TTL, [`EtcdRegistration::refresh`] is one keep-alive
//!   round trip, [`EtcdRegistration::deregister`] revokes the lease (which
//!   deletes the key at once). Dropping a registration without deregistering
//!   leaves the key until the lease runs out, like a crashed holder.
//! * etcd raises lease TTLs below its minimum (1.5 × the election timeout,
//!   2 s with default timing) to that minimum; we ask for at least
//!   [`MIN_LEASE_TTL`] and whole seconds (rounded up) so what we ask is what
//!   we get.
//! * The leader lock ([`EtcdStore::try_lock`]) is a key written with a lease
//!   of its own in a transaction that succeeds only while the key does not
//!   exist (`create_revision == 0`); a loser revokes its unused lease at
//!   once. [`EtcdLock::renew`] is one keep-alive round trip plus a read
//!   checking that the key still carries our lease (concurrently, bounded
//!   as a whole by the call timeout); [`EtcdLock::release`] and
//!   [`EtcdStore::break_lock`] revoke the lease, which deletes the key at
//!   once. A TTL below [`MIN_LEASE_TTL`] is raised to it, so with etcd's
//!   default timing a lock outlives a dead holder by 2 s at least (and
//!   etcd's lease checker adds up to ~0.5 s). [`EtcdStore::wait_holder`]
//!   watches the key from the revision after its read.
//!
//! `etcd-client` connects lazily and its balanced channel may wait rather
//! than fail while no member is reachable, so every call here is bounded by
//! the timeout given to [`EtcdStore::connect`]; on a timeout a plain TCP
//! probe of the endpoints says why (e.g. "connection refused").
//!
//! Persistent keys (get, put, compare-and-swap) are in the `data` submodule.

mod data;

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, KvClient, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use tokio::time::Instant;

use super::errors::{error_chain, tcp_probe};
use super::{same_entries, KvConfig, KvError, KvPair, TlsFiles};

const STORE: &str = "etcd";

/// The smallest lease TTL etcd grants with its default timing (heartbeat
/// 100 ms, election timeout 1 s: ⌈1.5 × 1 s⌉). Shorter TTLs are raised to it.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// Largest answer a read accepts (as the Consul client): the client's
/// default of 4 MiB would fail a listing of a few big documents.
const MAX_READ: usize = 64 << 20;

/// Floor for the per-call timeout, so a tiny connect timeout does not make
/// every later call fail on a busy machine.
const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Bound on the TCP probe that explains a lock call without an answer, so
/// that [`EtcdLock::renew`] takes at most the call timeout plus this.
const LOCK_PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// What the store and its registrations share: the client and how to
/// report failures.
#[derive(Clone)]
struct Conn {
    client: Client,
    endpoints: Vec<String>,
    /// Bound on every single call (connect timeout, at least [`MIN_CALL_TIMEOUT`]).
    call_timeout: Duration,
    tls: bool,
}

/// A connected etcd cluster.
pub struct EtcdStore {
    conn: Conn,
}

/// A key attached to a lease that this process keeps alive.
pub struct EtcdRegistration {
    conn: Conn,
    key: String,
    value: Vec<u8>,
    /// Requested lease TTL in seconds (already clamped).
    ttl_secs: i64,
    /// The current lease; replaced when the old one expired.
    lease: i64,
}

impl EtcdStore {
    /// Builds the client and makes one real call (`Status`) within `timeout`,
    /// so a wrong address or bad TLS setup fails here and not later.
    pub async fn connect(config: &KvConfig, timeout: Duration) -> Result<EtcdStore, KvError> {
        let tls = config.tls.as_ref().map(load_tls).transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let urls: Vec<String> = config.endpoints.iter().map(|e| endpoint_url(scheme, e)).collect();
        // HTTP/2 pings notice a dead member under a long-lived watch.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let has_tls = tls.is_some();
        if let Some(tls) = tls {
            options = options.with_tls(tls);
        }
        let endpoints = config.endpoints.clone();
        let unreachable =
            |reason: String| KvError::Unreachable { store: STORE, endpoints: endpoints.join(","), reason };
        let client = match tokio::time::timeout(timeout, Client::connect(&urls, Some(options))).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unreachable(error_chain(&e))),
            Err(_) => return Err(unreachable(format!("no connection within {timeout:?}"))),
        };
        let conn = Conn { client, endpoints, call_timeout: timeout.max(MIN_CALL_TIMEOUT), tls: has_tls };
        let mut client = conn.client.clone();
        let status = tokio::time::timeout(timeout, client.status()).await;
        match status {
            Ok(Ok(_)) => Ok(EtcdStore { conn }),
            Ok(Err(e)) => Err(match conn.error(e) {
                KvError::Unreachable { store, endpoints, reason } => {
                    let reason = with_tls_hint(reason, has_tls);
                    KvError::Unreachable { store, endpoints, reason }
                }
                other => other,
            }),
            Err(_) => Err(conn.timed_out(timeout).await),
        }
    }

    /// The keys directly below `dir`, sorted by key.
    pub async fn list(&self, dir: &str) -> Result<Vec<KvPair>, KvError> {
        Ok(self.read_dir(dir).await?.0)
    }

    /// The entries below `dir` and the store revision they were read at.
    async fn read_dir(&self, dir: &str) -> Result<(Vec<KvPair>, i64), KvError> {
        let prefix = dir_prefix(dir);
        let resp = self.conn.call(self.conn.kv().get(prefix.as_bytes(), Some(GetOptions::new().with_prefix()))).await?;
        let revision = resp
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| KvError::Protocol { store: STORE, reason: "range response without header".into() })?;
        let pairs = direct_children(&prefix, resp.kvs().iter().map(|kv| (kv.key(), kv.value())))
            .into_iter()
            .map(|(key, value)| KvPair { key, value: value.to_vec() })
            .collect();
        Ok((pairs, revision))
    }

    /// Returns the entries below `dir` once they differ from `known`, or
    /// at `until` (then unchanged). Watches `dir/` from the revision
    /// after the comparison read; events that leave the direct children
    /// unchanged (a deeper key, a rewrite with the same value) are skipped.
    pub async fn wait_dir(&self, dir: &str, known: &[KvPair], until: Instant) -> Result<Vec<KvPair>, KvError> {
        let (mut current, revision) = self.read_dir(dir).await?;
        if !same_entries(known, &current) {
            return Ok(current);
        }
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let Some(mut watch) = self.conn.watch_until(dir_prefix(dir), options, until).await? else {
            return Ok(current);
        };
        while let Some(resp) = watch.next(&self.conn).await? {
            if resp.canceled() {
                // E.g. the start revision was compacted away: the caller sees
                // the current state and will watch again from there.
                return self.list(dir).await;
            }
            if resp.events().is_empty() {
                continue; // the "created" confirmation or a progress notice
            }
            current = self.read_dir(dir).await?.0;
            if !same_entries(known, &current) {
                return Ok(current);
            }
        }
        Ok(current) // `until` passed without a change
    }

    /// Attaches `key = value` to a new lease of `ttl` (rounded up to whole
    /// seconds, at least [`MIN_LEASE_TTL`]).
    pub async fn register(&self, key: &str, value: &[u8], ttl: Duration) -> Result<EtcdRegistration, KvError> {
        let mut registration = EtcdRegistration {
            conn: self.conn.clone(),
            key: key.trim_start_matches('/').to_string(),
            value: value.to_vec(),
            ttl_secs: lease_ttl_secs(ttl),
            lease: 0,
        };
        registration.grant_and_put().await?;
        Ok(registration)
    }
}

impl EtcdRegistration {
    /// One lease keep-alive round trip. If the lease is gone (it expired,
    /// e.g. while the store was unreachable), grants a new one and writes
    /// the key again; if the key was deleted or overwritten, writes it again.
    pub async fn refresh(&mut self) -> Result<(), KvError> {
        let mut client = self.conn.client.clone();
        match tokio::time::timeout(self.conn.call_timeout, client.lease_keep_alive(self.lease)).await {
            Err(_) => return Err(self.conn.timed_out(self.conn.call_timeout).await),
            // etcd-client reports a keep-alive answer with TTL 0 (unknown
            // lease) as this message.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(msg))) if msg.contains("not found") => {
                tracing::debug!(key = %self.key, lease = self.lease, "etcd lease expired, registering again");
                return self.grant_and_put().await;
            }
            Ok(Err(e)) => return Err(self.conn.error(e)),
            Ok(Ok(_)) => {}
        }
        let resp = self.conn.call(client.get(self.key.as_bytes(), None)).await?;
        let intact = resp.kvs().first().is_some_and(|kv| kv.lease() == self.lease && kv.value() == self.value);
        if !intact {
            let options = PutOptions::new().with_lease(self.lease);
            self.conn.call(client.put(self.key.as_bytes(), self.value.clone(), Some(options))).await?;
        }
        Ok(())
    }

    /// Revokes the lease, which deletes the key at once.
    pub async fn deregister(self) -> Result<(), KvError> {
        let mut client = self.conn.client.clone();
        match tokio::time::timeout(self.conn.call_timeout, client.lease_revoke(self.lease)).await {
            Err(_) => Err(self.conn.timed_out(self.conn.call_timeout).await),
            Ok(Ok(_)) => Ok(()),
            // Already expired: its keys are gone too.
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.message().contains("lease not found") => Ok(()),
            Ok(Err(e)) => Err(self.conn.error(e)),
        }
    }

    /// Grants a fresh lease and writes the key with it.
    async fn grant_and_put(&mut self) -> Result<(), KvError> {
        let mut client = self.conn.client.clone();
        let grant = self.conn.call(client.lease_grant(self.ttl_secs, None)).await?;
        if !grant.error().is_empty() {
            return Err(KvError::Protocol { store: STORE, reason: format!("lease grant: {}", grant.error()) });
        }
        let lease = grant.id();
        let options = PutOptions::new().with_lease(lease);
        if let Err(e) = self.conn.call(client.put(self.key.as_bytes(), self.value.clone(), Some(options))).await {
            // Do not leave an unused lease behind; it would expire anyway.
            let _ = tokio::time::timeout(self.conn.call_timeout, client.lease_revoke(lease)).await;
            return Err(e);
        }
        self.lease = lease;
        Ok(())
    }
}

/// An etcd watch that ends at a deadline.
struct Watch {
    stream: WatchStream,
    /// When the caller stops waiting for an answer.
    deadline: Instant,
}

impl Watch {
    /// The next answer of the watch; `None` once the deadline has passed.
    async fn next(&mut self, conn: &Conn) -> Result<Option<WatchResponse>, KvError> {
        match tokio::time::timeout_at(self.deadline, self.stream.message()).await {
            Err(_) => Ok(None),
            Ok(Ok(Some(resp))) => Ok(Some(resp)),
            Ok(Ok(None)) => Err(conn.unreachable("the watch stream was closed".into())),
            Ok(Err(e)) => Err(conn.error(e)),
        }
    }
}

impl Conn {
    /// A KV client that accepts answers of up to [`MAX_READ`].
    fn kv(&self) -> KvClient {
        self.client.kv_client().max_decoding_message_size(MAX_READ)
    }

    /// Starts watching `key` (with `options`); `None` when `deadline`
    /// passes before etcd accepts the watch.
    async fn watch_until(
        &self,
        key: impl Into<Vec<u8>>,
        options: WatchOptions,
        deadline: Instant,
    ) -> Result<Option<Watch>, KvError> {
        let mut client = self.client.clone();
        match tokio::time::timeout_at(deadline, self.call(client.watch(key, Some(options)))).await {
            Ok(stream) => Ok(Some(Watch { stream: stream?, deadline })),
            Err(_) => Ok(None),
        }
    }

    /// Runs one call bounded by the call timeout, mapping its errors.
    async fn call<T>(&self, fut: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, KvError> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(_) => Err(self.timed_out(self.call_timeout).await),
        }
    }

    fn unreachable(&self, reason: String) -> KvError {
        KvError::Unreachable { store: STORE, endpoints: self.endpoints.join(","), reason }
    }

    /// Transport trouble and "unavailable"-like gRPC codes mean the store is
    /// unreachable; other errors are answers we did not expect.
    fn error(&self, e: etcd_client::Error) -> KvError {
        let reason = match &e {
            // tonic's own text is long-winded ("code: '...', message: ..., source: ...").
            etcd_client::Error::GRpcStatus(s) => {
                let mut text = format!("{} ({:?})", s.message(), s.code());
                if let Some(source) = std::error::Error::source(s) {
                    text = format!("{text}: {}", error_chain(source));
                }
                text
            }
            _ => error_chain(&e),
        };
        let transport = match &e {
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
            etcd_client::Error::GRpcStatus(s) => matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
            ),
            _ => false,
        };
        if transport {
            self.unreachable(reason)
        } else {
            KvError::Protocol { store: STORE, reason }
        }
    }

    /// The error for a lock call that got no answer in time, on a
    /// connection that worked before (so no TLS hint): a short TCP probe
    /// tells "nothing listens" apart from "the server does not answer".
    async fn no_answer(&self, waited: Duration) -> KvError {
        let reason = match tcp_probe(&self.endpoints, LOCK_PROBE_TIMEOUT).await {
            Err(why) => why,
            Ok(()) => format!("no answer within {waited:?} (the port is open, but etcd does not answer)"),
        };
        self.unreachable(reason)
    }

    /// The error for a call that got no answer in time: a TCP probe tells
    /// "nothing listens" apart from "something listens but does not answer".
    async fn timed_out(&self, waited: Duration) -> KvError {
        let reason = match tcp_probe(&self.endpoints, Duration::from_secs(1)).await {
            Err(why) => why,
            Ok(()) if self.tls => format!(
                "no answer within {waited:?} although the port is open (TLS handshake refused? check \
                 kv.cacertfile/kv.certfile/kv.keyfile)"
            ),
            Ok(()) => {
                format!("no answer within {waited:?} although the port is open (does the endpoint require TLS?)")
            }
        };
        self.unreachable(reason)
    }
}

/// Explains the usual cause when a member hangs up on a new connection: a
/// TLS mismatch, which etcd answers by closing the connection.
fn with_tls_hint(reason: String, tls: bool) -> String {
    let hung_up = ["connection closed", "Canceled", "broken pipe", "reset by peer"];
    if !hung_up.iter().any(|h| reason.contains(h)) {
        reason
    } else if tls {
        format!(
            "{reason} (the server hung up during the TLS handshake: does it trust the CA that signed \
             kv.certfile?)"
        )
    } else {
        format!("{reason} (the server hung up: does it require TLS? set kv.cacertfile, kv.certfile and kv.keyfile)")
    }
}

/// `scheme://host:port`, keeping a scheme the endpoint already has.
fn endpoint_url(scheme: &str, endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("{scheme}://{endpoint}")
    }
}

/// TLS options from the three PEM files: the CA that signed the members'
/// certificates, and our client certificate and key.
fn load_tls(files: &TlsFiles) -> Result<TlsOptions, KvError> {
    let pem = files.read()?;
    Ok(TlsOptions::new().ca_certificate(Certificate::from_pem(pem.ca)).identity(Identity::from_pem(pem.cert, pem.key)))
}

/// The key prefix of the directory `dir`: `dir/`, or empty for the root.
fn dir_prefix(dir: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

/// The items whose key is `prefix` + one non-empty segment without `/`
/// (deeper keys and non-UTF-8 keys are skipped), sorted by key.
fn direct_children<'a, T>(prefix: &str, kvs: impl Iterator<Item = (&'a [u8], T)>) -> Vec<(String, T)> {
    let mut children: Vec<(String, T)> = kvs
        .filter_map(|(key, item)| {
            let key = std::str::from_utf8(key).ok()?;
            let rest = key.strip_prefix(prefix)?;
            (!rest.is_empty() && !rest.contains('/')).then(|| (key.to_string(), item))
        })
        .collect();
    children.sort_by(|a, b| a.0.cmp(&b.0));
    children
}

/// Lease TTL in whole seconds: `ttl` rounded up, at least [`MIN_LEASE_TTL`].
fn lease_ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(MIN_LEASE_TTL.as_secs())).unwrap_or(i64::MAX)
}

/// A held leader lock: the lock's key, written with a lease of its own
/// that only [`EtcdLock::renew`] keeps alive (see the module docs).
/// Dropping it without [`EtcdLock::release`] leaves the key until the lease
/// runs out, like a crashed holder.
pub struct EtcdLock {
    conn: Conn,
    key: String,
    lease: i64,
    /// Granted lease TTL in seconds.
    ttl_secs: i64,
}

impl EtcdStore {
    /// Takes the lock at `key` with `value` if nobody holds it: grants a
    /// lease of `ttl` (whole seconds, rounded up, at least
    /// [`MIN_LEASE_TTL`]) and writes the key with it in a transaction that
    /// succeeds only if the key does not exist. `None` (and the unused lease
    /// revoked) when someone holds it.
    pub async fn try_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<EtcdLock>, KvError> {
        let key = lock_key(key);
        let ttl_secs = lease_ttl_secs(ttl);
        let mut client = self.conn.client.clone();
        let grant = self.conn.call(client.lease_grant(ttl_secs, None)).await?;
        if !grant.error().is_empty() {
            return Err(KvError::Protocol { store: STORE, reason: format!("lease grant: {}", grant.error()) });
        }
        let lease = grant.id();
        if grant.ttl() < ttl_secs {
            self.revoke_unused(lease).await;
            return Err(KvError::InvalidTtl(format!(
                "etcd granted a lease of {} s for the lock {key}, less than the {ttl_secs} s asked for",
                grant.ttl()
            )));
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_bytes(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_bytes(), value, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key.as_bytes(), None)]);
        let resp = match self.conn.call(client.txn(txn)).await {
            Ok(resp) => resp,
            Err(e) => {
                // The write may or may not have happened: revoking the lease
                // undoes it in both cases.
                self.revoke_unused(lease).await;
                return Err(e);
            }
        };
        if resp.succeeded() {
            return Ok(Some(EtcdLock { conn: self.conn.clone(), key, lease, ttl_secs: grant.ttl() }));
        }
        self.revoke_unused(lease).await;
        if tracing::enabled!(tracing::Level::DEBUG) {
            let holder = resp.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            });
            tracing::debug!(%key, ?holder, "etcd lock is held");
        }
        Ok(None)
    }

    /// Revokes a lease that holds no key of ours; best effort (an unused
    /// lease only costs the store memory until its TTL).
    async fn revoke_unused(&self, lease: i64) {
        let mut client = self.conn.client.clone();
        match tokio::time::timeout(self.conn.call_timeout, client.lease_revoke(lease)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(lease, "cannot revoke an unused etcd lease: {}", error_chain(&e)),
            Err(_) => tracing::debug!(lease, "cannot revoke an unused etcd lease: no answer in time"),
        }
    }

    /// The lock holder's value (`None` when free) and the revision it was read at.
    async fn read_holder(&self, key: &str) -> Result<(Option<String>, i64), KvError> {
        let mut client = self.conn.client.clone();
        let resp = self.conn.call(client.get(key.as_bytes(), None)).await?;
        let revision = resp
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| KvError::Protocol { store: STORE, reason: "range response without header".into() })?;
        Ok((resp.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()), revision))
    }

    /// The current holder of the lock at `key` (`None` when free), at once
    /// if it differs from `known`; otherwise watches the key from the
    /// revision after that read until it differs or `until` passes.
    pub async fn wait_holder(&self, key: &str, known: Option<&str>, until: Instant) -> Result<Option<String>, KvError> {
        let key = lock_key(key);
        let (mut current, revision) = self.read_holder(&key).await?;
        if current.as_deref() != known {
            return Ok(current);
        }
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let Some(mut watch) = self.conn.watch_until(key.as_bytes(), options, until).await? else {
            return Ok(current);
        };
        while let Some(resp) = watch.next(&self.conn).await? {
            if resp.canceled() {
                // E.g. the start revision was compacted away: read again.
                return Ok(self.read_holder(&key).await?.0);
            }
            for event in resp.events() {
                current = match event.event_type() {
                    EventType::Put => event.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                    EventType::Delete => None,
                };
            }
            if current.as_deref() != known {
                return Ok(current);
            }
        }
        Ok(current) // `until` passed without a change
    }

    /// Ends the lock at `key` if `holder` holds it, by revoking the lease
    /// the key is attached to (a key without a lease is deleted, if it did
    /// not change meanwhile). `false` when someone else holds it or it is
    /// free.
    pub async fn break_lock(&self, key: &str, holder: &str) -> Result<bool, KvError> {
        let key = lock_key(key);
        let mut client = self.conn.client.clone();
        let resp = self.conn.call(client.get(key.as_bytes(), None)).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(false);
        };
        if kv.value() != holder.as_bytes() {
            return Ok(false);
        }
        if kv.lease() == 0 {
            let txn = Txn::new()
                .when([Compare::mod_revision(key.as_bytes(), CompareOp::Equal, kv.mod_revision())])
                .and_then([TxnOp::delete(key.as_bytes(), None)]);
            return Ok(self.conn.call(client.txn(txn)).await?.succeeded());
        }
        // Lease IDs are never reused, so this cannot end a newer holder's lock.
        match tokio::time::timeout(self.conn.call_timeout, client.lease_revoke(kv.lease())).await {
            Err(_) => Err(self.conn.no_answer(self.conn.call_timeout).await),
            Ok(Ok(_)) => Ok(true),
            // It expired meanwhile: the lock is free already.
            Ok(Err(e)) if is_lease_not_found(&e) => Ok(false),
            Ok(Err(e)) => Err(self.conn.error(e)),
        }
    }
}

impl EtcdLock {
    /// The lease the lock's key is attached to.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// The lease's TTL as etcd granted it.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs.unsigned_abs())
    }

    /// One lease keep-alive round trip and, concurrently, a read of the key
    /// to check it is still attached to our lease. `Lost` when the lease is
    /// gone (expired, revoked by [`EtcdStore::break_lock`]) or the key no
    /// longer carries it. Bounded by the call timeout as a whole.
    pub async fn renew(&mut self) -> Result<(), super::LockLoss> {
        use super::LockLoss;
        let conn = &self.conn;
        let (mut keeper, mut reader) = (conn.client.clone(), conn.client.clone());
        let work = async {
            let (kept, read) = tokio::join!(keeper.lease_keep_alive(self.lease), reader.get(self.key.as_bytes(), None));
            match kept {
                Ok(_) => {}
                Err(e) if is_lease_not_found(&e) => {
                    return Err(LockLoss::Lost(format!("the lease {:x} of the lock {} is gone", self.lease, self.key)))
                }
                Err(e) => return Err(LockLoss::Store(conn.error(e))),
            }
            let read = read.map_err(|e| conn.error(e))?;
            match read.kvs().first() {
                Some(kv) if kv.lease() == self.lease => Ok(()),
                Some(kv) => Err(LockLoss::Lost(format!(
                    "the lock {} is held by {} (lease {:x}, ours is {:x})",
                    self.key,
                    String::from_utf8_lossy(kv.value()),
                    kv.lease(),
                    self.lease
                ))),
                None => Err(LockLoss::Lost(format!("the lock {} was deleted", self.key))),
            }
        };
        match tokio::time::timeout(conn.call_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(LockLoss::Store(conn.no_answer(conn.call_timeout).await)),
        }
    }

    /// Revokes the lease, which deletes the key at once. A lease that is
    /// already gone (expired or broken) is no error: the lock is free.
    pub async fn release(self) -> Result<(), KvError> {
        let mut client = self.conn.client.clone();
        match tokio::time::timeout(self.conn.call_timeout, client.lease_revoke(self.lease)).await {
            Err(_) => Err(self.conn.no_answer(self.conn.call_timeout).await),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if is_lease_not_found(&e) => Ok(()),
            Ok(Err(e)) => Err(self.conn.error(e)),
        }
    }
}

/// The etcd key of a lock: as given, without a leading `/` (like registrations).
fn lock_key(key: &str) -> String {
    key.trim_start_matches('/').to_string()
}

/// True for etcd's answer about a lease that does not exist (any more):
/// revoking it gives gRPC "lease not found", a keep-alive a TTL of 0, which
/// `etcd-client` reports as a "lease not found" keep-alive error.
fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().contains("lease not found"),
        etcd_client::Error::LeaseKeepAliveError(msg) => msg.contains("not found"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, value: &str) -> KvPair {
        KvPair { key: key.into(), value: value.as_bytes().to_vec() }
    }

    #[test]
    fn prefix_of_dir() {
        for (dir, prefix) in
            [("docker/swarm/nodes", "docker/swarm/nodes/"), ("/docker/swarm/nodes/", "docker/swarm/nodes/"), ("", "")]
        {
            assert_eq!(dir_prefix(dir), prefix, "dir {dir:?}");
        }
    }

    #[test]
    fn keeps_direct_children_only() {
        let raw: Vec<(&[u8], &[u8])> = vec![
            (b"d/b", b"2"),
            (b"d/a", b"1"),
            (b"d/a/deeper", b"x"),
            (b"d/", b"dir marker"),
            (b"dx/c", b"other dir"),
            (b"d/\xff", b"not utf-8"),
        ];
        let got: Vec<KvPair> = direct_children("d/", raw.into_iter())
            .into_iter()
            .map(|(key, value)| KvPair { key, value: value.to_vec() })
            .collect();
        assert_eq!(got, vec![pair("d/a", "1"), pair("d/b", "2")]);
    }

    #[test]
    fn lease_ttls_are_whole_seconds_above_the_minimum() {
        assert_eq!(lease_ttl_secs(Duration::ZERO), 2);
        assert_eq!(lease_ttl_secs(Duration::from_millis(500)), 2);
        assert_eq!(lease_ttl_secs(Duration::from_millis(2001)), 3);
        assert_eq!(lease_ttl_secs(Duration::from_secs(180)), 180);
    }

    #[test]
    fn urls_get_a_scheme() {
        assert_eq!(endpoint_url("http", "127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(endpoint_url("http", "https://h:1"), "https://h:1");
    }

    #[test]
    fn tls_files_are_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("swarm-etcd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("junk.pem");
        std::fs::write(&not_pem, "junk").unwrap();
        let files = TlsFiles { ca: dir.join("missing.pem"), cert: not_pem.clone(), key: not_pem.clone() };
        let err = load_tls(&files).err().unwrap();
        assert!(matches!(&err, KvError::Tls(m) if m.contains("missing.pem") && m.contains("kv.cacertfile")), "{err}");
        let files = TlsFiles { ca: not_pem.clone(), cert: not_pem.clone(), key: not_pem };
        let err = load_tls(&files).err().unwrap();
        assert!(matches!(&err, KvError::Tls(m) if m.contains("not a PEM file")), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any keys etcd sends back (not even UTF-8) give the sorted direct
        /// children of the prefix.
        #[test]
        fn direct_children_of_any_keys(
            dir in "[ab/]{0,4}",
            keys in prop::collection::vec(prop::collection::vec(prop_oneof![Just(b'a'), Just(b'/'), any::<u8>()], 0..6), 0..8),
        ) {
            let prefix = dir_prefix(&dir);
            let children = direct_children(&prefix, keys.iter().map(|k| (k.as_slice(), ())));
            for (key, ()) in &children {
                let child = key.strip_prefix(&prefix);
                prop_assert!(child.is_some_and(|c| !c.is_empty() && !c.contains('/')), "{}", key);
            }
            prop_assert!(children.windows(2).all(|w| w[0].0 <= w[1].0));
        }
    }
}
