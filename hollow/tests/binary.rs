//! The `hollow-engine` binary: it prints its engines, serves them, and
//! its control endpoint reports and drives churn.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use swarm_testkit::http;
use swarm_testkit::process::free_port;

/// The child, killed when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json(addr: &str, method: &str, path: &str) -> Value {
    match http::request(addr, method, path, b"", Duration::from_secs(5)) {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}")),
        other => panic!("{method} {path}: {other:?}"),
    }
}

#[test]
fn serves_engines_and_a_control_endpoint() {
    let control = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("a temp dir");
    let addrs_file = dir.path().join("addrs");
    let child = Command::new(env!("CARGO_BIN_EXE_hollow-engine"))
        .args(["--engines", "3", "--port", "0", "--containers", "4", "--running", "2", "--label", "zone=a"])
        .args(["--control", &control, "--addrs-file"])
        .arg(&addrs_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("hollow-engine starts");
    let mut child = Running(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let lines: Vec<String> =
        BufReader::new(stdout).lines().map_while(Result::ok).take_while(|l| l != "ready").collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let engines: Vec<(String, String)> = lines
        .iter()
        .map(|l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["engine", name, addr] => (name.to_string(), addr.to_string()),
            _ => panic!("unexpected line {l:?}"),
        })
        .collect();
    assert_eq!(engines[2].0, "hollow-0003");
    let listed = std::fs::read_to_string(&addrs_file).expect("the addresses file");
    assert_eq!(listed.lines().collect::<Vec<_>>(), engines.iter().map(|(_, a)| a.as_str()).collect::<Vec<_>>());
    let info = json(&engines[1].1, "GET", "/info");
    assert_eq!((info["Name"].as_str(), info["Containers"].as_u64()), (Some("hollow-0002"), Some(4)));
    assert_eq!(info["Labels"], serde_json::json!(["zone=a"]));

    let stats = json(&control, "GET", "/stats");
    assert_eq!((stats["engines"].as_u64(), stats["containers"].as_u64()), (Some(3), Some(12)));
    assert!(stats["churn"].is_null());
    let churning = json(&control, "POST", "/churn?rate=300&engines=2");
    assert_eq!(churning["churn"]["engines"], 2);
    std::thread::sleep(Duration::from_millis(500));
    let stopped = json(&control, "DELETE", "/churn");
    assert!(stopped["churn"].is_null());
    let events = stopped["events"]["churn"].as_u64().unwrap_or(0);
    assert!(events >= 50, "{stopped}");
    assert_eq!(stopped["events"]["total"].as_u64(), Some(events));
    assert!(matches!(http::request(&control, "POST", "/churn?rate=fast", b"", Duration::from_secs(5)), Ok((400, _))));
}
