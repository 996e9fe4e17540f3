//! The HTTP side of the Consul client: a pooled hyper client (HTTP, or
//! HTTPS with a client certificate, see `tls`) and the endpoint failover.
//! The Consul calls themselves are in the sibling modules; this one only
//! knows requests, replies and endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;

use super::tls::{self, Connector};
use super::STORE;
use crate::kv::errors::error_chain;
use crate::kv::KvError;

/// Largest answer we accept (a directory listing of many engines is far smaller).
const MAX_BODY: usize = 64 << 20;
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// HTTP/1.1 (over TLS when configured) with pooled keep-alive connections
/// to every configured endpoint.
pub(super) struct Transport {
    client: Client<Connector, Full<Bytes>>,
    /// `https` with TLS, `http` without.
    scheme: &'static str,
    /// `host:port` of each agent or server; never empty.
    endpoints: Vec<String>,
    /// Index into `endpoints` of the one that answered last; requests start there.
    preferred: AtomicUsize,
    /// Timeout of an ordinary request (blocking queries get their wait on top).
    timeout: Duration,
}

/// An HTTP answer from some endpoint.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    /// `X-Consul-Index`, if sent.
    pub(super) index: Option<u64>,
    pub(super) body: Bytes,
}

impl Transport {
    /// A client for `endpoints` (never empty) whose connects and ordinary
    /// requests time out after `timeout`; HTTPS with `tls`.
    pub(super) fn new(endpoints: Vec<String>, timeout: Duration, tls: Option<Arc<ClientConfig>>) -> Transport {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(timeout));
        tcp.set_nodelay(true);
        // The URIs say `https` with TLS, which the TCP connector would refuse.
        tcp.enforce_http(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let connector = Connector { tcp, tls };
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT).build(connector);
        Transport { client, scheme, endpoints, preferred: AtomicUsize::new(0), timeout }
    }

    fn tls(&self) -> bool {
        self.scheme == "https"
    }

    pub(super) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoint at index `at` (as returned by [`Transport::call_any`]).
    pub(super) fn endpoint(&self, at: usize) -> &str {
        &self.endpoints[at]
    }

    /// The timeout of an ordinary request.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn unreachable(&self, reason: String) -> KvError {
        KvError::Unreachable { store: STORE, endpoints: self.endpoints.join(","), reason }
    }

    /// Sends one request, trying the endpoints in turn until one answers
    /// with any HTTP status. `timeout` defaults to the ordinary one.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<Reply, KvError> {
        Ok(self.call_any(method, path, body, timeout).await?.1)
    }

    /// [`Transport::call`], also telling which endpoint (index) answered.
    ///
    /// Starting with the endpoint that answered last means a dead member
    /// costs one failed connect per request at most, and a healthy cluster
    /// none. Only failures to get an HTTP answer move on to the next
    /// endpoint; an HTTP error from a member is the answer.
    pub(super) async fn call_any(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<(usize, Reply), KvError> {
        let timeout = timeout.unwrap_or(self.timeout);
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let mut failures = Vec::new();
        for i in 0..n {
            let at = (first + i) % n;
            let endpoint = &self.endpoints[at];
            match self.call_one(endpoint, &method, path, body, timeout).await {
                Ok(reply) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok((at, reply));
                }
                Err(reason) => {
                    tracing::debug!(%endpoint, %path, %reason, "consul: request failed");
                    failures.push(if n > 1 { format!("{endpoint}: {reason}") } else { reason });
                }
            }
        }
        Err(self.unreachable(failures.join("; ")))
    }

    /// Sends one request to the endpoint `at` only (for the agent-local
    /// API: a check lives on the agent that registered it).
    pub(super) async fn call_at(
        &self,
        at: usize,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply, KvError> {
        let endpoint = &self.endpoints[at];
        self.call_one(endpoint, &method, path, body, self.timeout).await.map_err(|reason| {
            tracing::debug!(%endpoint, %path, %reason, "consul: request failed");
            KvError::Unreachable { store: STORE, endpoints: endpoint.clone(), reason }
        })
    }

    async fn call_one(
        &self,
        endpoint: &str,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let uri = format!("{}://{endpoint}{path}", self.scheme);
        let request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .map_err(|e| format!("invalid address or request {uri}: {e}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| tls::explain(error_chain(&e), self.tls()))?;
            let status = response.status();
            let index = response
                .headers()
                .get("x-consul-index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {}", error_chain(&*e)))?
                .to_bytes();
            if !self.tls() && tls::is_plain_to_https(status, &body) {
                // Not Consul's answer: the port wants TLS. A failure to
                // talk, so the next endpoint is tried.
                return Err(tls::explain(format!("HTTP {status}: {}", snippet(&body)), false));
            }
            Ok(Reply { status, index, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// The error for an HTTP status we did not expect while doing `what`.
pub(super) fn bad_answer(what: &str, reply: &Reply) -> KvError {
    KvError::Protocol { store: STORE, reason: format!("{what}: HTTP {}: {}", reply.status, snippet(&reply.body)) }
}

/// The start of a body, for error messages.
pub(super) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_short() {
        assert_eq!(snippet(b"  short \n"), "short");
        assert_eq!(snippet("é".repeat(300).as_bytes()).chars().count(), 203);
    }
}
