//! A pooled HTTP/1.1 client bound to one upstream address.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{empty, ProxyBody};
use crate::error::ProxyError;
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
    client: Client<UpstreamConnector, ProxyBody>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("addr", &self.addr).finish()
    }
}

/// Idle connections kept per upstream: more than a relay's usual
/// concurrency. hyper opens a new connection whenever none is idle at the
/// moment a request starts, even if one is about to be returned; with 4
/// kept, 4 busy clients made the pool open and close a connection every
/// hundred requests or so (`cargo bench --bench core` counts them). The
/// idle timeout below still bounds what a quiet engine keeps.
const MAX_IDLE_PER_ENGINE: usize = 32;
/// How long an idle connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

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
        let host_header = HeaderValue::from_str(addr)
            .map_err(|e| ProxyError::Invalid { addr: addr.to_string(), reason: e.to_string() })?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let connector = UpstreamConnector { tcp: connector, tls, handshake_timeout: connect_timeout };
        // A manager over a thousand engines would hold tens of thousands of
        // sockets and their buffers if every burst's connections stayed
        // for good: idle ones are closed after the idle timeout. Busy
        // relays reuse theirs well within it; a quiet engine's refreshes
        // (every 30 s or more) open one anew, which on the engines'
        // network costs far less than keeping thousands.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // Without a timer, idle connections are only dropped when the
            // pool is next used: a quiet engine's would stay open.
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_ENGINE)
            .build(connector);
        Ok(Upstream { addr: addr.to_string(), host_header, client })
    }

    /// The `host:port` this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req`, whose URI holds only a path and query, and returns the
    /// response head with its body still streaming.
    pub async fn send(&self, mut req: Request<ProxyBody>) -> Result<Response<Incoming>, ProxyError> {
        let path_and_query = req.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        let uri = format!("http://{}{}", self.addr, path_and_query)
            .parse::<http::Uri>()
            .map_err(|e| ProxyError::Invalid { addr: self.addr.clone(), reason: e.to_string() })?;
        *req.uri_mut() = uri;
        req.headers_mut().insert(header::HOST, self.host_header.clone());
        self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                ProxyError::Connect { addr: self.addr.clone(), reason: root_cause(&e), refused: was_refused(&e) }
            } else {
                ProxyError::Request { addr: self.addr.clone(), reason: root_cause(&e) }
            }
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
