//! The real Docker CLI (v28) running `docker service` against a manager in
//! front of 3 real engines: the CLI accepts every answer, and the
//! reconciler makes the tasks run, spread, scale, move and go.
//! Needs root and `sudo scripts/install-deps.sh`.

use std::time::Duration;

use swarm_testkit::manager::{Manager, SwarmProcess};
use swarm_testkit::store::{EtcdServer, StoreFixture};
use swarm_testkit::testbed::Testbed;

/// Removes the services on drop, so a failing test leaves nothing behind.
struct Cleanup<'a> {
    manager: &'a Manager,
    services: Vec<&'a str>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for s in &self.services {
            let _ = self.manager.docker(["service", "rm", s]);
        }
    }
}

fn manager() -> Manager {
    let tb = Testbed::shared();
    let manager = Manager::start(&tb.addrs().join(","), &[]);
    manager.wait_healthy(3);
    manager
}

#[test]
fn the_cli_creates_lists_inspects_scales_updates_rolls_back_and_removes_a_service() {
    let m = manager();
    let _cleanup = Cleanup { manager: &m, services: vec!["cli-svc"] };
    let id = m.docker_ok([
        "service",
        "create",
        "--detach",
        "--name",
        "cli-svc",
        "--replicas",
        "2",
        "--label",
        "suite=services",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(id.len(), 25, "the CLI prints the new ID: {id}");
    let taken = m.docker_err(["service", "create", "--detach", "--name", "cli-svc", "busybox", "sleep", "300"]);
    assert!(taken.contains("name conflicts with an existing object"), "{taken}");

    let ls = m.docker_ok(["service", "ls", "--format", "{{.Name}} {{.Mode}}"]);
    assert!(ls.lines().any(|l| l == "cli-svc replicated"), "{ls}");
    let replicas = m.docker_ok(["service", "ls", "--filter", "name=cli-svc", "--format", "{{.Replicas}}"]);
    assert!(replicas.ends_with("/2"), "{replicas}");
    let quiet = m.docker_ok(["service", "ls", "-q", "--filter", "label=suite=services"]);
    assert_eq!(quiet, id[..12], "IDs shown truncated");

    let pretty = m.docker_ok(["service", "inspect", "--pretty", "cli-svc"]);
    for expected in ["Name:\t\tcli-svc", "Replicated", "Replicas:\t2", "Image:\t\tbusybox", "Args:\t\tsleep 300"] {
        assert!(pretty.contains(expected), "{expected:?} missing from:\n{pretty}");
    }
    assert_eq!(m.docker_ok(["service", "inspect", "-f", "{{.ID}}", &id[..6]]), id);

    m.docker_ok(["service", "update", "--detach", "--replicas", "3", "cli-svc"]);
    let replicas =
        m.docker_ok(["service", "inspect", "-f", "{{.Spec.Mode.Replicated.Replicas}} {{.Version.Index}}", "cli-svc"]);
    assert!(replicas.starts_with("3 "), "{replicas}");
    m.docker_ok(["service", "scale", "--detach", "cli-svc=1"]);
    assert_eq!(m.docker_ok(["service", "inspect", "-f", "{{.Spec.Mode.Replicated.Replicas}}", "cli-svc"]), "1");
    m.docker_ok(["service", "update", "--detach", "--env-add", "COLOUR=blue", "cli-svc"]);
    let env = m.docker_ok(["service", "inspect", "-f", "{{.Spec.TaskTemplate.ContainerSpec.Env}}", "cli-svc"]);
    assert_eq!(env, "[COLOUR=blue]");
    m.docker_ok(["service", "rollback", "--detach", "cli-svc"]);
    let env = m.docker_ok(["service", "inspect", "-f", "{{.Spec.TaskTemplate.ContainerSpec.Env}}", "cli-svc"]);
    assert_eq!(env, "[]", "back to the spec before the update");

    // `docker service ps` reads the task list; tasks may or may not be there yet.
    m.docker_ok(["service", "ps", "cli-svc"]);
    let info = m.docker_ok(["info"]);
    assert!(info.contains(" Swarm: active") && info.contains("  Is Manager: true"), "{info}");

    m.docker_ok(["service", "rm", "cli-svc"]);
    let missing = m.docker_err(["service", "inspect", "cli-svc"]);
    assert!(missing.contains("cli-svc"), "{missing}");
    assert_eq!(m.docker_ok(["service", "ls", "-q", "--filter", "label=suite=services"]), "");
}

#[test]
fn service_logs_show_each_line_with_its_task_and_node() {
    let m = manager();
    let _cleanup = Cleanup { manager: &m, services: vec!["cli-echo"] };
    let script = "echo hello from $(hostname); sleep 300";
    m.docker_ok([
        "service",
        "create",
        "--detach",
        "--name",
        "cli-echo",
        "--replicas",
        "2",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    // Needs the reconciler to have started both tasks.
    m.wait_until(Duration::from_secs(30), "both tasks logged", |m| {
        String::from_utf8_lossy(&m.docker(["service", "logs", "cli-echo"]).stdout).matches("hello from").count() == 2
    });
    let logs = m.docker_ok(["service", "logs", "cli-echo"]);
    for line in logs.lines() {
        // `cli-echo.<slot>.<task id>@<node>    | hello from <container>`
        let (context, message) = line.split_once(" | ").unwrap_or_else(|| panic!("no context: {line}"));
        assert!(context.starts_with("cli-echo.") && context.contains("@node-0"), "{line}");
        assert!(message.starts_with("hello from "), "{line}");
    }
    let stamped = m.docker_ok(["service", "logs", "--timestamps", "--tail", "1", "cli-echo"]);
    assert!(stamped.lines().all(|l| l.starts_with("20") && l.contains(" cli-echo.")), "{stamped}");
}

/// Without `--detach` the CLI follows the tasks (`_up-to-date` task filter,
/// `UpdateStatus`) until they converge.
#[test]
fn the_cli_follows_create_and_a_rolling_update_to_convergence() {
    let m = manager();
    let _cleanup = Cleanup { manager: &m, services: vec!["cli-wait"] };
    let created = m.docker_ok([
        "service",
        "create",
        "--quiet",
        "--name",
        "cli-wait",
        "--replicas",
        "2",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(created.len(), 25, "{created}");
    m.docker_ok(["service", "update", "--quiet", "--env-add", "A=1", "cli-wait"]);
    let state = m.docker_ok(["service", "inspect", "-f", "{{.UpdateStatus.State}}", "cli-wait"]);
    assert_eq!(state, "completed");
    let running = m.docker_ok(["service", "ps", "-q", "--filter", "desired-state=running", "cli-wait"]);
    assert_eq!(running.lines().count(), 2, "{running}");
}

/// `docker service ls` REPLICAS of `name`.
fn replicas(m: &Manager, name: &str) -> String {
    let ls = m.docker_ok(["service", "ls", "--filter", &format!("name={name}"), "--format", "{{.Name}} {{.Replicas}}"]);
    ls.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or_default().to_string()
}

/// `field` (a `docker service ps` template field such as `{{.Node}}`) of
/// each running task of `name`, sorted, repeats kept.
fn of_running_tasks(m: &Manager, name: &str, field: &str) -> Vec<String> {
    let format = format!("{field} {{{{.CurrentState}}}}");
    let ps = m.docker_ok(["service", "ps", name, "--filter", "desired-state=running", "--format", &format]);
    let mut values: Vec<String> =
        ps.lines().filter(|l| l.contains("Running")).filter_map(|l| l.split(' ').next()).map(String::from).collect();
    values.sort();
    values
}

/// The nodes of the running tasks of `name`.
fn running_nodes(m: &Manager, name: &str) -> Vec<String> {
    of_running_tasks(m, name, "{{.Node}}")
}

#[test]
fn the_walkthrough_create_scale_update_ps_and_rm_on_real_engines() {
    let tb = Testbed::shared();
    let m = Manager::start(&tb.addrs().join(","), &[]);
    m.wait_healthy(3);
    let name = format!("walk{}", std::process::id());
    m.docker_ok([
        "service",
        "create",
        "--detach",
        "--replicas",
        "1",
        "--name",
        &name,
        "-p",
        "18280:80",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
    ]);
    m.wait_until(Duration::from_secs(30), "1/1", |m| replicas(m, &name) == "1/1");
    m.docker_ok(["service", "update", "--detach", "--replicas", "3", &name]);
    m.wait_until(Duration::from_secs(30), "3/3", |m| replicas(m, &name) == "3/3");
    // The published port keeps two tasks off one node: one per node.
    assert_eq!(running_nodes(&m, &name), ["node-01", "node-02", "node-03"]);
    m.docker_ok(["service", "scale", "--detach", &format!("{name}=1")]);
    m.wait_until(Duration::from_secs(30), "back to 1/1", |m| replicas(m, &name) == "1/1");
    m.wait_until(Duration::from_secs(30), "the extra containers are gone", |m| {
        m.docker_ok(["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={name}")]).lines().count()
            == 1
    });
    m.docker_ok(["service", "rm", &name]);
    m.wait_until(Duration::from_secs(30), "every task container is gone", |m| {
        m.docker_ok(["ps", "-aq", "--filter", &format!("label=com.docker.swarm.service.name={name}")]).is_empty()
    });
}

#[test]
fn a_drained_node_hands_its_tasks_to_the_others() {
    let tb = Testbed::shared();
    let m = Manager::start(&tb.addrs().join(","), &[]);
    m.wait_healthy(3);
    let name = format!("drain{}", std::process::id());
    let _cleanup = Cleanup { manager: &m, services: vec![name.as_str()] };
    m.docker_ok(["service", "create", "--detach", "--replicas", "3", "--name", &name, "busybox", "sleep", "300"]);
    m.wait_until(Duration::from_secs(30), "3/3", |m| replicas(m, &name) == "3/3");
    m.docker_ok(["node", "update", "--availability", "drain", "node-02"]);
    m.wait_until(Duration::from_secs(30), "no task left on node-02, 3 running elsewhere", |m| {
        let nodes = running_nodes(m, &name);
        nodes.len() == 3 && !nodes.iter().any(|n| n == "node-02")
    });
    let on_node_02 = m.docker_ok([
        "ps",
        "-q",
        "--filter",
        "node=node-02",
        "--filter",
        &format!("label=com.docker.swarm.service.name={name}"),
    ]);
    assert!(on_node_02.is_empty(), "the drained node's task container is gone: {on_node_02}");
    m.docker_ok(["node", "update", "--availability", "active", "node-02"]);
    m.docker_ok(["service", "scale", "--detach", &format!("{name}=4")]);
    m.wait_until(Duration::from_secs(30), "4/4 with node-02 back", |m| {
        replicas(m, &name) == "4/4" && running_nodes(m, &name).iter().any(|n| n == "node-02")
    });
}

#[test]
fn a_crashed_engine_has_its_tasks_replaced_and_its_stale_copies_removed_when_it_returns() {
    let tb = Testbed::start(3, &[], false);
    let m = Manager::start(&tb.addrs().join(","), &[]);
    m.wait_healthy(3);
    m.docker_ok(["service", "create", "--detach", "--replicas", "3", "--name", "crash", "busybox", "sleep", "300"]);
    m.wait_until(Duration::from_secs(30), "3/3", |m| replicas(m, "crash") == "3/3");
    assert_eq!(running_nodes(&m, "crash"), ["node-01", "node-02", "node-03"], "spread one per node");
    tb.stop_engine("node-03");
    // Detection (1-2 s refreshes, 2 failures) plus the replacement.
    m.wait_until(Duration::from_secs(30), "the lost task runs elsewhere", |m| {
        let nodes = running_nodes(m, "crash");
        nodes.len() == 3 && !nodes.iter().any(|n| n == "node-03")
    });
    tb.start_engine("node-03");
    m.wait_healthy(3);
    m.wait_until(Duration::from_secs(30), "the stale copy on node-03 is removed", |_| {
        tb.docker_ok("node-03", ["ps", "-aq", "--filter", "label=com.docker.swarm.service.name=crash"]).is_empty()
    });
    assert_eq!(replicas(&m, "crash"), "3/3");
}

#[test]
fn a_new_primary_finishes_a_scale_the_killed_one_started_and_no_slot_runs_twice() {
    let tb = Testbed::shared();
    let store = EtcdServer::start();
    let url = store.url("services");
    let _joins: Vec<SwarmProcess> = tb
        .addrs()
        .iter()
        .map(|a| SwarmProcess::start(&["join", "--advertise", a, "--heartbeat", "1s", "--ttl", "3s", &url]))
        .collect();
    let managers: Vec<Manager> = (0..2).map(|_| Manager::start_replicated(&url, &[])).collect();
    for m in &managers {
        m.wait_healthy(3);
    }
    let primary = |ms: &[Manager]| ms.iter().position(|m| m.role().is_some_and(|(role, _)| role == "primary"));
    managers[0].wait_until(Duration::from_secs(20), "a primary is elected", |_| primary(&managers).is_some());
    let p = primary(&managers).expect("a primary");
    let (old, survivor) = (&managers[p], &managers[1 - p]);
    let name = format!("failover{}", std::process::id());
    let _cleanup = Cleanup { manager: survivor, services: vec![name.as_str()] };
    // Through the replica: the request is relayed to the primary.
    survivor.docker_ok([
        "service",
        "create",
        "--detach",
        "--replicas",
        "3",
        "--name",
        &name,
        "busybox",
        "sleep",
        "300",
    ]);
    survivor.wait_until(Duration::from_secs(30), "3/3", |m| replicas(m, &name) == "3/3");
    survivor.docker_ok(["service", "scale", "--detach", &format!("{name}=6")]);
    old.signal("KILL");
    survivor.wait_until(Duration::from_secs(20), "the survivor becomes primary", |m| {
        m.role().is_some_and(|(role, _)| role == "primary")
    });
    survivor.wait_until(Duration::from_secs(40), "6/6 under the new primary", |m| replicas(m, &name) == "6/6");
    let slots = of_running_tasks(survivor, &name, "{{.Name}}");
    let mut unique = slots.clone();
    unique.dedup();
    assert_eq!((slots.len(), unique.len()), (6, 6), "one running task per slot: {slots:?}");
    let containers =
        survivor.docker_ok(["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={name}")]);
    assert_eq!(containers.lines().count(), 6, "no extra container: {containers}");
}

#[test]
fn a_global_service_runs_one_task_per_active_node() {
    let tb = Testbed::shared();
    let m = Manager::start(&tb.addrs().join(","), &[]);
    m.wait_healthy(3);
    let name = format!("global{}", std::process::id());
    let _cleanup = Cleanup { manager: &m, services: vec![name.as_str()] };
    m.docker_ok(["service", "create", "--detach", "--mode", "global", "--name", &name, "busybox", "sleep", "300"]);
    m.wait_until(Duration::from_secs(30), "one task per node", |m| {
        running_nodes(m, &name) == ["node-01", "node-02", "node-03"]
    });
    assert_eq!(replicas(&m, &name), "3/3");
}
