//! Networks. Engines outside swarm mode refuse `overlay`, so a network
//! created without a node prefix and without a multi-host driver becomes a
//! bridge network of that name on every engine (and on engines that join
//! later); containers join the copy on their own node. `node/name` pins a
//! network to one node.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use swarm_proxy::ProxyBody;

use super::forward::{forward_to, healthy, replay};
use super::reply::json_response;
use super::request::{parse_filters, parse_json, query_get, read_body};
use super::{ApiError, Ctx};
use crate::cluster::engine::{Engine, NetworkRecord};
use crate::cluster::monitor::{self, Kind};

/// Drivers whose networks span hosts; passed through unchanged.
const MULTI_HOST_DRIVERS: [&str; 1] = ["overlay"];

/// Where a network name points.
enum Target {
    /// A network present on every engine under this name.
    ClusterWide(String),
    /// One engine's network: (engine, that engine's network ID).
    OnNode(Arc<Engine>, String),
}

fn network_not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("network {name} not found"))
}

/// The networks every engine predefines; each engine's own, never cluster-wide.
const BUILTIN_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

/// Brings the cluster-wide set in line with the engines, since it lives only
/// in this manager's memory: a local, non-builtin network that every healthy
/// engine (at least two) has under one name with one driver is cluster-wide
/// (it was created through a manager before a restart, or through another
/// manager), so it resolves and lists as one network and engines that join
/// later get it; one that no healthy engine has any more is forgotten.
fn sync_cluster_networks(ctx: &Ctx<'_>) {
    let per_engine: Vec<Arc<Vec<NetworkRecord>>> =
        ctx.cluster().healthy_engines().iter().map(|e| e.networks()).collect();
    if per_engine.is_empty() {
        return;
    }
    let seen = local_networks(&per_engine);
    let mut cluster_wide = ctx.cluster().context.cluster_networks.lock();
    cluster_wide.retain(|name, _| seen.contains_key(name));
    if per_engine.len() < 2 {
        return;
    }
    for (name, (body, everywhere)) in seen {
        if everywhere {
            cluster_wide.entry(name).or_insert(body);
        }
    }
}

/// The local, non-builtin networks in some engine's list (one list per
/// engine): name → (a create request for it made from its first copy,
/// whether every engine has it with the same driver).
fn local_networks(per_engine: &[Arc<Vec<NetworkRecord>>]) -> BTreeMap<String, (Value, bool)> {
    // name → (create body, engines holding it, one driver so far)
    let mut seen: BTreeMap<String, (Value, usize, bool)> = BTreeMap::new();
    for networks in per_engine {
        let mut on_this_engine = std::collections::HashSet::new();
        for n in networks.iter() {
            let name = n.name.as_str();
            if name.is_empty() || BUILTIN_NETWORKS.contains(&name) || n.scope != "local" || !on_this_engine.insert(name)
            {
                continue;
            }
            let entry = seen.entry(name.to_string()).or_insert_with(|| {
                let body = json!({
                    "Name": name, "Driver": n.driver, "Labels": n.labels,
                    "Options": n.options, "Internal": n.internal,
                    "EnableIPv6": n.enable_ipv6, "Attachable": n.attachable,
                });
                (body, 0, true)
            });
            entry.1 += 1;
            entry.2 &= entry.0["Driver"] == n.driver.as_str();
        }
    }
    seen.into_iter()
        .map(|(name, (body, holders, one_driver))| (name, (body, one_driver && holders == per_engine.len())))
        .collect()
}

