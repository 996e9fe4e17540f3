//! Everything the manager reports about itself, as typed events.
//!
//! Each variant is one observable fact; [`Observed::emit`] is the only place
//! that turns facts into log lines, so their wording (which operators' log
//! watchers match on) lives in one place, and [`Observed::record`] the only
//! place that turns them into counts (`src/metrics.rs`).

use std::time::Duration;

use swarm_leadership::{ElectionEvent, LossReason};

use crate::metrics::{ChangeLabel, HealthLabel, Metrics, RequestLabels, ResultLabel, RouteLabel, SourceLabel};

/// One observable fact about the manager.
#[derive(Debug)]
pub enum Observed<'a> {
    /// The API is being served on `addr`.
    Listening { proto: &'a str, addr: &'a str },
    /// An engine passed validation and joined the cluster.
    EngineRegistered { name: &'a str, addr: &'a str },
    /// A discovered address could not be validated as an engine.
    EngineValidationFailed { addr: &'a str, error: &'a str },
    /// A healthy engine failed enough refreshes in a row to be taken out of scheduling.
    EngineUnhealthy { name: &'a str, id: &'a str, failures: u32 },
    /// An unhealthy engine answered again.
    EngineRevived { name: &'a str, id: &'a str, retries: u32 },
    /// One refresh of an engine failed (counted towards `--engine-failure-retry`).
    EngineRefreshFailed { name: &'a str, error: &'a str },
    /// An early refresh (woken by the events stream) failed on an engine
    /// already failing: not counted, the retry count is kept for refreshes
    /// spaced by the refresh interval.
    EngineRefreshUncounted { name: &'a str, error: &'a str },
    /// Discovery no longer lists the engine.
    EngineRemoved { name: &'a str, addr: &'a str },
    /// The engine's events stream ended; it will be reopened.
    EngineEventsLost { name: &'a str, error: &'a str, retry_in: Duration },
    /// The engine's events stream was reopened from `since` (the engine's
    /// clock, `seconds.nanoseconds`): the engine replays what was missed.
    EngineEventsResumed { name: &'a str, since: &'a str },
    /// A `docker events` client read too slowly: its queue filled up, and it
    /// was disconnected. `peer` is `None` on a unix socket.
    EventsReaderTooSlow { peer: Option<&'a str>, queued: usize },
    /// Discovery failed; the last known engines are kept.
    DiscoveryFailed { error: &'a str },
    /// Discovery works again after a failure.
    DiscoveryRecovered { engines: usize },
    /// A container of a lost engine was recreated on another one.
    Rescheduled { id: &'a str, from: &'a str, to: &'a str, new_id: &'a str },
    /// A container of a lost engine could not be recreated.
    RescheduleFailed { id: &'a str, from: &'a str, error: &'a str },
    /// The copy left on a returning engine of a rescheduled container was removed.
    StaleRemoved { id: &'a str, node: &'a str },
    /// The scheduler noted something about a decision (e.g. a soft rule dropped).
    PlacementWarning { warning: &'a str },
    /// A create failed on one node and is tried on the next (`swarm.createretry`).
    CreateRetried { failed_on: &'a str, next: &'a str },
    /// A cluster-wide network could not be copied to an engine.
    NetworkCopyFailed { network: &'a str, addr: &'a str, error: &'a str },
    /// The stale copy of a rescheduled container could not be removed.
    StaleRemovalFailed { id: &'a str, node: &'a str, error: &'a str },
    /// `swarm join` registers the engine every heartbeat.
    JoinRegistering { addr: &'a str, discovery: &'a str, heartbeat: Duration },
    /// One refresh of a `swarm join` registration failed.
    JoinRefreshFailed { addr: &'a str, error: &'a str },
    /// Accepting a connection on a listener failed.
    AcceptFailed { error: &'a str },
    /// Every client connection slot (`--max-client-connections`) is taken;
    /// further clients wait to be accepted until one ends.
    ConnectionLimitReached { limit: usize },
    /// A client connection ended with an error.
    ConnectionEnded { error: &'a str },
    /// A client's TLS handshake on a listener failed; the connection was closed.
    TlsHandshakeFailed { peer: &'a str, error: &'a str },
    /// `--tls` without `--tlsverify`: no peer certificate is checked.
    TlsPeersUnverified,
    /// The TLS files were read again; new connections use them.
    TlsReloaded { trigger: &'a str },
    /// The TLS files were read again but do not make a usable set; the
    /// previous certificates stay in use.
    TlsReloadRefused { trigger: &'a str, error: &'a str },
    /// The desired state could not be read on becoming primary; the copy
    /// read before stays in use.
    StateReloadFailed { error: &'a str },
    /// A task container the desired state no longer wants was removed.
    StaleTaskContainerRemoved { task: &'a str, node: &'a str },
    /// A container was removed that a create made although its client was
    /// told the create failed (its answer was lost with a broken engine
    /// connection or a dying primary).
    LostCreateRemoved { id: &'a str, node: &'a str },
    /// A create answered as failed could not be put on record as lost
    /// (the store failed): should its container land, nobody removes it.
    LostCreateNotRecorded { swarm_id: &'a str, error: &'a str },
    /// A pass of the services' reconciler stopped on an error; the next
    /// pass starts over from the desired state.
    ReconcileFailed { error: &'a str },
    /// A request was answered with an error.
    RequestFailed { method: &'a str, path: &'a str, status: u16, error: &'a str },
    /// A request was answered (its status and headers sent): `route` is its
    /// route class ([`crate::api::routes::Handler::label`]), `relayed` true
    /// when the answer came from the primary, `elapsed` the time since it arrived.
    RequestAnswered { method: &'a str, route: &'static str, status: u16, relayed: bool, elapsed: Duration },
    /// A client connection is being served.
    ConnectionOpened,
    /// A client connection served ended (or was handed to a hijacked stream).
    ConnectionClosed,
    /// A container was created.
    ContainerCreated { id: &'a str, node: &'a str },
    /// A container left an engine's cache: `why` says which answer of the
    /// engine (or which removal) dropped it.
    ContainerDropped { id: &'a str, node: &'a str, why: &'static str },
    /// A create was refused or failed; `reason` is its class, a metric label.
    CreateFailed { reason: &'static str, error: &'a str },
    /// A read or write of the desired state failed in its store (the
    /// discovery store or the state file).
    StateStoreFailed { error: &'a str },
    /// The primary election (`--replication`) did something.
    Election(&'a ElectionEvent),
}

impl Observed<'_> {
    /// Writes the fact to the log.
    pub fn emit(&self) {
        match self {
            Observed::Listening { proto, addr } => {
                tracing::info!(addr = %addr, proto = %proto, "Listening for HTTP")
            }
            Observed::EngineRegistered { name, addr } => {
                tracing::info!("Registered Engine {name} at {addr}")
            }
            Observed::EngineValidationFailed { addr, error } => {
                tracing::error!(Addr = %addr, "Failed to validate pending node: {error}")
            }
            Observed::EngineUnhealthy { name, id, failures } => tracing::error!(
                id = %id,
                name = %name,
                "Flagging engine as unhealthy. Connect failed {failures} times"
            ),
            Observed::EngineRevived { name, id, retries } => tracing::info!(
                id = %id,
                name = %name,
                "Engine came back to life after {retries} retries. Hooray!"
            ),
            Observed::EngineRefreshFailed { name, error } => {
                tracing::debug!(name = %name, "Engine refresh failed: {error}")
            }
            Observed::EngineRefreshUncounted { name, error } => {
                tracing::debug!(name = %name, "Engine refresh failed (early, not counted): {error}")
            }
            Observed::EngineRemoved { name, addr } => {
                tracing::info!("Removed Engine {name} at {addr}")
            }
            Observed::EngineEventsLost { name, error, retry_in } => tracing::debug!(
                name = %name,
                retry_in = %crate::duration::format(*retry_in),
                "Engine events stream lost: {error}"
            ),
            Observed::EngineEventsResumed { name, since } => {
                tracing::debug!(name = %name, since = %since, "Engine events stream resumed")
            }
            Observed::EventsReaderTooSlow { peer, queued } => tracing::warn!(
                peer = %peer.unwrap_or("unix socket"),
                queued = queued,
                "Events client disconnected: it fell {queued} events behind"
            ),
            Observed::DiscoveryFailed { error } => tracing::error!("Discovery error: {error}"),
            Observed::DiscoveryRecovered { engines } => {
                tracing::info!("Discovery is working again ({engines} engines)")
            }
            Observed::Rescheduled { id, from, to, new_id } => {
                tracing::info!("Rescheduled container {id} from {from} to {to} as {new_id}")
            }
            Observed::RescheduleFailed { id, from, error } => {
                tracing::error!("Failed to reschedule container {id} from {from}: {error}")
            }
            Observed::StaleRemoved { id, node } => {
                tracing::info!("Removed container {id} from {node}: it was rescheduled while {node} was down")
            }
            Observed::PlacementWarning { warning } => tracing::warn!("{warning}"),
            Observed::CreateRetried { failed_on, next } => {
                tracing::warn!("Failed to create container on {failed_on}, retrying on {next}")
            }
            Observed::NetworkCopyFailed { network, addr, error } => {
                tracing::warn!("Cannot create network {network} on {addr}: {error}")
            }
            Observed::StaleRemovalFailed { id, node, error } => {
                tracing::warn!("Cannot remove rescheduled container {id} from {node}: {error}")
            }
            Observed::JoinRegistering { addr, discovery, heartbeat } => tracing::info!(
                addr = %addr,
                discovery = %discovery,
                "Registering on the discovery service every {}...",
                crate::duration::format(*heartbeat)
            ),
            Observed::JoinRefreshFailed { addr, error } => {
                tracing::error!(addr = %addr, "Failed to refresh the registration: {error}")
            }
            Observed::ConnectionLimitReached { limit } => tracing::warn!(
                "Client connection limit reached ({limit} open, --max-client-connections): new clients wait"
            ),
            Observed::AcceptFailed { error } => tracing::warn!("accept failed: {error}"),
            Observed::ConnectionEnded { error } => tracing::debug!("connection ended: {error}"),
            Observed::TlsHandshakeFailed { peer, error } => {
                tracing::debug!(peer = %peer, "TLS handshake failed: {error}")
            }
            Observed::TlsPeersUnverified => tracing::warn!(
                "TLS without --tlsverify: the certificates of clients, engines and the primary are not verified"
            ),
            Observed::TlsReloaded { trigger } => {
                tracing::info!(trigger = %trigger, "TLS certificates reloaded; new connections use them")
            }
            Observed::TlsReloadRefused { trigger, error } => tracing::error!(
                trigger = %trigger,
                "TLS certificates not reloaded, the previous ones stay in use: {error}"
            ),
            Observed::StateReloadFailed { error } => {
                tracing::error!("Cannot read the desired state, the last copy read stays in use: {error}")
            }
            Observed::StaleTaskContainerRemoved { task, node } => {
                tracing::info!("Removed the container of task {task} from {node}: the task is no longer wanted there")
            }
            Observed::LostCreateNotRecorded { swarm_id, error } => tracing::warn!(
                "A failed create (swarm ID {swarm_id}) could not be put on record to be undone: {error}; should its \
                 container land, it stays"
            ),
            Observed::LostCreateRemoved { id, node } => tracing::warn!(
                "Removed container {id} from {node}: its create was answered as failed (the answer was lost), \
                 so nobody knows it"
            ),
            Observed::ReconcileFailed { error } => tracing::warn!("Reconciling services failed: {error}"),
            Observed::RequestFailed { method, path, status, error } => {
                if *status >= 500 {
                    tracing::error!(method = %method, uri = %path, status = status, "HTTP error: {error}")
                } else {
                    tracing::debug!(method = %method, uri = %path, status = status, "HTTP error: {error}")
                }
            }
            Observed::RequestAnswered { method, route, status, relayed, elapsed } => tracing::trace!(
                method = %method,
                route = %route,
                status = status,
                relayed = relayed,
                elapsed = %crate::duration::format(*elapsed),
                "HTTP request answered"
            ),
            Observed::ConnectionOpened => tracing::trace!("connection opened"),
            Observed::ConnectionClosed => tracing::trace!("connection closed"),
            Observed::ContainerCreated { id, node } => tracing::debug!(node = %node, "Created container {id}"),
            Observed::ContainerDropped { id, node, why } => {
                tracing::debug!(node = %node, "Container {id} dropped from the cache: {why}")
            }
            Observed::CreateFailed { reason, error } => {
                tracing::debug!(reason = %reason, "Container not created: {error}")
            }
            Observed::StateStoreFailed { error } => tracing::debug!("Desired state store error: {error}"),
            Observed::Election(event) => election(event),
        }
    }

    /// Writes the fact to the log and counts it in `metrics`. Every fact a
    /// metric counts goes through here; the match says which, so a new
    /// variant needs a decision.
    pub fn record(&self, metrics: &Metrics) {
        self.emit();
        match self {
            Observed::RequestAnswered { route, status, relayed, elapsed, .. } => {
                let relayed_label = if *relayed { "true" } else { "false" };
                metrics.requests.get_or_create(&RequestLabels { route, status: *status, relayed: relayed_label }).inc();
                metrics.request_duration.get_or_create(&RouteLabel { route }).observe(elapsed.as_secs_f64());
                if *relayed {
                    metrics.relay_duration.observe(elapsed.as_secs_f64());
                }
            }
            Observed::ConnectionOpened => {
                metrics.connections.inc();
            }
            Observed::ConnectionClosed => {
                metrics.connections.dec();
            }
            Observed::EngineUnhealthy { .. } => {
                metrics.health_changes.get_or_create(&HealthLabel { health: "Unhealthy" }).inc();
            }
            Observed::EngineRevived { .. } => {
                metrics.health_changes.get_or_create(&HealthLabel { health: "Healthy" }).inc();
            }
            Observed::EngineEventsLost { .. } => {
                metrics.event_stream_reconnects.inc();
            }
            Observed::ContainerCreated { .. } => {
                metrics.creates.get_or_create(&ResultLabel { result: "created" }).inc();
            }
            Observed::CreateFailed { reason, .. } => {
                metrics.creates.get_or_create(&ResultLabel { result: reason }).inc();
            }
            Observed::CreateRetried { .. } => {
                metrics.create_retries.inc();
            }
            Observed::Rescheduled { .. } => {
                metrics.reschedules.get_or_create(&ResultLabel { result: "rescheduled" }).inc();
            }
            Observed::RescheduleFailed { .. } => {
                metrics.reschedules.get_or_create(&ResultLabel { result: "failed" }).inc();
            }
            Observed::DiscoveryFailed { .. } => {
                metrics.store_errors.get_or_create(&SourceLabel { source: "discovery" }).inc();
            }
            Observed::StateStoreFailed { .. } => {
                metrics.store_errors.get_or_create(&SourceLabel { source: "state" }).inc();
            }
            Observed::Election(event) => match event {
                ElectionEvent::Acquired => {
                    metrics.leadership_changes.get_or_create(&ChangeLabel { change: "acquired" }).inc();
                }
                ElectionEvent::Lost { .. } => {
                    metrics.leadership_changes.get_or_create(&ChangeLabel { change: "lost" }).inc();
                }
                ElectionEvent::Released => {
                    metrics.leadership_changes.get_or_create(&ChangeLabel { change: "released" }).inc();
                }
                ElectionEvent::ReleaseFailed { .. }
                | ElectionEvent::RenewalFailed { .. }
                | ElectionEvent::DeadPrimaryLockNotEnded { .. }
                | ElectionEvent::StoreFailed { .. } => {
                    metrics.store_errors.get_or_create(&SourceLabel { source: "election" }).inc();
                }
                ElectionEvent::Started
                | ElectionEvent::NewLeader { .. }
                | ElectionEvent::DeadPrimaryLockEnded { .. } => {}
            },
            // Facts with a log line only.
            Observed::ConnectionLimitReached { .. }
            | Observed::EngineEventsResumed { .. }
            | Observed::EventsReaderTooSlow { .. }
            | Observed::Listening { .. }
            | Observed::EngineRegistered { .. }
            | Observed::EngineValidationFailed { .. }
            | Observed::EngineRefreshFailed { .. }
            | Observed::EngineRefreshUncounted { .. }
            | Observed::EngineRemoved { .. }
            | Observed::DiscoveryRecovered { .. }
            | Observed::StaleRemoved { .. }
            | Observed::PlacementWarning { .. }
            | Observed::NetworkCopyFailed { .. }
            | Observed::StaleRemovalFailed { .. }
            | Observed::JoinRegistering { .. }
            | Observed::JoinRefreshFailed { .. }
            | Observed::AcceptFailed { .. }
            | Observed::ConnectionEnded { .. }
            | Observed::TlsHandshakeFailed { .. }
            | Observed::TlsPeersUnverified
            | Observed::TlsReloaded { .. }
            | Observed::TlsReloadRefused { .. }
            | Observed::StateReloadFailed { .. }
            | Observed::StaleTaskContainerRemoved { .. }
            | Observed::ContainerDropped { .. }
            | Observed::LostCreateNotRecorded { .. }
            | Observed::LostCreateRemoved { .. }
            | Observed::ReconcileFailed { .. }
            | Observed::RequestFailed { .. } => {}
        }
    }
}

/// The election's lines, in the original's words where it had them.
fn election(event: &ElectionEvent) {
    match event {
        // The original reports "not elected" when a candidate starts.
        ElectionEvent::Started => tracing::info!("Leader Election: Cluster leadership lost"),
        ElectionEvent::Acquired => tracing::info!("Leader Election: Cluster leadership acquired"),
        ElectionEvent::Lost { reason } => {
            let reason = match reason {
                LossReason::NotRenewedInTime => "the lock could not be renewed in time",
                LossReason::LockGone(why) => why,
            };
            tracing::info!(reason = %reason, "Leader Election: Cluster leadership lost")
        }
        ElectionEvent::Released => tracing::info!("Leader Election: Cluster leadership released"),
        ElectionEvent::ReleaseFailed { error } => tracing::warn!("Leader Election: cannot release the lock: {error}"),
        ElectionEvent::RenewalFailed { error } => tracing::warn!("Leader Election: renewal failed: {error}"),
        ElectionEvent::NewLeader { primary } => tracing::info!("New leader elected: {primary}"),
        ElectionEvent::DeadPrimaryLockEnded { primary } => {
            tracing::info!("Leader Election: primary {primary} refuses connections; ended its lock")
        }
        ElectionEvent::DeadPrimaryLockNotEnded { primary, error } => {
            tracing::warn!("Leader Election: cannot end the lock of {primary}: {error}")
        }
        ElectionEvent::StoreFailed { error } => tracing::error!("Leader Election: store error: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::capture;
    use swarm_leadership::LockError;

    /// The facts a metric counts move it once each; the others move nothing.
    #[test]
    fn recorded_facts_are_counted() {
        use crate::metrics::Scrape;
        let metrics = Metrics::new();
        let lost = ElectionEvent::Lost { reason: LossReason::NotRenewedInTime };
        let renewal = ElectionEvent::RenewalFailed { error: LockError::Store("connection refused".into()) };
        for event in [&ElectionEvent::Acquired, &lost, &ElectionEvent::Acquired, &renewal, &ElectionEvent::Started] {
            Observed::Election(event).record(&metrics);
        }
        Observed::EngineUnhealthy { name: "node-01", id: "x", failures: 3 }.record(&metrics);
        Observed::DiscoveryFailed { error: "refused" }.record(&metrics);
        Observed::StateStoreFailed { error: "refused" }.record(&metrics);
        Observed::CreateRetried { failed_on: "node-01", next: "node-02" }.record(&metrics);
        Observed::RescheduleFailed { id: "x", from: "node-01", error: "no node" }.record(&metrics);
        Observed::ConnectionOpened.record(&metrics);
        Observed::ConnectionOpened.record(&metrics);
        Observed::ConnectionClosed.record(&metrics);
        Observed::EngineRefreshFailed { name: "node-01", error: "refused" }.record(&metrics);
        let text = metrics.encode(&Scrape { engines: vec![], containers: 0, leader: false }).expect("encodes");
        for line in [
            "swarm_leadership_changes_total{change=\"acquired\"} 2",
            "swarm_leadership_changes_total{change=\"lost\"} 1",
            "swarm_store_errors_total{source=\"election\"} 1",
            "swarm_store_errors_total{source=\"discovery\"} 1",
            "swarm_store_errors_total{source=\"state\"} 1",
            "swarm_engine_health_changes_total{health=\"Unhealthy\"} 1",
            "swarm_container_create_retries_total 1",
            "swarm_reschedules_total{result=\"failed\"} 1",
            "swarm_client_connections 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
    }

    /// The election's lines keep the wording operators' watchers and the
    /// integration tests match.
    #[test]
    fn election_lines_keep_their_wording() {
        let store_down = LockError::Store("connection refused".into());
        let cases = [
            (ElectionEvent::Started, "level=info msg=\"Leader Election: Cluster leadership lost\""),
            (ElectionEvent::Acquired, "level=info msg=\"Leader Election: Cluster leadership acquired\""),
            (
                ElectionEvent::Lost { reason: LossReason::NotRenewedInTime },
                "level=info msg=\"Leader Election: Cluster leadership lost\" \
                 reason=\"the lock could not be renewed in time\"",
            ),
            (
                ElectionEvent::Lost { reason: LossReason::LockGone("session invalidated".into()) },
                "level=info msg=\"Leader Election: Cluster leadership lost\" reason=\"session invalidated\"",
            ),
            (ElectionEvent::Released, "level=info msg=\"Leader Election: Cluster leadership released\""),
            (
                ElectionEvent::ReleaseFailed { error: store_down.clone() },
                "level=warning msg=\"Leader Election: cannot release the lock: connection refused\"",
            ),
            (
                ElectionEvent::RenewalFailed { error: store_down.clone() },
                "level=warning msg=\"Leader Election: renewal failed: connection refused\"",
            ),
            (
                ElectionEvent::NewLeader { primary: "10.0.0.1:4000".into() },
                "level=info msg=\"New leader elected: 10.0.0.1:4000\"",
            ),
            (
                ElectionEvent::DeadPrimaryLockEnded { primary: "10.0.0.1:4000".into() },
                "level=info msg=\"Leader Election: primary 10.0.0.1:4000 refuses connections; ended its lock\"",
            ),
            (
                ElectionEvent::DeadPrimaryLockNotEnded { primary: "10.0.0.1:4000".into(), error: store_down.clone() },
                "level=warning msg=\"Leader Election: cannot end the lock of 10.0.0.1:4000: connection refused\"",
            ),
            (
                ElectionEvent::StoreFailed { error: LockError::Lost("expired".into()) },
                "level=error msg=\"Leader Election: store error: lock lost: expired\"",
            ),
        ];
        for (event, expected) in cases {
            let line = capture::lines(|| Observed::Election(&event).emit());
            assert!(line.ends_with(&format!(" {expected}\n")), "{event:?}: {line:?}");
        }
    }
}
