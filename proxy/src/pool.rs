//! Keep-alive connections to one upstream, each driven by the task using it.
//!
//! hyper-util's pooled client runs every connection in a task of its own, so
//! a relayed request crosses tasks on its way out and its answer crosses back,
//! through channels, often to the other runtime worker. Here the task that
//! sends a request polls the connection itself, until the response body has
//! been read to its end; the connection then waits in the pool, unpolled,
//! for the next request. Against the pooled client, on the same engine and
//! load (`wrk -c4` on a relayed inspect, four runs each), this took the
//! manager's CPU per request from 53-77 to 41-61 us with one runtime worker
//! and from 62-75 to 57-70 us with two.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower_service::Service;

use crate::body::{BoxError, ProxyBody};
use crate::tls::{UpstreamConnector, UpstreamStream};

/// Idle connections kept per upstream at most: more than a relay's usual
/// concurrency, so that busy clients find one rather than open their own.
const MAX_IDLE: usize = 32;
/// How long the most recently used idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the other idle connections are kept. A burst's extra
/// connections are reused while it lasts, and closed soon after: a manager
/// starting over 1,000 engines refreshes each with several requests at once,
/// and kept for [`IDLE_TIMEOUT`] those connections held about 5,700 sockets
/// and 70 MiB of buffers (`cargo bench --bench scale`).
const SURPLUS_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// The reaper's passes are at least this far apart, so that connections
/// expiring close together are closed together.
const REAP_GRANULARITY: Duration = Duration::from_millis(250);

type Connection = http1::Connection<TokioIo<UpstreamStream>, ProxyBody>;

/// One HTTP/1.1 connection: the handle requests go in through, and the state
/// machine that reads and writes the socket, which makes progress only
/// while it is polled.
struct Driven {
    sender: http1::SendRequest<ProxyBody>,
    /// Behind a mutex only so that a body holding it is `Sync`, as boxed
    /// bodies must be; it is reached through `get_mut`, never locked.
    conn: std::sync::Mutex<Connection>,
}

impl Driven {
    /// Polls the connection's reads and writes. Ready once it has ended:
    /// closed by the peer, failed, or (for an upgrade) handed over.
    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let conn = self.conn.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        Pin::new(conn).poll(cx).map(|_| ())
    }
}

/// Why [`Pool::send`] failed.
pub(crate) enum SendError {
    /// No connection could be made: the request was never sent.
    Connect(BoxError),
    /// The exchange failed on a connection.
    Request(hyper::Error),
}

/// The idle connections to one upstream, and how to make new ones.
#[derive(Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    /// Opens the TCP (and TLS) connections.
    connector: UpstreamConnector,
    /// `http://host:port` of the upstream, what the connector is given.
    connect_uri: http::Uri,
    idle: Mutex<Idle>,
    /// Wakes the reaper when a connection is returned while another is
    /// idle: the older one now expires after [`SURPLUS_IDLE_TIMEOUT`],
    /// which may be before the reaper's next pass.
    surplus: Notify,
}

struct Idle {
    /// Connections whose last response has been read to its end, the most
    /// recently returned last, each with the moment it was returned; at most
    /// [`MAX_IDLE`].
    conns: VecDeque<(Driven, Instant)>,
    /// True while a reaper task runs for this pool; it runs while `conns`
    /// is not empty.
    reaping: bool,
    /// When the reaper's current sleep ends; `None` while it is awake (or
    /// has been woken early), so that it is woken once, not at every return.
    reaper_wake: Option<Instant>,
}

impl Pool {
    pub(crate) fn new(connector: UpstreamConnector, connect_uri: http::Uri) -> Pool {
        let idle = Mutex::new(Idle { conns: VecDeque::new(), reaping: false, reaper_wake: None });
        Pool { shared: Arc::new(Shared { connector, connect_uri, idle, surplus: Notify::new() }) }
    }

