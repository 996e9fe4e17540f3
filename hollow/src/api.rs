//! The Engine API subset the manager uses, answered as dockerd 20.10
//! answers it: routes, query and body reading, and the replies with
//! dockerd's headers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::clock::{self, parse_timestamp};
use crate::create::CreateRequest;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::events::EventFilter;
use crate::fixtures::templates;
use crate::model::RunState;
use crate::render;

/// A response body: whole, or the events stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// The API version dockerd 20.10 speaks, and the oldest it accepts.
const API_VERSION: &str = "1.41";
const MIN_API_VERSION: &str = "1.12";
/// Request bodies past this are refused; a create is a few KB.
const MAX_BODY: usize = 4 << 20;

/// `Server: Docker/<version> (linux)`, from the captured `/version`.
fn server_header() -> &'static HeaderValue {
    static SERVER: OnceLock<HeaderValue> = OnceLock::new();
    SERVER.get_or_init(|| {
        let version = templates().version["Version"].as_str().unwrap_or("20.10.24");
        HeaderValue::from_str(&format!("Docker/{version} (linux)")).unwrap_or(HeaderValue::from_static("Docker"))
    })
}

/// What a handler answers.
enum Reply {
    Json(StatusCode, Value),
    /// A status without a body (`204`, `304`).
    Empty(StatusCode),
    /// `200` with an empty body (network connect and disconnect).
    Blank,
}

/// A response with the headers dockerd puts on every answer.
fn respond(status: StatusCode, content_type: Option<&'static str>, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("api-version", HeaderValue::from_static(API_VERSION));
    headers.insert("docker-experimental", HeaderValue::from_static("false"));
    headers.insert("ostype", HeaderValue::from_static("linux"));
    headers.insert(header::SERVER, server_header().clone());
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// JSON as Go's encoder writes it: followed by a newline.
fn json_body(value: &Value) -> Body {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    full(bytes)
}

fn reply(result: Result<Reply, ApiError>) -> Response<Body> {
    match result {
        Ok(Reply::Json(status, value)) => respond(status, Some("application/json"), json_body(&value)),
        Ok(Reply::Empty(status)) => respond(status, None, full(Bytes::new())),
        Ok(Reply::Blank) => respond(StatusCode::OK, None, full(Bytes::new())),
        Err(e) if e.status == StatusCode::NOT_MODIFIED => respond(e.status, None, full(Bytes::new())),
        Err(e) => respond(e.status, Some("application/json"), json_body(&json!({"message": e.message}))),
    }
}

/// dockerd's answer to a path it has no route for: outside its API
/// middleware, so without the API headers.
fn page_not_found() -> Response<Body> {
    let mut response = Response::new(json_body(&json!({"message": "page not found"})));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Splits `/v1.41/containers/json` into the version and the rest; paths
/// without a version are the current one's.
fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let version = &rest[..end];
        if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return (Some(version), &rest[end..]);
        }
    }
    (None, path)
}

fn version_number(version: &str) -> (u32, u32) {
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    (major.parse().unwrap_or(0), minor.parse().unwrap_or(0))
}

/// dockerd refuses versions it does not speak.
fn check_version(version: &str) -> Result<(), ApiError> {
    if version_number(version) > version_number(API_VERSION) {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if version_number(version) < version_number(MIN_API_VERSION) {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(())
}

/// The decoded value of query parameter `key`.
pub fn query_get(query: &str, key: &str) -> Option<String> {
    query.split('&').filter_map(|pair| pair.split_once('=').or(Some((pair, "")))).find(|(k, _)| *k == key).map(
        |(_, v)| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v).decode_utf8_lossy().into_owned()
        },
    )
}

/// Docker's booleans in a query: `1`, `true`, `True`…
fn query_bool(query: &str, key: &str) -> bool {
    query_get(query, key).is_some_and(|v| !matches!(v.as_str(), "" | "0" | "false" | "False" | "FALSE"))
}

