//! Swarm mode's service verbs (`docker service create/ls/inspect/update/
//! scale/rollback/rm`) over the desired state: this module only checks and
//! stores specs; the reconciler (`src/reconcile.rs`) runs their tasks and is
//! woken after every change.
//!
//! Published ports: classic engines have no routing mesh, so every port is
//! published in host mode on the node that runs the task, whatever
//! `PublishMode` the client sent. `Endpoint.Spec` shows what was sent,
//! `Endpoint.Ports` what applies (`PublishMode` `host`).

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use swarm_proxy::ProxyBody;

use super::reply::json_response;
use super::request::{parse_filters, query_bool, query_get, read_json_body};
use super::{ApiError, Ctx};
use crate::cluster::Cluster;
use crate::services::constraints::to_classic_env;
use crate::services::model::{Endpoint, ObjectVersion, ServiceMode, UpdateState, UpdateStatus};
use crate::services::{new_id, Service, ServiceSpec, TaskRecord, TaskState, Timestamp};
use crate::state::StateError;

/// Writes retried when another writer (the reconciler recording an update's
/// progress) changed the service between our read and our write.
const WRITE_ATTEMPTS: usize = 3;

/// swarmkit's limit on object names.
const MAX_NAME_LEN: usize = 63;

/// The service `wanted` names: by full ID, name, or unique ID prefix, in
/// that order, as dockerd resolves them.
pub fn find(cluster: &Cluster, wanted: &str) -> Result<Service, ApiError> {
    let services = cluster.state.services();
    if let Some(s) =
        services.iter().find(|s| s.id == wanted).or_else(|| services.iter().find(|s| s.spec.name == wanted))
    {
        return Ok(s.clone());
    }
    let prefixed: Vec<&Service> = services.iter().filter(|s| s.id.starts_with(wanted)).collect();
    match prefixed.as_slice() {
        [only] => Ok((*only).clone()),
        [] => Err(ApiError::NotFound(format!("service {wanted} not found"))),
        many => Err(ApiError::BadRequest(format!("service {wanted} is ambiguous ({} matches found)", many.len()))),
    }
}

/// A gRPC-style message, as dockerd relays swarmkit's refusals (scripts
/// match these).
fn rpc_error(code: &str, desc: &str) -> String {
    format!("rpc error: code = {code} desc = {desc}")
}

/// Parses and checks a spec the way swarmkit does before storing it.
fn parse_spec(body: &[u8]) -> Result<ServiceSpec, ApiError> {
    let spec: ServiceSpec =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid service spec: {e}")))?;
    spec.validate()?;
    to_classic_env(spec.task_template.constraints())?;
    Ok(spec)
}

/// swarmkit's rule: a DNS name component (letters, digits, `-` and `_`
/// inside), at most 63 characters; it names the tasks' containers too.
fn check_name(name: &str) -> Result<(), ApiError> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = alnum(name.chars().next())
        && alnum(name.chars().last())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ApiError::BadRequest(rpc_error("InvalidArgument", "name must be valid as a DNS name component")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ApiError::BadRequest(rpc_error("InvalidArgument", &format!("name {name:?} is too long"))));
    }
    Ok(())
}

/// A name for a service created without one, as dockerd gives
/// (`adjective_noun`).
fn random_name() -> String {
    const ADJECTIVES: &[&str] =
        &["brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid", "merry", "nifty", "quiet", "sharp"];
    const NOUNS: &[&str] =
        &["badger", "cedar", "comet", "falcon", "harbor", "heron", "maple", "otter", "pebble", "river", "tundra"];
    use rand::seq::SliceRandom;
    let mut rng = rand::thread_rng();
    format!("{}_{}", ADJECTIVES.choose(&mut rng).unwrap_or(&"calm"), NOUNS.choose(&mut rng).unwrap_or(&"river"))
}

