//! Swarm mode's node verbs over the cluster's engines: every engine the
//! manager knows is a worker node of the answers `docker node ls` and
//! `docker node inspect` read, and `docker swarm init/join/leave` are
//! refused with what to do instead.

use http::{Response, StatusCode};
use serde_json::{json, Value};
use swarm_proxy::ProxyBody;

use super::reply::json_response;
use super::{ApiError, Ctx};
use crate::cluster::engine::{Engine, Health};

/// Why `docker swarm init/join/leave` do not apply here.
pub const SWARM_VERBS_REFUSED: &str = "This cluster is managed by swarm manage (Classic Swarm): engines join it with \
     `swarm join --advertise <engine ip:port> <discovery>`, not with docker swarm init, join or leave";

/// Swarm mode's IDs are 25 lowercase base-36 characters.
const NODE_ID_LEN: usize = 25;

/// The node ID of the engine with cluster-wide ID `engine_id`: the same on
/// every manager and across restarts and upgrades (FNV-1a, 128 bits, in
/// base 36), shaped like swarm mode's IDs.
pub fn node_id(engine_id: &str) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let mut hash = engine_id.bytes().fold(OFFSET, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    let mut id = String::with_capacity(NODE_ID_LEN);
    for _ in 0..NODE_ID_LEN {
        let digit = (hash % 36) as u32;
        id.push(char::from_digit(digit, 36).unwrap_or('0'));
        hash /= 36;
    }
    id
}

/// The node view of `engine`, if it has been validated once (a pending
/// engine has no identity yet).
fn node(engine: &Engine) -> Option<Value> {
    let info = engine.info()?;
    let ready = engine.health() == Health::Healthy;
    let engine_labels: serde_json::Map<String, Value> =
        info.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let ip = engine.addr.rsplit_once(':').map_or(engine.addr.as_str(), |(ip, _)| ip);
    let arch = if cfg!(target_arch = "x86_64") { "x86_64" } else { std::env::consts::ARCH };
    Some(json!({
        "ID": node_id(&info.id),
        "Version": {"Index": 1},
        "CreatedAt": "0001-01-01T00:00:00Z",
        "UpdatedAt": "0001-01-01T00:00:00Z",
        "Spec": {"Labels": {}, "Role": "worker", "Availability": "active"},
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
    let mut nodes: Vec<Value> = ctx.cluster().engines().iter().filter_map(|e| node(e)).collect();
    nodes.sort_by(|a, b| a["Description"]["Hostname"].as_str().cmp(&b["Description"]["Hostname"].as_str()));
    Ok(json_response(StatusCode::OK, &Value::Array(nodes)))
}

/// `GET /nodes/{id}`: by full ID, hostname, or unique ID prefix, as dockerd
/// resolves them.
pub fn inspect(ctx: &Ctx<'_>) -> Result<Response<ProxyBody>, ApiError> {
    let wanted = ctx.route.name.as_str();
    let nodes: Vec<Value> = ctx.cluster().engines().iter().filter_map(|e| node(e)).collect();
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
    match found {
        Some(node) => Ok(json_response(StatusCode::OK, node)),
        None => Err(ApiError::NotFound(format!("node {wanted} not found"))),
    }
}

/// `docker swarm init/join/leave/update` and `GET /swarm`.
pub fn swarm_refused() -> Result<Response<ProxyBody>, ApiError> {
    Err(ApiError::Refused { status: StatusCode::SERVICE_UNAVAILABLE, message: SWARM_VERBS_REFUSED.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_look_like_swarm_modes_and_are_stable() {
        let id = node_id("ABCD:EFGH|10.0.0.1:2375");
        assert_eq!(id.len(), NODE_ID_LEN);
        assert!(id.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()), "{id}");
        assert_eq!(id, node_id("ABCD:EFGH|10.0.0.1:2375"));
        assert_ne!(id, node_id("ABCD:EFGH|10.0.0.2:2375"));
        // Pinned: a node's ID must never change with a rebuild or an upgrade.
        assert_eq!(id, "07t3iddavty7o4ab88uaampl8");
    }
}