/// `filters` as Docker sends it: `{"key": ["value"]}`, or the old
/// `{"key": {"value": true}}`.
pub fn parse_filters(text: Option<&str>) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(BTreeMap::new()) };
    let value: Value = serde_json::from_str(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Value::Object(map) = value else { return Err(ApiError::bad_request("filters must be a JSON object")) };
    let mut filters = BTreeMap::new();
    for (key, values) in map {
        let values = match values {
            Value::Array(items) => items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Value::Object(set) => set.into_iter().filter(|(_, on)| on == &Value::Bool(true)).map(|(k, _)| k).collect(),
            _ => return Err(ApiError::bad_request(format!("invalid filter value for '{key}'"))),
        };
        filters.insert(key, values);
    }
    Ok(filters)
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(ApiError::bad_request(format!("cannot read the request body: {e}"))),
    }
}

/// A JSON body; an empty one reads as `{}`, as dockerd's decoder skips it.
fn json_of(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Answers one request for `engine`.
pub async fn handle(engine: Arc<Engine>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let (version, path) = split_version(parts.uri.path());
    let path = path.to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    if let Some(Err(e)) = version.map(check_version) {
        return Ok(reply(Err(e)));
    }
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = parts.method;
    if method == Method::GET && segments == ["events"] {
        // A stream: never delayed.
        return Ok(events(&engine, &query));
    }
    let latency = engine.shared.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let body = match method {
        Method::POST | Method::PUT => match read_body(body).await {
            Ok(body) => body,
            Err(e) => return Ok(reply(Err(e))),
        },
        _ => Bytes::new(),
    };
    Ok(route(&engine, &method, &segments, &query, &body).unwrap_or_else(page_not_found))
}

/// The answer of the route for `method` and `segments`; `None` when there is none.
fn route(engine: &Engine, method: &Method, segments: &[&str], query: &str, body: &[u8]) -> Option<Response<Body>> {
    let result = match (method.as_str(), segments) {
        ("GET" | "HEAD", ["_ping"]) => return Some(ping(method)),
        ("GET", ["version"]) => Ok(Reply::Json(StatusCode::OK, render::version())),
        ("GET", ["info"]) => Ok(Reply::Json(StatusCode::OK, render::info(engine, &mut engine.lock()))),
        ("GET", ["containers", "json"]) => list_containers(engine, query),
        ("POST", ["containers", "create"]) => create(engine, query, body),
        ("GET", ["containers", id, "json"]) => inspect(engine, id),
        ("POST", ["containers", id, action]) => container_action(engine, id, action, query)?,
        ("DELETE", ["containers", id]) => {
            engine.remove(id, query_bool(query, "force")).map(|()| Reply::Empty(StatusCode::NO_CONTENT))
        }
        ("GET", ["images", "json"]) => Ok(Reply::Json(StatusCode::OK, render::images(engine))),
        ("GET", ["networks"]) => {
            let state = engine.lock();
            let list: Vec<Value> = state.networks.iter().map(|n| render::network(&state, n, false)).collect();
            Ok(Reply::Json(StatusCode::OK, Value::Array(list)))
        }
        ("GET", ["networks", id]) => {
            let state = engine.lock();
            match state.find_network(id) {
                Some(n) => Ok(Reply::Json(StatusCode::OK, render::network(&state, &state.networks[n], true))),
                None => Err(ApiError::not_found(format!("network {id} not found"))),
            }
        }
        ("POST", ["networks", "create"]) => json_of(body).and_then(|body| {
            let id = engine.create_network(&body)?;
            Ok(Reply::Json(StatusCode::CREATED, json!({"Id": id.hex(), "Warning": ""})))
        }),
        ("POST", ["networks", id, action @ ("connect" | "disconnect")]) => json_of(body).and_then(|body| {
            let container = body["Container"].as_str().unwrap_or_default();
            if *action == "connect" {
                engine.connect(id, container)?;
            } else {
                engine.disconnect(id, container)?;
            }
            Ok(Reply::Blank)
        }),
        ("DELETE", ["networks", id]) => engine.remove_network(id).map(|()| Reply::Empty(StatusCode::NO_CONTENT)),
        ("GET", ["volumes"]) => {
            let state = engine.lock();
            Ok(Reply::Json(StatusCode::OK, render::volumes(state.volumes.iter())))
        }
        ("GET", ["volumes", name]) => {
            let state = engine.lock();
            match state.volume(name) {
                Some(v) => Ok(Reply::Json(StatusCode::OK, render::volume(v))),
                None => Err(ApiError::not_found(format!("get {name}: no such volume"))),
            }
        }
        ("POST", ["volumes", "create"]) => json_of(body).and_then(|body| {
            let name = engine.create_volume(&body)?;
            let state = engine.lock();
            let volume = state.volume(&name).map(render::volume).unwrap_or(Value::Null);
            Ok(Reply::Json(StatusCode::CREATED, volume))
        }),
        ("DELETE", ["volumes", name]) => engine.remove_volume(name).map(|()| Reply::Empty(StatusCode::NO_CONTENT)),
        _ => return None,
    };
    Some(reply(result))
}

/// `GET|HEAD /_ping`.
fn ping(method: &Method) -> Response<Body> {
    let body = if method == Method::HEAD { Bytes::new() } else { Bytes::from_static(b"OK") };
    let mut response = respond(StatusCode::OK, Some("text/plain; charset=utf-8"), full(body));
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /containers/{id}/<action>`; `None` for an action there is no route for.
fn container_action(engine: &Engine, id: &str, action: &str, query: &str) -> Option<Result<Reply, ApiError>> {
    let done = match action {
        "start" => engine.start(id),
        "stop" => engine.stop(id),
        "kill" => match signal_number(query_get(query, "signal").as_deref()) {
            Ok(signal) => engine.kill(id, signal),
            Err(e) => Err(e),
        },
        "restart" => engine.restart(id),
        "pause" => engine.pause(id),
        "unpause" => engine.unpause(id),
        _ => return None,
    };
    Some(done.map(|()| Reply::Empty(StatusCode::NO_CONTENT)))
}

/// A `kill`'s signal: a number or a name (`KILL`, `SIGTERM`); SIGKILL by default.
fn signal_number(signal: Option<&str>) -> Result<i32, ApiError> {
    const NAMES: [(&str, i32); 12] = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("STOP", 19),
        ("WINCH", 28),
    ];
    let Some(signal) = signal.filter(|s| !s.is_empty()) else { return Ok(9) };
    if let Ok(n) = signal.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = signal.trim_start_matches("SIG");
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, number)| *number)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid signal: {signal}")))
}

fn create(engine: &Engine, query: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let request = CreateRequest::parse(body)?;
    let name = query_get(query, "name").filter(|n| !n.is_empty());
    let id = engine.create(name.as_deref(), request)?;
    Ok(Reply::Json(StatusCode::CREATED, json!({"Id": id.hex(), "Warnings": []})))
}

fn inspect(engine: &Engine, reference: &str) -> Result<Reply, ApiError> {
    let state = engine.lock();
    let i = state.find(reference).ok_or_else(|| ApiError::no_such_container(reference))?;
    Ok(Reply::Json(StatusCode::OK, render::inspect(&state, &state.containers[i])))
}

/// The filters of `/containers/json` a hollow engine applies; dockerd
/// knows more, which are refused here rather than silently ignored.
const CONTAINER_FILTERS: [&str; 5] = ["id", "name", "label", "status", "exited"];

/// dockerd's `name` filter is a regular expression over `/name`; the
/// anchors `^` and `$` around a literal are what clients send.
fn name_matches(pattern: &str, name: &str) -> bool {
    let full = format!("/{name}");
    match (pattern.strip_prefix('^'), pattern.ends_with('$')) {
        (Some(rest), true) => full == rest[..rest.len() - 1],
        (Some(rest), false) => full.starts_with(rest),
        (None, true) => full.ends_with(&pattern[..pattern.len() - 1]),
        (None, false) => full.contains(pattern),
    }
}

fn list_containers(engine: &Engine, query: &str) -> Result<Reply, ApiError> {
    let filters = parse_filters(query_get(query, "filters").as_deref())?;
    if let Some(key) = filters.keys().find(|k| !CONTAINER_FILTERS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("Invalid filter '{key}'")));
    }
    let all = query_bool(query, "all");
    let limit = query_get(query, "limit").and_then(|l| l.parse::<i64>().ok()).filter(|l| *l > 0);
    let any = |key: &str, test: &dyn Fn(&str) -> bool| {
        filters.get(key).is_none_or(|vs| vs.is_empty() || vs.iter().any(|v| test(v)))
    };
    let state = engine.lock();
    let now = clock::now_nanos();
    let mut listed = Vec::new();
    // dockerd lists the newest first.
    for c in state.containers.iter().rev() {
        // A status filter shows stopped containers without `all`.
        if !all && !c.state.is_up() && !filters.contains_key("status") && !filters.contains_key("exited") {
            continue;
        }
        let keep = any("id", &|v| c.id.has_prefix(v))
            && any("name", &|v| name_matches(v, &c.name))
            && any("label", &|v| match v.split_once('=') {
                Some((k, value)) => c.spec.label(k) == Some(value),
                None => c.spec.label(v).is_some(),
            })
            && any("status", &|v| c.state.as_str() == v)
            && any("exited", &|v| c.state == RunState::Exited && v.parse() == Ok(c.exit_code));
        if keep {
            listed.push(render::summary(&state, c, now));
        }
        if limit.is_some_and(|l| listed.len() as i64 >= l) {
            break;
        }
    }
    Ok(Reply::Json(StatusCode::OK, Value::Array(listed)))
}

/// `GET /events`: the kept events from `since` that pass `filters`,
/// then the new ones as they come, until `until` (or for ever).
fn events(engine: &Engine, query: &str) -> Response<Body> {
    let time = |key: &str| match query_get(query, key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => parse_timestamp(&text).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("failed to parse value {text} as a time: unsupported format"))
        }),
    };
    let opened = (|| {
        let since = time("since")?;
        let until = time("until")?;
        let filter =
            EventFilter::new(parse_filters(query_get(query, "filters").as_deref())?).map_err(ApiError::bad_request)?;
        Ok::<_, ApiError>((since, until, filter))
    })();
    let (since, until, filter) = match opened {
        Ok(opened) => opened,
        Err(e) => return reply(Err(e)),
    };
    let now = clock::now_nanos();
    let (replay, live) = engine.lock().events.subscribe(Arc::new(filter), since, until, now);
    let deadline =
        until.map(|u| tokio::time::Instant::now() + Duration::from_nanos(u.saturating_sub(now).max(0) as u64));
    let live = futures_util::stream::unfold((live, deadline), |(live, deadline)| async move {
        let mut live: mpsc::Receiver<Bytes> = live?;
        let next = match deadline {
            Some(deadline) => tokio::select! {
                line = live.recv() => line,
                _ = tokio::time::sleep_until(deadline) => None,
            },
            None => live.recv().await,
        };
        next.map(|line| (line, (Some(live), deadline)))
    });
    let frames = futures_util::stream::iter(replay).chain(live).map(|line| Ok::<_, Infallible>(Frame::data(line)));
    respond(StatusCode::OK, Some("application/json"), BodyExt::boxed(StreamBody::new(frames)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_split_and_checked() {
        assert_eq!(split_version("/v1.41/containers/json"), (Some("1.41"), "/containers/json"));
        assert_eq!(split_version("/containers/json"), (None, "/containers/json"));
        assert_eq!(split_version("/volumes"), (None, "/volumes"));
        assert!(check_version("1.41").is_ok());
        assert!(check_version("1.24").is_ok());
        let too_new = check_version("1.43").expect_err("refused");
        assert_eq!(too_new.message, "client version 1.43 is too new. Maximum supported API version is 1.41");
        assert!(check_version("1.11").is_err());
    }

    #[test]
    fn reads_queries_and_filters() {
        assert_eq!(query_get("all=1&name=a%2Fb+c", "name").as_deref(), Some("a/b c"));
        assert!(query_bool("all=1", "all") && query_bool("all=true", "all") && !query_bool("all=0", "all"));
        assert!(!query_bool("", "all"));
        let f = parse_filters(Some(r#"{"id":["abc"],"status":{"running":true}}"#)).expect("filters");
        assert_eq!(f["id"], ["abc"]);
        assert_eq!(f["status"], ["running"]);
        assert!(parse_filters(Some("[1]")).is_err());
    }

    #[test]
    fn name_filters_as_clients_send_them() {
        assert!(name_matches("web", "my-web-1"));
        assert!(name_matches("^/web$", "web"));
        assert!(!name_matches("^/web$", "web-1"));
        assert!(name_matches("^/web", "web-1"));
    }

    #[test]
    fn signals_by_number_or_name() {
        assert_eq!(signal_number(None), Ok(9));
        assert_eq!(signal_number(Some("SIGTERM")), Ok(15));
        assert_eq!(signal_number(Some("hup")), Ok(1));
        assert_eq!(signal_number(Some("15")), Ok(15));
        assert!(signal_number(Some("SIGNOPE")).is_err());
    }
}
