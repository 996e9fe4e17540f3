//! Serving one engine: an accept loop on its listener, hyper HTTP/1.1
//! with keep-alive on each connection.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::api;
use crate::engine::Engine;

/// Accepts and serves connections for `engine` until aborted; the
/// connections end with it (they live in its `JoinSet`).
pub async fn serve(listener: TcpListener, engine: Arc<Engine>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Answers are small: send each at once.
                    let _ = stream.set_nodelay(true);
                    let engine = engine.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| api::handle(engine.clone(), req));
                        // A client that goes away mid-request is its own business.
                        let _ = http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Out of file descriptors, or a connection reset before it
                // was accepted: wait a little rather than spin on an error
                // that persists.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            // Reaps finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
