//! `docker events` on real engines: an engine's restart loses and repeats no
//! event, and a client that stops reading is disconnected while the
//! manager's memory stays flat. Needs root and `sudo scripts/install-deps.sh`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use swarm_testkit::bench::vm_rss_kib;
use swarm_testkit::http::Conn;
use swarm_testkit::manager::Manager;
use swarm_testkit::process::Streaming;
use swarm_testkit::testbed::Testbed;

/// Now as Docker's `seconds.nanoseconds` (the engines share this host's clock).
fn now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// What tells one event from another: node, `timeNano`, type, action, actor.
type Key = (String, i64, String, String, String);

fn key(event: &Value, node: &str) -> Key {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        node.to_string(),
        event["timeNano"].as_i64().unwrap_or_default(),
        text(&event["Type"]),
        text(&event["Action"]),
        text(&event["Actor"]["ID"]),
    )
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not an event ({e}): {line}"))
}

#[test]
fn an_engine_restart_loses_and_repeats_no_event() {
    let started = Instant::now();
    let tb = Testbed::start(2, &[], false);
    let m = Manager::start(&tb.addrs().join(","), &[]);
    m.wait_healthy(2);
    m.docker_ok([
        "run",
        "-d",
        "--name",
        "keeper",
        "--restart",
        "always",
        "-e",
        "constraint:node==node-02",
        "busybox",
        "sleep",
        "600",
    ]);
    let client = m.docker_stream(&["events", "--format", "{{json .}}"]);
    // Give the CLI time to connect, then see that it is.
    std::thread::sleep(Duration::from_secs(1));
    tb.docker_ok("node-02", ["volume", "create", "mark-before"]);
    client.lines_until("mark-before", Duration::from_secs(20));

    let restarted = now();
    tb.stop_engine("node-02");
    tb.start_engine("node-02");
    // dockerd restarted `keeper` before it answered; these come while the
    // manager may still be reopening its stream.
    tb.docker_ok("node-02", ["volume", "create", "made-after"]);
    tb.docker_ok("node-02", ["network", "create", "net-after"]);
    tb.docker_ok("node-02", ["volume", "create", "mark-after"]);
    let mut lines = client.lines_until("mark-after", Duration::from_secs(60));
    // A repeat would come before this later mark.
    std::thread::sleep(Duration::from_secs(2));
    tb.docker_ok("node-02", ["volume", "create", "mark-end"]);
    lines.extend(client.lines_until("mark-end", Duration::from_secs(30)));

    // What the engine itself says it emitted since it came back (its
    // history starts with the restart).
    let emitted: Vec<Value> = tb
        .docker_ok("node-02", ["events", "--since", &restarted, "--until", &now(), "--format", "{{json .}}"])
        .lines()
        .map(parse)
        .collect();
    assert!(
        emitted.iter().any(|e| e["Action"] == "start" && e["Actor"]["Attributes"]["name"] == "keeper"),
        "dockerd restarted keeper: {emitted:?}"
    );
    let mut received: HashMap<Key, usize> = HashMap::new();
    for line in &lines {
        let event = parse(line);
        let node = event["Actor"]["Attributes"]["node.name"].as_str().unwrap_or_default().to_string();
        *received.entry(key(&event, &node)).or_default() += 1;
    }
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events delivered more than once: {twice:?}");
    let missing: Vec<&Value> = emitted.iter().filter(|e| !received.contains_key(&key(e, "node-02"))).collect();
    assert!(missing.is_empty(), "events of node-02 never delivered: {missing:?}\nreceived: {lines:#?}");
    eprintln!("{} events of node-02 after its restart, each delivered once; {:?}", emitted.len(), started.elapsed());
}

/// A client of the manager's events that sends its request and never reads,
/// with a small receive buffer so that the kernel holds little for it.
fn stalled_client(addr: &str) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("a runtime");
    let addr: std::net::SocketAddr = addr.parse().expect("the manager's address");
    let stream = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_recv_buffer_size(4096)?;
            socket.connect(addr).await?.into_std()
        })
        .expect("connect to the manager");
    stream.set_nonblocking(false).expect("blocking");
    (&stream).write_all(b"GET /events HTTP/1.1\r\nHost: swarm\r\n\r\n").expect("send the request");
    stream
}

