//! Engine health through the real Docker CLI on real engines (issue 13):
//! an Unhealthy engine's containers leave `docker ps` and answer the
//! original's message at once; `--engine-failure-retry` is honoured, so a
//! dockerd restart shorter than the retries changes nothing, and in
//! particular reschedules nothing. Needs root and `sudo scripts/install-deps.sh`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use swarm_testkit::manager::Manager;
use swarm_testkit::testbed::Testbed;

/// More than any CLI call takes against a manager that answers at once,
/// far less than trying a dead engine and timing out would.
const AT_ONCE: Duration = Duration::from_secs(5);

/// The value of `└ key` in `node`'s section of `docker info`.
fn node_field(info: &str, node: &str, key: &str) -> Option<String> {
    let section = info.lines().skip_while(|l| !l.trim_start().starts_with(&format!("{node}:"))).skip(1);
    section
        .take_while(|l| l.trim_start().starts_with('└'))
        .find_map(|l| l.trim_start().strip_prefix(&format!("└ {key}: ")).map(str::to_string))
}

fn status_of(m: &Manager, node: &str) -> Option<String> {
    node_field(&m.docker_ok(["info"]), node, "Status")
}

/// `docker ps` lines (`node/name status`), with `-a` when `all`.
fn ps(m: &Manager, all: bool) -> Vec<String> {
    let mut args = vec!["ps", "--format", "{{.Names}} {{.Status}}"];
    if all {
        args.push("-a");
    }
    m.docker_ok(args).lines().map(str::to_string).collect()
}

/// Runs the CLI, expects it to fail quickly, and returns its error output.
fn fails_at_once(m: &Manager, args: &[&str]) -> String {
    let started = Instant::now();
    let out = m.docker(args);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "docker {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(took < AT_ONCE, "docker {args:?} took {took:?}: {stderr}");
    stderr
}

#[test]
fn an_unhealthy_engine_s_containers_are_host_down_and_answer_at_once() {
    let tb = Testbed::start(2, &[], false);
    let m = Manager::start(&tb.addrs().join(","), &[]);
    m.wait_healthy(2);
    let victim = run_sleeper(&m, "victim", &["--restart", "always", "-e", "constraint:node==node-02"]);
    m.docker_ok(["run", "-d", "--name", "survivor", "-e", "constraint:node==node-01", "busybox", "sleep", "600"]);

    tb.stop_engine("node-02");
    m.wait_until(Duration::from_secs(30), "node-02 is Unhealthy", |m| {
        status_of(m, "node-02").as_deref() == Some("Unhealthy")
    });
    let running = ps(&m, false);
    assert!(running.iter().any(|l| l.starts_with("node-01/survivor Up")), "{running:?}");
    assert!(
        !running.iter().any(|l| l.starts_with("node-02/victim")),
        "a dead engine's containers do not run: {running:?}"
    );
    let all = ps(&m, true);
    assert!(all.contains(&"node-02/victim Host Down".to_string()), "{all:?}");

    let message = |named: &str| format!("Container {named} running on unhealthy node node-02");
    for args in [
        &["logs", "victim"][..],
        &["inspect", &victim],
        &["container", "inspect", "victim"],
        &["exec", "victim", "true"],
        &["stop", "victim"],
        &["restart", "victim"],
        &["rm", "-f", "victim"],
    ] {
        let named = if args.contains(&victim.as_str()) { victim.as_str() } else { "victim" };
        let err = fails_at_once(&m, args);
        assert!(err.contains(&message(named)), "docker {args:?}: {err}");
    }
    assert!(ps(&m, true).contains(&"node-02/victim Host Down".to_string()), "rm -f left it listed");

    tb.start_engine("node-02");
    m.wait_healthy(2);
    m.wait_until(Duration::from_secs(30), "victim runs again", |m| {
        ps(m, false).iter().any(|l| l.starts_with("node-02/victim Up"))
    });
    assert!(ps(&m, false).iter().any(|l| l.starts_with("node-01/survivor Up")));
    m.docker_ok(["logs", "victim"]);
    assert_eq!(m.docker_ok(["exec", "victim", "echo", "back"]), "back");
}

