//! Container routes: list and create on the manager, everything else relayed
//! to the engine that owns the container.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use swarm_proxy::ProxyBody;

use super::forward::forward_to;
use super::reply::json_bytes;
use super::request::{parse_filters, parse_json, query_bool, query_get, query_set, read_json_body, NodeFilter};
use super::{ApiError, Ctx};
use crate::cluster::container::Container;
use crate::cluster::engine::{Engine, Health};
use crate::cluster::monitor::{self, Kind};
use crate::cluster::CreateRequest;
use swarm_scheduler::ContainerRequest;

/// Filters `docker ps` accepts.
const LIST_FILTERS: [&str; 16] = [
    "ancestor",
    "before",
    "expose",
    "exited",
    "health",
    "id",
    "isolation",
    "is-task",
    "label",
    "name",
    "network",
    "node",
    "publish",
    "since",
    "status",
    "volume",
];
const STATES: [&str; 7] = ["created", "restarting", "running", "removing", "paused", "exited", "dead"];
/// The label swarm mode puts on its tasks' containers (`--filter is-task=`).
const SWARM_TASK_LABEL: &str = "com.docker.swarm.task";

/// `GET /containers/json`: answered from the cache, names prefixed with their node.
pub fn list(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let query = req.uri().query();
    let filters = parse_filters(query_get(query, "filters").as_deref())?;
    for key in filters.keys() {
        if !LIST_FILTERS.contains(&key.as_str()) {
            return Err(ApiError::BadRequest(format!("invalid filter '{key}'")));
        }
    }
    for status in filters.get("status").into_iter().flatten() {
        if !STATES.contains(&status.as_str()) {
            return Err(ApiError::BadRequest(format!("invalid filter 'status={status}'")));
        }
    }
    let limit = query_get(query, "limit").and_then(|l| l.parse::<i64>().ok()).unwrap_or(-1);
    let all = query_bool(query, "all")
        || limit > 0
        || ["status", "before", "since", "exited"].iter().any(|k| filters.contains_key(*k));
    let matcher = Matcher::new(&filters)?;

    let mut entries: Vec<(Arc<Engine>, Arc<Container>)> = Vec::new();
    for engine in ctx.cluster().engines() {
        // An Unhealthy engine's containers are not known to run: `Host Down`, listed with `-a` only.
        let listed = match engine.health() {
            Health::Pending => false,
            Health::Unhealthy => all,
            Health::Healthy | Health::Disconnected => true,
        };
        if !listed {
            continue;
        }
        let node = engine.name();
        for c in engine.containers_where(|c| (all || c.is_running()) && matcher.matches(&node, c)) {
            entries.push((engine.clone(), c));
        }
    }
    entries.sort_by(|a, b| b.1.created.cmp(&a.1.created).then_with(|| a.1.id.cmp(&b.1.id)));
    let created_of = |key: &str| ctx.cluster().find_container(key).map(|(_, c)| c.created);
    if let Some(before) = filters.get("before").and_then(|v| v.first()) {
        let t = created_of(before).ok_or_else(|| ApiError::no_such_container(before))?;
        entries.retain(|(_, c)| c.created < t);
    }
    if let Some(since) = filters.get("since").and_then(|v| v.first()) {
        let t = created_of(since).ok_or_else(|| ApiError::no_such_container(since))?;
        entries.retain(|(_, c)| c.created > t);
    }
    if limit > 0 {
        entries.truncate(limit as usize);
    }

    let mut out = BytesMut::with_capacity(entries.iter().map(|(_, c)| c.rendered.len() + 1).sum::<usize>() + 2);
    out.extend_from_slice(b"[");
    for (i, (engine, c)) in entries.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",");
        }
        if engine.health() == Health::Unhealthy {
            out.extend_from_slice(&c.rendered_with_status("Host Down"));
        } else {
            out.extend_from_slice(&c.rendered);
        }
    }
    out.extend_from_slice(b"]");
    Ok(json_bytes(StatusCode::OK, out.freeze()))
}

