//! The services' reconciler: on the primary only, and only while it holds
//! the lock (the same fencing as rescheduling), it brings the engines to
//! what the desired state asks for.
//!
//! Each pass (1) reads what the task containers are doing from the
//! cluster's container cache and records the task states that changed,
//! (2) runs the pure planner (`services::plan`) over the services, tasks
//! and nodes, and (3) applies its actions in order: new tasks are stored
//! first, then created through the same `Cluster::create_container` as
//! `docker run`, and started. A pass runs when the API changed the desired
//! state, when the planner asked to be woken (a restart or update delay),
//! and every [`POLL`] to notice containers that ended or engines that went
//! down. Nothing is written to the store unless something changed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use swarm_leadership::Leadership;

use crate::cluster::container::Container;
use crate::cluster::engine::{error_message, Engine, Health};
use crate::cluster::{lost_creates, monitor};
use crate::cluster::{Cluster, CreateError, CreateRequest};
use crate::observe::Observed;
use crate::services::labels::{create_path, task_container, SERVICE_ID_LABEL, TASK_ID_LABEL};
use crate::services::model::{ContainerStatus, NetworkAttachment, TaskState, TaskStatus};
use crate::services::plan::avoided_nodes;
use crate::services::{new_id, plan, Action, NodeView, TaskIdentity, TaskRecord, Timestamp};
use crate::state::StateError;

/// How often a pass runs when nothing wakes the reconciler sooner.
pub const POLL: Duration = Duration::from_secs(1);