#[test]
fn a_restart_shorter_than_the_failure_retries_changes_nothing() {
    let tb = Testbed::start(2, &[], false);
    let m = Manager::builder(&tb.addrs().join(","))
        .default_refresh()
        .args(&[
            "--engine-refresh-min-interval",
            "1s",
            "--engine-refresh-max-interval",
            "1s",
            "--engine-failure-retry",
            "5",
            "--debug",
        ])
        .start();
    m.wait_healthy(2);
    run_sleeper(&m, "steady", &["--restart", "always", "-e", "constraint:node==node-02"]);
    // Soft: were node-02 flagged, the copy would have somewhere to go.
    run_sleeper(
        &m,
        "phoenix",
        &["--restart", "always", "-e", "reschedule:on-node-failure", "-e", "constraint:node==~node-02"],
    );
    let expected = ["node-02/phoenix", "node-02/steady"];
    let listed_running =
        |lines: &[String]| expected.iter().all(|name| lines.iter().any(|l| l.starts_with(&format!("{name} Up"))));
    assert!(listed_running(&ps(&m, false)));

    // Watch `docker ps` and `docker info` for as long as the restart lasts.
    let restarting = AtomicBool::new(true);
    let seen: Mutex<Vec<(Vec<String>, Option<String>)>> = Mutex::new(Vec::new());
    let outage = std::thread::scope(|s| {
        s.spawn(|| {
            while restarting.load(Ordering::SeqCst) {
                let sample = (ps(&m, true), status_of(&m, "node-02"));
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let stopped = Instant::now();
        tb.stop_engine("node-02");
        // Down for four failed refreshes, one fewer than the retries.
        m.wait_until(Duration::from_secs(30), "four failed refreshes of node-02", |m| {
            m.log().lines().filter(|l| l.contains("Engine refresh failed") && l.contains("name=node-02")).count() >= 4
        });
        tb.start_engine("node-02");
        let outage = stopped.elapsed();
        // A successful refresh after the restart: the manager has seen it back.
        m.wait_until(Duration::from_secs(20), "node-02 refreshed after its restart", |m| {
            node_field(&m.docker_ok(["info"]), "node-02", "Error").as_deref() == Some("(none)")
        });
        restarting.store(false, Ordering::SeqCst);
        outage
    });
    let seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(seen.len() > 3, "too few samples: {seen:?}");
    for (lines, status) in &seen {
        assert_eq!(status.as_deref(), Some("Healthy"), "after an outage of {outage:?}: {seen:?}");
        assert!(!lines.iter().any(|l| l.contains("Host Down")), "after an outage of {outage:?}: {lines:?}");
        assert!(listed_running(lines), "after an outage of {outage:?}: {lines:?}");
    }
    m.wait_until(Duration::from_secs(20), "both run again", |m| listed_running(&ps(m, false)));

    let log = m.log();
    assert!(log.contains("Engine refresh failed"), "the outage was noticed: {log}");
    assert!(!log.contains("Flagging engine as unhealthy"), "{log}");
    assert!(!log.contains("Rescheduled container"), "{log}");
    let copies = m.docker_ok(["ps", "-a", "--filter", "name=phoenix", "--format", "{{.Names}}"]);
    assert_eq!(copies, "node-02/phoenix", "one copy, where it was");
    assert!(tb.docker_ok("node-01", ["ps", "-aq"]).is_empty(), "nothing was created on node-01");
}

/// `docker run -d --name NAME FLAGS... busybox sleep 600` through the manager.
fn run_sleeper(m: &Manager, name: &str, flags: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(flags);
    args.extend(["busybox", "sleep", "600"]);
    m.docker_ok(args)
}
