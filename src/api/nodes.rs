//! Swarm mode's node verbs over the cluster's engines: every engine the
//! manager knows is a worker node for `docker node ls`, `node inspect` and
//! `node update` (availability and labels, kept in the desired state), and
//! `docker swarm init/join/leave` are refused with what to do instead.

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use swarm_proxy::ProxyBody;

use super::reply::json_response;
use super::request::{query_get, read_json_body};
use super::{ApiError, Ctx};
use crate::cluster::engine::{Engine, Health};
use crate::cluster::Cluster;
use crate::state::{Availability, NodeSettings};

/// Why `docker swarm init/join/leave` do not apply here.
pub const SWARM_VERBS_REFUSED: &str = "This cluster is managed by swarm manage (Classic Swarm): engines join it with \
     `swarm join --advertise <engine ip:port> <discovery>`, not with docker swarm init, join or leave";

/// The node view of `engine`, if it has been validated once (a pending
/// engine has no identity yet).
fn node(cluster: &Cluster, engine: &Engine) -> Option<Value> {
    let info = engine.info()?;
    let id = info.node_id();
    let settings = cluster.state.node(&id);
    let updated_at = if settings.updated_at.is_empty() { "0001-01-01T00:00:00Z" } else { &settings.updated_at };
    let ready = engine.health() == Health::Healthy;
    let engine_labels: serde_json::Map<String, Value> =
        info.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let ip = engine.addr.rsplit_once(':').map_or(engine.addr.as_str(), |(ip, _)| ip);
    let arch = if cfg!(target_arch = "x86_64") { "x86_64" } else { std::env::consts::ARCH };
    Some(json!({
        "ID": id,
        "Version": {"Index": settings.index},
        "CreatedAt": "0001-01-01T00:00:00Z",
        "UpdatedAt": updated_at,
        "Spec": {"Labels": settings.doc.labels, "Role": "worker", "Availability": settings.doc.availability.as_str()},
        "Description": {
            "Hostname": info.name,
            "Platform": {"Architecture": arch, "OS": info.labels.get("ostype").map_or("linux", String::as_str)},
            "Resources": {"NanoCPUs": info.cpus.saturating_mul(1_000_000_000), "MemoryBytes": info.memory},
            "Engine": {"EngineVersion": info.server_version, "Labels": engine_labels},
        },
        "Status": {"State": if ready { "ready" } else { "down" }, "Addr": ip},
    }))
}

/// `GET /nodes`.
pub fn list(ctx: &Ctx<'_>) -> Result<Response<ProxyBody>, ApiError> {
    let cluster = ctx.cluster();
    let mut nodes: Vec<Value> = cluster.engines().iter().filter_map(|e| node(cluster, e)).collect();
    nodes.sort_by(|a, b| a["Description"]["Hostname"].as_str().cmp(&b["Description"]["Hostname"].as_str()));
    Ok(json_response(StatusCode::OK, &Value::Array(nodes)))
}

/// `GET /nodes/{id}`.
pub fn inspect(ctx: &Ctx<'_>) -> Result<Response<ProxyBody>, ApiError> {
    Ok(json_response(StatusCode::OK, &find(ctx.cluster(), &ctx.route.name)?))
}

/// The node `wanted` names: by full ID, hostname, or unique ID prefix, as
/// dockerd resolves them.
fn find(cluster: &Cluster, wanted: &str) -> Result<Value, ApiError> {
    let nodes: Vec<Value> = cluster.engines().iter().filter_map(|e| node(cluster, e)).collect();
    let is = |n: &Value, key: &str| n["ID"].as_str() == Some(key);
    let found = nodes
        .iter()
        .find(|n| is(n, wanted))
        .or_else(|| nodes.iter().find(|n| n["Description"]["Hostname"].as_str() == Some(wanted)))
        .or_else(|| {
            let mut prefixed = nodes.iter().filter(|n| n["ID"].as_str().is_some_and(|id| id.starts_with(wanted)));
            match (prefixed.next(), prefixed.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        });
    found.cloned().ok_or_else(|| ApiError::NotFound(format!("node {wanted} not found")))
}

/// What `docker node update` sends: the whole node spec.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeSpec {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    availability: Option<Availability>,
}

/// `POST /nodes/{id}/update?version=N`: availability and labels; the
/// version must be the node's current `Version.Index`.
pub async fn update(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let node = find(ctx.cluster(), &ctx.route.name)?;
    let id = node["ID"].as_str().unwrap_or_default().to_string();
    let version = query_get(req.uri().query(), "version")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::BadRequest("invalid node version: a version=N query parameter is required".into()))?;
    let (_, body) = read_json_body(req, ctx.api.limits.max_json_body).await?;
    let spec: NodeSpec =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid node spec: {e}")))?;
    if spec.role.as_deref().is_some_and(|role| role != "worker") {
        return Err(ApiError::BadRequest(
            "the nodes of a Classic Swarm cluster are its engines; they cannot be promoted to managers \
             (managers are `swarm manage` processes)"
                .into(),
        ));
    }
    let settings = NodeSettings { availability: spec.availability.unwrap_or_default(), labels: spec.labels };
    ctx.cluster().state.update_node(&id, version, settings).await?;
    Ok(Response::new(swarm_proxy::empty()))
}

/// `docker swarm init/join/leave/update` and `GET /swarm`.
/// Secrets and configs need swarm mode's encrypted Raft store; classic
/// engines cannot mount them into containers.
pub fn secrets_refused() -> Result<Response<ProxyBody>, ApiError> {
    Err(ApiError::Refused { status: StatusCode::NOT_IMPLEMENTED, message: SECRETS_REFUSED.into() })
}

pub const SECRETS_REFUSED: &str = "secrets and configs are not supported by this cluster: it is managed by `swarm manage` over engines outside swarm mode; mount the files with a bind mount or a volume instead";

pub fn swarm_refused() -> Result<Response<ProxyBody>, ApiError> {
    Err(ApiError::Refused { status: StatusCode::SERVICE_UNAVAILABLE, message: SWARM_VERBS_REFUSED.into() })
}
