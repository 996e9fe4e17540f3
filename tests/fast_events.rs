//! `docker events` through one manager in front of fake engines: a broken
//! engine stream resumes without losing or repeating events. No root, no
//! dockerd: runs in seconds.

mod fast;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

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
/// `last`; returns every line's `Action` and `Actor.ID`.
async fn read_until(body: &mut Incoming, last: (&str, &str)) -> Vec<(String, String)> {
    let mut buffer = Vec::new();
    let mut seen = Vec::new();
    let read = async {
        loop {
            while let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=newline).collect();
                let value: Value = serde_json::from_slice(&line).expect("a JSON line");
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                seen.push((text(&value["Action"]), text(&value["Actor"]["ID"])));
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
    let t = now_nanos();
    engine.emit_event(event(t, "create", "a"));
    // Two events in one nanosecond: only the exact identity tells them apart.
    engine.emit_event(event(t + 1_000, "start", "b"));
    engine.emit_event(event(t + 1_000, "attach", "b"));
    assert_eq!(read_until(stream.body_mut(), ("attach", "b")).await.len(), 3);

    // The stream breaks; the engine goes on; the manager reopens from
    // `since`, and the engine replays from there, what was delivered too.
    engine.end_event_streams();
    engine.emit_event(event(t + 2_000, "create", "c"));
    manager::wait_until("the manager reopened the stream", || async {
        engine.requests_to(Method::GET, "/events").iter().any(|r| r.uri.contains("since="))
    })
    .await;
    engine.emit_event(event(t + 3_000, "create", "d"));
    let after = read_until(stream.body_mut(), ("create", "d")).await;
    assert_eq!(after, [("create".to_string(), "c".to_string()), ("create".to_string(), "d".to_string())]);
}