/// Resolves a network reference: a cluster-wide name, `node/name`, a name
/// unique to one node, or an ID (prefix).
fn resolve(ctx: &Ctx<'_>, key: &str) -> Result<Target, ApiError> {
    sync_cluster_networks(ctx);
    let cluster = ctx.cluster();
    if cluster.context.cluster_networks.lock().contains_key(key) {
        return Ok(Target::ClusterWide(key.to_string()));
    }
    if let Some((node, name)) = key.split_once('/') {
        if let Some(engine) = cluster.engine(node) {
            let found = engine.networks().iter().find(|n| n.name == name || n.id == name).map(|n| n.id.clone());
            if let Some(id) = found {
                return Ok(Target::OnNode(engine, id));
            }
        }
    }
    let mut by_name = Vec::new();
    let mut by_id = Vec::new();
    for engine in cluster.engines() {
        for n in engine.networks().iter() {
            if n.name == key {
                by_name.push((engine.clone(), n.id.clone()));
            } else if n.id == key || (key.len() >= 3 && n.id.starts_with(key)) {
                by_id.push((engine.clone(), n.id.clone()));
            }
        }
    }
    let candidates = if by_name.is_empty() { by_id } else { by_name };
    match candidates.len() {
        0 => Err(network_not_found(key)),
        1 => {
            let (engine, id) = candidates.into_iter().next().ok_or_else(|| network_not_found(key))?;
            Ok(Target::OnNode(engine, id))
        }
        _ => {
            Err(ApiError::BadRequest(format!("network {key} is ambiguous: it exists on several nodes; use node/{key}")))
        }
    }
}

/// `GET /networks`: cluster-wide networks once under their own name, every
/// other network as `node/name`.
pub fn list(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let filters = parse_filters(query_get(req.uri().query(), "filters").as_deref())?;
    sync_cluster_networks(ctx);
    let cluster_wide = ctx.cluster().context.cluster_networks.lock().clone();
    let mut shown = std::collections::HashSet::new();
    let mut out = Vec::new();
    for engine in ctx.cluster().engines() {
        let node = engine.name();
        for record in engine.networks().iter() {
            let name = record.name.as_str();
            let Ok(mut n) = serde_json::from_str::<Value>(record.raw.get()) else {
                continue;
            };
            if cluster_wide.contains_key(name) {
                if !shown.insert(name.to_string()) {
                    continue;
                }
            } else {
                n["Name"] = Value::String(format!("{node}/{name}"));
            }
            if matches_filters(&n, &filters) {
                out.push(n);
            }
        }
    }
    Ok(json_response(StatusCode::OK, &Value::Array(out)))
}

fn matches_filters(n: &Value, filters: &std::collections::BTreeMap<String, Vec<String>>) -> bool {
    let text = |k: &str| n[k].as_str().unwrap_or_default().to_string();
    filters.iter().all(|(key, values)| {
        values.is_empty()
            || values.iter().any(|v| match key.as_str() {
                "name" => text("Name").contains(v.as_str()),
                "id" => text("Id").starts_with(v.as_str()),
                "driver" => text("Driver") == *v,
                "scope" => text("Scope") == *v,
                "type" => {
                    let builtin = BUILTIN_NETWORKS.contains(&text("Name").rsplit('/').next().unwrap_or(""));
                    (v == "builtin") == builtin
                }
                "label" => match v.split_once('=') {
                    Some((k, val)) => n["Labels"][k].as_str() == Some(val),
                    None => n["Labels"].get(v.as_str()).is_some(),
                },
                _ => true,
            })
    })
}

/// `GET /networks/{name}`.
pub async fn inspect(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let (engine, id) = match resolve(ctx, &ctx.route.name)? {
        Target::OnNode(engine, id) => (engine, id),
        Target::ClusterWide(name) => first_with_network(ctx, &name)?,
    };
    let path = ctx.with_name(&id, req.uri().query());
    forward_to(&engine, req, &path).await
}

fn first_with_network(ctx: &Ctx<'_>, name: &str) -> Result<(Arc<Engine>, String), ApiError> {
    for engine in ctx.cluster().healthy_engines() {
        let id = engine.networks().iter().find(|n| n.name == name).map(|n| n.id.clone());
        if let Some(id) = id {
            return Ok((engine, id));
        }
    }
    Err(network_not_found(name))
}

