//! Relaying one request to an upstream, including hijacked connections.

use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::upstream::Upstream;

/// Headers that describe one hop, not the message; they must not be relayed.
/// `upgrade` and `connection` are put back for hijacked requests.
const HOP_HEADERS: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// True when the client asks to take over the connection (`Upgrade: tcp`),
/// as the Docker CLI does for attach and interactive exec.
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
}

/// Removes hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_headers(headers: &mut HeaderMap) {
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| header::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_HEADERS.iter()) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// Relays `req` to `upstream`, with `path_and_query` replacing the request's
/// own when given (e.g. a container name resolved to its ID).
///
/// Bodies stream in both directions. When the client asked for an upgrade and
/// the upstream agreed (101), both connections are handed to a task that
/// pipes bytes both ways, honouring half-close, until both sides are done.
pub async fn forward(
    upstream: &Upstream,
    mut req: Request<ProxyBody>,
    path_and_query: Option<&str>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let client_upgrade = req.extensions_mut().remove::<OnUpgrade>();
    forward_with_upgrade(upstream, req, path_and_query, client_upgrade).await.map_err(|(e, _)| e)
}

/// [`forward`] with the client's upgrade handle passed separately. When no
/// connection could be made, the handle comes back with the error, so the
/// same client request can be relayed to another upstream.
pub async fn forward_with_upgrade(
    upstream: &Upstream,
    mut req: Request<ProxyBody>,
    path_and_query: Option<&str>,
    client_upgrade: Option<OnUpgrade>,
) -> Result<Response<ProxyBody>, (ProxyError, Option<OnUpgrade>)> {
    let upgrade_protocol = req.headers().get(header::UPGRADE).cloned();
    if let Some(pq) = path_and_query {
        match pq.parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => {
                let e: http::uri::InvalidUri = e;
                let error = ProxyError::Invalid { addr: upstream.addr().to_string(), reason: e.to_string() };
                return Err((error, client_upgrade));
            }
        }
    }
    strip_hop_headers(req.headers_mut());
    if let Some(protocol) = &upgrade_protocol {
        req.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("Upgrade"));
        req.headers_mut().insert(header::UPGRADE, protocol.clone());
    }

    let mut resp = match upstream.send(req).await {
        Ok(resp) => resp,
        Err(e) if e.is_connect() => return Err((e, client_upgrade)),
        Err(e) => return Err((e, None)),
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(splice(client_upgrade, upstream_upgrade));
        }
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, crate::body::empty()));
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_headers(&mut parts.headers);
    Ok(Response::from_parts(parts, body.map_err(|e| Box::new(e) as crate::body::BoxError).boxed()))
}

/// Pipes the two upgraded connections into each other until both directions
/// have reached end-of-file. An EOF on one side is passed on as a write
/// shutdown to the other, so `echo hi | docker exec -i c cat` completes.
async fn splice(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "hijacked connection could not be upgraded");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "hijacked connection ended with an error");
    }
}
