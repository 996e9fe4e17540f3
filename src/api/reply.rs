//! Answers the manager builds itself.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use serde_json::Value;
use swarm_proxy::{full, ProxyBody};

/// A JSON answer.
pub fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    json_bytes(status, Bytes::from(serde_json::to_vec(value).unwrap_or_default()))
}

pub fn json_bytes(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

/// A `{"message": ...}` answer with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json_response(status, &serde_json::json!({ "message": message }))
}
