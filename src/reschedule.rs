//! Rescheduling on node failure: containers created with
//! `reschedule:on-node-failure` are recreated on another node, with the same
//! name and configuration, when their engine is lost; when that engine
//! returns, the stale copy left on it is removed.

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};
use swarm_scheduler::ContainerRequest;
use tokio::sync::broadcast::error::RecvError;

use crate::api::{place_and_create, Api};
use crate::cluster::container::Container;
use crate::cluster::engine::Engine;
use crate::cluster::{monitor, SWARM_ID_LABEL};
use crate::observe::Observed;

/// The policy that asks for rescheduling.
const ON_NODE_FAILURE: &str = "on-node-failure";

/// Follows the cluster's own events for as long as the manager runs.
pub async fn run(api: Arc<Api>) {
    let mut events = api.cluster.shared.events.subscribe();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        // Only the primary acts; replicas keep their state warm and wait.
        if event.value["Type"] != "swarm" || !api.is_primary() {
            continue;
        }
        let Some(engine) = event.value["node"]["Addr"].as_str().and_then(|a| api.cluster.engine(a)) else {
            continue;
        };
        let api = api.clone();
        match event.value["Action"].as_str() {
            Some("engine_disconnect") => {
                tokio::spawn(async move { reschedule_from(&api, &engine).await });
            }
            Some("engine_reconnect" | "engine_connect") => {
                tokio::spawn(async move { remove_stale(&api, &engine).await });
            }
            _ => {}
        }
    }
}

fn wants_rescheduling(c: &Container) -> bool {
    c.labels
        .get(swarm_scheduler::RESCHEDULE_POLICIES_LABEL)
        .and_then(|l| serde_json::from_str::<Vec<String>>(l).ok())
        .is_some_and(|policies| policies.iter().any(|p| p == ON_NODE_FAILURE))
}

/// Recreates the lost engine's rescheduled containers elsewhere.
async fn reschedule_from(api: &Api, engine: &Arc<Engine>) {
    let from = engine.name();
    let lost: Vec<Arc<Container>> =
        engine.state.read().containers.values().filter(|c| wants_rescheduling(c)).cloned().collect();
    for old in lost {
        match recreate(api, &old).await {
            Ok((to, new_id)) => {
                // The lost copy no longer holds its name: the new one does.
                engine.state.write().containers.remove(&old.id);
                Observed::Rescheduled { id: &old.id, from: &from, to: &to, new_id: &new_id }.emit()
            }
            Err(error) => Observed::RescheduleFailed { id: &old.id, from: &from, error: &error }.emit(),
        }
    }
}

/// Creates a copy of `old` on another node (and starts it if `old` was
/// running); returns the new node's name and the new container's ID.
async fn recreate(api: &Api, old: &Container) -> Result<(String, String), String> {
    let mut config = old.details.recreate.clone().ok_or("the container was never inspected")?;
    let request = ContainerRequest::from_create_body(Some(&old.name), &mut config).map_err(|e| e.to_string())?;
    let path = format!(
        "/containers/create?name={}",
        url::form_urlencoded::byte_serialize(old.name.as_bytes()).collect::<String>()
    );
    let (engine, answer) =
        place_and_create(api, request, &config, &HeaderMap::new(), &path).await.map_err(|e| e.to_string())?;
    if answer.status != StatusCode::CREATED {
        return Err(crate::cluster::engine::error_message(&answer.body));
    }
    let new_id = answer.json()["Id"].as_str().unwrap_or_default().to_string();
    if matches!(old.state.as_str(), "running" | "paused" | "restarting") {
        let (status, body) = engine
            .client
            .call(Method::POST, &format!("/containers/{new_id}/start"), None)
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(crate::cluster::engine::error_message(&body));
        }
        let _ = monitor::refresh_container(&engine, &new_id).await;
    }
    Ok((engine.name(), new_id))
}

/// Removes from a returning engine the containers that were rescheduled
/// elsewhere while it was away (same swarm ID on another engine).
async fn remove_stale(api: &Api, engine: &Arc<Engine>) {
    let node = engine.name();
    let here: Vec<(String, String)> = engine
        .state
        .read()
        .containers
        .values()
        .filter(|c| wants_rescheduling(c))
        .filter_map(|c| c.labels.get(SWARM_ID_LABEL).map(|s| (c.id.clone(), s.clone())))
        .collect();
    for (id, swarm_id) in here {
        let elsewhere = api
            .cluster
            .engines()
            .iter()
            .filter(|e| e.addr != engine.addr)
            .any(|e| e.state.read().containers.values().any(|c| c.labels.get(SWARM_ID_LABEL) == Some(&swarm_id)));
        if !elsewhere {
            continue;
        }
        match engine.client.call(Method::DELETE, &format!("/containers/{id}?force=1"), None).await {
            Ok((status, _)) if status.is_success() || status == StatusCode::NOT_FOUND => {
                engine.state.write().containers.remove(&id);
                Observed::StaleRemoved { id: &id, node: &node }.emit();
            }
            Ok((_, body)) => tracing::warn!(
                "Cannot remove rescheduled container {id} from {node}: {}",
                crate::cluster::engine::error_message(&body)
            ),
            Err(e) => tracing::warn!("Cannot remove rescheduled container {id} from {node}: {e}"),
        }
    }
}
