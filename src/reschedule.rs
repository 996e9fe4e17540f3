//! Rescheduling on node failure: containers created with
//! `reschedule:on-node-failure` are recreated on another node, with the same
//! name and configuration, when their engine is lost; when that engine
//! returns, the stale copy left on it is removed.

use std::sync::Arc;

use http::{Method, StatusCode};
use swarm_leadership::Leadership;
use tokio::sync::broadcast::error::RecvError;

use crate::cluster::container::Container;
use crate::cluster::engine::{error_message, Engine, Health};
use crate::cluster::{monitor, Cluster, CreateRequest, EngineSignal, SWARM_ID_LABEL};
use crate::observe::Observed;

/// The policy that asks for rescheduling.
const ON_NODE_FAILURE: &str = "on-node-failure";

/// Follows the cluster's engine signals for as long as the manager runs.
/// Only the primary acts (`leadership` `None`: not replicated); replicas
/// keep their state warm and wait.
pub async fn run(cluster: Arc<Cluster>, leadership: Option<Arc<Leadership>>) {
    let mut signals = cluster.context.signals.subscribe();
    loop {
        let signal = match signals.recv().await {
            Ok(signal) => signal,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        if !leadership.as_ref().is_none_or(|l| l.is_primary()) {
            continue;
        }
        let cluster = cluster.clone();
        match signal {
            EngineSignal::Lost(engine) => tokio::spawn(async move { reschedule_from(&cluster, &engine).await }),
            EngineSignal::Back(engine) => tokio::spawn(async move { remove_stale(&cluster, &engine).await }),
        };
    }
}

fn wants_rescheduling(c: &Container) -> bool {
    c.labels
        .get(swarm_scheduler::RESCHEDULE_POLICIES_LABEL)
        .and_then(|l| serde_json::from_str::<Vec<String>>(l).ok())
        .is_some_and(|policies| policies.iter().any(|p| p == ON_NODE_FAILURE))
}

/// Recreates the lost engine's rescheduled containers elsewhere. Each lost
/// copy is forgotten first, so that its name is free for the new one, and
/// put back if the new one cannot be made (the next loss tries again).
async fn reschedule_from(cluster: &Cluster, engine: &Arc<Engine>) {
    let from = engine.name();
    for old in engine.containers_where(wants_rescheduling) {
        // An engine that answered again meanwhile keeps its containers.
        if engine.health() != Health::Unhealthy {
            return;
        }
        monitor::forget_container(engine, &old.id).await;
        match recreate(cluster, &old).await {
            Ok((to, new_id)) => {
                Observed::Rescheduled { id: &old.id, from: &from, to: &to, new_id: &new_id }.record(cluster.metrics())
            }
            Err(error) => {
                engine.lock_containers().await.upsert(old.clone());
                Observed::RescheduleFailed { id: &old.id, from: &from, error: &error }.record(cluster.metrics())
            }
        }
    }
}

/// Creates a copy of `old` on another node (and starts it if `old` was
/// running); returns the new node's name and the new container's ID.
async fn recreate(cluster: &Cluster, old: &Container) -> Result<(String, String), String> {
    let config = old.details.recreate.clone().ok_or("the container was never inspected")?;
    let path = format!(
        "/containers/create?name={}",
        url::form_urlencoded::byte_serialize(old.name.as_bytes()).collect::<String>()
    );
    let request = CreateRequest { name: Some(old.name.clone()), config, path };
    let created = cluster.create_container(request).await.map_err(|e| e.to_string())?;
    if old.is_running() {
        let start = format!("/containers/{}/start", created.id);
        let (status, body) = created.engine.client.call(Method::POST, &start, None).await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(error_message(&body));
        }
        let _ = monitor::refresh_container(&created.engine, &created.id).await;
    }
    Ok((created.engine.name(), created.id))
}

/// Removes from a returning engine the containers that were rescheduled
/// elsewhere while it was away (same swarm ID on another engine).
async fn remove_stale(cluster: &Cluster, engine: &Arc<Engine>) {
    let node = engine.name();
    let here: Vec<(String, String)> = engine
        .containers_where(wants_rescheduling)
        .iter()
        .filter_map(|c| c.labels.get(SWARM_ID_LABEL).map(|s| (c.id.clone(), s.clone())))
        .collect();
    for (id, swarm_id) in here {
        let elsewhere = cluster
            .engines()
            .iter()
            .filter(|e| e.addr != engine.addr)
            .any(|e| !e.containers_where(|c| c.labels.get(SWARM_ID_LABEL) == Some(&swarm_id)).is_empty());
        if !elsewhere {
            continue;
        }
        let error = match engine.client.call(Method::DELETE, &format!("/containers/{id}?force=1"), None).await {
            Ok((status, _)) if status.is_success() || status == StatusCode::NOT_FOUND => {
                monitor::forget_container(engine, &id).await;
                Observed::StaleRemoved { id: &id, node: &node }.emit();
                continue;
            }
            Ok((_, body)) => error_message(&body),
            Err(e) => e.to_string(),
        };
        Observed::StaleRemovalFailed { id: &id, node: &node, error: &error }.emit();
    }
}
