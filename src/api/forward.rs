//! Sending requests to engines: one request streamed to one engine, a
//! buffered copy to several, and the fan-outs to every engine.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use swarm_proxy::{full, ProxyBody};

use super::reply::json_response;
use super::request::read_json_body;
use super::{ApiError, Ctx};
use crate::cluster::engine::Engine;
use crate::cluster::Cluster;

/// Relays `req` to `engine` at `path_and_query`, streaming.
pub async fn forward_to(
    engine: &Engine,
    req: Request<ProxyBody>,
    path_and_query: &str,
) -> Result<Response<ProxyBody>, ApiError> {
    let forwarding = swarm_proxy::forward(&engine.client, req, Some(path_and_query));
    match engine.unless_flagged(forwarding).await {
        Ok(answer) => answer.map_err(|e| ApiError::engine(engine, e)),
        Err(error) => Err(ApiError::StoppedAnswering { node: engine.name(), error }),
    }
}

/// A buffered answer from one engine.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn into_response(self) -> Response<ProxyBody> {
        let mut resp = Response::new(full(self.body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp.headers_mut().remove(header::CONTENT_LENGTH);
        resp.headers_mut().remove(header::TRANSFER_ENCODING);
        resp
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends a copy of a buffered request to `engine` and buffers the answer.
pub async fn replay(
    engine: &Engine,
    method: &Method,
    headers: &HeaderMap,
    path_and_query: &str,
    body: Bytes,
) -> Result<Answer, ApiError> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path_and_query)
        .body(full(body.clone()))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    *req.headers_mut() = headers.clone();
    if !body.is_empty() {
        req.headers_mut().insert(header::CONTENT_LENGTH, body.len().into());
        if !req.headers().contains_key(header::CONTENT_TYPE) {
            req.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        }
    } else {
        req.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let resp = swarm_proxy::forward(&engine.client, req, None).await.map_err(|e| ApiError::engine(engine, e))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| ApiError::Internal(format!("{} ({}): {e}", engine.name(), engine.addr)))?
        .to_bytes();
    Ok(Answer { status: parts.status, headers: parts.headers, body })
}

/// At least one healthy engine, or the original's error.
pub fn healthy(cluster: &Cluster) -> Result<Vec<Arc<Engine>>, ApiError> {
    let engines = cluster.healthy_engines();
    if engines.is_empty() {
        return Err(ApiError::NoNode("No healthy node available in the cluster".into()));
    }
    Ok(engines)
}

/// Relays the request to the first healthy engine.
pub async fn to_any_engine(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let engine = healthy(ctx.cluster())?.remove(0);
    let pq = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    forward_to(&engine, req, &pq).await
}

/// Sends the request to every healthy engine and merges the JSON objects they
/// answer (lists are concatenated, numbers added): used for prune.
pub async fn to_every_engine(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let engines = healthy(ctx.cluster())?;
    let pq = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let (parts, body) = read_json_body(req, ctx.api.limits.max_json_body).await?;
    let answers = join_all(engines.iter().map(|e| replay(e, &parts.method, &parts.headers, &pq, body.clone()))).await;
    let mut merged = serde_json::Map::new();
    for answer in answers {
        let answer = answer?;
        if !answer.status.is_success() {
            return Ok(answer.into_response());
        }
        if let Value::Object(obj) = answer.json() {
            for (k, v) in obj {
                merge_value(merged.entry(k).or_insert(Value::Null), v);
            }
        }
    }
    Ok(json_response(StatusCode::OK, &Value::Object(merged)))
}

fn merge_value(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        (into @ Value::Number(_), Value::Number(b)) => {
            // Engines' numbers (bytes reclaimed) may be anything: saturate rather than overflow.
            let sum = into.as_u64().unwrap_or(0).saturating_add(b.as_u64().unwrap_or(0));
            *into = Value::from(sum);
        }
        (into, from) if into.is_null() => *into = from,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_prune_answers() {
        let mut into = Value::Null;
        merge_value(&mut into, serde_json::json!(["a"]));
        merge_value(&mut into, serde_json::json!(["b"]));
        assert_eq!(into, serde_json::json!(["a", "b"]));
        let mut n = Value::from(5);
        merge_value(&mut n, Value::from(7));
        assert_eq!(n, Value::from(12));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::proptest_json::engine_json;
    use proptest::prelude::*;

    proptest! {
        /// Any two values merge; numbers add up without overflowing.
        #[test]
        fn merging_any_values(mut into in engine_json(), from in engine_json()) {
            merge_value(&mut into, from);
        }
    }

    #[test]
    fn huge_sums_saturate() {
        let mut into = serde_json::json!(u64::MAX);
        merge_value(&mut into, serde_json::json!(2));
        assert_eq!(into, u64::MAX);
    }
}
