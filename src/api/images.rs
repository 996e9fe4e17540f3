//! Image routes: lists merged across engines, pulls fanned out to every
//! engine, and single-image operations on the engines that have the image.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use swarm_proxy::{BoxError, ProxyBody};
use tokio::sync::mpsc;

use super::forward::{forward_to, healthy, replay};
use super::reply::json_response;
use super::request::{query_get, query_pairs, read_body, take_filters, NodeFilter};
use super::routes::Handler;
use super::{ApiError, Ctx};
use crate::cluster::engine::Engine;
use crate::cluster::monitor::{self, Kind};
use swarm_scheduler::ImageSnapshot;

/// `GET /images/json`: every engine's answer to the same query, de-duplicated
/// by ID. `--filter node=` is the manager's own: it picks the engines asked
/// (engines do not know the filter).
pub async fn list(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let (taken, query) = take_filters(req.uri().query(), &["node"])?;
    let nodes = NodeFilter::new(taken.get("node").map(Vec::as_slice).unwrap_or_default())?;
    let engines: Vec<Arc<Engine>> = healthy(ctx.cluster())?.into_iter().filter(|e| nodes.matches(&e.name())).collect();
    let path = ctx.path("/images/json", Some(&query));
    let answers = join_all(engines.iter().map(|e| e.get_json::<Value>(&path))).await;
    let answers = answers.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(StatusCode::OK, &Value::Array(merge_images(answers))))
}

/// The images of the engines' `/images/json` answers, de-duplicated by ID
/// (the tags and digests of copies are added to the first one). Entries
/// that are not objects are dropped: there is no image in them.
fn merge_images(answers: Vec<Value>) -> Vec<Value> {
    let mut merged: Vec<serde_json::Map<String, Value>> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for answer in answers {
        let Value::Array(images) = answer else {
            continue;
        };
        for image in images {
            let Value::Object(image) = image else {
                continue;
            };
            let id = image.get("Id").and_then(Value::as_str).unwrap_or_default().to_string();
            match by_id.get(&id) {
                Some(&i) => {
                    for key in ["RepoTags", "RepoDigests"] {
                        if let Some(from) = image.get(key) {
                            union_strings(merged[i].entry(key).or_insert(Value::Null), from);
                        }
                    }
                }
                None => {
                    by_id.insert(id, merged.len());
                    merged.push(image);
                }
            }
        }
    }
    merged.into_iter().map(Value::Object).collect()
}

fn union_strings(into: &mut Value, from: &Value) {
    let Some(from) = from.as_array() else { return };
    if !into.is_array() {
        *into = Value::Array(Vec::new());
    }
    if let Value::Array(items) = into {
        for v in from {
            if !items.contains(v) {
                items.push(v.clone());
            }
        }
    }
}

/// A streaming body fed by a channel.
fn channel_body(rx: mpsc::Receiver<Bytes>) -> ProxyBody {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|data| (Ok::<_, BoxError>(Frame::data(data)), rx))
    });
    StreamBody::new(stream).boxed()
}

fn message(node: &str, status: &str) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"id": node, "status": status})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// `POST /images/create`: a pull goes to every healthy engine at once, with
/// one progress line per node; an import (`fromSrc`) is copied to every engine.
pub async fn create(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let engines = healthy(ctx.cluster())?;
    let query = req.uri().query().map(str::to_string);
    let path = ctx.path("/images/create", query.as_deref());
    let (parts, body) = read_body(req).await?;
    let image = match query_get(query.as_deref(), "fromImage") {
        Some(image) if !image.is_empty() => image,
        _ => query_get(query.as_deref(), "repo").unwrap_or_else(|| "image".into()),
    };
    let tag = query_get(query.as_deref(), "tag").unwrap_or_default();
    let shown = if !tag.is_empty() {
        if tag.starts_with("sha256:") {
            format!("{image}@{tag}")
        } else {
            format!("{image}:{tag}")
        }
    } else if image.contains('@') || image.rsplit('/').next().is_some_and(|last| last.contains(':')) {
        image.clone()
    } else {
        format!("{image}:latest")
    };
    let importing = query_get(query.as_deref(), "fromSrc").is_some();
    let verb = if importing { "Importing" } else { "Pulling" };

    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut tasks = Vec::new();
    for engine in engines {
        let (tx, path, headers, body, shown) =
            (tx.clone(), path.clone(), parts.headers.clone(), body.clone(), shown.clone());
        tasks.push(tokio::spawn(async move {
            let node = engine.name();
            let _ = tx.send(message(&node, &format!("{verb} {shown}..."))).await;
            let outcome = pull_on(&engine, &path, &headers, body).await;
            let status = match &outcome {
                Ok(()) => format!("{verb} {shown}... : downloaded"),
                Err(e) => format!("{verb} {shown}... : {e}"),
            };
            let _ = tx.send(message(&node, &status)).await;
            if outcome.is_ok() {
                let _ = monitor::refresh_kind(&engine, Kind::Images).await;
            }
            outcome.err().map(|e| format!("{node}: {e}"))
        }));
    }
    drop(tx);
    let (final_tx, final_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut rx = rx;
        let relay = async {
            while let Some(line) = rx.recv().await {
                if final_tx.send(line).await.is_err() {
                    return;
                }
            }
        };
        let (_, results) = tokio::join!(relay, join_all(tasks));
        let errors: Vec<String> = results.into_iter().filter_map(|r| r.ok().flatten()).collect();
        if !errors.is_empty() {
            let text = errors.join("; ");
            let mut line =
                serde_json::to_vec(&json!({"errorDetail": {"message": text}, "error": text})).unwrap_or_default();
            line.push(b'\n');
            let _ = final_tx.send(Bytes::from(line)).await;
        }
    });
    let mut resp = Response::new(channel_body(final_rx));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Runs one engine's pull (or import) to the end; the error is the engine's own message.