/// The `docker ps --filter` conditions, compiled once per request.
struct Matcher<'a> {
    filters: &'a std::collections::BTreeMap<String, Vec<String>>,
    names: Vec<regex::Regex>,
    nodes: NodeFilter,
    /// `is-task=true|false`: whether only swarm-mode tasks, or only other
    /// containers, are listed; `None` lists both.
    is_task: Option<bool>,
}

impl<'a> Matcher<'a> {
    fn new(filters: &'a std::collections::BTreeMap<String, Vec<String>>) -> Result<Matcher<'a>, ApiError> {
        let compile = |key: &str| -> Result<Vec<regex::Regex>, ApiError> {
            filters
                .get(key)
                .into_iter()
                .flatten()
                .map(|p| {
                    regex::Regex::new(p).map_err(|e| ApiError::BadRequest(format!("invalid filter '{key}={p}': {e}")))
                })
                .collect()
        };
        let values = |key: &str| filters.get(key).map(Vec::as_slice).unwrap_or_default();
        // dockerd's reading: `true` wins over `false`; anything else is refused.
        let is_task = match values("is-task") {
            [] => None,
            v if v.iter().any(|v| v == "true") => Some(true),
            v if v.iter().any(|v| v == "false") => Some(false),
            v => return Err(ApiError::BadRequest(format!("Invalid filter 'is-task=[{}]'", v.join(" ")))),
        };
        Ok(Matcher { filters, names: compile("name")?, nodes: NodeFilter::new(values("node"))?, is_task })
    }

    fn any(&self, key: &str, pred: impl Fn(&str) -> bool) -> bool {
        match self.filters.get(key) {
            Some(values) if !values.is_empty() => values.iter().any(|v| pred(v)),
            _ => true,
        }
    }

    fn matches(&self, node: &str, c: &Container) -> bool {
        (self.names.is_empty()
            || self.names.iter().any(|re| {
                c.names.iter().any(|n| re.is_match(&format!("/{n}")) || re.is_match(&format!("/{node}/{n}")))
            }))
            && self.nodes.matches(node)
            && self.is_task.is_none_or(|task| c.labels.contains_key(SWARM_TASK_LABEL) == task)
            && self.any("id", |v| c.id.starts_with(v))
            && self.any("status", |v| c.state == v)
            && self.filters.get("label").into_iter().flatten().all(|l| match l.split_once('=') {
                Some((k, v)) => c.labels.get(k).map(String::as_str) == Some(v),
                None => c.labels.contains_key(l.as_str()),
            })
            && self.any("ancestor", |v| {
                c.image == v
                    || c.image.strip_suffix(":latest") == Some(v)
                    || c.image_id == v
                    || c.image_id.trim_start_matches("sha256:").starts_with(v)
            })
            && self.any("exited", |v| {
                c.state == "exited" && c.details.exit_code.map(|e| e.to_string()).as_deref() == Some(v)
            })
            && self.any("health", |v| c.details.health == v)
            && self.any("network", |v| c.networks.iter().any(|(name, id)| name == v || id.starts_with(v)))
            && self.any("volume", |v| c.mounts.iter().any(|(name, dest)| name == v || dest == v))
            && self.any("publish", |v| port_matches(c, v, true))
            && self.any("expose", |v| port_matches(c, v, false))
    }
}

fn port_matches(c: &Container, filter: &str, published: bool) -> bool {
    let (port, proto) = filter.split_once('/').unwrap_or((filter, "tcp"));
    c.ports.iter().any(|p| {
        let number = if published { p.public } else { p.private };
        number.to_string() == port && p.protocol == proto
    })
}

/// The container a route names, on its engine, and the path that reaches
/// it there (the name replaced by the full ID).
struct Target {
    engine: Arc<Engine>,
    container: Arc<Container>,
    path: String,
}

impl Target {
    /// Resolves `name` (ID, name, `node/name`, ID prefix; a full ID the
    /// caches miss is asked of the engines) or answers 404;
    /// a container of an Unhealthy engine is answered at once, without
    /// trying to connect (`docker rm` included: the engine cannot remove it,
    /// and forgetting it would only see it back when the engine returns).
    async fn resolve(ctx: &Ctx<'_>, name: &str, query: Option<&str>) -> Result<Target, ApiError> {
        let found = match ctx.cluster().find_container(name) {
            Some(found) => Some(found),
            None => ctx.cluster().find_container_on_engines(name.trim()).await,
        };
        let (engine, container) = found.ok_or_else(|| ApiError::no_such_container(name))?;
        if engine.health() == Health::Unhealthy {
            return Err(ApiError::UnhealthyNode { container: name.to_string(), node: engine.name() });
        }
        let path = ctx.with_name(&container.id, query);
        Ok(Target { engine, container, path })
    }

