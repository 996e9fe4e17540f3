//! Refreshes `hollow/fixtures/` from a real dockerd: the JSON the hollow
//! engine renders its answers from. A one-off tool, not a test:
//!
//! ```text
//! sudo cargo test -p swarm-hollow --test capture_fixtures -- --ignored --nocapture
//! ```
//!
//! It starts a private one-engine testbed (`scripts/testbed.sh`, root),
//! makes three containers (running with a label, an env variable, a
//! published port, a named volume and a second network; created; exited),
//! records the answers to `/version`, `/info`, `/containers/json?all=1`,
//! each container's inspect, `/images/json`, `/networks` and `/volumes`,
//! then runs every lifecycle the hollow engine emulates and records the
//! events they produced. The answers are stored byte for byte as the engine
//! sent them, with only the testbed's own paths and addresses replaced by
//! those of a stock engine (see [`neutral`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use swarm_testkit::http;
use swarm_testkit::testbed::Testbed;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

/// `GET path` on the engine; panics unless it answers 200.
fn get(addr: &str, path: &str) -> String {
    match http::get(addr, &format!("/v1.41{path}"), Duration::from_secs(10)) {
        Ok((200, body)) => body,
        other => panic!("GET {path}: {other:?}"),
    }
}

/// The testbed's own paths and addresses become those of a stock engine
/// (`/var/lib/docker`, `/var/run/docker`), and its IPs documentation ones
/// (192.0.2.0/24), so the fixtures carry nothing of this machine.
fn neutral(text: &str, tb: &Testbed) -> String {
    let engine = &tb.engines[0];
    let root = engine.socket.parent().map(Path::to_path_buf).unwrap_or_default();
    text.replace(&format!("{}/data", root.display()), "/var/lib/docker")
        .replace(&format!("{}/exec", root.display()), "/var/run/docker")
        .replace(&engine.ip, "192.0.2.11")
        .replace(&tb.bridge_ip, "192.0.2.1")
}

fn save(name: &str, text: &str, tb: &Testbed) {
    let path = fixtures_dir().join(name);
    let mut text = neutral(text.trim_end(), tb);
    text.push('\n');
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("wrote {}", path.display());
}

#[test]
#[ignore = "one-off: needs root and dockerd; rewrites hollow/fixtures"]
fn capture_fixtures() {
    let tb = Testbed::start(1, &[("node-01", "storage=ssd")], false);
    let addr = tb.engines[0].addr.clone();
    let docker = |args: &[&str]| tb.docker_ok("node-01", args);
    let since = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);

    docker(&["network", "create", "hollow-net"]);
    docker(&["volume", "create", "hollow-vol"]);
    let running = docker(&[
        "run",
        "-d",
        "--name",
        "fixture-running",
        "-l",
        "app=web",
        "-e",
        "MODE=test",
        "-p",
        "8080:80",
        "-v",
        "hollow-vol:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    docker(&["network", "connect", "hollow-net", "fixture-running"]);
    docker(&["pause", "fixture-running"]);
    docker(&["unpause", "fixture-running"]);
    let created = docker(&["create", "--name", "fixture-created", "busybox", "true"]);
    let exited = docker(&["create", "--name", "fixture-exited", "busybox", "true"]);
    docker(&["start", "fixture-exited"]);
    docker(&["wait", "fixture-exited"]);

    save("version.json", &get(&addr, "/version"), &tb);
    save("info.json", &get(&addr, "/info"), &tb);
    save("containers.json", &get(&addr, "/containers/json?all=1"), &tb);
    save("inspect-running.json", &get(&addr, &format!("/containers/{running}/json")), &tb);
    save("inspect-created.json", &get(&addr, &format!("/containers/{created}/json")), &tb);
    save("inspect-exited.json", &get(&addr, &format!("/containers/{exited}/json")), &tb);
    save("images.json", &get(&addr, "/images/json"), &tb);
    save("networks.json", &get(&addr, "/networks"), &tb);
    save("volumes.json", &get(&addr, "/volumes"), &tb);

    // Every lifecycle step the hollow engine emulates, for its events.
    docker(&["restart", "-t", "0", "fixture-running"]);
    docker(&["stop", "-t", "0", "fixture-running"]);
    docker(&["start", "fixture-running"]);
    docker(&["kill", "fixture-running"]);
    docker(&["rm", "fixture-running", "fixture-created", "fixture-exited"]);
    docker(&["network", "rm", "hollow-net"]);
    docker(&["volume", "rm", "hollow-vol"]);
    let until = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() + 1).unwrap_or(0);
    save("events.jsonl", &get(&addr, &format!("/events?since={since}&until={until}")), &tb);
}
