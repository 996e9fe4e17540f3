//! Swarm mode's tasks (`docker service ps`, `GET /tasks`), as the
//! reconciler records them in the desired state.

use std::collections::{BTreeMap, BTreeSet};

use http::{Request, Response, StatusCode};
use serde_json::Value;
use swarm_proxy::ProxyBody;

use super::reply::json_response;
use super::request::{parse_filters, query_get};
use super::services::{self, label_matches};
use super::{ApiError, Ctx};
use crate::cluster::Cluster;
use crate::services::model::Labels;
use crate::services::{ServiceSpec, TaskRecord, TaskState};

/// `GET /tasks?filters=...`.
pub fn list(ctx: &Ctx<'_>, req: &Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let filters = TaskFilters::parse(ctx.cluster(), query_get(req.uri().query(), "filters").as_deref())?;
    let tasks: Vec<Value> = ctx
        .cluster()
        .state
        .tasks()
        .iter()
        .filter(|t| filters.matches(t))
        .map(|t| serde_json::to_value(&t.task).unwrap_or(Value::Null))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(tasks)))
}

/// `GET /tasks/{id}`: by full ID or unique ID prefix.
pub fn inspect(ctx: &Ctx<'_>) -> Result<Response<ProxyBody>, ApiError> {
    let record = find(ctx.cluster(), &ctx.route.name)?;
    Ok(json_response(StatusCode::OK, &serde_json::to_value(&record.task).unwrap_or(Value::Null)))
}

/// The task `wanted` names (full ID, else unique ID prefix).
pub fn find(cluster: &Cluster, wanted: &str) -> Result<TaskRecord, ApiError> {
    if let Some(record) = cluster.state.task(wanted) {
        return Ok(record);
    }
    let tasks = cluster.state.tasks();
    let prefixed: Vec<&TaskRecord> = tasks.iter().filter(|t| t.task.id.starts_with(wanted)).collect();
    match prefixed.as_slice() {
        [only] => Ok((*only).clone()),
        [] => Err(ApiError::NotFound(format!("task {wanted} not found"))),
        many => Err(ApiError::BadRequest(format!("task {wanted} is ambiguous ({} matches found)", many.len()))),
    }
}

/// The filters of `GET /tasks`, with services and nodes resolved to IDs
/// (they may be given by name, as dockerd accepts).
struct TaskFilters {
    filters: BTreeMap<String, Vec<String>>,
    services: Option<BTreeSet<String>>,
    nodes: Option<BTreeSet<String>>,
    /// `_up-to-date`: the specs of the services, to keep only the tasks that
    /// run their service's current spec. The CLI's progress display
    /// (`docker service create/update` without `--detach`) counts those.
    up_to_date: Option<BTreeMap<String, ServiceSpec>>,
    /// `label`: every one must match a label of the task's service (what
    /// swarmkit compares, and what `docker stack ps` filters on), with the
    /// services' labels by ID.
    labels: Option<(Vec<String>, BTreeMap<String, Labels>)>,
}

impl TaskFilters {
    fn parse(cluster: &Cluster, raw: Option<&str>) -> Result<TaskFilters, ApiError> {
        let mut filters = parse_filters(raw)?;
        for (key, values) in &filters {
            match key.as_str() {
                "id" | "name" | "label" | "service" | "node" | "_up-to-date" => {}
                "desired-state" => {
                    if let Some(bad) =
                        values.iter().find(|v| !["running", "shutdown", "accepted"].contains(&v.as_str()))
                    {
                        return Err(ApiError::BadRequest(format!("Invalid desired-state filter '{bad}'")));
                    }
                }
                _ => return Err(ApiError::BadRequest(format!("invalid filter '{key}'"))),
            }
        }
        let services = match filters.remove("service") {
            Some(values) => Some(
                values.iter().map(|v| services::find(cluster, v).map(|s| s.id)).collect::<Result<BTreeSet<_>, _>>()?,
            ),
            None => None,
        };
        let nodes = match filters.remove("node") {
            Some(values) => Some(values.iter().map(|v| node_id(cluster, v)).collect::<Result<BTreeSet<_>, _>>()?),
            None => None,
        };
        let up_to_date = filters
            .remove("_up-to-date")
            .filter(|values| values.iter().any(|v| v != "false"))
            .map(|_| cluster.state.services().into_iter().map(|s| (s.id, s.spec)).collect::<BTreeMap<_, _>>());
        let labels = filters.remove("label").map(|wanted| {
            let by_service = cluster
                .state
                .services()
                .into_iter()
                .map(|s| (s.id, s.spec.labels.unwrap_or_default()))
                .collect::<BTreeMap<_, _>>();
            (wanted, by_service)
        });
        Ok(TaskFilters { filters, services, nodes, up_to_date, labels })
    }

    fn matches(&self, record: &TaskRecord) -> bool {
        let task = &record.task;
        self.up_to_date.as_ref().is_none_or(|specs| specs.get(&task.service_id).is_some_and(|s| record.is_current(s)))
            && self.services.as_ref().is_none_or(|ids| ids.contains(&task.service_id))
            && self.nodes.as_ref().is_none_or(|ids| ids.contains(&task.node_id))
            && self.labels.as_ref().is_none_or(|(wanted, by_service)| {
                let labels = by_service.get(&task.service_id);
                wanted.iter().all(|w| labels.is_some_and(|l| label_matches(l, w)))
            })
            && self.filters.iter().all(|(key, values)| {
                values.is_empty()
                    || values.iter().any(|v| match key.as_str() {
                        "id" => task.id.starts_with(v.as_str()),
                        "name" => task.name.starts_with(v.as_str()),
                        _ => desired_state_is(task.desired_state, v),
                    })
            })
    }
}

fn desired_state_is(state: TaskState, wanted: &str) -> bool {
    match wanted {
        "running" => state == TaskState::Running,
        "shutdown" => state == TaskState::Shutdown,
        _ => state == TaskState::Accepted,
    }
}

/// The node ID of the engine `wanted` names (node ID, host name, or unique
/// ID prefix), as `docker node inspect` resolves it.
fn node_id(cluster: &Cluster, wanted: &str) -> Result<String, ApiError> {
    let nodes: Vec<(String, String)> =
        cluster.engines().iter().filter_map(|e| e.info()).map(|info| (info.node_id(), info.name.clone())).collect();
    let found = nodes.iter().find(|(id, _)| id == wanted).or_else(|| nodes.iter().find(|(_, name)| name == wanted));
    if let Some((id, _)) = found {
        return Ok(id.clone());
    }
    let prefixed: Vec<&(String, String)> = nodes.iter().filter(|(id, _)| id.starts_with(wanted)).collect();
    match prefixed.as_slice() {
        [(id, _)] => Ok(id.clone()),
        _ => Err(ApiError::NotFound(format!("node {wanted} not found"))),
    }
}
