//! Accepting connections on the `-H` addresses.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use swarm_proxy::BoxError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::Api;
use crate::cli::Listen;
use crate::metrics::Metrics;
use crate::observe::Observed;

/// What one client may hold of the manager.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// How long a client may take to send the headers of a request, from
    /// the connection's start or, on a kept-alive connection, from the end
    /// of the previous answer (so it is the idle timeout too). Bodies and
    /// answers that stream (`logs -f`, `events`, attach) are not limited.
    pub header_timeout: Duration,
    /// Client connections served at once, over all listeners; more wait in
    /// the listen backlog until one ends.
    pub max_connections: usize,
    /// Largest JSON body the manager reads and parses itself.
    pub max_json_body: usize,
}

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Binds every listen address; an address that cannot be bound is an error
/// before anything is served.
pub async fn bind(addresses: &[Listen]) -> Result<Vec<Listener>, String> {
    let mut listeners = Vec::new();
    for address in addresses {
        match address {
            Listen::Tcp(addr) => {
                let listener =
                    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on tcp://{addr}: {e}"))?;
                Observed::Listening { proto: "tcp", addr }.emit();
                listeners.push(Listener::Tcp(listener));
            }
            Listen::Unix(path) => {
                // A socket file left by an earlier run would make bind fail.
                if std::fs::metadata(path).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(path);
                }
                let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen on unix://{path}: {e}"))?;
                Observed::Listening { proto: "unix", addr: path }.emit();
                listeners.push(Listener::Unix(listener));
            }
        }
    }
    Ok(listeners)
}

/// Accepts connections on every listener until the process ends, or until
/// this future is dropped: the listener and connection tasks live in join
/// sets owned here, so dropping it closes the ports and ends the connections.
pub async fn accept_all(api: Arc<Api>, listeners: Vec<Listener>) {
    let slots = Arc::new(ConnectionSlots::new(api.limits.max_connections));
    let mut listening = JoinSet::new();
    for listener in listeners {
        listening.spawn(accept(api.clone(), listener, slots.clone()));
    }
    while listening.join_next().await.is_some() {}
}

/// The cap on client connections (`--max-client-connections`).
struct ConnectionSlots {
    free: Arc<Semaphore>,
    limit: usize,
    /// Set while connections wait for a slot, so that reaching the cap is
    /// logged once per episode rather than once per waiting connection.
    full: AtomicBool,
}

impl ConnectionSlots {
    fn new(limit: usize) -> ConnectionSlots {
        ConnectionSlots { free: Arc::new(Semaphore::new(limit)), limit, full: AtomicBool::new(false) }
    }

    /// A slot for the next connection; waits (logging once) while all are taken.
    async fn take(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.free.clone().try_acquire_owned() {
            self.full.store(false, Ordering::Relaxed);
            return Some(permit);
        }
        if !self.full.swap(true, Ordering::Relaxed) {
            Observed::ConnectionLimitReached { limit: self.limit }.emit();
        }
        // Closed only if dropped, which ends the listeners first.
        self.free.clone().acquire_owned().await.ok()
    }
}

/// Serves each connection on `listener` in a task of its own, holding one
/// of `slots` until it ends.
async fn accept(api: Arc<Api>, listener: Listener, slots: Arc<ConnectionSlots>) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections while waiting for a slot, so the set
        // holds only live ones.
        let slot = loop {
            tokio::select! {
                slot = slots.take() => break slot,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        };
        let Some(slot) = slot else { return };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(Connection::Tcp(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let peer = stream.peer_addr().ok().map(|a| a.to_string());
                    match &api.tls {
                        // Read per connection: certificates may be replaced while serving.
                        Some(tls) => {
                            connections.spawn(serve_tls(api.clone(), stream, peer, tls.server_config(), slot))
                        }
                        None => connections.spawn(serve_connection(api.clone(), stream, peer, slot)),
                    };
                }
                Ok(Connection::Unix(stream)) => {
                    connections.spawn(serve_connection(api.clone(), stream, None, slot));
                }
                Err(e) => Observed::AcceptFailed { error: &e.to_string() }.emit(),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// An accepted client connection.
enum Connection {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Connection> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| Connection::Tcp(s)),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Connection::Unix(s)),
        }
    }
}

/// Counts a connection as open while it is served, however its task ends
/// (an aborted one included), so the gauge cannot drift.
struct Served(Arc<Metrics>);

impl Served {
    fn start(metrics: Arc<Metrics>) -> Served {
        Observed::ConnectionOpened.record(&metrics);
        Served(metrics)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        Observed::ConnectionClosed.record(&self.0);
    }
}