    /// Resolves the route's own name.
    async fn of_route(ctx: &Ctx<'_>, req: &Request<ProxyBody>) -> Result<Target, ApiError> {
        Target::resolve(ctx, &ctx.route.name, req.uri().query()).await
    }

    /// Relays the request to the container's engine, streaming.
    async fn forward(&self, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
        forward_to(&self.engine, req, &self.path).await
    }

    /// Updates the cache after a successful change, so the next read sees it.
    async fn refresh(&self) {
        // A failed refresh is caught up by the next one; the change stands.
        let _ = monitor::refresh_container(&self.engine, &self.container.id).await;
    }
}

/// `POST /containers/create`: the cluster schedules and creates it.
pub async fn create(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let query = req.uri().query().map(str::to_string);
    let name = query_get(query.as_deref(), "name");
    let (_, body) = read_json_body(req, ctx.api.limits.max_json_body).await?;
    let config = parse_json(&body)?;
    let path = ctx.path("/containers/create", query.as_deref());
    let created = ctx.cluster().create_container(CreateRequest { name, config, path }).await?;
    Ok(json_bytes(StatusCode::CREATED, created.answer))
}

/// `GET /containers/{name}/json`: the engine's inspect plus a `Node` object.
pub async fn inspect(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let target = Target::of_route(ctx, &req).await?;
    let resp = target.forward(req).await?;
    if resp.status() != StatusCode::OK {
        return Ok(resp);
    }
    let engine = &target.engine;
    let (mut parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| ApiError::Internal(format!("{} ({}): {e}", engine.name(), engine.addr)))?
        .to_bytes();
    let patched = insert_field(&body, "Node", &node_json(engine)).unwrap_or(body);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, swarm_proxy::full(patched)))
}

/// The `Node` object the original adds to inspect answers, serialized.
fn node_json(engine: &Engine) -> Bytes {
    match engine.info() {
        Some(info) => info.inspect_node(),
        None => Bytes::from(json!({"IP": engine.ip, "Addr": engine.addr}).to_string()),
    }
}

/// Adds `"key": value` (`value` serialized JSON) at the end of a serialized
/// JSON object without re-encoding the rest (inspect answers are relayed
/// byte for byte).
pub(super) fn insert_field(object: &[u8], key: &str, value: &[u8]) -> Option<Bytes> {
    let end = object.iter().rposition(|b| *b == b'}')?;
    let body_is_empty = object[..end].iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let mut out = Vec::with_capacity(object.len() + key.len() + value.len() + 4);
    out.extend_from_slice(&object[..end]);
    if !body_is_empty {
        out.push(b',');
    }
    out.extend_from_slice(serde_json::to_string(key).ok()?.as_bytes());
    out.push(b':');
    out.extend_from_slice(value);
    out.extend_from_slice(&object[end..]);
    Some(Bytes::from(out))
}

/// Relays a container route to the container's engine.
pub async fn forward(ctx: &Ctx<'_>, req: Request<ProxyBody>, refresh: bool) -> Result<Response<ProxyBody>, ApiError> {
    let target = Target::of_route(ctx, &req).await?;
    let resp = target.forward(req).await?;
    if refresh && resp.status().is_success() {
        target.refresh().await;
    }
    Ok(resp)
}

/// `DELETE /containers/{name}`.
pub async fn remove(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let target = Target::of_route(ctx, &req).await?;
    let resp = target.forward(req).await?;
    if resp.status().is_success() {
        monitor::forget_container(&target.engine, &target.container.id).await;
    }
    Ok(resp)
}