/// Runs passes for as long as the manager runs (`leadership` `None`: not
/// replicated, always primary).
pub async fn run(cluster: Arc<Cluster>, leadership: Option<Arc<Leadership>>) {
    let mut wake_at: Option<Timestamp> = None;
    // An engine lost or back changes where tasks may run: plan at once
    // rather than at the next poll (a lost engine's tasks are replaced
    // that much sooner).
    let mut engine_signals = cluster.context.signals.subscribe();
    loop {
        let wait = wake_at.map_or(POLL, |at| at.since(now()).min(POLL));
        tokio::select! {
            _ = cluster.reconcile.notified() => {}
            _ = engine_signals.recv() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(term) = primary_term(leadership.as_deref()) else {
            wake_at = None;
            continue;
        };
        // Never act on copies that were not read, or that a previous
        // primary may have changed since.
        if let Err(e) = cluster.state.refresh_for(term).await {
            Observed::StateReloadFailed { error: &e.to_string() }.emit();
            continue;
        }
        match pass(&cluster).await {
            Ok(next) => wake_at = next,
            Err(e) => Observed::ReconcileFailed { error: &e.to_string() }.emit(),
        }
    }
}

/// The primary term this manager acts in (0 when it is not replicated, so
/// always primary), or `None` while it is a replica.
pub fn primary_term(leadership: Option<&Leadership>) -> Option<u64> {
    match leadership {
        None => Some(0),
        Some(l) => l.primary_term(),
    }
}

/// Now, as the planner counts time.
fn now() -> Timestamp {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    Timestamp::from_unix_nanos(i128::try_from(nanos).unwrap_or(i128::MAX))
}

/// One pass; returns when the planner wants the next one at the latest.
async fn pass(cluster: &Cluster) -> Result<Option<Timestamp>, StateError> {
    // Without services or tasks there is nothing to observe or sweep: the
    // sweep only judges containers of known services, and observing looks
    // at tasks. Skipping both keeps an idle manager over thousands of
    // containers from visiting each of them every second.
    if cluster.state.services().is_empty() && cluster.state.tasks().is_empty() {
        return Ok(None);
    }
    let nodes = node_views(cluster);
    observe(cluster, &nodes).await?;
    remove_stale_containers(cluster).await;
    let services = cluster.state.services();
    let tasks = cluster.state.tasks();
    let plan = {
        let mut rng = rand::thread_rng();
        plan(&services, &tasks, &nodes, now(), &mut || new_id(&mut rng))
    };
    // Every other action first, in order: stops free the resources and
    // ports the new tasks may need. Then the new tasks start together
    // (placement reserves each one as it is decided, so they spread as if
    // one after the other).
    let mut starts = Vec::new();
    for action in plan.actions {
        match action {
            Action::StartTask { record, .. } => starts.push(start_task(cluster, *record, &nodes)),
            other => apply(cluster, other, &nodes).await?,
        }
    }
    run_starts(&mut starts).await?;
    Ok(plan.wake_at)
}

/// How many task containers are created and started at once. Two engines
/// on this project's 2-core machine made 43 replacements in 6.3 s with 8
/// in flight and 5.9 s with 16 (`cargo bench --bench services`).
const PARALLEL_STARTS: usize = 16;

/// Runs the queued task starts, `PARALLEL_STARTS` at a time; the first
/// error is returned once all have ended.
async fn run_starts<F: std::future::Future<Output = Result<(), StateError>>>(
    starts: &mut Vec<F>,
) -> Result<(), StateError> {
    use futures_util::StreamExt;
    let results: Vec<Result<(), StateError>> =
        futures_util::stream::iter(starts.drain(..)).buffer_unordered(PARALLEL_STARTS).collect().await;
    results.into_iter().collect()
}

/// Every validated engine as the planner sees a node.
fn node_views(cluster: &Cluster) -> Vec<NodeView> {
    cluster
        .engines()
        .iter()
        .filter_map(|engine| {
            let info = engine.info()?;
            let id = info.node_id();
            let settings = cluster.state.node(&id).doc;
            let mut node = NodeView::new(&id, &info.name);
            node.ready = engine.health() == Health::Healthy;
            node.availability = settings.availability;
            node.labels = info.labels.clone();
            node.labels.extend(settings.labels);
            Some(node)
        })
        .collect()
}

/// Records the state of every task whose container changed: running,
/// ended (complete or failed by its exit code), or gone from a healthy
/// engine; and carries on with tasks that stopped short of running.
async fn observe(cluster: &Cluster, nodes: &[NodeView]) -> Result<(), StateError> {
    for mut record in cluster.state.tasks() {
        let status = &record.task.status;
        if status.state.is_terminal() {
            continue;
        }
        let container_id = status.container_status.as_ref().map(|c| c.container_id.clone());
        let container_running = container_id
            .as_deref()
            .and_then(|id| cluster.find_container(id))
            .is_some_and(|(_, c)| c.state == "running");
        // A task on a node that is down is the planner's to replace.
        let node_down =
            !record.task.node_id.is_empty() && !nodes.iter().any(|n| n.id == record.task.node_id && n.ready);
        if record.wanted() && status.state < TaskState::Running && !container_running && !node_down {
            resume_task(cluster, record, nodes).await?;
            continue;
        }
        let Some(container_id) = container_id else {
            continue;
        };
        let observed = match cluster.find_container(&container_id) {
            Some((_, container)) => match container.state.as_str() {
                "running" => Some((TaskState::Running, String::new(), None)),
                "exited" | "dead" => {
                    let code = container.details.exit_code.unwrap_or(0);
                    if code == 0 {
                        Some((TaskState::Complete, "finished".to_string(), None))
                    } else {
                        Some((TaskState::Failed, "started".to_string(), Some(format!("task: non-zero exit ({code})"))))
                    }
                }
                _ => None,
            },
            None => {
                let on_healthy_engine = cluster
                    .engines()
                    .iter()
                    .any(|e| e.is_healthy() && e.info().is_some_and(|info| info.node_id() == record.task.node_id));
                on_healthy_engine.then(|| {
                    (TaskState::Failed, "removed".to_string(), Some("the task's container is gone".to_string()))
                })
            }
        };
        let Some((state, message, err)) = observed else {
            continue;
        };
        if state == record.task.status.state {
            continue;
        }
        let exit_code = match state {
            TaskState::Complete => Some(0),
            TaskState::Failed => cluster.find_container(&container_id).and_then(|(_, c)| c.details.exit_code),
            _ => None,
        };
        set_status(&mut record, state, &message, err);
        if let Some(status) = record.task.status.container_status.as_mut() {
            status.exit_code = exit_code;
        }
        cluster.state.put_task(record).await?;
    }
    Ok(())
}

/// Removes task containers the desired state no longer wants, among the
/// services it knows: those of deleted tasks, and those of tasks the manager stopped (status
/// `shutdown`) whose removal could not happen then, typically on an engine
/// that was down when its tasks were replaced and has come back. Tasks that
/// ended by themselves keep their containers (and logs) until deleted.
async fn remove_stale_containers(cluster: &Cluster) {
    for engine in cluster.healthy_engines() {
        for container in engine.containers_where(|c| c.labels.contains_key(TASK_ID_LABEL)) {
            let Some(identity) = TaskIdentity::from_labels(&container.labels) else { continue };
            // Containers of services this cluster does not know are not its
            // own to judge (another cluster on the same engines, or desired
            // state that was lost): they are left alone.
            if cluster.state.service(&identity.service_id).is_none() {
                continue;
            }
            let stale = match cluster.state.task(&identity.task_id) {
                None => true,
                Some(record) => {
                    let recorded = record.task.status.container_status.as_ref().map(|c| c.container_id.as_str());
                    (!record.wanted() && record.task.status.state == TaskState::Shutdown)
                        // A second container of a live task: a previous
                        // primary's create that landed after the task was
                        // placed again.
                        || (record.wanted() && recorded.is_some_and(|id| id != container.id))
                }
            };
            if !stale {
                continue;
            }
            let path = format!("/containers/{}?force=1", container.id);
            if let Ok((status, _)) = engine.client.call(Method::DELETE, &path, None).await {
                if status.is_success() || status == StatusCode::NOT_FOUND {
                    monitor::forget_container(&engine, &container.id).await;
                    Observed::StaleTaskContainerRemoved { task: &identity.task_id, node: &engine.name() }.emit();
                }
            }
        }
    }
}

/// Removes the task containers of a service that was just removed, on every
/// healthy engine, before `docker service rm` answers: what comes next
/// (`docker stack rm` removing the stack's network, a new service with the
/// same published port) finds them gone. A container on an engine that is
/// down is left to the reconciler.
pub async fn remove_service_containers(cluster: &Cluster, service_id: &str) {
    let removals = cluster.healthy_engines().into_iter().flat_map(|engine| {
        let containers =
            engine.containers_where(|c| c.labels.get(SERVICE_ID_LABEL).map(String::as_str) == Some(service_id));
        containers.into_iter().map(move |c| {
            let engine = engine.clone();
            async move {
                let path = format!("/containers/{}?force=1", c.id);
                if let Ok((status, _)) = engine.client.call(Method::DELETE, &path, None).await {
                    if status.is_success() || status == StatusCode::NOT_FOUND {
                        monitor::forget_container(&engine, &c.id).await;
                    }
                }
            }
        })
    });
    futures_util::future::join_all(removals).await;
}

/// Moves `record` to `state`, now.
fn set_status(record: &mut TaskRecord, state: TaskState, message: &str, err: Option<String>) {
    let at = now();
    let container_status = record.task.status.container_status.take();
    record.task.status =
        TaskStatus { timestamp: at, state, message: message.to_string(), err, container_status, port_status: None };
    record.task.updated_at = at;
    record.task.version.index += 1;
}

/// Applies one planned action.
async fn apply(cluster: &Cluster, action: Action, nodes: &[NodeView]) -> Result<(), StateError> {
    match action {
        Action::StartTask { record, .. } => start_task(cluster, *record, nodes).await,
        Action::StopTask { task_id, reason } => {
            let Some(mut record) = cluster.state.task(&task_id) else { return Ok(()) };
            record.task.desired_state = reason.desired_state();
            if !record.task.status.state.is_terminal() {
                remove_container(cluster, &record).await;
                set_status(&mut record, TaskState::Shutdown, &format!("shutdown: {reason}"), None);
            } else {
                record.task.version.index += 1;
                record.task.updated_at = now();
            }
            cluster.state.put_task(record).await
        }
        Action::DeleteTask { task_id } => {
            if let Some(record) = cluster.state.task(&task_id) {
                remove_container(cluster, &record).await;
            }
            cluster.state.remove_task(&task_id).await
        }
        Action::SetUpdateStatus { service_id, status } => {
            let Some(mut service) = cluster.state.service(&service_id) else { return Ok(()) };
            service.update_status = Some(status);
            cluster.state.put_service(service).await
        }
        Action::Rollback { service_id } => {
            let Some(mut service) = cluster.state.service(&service_id) else { return Ok(()) };
            if let Some(previous) = service.previous_spec.take() {
                service.previous_spec = Some(std::mem::replace(&mut service.spec, previous));
                service.version.index += 1;
                service.updated_at = now();
            }
            cluster.state.put_service(service).await
        }
    }
}

/// Stores the new task as pending, then places and starts it.
async fn start_task(cluster: &Cluster, mut record: TaskRecord, nodes: &[NodeView]) -> Result<(), StateError> {
    set_status(&mut record, TaskState::Pending, "pending task scheduling", None);
    cluster.state.put_task(record.clone()).await?;
    place_and_start(cluster, record, nodes).await
}

/// How long a task whose container name is taken waits for the container
/// holding it to show up (a create a previous primary left in flight, on a
/// loaded engine) before it is rejected.
const NAME_IN_USE_WAIT: Duration = Duration::from_secs(60);

/// Creates and starts the container of a task that has none; a task that
/// cannot be placed stays pending with the reason (written only when the
/// reason changes, so an unplaceable task costs no store traffic), one the
/// engine refuses is rejected.
async fn place_and_start(cluster: &Cluster, mut record: TaskRecord, nodes: &[NodeView]) -> Result<(), StateError> {
    let Some(service) = cluster.state.service(&record.task.service_id) else { return Ok(()) };
    let container = match task_container(&service, &record.task, &avoided_nodes(nodes)) {
        Ok(container) => container,
        Err(e) => {
            set_status(&mut record, TaskState::Rejected, "rejected", Some(e.to_string()));
            return cluster.state.put_task(record).await;
        }
    };
    let extra_networks = container.extra_networks;
    let request = CreateRequest {
        name: Some(container.name.clone()),
        path: create_path(&container.name),
        config: container.config,
    };
    let created = match cluster.create_container(request).await {
        Ok(created) => created,
        Err(CreateError::Unschedulable(e)) => {
            let reason = Some(e.to_string());
            if record.task.status.state == TaskState::Pending && record.task.status.err == reason {
                return Ok(());
            }
            set_status(&mut record, TaskState::Pending, "no suitable node", reason);
            return cluster.state.put_task(record).await;
        }
        // The task's name is taken: a previous primary made its container,
        // or is still making it (dockerd holds a name from the start of a
        // create, before the container is listed). Adopted once listed,
        // rather than made twice; the task waits for that, for a while.
        Err(e @ (CreateError::NameInUse(_) | CreateError::Refused { status: StatusCode::CONFLICT, .. })) => {
            if let Some((engine, container)) = find_task_container_on_engines(cluster, &record.task.id).await {
                return adopt(cluster, record, engine, &container).await;
            }
            let reason = Some(e.to_string());
            let status = &record.task.status;
            let waiting = status.state == TaskState::Pending && status.err == reason;
            if !waiting {
                set_status(&mut record, TaskState::Pending, "container name in use", reason);
                return cluster.state.put_task(record).await;
            }
            if now() < status.timestamp + NAME_IN_USE_WAIT {
                return Ok(());
            }
            set_status(&mut record, TaskState::Rejected, "rejected", reason);
            return cluster.state.put_task(record).await;
        }
        Err(e) => {
            set_status(&mut record, TaskState::Rejected, "rejected", Some(e.to_string()));
            return cluster.state.put_task(record).await;
        }
    };
    record.task.node_id = created.engine.info().map(|info| info.node_id()).unwrap_or_default();
    if let Err(e) = connect_networks(&created.engine, &created.id, &extra_networks).await {
        let _ = created.engine.client.call(Method::DELETE, &format!("/containers/{}?force=1", created.id), None).await;
        monitor::forget_container(&created.engine, &created.id).await;
        set_status(&mut record, TaskState::Rejected, "rejected", Some(e));
        return cluster.state.put_task(record).await;
    }
    set_status(&mut record, TaskState::Starting, "starting", None);
    record.task.status.container_status =
        Some(ContainerStatus { container_id: created.id.clone(), ..Default::default() });
    cluster.state.put_task(record.clone()).await?;
    start_container(cluster, record, &created.engine, &created.id).await
}

/// Connects a task's new container to the networks after its first (an
/// engine takes one network in a create), with the service name as alias.
async fn connect_networks(engine: &Engine, container_id: &str, networks: &[NetworkAttachment]) -> Result<(), String> {
    for network in networks {
        let body = serde_json::json!({
            "Container": container_id,
            "EndpointConfig": {"Aliases": network.aliases.clone().unwrap_or_default()},
        });
        let path = format!("/networks/{}/connect", network.target);
        match engine.client.call(Method::POST, &path, Some(body.to_string().into())).await {
            Ok((status, _)) if status.is_success() => {}
            Ok((_, answer)) => return Err(format!("network {}: {}", network.target, error_message(&answer))),
            Err(e) => return Err(format!("network {}: {e}", network.target)),
        }
    }
    Ok(())
}

/// Starts a task's created container and records how that went.
async fn start_container(
    cluster: &Cluster,
    mut record: TaskRecord,
    engine: &Engine,
    container_id: &str,
) -> Result<(), StateError> {
    let start = format!("/containers/{container_id}/start");
    let started = match engine.client.call(Method::POST, &start, None).await {
        Ok((status, _)) if status.is_success() || status == StatusCode::NOT_MODIFIED => Ok(()),
        Ok((_, body)) => Err(error_message(&body)),
        Err(e) => Err(e.to_string()),
    };
    let _ = monitor::refresh_container(engine, container_id).await;
    match started {
        Ok(()) => set_status(&mut record, TaskState::Running, "started", None),
        Err(e) => set_status(&mut record, TaskState::Failed, "starting", Some(e)),
    }
    cluster.state.put_task(record).await
}

/// Carries on with a task wanted running that has not reached `running`
/// and whose container is not running: one left pending (no node fitted),
/// or one a previous primary stopped working on (it died between storing
/// the task, creating its container and starting it). A container already
/// made for the task is adopted, never made twice.
async fn resume_task(cluster: &Cluster, record: TaskRecord, nodes: &[NodeView]) -> Result<(), StateError> {
    let recorded = record.task.status.container_status.as_ref().map(|c| c.container_id.as_str());
    let mut made: Vec<(Arc<Engine>, Arc<Container>)> = cluster
        .engines()
        .into_iter()
        .flat_map(|engine| {
            let found = engine.containers_where(|c| c.labels.get(TASK_ID_LABEL) == Some(&record.task.id));
            found.into_iter().map(move |container| (engine.clone(), container))
        })
        .collect();
    // Two of them (a previous primary's create that landed late elsewhere):
    // the recorded one stays, the sweep removes the other.
    made.sort_by_key(|(_, c)| Some(c.id.as_str()) != recorded);
    let Some((engine, container)) = made.into_iter().next() else {
        return place_and_start(cluster, record, nodes).await;
    };
    adopt(cluster, record, engine, &container).await
}

/// Looks on the healthy engines themselves for the container of task
/// `task_id`, and brings it into the cache.
async fn find_task_container_on_engines(cluster: &Cluster, task_id: &str) -> Option<(Arc<Engine>, Arc<Container>)> {
    for engine in cluster.healthy_engines() {
        let Ok(Some(id)) = lost_creates::find_labelled(&engine, TASK_ID_LABEL, task_id).await else { continue };
        if let Ok(Some(container)) = monitor::refresh_container(&engine, &id).await {
            return Some((engine, container));
        }
    }
    None
}

/// Makes `container` the task's own: records it (and its node) if another
/// was recorded, and starts it if it was only created.
async fn adopt(
    cluster: &Cluster,
    mut record: TaskRecord,
    engine: Arc<Engine>,
    container: &Container,
) -> Result<(), StateError> {
    let recorded = record.task.status.container_status.as_ref().map(|c| c.container_id.as_str());
    if recorded != Some(container.id.as_str()) {
        record.task.node_id = engine.info().map(|info| info.node_id()).unwrap_or_default();
        set_status(&mut record, TaskState::Starting, "starting", None);
        record.task.status.container_status =
            Some(ContainerStatus { container_id: container.id.clone(), ..Default::default() });
        cluster.state.put_task(record.clone()).await?;
    }
    if container.state == "created" {
        return start_container(cluster, record, &engine, &container.id).await;
    }
    Ok(())
}

/// Removes the task's container, wherever it is (nothing if it is gone or
/// its engine is not healthy: a returning engine's stale copies are removed
/// by [`remove_stale_containers`]).
async fn remove_container(cluster: &Cluster, record: &TaskRecord) {
    let Some(id) = record.task.status.container_status.as_ref().map(|c| c.container_id.clone()) else { return };
    let Some((engine, _)) = cluster.find_container(&id) else { return };
    if !engine.is_healthy() {
        // It would only time out; the sweep removes it when the engine is back.
        return;
    }
    let path = format!("/containers/{id}?force=1");
    if let Ok((status, _)) = engine.client.call(Method::DELETE, &path, None).await {
        if status.is_success() || status == StatusCode::NOT_FOUND {
            monitor::forget_container(&engine, &id).await;
        }
    }
}
