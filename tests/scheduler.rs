//! Placement through the real Docker CLI: strategies, filters and the
//! constraint/affinity language on 3 real engines with different labels.
//! Needs root and `sudo scripts/install-deps.sh`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use swarm_testkit::manager::Manager;
use swarm_testkit::testbed::Testbed;

/// These tests count containers per node, so they own their engines and run
/// one at a time.
fn testbed() -> (&'static Testbed, MutexGuard<'static, ()>) {
    static TESTBED: OnceLock<Testbed> = OnceLock::new();
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tb = TESTBED.get_or_init(|| {
        Testbed::start(3, &[("node-01", "storage=ssd"), ("node-02", "storage=disk"), ("node-03", "storage=ssd")], false)
    });
    clear(tb);
    (tb, guard)
}

/// Removes every container from every engine.
fn clear(tb: &Testbed) {
    for engine in &tb.engines {
        let ids = tb.docker_ok(&engine.name, ["ps", "-aq"]);
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.lines());
            tb.docker_ok(&engine.name, args);
        }
    }
}

fn manager(tb: &Testbed, extra: &[&str]) -> Manager {
    let m = Manager::start(&tb.addrs().join(","), extra);
    m.wait_healthy(tb.engines.len());
    m
}

fn node_of(m: &Manager, container: &str) -> String {
    m.docker_ok(["inspect", "-f", "{{.Node.Name}}", container])
}

fn run(m: &Manager, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend(extra);
    args.extend(["busybox", "sleep", "600"]);
    m.docker_ok(&args);
    node_of(m, name)
}