/// `POST /networks/create`.
pub async fn create(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let path = ctx.path("/networks/create", req.uri().query());
    let (parts, body) = read_body(req).await?;
    let mut config = parse_json(&body)?;
    let name = config["Name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(ApiError::BadRequest("network name is required".into()));
    }
    let driver = config["Driver"].as_str().unwrap_or_default().to_string();
    let cluster = ctx.cluster();

    if let Some((node, local)) = name.split_once('/') {
        let engine = cluster.engine(node).ok_or_else(|| ApiError::NotFound(format!("No such node: {node}")))?;
        config["Name"] = Value::String(local.to_string());
        let body = Bytes::from(serde_json::to_vec(&config).unwrap_or_default());
        let answer = replay(&engine, &parts.method, &parts.headers, &path, body).await?;
        let _ = monitor::refresh_kind(&engine, Kind::Networks).await;
        return Ok(answer.into_response());
    }
    let engines = healthy(cluster)?;
    if MULTI_HOST_DRIVERS.contains(&driver.as_str()) {
        let answer = replay(&engines[0], &parts.method, &parts.headers, &path, body).await?;
        return Ok(answer.into_response());
    }
    let exists = cluster.context.cluster_networks.lock().contains_key(&name)
        || engines.iter().any(|e| e.networks().iter().any(|n| n.name == name));
    if exists {
        return Err(ApiError::Conflict(format!("network with name {name} already exists")));
    }
    if driver.is_empty() {
        config["Driver"] = Value::String("bridge".into());
    }
    let body = Bytes::from(serde_json::to_vec(&config).unwrap_or_default());
    let answers = join_all(engines.iter().map(|e| replay(e, &parts.method, &parts.headers, &path, body.clone()))).await;
    let mut created = Vec::new();
    let mut failure = None;
    for (engine, answer) in engines.iter().zip(answers) {
        match answer {
            Ok(a) if a.status.is_success() => created.push((engine.clone(), a)),
            Ok(a) => failure = Some(Ok((engine.clone(), a))),
            Err(e) => failure = Some(Err(e)),
        }
    }
    if let Some(failure) = failure {
        // All or nothing: remove the copies that were made.
        for (engine, answer) in &created {
            if let Some(id) = answer.json()["Id"].as_str() {
                let _ = engine.client.call(Method::DELETE, &format!("/networks/{id}"), None).await;
            }
        }
        return match failure {
            Ok((engine, a)) => Err(ApiError::Internal(format!(
                "{} ({}): {}",
                engine.name(),
                engine.addr,
                crate::cluster::engine::error_message(&a.body)
            ))),
            Err(e) => Err(e),
        };
    }
    cluster.context.cluster_networks.lock().insert(name, config);
    for (engine, _) in &created {
        let _ = monitor::refresh_kind(engine, Kind::Networks).await;
    }
    let first = created.into_iter().next().map(|(_, a)| a.json()).unwrap_or(Value::Null);
    Ok(json_response(StatusCode::CREATED, &json!({"Id": first["Id"], "Warning": first["Warning"]})))
}

/// `DELETE /networks/{name}`.
pub async fn remove(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    match resolve(ctx, &ctx.route.name)? {
        Target::OnNode(engine, id) => {
            let path = ctx.with_name(&id, req.uri().query());
            let resp = forward_to(&engine, req, &path).await?;
            let _ = monitor::refresh_kind(&engine, Kind::Networks).await;
            Ok(resp)
        }
        Target::ClusterWide(name) => {
            let engines = ctx.cluster().engines();
            let holders: Vec<(Arc<Engine>, String)> = engines
                .into_iter()
                .filter_map(|e| {
                    let id = e.networks().iter().find(|n| n.name == name).map(|n| n.id.clone());
                    id.map(|id| (e, id))
                })
                .collect();
            let paths: Vec<String> = holders.iter().map(|(_, id)| format!("/networks/{id}")).collect();
            let answers =
                join_all(holders.iter().zip(&paths).map(|((e, _), path)| e.client.call(Method::DELETE, path, None)))
                    .await;
            let mut errors = Vec::new();
            for ((engine, _), answer) in holders.iter().zip(answers) {
                match answer {
                    Ok((status, _)) if status.is_success() || status == StatusCode::NOT_FOUND => {}
                    Ok((_, body)) => {
                        errors.push(format!("{}: {}", engine.name(), crate::cluster::engine::error_message(&body)))
                    }
                    Err(e) => errors.push(format!("{}: {e}", engine.name())),
                }
                let _ = monitor::refresh_kind(engine, Kind::Networks).await;
            }
            if !errors.is_empty() {
                return Err(ApiError::Conflict(errors.join("; ")));
            }
            ctx.cluster().context.cluster_networks.lock().remove(&name);
            Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(swarm_proxy::empty())
                .map_err(|e| ApiError::Internal(e.to_string()))?)
        }
    }
}

