//! A replica relays every request, except the few it answers itself, to the
//! primary, unchanged and request by request over pooled connections.
//!
//! During a failover a request waits (up to the failover wait) for a new
//! primary. A connection the old primary refused was never sent, so it is
//! relayed to the new one; a refusal also tells the election that the old
//! primary's process is gone, so its lock can be ended at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response};
use swarm_leadership::{Leadership, Role};
use swarm_proxy::{OnUpgrade, ProxyBody, ProxyError, Upstream};
use tokio::time::Instant;

use super::request::read_body;
use super::routes::{Handler, Matched};
use super::{Api, ApiError};
use crate::cluster::{lost_creates, set_swarm_id};

/// Bodies up to this size are buffered so the request can be sent again
/// after a refused connection; larger ones are streamed once.
const REPLAYABLE_BODY: u64 = 1 << 20;
/// How long a replica looks for a create its failed primary may have made:
/// an engine under load can take seconds to make a container, and the
/// create may still be in flight there when the next primary is elected.
const CREATE_SETTLE: Duration = Duration::from_secs(10);
/// Connecting to the primary may take this long before it counts as unreachable.
pub const PRIMARY_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The 503 of a replica without a primary: the last primary that could not
/// be reached and why, if one was tried.
fn unavailable(last_error: Option<(String, ProxyError)>) -> Response<ProxyBody> {
    let message = match last_error {
        Some((addr, e)) => format!("Unable to reach primary cluster manager {addr}: {e}"),
        None => "No elected primary cluster manager".into(),
    };
    ApiError::NoPrimary(message).into_response()
}

/// Whether the body can be read into memory before relaying.
fn replayable(req: &Request<ProxyBody>) -> bool {
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match length {
        Some(n) => n <= REPLAYABLE_BODY,
        None => !req.headers().contains_key(header::TRANSFER_ENCODING),
    }
}

/// Relays `req` to the primary (or answers it here, with its `route`, if
/// this manager becomes primary meanwhile). The flag is true when the answer
/// is the primary's; false when it was answered here, or no primary could.
pub async fn relay(
    api: &Arc<Api>,
    leadership: &Leadership,
    mut req: Request<ProxyBody>,
    route: Option<Matched>,
) -> (Response<ProxyBody>, bool) {
    let deadline = Instant::now() + api.failover_wait;
    let mut upgrade = req.extensions_mut().remove::<OnUpgrade>();
    let mut once = None;
    let mut parts_body = None;
    if replayable(&req) {
        match read_body(req).await {
            Ok(read) => parts_body = Some(read),
            Err(e) => return (e.into_response(), false),
        }
    } else {
        once = Some(req);
    }
    // A create carries a swarm ID from here on, so that after a failover
    // in mid-request it can be told whether the dead primary made it.
    let create_id = match (&route, parts_body.as_mut()) {
        (Some(r), Some((parts, body))) if r.handler == Handler::ContainerCreate => stamp_create(parts, body),
        _ => None,
    };
    let mut avoid: Option<String> = None;
    let mut last_error: Option<(String, ProxyError)> = None;
    loop {
        let Some(mut attempt) = next_request(&mut once, &parts_body) else {
            return (unavailable(last_error), false);
        };
        let primary = match primary_to_try(leadership, avoid.as_deref(), deadline).await {
            Some(Role::Primary) => {
                if let Some(upgrade) = upgrade.take() {
                    attempt.extensions_mut().insert(upgrade);
                }
                return (api.clone().answer_here(attempt, route).await, false);
            }
            Some(Role::Replica { primary: Some(primary) }) => primary,
            _ => return (unavailable(last_error), false),
        };
        let upstream = match api.primary_upstream(&primary) {
            Ok(upstream) => upstream,
            Err(e) => return (unavailable(Some((primary, e))), false),
        };
        let sent = tokio::select! {
            sent = swarm_proxy::forward_with_upgrade(&upstream, attempt, None, upgrade.take()) => sent,
            // A primary cut off from the network never answers; once another
            // manager is primary, stop waiting for it.
            _ = leadership.wait_for_primary(Some(&primary), Duration::from_secs(3600)) => {
                let lost = format!(
                    "Unable to reach primary cluster manager {primary}: it lost the leadership while the request was in flight"
                );
                return (settle(api, leadership, create_id.as_deref(), &primary, deadline, lost).await, false);
            }
        };
        match sent {
            Ok(resp) => return (resp, true),
            Err((e, back)) if e.is_connect() => {
                if e.is_refused() {
                    leadership.report_refused(&primary);
                }
                upgrade = back;
                avoid = Some(primary.clone());
                last_error = Some((primary, e));
            }
            Err((e, _)) => {
                let failed = format!("Unable to reach primary cluster manager {primary}: {e}");
                return (settle(api, leadership, create_id.as_deref(), &primary, deadline, failed).await, false);
            }
        }
    }
}