    /// Sends `req` (origin-form URI) and returns the response head; its body
    /// drives the connection until it has been read, then returns it here.
    pub(crate) async fn send(&self, mut req: Request<ProxyBody>) -> Result<Response<UpstreamBody>, SendError> {
        loop {
            let (mut driven, reused) = match self.checkout().await {
                Some(driven) => (driven, true),
                None => (self.connect().await.map_err(SendError::Connect)?, false),
            };
            // The returned future does not borrow the sender: the
            // connection can be polled beside it, and dropped before it.
            let mut sending = pin!(driven.sender.try_send_request(req));
            let mut open = Some(driven);
            let mut conn_ended = false;
            let answered = poll_fn(|cx| {
                if let (false, Some(driven)) = (conn_ended, open.as_mut()) {
                    conn_ended = driven.poll_conn(cx).is_ready();
                }
                match sending.as_mut().poll(cx) {
                    Poll::Ready(result) => Poll::Ready(Some(result)),
                    Poll::Pending if conn_ended => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            let result = match answered {
                Some(result) => result,
                // Dropping the ended connection answers the request with
                // hyper's own error.
                None => {
                    open = None;
                    sending.await
                }
            };
            match result {
                Ok(resp) => {
                    let driven = open.filter(|_| !conn_ended);
                    let pool = Arc::downgrade(&self.shared);
                    return Ok(resp.map(|body| UpstreamBody { body, driven, pool }));
                }
                Err(mut e) => match e.take_message() {
                    // A reused connection closed before the request went
                    // out (the peer hung up while it was idle): the request
                    // is intact and goes out on another.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// Sends a request that asks for an upgrade, on a connection of its own
    /// that is run by a task until it is handed over (or ends).
    pub(crate) async fn send_upgrade(&self, req: Request<ProxyBody>) -> Result<Response<UpstreamBody>, SendError> {
        let Driven { mut sender, conn } = self.connect().await.map_err(SendError::Connect)?;
        let conn = conn.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection for an upgrade ended with an error");
            }
        });
        let resp = sender.send_request(req).await.map_err(SendError::Request)?;
        Ok(resp.map(|body| UpstreamBody { body, driven: None, pool: Weak::new() }))
    }

    /// The most recently returned idle connection that is still open and
    /// ready for a request, if any.
    async fn checkout(&self) -> Option<Driven> {
        loop {
            let (mut driven, since) = self.shared.idle.lock().conns.pop_back()?;
            if since.elapsed() >= IDLE_TIMEOUT {
                continue;
            }
            // One poll: a peer's close that arrived while the connection was
            // idle ends it here, rather than failing the request sent on it.
            let ready = poll_fn(|cx| {
                if driven.poll_conn(cx).is_ready() {
                    return Poll::Ready(false);
                }
                Poll::Ready(matches!(driven.sender.poll_ready(cx), Poll::Ready(Ok(()))))
            })
            .await;
            if ready {
                return Some(driven);
            }
        }
    }

    async fn connect(&self) -> Result<Driven, BoxError> {
        let mut connector = self.shared.connector.clone();
        let io = connector.call(self.shared.connect_uri.clone()).await?;
        let (sender, conn) = http1::handshake(io).await?;
        Ok(Driven { sender, conn: std::sync::Mutex::new(conn) })
    }
}

impl Shared {
    /// Keeps `driven` for a later request, unless it cannot take one.
    fn checkin(self: &Arc<Shared>, driven: Driven) {
        if driven.sender.is_closed() {
            return;
        }
        // The reaper is a task: without a runtime (a body dropped as the
        // runtime shuts down) the connection is closed instead.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (dropped, surplus) = {
            let mut idle = self.idle.lock();
            let dropped = if idle.conns.len() >= MAX_IDLE { idle.conns.pop_front() } else { None };
            idle.conns.push_back((driven, Instant::now()));
            if !idle.reaping {
                idle.reaping = true;
                runtime.spawn(reap(self.clone()));
            }
            // The connection returned before this one is now surplus: wake
            // the reaper if it sleeps past that one's deadline.
            let len = idle.conns.len();
            let surplus_deadline = (len > 1).then(|| deadline(0, len, idle.conns[len - 2].1));
            let wake = match (surplus_deadline, idle.reaper_wake) {
                (Some(due), Some(planned)) => planned > due + REAP_GRANULARITY,
                _ => false,
            };
            if wake {
                idle.reaper_wake = None;
            }
            (dropped, wake)
        };
        if surplus {
            self.surplus.notify_one();
        }
        drop(dropped);
    }
}

/// When an idle connection returned at `since`, at `index` of `len` idle
/// ones (0 = returned first), is to be closed: the newest after
/// [`IDLE_TIMEOUT`], the others after [`SURPLUS_IDLE_TIMEOUT`].
fn deadline(index: usize, len: usize, since: Instant) -> Instant {
    since + if index + 1 == len { IDLE_TIMEOUT } else { SURPLUS_IDLE_TIMEOUT }
}

impl Idle {
    /// Takes out the connections whose deadline has passed at `now`.
    fn take_expired(&mut self, now: Instant) -> Vec<Driven> {
        let len = self.conns.len();
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(len);
        for (index, (driven, since)) in std::mem::take(&mut self.conns).into_iter().enumerate() {
            if now >= deadline(index, len, since) {
                expired.push(driven);
            } else {
                kept.push_back((driven, since));
            }
        }
        self.conns = kept;
        expired
    }

    /// The earliest deadline, if any connection is idle.
    fn next_deadline(&self) -> Option<Instant> {
        let len = self.conns.len();
        self.conns.iter().enumerate().map(|(index, (_, since))| deadline(index, len, *since)).min()
    }
}

/// Closes the connections of a pool as their idle time runs out; ends when
/// none is left. It holds the pool meanwhile, at most [`IDLE_TIMEOUT`]
/// after its last use.
async fn reap(shared: Arc<Shared>) {
    loop {
        let wake = {
            let mut idle = shared.idle.lock();
            let now = Instant::now();
            let expired = idle.take_expired(now);
            let wake = idle.next_deadline().map(|next| next.max(now + REAP_GRANULARITY));
            idle.reaper_wake = wake;
            idle.reaping = wake.is_some();
            drop(idle);
            drop(expired);
            match wake {
                Some(wake) => wake,
                None => return,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = shared.surplus.notified() => {}
        }
    }
}

/// A response body from an upstream. Reading it also drives the connection
/// it arrives on; once read to its end, the connection goes back to its pool.
pub struct UpstreamBody {
    body: Incoming,
    /// The connection `body` arrives on, while it is open and not yet
    /// returned to the pool; `None` for an upgrade's connection, which runs
    /// in a task of its own.
    driven: Option<Driven>,
    pool: Weak<Shared>,
}

impl UpstreamBody {
    fn give_back(&mut self) {
        if let (Some(driven), Some(pool)) = (self.driven.take(), self.pool.upgrade()) {
            pool.checkin(driven);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(driven) = &mut this.driven {
            if driven.poll_conn(cx).is_ready() {
                this.driven = None;
            }
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.give_back();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    /// hyper's server stops reading a body of known length once it has all
    /// of it, without reading its end: the connection is reusable then too.
    /// A body dropped part way leaves unread bytes on its connection, which
    /// is closed.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use hyper_util::client::legacy::connect::HttpConnector;

    /// A raw HTTP/1.1 server on an ephemeral loopback port that answers
    /// every request with `ok`, counting the connections it accepted and
    /// those the client closed.
    struct TestServer {
        addr: String,
        accepted: Arc<AtomicUsize>,
        closed_by_client: Arc<AtomicUsize>,
    }

    impl TestServer {
        /// `close_after_answer`: hang up after each answer, without saying
        /// so in the answer, as a peer whose idle timeout fires does.
        async fn start(close_after_answer: bool) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local address").to_string();
            let accepted = Arc::new(AtomicUsize::new(0));
            let closed_by_client = Arc::new(AtomicUsize::new(0));
            let (accepts, closes) = (accepted.clone(), closed_by_client.clone());
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    accepts.fetch_add(1, Ordering::SeqCst);
                    let closes = closes.clone();
                    tokio::spawn(async move {
                        let mut received = Vec::new();
                        let mut chunk = [0u8; 4096];
                        loop {
                            while let Some(end) = head_end(&received) {
                                received.drain(..end);
                                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                                if socket.write_all(answer.as_bytes()).await.is_err() || close_after_answer {
                                    return;
                                }
                            }
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => {
                                    closes.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                                Ok(n) => received.extend_from_slice(&chunk[..n]),
                            }
                        }
                    });
                }
            });
            TestServer { addr, accepted, closed_by_client }
        }

        fn pool(&self) -> Pool {
            let connector =
                UpstreamConnector { tcp: HttpConnector::new(), tls: None, handshake_timeout: Duration::from_secs(5) };
            Pool::new(connector, format!("http://{}", self.addr).parse().expect("uri"))
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }
    }

    /// Where the first request head in `bytes` ends (requests here have no body).
    fn head_end(bytes: &[u8]) -> Option<usize> {
        bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
    }

    async fn open(pool: &Pool) -> Response<UpstreamBody> {
        let req = Request::get("/version").body(crate::body::empty()).expect("request");
        match pool.send(req).await {
            Ok(resp) => resp,
            Err(SendError::Connect(e)) => panic!("no connection: {e}"),
            Err(SendError::Request(e)) => panic!("request failed: {e}"),
        }
    }

    async fn get(pool: &Pool) -> Bytes {
        open(pool).await.into_body().collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let server = TestServer::start(false).await;
        let pool = server.pool();
        for _ in 0..5 {
            assert_eq!(get(&pool).await, "ok");
        }
        assert_eq!(server.accepted(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_peer_closed_while_idle_is_not_used_again() {
        let server = TestServer::start(true).await;
        let pool = server.pool();
        assert_eq!(get(&pool).await, "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(server.accepted(), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_closes_its_connection() {
        let server = TestServer::start(false).await;
        let pool = server.pool();
        drop(open(&pool).await);
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(server.accepted(), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_once_all_its_length_is_read_returns_its_connection() {
        let server = TestServer::start(false).await;
        let pool = server.pool();
        let mut resp = open(&pool).await;
        let frame = resp.body_mut().frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().ok(), Some(Bytes::from("ok")));
        assert!(resp.body().is_end_stream());
        drop(resp);
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(server.accepted(), 1);
    }

    /// Waits (in real time) until the server has seen `count` connections
    /// closed by the client.
    async fn wait_closed(server: &TestServer, count: usize) {
        for _ in 0..200 {
            if server.closed_by_client.load(Ordering::SeqCst) >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.closed_by_client.load(Ordering::SeqCst), count);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let server = TestServer::start(false).await;
        let pool = server.pool();
        assert_eq!(get(&pool).await, "ok");
        tokio::time::pause();
        tokio::time::advance(IDLE_TIMEOUT - Duration::from_secs(1)).await;
        assert_eq!(pool.shared.idle.lock().conns.len(), 1, "closed before its time");
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::time::resume();
        wait_closed(&server, 1).await;
        assert!(pool.shared.idle.lock().conns.is_empty());
        assert!(!pool.shared.idle.lock().reaping);
    }

    #[tokio::test]
    async fn a_bursts_extra_connections_are_closed_soon_after_it() {
        let server = TestServer::start(false).await;
        let pool = server.pool();
        let burst = [open(&pool).await, open(&pool).await, open(&pool).await];
        for resp in burst {
            assert_eq!(resp.into_body().collect().await.expect("body").to_bytes(), "ok");
        }
        assert_eq!((server.accepted(), pool.shared.idle.lock().conns.len()), (3, 3));
        tokio::time::pause();
        tokio::time::advance(SURPLUS_IDLE_TIMEOUT + REAP_GRANULARITY).await;
        tokio::time::resume();
        wait_closed(&server, 2).await;
        assert_eq!(pool.shared.idle.lock().conns.len(), 1, "the most recently used one is kept");
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(server.accepted(), 3, "and reused");
    }

    #[tokio::test]
    async fn a_connection_made_surplus_while_the_reaper_sleeps_is_closed_on_time() {
        let server = TestServer::start(false).await;
        let pool = server.pool();
        assert_eq!(get(&pool).await, "ok");
        // The reaper's first pass plans its next for the idle timeout.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.shared.idle.lock().reaper_wake.is_some());
        let pair = [open(&pool).await, open(&pool).await];
        for resp in pair {
            assert_eq!(resp.into_body().collect().await.expect("body").to_bytes(), "ok");
        }
        tokio::time::pause();
        tokio::time::advance(SURPLUS_IDLE_TIMEOUT + REAP_GRANULARITY).await;
        tokio::time::resume();
        wait_closed(&server, 1).await;
        assert_eq!(pool.shared.idle.lock().conns.len(), 1);
    }
}