/// `Endpoint`: the spec as sent and the ports as applied (host mode).
fn endpoint(spec: &ServiceSpec) -> Endpoint {
    let ports = spec
        .ports()
        .iter()
        .cloned()
        .map(|mut port| {
            port.publish_mode = Some("host".into());
            port
        })
        .collect();
    Endpoint { spec: Some(spec.endpoint_spec.clone().unwrap_or_default()), ports, virtual_ips: Vec::new() }
}

/// `POST /services/create`. `X-Registry-Auth` is not used: engines pull
/// with their own credentials.
pub async fn create(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let (_, body) = read_json_body(req, ctx.api.limits.max_json_body).await?;
    let mut spec = parse_spec(&body)?;
    if spec.name.is_empty() {
        spec.name = random_name();
    }
    check_name(&spec.name)?;
    let now = Timestamp::now();
    let service = Service {
        id: new_id(&mut rand::thread_rng()),
        version: ObjectVersion { index: 1 },
        created_at: now,
        updated_at: now,
        endpoint: Some(endpoint(&spec)),
        spec,
        previous_spec: None,
        update_status: None,
        extra: Default::default(),
    };
    let id = service.id.clone();
    ctx.cluster().state.create_service(service).await?;
    ctx.cluster().reconcile.notify_one();
    Ok(json_response(StatusCode::CREATED, &json!({"ID": id, "Warnings": []})))
}

/// `GET /services?filters=...&status=true`.
pub fn list(ctx: &Ctx<'_>, req: &Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let query = req.uri().query();
    let filters = ServiceFilters::parse(query_get(query, "filters").as_deref())?;
    let with_status = query_bool(query, "status");
    let state = &ctx.cluster().state;
    let tasks = if with_status { state.tasks() } else { Vec::new() };
    let services: Vec<Value> = state
        .services()
        .iter()
        .filter(|s| filters.matches(s))
        .map(|s| {
            let mut value = to_json(s);
            if with_status {
                value["ServiceStatus"] = service_status(s, &tasks);
            }
            value
        })
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(services)))
}

fn to_json(service: &Service) -> Value {
    serde_json::to_value(service).unwrap_or(Value::Null)
}

/// `ServiceStatus`: running tasks (running and wanted so), and how many are
/// wanted: the replicas, or for a global service the tasks wanted running
/// (one per eligible node once the reconciler has placed them).
fn service_status(service: &Service, tasks: &[TaskRecord]) -> Value {
    let mine: Vec<&TaskRecord> = tasks.iter().filter(|t| t.task.service_id == service.id).collect();
    let wanted = |t: &&&TaskRecord| t.task.desired_state == TaskState::Running;
    let running = mine.iter().filter(wanted).filter(|t| t.task.status.state == TaskState::Running).count();
    let desired = match service.spec.mode() {
        ServiceMode::Replicated(r) => r.replicas.unwrap_or(1),
        _ => mine.iter().filter(wanted).count() as u64,
    };
    json!({"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": 0})
}

/// The filters of `GET /services`; values of one key are alternatives.
struct ServiceFilters(BTreeMap<String, Vec<String>>);

impl ServiceFilters {
    fn parse(raw: Option<&str>) -> Result<ServiceFilters, ApiError> {
        let filters = parse_filters(raw)?;
        for (key, values) in &filters {
            match key.as_str() {
                "id" | "name" | "label" => {}
                "mode" => {
                    if let Some(bad) = values.iter().find(|v| !["replicated", "global"].contains(&v.as_str())) {
                        return Err(ApiError::BadRequest(format!("Invalid filter: 'mode'='{bad}'")));
                    }
                }
                _ => return Err(ApiError::BadRequest(format!("invalid filter '{key}'"))),
            }
        }
        Ok(ServiceFilters(filters))
    }

    fn matches(&self, service: &Service) -> bool {
        let mode = match service.spec.mode() {
            ServiceMode::Global(_) => "global",
            _ => "replicated",
        };
        let labels = service.spec.labels.clone().unwrap_or_default();
        self.0.iter().all(|(key, values)| {
            values.is_empty()
                || values.iter().any(|v| match key.as_str() {
                    // swarmkit matches IDs and names by prefix.
                    "id" => service.id.starts_with(v.as_str()),
                    "name" => service.spec.name.starts_with(v.as_str()),
                    "mode" => v == mode,
                    _ => label_matches(&labels, v),
                })
        })
    }
}