/// The answer to a request that reached a primary which failed before
/// answering: the 503 `failed`, unless it is a create (`create_id`) that
/// was made. That is looked for once another primary is there, on the
/// engines themselves, every half second for [`CREATE_SETTLE`]. It is never
/// sent again: a second create could run beside
/// the first one, still in flight on an engine.
async fn settle(
    api: &Api,
    leadership: &Leadership,
    create_id: Option<&str>,
    failed_primary: &str,
    deadline: Instant,
    failed: String,
) -> Response<ProxyBody> {
    let Some(swarm_id) = create_id else { return ApiError::NoPrimary(failed).into_response() };
    leadership.wait_for_primary(Some(failed_primary), deadline.saturating_duration_since(Instant::now())).await;
    let looking = Instant::now();
    loop {
        if let Some(made) = find_created(api, swarm_id).await {
            return made;
        }
        if looking.elapsed() >= CREATE_SETTLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The client hears that the create failed; should it still land (an
    // engine restoring or overloaded), the container is removed.
    lost_creates::undo(&api.cluster, swarm_id, Vec::new()).await;
    ApiError::NoPrimary(failed).into_response()
}

/// Gives the buffered create body a swarm ID (rewriting it and its length);
/// returns the ID, or `None` for a body that is not a JSON object (the
/// primary refuses it anyway).
fn stamp_create(parts: &mut http::request::Parts, body: &mut Bytes) -> Option<String> {
    let mut config: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = set_swarm_id(&mut config)?;
    let stamped = serde_json::to_vec(&config).ok()?;
    parts.headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(stamped.len()));
    parts.headers.remove(header::TRANSFER_ENCODING);
    *body = Bytes::from(stamped);
    Some(id)
}

/// The answer to a create whose primary died before answering, when the
/// container was made: found on the engines themselves (not in a cache,
/// which may not have caught up), by the swarm ID the replica gave it.
async fn find_created(api: &Api, swarm_id: &str) -> Option<Response<ProxyBody>> {
    for engine in api.cluster.healthy_engines() {
        let Ok(Some(id)) = lost_creates::find_by_swarm_id(&engine, swarm_id).await else { continue };
        let _ = crate::cluster::monitor::refresh_container(&engine, &id).await;
        let created = serde_json::json!({"Id": id, "Warnings": []});
        return Some(super::reply::json_response(http::StatusCode::CREATED, &created));
    }
    None
}

/// The request for the next attempt: a copy of the buffered one, or the
/// streamed one the first time only.
fn next_request(
    once: &mut Option<Request<ProxyBody>>,
    buffered: &Option<(http::request::Parts, Bytes)>,
) -> Option<Request<ProxyBody>> {
    if let Some(req) = once.take() {
        return Some(req);
    }
    let (parts, body) = buffered.as_ref()?;
    let mut req = Request::new(swarm_proxy::full(body.clone()));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    Some(req)
}

/// The role to act on: this manager as primary, or a primary other than
/// `avoid`; waits for one until `deadline`.
async fn primary_to_try(leadership: &Leadership, avoid: Option<&str>, deadline: Instant) -> Option<Role> {
    match leadership.role() {
        Role::Primary => Some(Role::Primary),
        Role::Replica { primary: Some(p) } if Some(p.as_str()) != avoid => Some(Role::Replica { primary: Some(p) }),
        _ => leadership.wait_for_primary(avoid, deadline.saturating_duration_since(Instant::now())).await,
    }
}

/// A pooled client to a primary address, over TLS when configured.
pub fn primary_client(addr: &str, tls: Option<Arc<swarm_proxy::TlsConfigs>>) -> Result<Upstream, ProxyError> {
    Upstream::with_connect_timeout(addr, PRIMARY_CONNECT_TIMEOUT, tls)
}
