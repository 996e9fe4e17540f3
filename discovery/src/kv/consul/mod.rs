//! Consul backend, spoken over the Consul HTTP API v1 (tested against
//! Consul 1.8).
//!
//! This is a small async client of our own on hyper (HTTP/1.1 with pooled
//! keep-alive connections): the published Rust Consul crates are blocking,
//! unmaintained or lack session renewal, and we need only a handful of calls.
//!
//! * **Failover.** Every request tries the configured endpoints in turn,
//!   starting with the one that answered last, so a dead member costs one
//!   failed connect per request at most and a healthy cluster costs none.
//!   Only failures to get an HTTP answer move on to the next endpoint; an
//!   HTTP error from a member is the answer.
//! * **Registrations** are keys held by a Consul session with
//!   `Behavior=delete`: when the session ends (destroyed, or its TTL runs out
//!   because the holder stopped renewing) Consul deletes the key.
//! * **TTL mapping.** A registration asked to live `ttl` gets a session TTL
//!   of `ttl / 2`, as the original Swarm (libkv) did, because Consul only
//!   promises to expire a session somewhere between its TTL and twice its
//!   TTL (Consul 1.8 in fact waits the full 2×, so the key disappears about
//!   `ttl` after the last refresh). Consul refuses session TTLs below 10 s
//!   (and above 24 h), so the shortest usable `ttl` is **20 s**; shorter ones
//!   fail with [`KvError::InvalidTtl`] up front instead of failing later.
//!   Holders should refresh well within `ttl / 2` to be safe under the
//!   documented guarantee.
//! * **Watching** uses blocking queries (`?index=&wait=`): Consul answers as
//!   soon as anything below the directory changes, so a new registration is
//!   seen within milliseconds, without polling.
//! * **Leader locks** ([`ConsulStore::try_lock`]) do not use session TTLs
//!   (10 s minimum, expiry up to 2× late): the lock's session is bound to a
//!   TTL health check of the agent instead, which turns critical exactly
//!   `ttl` after the holder's last pass, and Consul then ends the session
//!   and deletes the key at once (up to ~3 s later while an agent waits out
//!   an anti-entropy stagger, see [`ConsulStore::try_lock`]). Any lock TTL
//!   from 100 ms up works.
//! * **TLS.** With `kv.cacertfile`, `kv.certfile` and `kv.keyfile` every
//!   request goes over HTTPS to the agents' HTTPS port: their certificates
//!   must chain to the CA and name the address they are reached at (an IP
//!   SAN for `127.0.0.1`), and we present the client certificate (for an
//!   agent with `verify_incoming_https`). Discovery and the leader lock go
//!   through the same transport, so both are covered. Speaking TLS to a
//!   plain port, or plain HTTP to an HTTPS port, fails with a hint saying so.
//!
//! * **Persistent keys** (get, put, compare-and-swap on `ModifyIndex`) are
//!   written as transactions, see `data`.
//!
//! The code is split by concern: `transport` sends requests with the
//! endpoint failover, `tls` makes its connections HTTPS, `api` holds the calls and answers that both halves
//! use (KV reads, blocking queries, sessions), `registry` the
//! registrations and directory watches, `lock` the leader lock, `data` the
//! persistent keys.

mod api;
mod data;
mod lock;
mod registry;
mod tls;
mod transport;

use std::sync::Arc;
use std::time::Duration;

pub use lock::ConsulLock;
pub use registry::ConsulRegistration;
use registry::DirCache;
use transport::Transport;

use super::{KvConfig, KvError};

const STORE: &str = "consul";

/// Shortest per-request timeout, whatever `connect` was given.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to a Consul cluster (any number of agents or servers).
pub struct ConsulStore {
    /// Shared with every registration and lock taken through this store.
    transport: Arc<Transport>,
    /// What the last read of each watched directory returned, and at which index.
    dirs: DirCache,
}

impl std::fmt::Debug for ConsulStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulStore").field("endpoints", &self.transport.endpoints()).finish()
    }
}

impl ConsulStore {
    /// Connects and checks that the cluster has a leader (`/v1/status/leader`)
    /// within `timeout`; KV writes and sessions need one. A cluster still
    /// electing is polled until `timeout`; a dead address fails at once.
    pub async fn connect(config: &KvConfig, timeout: Duration) -> Result<ConsulStore, KvError> {
        let tls = config.tls.as_ref().map(tls::client_config).transpose()?;
        let endpoints: Vec<String> =
            config.endpoints.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
        if endpoints.is_empty() {
            return Err(KvError::Unreachable {
                store: STORE,
                endpoints: String::new(),
                reason: "no Consul address given".into(),
            });
        }
        let transport = Arc::new(Transport::new(endpoints, timeout.max(MIN_REQUEST_TIMEOUT), tls));
        match tokio::time::timeout(timeout, transport.wait_for_leader()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(transport.unreachable(format!(
                    "no Consul leader within {timeout:?} (the agent answers but the cluster is not ready)"
                )))
            }
        }
        Ok(ConsulStore { transport, dirs: DirCache::default() })
    }
}