async fn pull_on(engine: &Engine, path: &str, headers: &http::HeaderMap, body: Bytes) -> Result<(), String> {
    let answer = replay(engine, &Method::POST, headers, path, body).await.map_err(|e| e.to_string())?;
    if !answer.status.is_success() {
        return Err(crate::cluster::engine::error_message(&answer.body));
    }
    for line in answer.body.split(|b| *b == b'\n') {
        if let Ok(v) = serde_json::from_slice::<Value>(line) {
            if let Some(error) = v["error"].as_str() {
                return Err(error.to_string());
            }
        }
    }
    Ok(())
}

/// `POST /images/load`: the archive is loaded into every healthy engine.
pub async fn load(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let engines = healthy(ctx.cluster())?;
    let path = ctx.path("/images/load", req.uri().query());
    let (parts, body) = read_body(req).await?;
    let answers = join_all(engines.iter().map(|e| replay(e, &parts.method, &parts.headers, &path, body.clone()))).await;
    let mut first = None;
    let mut errors = Vec::new();
    for (engine, answer) in engines.iter().zip(answers) {
        match answer {
            Ok(a) if a.status.is_success() => {
                let _ = monitor::refresh_kind(engine, Kind::Images).await;
                first.get_or_insert(a);
            }
            Ok(a) => errors.push(format!("{}: {}", engine.name(), crate::cluster::engine::error_message(&a.body))),
            Err(e) => errors.push(e.to_string()),
        }
    }
    match (first, errors.is_empty()) {
        (Some(a), true) => Ok(a.into_response()),
        _ => Err(ApiError::Internal(errors.join("; "))),
    }
}

/// `GET /images/get?names=…` (`docker save`): relayed to an engine that holds
/// every image named, as the original did; one name alone goes to the first
/// engine that has it, whose own error answers when none has.
async fn save(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let names: Vec<String> =
        query_pairs(req.uri().query()).into_iter().filter(|(k, _)| k == "names").map(|(_, v)| v).collect();
    let holder = healthy(ctx.cluster())?.into_iter().find(|e| {
        let images = e.images();
        names.iter().all(|name| images.iter().any(|image| image_matches(image, name)))
    });
    match holder {
        Some(engine) => {
            let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
            forward_to(&engine, req, &path).await
        }
        None if names.len() > 1 => Err(ApiError::NotFound(format!(
            "Unable to find a healthy engine containing all images: [{}]",
            names.join(" ")
        ))),
        None => first_with_image(ctx, req).await,
    }
}

/// True when `name` (as `docker save` takes it: `repo:tag`, `repo` for all
/// its tags, `repo@digest`, or an ID or ID prefix) names `image`.
fn image_matches(image: &ImageSnapshot, name: &str) -> bool {
    let id = image.id.trim_start_matches("sha256:");
    let has_tag = name.contains('@') || name.rsplit('/').next().is_some_and(|last| last.contains(':'));
    image.id == name
        || (name.len() >= 12 && id.starts_with(name))
        || if has_tag {
            image.repo_tags.iter().chain(&image.repo_digests).any(|t| t == name)
        } else {
            image.repo_tags.iter().any(|t| t.rsplit_once(':').is_some_and(|(repo, _)| repo == name))
        }
}

/// Single-image reads and push: relayed to the first engine that has the
/// image; `docker save` as [`save`] says.
pub async fn first_with(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    if ctx.route.handler == Handler::ImagesSave {
        return save(ctx, req).await;
    }
    first_with_image(ctx, req).await
}

async fn first_with_image(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let engines = healthy(ctx.cluster())?;
    let pq = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let (parts, body) = read_body(req).await?;
    let mut last = None;
    for engine in &engines {
        let mut copy = Request::builder()
            .method(parts.method.clone())
            .uri(pq.as_str())
            .body(swarm_proxy::full(body.clone()))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        *copy.headers_mut() = parts.headers.clone();
        let resp = forward_to(engine, copy, &pq).await?;
        if resp.status() != StatusCode::NOT_FOUND {
            return Ok(resp);
        }
        last = Some(resp);
    }
    last.ok_or_else(|| ApiError::NotFound(format!("No such image: {}", ctx.route.name)))
}

