//! Volumes: local to each engine, shown as `node/name`. A create without a
//! node prefix makes the volume on every engine, as the original did, or on
//! those its placement rules allow (`src/cluster/volumes.rs`).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use swarm_proxy::ProxyBody;

use super::forward::{forward_to, healthy, replay};
use super::reply::json_response;
use super::request::{parse_json, read_json_body, take_filters, NodeFilter};
use super::{ApiError, Ctx};
use crate::cluster::engine::Engine;
use crate::cluster::monitor::{self, Kind};

fn volume_not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("get {name}: no such volume"))
}

/// Splits `node/name` when `node` is an engine of the cluster.
fn on_node(ctx: &Ctx<'_>, key: &str) -> Option<(Arc<Engine>, String)> {
    let (node, name) = key.split_once('/')?;
    ctx.cluster().engine(node).map(|e| (e, name.to_string()))
}

/// `GET /volumes`: every engine's answer to the same query, names prefixed.
/// `node` and `name` filters are the manager's own: `node` picks the engines
/// asked, `name` is a substring of the name as listed (`node/name`).
pub async fn list(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let (taken, query) = take_filters(req.uri().query(), &["node", "name"])?;
    let nodes = NodeFilter::new(taken.get("node").map(Vec::as_slice).unwrap_or_default())?;
    let names = taken.get("name").map(Vec::as_slice).unwrap_or_default();
    let engines: Vec<Arc<Engine>> = healthy(ctx.cluster())?.into_iter().filter(|e| nodes.matches(&e.name())).collect();
    let path = ctx.path("/volumes", Some(&query));
    let answers = join_all(engines.iter().map(|e| e.get_json::<Value>(&path))).await;
    let mut volumes = Vec::new();
    for (engine, answer) in engines.iter().zip(answers) {
        volumes.extend(node_volumes(&engine.name(), answer?, names));
    }
    Ok(json_response(StatusCode::OK, &json!({"Volumes": volumes, "Warnings": null})))
}

/// The volumes of `node`'s `/volumes` answer whose name as listed
/// (`node/name`) contains one of `names` (any, when none is given), named
/// so. Entries that are not objects are dropped: there is no volume in them.
fn node_volumes(node: &str, mut answer: Value, names: &[String]) -> Vec<Value> {
    let Some(Value::Array(items)) = answer.get_mut("Volumes").map(Value::take) else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|v| {
            let Value::Object(mut v) = v else {
                return None;
            };
            let listed = format!("{node}/{}", v.get("Name").and_then(Value::as_str).unwrap_or_default());
            if !names.is_empty() && !names.iter().any(|n| listed.contains(n.as_str())) {
                return None;
            }
            v.insert("Name".into(), Value::String(listed));
            Some(Value::Object(v))
        })
        .collect()
}

/// `POST /volumes/create`: on the engines [`Cluster::volume_targets`]
/// picks (every healthy engine unless a node or placement rules are given).
///
/// [`Cluster::volume_targets`]: crate::cluster::Cluster::volume_targets
pub async fn create(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let path = ctx.path("/volumes/create", req.uri().query());
    let (parts, body) = read_json_body(req, ctx.api.limits.max_json_body).await?;
    let mut config = parse_json(&body)?;
    let targets = ctx.cluster().volume_targets(&mut config)?;
    let body = Bytes::from(serde_json::to_vec(&config).unwrap_or_default());
    let answers = join_all(targets.iter().map(|e| replay(e, &parts.method, &parts.headers, &path, body.clone()))).await;
    let mut first = None;
    for (engine, answer) in targets.iter().zip(answers) {
        let answer = answer?;
        if !answer.status.is_success() {
            return Ok(answer.into_response());
        }
        let _ = monitor::refresh_kind(engine, Kind::Volumes).await;
        first.get_or_insert(answer);
    }
    first.map(|a| a.into_response()).ok_or_else(|| ApiError::NoNode("No healthy node available in the cluster".into()))
}

/// `GET /volumes/{name}`: `node/name`, or the first engine that has it.
pub async fn inspect(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    if let Some((engine, local)) = on_node(ctx, &ctx.route.name) {
        let path = ctx.with_name(&local, req.uri().query());
        return forward_to(&engine, req, &path).await;
    }
    let name = ctx.route.name.clone();
    let holder = ctx.cluster().healthy_engines().into_iter().find(|e| e.volumes().iter().any(|v| v.name == name));
    let engine = holder.ok_or_else(|| volume_not_found(&name))?;
    let path = ctx.with_name(&name, req.uri().query());
    forward_to(&engine, req, &path).await
}

/// `DELETE /volumes/{name}`: `node/name`, or every engine that has it.
pub async fn remove(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    if let Some((engine, local)) = on_node(ctx, &ctx.route.name) {
        let path = ctx.with_name(&local, req.uri().query());
        let resp = forward_to(&engine, req, &path).await?;
        let _ = monitor::refresh_kind(&engine, Kind::Volumes).await;
        return Ok(resp);
    }
    let name = ctx.route.name.clone();
    let holders: Vec<Arc<Engine>> =
        ctx.cluster().healthy_engines().into_iter().filter(|e| e.volumes().iter().any(|v| v.name == name)).collect();
    if holders.is_empty() {
        return Err(volume_not_found(&name));
    }
    let path = ctx.with_name(&name, req.uri().query());
    let (parts, body) = read_json_body(req, ctx.api.limits.max_json_body).await?;
    let answers = join_all(holders.iter().map(|e| replay(e, &parts.method, &parts.headers, &path, body.clone()))).await;
    let mut last = None;
    for (engine, answer) in holders.iter().zip(answers) {
        let answer = answer?;
        let _ = monitor::refresh_kind(engine, Kind::Volumes).await;
        if !answer.status.is_success() {
            return Ok(answer.into_response());
        }
        last = Some(answer);
    }
    last.map(|a| a.into_response()).ok_or_else(|| volume_not_found(&name))
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::proptest_json::engine_json;
    use proptest::prelude::*;

    proptest! {
        /// Any answer gives volumes named after their node.
        #[test]
        fn volumes_of_any_answer(answer in engine_json(), volumes in prop::collection::vec(engine_json(), 0..4), names in prop::collection::vec("[a-z/]{0,3}", 0..2)) {
            for answer in [answer, json!({"Volumes": volumes})] {
                for v in node_volumes("node-01", answer, &names) {
                    prop_assert!(v["Name"].as_str().is_some_and(|n| n.starts_with("node-01/")));
                }
            }
        }
    }

    #[test]
    fn odd_volume_entries_are_dropped() {
        let answer = json!({"Volumes": [1, "x", {"Name": "data"}, {"Driver": "local"}]});
        let listed = node_volumes("n1", answer, &[]);
        assert_eq!(listed, [json!({"Name": "n1/data"}), json!({"Name": "n1/", "Driver": "local"})]);
        assert!(node_volumes("n1", json!([{"Name": "x"}]), &[]).is_empty());
        assert_eq!(node_volumes("n1", json!({"Volumes": [{"Name": "a"}, {"Name": "b"}]}), &["1/b".into()]).len(), 1);
    }
}
