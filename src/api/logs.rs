//! `docker service logs` (`GET /services/{id}/logs`, `GET /tasks/{id}/logs`):
//! each task container's logs from its engine, merged as they come.
//!
//! With `details=true` (the CLI always asks, to print `name.slot.id@node`)
//! every message gets dockerd's task attributes in front,
//! `com.docker.swarm.node.id=…,com.docker.swarm.service.id=…,com.docker.swarm.task.id=… `,
//! after the timestamp when timestamps were asked for. The engines are asked
//! without `details`, so their own attributes never take that place.
//! Multiplexed streams (no TTY) are rewritten frame by frame, one message a
//! frame as dockerd writes them; a TTY service's raw streams are relayed as
//! they are.

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use swarm_proxy::UpstreamBody;
use swarm_proxy::{BoxError, ProxyBody};
use tokio::sync::mpsc;

use super::request::{query_bool, query_pairs};
use super::{services, tasks, ApiError, Ctx};
use crate::cluster::engine::error_message;
use crate::services::model::TaskSpec;
use crate::services::TaskRecord;

/// A stdcopy frame header: stream, three zero bytes, big-endian size.
const FRAME_HEADER: usize = 8;

/// `GET /services/{id}/logs`: every task of the service that has a container.
pub async fn service(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let service = services::find(ctx.cluster(), &ctx.route.name)?;
    let records: Vec<TaskRecord> =
        ctx.cluster().state.tasks().into_iter().filter(|t| t.task.service_id == service.id).collect();
    stream(ctx, req, tty(&service.spec.task_template), records).await
}

/// `GET /tasks/{id}/logs`.
pub async fn task(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let record = tasks::find(ctx.cluster(), &ctx.route.name)?;
    stream(ctx, req, tty(&record.task.spec), vec![record]).await
}

fn tty(spec: &TaskSpec) -> bool {
    spec.container_spec.as_ref().and_then(|c| c.tty).unwrap_or(false)
}

/// Asks each task's engine for its container's logs and merges the answers.
async fn stream(
    ctx: &Ctx<'_>,
    req: Request<ProxyBody>,
    tty: bool,
    records: Vec<TaskRecord>,
) -> Result<Response<ProxyBody>, ApiError> {
    let query = req.uri().query();
    if !query_bool(query, "stdout") && !query_bool(query, "stderr") {
        return Err(ApiError::BadRequest("Bad parameters: you must choose at least one stream".into()));
    }
    let details = query_bool(query, "details");
    let timestamps = query_bool(query, "timestamps");
    let forwarded = without_details(query);

    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut first_error = None;
    let mut streams = 0;
    for record in &records {
        let Some(container_id) = record.task.status.container_status.as_ref().map(|c| c.container_id.as_str()) else {
            continue;
        };
        let Some((engine, container)) = ctx.cluster().find_container(container_id) else {
            continue;
        };
        let path = ctx.path(&format!("/containers/{}/logs", container.id), Some(&forwarded));
        let request = Request::builder().method(Method::GET).uri(path).body(swarm_proxy::empty());
        let request = request.map_err(|e| ApiError::Internal(e.to_string()))?;
        let resp = match engine.client.send(request).await {
            Ok(resp) if resp.status().is_success() => resp,
            Ok(resp) => {
                let status = resp.status();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                first_error.get_or_insert(ApiError::Refused { status, message: error_message(&body) });
                continue;
            }
            Err(e) => {
                first_error.get_or_insert(ApiError::engine(&engine, e));
                continue;
            }
        };
        let node_id = engine.info().map(|i| i.node_id()).unwrap_or_else(|| record.task.node_id.clone());
        let prefix = details.then(|| {
            format!(
                "com.docker.swarm.node.id={node_id},com.docker.swarm.service.id={},com.docker.swarm.task.id={} ",
                record.task.service_id, record.task.id
            )
        });
        let relay = Relay { prefix, timestamps, tty, tx: tx.clone() };
        tokio::spawn(relay.run(resp.into_body()));
        streams += 1;
    }
    drop(tx);
    if streams == 0 {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|data| (Ok::<_, BoxError>(Frame::data(data)), rx))
    });
    let mut resp = Response::new(StreamBody::new(body).boxed());
    let content_type =
        if tty { "application/vnd.docker.raw-stream" } else { "application/vnd.docker.multiplexed-stream" };
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// The client's query for the engines: all of it but `details`.
fn without_details(query: Option<&str>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query_pairs(query).iter().filter(|(k, _)| k != "details") {
        out.append_pair(k, v);
    }
    out.finish()
}

/// Copies one container's log stream into the merged one.
struct Relay {
    /// The task attributes to put in front of each message, with `details`.
    prefix: Option<String>,
    timestamps: bool,
    tty: bool,
    tx: mpsc::Sender<Bytes>,
}

impl Relay {
    async fn run(self, mut body: UpstreamBody) {
        let mut pending = BytesMut::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else { continue };
            if self.tty || self.prefix.is_none() {
                if self.tx.send(data).await.is_err() {
                    return;
                }
                continue;
            }
            pending.extend_from_slice(&data);
            while let Some(frame) = self.next_frame(&mut pending) {
                if self.tx.send(frame).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Takes the next complete frame off `pending`, rewritten; `None` until
    /// one is complete.
    fn next_frame(&self, pending: &mut BytesMut) -> Option<Bytes> {
        if pending.len() < FRAME_HEADER {
            return None;
        }
        let size = u32::from_be_bytes([pending[4], pending[5], pending[6], pending[7]]) as usize;
        if pending.len() < FRAME_HEADER + size {
            return None;
        }
        let frame = pending.split_to(FRAME_HEADER + size);
        let message = &frame[FRAME_HEADER..];
        let prefix = self.prefix.as_deref().unwrap_or_default().as_bytes();
        let mut payload = Vec::with_capacity(message.len() + prefix.len());
        // `<timestamp> <attributes> <message>` as dockerd writes it.
        let split = if self.timestamps { message.iter().position(|b| *b == b' ').map(|at| at + 1) } else { Some(0) };
        let at = split.unwrap_or(0);
        payload.extend_from_slice(&message[..at]);
        payload.extend_from_slice(prefix);
        payload.extend_from_slice(&message[at..]);
        let mut out = BytesMut::with_capacity(FRAME_HEADER + payload.len());
        out.extend_from_slice(&[frame[0], 0, 0, 0]);
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&payload);
        Some(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, text: &str) -> Vec<u8> {
        let mut out = vec![stream, 0, 0, 0];
        out.extend_from_slice(&(text.len() as u32).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn frames_get_the_task_attributes_after_the_timestamp() {
        let (tx, _rx) = mpsc::channel(1);
        let relay = Relay { prefix: Some("a=1 ".into()), timestamps: true, tty: false, tx };
        let mut pending = BytesMut::from(&frame(2, "2024-01-01T00:00:00Z hello\n")[..]);
        pending.extend_from_slice(&frame(1, "2024")[..5]);
        let out = relay.next_frame(&mut pending).unwrap();
        assert_eq!(&out[..], &frame(2, "2024-01-01T00:00:00Z a=1 hello\n")[..]);
        assert!(relay.next_frame(&mut pending).is_none(), "an incomplete frame waits");
        assert_eq!(pending.len(), 5);
        let relay = Relay { timestamps: false, ..relay };
        let mut pending = BytesMut::from(&frame(1, "hi\n")[..]);
        assert_eq!(&relay.next_frame(&mut pending).unwrap()[..], &frame(1, "a=1 hi\n")[..]);
    }
}