/// `POST /networks/{name}/connect|disconnect`: on the container's node, with
/// the network resolved to that node's copy.
pub async fn connect(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let query = req.uri().query().map(str::to_string);
    let (parts, body) = read_body(req).await?;
    let mut config = parse_json(&body)?;
    let container_ref = config["Container"].as_str().unwrap_or_default().to_string();
    let (engine, container) =
        ctx.cluster().find_container(&container_ref).ok_or_else(|| ApiError::no_such_container(&container_ref))?;
    let network = match resolve(ctx, &ctx.route.name)? {
        Target::ClusterWide(name) => name,
        Target::OnNode(owner, id) if owner.addr == engine.addr => id,
        Target::OnNode(owner, _) => {
            return Err(ApiError::BadRequest(format!(
                "network {} is on node {}, but container {} is on node {}",
                ctx.route.name,
                owner.name(),
                container_ref,
                engine.name()
            )))
        }
    };
    config["Container"] = Value::String(container.id.clone());
    let body = Bytes::from(serde_json::to_vec(&config).unwrap_or_default());
    let path = ctx.with_name(&network, query.as_deref());
    let answer = replay(&engine, &parts.method, &parts.headers, &path, body).await?;
    let _ = monitor::refresh_container(&engine, &container.id).await;
    let _ = monitor::refresh_kind(&engine, Kind::Networks).await;
    Ok(answer.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_networks() {
        let n = json!({"Name": "node-01/bridge", "Id": "abc", "Driver": "bridge", "Labels": {"a": "b"}});
        let f = |s: &str| parse_filters(Some(s)).unwrap();
        assert!(matches_filters(&n, &f(r#"{"name":["bridge"]}"#)));
        assert!(matches_filters(&n, &f(r#"{"type":["builtin"]}"#)));
        assert!(!matches_filters(&n, &f(r#"{"type":["custom"]}"#)));
        assert!(matches_filters(&n, &f(r#"{"label":["a=b"]}"#)));
        assert!(!matches_filters(&n, &f(r#"{"driver":["overlay"]}"#)));
    }

    #[test]
    fn finds_networks_every_engine_has() {
        let net = |name: &str, driver: &str, scope: &str| json!({"Name": name, "Driver": driver, "Scope": scope, "Labels": {"l": "v"}});
        let engine =
            |nets: Vec<Value>| Arc::new(NetworkRecord::list_from(&serde_json::to_vec(&nets).unwrap()).unwrap());
        let seen = local_networks(&[
            engine(vec![
                net("bridge", "bridge", "local"),
                net("proj_default", "bridge", "local"),
                net("solo", "bridge", "local"),
                net("mixed", "bridge", "local"),
                net("ingress", "overlay", "swarm"),
            ]),
            engine(vec![
                net("bridge", "bridge", "local"),
                net("proj_default", "bridge", "local"),
                net("mixed", "macvlan", "local"),
                net("ingress", "overlay", "swarm"),
            ]),
        ]);
        let everywhere = |name: &str| seen.get(name).map(|(_, all)| *all);
        assert_eq!(everywhere("proj_default"), Some(true));
        assert_eq!(everywhere("solo"), Some(false));
        assert_eq!(everywhere("mixed"), Some(false));
        assert_eq!(everywhere("bridge"), None, "builtin networks are per node");
        assert_eq!(everywhere("ingress"), None, "only local networks");
        let body = &seen["proj_default"].0;
        assert_eq!(body["Name"], "proj_default");
        assert_eq!(body["Driver"], "bridge");
        assert_eq!(body["Labels"]["l"], "v");
    }
}