/// `exec_create` events (which change nothing the manager caches), as fast
/// as the engines make them: `per_engine` on each of `targets` (engine
/// address, container ID) at once.
fn flood(targets: &[(String, String)], per_engine: usize) {
    std::thread::scope(|s| {
        for (addr, id) in targets {
            s.spawn(move || {
                let mut conn = Conn::connect(addr);
                let path = format!("/containers/{id}/exec");
                for _ in 0..per_engine {
                    let status = conn.request("POST", &path, Some(br#"{"Cmd": ["true"]}"#)).expect("exec create");
                    assert_eq!(status, 201, "{}", String::from_utf8_lossy(conn.body()));
                }
            });
        }
    });
}

/// Every line `watcher` receives until the events each engine emitted so far
/// have all reached it: engines' streams are followed apart, so one mark
/// volume per engine, named `{prefix}-{engine}`.
fn settle(tb: &Testbed, watcher: &Streaming, prefix: &str) -> Vec<String> {
    for e in &tb.engines {
        tb.docker_ok(&e.name, ["volume", "create", &format!("{prefix}-{}", e.name)]);
    }
    tb.engines.iter().flat_map(|_| watcher.lines_until(prefix, Duration::from_secs(60))).collect()
}

/// [`flood`] in batches small enough for a `docker events` CLI on a busy
/// machine to keep within the manager's per-client queue, each settled on
/// `watcher` before the next; returns the lines it received.
fn paced_flood(
    tb: &Testbed,
    targets: &[(String, String)],
    watcher: &Streaming,
    per_engine: usize,
    mark: &str,
) -> Vec<String> {
    const BATCH: usize = 250;
    let mut lines = Vec::new();
    let mut sent = 0;
    while sent < per_engine {
        let batch = BATCH.min(per_engine - sent);
        flood(targets, batch);
        lines.extend(settle(tb, watcher, &format!("{mark}-{sent}")));
        sent += batch;
    }
    lines
}

#[test]
fn a_reader_that_stops_reading_is_disconnected_and_memory_stays_flat() {
    let started = Instant::now();
    let tb = Testbed::shared();
    let m = Manager::start(&tb.addrs().join(","), &[]);
    m.wait_healthy(tb.engines.len());
    let tag = std::process::id();
    let targets: Vec<(String, String)> = tb
        .engines
        .iter()
        .map(|e| {
            let name = format!("events-flood-{}-{tag}", e.name);
            let constraint = format!("constraint:node=={}", e.name);
            // Engines copy a container's labels into its events: about 2 kB each.
            let padding = format!("events.padding={}", "x".repeat(1500));
            let id = m.docker_ok([
                "run",
                "-d",
                "--name",
                &name,
                "-e",
                &constraint,
                "--label",
                &padding,
                "busybox",
                "sleep",
                "600",
            ]);
            (e.addr.clone(), id)
        })
        .collect();
    let watcher = m.docker_stream(&["events", "--format", "{{.Action}} {{.Actor.ID}}"]);
    std::thread::sleep(Duration::from_secs(1));

    // Floods like the one below bring the manager to its working size: the
    // bus full (it keeps the last 4096 events for its subscribers) and the
    // allocator at its peak, which takes a few rounds.
    let mut before = 0;
    for round in 0..3 {
        paced_flood(tb, &targets, &watcher, 1000, &format!("events-warm{round}-{tag}"));
        before = before.max(vm_rss_kib(m.pid()));
    }

    let stalled = stalled_client(&m.addr);
    let peer = stalled.local_addr().expect("the client's address").to_string();
    // Several times what the queue, hyper and the kernel hold for the stalled client.
    let per_engine = 2500;
    let mut lines = paced_flood(tb, &targets, &watcher, per_engine, &format!("events-flood-{tag}"));
    m.wait_until(Duration::from_secs(30), "the stalled client is disconnected", |m| {
        m.log().lines().any(|l| l.contains("Events client disconnected") && l.contains(&peer))
    });
    // Its connection ends: what the kernel still held, then the end.
    stalled.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let mut received = Vec::new();
    match (&stalled).read_to_end(&mut received) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the stalled client is still connected after {} bytes: {e}", received.len()),
    }

    // The reader that keeps up got every event, and still does.
    lines.extend(settle(tb, &watcher, &format!("events-done-{tag}")));
    let execs = lines.iter().filter(|l| l.starts_with("exec_create")).count();
    assert_eq!(execs, per_engine * targets.len(), "the reader that keeps up lost events");
    let after = vm_rss_kib(m.pid());
    eprintln!(
        "RSS at most {before} kB before, {after} kB after {} events and a stalled reader ({} bytes reached it); {:?}",
        per_engine * targets.len(),
        received.len(),
        started.elapsed()
    );
    // The stalled client's queue (a few megabytes at most) is gone with it;
    // the margin is the allocator's noise between such floods.
    assert!(after <= before + 12 * 1024, "RSS grew from {before} kB to {after} kB");

    for (_, id) in &targets {
        m.docker_ok(["rm", "-f", id]);
    }
    // The mark volumes of this test: `events-<what>-<tag>-...`.
    for e in &tb.engines {
        let marks = tb.docker_ok(&e.name, ["volume", "ls", "-q", "--filter", "name=events-"]);
        for mark in marks.lines().filter(|v| v.contains(&format!("-{tag}-"))) {
            let _ = tb.docker(&e.name, ["volume", "rm", mark]);
        }
    }
}