/// Sends the request to every healthy engine; answers from engines without
/// the image (404) are dropped. Returns the engines' successful answers.
async fn on_every_engine_with(
    ctx: &Ctx<'_>,
    req: Request<ProxyBody>,
) -> Result<(Vec<(Arc<Engine>, super::forward::Answer)>, Option<super::forward::Answer>), ApiError> {
    let engines = healthy(ctx.cluster())?;
    let pq = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let (parts, body) = read_body(req).await?;
    let answers = join_all(engines.iter().map(|e| replay(e, &parts.method, &parts.headers, &pq, body.clone()))).await;
    let mut ok = Vec::new();
    let mut failure: Option<super::forward::Answer> = None;
    for (engine, answer) in engines.into_iter().zip(answers) {
        let answer = answer?;
        if answer.status.is_success() {
            ok.push((engine, answer));
        } else if failure.as_ref().is_none_or(|f| f.status == StatusCode::NOT_FOUND) {
            failure = Some(answer);
        }
    }
    Ok((ok, failure))
}

/// `POST /images/{name}/tag`: on every engine that has the image.
pub async fn tag(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let (ok, failure) = on_every_engine_with(ctx, req).await?;
    for (engine, _) in &ok {
        let _ = monitor::refresh_kind(engine, Kind::Images).await;
    }
    match (ok.into_iter().next(), failure) {
        (Some((_, answer)), _) => Ok(answer.into_response()),
        (None, Some(failure)) => Ok(failure.into_response()),
        (None, None) => Err(ApiError::NotFound(format!("No such image: {}", ctx.route.name))),
    }
}

/// `DELETE /images/{name}`: on every engine that has it; the answers are merged.
pub async fn remove(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let (ok, failure) = on_every_engine_with(ctx, req).await?;
    if ok.is_empty() {
        return match failure {
            Some(f) => Ok(f.into_response()),
            None => Err(ApiError::NotFound(format!("No such image: {}", ctx.route.name))),
        };
    }
    let mut merged = Vec::new();
    for (engine, answer) in ok {
        let _ = monitor::refresh_kind(&engine, Kind::Images).await;
        if let Value::Array(items) = answer.json() {
            for item in items {
                if !merged.contains(&item) {
                    merged.push(item);
                }
            }
        }
    }
    Ok(json_response(StatusCode::OK, &Value::Array(merged)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unions_tags() {
        let mut into = json!(["a:1"]);
        union_strings(&mut into, &json!(["a:1", "b:2"]));
        assert_eq!(into, json!(["a:1", "b:2"]));
        let mut null = Value::Null;
        union_strings(&mut null, &json!(["x"]));
        assert_eq!(null, json!(["x"]));
    }

    #[test]
    fn save_names_match_tags_repositories_digests_and_ids() {
        let mut image =
            ImageSnapshot::new(&format!("sha256:{}", "ab".repeat(32)), &["busybox:latest", "reg:5000/x:v1"]);
        image.repo_digests.push("busybox@sha256:cd".into());
        for name in ["busybox:latest", "busybox", "reg:5000/x", "reg:5000/x:v1", "busybox@sha256:cd", "abababababab"] {
            assert!(image_matches(&image, name), "{name}");
        }
        for name in ["busybox:1", "busy", "reg:5000/x:v2", "abab", "nope"] {
            assert!(!image_matches(&image, name), "{name}");
        }
    }

    #[test]
    fn progress_lines_name_the_node() {
        let line = message("node-02", "Pulling busybox:latest... : downloaded");
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["id"], "node-02");
    }
}

#[cfg(test)]
mod proptests {
    use std::collections::HashSet;

    use super::*;
    use crate::proptest_json::engine_json;
    use proptest::prelude::*;

    proptest! {
        /// Any engines' answers merge into objects with unique IDs.
        #[test]
        fn merging_any_answers(answers in prop::collection::vec(engine_json(), 0..4), lists in prop::collection::vec(prop::collection::vec(engine_json(), 0..4), 0..3)) {
            let answers: Vec<Value> = answers.into_iter().chain(lists.into_iter().map(Value::Array)).collect();
            let merged = merge_images(answers);
            let mut ids = HashSet::new();
            for image in &merged {
                prop_assert!(image.is_object());
                prop_assert!(ids.insert(image["Id"].as_str().unwrap_or_default().to_string()));
            }
        }
    }

    #[test]
    fn merges_copies_of_an_image() {
        let merged = merge_images(vec![
            json!([{"Id": "a", "RepoTags": ["x:1"]}, 3, {"Id": "b"}]),
            json!([{"Id": "a", "RepoTags": ["x:2"]}, 4, {"Id": "b", "RepoDigests": ["x@sha256:1"]}]),
            json!({"message": "not a list"}),
        ]);
        assert_eq!(
            merged,
            [json!({"Id": "a", "RepoTags": ["x:1", "x:2"]}), json!({"Id": "b", "RepoDigests": ["x@sha256:1"]})]
        );
    }
}
