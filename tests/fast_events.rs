//! `docker events` through one manager in front of fake engines: a broken
//! engine stream resumes without losing or repeating events, and a client
//! that stops reading is cut off without hurting the others. No root, no
//! dockerd: runs in seconds.

mod fast;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use fast::client;
use fast::engine::FakeEngine;
use fast::manager::{self, Cluster};

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn event(time_nano: i64, action: &str, id: &str) -> Value {
    json!({
        "Type": "container", "Action": action, "status": action, "id": id,
        "Actor": {"ID": id, "Attributes": {"name": id}},
        "scope": "local", "time": time_nano / 1_000_000_000, "timeNano": time_nano,
    })
}

/// Reads JSON lines off `body` until the one with `Action` and `Actor.ID`
/// `last`, telling `progress` how many it read; returns every line's
/// `Action` and `Actor.ID`.
async fn read_until(body: &mut Incoming, last: (&str, &str), progress: &watch::Sender<usize>) -> Vec<(String, String)> {
    let mut buffer = Vec::new();
    let mut seen = Vec::new();
    let read = async {
        loop {
            while let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=newline).collect();
                let value: Value = serde_json::from_slice(&line).expect("a JSON line");
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                seen.push((text(&value["Action"]), text(&value["Actor"]["ID"])));
                progress.send_replace(seen.len());
                if seen.last().is_some_and(|(action, id)| (action.as_str(), id.as_str()) == last) {
                    return;
                }
            }
            let frame = body.frame().await.expect("the stream ended").expect("stream error");
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("no {last:?} in time: {seen:?}"));
    seen
}

#[tokio::test]
async fn a_broken_engine_stream_resumes_where_it_stood() {
    let c = Cluster::start(vec![FakeEngine::start("fake-01", &[]).await], &[]).await;
    let engine = c.engine("fake-01");
    let mut stream =
        client::open(c.addr, Method::GET, "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D", "".into()).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let progress = watch::channel(0).0;
    let t = now_nanos();
    engine.emit_event(event(t, "create", "a"));
    // Two events in one nanosecond: only the exact identity tells them apart.
    engine.emit_event(event(t + 1_000, "start", "b"));
    engine.emit_event(event(t + 1_000, "attach", "b"));
    assert_eq!(read_until(stream.body_mut(), ("attach", "b"), &progress).await.len(), 3);

    // The stream breaks; the engine goes on; the manager reopens from
    // `since`, and the engine replays from there, what was delivered too.
    engine.end_event_streams();
    engine.emit_event(event(t + 2_000, "create", "c"));
    manager::wait_until("the manager reopened the stream", || async {
        engine.requests_to(Method::GET, "/events").iter().any(|r| r.uri.contains("since="))
    })
    .await;
    engine.emit_event(event(t + 3_000, "create", "d"));
    let after = read_until(stream.body_mut(), ("create", "d"), &progress).await;
    assert_eq!(after, [("create".to_string(), "c".to_string()), ("create".to_string(), "d".to_string())]);
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_off_and_the_others_are_not() {
    let c = Cluster::start(vec![FakeEngine::start("fake-01", &[]).await], &[]).await;
    let engine = c.engine("fake-01");
    // A client that asks for events and never reads, with a small receive
    // buffer so that the kernel holds little for it.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stalled = socket.connect(c.addr).await.expect("connect to the manager");
    stalled.write_all(b"GET /events HTTP/1.1\r\nHost: swarm\r\n\r\n").await.expect("send the request");
    let mut reader = client::open(c.addr, Method::GET, "/events", "".into()).await;
    assert_eq!(reader.status(), StatusCode::OK);
    let (progress, mut read) = watch::channel(0);
    let reading = tokio::spawn(async move { read_until(reader.body_mut(), ("die", "last"), &progress).await });

    // Far more than the queue and every buffer on the way hold, in batches
    // the reader that keeps up has taken before the next: it is never far behind.
    let t = now_nanos();
    const FLOOD: usize = 30_000;
    const BATCH: usize = 200;
    for batch in 0..FLOOD / BATCH {
        for i in batch * BATCH..(batch + 1) * BATCH {
            engine.emit_event(event(t + i as i64, "kill", &format!("flood-{i}")));
        }
        let taken = tokio::time::timeout(Duration::from_secs(20), read.wait_for(|n| *n >= (batch + 1) * BATCH));
        assert!(matches!(taken.await, Ok(Ok(_))), "the reader that keeps up stopped at {}", *read.borrow());
    }
    engine.emit_event(event(t + FLOOD as i64, "die", "last"));
    let seen = reading.await.expect("the reader");
    assert_eq!(seen.len(), FLOOD + 1, "the reader that keeps up gets every event");

    // The stalled client was disconnected: what reached it (what the kernel
    // held for it) ends before the flood did.
    let mut received = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut received)).await;
    assert!(drained.is_ok(), "the stalled client is still connected after {} bytes", received.len());
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains(r#""ID":"last""#), "the stalled client got the whole flood");
}
