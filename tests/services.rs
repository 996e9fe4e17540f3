//! The real Docker CLI (v28) running `docker service` against a manager in
//! front of 3 real engines: the CLI accepts every answer, and the
//! reconciler makes the tasks run, spread, scale, move and go.
//! Needs root and `sudo scripts/install-deps.sh`.

use std::time::Duration;

use swarm::services::{Task, TaskState};
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

/// The current primary among `managers`, waiting up to 20 s for one.
fn primary_among(managers: &[&Manager]) -> usize {
    let primary = |ms: &[&Manager]| ms.iter().position(|m| m.role().is_some_and(|(role, _)| role == "primary"));
    managers[0].wait_until(Duration::from_secs(20), "a primary is elected", |_| primary(managers).is_some());
    primary(managers).expect("a primary")
}

/// Each running task of `name`: one per slot, and no container beyond them.
fn assert_one_running_task_per_slot(m: &Manager, name: &str, replicas: usize) {
    let slots = of_running_tasks(m, name, "{{.Name}}");
    let mut unique = slots.clone();
    unique.dedup();
    assert_eq!((slots.len(), unique.len()), (replicas, replicas), "one running task per slot: {slots:?}");
    let containers = m.docker_ok(["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={name}")]);
    assert_eq!(containers.lines().count(), replicas, "no extra container: {containers}");
}

