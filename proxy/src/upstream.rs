//! A pooled HTTP/1.1 client bound to one upstream address.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::body::{empty, ProxyBody};
use crate::error::ProxyError;
use crate::forward::is_upgrade_request;
use crate::pool::{Pool, SendError, UpstreamBody};
use crate::tls::{TlsConfigs, UpstreamConnector};

/// How long a plain (non-streaming) API call may take before it is abandoned.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A keep-alive connection pool to one `host:port`.
///
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct Upstream {
    /// `host:port` of the upstream; never empty.
    addr: String,
    /// `Host` header value matching `addr`, precomputed once.
    host_header: HeaderValue,
    /// Pooled connections (TLS ones when the manager has TLS); idle ones
    /// are reused by later requests.
    pool: Pool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("addr", &self.addr).finish()
    }
}

impl Upstream {
    /// A client for `addr` (`host:port`), over TLS when `tls` is given.
    /// Connections are opened lazily.
    pub fn new(addr: &str, tls: Option<Arc<TlsConfigs>>) -> Result<Upstream, ProxyError> {
        Upstream::with_connect_timeout(addr, Duration::from_secs(5), tls)
    }

    /// A client whose connection attempts (TCP, then the TLS handshake if
    /// any) give up after `connect_timeout`.
    pub fn with_connect_timeout(
        addr: &str,
        connect_timeout: Duration,
        tls: Option<Arc<TlsConfigs>>,
    ) -> Result<Upstream, ProxyError> {
        let invalid = |reason: String| ProxyError::Invalid { addr: addr.to_string(), reason };
        let host_header = HeaderValue::from_str(addr).map_err(|e| invalid(e.to_string()))?;
        let connect_uri = format!("http://{addr}").parse::<http::Uri>().map_err(|e| invalid(e.to_string()))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let connector = UpstreamConnector { tcp: connector, tls, handshake_timeout: connect_timeout };
        Ok(Upstream { addr: addr.to_string(), host_header, pool: Pool::new(connector, connect_uri) })
    }

    /// The `host:port` this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req`, whose URI holds only a path and query, and returns the
    /// response head with its body still streaming. A request asking for an
    /// upgrade gets a connection of its own, which the upgrade takes over.
    pub async fn send(&self, mut req: Request<ProxyBody>) -> Result<Response<UpstreamBody>, ProxyError> {
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let path_and_query = req.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
            *req.uri_mut() = path_and_query.parse().map_err(|e: http::uri::InvalidUri| ProxyError::Invalid {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        }
        req.headers_mut().insert(header::HOST, self.host_header.clone());
        let sent = if is_upgrade_request(&req) { self.pool.send_upgrade(req).await } else { self.pool.send(req).await };
        sent.map_err(|e| match e {
            SendError::Connect(e) => {
                let e: &(dyn std::error::Error + 'static) = &*e;
                ProxyError::Connect { addr: self.addr.clone(), reason: root_cause(e), refused: was_refused(e) }
            }
            SendError::Request(e) => ProxyError::Request { addr: self.addr.clone(), reason: root_cause(&e) },
        })
    }

    /// A complete request/response exchange with a bounded duration, for API
    /// calls whose answer is small (info, inspect, lists).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(http::StatusCode, Bytes), ProxyError> {
        self.call_within(method, path, body, CALL_TIMEOUT).await
    }

    /// [`Upstream::call`] abandoned after `timeout`.
    pub async fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<(http::StatusCode, Bytes), ProxyError> {
        let mut builder = Request::builder().method(method).uri(path);
        let body = match body {
            Some(bytes) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                crate::body::full(bytes)
            }
            None => empty(),
        };
        let req =
            builder.body(body).map_err(|e| ProxyError::Invalid { addr: self.addr.clone(), reason: e.to_string() })?;
        let exchange = async {
            let resp = self.send(req).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ProxyError::Request { addr: self.addr.clone(), reason: e.to_string() })?
                .to_bytes();
            Ok((status, bytes))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::Timeout { addr: self.addr.clone() }),
        }
    }
}

/// True when some cause in the chain is a refused TCP connection.
fn was_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        current = e.source();
    }
    false
}

/// The innermost error message, which is the one that says what went wrong
/// (e.g. "Connection refused") rather than "client error (Connect)".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