/// The client connection a request came on, in the request's extensions:
/// who the client is, and a way for a handler to end the connection.
#[derive(Debug, Clone)]
pub struct ClientConnection {
    /// The client's address; `None` on a unix socket.
    pub peer: Option<Arc<str>>,
    close: Arc<Notify>,
}

impl ClientConnection {
    pub(super) fn new(peer: Option<String>) -> ClientConnection {
        ClientConnection { peer: peer.map(Arc::from), close: Arc::new(Notify::new()) }
    }

    /// Resolves once [`ClientConnection::close`] was called (even before this was).
    pub(super) async fn closed(&self) {
        self.close.notified().await
    }

    /// Ends the connection now, whatever it is writing: ending a response
    /// body would not do for a client that stopped reading, since the
    /// connection waits for it to read the rest first.
    pub fn close(&self) {
        self.close.notify_one();
    }
}

/// Serves HTTP/1.1 on one connection from `peer` (`None` on a unix
/// socket); `_slot` is given back when it ends.
async fn serve_connection<S>(api: Arc<Api>, stream: S, peer: Option<String>, _slot: OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _served = Served::start(api.metrics.clone());
    let header_timeout = api.limits.header_timeout;
    let connection = ClientConnection::new(peer);
    let closer = connection.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let api = api.clone();
        // One body type from here on, so a request can be rebuilt and relayed again.
        let mut req = req.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed());
        req.extensions_mut().insert(connection.clone());
        let response = api.clone().handle(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    // No half-close: a client's end-of-file while its answer is pending ends
    // the connection, and with it the request to the engine. `docker run -d`
    // leaves a `wait` that the engine answers only when the container exits;
    // kept open, each held a client socket and an engine connection until
    // then. Hijacked attach/exec clients shut their write side only after
    // the upgrade, when the bytes are no longer HTTP.
    let conn = http1::Builder::new()
        .keep_alive(true)
        .half_close(false)
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        ended = conn => if let Err(e) = ended {
            Observed::ConnectionEnded { error: &e.to_string() }.emit();
        },
        // Dropping the connection closes its socket.
        _ = closer.closed() => {}
    }
}

/// How long a client of a TLS listener may take to send its first bytes and
/// complete the handshake; a silent client must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What Go's HTTPS server answers a client that speaks plain HTTP to it.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// How a connection to a TLS listener began.
enum Opening {
    /// The handshake succeeded.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The client spoke plain HTTP and was told so.
    PlainHttp,
}

/// Serves one connection of a TLS listener. A client that fails the
/// handshake gets nothing but a closed connection, and one debug line is logged.
async fn serve_tls(
    api: Arc<Api>,
    stream: TcpStream,
    peer: Option<String>,
    config: Arc<ServerConfig>,
    slot: OwnedSemaphorePermit,
) {
    let shown = peer.clone().unwrap_or_default();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, open_tls(stream, config)).await {
        Ok(Ok(Opening::Tls(stream))) => serve_connection(api, stream, peer, slot).await,
        Ok(Ok(Opening::PlainHttp)) => {}
        Ok(Err(e)) => Observed::TlsHandshakeFailed { peer: &shown, error: &e.to_string() }.emit(),
        Err(_) => Observed::TlsHandshakeFailed { peer: &shown, error: "timed out" }.emit(),
    }
}

/// Answers a plain HTTP request as Go does (only when the first five bytes
/// look like one; anything else fails the handshake), or completes the handshake.
async fn open_tls(mut stream: TcpStream, config: Arc<ServerConfig>) -> std::io::Result<Opening> {
    let mut first = [0u8; 5];
    loop {
        // A peek leaves the bytes for the handshake; the first five may come in pieces.
        let read = stream.peek(&mut first).await?;
        if read == 0 || read == first.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if matches!(&first, b"GET /" | b"HEAD " | b"POST " | b"PUT /" | b"OPTIO") {
        stream.write_all(PLAIN_HTTP_ANSWER).await?;
        stream.shutdown().await?;
        // Closing with the request unread would reset the connection and
        // could destroy the answer before the client reads it; a bounded
        // drain lets the client read it and close first.
        let (mut unread, mut sink) = ((&mut stream).take(64 * 1024), tokio::io::sink());
        let _ = tokio::time::timeout(Duration::from_secs(1), tokio::io::copy(&mut unread, &mut sink)).await;
        return Ok(Opening::PlainHttp);
    }
    let stream = TlsAcceptor::from(config).accept(stream).await?;
    Ok(Opening::Tls(Box::new(stream)))
}