/// SIGKILL of the primary during a scale from 3 to 6, then of the next
/// primary during a rolling update: each time the next primary finishes
/// the job, no slot ever runs two tasks, and `service ps` keeps the
/// history of every slot.
#[test]
fn new_primaries_finish_a_scale_and_a_rolling_update_the_killed_ones_started() {
    let tb = Testbed::shared();
    let store = EtcdServer::start();
    let url = store.url("services");
    let _joins: Vec<SwarmProcess> = SwarmProcess::join_all(&tb.addrs(), "3s", &url);
    let managers: Vec<Manager> = (0..3).map(|_| Manager::start_replicated(&url, &[])).collect();
    for m in &managers {
        m.wait_healthy(3);
    }
    let mut alive: Vec<&Manager> = managers.iter().collect();
    let p = primary_among(&alive);
    // A drain set through the primary shows in a replica's `docker info`.
    let replica = alive[(p + 1) % 3];
    alive[p].docker_ok(["node", "update", "--availability", "drain", "node-03"]);
    replica.wait_until(Duration::from_secs(10), "the replica shows node-03 drained", |m| {
        m.docker_ok(["info"]).contains("└ Availability: Drain")
    });
    alive[p].docker_ok(["node", "update", "--availability", "active", "node-03"]);
    let old = alive.remove(p);
    let name = format!("failover{}", std::process::id());
    let _cleanup = Cleanup { manager: alive[1], services: vec![name.as_str()] };
    // Through a replica: the request is relayed to the primary.
    alive[0].docker_ok([
        "service",
        "create",
        "--detach",
        "--replicas",
        "3",
        "--update-parallelism",
        "2",
        "--update-delay",
        "1s",
        "--name",
        &name,
        "busybox",
        "sleep",
        "300",
    ]);
    alive[0].wait_until(Duration::from_secs(30), "3/3", |m| replicas(m, &name) == "3/3");
    alive[0].docker_ok(["service", "scale", "--detach", &format!("{name}=6")]);
    old.signal("KILL");
    let p = primary_among(&alive);
    let show = |m: &Manager| service_state(m, &name);
    alive[p].wait_until_showing(
        Duration::from_secs(40),
        "6/6 under the new primary",
        |m| replicas(m, &name) == "6/6",
        show,
    );
    assert_one_running_task_per_slot(alive[p], &name, 6);

    // A rolling update, two tasks at a time; its primary dies mid-way.
    let old = alive.remove(p);
    let survivor = alive[0];
    survivor.docker_ok(["service", "update", "--detach", "--env-add", "PHASE=2", &name]);
    survivor.wait_until(Duration::from_secs(30), "the first batch runs", |m| {
        tasks_of(m, &name).iter().any(|t| {
            t.spec.container_spec.as_ref().is_some_and(|c| c.env.iter().flatten().any(|e| e == "PHASE=2"))
                && t.status.state == TaskState::Running
        })
    });
    old.signal("KILL");
    survivor.wait_until(Duration::from_secs(20), "the survivor becomes primary", |m| {
        m.role().is_some_and(|(role, _)| role == "primary")
    });
    survivor.wait_until_showing(
        Duration::from_secs(60),
        "the update completes",
        |m| update_state(m, &name) == "completed",
        show,
    );
    assert_one_running_task_per_slot(survivor, &name, 6);
    let tasks = tasks_of(survivor, &name);
    for slot in 1..=6 {
        let in_slot: Vec<&Task> = tasks.iter().filter(|t| t.slot == slot).collect();
        let current = in_slot.iter().filter(|t| t.status.state == TaskState::Running).count();
        let replaced = in_slot.iter().filter(|t| t.status.state == TaskState::Shutdown).count();
        assert_eq!(current, 1, "slot {slot}: {in_slot:#?}");
        assert!(replaced >= 1, "slot {slot} keeps the task the update replaced: {in_slot:#?}");
    }
    let history = survivor.docker_ok(["service", "ps", "--format", "{{.Name}} {{.DesiredState}}", &name]);
    assert_eq!(history.lines().filter(|l| l.ends_with(" Shutdown")).count(), tasks.len() - 6, "{history}");
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

/// The second walkthrough: a `wordpress`-like service and its database on
/// two engines, a third engine added by `swarm join`, then
/// `docker service scale wordpress=2`: spread puts the new task on the new
/// engine, the one without containers.
#[test]
fn a_scale_after_swarm_join_puts_the_new_task_on_the_new_engine() {
    let tb = Testbed::start(3, &[], false);
    let store = EtcdServer::start();
    let url = store.url("scaleout");
    let addrs = tb.addrs();
    let join = |addr: &str| SwarmProcess::join(addr, "3s", &url);
    let mut joins: Vec<SwarmProcess> = addrs[..2].iter().map(|a| join(a)).collect();
    let m = Manager::start(&url, &[]);
    m.wait_healthy(2);
    m.docker_ok(["service", "create", "--detach", "--name", "db", "busybox", "sleep", "300"]);
    m.wait_until(Duration::from_secs(30), "db 1/1", |m| replicas(m, "db") == "1/1");
    m.docker_ok([
        "service",
        "create",
        "--detach",
        "--name",
        "wordpress",
        "-p",
        "18380:80",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
    ]);
    m.wait_until(Duration::from_secs(30), "wordpress 1/1", |m| replicas(m, "wordpress") == "1/1");
    let mut first_two = [running_nodes(&m, "db"), running_nodes(&m, "wordpress")].concat();
    first_two.sort();
    assert_eq!(first_two, ["node-01", "node-02"], "spread: one service per engine");

    joins.push(join(&addrs[2]));
    m.wait_healthy(3);
    let nodes = m.docker_ok(["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}}"]);
    assert!(nodes.lines().any(|l| l == "node-03 Ready Active"), "{nodes}");
    let scaled = m.docker_ok(["service", "scale", "--detach", "wordpress=2"]);
    assert!(scaled.contains("wordpress scaled to 2"), "{scaled}");
    m.wait_until(Duration::from_secs(30), "wordpress 2/2", |m| replicas(m, "wordpress") == "2/2");
    let wordpress = running_nodes(&m, "wordpress");
    assert!(wordpress.iter().any(|n| n == "node-03"), "the new task runs on the new engine: {wordpress:?}");
    let on_node_03 = tb.docker_ok("node-03", ["ps", "--format", "{{.Names}}"]);
    assert!(on_node_03.starts_with("wordpress.2."), "{on_node_03}");
}

/// The tasks of service `name` as `GET /tasks` returns them, oldest first.
fn tasks_of(m: &Manager, name: &str) -> Vec<Task> {
    let filters = format!("{{\"service\":[\"{name}\"]}}");
    let path =
        format!("/tasks?filters={}", url::form_urlencoded::byte_serialize(filters.as_bytes()).collect::<String>());
    let (status, body) = m.get(&path).expect("GET /tasks");
    assert_eq!(status, 200, "{body}");
    let mut tasks: Vec<Task> = serde_json::from_str(&body).expect("tasks JSON");
    tasks.sort_by_key(|t| t.created_at);
    tasks
}

fn image_of(task: &Task) -> &str {
    task.spec.container_spec.as_ref().map_or("", |c| c.image.as_str())
}

/// The service's update status and its tasks, as a failed wait shows them.
fn service_state(m: &Manager, name: &str) -> String {
    let status = m.docker(["service", "inspect", "-f", "{{json .UpdateStatus}}", name]);
    let format = "{{.ID}} {{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}";
    let ps = m.docker(["service", "ps", "--no-trunc", "--format", format, name]);
    format!(
        "update status: {}\ntasks:\n{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&ps.stdout),
        String::from_utf8_lossy(&ps.stderr)
    )
}

fn update_state(m: &Manager, name: &str) -> String {
    m.docker_ok(["service", "inspect", "-f", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", name])
}

/// Tags the shared busybox image as `tag` on every engine.
fn tag_busybox(tb: &Testbed, tag: &str) {
    for node in ["node-01", "node-02", "node-03"] {
        tb.docker_ok(node, ["tag", "busybox:latest", tag]);
    }
}

/// `--update-parallelism 1 --update-delay 2s`: the tasks are replaced one
/// at a time, each new one created at least 2 s after the previous one
/// was running, and each old one stopped before its replacement was made.
#[test]
fn a_rolling_update_replaces_one_task_at_a_time_with_the_delay_between() {
    let tb = Testbed::shared();
    tag_busybox(tb, "busybox:rolling");
    let m = Manager::start(&tb.addrs().join(","), &[]);
    m.wait_healthy(3);
    let name = format!("rolling{}", std::process::id());
    let _cleanup = Cleanup { manager: &m, services: vec![name.as_str()] };
    m.docker_ok([
        "service",
        "create",
        "--detach",
        "--replicas",
        "3",
        "--update-parallelism",
        "1",
        "--update-delay",
        "2s",
        "--name",
        &name,
        "busybox",
        "sleep",
        "300",
    ]);
    m.wait_until(Duration::from_secs(30), "3/3", |m| replicas(m, &name) == "3/3");
    m.docker_ok(["service", "update", "--detach", "--image", "busybox:rolling", &name]);
    m.wait_until(Duration::from_secs(60), "the update completes", |m| update_state(m, &name) == "completed");

    let tasks = tasks_of(&m, &name);
    let new: Vec<&Task> = tasks.iter().filter(|t| image_of(t) == "busybox:rolling").collect();
    let old: Vec<&Task> = tasks.iter().filter(|t| image_of(t) == "busybox:latest").collect();
    assert_eq!((new.len(), old.len()), (3, 3), "{tasks:#?}");
    assert!(new.iter().all(|t| t.status.state == TaskState::Running), "{new:#?}");
    assert!(old.iter().all(|t| t.status.state == TaskState::Shutdown), "{old:#?}");
    for pair in new.windows(2) {
        let (previous, next) = (pair[0], pair[1]);
        let gap = next.created_at.since(previous.status.timestamp);
        assert!(
            next.created_at >= previous.status.timestamp + Duration::from_secs(2),
            "task {} was created {gap:?} after task {} was running",
            next.name,
            previous.name
        );
    }
    for task in &new {
        let replaced = old.iter().find(|o| o.slot == task.slot).expect("an old task in the same slot");
        assert!(replaced.status.timestamp <= task.status.timestamp, "stop first in slot {}", task.slot);
    }
    let slots: Vec<u64> = new.iter().map(|t| t.slot).collect();
    assert_eq!(slots, [1, 2, 3], "slots are updated in order");
}

/// A new image whose tasks fail, with `--update-failure-action rollback`:
/// the service returns to the previous spec and its tasks run the old
/// image again.
#[test]
fn a_failing_update_with_failure_action_rollback_returns_to_the_old_image() {
    let tb = Testbed::shared();
    let m = Manager::start(&tb.addrs().join(","), &[]);
    m.wait_healthy(3);
    let name = format!("rollback{}", std::process::id());
    let _cleanup = Cleanup { manager: &m, services: vec![name.as_str()] };
    m.docker_ok([
        "service",
        "create",
        "--detach",
        "--replicas",
        "2",
        "--update-parallelism",
        "1",
        "--update-failure-action",
        "rollback",
        "--name",
        &name,
        "busybox",
        "sleep",
        "300",
    ]);
    m.wait_until(Duration::from_secs(30), "2/2", |m| replicas(m, &name) == "2/2");
    m.docker_ok(["service", "update", "--detach", "--image", "busybox:no-such-tag", &name]);
    m.wait_until(Duration::from_secs(60), "the rollback completes", |m| update_state(m, &name) == "rollback_completed");
    let image = m.docker_ok(["service", "inspect", "-f", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", &name]);
    assert_eq!(image, "busybox:latest");
    let message = m.docker_ok(["service", "inspect", "-f", "{{.UpdateStatus.Message}}", &name]);
    assert!(message.contains("rollback"), "{message}");
    m.wait_until(Duration::from_secs(30), "2/2 on the old image", |m| replicas(m, &name) == "2/2");
    let tasks = tasks_of(&m, &name);
    let failed: Vec<&Task> = tasks.iter().filter(|t| image_of(t) == "busybox:no-such-tag").collect();
    assert!(!failed.is_empty(), "{tasks:#?}");
    assert!(failed.iter().all(|t| t.status.state.is_terminal()), "{failed:#?}");
    assert!(failed.iter().any(|t| t.status.err.as_deref().is_some_and(|e| e.contains("no-such-tag"))), "{failed:#?}");
    let running: Vec<&Task> = tasks.iter().filter(|t| t.status.state == TaskState::Running).collect();
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|t| image_of(t) == "busybox:latest"), "{running:#?}");
}

/// `docker service logs -f` follows every task: lines written after it
/// started arrive from each task, with the task and node names.
#[test]
fn service_logs_follow_every_task_with_task_and_node_names() {
    let m = manager();
    let name = format!("follow{}", std::process::id());
    let _cleanup = Cleanup { manager: &m, services: vec![name.as_str()] };
    let script = "sleep 3; i=0; while true; do i=$((i+1)); echo tick $i from $(hostname); sleep 1; done";
    m.docker_ok(["service", "create", "--detach", "--replicas", "2", "--name", &name, "busybox", "sh", "-c", script]);
    m.wait_until(Duration::from_secs(30), "2/2", |m| replicas(m, &name) == "2/2");
    let follow = m.docker_stream(&["service", "logs", "-f", "--tail", "0", &name]);
    let mut tasks = std::collections::BTreeSet::new();
    while tasks.len() < 2 {
        let line = follow.expect(" | tick ", Duration::from_secs(20));
        // `<name>.<slot>.<task id>@<node>    | tick N from <container>`
        let (context, _) = line.split_once(" | ").unwrap_or_else(|| panic!("no context: {line}"));
        let (task, node) = context.trim_end().split_once('@').unwrap_or_else(|| panic!("no node: {line}"));
        assert!(task.starts_with(&format!("{name}.")), "{line}");
        assert!(node.starts_with("node-0"), "{line}");
        tasks.insert(task.to_string());
    }
}

/// `docker stack deploy` of a two-service compose file: both services run,
/// on the stack's network; `docker stack rm` removes services, tasks and
/// the network.
#[test]
fn a_stack_of_two_services_deploys_lists_and_is_removed() {
    let m = manager();
    let stack = format!("stk{}", std::process::id());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(
        &file,
        r#"version: "3.8"
services:
  web:
    image: busybox
    command: httpd -f -p 80
    ports:
      - "18480:80"
    deploy:
      replicas: 2
  db:
    image: busybox
    command: sleep 300
    environment:
      ROLE: database
"#,
    )
    .expect("compose file");
    let (web, db) = (format!("{stack}_web"), format!("{stack}_db"));
    let _cleanup = Cleanup { manager: &m, services: vec![web.as_str(), db.as_str()] };
    let file = file.to_string_lossy().to_string();
    m.docker_ok(["stack", "deploy", "--detach", "-c", &file, &stack]);
    m.wait_until(Duration::from_secs(40), "both services converge", |m| {
        replicas(m, &web) == "2/2" && replicas(m, &db) == "1/1"
    });
    let stacks = m.docker_ok(["stack", "ls", "--format", "{{.Name}} {{.Services}}"]);
    assert!(stacks.lines().any(|l| l == format!("{stack} 2")), "{stacks}");
    let services = m.docker_ok(["stack", "services", &stack, "--format", "{{.Name}} {{.Replicas}}"]);
    assert_eq!(services.lines().count(), 2, "{services}");
    let ps = m.docker_ok(["stack", "ps", &stack, "--filter", "desired-state=running", "--format", "{{.Name}}"]);
    assert_eq!(ps.lines().count(), 3, "{ps}");
    let network = format!("{stack}_default");
    let networks = m.docker_ok(["network", "ls", "--filter", &format!("name={network}"), "--format", "{{.Name}}"]);
    assert_eq!(networks, network, "one cluster-wide network for the stack");
    let on_network = m.docker_ok([
        "ps",
        "--filter",
        &format!("label=com.docker.stack.namespace={stack}"),
        "--format",
        "{{.Networks}}",
    ]);
    assert_eq!(on_network.lines().count(), 3, "{on_network}");
    assert!(on_network.lines().all(|l| l == network), "{on_network}");
    let env = m.docker_ok(["service", "inspect", "-f", "{{.Spec.TaskTemplate.ContainerSpec.Env}}", &db]);
    assert!(env.contains("ROLE=database"), "{env}");

    m.docker_ok(["stack", "rm", &stack]);
    m.wait_until(Duration::from_secs(30), "services, containers and network are gone", |m| {
        m.docker_ok(["service", "ls", "-q", "--filter", &format!("label=com.docker.stack.namespace={stack}")])
            .is_empty()
            && m.docker_ok(["ps", "-aq", "--filter", &format!("label=com.docker.stack.namespace={stack}")]).is_empty()
            && m.docker_ok(["network", "ls", "-q", "--filter", &format!("name={network}")]).is_empty()
    });
}

/// `--network a --network b`: the task's container is on both networks,
/// with the service name as alias on each.
#[test]
fn a_service_on_two_networks_has_its_tasks_on_both() {
    let m = manager();
    let tag = std::process::id();
    let (name, front, back) = (format!("nets{tag}"), format!("front{tag}"), format!("back{tag}"));
    m.docker_ok(["network", "create", &front]);
    m.docker_ok(["network", "create", &back]);
    {
        let _cleanup = Cleanup { manager: &m, services: vec![name.as_str()] };
        m.docker_ok([
            "service",
            "create",
            "--detach",
            "--name",
            &name,
            "--network",
            &front,
            "--network",
            &back,
            "busybox",
            "sleep",
            "300",
        ]);
        m.wait_until(Duration::from_secs(30), "1/1", |m| replicas(m, &name) == "1/1");
        let container = m.docker_ok(["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={name}")]);
        let networks = m.docker_ok([
            "inspect",
            "-f",
            "{{range $net, $ep := .NetworkSettings.Networks}}{{$net}}={{join $ep.Aliases \",\"}} {{end}}",
            &container,
        ]);
        for net in [&front, &back] {
            assert!(
                networks.split_whitespace().any(|n| n.starts_with(&format!("{net}=")) && n.contains(&name)),
                "{net} with alias {name}: {networks}"
            );
        }
    }
    m.docker_ok(["network", "rm", &front, &back]);
}

/// The `service create` flags that shape the task's container reach it:
/// env, container labels, a `node.hostname` constraint, limits and
/// reservations, a volume mount and the restart condition; `node ps` and
/// `node inspect --pretty` show the node's side.
#[test]
fn service_create_flags_shape_the_task_container() {
    let m = manager();
    let name = format!("flags{}", std::process::id());
    let _cleanup = Cleanup { manager: &m, services: vec![name.as_str()] };
    m.docker_ok([
        "service",
        "create",
        "--detach",
        "--name",
        &name,
        "-e",
        "GREETING=hello",
        "--container-label",
        "team=blue",
        "--constraint",
        "node.hostname==node-02",
        "--limit-memory",
        "64M",
        "--limit-cpu",
        "0.5",
        "--reserve-memory",
        "32M",
        "--restart-condition",
        "none",
        "--mount",
        &format!("type=volume,source={name}-data,target=/data"),
        "busybox",
        "sh",
        "-c",
        "echo $GREETING > /data/greeting; sleep 300",
    ]);
    m.wait_until(Duration::from_secs(30), "1/1", |m| replicas(m, &name) == "1/1");
    assert_eq!(running_nodes(&m, &name), ["node-02"]);
    let container = m.docker_ok(["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={name}")]);
    let shaped = m.docker_ok([
        "inspect",
        "-f",
        "{{.Config.Labels.team}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}} {{range .Mounts}}{{.Type}}:{{.Name}}:{{.Destination}}{{end}}",
        &container,
    ]);
    assert_eq!(shaped, format!("blue 67108864 500000000 no volume:{name}-data:/data"));
    let env = m.docker_ok(["inspect", "-f", "{{join .Config.Env \" \"}}", &container]);
    assert!(env.contains("GREETING=hello"), "{env}");
    assert_eq!(m.docker_ok(["exec", &container, "cat", "/data/greeting"]), "hello");

    let on_node = m.docker_ok(["node", "ps", "--format", "{{.Name}} {{.Node}} {{.CurrentState}}", "node-02"]);
    assert!(
        on_node.lines().any(|l| l.starts_with(&format!("{name}.1 node-02 Running"))),
        "node ps shows the task: {on_node}"
    );
    let pretty = m.docker_ok(["node", "inspect", "--pretty", "node-02"]);
    for expected in ["Hostname:", "node-02", "Status:", "Ready", "Availability:", "Active"] {
        assert!(pretty.contains(expected), "{expected:?} missing from:\n{pretty}");
    }
    let no_trunc = m.docker_ok(["service", "ps", "--no-trunc", "--format", "{{.ID}}", &name]);
    assert!(no_trunc.lines().all(|id| id.len() == 25), "{no_trunc}");
    // `service rm` removes the task's container before it answers.
    m.docker_ok(["service", "rm", &name]);
    m.docker_ok(["volume", "rm", &format!("node-02/{name}-data")]);
}
