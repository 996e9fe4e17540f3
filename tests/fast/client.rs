//! A bare HTTP/1 client for talking to managers: one connection per
//! request, so no pooled connection hides what a manager does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// No request of the fast layer may take longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A complete answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `message` of a Docker-style error answer; also checks its form.
    pub fn message(&self) -> String {
        let content_type = self.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("application/json"), "error answers are JSON: {self:?}");
        self.json()["message"].as_str().unwrap_or_else(|| panic!("no message in {self:?}")).to_string()
    }

    /// The `SystemStatus` pairs of an `/info` answer.
    pub fn system_status(&self) -> Vec<(String, String)> {
        let status = self.json()["SystemStatus"].as_array().cloned().unwrap_or_default();
        status.iter().map(|p| (p[0].as_str().unwrap_or("").into(), p[1].as_str().unwrap_or("").into())).collect()
    }
}

/// Sends a request and returns the answer with its body still streaming.
pub async fn open(addr: SocketAddr, method: Method, path: &str, body: Bytes) -> Response<Incoming> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method.clone()).uri(path).header(http::header::HOST, addr.to_string());
        if !body.is_empty() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let resp = sender.send_request(req.body(Full::new(body))?).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(resp)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => panic!("{method} {path} on {addr}: {e}"),
        Err(_) => panic!("{method} {path} on {addr}: no answer in {REQUEST_TIMEOUT:?}"),
    }
}

pub async fn send(addr: SocketAddr, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
    let resp = open(addr, method.clone(), path, body.into()).await;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: body not complete in {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        .to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, Method::GET, path, Bytes::new()).await
}

pub async fn post(addr: SocketAddr, path: &str, body: Value) -> Reply {
    send(addr, Method::POST, path, serde_json::to_vec(&body).expect("json")).await
}

pub async fn delete(addr: SocketAddr, path: &str) -> Reply {
    send(addr, Method::DELETE, path, Bytes::new()).await
}

/// Reads a streaming body until it holds a line for which `wanted` is true
/// (lines must be JSON), and returns that line.
pub async fn read_line_until(body: &mut Incoming, wanted: impl Fn(&Value) -> bool) -> Value {
    let mut buffer = Vec::new();
    let search = async {
        loop {
            while let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=newline).collect();
                let value: Value = serde_json::from_slice(&line).expect("a JSON line");
                if wanted(&value) {
                    return value;
                }
            }
            let frame = body.frame().await.expect("the stream ended").expect("stream error");
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, search).await.expect("no such line in time")
}

/// A GET over TLS with `config`, on a connection of its own. An error is
/// returned, not raised, so a test can check that a client is refused.
pub async fn tls_get(addr: SocketAddr, path: &str, config: Arc<ClientConfig>) -> Result<Reply, String> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let stream = TlsConnector::from(config).connect(ServerName::IpAddress(addr.ip().into()), stream).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::get(path).header(http::header::HOST, addr.to_string()).body(Full::new(Bytes::new()))?;
        let (parts, body) = sender.send_request(req).await?.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Reply { status: parts.status, headers: parts.headers, body })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("GET {path} on {addr}: no answer in {REQUEST_TIMEOUT:?}")),
    }
}

/// A kept-alive HTTP/1.1 connection over TLS with `config`, for requests
/// sent one after the other on the same connection.
pub struct TlsSession {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl TlsSession {
    pub async fn open(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<TlsSession, String> {
        let opening = async {
            let stream = TcpStream::connect(addr).await?;
            let stream = TlsConnector::from(config).connect(ServerName::IpAddress(addr.ip().into()), stream).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(TlsSession { addr, sender })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, opening).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("TLS connection to {addr}: not open in {REQUEST_TIMEOUT:?}")),
        }
    }

    /// A GET on this connection; panics if it fails.
    pub async fn get(&mut self, path: &str) -> Reply {
        let exchange = async {
            let req =
                Request::get(path).header(http::header::HOST, self.addr.to_string()).body(Full::new(Bytes::new()))?;
            let (parts, body) = self.sender.send_request(req).await?.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result.unwrap_or_else(|e| panic!("GET {path} on the kept-alive connection: {e}")),
            Err(_) => panic!("GET {path} on the kept-alive connection: no answer in {REQUEST_TIMEOUT:?}"),
        }
    }
}

/// Writes `request` on a plain TCP connection and returns every byte
/// received until the server closes it.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await?;
        Ok::<_, std::io::Error>(received)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result.unwrap_or_else(|e| panic!("raw exchange with {addr}: {e}")),
        Err(_) => panic!("raw exchange with {addr}: not closed in {REQUEST_TIMEOUT:?}"),
    }
}

/// Hijacks a connection over TLS as `docker attach` does: asks for an
/// upgrade at `path`, sends `input`, shuts its side, and returns the status
/// and everything received until the server closed.
pub async fn tls_hijack(
    addr: SocketAddr,
    path: &str,
    config: Arc<ClientConfig>,
    input: &[u8],
) -> Result<(StatusCode, Vec<u8>), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let stream = TlsConnector::from(config).connect(ServerName::IpAddress(addr.ip().into()), stream).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn.with_upgrades());
        let req = Request::post(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "tcp")
            .body(Full::new(Bytes::new()))?;
        let mut resp = sender.send_request(req).await?;
        let status = resp.status();
        let mut upgraded = TokioIo::new(hyper::upgrade::on(&mut resp).await?);
        upgraded.write_all(input).await?;
        upgraded.shutdown().await?;
        let mut received = Vec::new();
        upgraded.read_to_end(&mut received).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, received))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("hijack {path} on {addr}: not done in {REQUEST_TIMEOUT:?}")),
    }
}