fn per_node(m: &Manager) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in m.docker_ok(["ps", "-a", "--format", "{{.Names}}"]).lines() {
        if let Some((node, _)) = name.split_once('/') {
            *counts.entry(node.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn constraints_on_labels_and_nodes() {
    let (tb, _serial) = testbed();
    let m = manager(tb, &[]);
    for i in 0..3 {
        let node = run(&m, &format!("ssd-{i}"), &["-e", "constraint:storage==ssd"]);
        assert!(node == "node-01" || node == "node-03", "storage==ssd landed on {node}");
    }
    assert_eq!(run(&m, "disk", &["-e", "constraint:storage==disk"]), "node-02");
    assert_ne!(run(&m, "not-01", &["-e", "constraint:node!=node-01"]), "node-01");
    assert_eq!(run(&m, "by-label", &["--label", "com.docker.swarm.constraints=[\"node==node-03\"]"]), "node-03");
    assert_eq!(run(&m, "glob", &["-e", "constraint:node==*-02"]), "node-02");
    assert_eq!(run(&m, "regex", &["-e", "constraint:node==/node-0[3]/"]), "node-03");
    // The expressions are moved from the environment into the labels.
    let env = m.docker_ok(["inspect", "-f", "{{.Config.Env}}", "disk"]);
    assert!(!env.contains("constraint:"), "{env}");
    let labels = m.docker_ok(["inspect", "-f", "{{index .Config.Labels \"com.docker.swarm.constraints\"}}", "disk"]);
    assert_eq!(labels, "[\"storage==disk\"]");

    let err = m.docker_err(["run", "-d", "-e", "constraint:storage==tape", "busybox", "true"]);
    assert!(err.contains("Unable to find a node that satisfies the following conditions"), "{err}");
    assert!(err.contains("storage==tape"), "the failed condition is named: {err}");
    let err = m.docker_err(["run", "-d", "-e", "constraint:==x", "busybox", "true"]);
    assert!(err.contains("==x"), "a malformed expression is quoted: {err}");
}

#[test]
fn affinities_and_soft_fallback() {
    let (tb, _serial) = testbed();
    let m = manager(tb, &[]);
    let web = run(&m, "web", &[]);
    assert_eq!(run(&m, "near-web", &["-e", "affinity:container==web"]), web);
    assert_ne!(run(&m, "away-from-web", &["-e", "affinity:container!=web"]), web);
    // An image only node-02 has.
    tb.docker_ok("node-02", ["tag", "busybox", "only-on-02:v1"]);
    m.wait_until(std::time::Duration::from_secs(10), "the tag is known", |m| {
        m.docker_ok(["images", "--format", "{{.Repository}}"]).contains("only-on-02")
    });
    assert_eq!(run(&m, "img", &["-e", "affinity:image==only-on-02:v1"]), "node-02");
    // A label affinity: next to containers labelled tier=db.
    let db = run(&m, "db", &["--label", "tier=db", "-e", "constraint:node==node-03"]);
    assert_eq!(run(&m, "near-db", &["-e", "affinity:tier==db"]), db);
    // Soft: no such container anywhere, so the affinity is dropped.
    run(&m, "soft", &["-e", "affinity:container==~no-such-container"]);
    let err = m.docker_err(["run", "-d", "-e", "affinity:container==no-such-container", "busybox", "true"]);
    assert!(err.contains("container==no-such-container"), "{err}");
    // Whitelist.
    assert_eq!(run(&m, "white", &["-e", "whitelist:node==node-03|node-9"]), "node-03");
    tb.docker_ok("node-02", ["rmi", "only-on-02:v1"]);
}

#[test]
fn published_ports_spread_over_hosts_then_run_out() {
    let (tb, _serial) = testbed();
    let m = manager(tb, &[]);
    let mut nodes = Vec::new();
    for i in 0..3 {
        m.docker_ok([
            "run",
            "-d",
            "--name",
            &format!("port-{i}"),
            "-p",
            "8080:80",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
        ]);
        nodes.push(node_of(&m, &format!("port-{i}")));
    }
    nodes.sort();
    assert_eq!(nodes, ["node-01", "node-02", "node-03"]);
    let err = m.docker_err(["run", "-d", "-p", "8080:80", "busybox", "true"]);
    assert!(err.contains("port 8080 (Bridge mode)"), "{err}");
    // Another port still fits.
    m.docker_ok(["run", "-d", "--name", "port-9090", "-p", "9090:80", "busybox", "sleep", "60"]);
}

#[test]
fn dependencies_pin_to_the_same_node() {
    let (tb, _serial) = testbed();
    let m = manager(tb, &[]);
    let data = run(&m, "data", &["-v", "/data"]);
    assert_eq!(run(&m, "uses-data", &["--volumes-from", "data"]), data);
    assert_eq!(run(&m, "linked", &["--link", "data:db"]), data);
    assert_eq!(run(&m, "shares-net", &["--net", "container:data"]), data);
}

#[test]
fn spread_and_binpack() {
    let (tb, _serial) = testbed();
    let m = manager(tb, &[]);
    for i in 0..6 {
        run(&m, &format!("spread-{i}"), &[]);
    }
    assert_eq!(per_node(&m).values().copied().collect::<Vec<_>>(), [2, 2, 2], "{:?}", per_node(&m));
    drop(m);
    clear(tb);
    let m = manager(tb, &["--strategy", "binpack"]);
    assert!(m.docker_ok(["info"]).contains("Strategy: binpack"));
    for i in 0..4 {
        run(&m, &format!("binpack-{i}"), &["-m", "64m"]);
    }
    let counts = per_node(&m);
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [4], "binpack packs onto one node: {counts:?}");
}

#[test]
fn resources_are_reserved_and_run_out() {
    let (tb, _serial) = testbed();
    let m = manager(tb, &[]);
    let info = m.docker_ok(["info"]);
    let total: i64 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("└ Reserved CPUs: 0 / "))
        .and_then(|t| t.trim().parse().ok())
        .expect("reserved CPUs line");
    // Each container takes every CPU of its node: one per node, then nothing fits.
    for i in 0..3 {
        run(&m, &format!("cpu-{i}"), &["-c", &total.to_string()]);
    }
    let info = m.docker_ok(["info"]);
    assert_eq!(info.matches(&format!("└ Reserved CPUs: {total} / {total}")).count(), 3, "{info}");
    let err = m.docker_err(["run", "-d", "-c", "1", "busybox", "true"]);
    assert!(err.contains("no resources available to schedule container"), "{err}");
    let err = m.docker_err(["run", "-d", "-m", "100000g", "busybox", "true"]);
    assert!(err.contains("no resources available to schedule container"), "{err}");
}

#[test]
fn container_slots_cap_a_node() {
    let tb = Testbed::start(1, &[("node-01", "containerslots=2")], false);
    let m = manager(&tb, &[]);
    run(&m, "slot-1", &[]);
    run(&m, "slot-2", &[]);
    let err = m.docker_err(["run", "-d", "busybox", "true"]);
    assert!(err.contains("available container slots"), "{err}");
}

#[test]
fn containers_are_rescheduled_when_their_node_dies() {
    let tb = Testbed::start(2, &[], false);
    let m = manager(&tb, &[]);
    // Soft: prefer node-02, but anywhere will do once node-02 is gone.
    m.docker_ok([
        "run",
        "-d",
        "--name",
        "phoenix",
        "-e",
        "reschedule:on-node-failure",
        "-e",
        "constraint:node==~node-02",
        "busybox",
        "sleep",
        "600",
    ]);
    m.docker_ok(["run", "-d", "--name", "mortal", "-e", "constraint:node==node-02", "busybox", "sleep", "600"]);
    assert_eq!(node_of(&m, "phoenix"), "node-02");
    let old_id = m.docker_ok(["inspect", "-f", "{{.Id}}", "phoenix"]);

    tb.stop_engine("node-02");
    m.wait_until(std::time::Duration::from_secs(30), "phoenix runs on node-01", |m| {
        let out = m.docker(["inspect", "-f", "{{.Node.Name}} {{.State.Running}}", "phoenix"]);
        String::from_utf8_lossy(&out.stdout).trim() == "node-01 true"
    });
    let new_id = m.docker_ok(["inspect", "-f", "{{.Id}}", "phoenix"]);
    assert_ne!(new_id, old_id);
    // The line is written once the new copy has started, which the client may see first.
    let rescheduled = format!("Rescheduled container {old_id} from node-02 to node-01 as {new_id}");
    m.wait_until(std::time::Duration::from_secs(10), "the rescheduling is logged", |m| m.log().contains(&rescheduled));
    // Without the policy a container stays with its node.
    let ps = m.docker_ok(["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("node-02/mortal Host Down"), "{ps}");

    // When node-02 returns, the stale copy is removed from it.
    tb.start_engine("node-02");
    m.wait_healthy(2);
    m.wait_until(std::time::Duration::from_secs(20), "the stale copy is gone from node-02", |_| {
        tb.docker_ok("node-02", ["ps", "-a", "--filter", "name=phoenix", "-q"]).is_empty()
    });
    assert_eq!(m.docker_ok(["ps", "-a", "--filter", "name=phoenix", "--format", "{{.Names}}"]), "node-01/phoenix");
}
