//! `swarm manage` itself: flags, discovery backends without a store, and an
//! engine dying under a running manager. Needs root and `sudo scripts/install-deps.sh`.

use std::process::Command;
use std::time::Duration;

use swarm_testkit::manager::Manager;
use swarm_testkit::testbed::Testbed;

fn swarm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_swarm")).args(args).output().expect("run swarm");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn version_and_invalid_flags() {
    let (ok, out) = swarm(&["--version"]);
    assert!(ok && out.starts_with("swarm version "), "{out}");
    let cases: [(&[&str], &str); 9] = [
        (&["manage"], "discovery required"),
        (&["manage", "--heartbeat", "10", "nodes://127.0.0.1:1"], "invalid duration"),
        (&["manage", "--heartbeat", "500ms", "nodes://127.0.0.1:1"], "at least one second"),
        (
            &[
                "manage",
                "--engine-refresh-min-interval",
                "10s",
                "--engine-refresh-max-interval",
                "5s",
                "nodes://127.0.0.1:1",
            ],
            "max refresh interval cannot be less than min refresh interval",
        ),
        (&["manage", "--strategy", "fastest", "nodes://127.0.0.1:1"], "unsupported strategy"),
        (&["manage", "-f", "nope", "nodes://127.0.0.1:1"], "unsupported filter"),
        (&["manage", "--cluster-opt", "swarm.overcommit=lots", "nodes://127.0.0.1:1"], "overcommit"),
        (&["manage", "-H", "http://x:1", "nodes://127.0.0.1:1"], "invalid listen address"),
        (&["manage", "foo://x"], "unsupported discovery scheme"),
    ];
    for (args, expected) in cases {
        let (ok, out) = swarm(args);
        assert!(!ok, "swarm {args:?} should fail");
        let first = out.lines().next().unwrap_or_default();
        assert!(first.contains(expected), "swarm {args:?}: expected {expected:?} on the first line of {out:?}");
    }
    let (ok, out) = swarm(&["manage", "token://abcdef"]);
    assert!(!ok && out.contains("consul://"), "token:// names the alternatives: {out}");
    let (ok, out) = swarm(&["manage", "nodes://10.0.0.[5:2]:2375"]);
    assert!(!ok && out.contains("ends before it starts"), "{out}");
}

#[test]
fn range_and_nodes_discovery() {
    let tb = Testbed::shared();
    let first = &tb.engines[0].ip;
    let prefix = first.rsplit_once('.').map(|(p, _)| p).expect("ipv4");
    // 10.250.K.[11:13]:2375 is how the testbed numbers its engines.
    let manager = Manager::start(&format!("{prefix}.[11:13]:2375"), &[]);
    manager.wait_healthy(3);
    let manager = Manager::start(&format!("nodes://{}", tb.addrs().join(",")), &[]);
    manager.wait_healthy(3);
}

#[test]
fn file_discovery_is_reread_every_heartbeat() {
    let tb = Testbed::shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cluster");
    std::fs::write(&file, format!("# engines\n{}\n", tb.engines[0].addr)).expect("write");
    let manager = Manager::start(&format!("file://{}", file.display()), &[]);
    manager.wait_healthy(1);
    std::fs::write(&file, format!("{}\n{} # second\n", tb.engines[0].addr, tb.engines[1].addr)).expect("write");
    manager.wait_healthy(2);
    std::fs::write(&file, format!("{}\n", tb.engines[1].addr)).expect("write");
    manager.wait_until(Duration::from_secs(10), "node-01 is dropped", |m| {
        let info = m.docker_ok(["info"]);
        info.contains(" Nodes: 1") && !info.contains("node-01:")
    });
    assert!(manager.log().contains("Removed Engine node-01"), "{}", manager.log());
    // A file that disappears keeps the last known engines.
    std::fs::remove_file(&file).expect("remove");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(manager.healthy_count(), 1);
    assert_eq!(manager.log().matches("Discovery error").count(), 1, "logged once per state change");
}

#[test]
fn a_dead_engine_is_flagged_and_comes_back() {
    let tb = Testbed::start(2, &[], false);
    let manager = Manager::start(&tb.addrs().join(","), &[]);
    manager.wait_healthy(2);
    manager.docker_ok(["run", "-d", "--name", "victim", "-e", "constraint:node==node-02", "busybox", "sleep", "300"]);
    manager.docker_ok(["run", "-d", "--name", "survivor", "-e", "constraint:node==node-01", "busybox", "sleep", "300"]);

    tb.stop_engine("node-02");
    manager.wait_until(Duration::from_secs(20), "node-02 is Unhealthy", |m| {
        m.docker_ok(["info"]).contains("└ Status: Unhealthy")
    });
    let ps = manager.docker_ok(["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("node-02/victim Host Down"), "{ps}");
    assert!(ps.contains("node-01/survivor Up"), "{ps}");
    // The manager keeps serving, and places new containers on the live engine.
    assert_eq!(manager.docker_ok(["run", "--rm", "busybox", "echo", "still serving"]), "still serving");
    let err = manager.docker_err(["run", "--rm", "-e", "constraint:node==node-02", "busybox", "true"]);
    assert!(err.contains("Unable to find a node"), "{err}");
    let log = manager.log();
    assert!(log.contains("Flagging engine as unhealthy. Connect failed 2 times"), "{log}");

    tb.start_engine("node-02");
    manager.wait_healthy(2);
    let log = manager.log();
    assert!(log.contains("Engine came back to life after"), "{log}");
    assert!(log.contains("Hooray!"), "{log}");
    let events = manager.docker_ok([
        "events",
        "--since",
        "0",
        "--until",
        &format!(
            "{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 1
        ),
        "--filter",
        "type=swarm",
        "--format",
        "{{.Action}} {{index .Actor.Attributes \"node.name\"}}",
    ]);
    for expected in ["engine_connect node-02", "engine_disconnect node-02", "engine_reconnect node-02"] {
        assert!(events.contains(expected), "{expected} missing from swarm events: {events}");
    }
}
