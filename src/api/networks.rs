//! Network routes. The cluster-wide network policy lives in
//! `cluster/networks.rs`; here are the requests: a network created without
//! a node prefix and without a multi-host driver is made on every engine,
//! `node/name` pins a network to one node, and containers join the copy on
//! their own node.
use bytes::Bytes;
use futures_util::future::join_all;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use swarm_proxy::ProxyBody;

use super::forward::{forward_to, healthy, replay};
use super::reply::json_response;
use super::request::{parse_filters, parse_json, query_get, query_pairs, read_json_body};
use super::{ApiError, Ctx};
use crate::cluster::monitor::{self, Kind};
use crate::cluster::networks::{NetworkLookupError, NetworkTarget, BUILTIN_NETWORKS};

/// Drivers whose networks span hosts; passed through unchanged.
const MULTI_HOST_DRIVERS: [&str; 1] = ["overlay"];

/// The label `docker stack deploy` puts on the objects of a stack.
const STACK_NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

fn not_found(e: NetworkLookupError) -> ApiError {
    match e {
        NetworkLookupError::NotFound(_) => ApiError::NotFound(e.to_string()),
        NetworkLookupError::Ambiguous(_) => ApiError::BadRequest(e.to_string()),
    }
}

/// `GET /networks`: cluster-wide networks once under their own name, every
/// other network as `node/name`.
pub fn list(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let filters = parse_filters(query_get(req.uri().query(), "filters").as_deref())?;
    ctx.cluster().sync_cluster_networks();
    let cluster_wide = ctx.cluster().cluster_network_names();
    let mut shown = std::collections::HashSet::new();
    let mut out = Vec::new();
    for engine in ctx.cluster().engines() {
        let node = engine.name();
        for record in engine.networks().iter() {
            let name = record.name.as_str();
            let Ok(mut n) = serde_json::from_str::<Value>(record.raw.get()) else {
                continue;
            };
            if cluster_wide.contains(name) {
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
    let (engine, id, query) = match ctx.cluster().resolve_network(&ctx.route.name).map_err(not_found)? {
        NetworkTarget::OnNode(engine, id) => (engine, id, req.uri().query().map(str::to_string)),
        NetworkTarget::ClusterWide(name) => {
            let (engine, id) = ctx.cluster().first_with_network(&name).map_err(not_found)?;
            // A cluster-wide network is what this cluster has for swarm
            // scope (`docker service create --network` asks for it with
            // `scope=swarm`); each engine holds a local copy.
            let query = query_pairs(req.uri().query())
                .into_iter()
                .filter(|(k, _)| k != "scope")
                .fold(url::form_urlencoded::Serializer::new(String::new()), |mut q, (k, v)| {
                    q.append_pair(&k, &v);
                    q
                })
                .finish();
            (engine, id, Some(query))
        }
    };
    let path = ctx.with_name(&id, query.as_deref());
    forward_to(&engine, req, &path).await
}

/// `POST /networks/create`.
pub async fn create(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let path = ctx.path("/networks/create", req.uri().query());
    let (parts, body) = read_json_body(req, ctx.api.limits.max_json_body).await?;
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
    // `docker stack deploy` asks for overlay networks, which engines outside
    // swarm mode refuse: a stack's network is a cluster-wide bridge network
    // instead (tasks reach each other by name on one node, not across).
    let for_stack = config["Labels"].get(STACK_NAMESPACE_LABEL).is_some();
    if for_stack {
        config["Driver"] = Value::String("bridge".into());
        if let Some(fields) = config.as_object_mut() {
            fields.remove("Scope");
        }
    }
    if MULTI_HOST_DRIVERS.contains(&driver.as_str()) && !for_stack {
        let answer = replay(&engines[0], &parts.method, &parts.headers, &path, body).await?;
        return Ok(answer.into_response());
    }
    if cluster.network_name_taken(&name, &engines) {
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
    cluster.add_cluster_network(name, config);
    for (engine, _) in &created {
        let _ = monitor::refresh_kind(engine, Kind::Networks).await;
    }
    let first = created.into_iter().next().map(|(_, a)| a.json()).unwrap_or(Value::Null);
    Ok(json_response(StatusCode::CREATED, &json!({"Id": first["Id"], "Warning": first["Warning"]})))
}

/// `DELETE /networks/{name}`.
pub async fn remove(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    match ctx.cluster().resolve_network(&ctx.route.name).map_err(not_found)? {
        NetworkTarget::OnNode(engine, id) => {
            let path = ctx.with_name(&id, req.uri().query());
            let resp = forward_to(&engine, req, &path).await?;
            let _ = monitor::refresh_kind(&engine, Kind::Networks).await;
            Ok(resp)
        }
        NetworkTarget::ClusterWide(name) => {
            let holders = ctx.cluster().holders_of_network(&name);
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
            ctx.cluster().forget_cluster_network(&name);
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
    let (parts, body) = read_json_body(req, ctx.api.limits.max_json_body).await?;
    let mut config = parse_json(&body)?;
    let container_ref = config["Container"].as_str().unwrap_or_default().to_string();
    let (engine, container) =
        ctx.cluster().find_container(&container_ref).ok_or_else(|| ApiError::no_such_container(&container_ref))?;
    let network = match ctx.cluster().resolve_network(&ctx.route.name).map_err(not_found)? {
        NetworkTarget::ClusterWide(name) => name,
        NetworkTarget::OnNode(owner, id) if owner.addr == engine.addr => id,
        NetworkTarget::OnNode(owner, _) => {
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
}