/// `label=k` (present) or `label=k=v`.
pub fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(filter),
    }
}

/// `GET /services/{id}`. `insertDefaults` is not needed: specs are shown
/// as sent, and the CLI sends them back as they are.
pub fn inspect(ctx: &Ctx<'_>) -> Result<Response<ProxyBody>, ApiError> {
    Ok(json_response(StatusCode::OK, &to_json(&find(ctx.cluster(), &ctx.route.name)?)))
}

/// `POST /services/{id}/update?version=N[&rollback=previous]`.
pub async fn update(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let query = req.uri().query();
    let version = query_get(query, "version").and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| {
        ApiError::BadRequest("invalid service version: a version=N query parameter is required".into())
    })?;
    let rollback = match query_get(query, "rollback").as_deref() {
        None | Some("" | "none") => false,
        Some("previous") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("unrecognized rollback option {other}"))),
    };
    let (_, body) = read_json_body(req, ctx.api.limits.max_json_body).await?;
    // A rollback returns to the stored previous spec; the body is not used.
    let spec = if rollback { None } else { Some(parse_spec(&body)?) };
    let state = &ctx.cluster().state;
    let mut attempt = 1;
    loop {
        let current = find(ctx.cluster(), &ctx.route.name)?;
        if current.version.index != version {
            return Err(StateError::OutOfSequence.into());
        }
        let next = match &spec {
            Some(spec) => updated(current, spec.clone())?,
            None => rolled_back(current)?,
        };
        match state.put_service(next).await {
            // The copy was reloaded: the next attempt checks the version again.
            Err(StateError::OutOfSequence) if attempt < WRITE_ATTEMPTS => attempt += 1,
            result => {
                result?;
                break;
            }
        }
    }
    ctx.cluster().reconcile.notify_one();
    Ok(json_response(StatusCode::OK, &json!({"Warnings": []})))
}

/// `current` with `spec`, as swarmkit applies an update.
fn updated(mut current: Service, mut spec: ServiceSpec) -> Result<Service, ApiError> {
    if spec.name.is_empty() {
        spec.name = current.spec.name.clone();
    }
    if spec.name != current.spec.name {
        return Err(ApiError::BadRequest(rpc_error("Unimplemented", "renaming services is not supported")));
    }
    if is_global(&spec) != is_global(&current.spec) {
        return Err(ApiError::BadRequest(rpc_error("Unimplemented", "service mode change is not allowed")));
    }
    let now = Timestamp::now();
    let replaces_tasks = spec.task_template != current.spec.task_template || spec.ports() != current.spec.ports();
    // What the planner (`services/plan/update.rs`) drives a rolling update
    // from: `updating` since `StartedAt` (tasks created since then with the
    // new spec belong to it). Otherwise cleared, as swarmkit does on every
    // update: a paused update is retried by the planner if tasks are still
    // out of date.
    current.update_status = replaces_tasks.then(|| UpdateStatus {
        state: UpdateState::Updating,
        started_at: Some(now),
        completed_at: None,
        message: "update in progress".into(),
    });
    current.endpoint = Some(endpoint(&spec));
    current.previous_spec = Some(std::mem::replace(&mut current.spec, spec));
    current.version.index += 1;
    current.updated_at = now;
    Ok(current)
}

/// `current` back on its previous spec (`docker service rollback`).
fn rolled_back(mut current: Service) -> Result<Service, ApiError> {
    let Some(previous) = current.previous_spec.take() else {
        let desc = format!("service {} does not have a previous spec", current.id);
        return Err(ApiError::BadRequest(rpc_error("FailedPrecondition", &desc)));
    };
    let now = Timestamp::now();
    current.endpoint = Some(endpoint(&previous));
    current.previous_spec = Some(std::mem::replace(&mut current.spec, previous));
    current.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackStarted,
        started_at: Some(now),
        completed_at: None,
        message: "manually requested rollback".into(),
    });
    current.version.index += 1;
    current.updated_at = now;
    Ok(current)
}

