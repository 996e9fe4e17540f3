//! What one client may hold of a manager: a request's headers must arrive
//! within `--client-header-timeout` (and a kept-alive connection may idle
//! that long), at most `--max-client-connections` are served at once, and
//! JSON bodies the manager parses are capped by `--max-json-body`.

mod fast;

use std::time::Duration;

use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use fast::client::{self, get};
use fast::engine::FakeEngine;
use fast::manager::Cluster;

async fn cluster(flags: &[&str]) -> Cluster {
    Cluster::start(vec![FakeEngine::start("fake-01", &[]).await], flags).await
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut seen)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn half_sent_headers_and_idle_connections_are_cut_off_and_others_are_served() {
    let c = cluster(&["--client-header-timeout", "1s"]).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(c.addr).await.expect("connect");
        s.write_all(b"GET /_ping HTTP/1.1\r\nHost: swarm\r\nX-Half: ").await.expect("half a request");
        stalled.push(s);
    }
    // Served meanwhile.
    assert_eq!(get(c.addr, "/_ping").await.status, StatusCode::OK);
    for s in &mut stalled {
        assert!(read_to_close(s, Duration::from_secs(10)).await.is_some(), "a stalled client is cut off");
    }
    // A kept-alive connection idle after its answer is closed too.
    let mut idle = TcpStream::connect(c.addr).await.expect("connect");
    idle.write_all(b"GET /_ping HTTP/1.1\r\nHost: swarm\r\n\r\n").await.expect("a request");
    let answered = read_to_close(&mut idle, Duration::from_secs(10)).await.expect("closed when idle");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

#[tokio::test]
async fn clients_beyond_the_connection_cap_wait_for_a_free_slot() {
    let c = cluster(&["--max-client-connections", "2"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(c.addr).await.expect("connect");
        s.write_all(b"GET /_ping HTTP/1.1\r\nHost: swarm\r\n\r\n").await.expect("a request");
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer).await.expect("answered while a slot is free");
        held.push(s);
    }
    let third = tokio::spawn(get(c.addr, "/_ping"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "no slot is free: the third client waits");
    held.pop();
    let answer = tokio::time::timeout(Duration::from_secs(10), third).await.expect("served once a slot frees");
    assert_eq!(answer.expect("the request").status, StatusCode::OK);
}

#[tokio::test]
async fn oversized_json_bodies_get_a_413_and_small_ones_go_through() {
    let c = cluster(&["--max-json-body", "1024"]).await;
    let big = format!("{{\"Image\":\"busybox\",\"Env\":[\"PAD={}\"]}}", "x".repeat(4096));
    for path in
        ["/v1.41/containers/create", "/v1.41/networks/create", "/v1.41/volumes/create", "/v1.41/services/create"]
    {
        let reply = client::send(c.addr, Method::POST, path, big.clone()).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {}", reply.text());
        assert_eq!(reply.message(), "request body is larger than 1024 bytes", "{path}");
    }
    // Refused on its Content-Length alone, before the body is sent.
    let mut s = TcpStream::connect(c.addr).await.expect("connect");
    s.write_all(b"POST /containers/create HTTP/1.1\r\nHost: swarm\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n")
        .await
        .expect("headers");
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await.expect("answered").expect("read");
    assert_eq!(&head, b"HTTP/1.1 413");
    let small = client::send(c.addr, Method::POST, "/v1.41/volumes/create", r#"{"Name":"v1"}"#).await;
    assert_ne!(small.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", small.text());
}