/// `POST /containers/{name}/rename`: the new name must be free cluster-wide.
pub async fn rename(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let target = Target::of_route(ctx, &req).await?;
    let new_name = query_get(req.uri().query(), "name").unwrap_or_default();
    let _reservation = ctx.cluster().reserve_name(&new_name)?;
    let resp = target.forward(req).await?;
    if resp.status().is_success() {
        target.refresh().await;
    }
    Ok(resp)
}

/// `POST /containers/{name}/exec`: remembers which engine owns the exec.
pub async fn exec_create(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let target = Target::of_route(ctx, &req).await?;
    let resp = target.forward(req).await?;
    if resp.status() != StatusCode::CREATED {
        return Ok(resp);
    }
    let (mut parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| ApiError::Internal(e.to_string()))?.to_bytes();
    if let Some(id) = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["Id"].as_str().map(str::to_string)) {
        ctx.cluster().record_exec(&id, &target.engine.addr);
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, swarm_proxy::full(body)))
}

/// `/exec/{id}/...`: relayed to the engine that owns the exec instance.
pub async fn exec(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let id = ctx.route.name.clone();
    let engine = match ctx.cluster().exec_owner(&id) {
        Some(engine) => engine,
        None => {
            find_exec_owner(ctx, &id).await.ok_or_else(|| ApiError::NotFound(format!("No such exec instance: {id}")))?
        }
    };
    let path = ctx.with_name(&id, req.uri().query());
    forward_to(&engine, req, &path).await
}

/// Asks every engine for an exec the manager did not create (e.g. before a restart).
async fn find_exec_owner(ctx: &Ctx<'_>, id: &str) -> Option<Arc<Engine>> {
    for engine in ctx.cluster().healthy_engines() {
        if engine.get_bytes(&format!("/exec/{id}/json")).await.is_ok() {
            ctx.cluster().record_exec(id, &engine.addr);
            return Some(engine);
        }
    }
    None
}

/// `POST /commit?container=X`: on the container's engine.
pub async fn commit(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let query = req.uri().query().map(str::to_string);
    let name = query_get(query.as_deref(), "container").unwrap_or_default();
    let mut target = Target::resolve(ctx, &name, None).await?;
    let query = query_set(query.as_deref(), "container", &target.container.id);
    target.path = ctx.path("/commit", Some(&query));
    let resp = target.forward(req).await?;
    if resp.status().is_success() {
        let _ = monitor::refresh_kind(&target.engine, Kind::Images).await;
    }
    Ok(resp)
}

/// `POST /build`: on the node the scheduler picks; build args named
/// `constraint:KEY` or `affinity:KEY` (`--build-arg constraint:node==node-01`)
/// steer it like the environment of a container does.
pub async fn build(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let query = req.uri().query().map(str::to_string);
    let mut request = ContainerRequest::default();
    let build_args = query_get(query.as_deref(), "buildargs").unwrap_or_default();
    if !build_args.is_empty() {
        let args: Value =
            serde_json::from_str(&build_args).map_err(|e| ApiError::BadRequest(format!("invalid buildargs: {e}")))?;
        for (key, value) in args.as_object().into_iter().flatten() {
            let value = value.as_str().unwrap_or_default();
            let add = if let Some(k) = key.strip_prefix("constraint:") {
                request.add_constraint(&format!("{k}={value}"))
            } else if let Some(k) = key.strip_prefix("affinity:") {
                request.add_affinity(&format!("{k}={value}"))
            } else {
                Ok(())
            };
            add?;
        }
    }
    let engine = ctx.cluster().place(&request)?.ranked[0].clone();
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let resp = forward_to(&engine, req, &path).await?;
    let _ = monitor::refresh_kind(&engine, Kind::Images).await;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_node_without_reencoding() {
        let out = insert_field(br#"{"Id":"x","Name":"/web"}"#, "Node", br#"{"Name":"node-01"}"#).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Node"]["Name"], "node-01");
        assert_eq!(v["Name"], "/web");
        let empty = insert_field(b"{}\n", "Node", b"1").unwrap();
        assert_eq!(&empty[..], b"{\"Node\":1}\n");
        assert!(insert_field(b"not json", "Node", b"1").is_none());
    }
}