fn is_global(spec: &ServiceSpec) -> bool {
    matches!(spec.mode(), ServiceMode::Global(_))
}

/// `DELETE /services/{id}`: the reconciler then stops and removes its tasks.
pub async fn remove(ctx: &Ctx<'_>) -> Result<Response<ProxyBody>, ApiError> {
    let state = &ctx.cluster().state;
    let mut attempt = 1;
    let removed = loop {
        let service = find(ctx.cluster(), &ctx.route.name)?;
        match state.remove_service(&service.id).await {
            Err(StateError::OutOfSequence) if attempt < WRITE_ATTEMPTS => attempt += 1,
            result => {
                result?;
                break service;
            }
        }
    };
    crate::reconcile::remove_service_containers(ctx.cluster(), &removed.id).await;
    ctx.cluster().reconcile.notify_one();
    Ok(Response::new(swarm_proxy::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_components() {
        for good in ["web", "a", "web_1", "my-app", "A9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-web", "web-", "we b", "web.1", "wéb", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&random_name()).is_ok());
    }

    #[test]
    fn label_filters() {
        let labels: BTreeMap<String, String> = [("tier".to_string(), "web".to_string())].into();
        assert!(label_matches(&labels, "tier") && label_matches(&labels, "tier=web"));
        assert!(!label_matches(&labels, "tier=db") && !label_matches(&labels, "zone"));
    }

    fn spec(value: Value) -> ServiceSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn updates_keep_the_previous_spec_and_start_a_rolling_update_only_when_tasks_change() {
        let first = spec(json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "nginx:1"}}}));
        let service = Service {
            id: "s1".into(),
            version: ObjectVersion { index: 1 },
            endpoint: Some(endpoint(&first)),
            spec: first.clone(),
            ..Default::default()
        };
        let mut scaled = first.clone();
        scaled.mode = Some(ServiceMode::Replicated(crate::services::model::Replicated {
            replicas: Some(3),
            extra: Default::default(),
        }));
        let after_scale = updated(service.clone(), scaled.clone()).unwrap();
        assert_eq!((after_scale.version.index, after_scale.update_status.as_ref()), (2, None));
        assert_eq!(after_scale.previous_spec.as_ref(), Some(&first));

        let mut image = scaled.clone();
        image.task_template.container_spec.as_mut().unwrap().image = "nginx:2".into();
        let after_image = updated(after_scale, image).unwrap();
        let status = after_image.update_status.clone().unwrap();
        assert_eq!((status.state, status.started_at.is_some()), (UpdateState::Updating, true));

        let back = rolled_back(after_image).unwrap();
        assert_eq!(back.spec, scaled);
        assert_eq!(back.update_status.unwrap().state, UpdateState::RollbackStarted);
        assert_eq!(back.version.index, 4);
        assert!(rolled_back(service).is_err(), "nothing to roll back to");

        let renamed = spec(json!({"Name": "other", "TaskTemplate": {"ContainerSpec": {"Image": "nginx:1"}}}));
        assert!(updated(back_to(&first), renamed).is_err());
        let global =
            spec(json!({"Name": "web", "Mode": {"Global": {}}, "TaskTemplate": {"ContainerSpec": {"Image": "x"}}}));
        assert!(updated(back_to(&first), global).is_err());
    }

    fn back_to(spec: &ServiceSpec) -> Service {
        Service { id: "s1".into(), spec: spec.clone(), ..Default::default() }
    }

    #[test]
    fn ports_are_applied_in_host_mode() {
        let s = spec(json!({"TaskTemplate": {"ContainerSpec": {"Image": "x"}},
            "EndpointSpec": {"Mode": "vip", "Ports": [{"TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}}));
        let e = endpoint(&s);
        assert_eq!(e.ports[0].publish_mode.as_deref(), Some("host"));
        assert_eq!(e.spec.unwrap().ports.unwrap()[0].publish_mode.as_deref(), Some("ingress"));
    }
}
