//! Table-driven tests of each planning rule, and a seeded random check of
//! the slot invariant over several rounds.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::*;
use crate::services::model::{FailureAction, UpdateState};

const SEC: i128 = 1_000_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_nanos(i128::from(secs) * SEC)
}

fn spec(value: serde_json::Value) -> ServiceSpec {
    serde_json::from_value(value).unwrap()
}

fn service(id: &str, spec_json: serde_json::Value) -> Service {
    Service { id: id.into(), spec: spec(spec_json), ..Default::default() }
}

fn replicated(replicas: u64) -> Service {
    service(
        "svc",
        json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "nginx:1"}}, "Mode": {"Replicated": {"Replicas": replicas}}}),
    )
}

fn global() -> Service {
    service(
        "glob",
        json!({"Name": "agent", "TaskTemplate": {"ContainerSpec": {"Image": "agent:1"}}, "Mode": {"Global": {}}}),
    )
}

fn with_restart(mut s: Service, policy: serde_json::Value) -> Service {
    s.spec.task_template.restart_policy = Some(serde_json::from_value(policy).unwrap());
    s
}

fn with_image(mut s: Service, image: &str) -> Service {
    if let Some(c) = s.spec.task_template.container_spec.as_mut() {
        c.image = image.into();
    }
    s
}

/// A task of `s` (with its current spec) in `slot` on `node`.
fn task(
    s: &Service,
    id: &str,
    slot: u64,
    node: &str,
    state: TaskState,
    desired: TaskState,
    created: i64,
) -> TaskRecord {
    TaskRecord {
        task: Task {
            id: id.into(),
            version: Default::default(),
            created_at: at(created),
            updated_at: at(created),
            name: String::new(),
            labels: Default::default(),
            spec: s.spec.task_template.clone(),
            service_id: s.id.clone(),
            slot,
            node_id: node.into(),
            status: TaskStatus {
                timestamp: at(created),
                state,
                message: String::new(),
                err: None,
                container_status: None,
                port_status: None,
            },
            desired_state: desired,
            extra: Default::default(),
        },
        ports: s.spec.ports().to_vec(),
    }
}

fn running(s: &Service, id: &str, slot: u64, node: &str, created: i64) -> TaskRecord {
    task(s, id, slot, node, TaskState::Running, TaskState::Running, created)
}

fn ended(mut t: TaskRecord, state: TaskState, when: i64) -> TaskRecord {
    t.task.status.state = state;
    t.task.status.timestamp = at(when);
    t
}

fn nodes() -> Vec<NodeView> {
    (1..=3).map(|i| NodeView::new(&format!("n{i}"), &format!("node-0{i}"))).collect()
}

fn run(services: &[Service], tasks: &[TaskRecord], nodes: &[NodeView], now: i64) -> Plan {
    let mut n = 0;
    let mut ids = || {
        n += 1;
        format!("new{n}")
    };
    plan(services, tasks, nodes, at(now), &mut ids)
}

/// The actions in a compact form: `start svc:slot`, `stop id reason`, ...
fn summary(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::StartTask { record, replaces } => {
                let t = &record.task;
                let slot = match t.slot_key() {
                    SlotKey::Replica(n) => n.to_string(),
                    SlotKey::Node(n) => n,
                };
                match replaces {
                    Some(old) => format!("start {}:{slot} for {old}", t.service_id),
                    None => format!("start {}:{slot}", t.service_id),
                }
            }
            Action::StopTask { task_id, reason } => format!("stop {task_id} ({reason:?})"),
            Action::DeleteTask { task_id } => format!("delete {task_id}"),
            Action::SetUpdateStatus { status, .. } => format!("status {:?}", status.state),
            Action::Rollback { service_id } => format!("rollback {service_id}"),
        })
        .collect()
}

/// Applies a plan to the records the way the reconciler would (stores
/// only; containers are not simulated).
fn apply(tasks: &mut Vec<TaskRecord>, services: &mut [Service], p: &Plan, now: Timestamp) {
    for a in &p.actions {
        match a {
            Action::StartTask { record, .. } => tasks.push((**record).clone()),
            Action::StopTask { task_id, reason } => {
                if let Some(t) = tasks.iter_mut().find(|t| &t.task.id == task_id) {
                    t.task.desired_state = reason.desired_state();
                    t.task.updated_at = now;
                }
            }
            Action::DeleteTask { task_id } => tasks.retain(|t| &t.task.id != task_id),
            Action::SetUpdateStatus { service_id, status } => {
                if let Some(s) = services.iter_mut().find(|s| &s.id == service_id) {
                    s.update_status = Some(status.clone());
                }
            }
            Action::Rollback { service_id } => {
                if let Some(s) = services.iter_mut().find(|s| &s.id == service_id) {
                    if let Some(previous) = s.previous_spec.take() {
                        s.previous_spec = Some(std::mem::replace(&mut s.spec, previous));
                    }
                }
            }
        }
    }
}

/// Slots holding more than one task wanted running.
fn doubly_wanted(tasks: &[TaskRecord]) -> Vec<(String, SlotKey)> {
    let mut count: BTreeMap<(String, SlotKey), usize> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.wanted()) {
        *count.entry((t.task.service_id.clone(), t.task.slot_key())).or_default() += 1;
    }
    count.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k).collect()
}

#[test]
fn a_new_service_gets_its_replicas() {
    let p = run(&[replicated(3)], &[], &nodes(), 0);
    assert_eq!(summary(&p), ["start svc:1", "start svc:2", "start svc:3"]);
    let Action::StartTask { record, .. } = &p.actions[0] else { panic!() };
    assert_eq!(record.task.name, "web.1");
    assert_eq!(record.task.desired_state, TaskState::Running);
    assert_eq!(record.task.status.state, TaskState::New);
    assert!(record.task.node_id.is_empty());
    assert_eq!(p.wake_at, None);
}

#[test]
fn a_converged_service_needs_nothing() {
    let s = replicated(2);
    let tasks = [running(&s, "a", 1, "n1", 1), running(&s, "b", 2, "n2", 2)];
    assert!(run(&[s], &tasks, &nodes(), 10).actions.is_empty());
}

#[test]
fn scaling() {
    let s = with_restart(replicated(3), json!({"Condition": "none"}));
    let three = [running(&s, "a", 1, "n1", 1), running(&s, "b", 2, "n2", 3), running(&s, "c", 3, "n3", 2)];
    let failed_slot = [
        running(&s, "a", 1, "n1", 1),
        ended(running(&s, "b", 2, "n2", 3), TaskState::Complete, 5),
        running(&s, "c", 3, "n3", 2),
    ];
    let cases: Vec<(&str, u64, Vec<TaskRecord>, Vec<&str>)> = vec![
        ("down removes the newest first", 1, three.to_vec(), vec!["stop b (ScaledDown)", "stop c (ScaledDown)"]),
        ("down removes ended slots first", 2, failed_slot.to_vec(), vec!["stop b (ScaledDown)"]),
        ("up fills the lowest free slots", 5, three.to_vec(), vec!["start svc:4", "start svc:5"]),
        ("a gap is filled", 3, vec![running(&s, "a", 1, "n1", 1), running(&s, "c", 3, "n3", 2)], vec!["start svc:2"]),
        ("to zero", 0, vec![running(&s, "a", 1, "n1", 1)], vec!["stop a (ScaledDown)"]),
    ];
    for (name, replicas, tasks, want) in cases {
        let mut svc = s.clone();
        svc.spec.mode = Some(ServiceMode::Replicated(crate::services::model::Replicated {
            replicas: Some(replicas),
            extra: Default::default(),
        }));
        assert_eq!(summary(&run(&[svc], &tasks, &nodes(), 10)), want, "{name}");
    }
    assert_eq!(StopReason::ScaledDown.desired_state(), TaskState::Remove);
}

#[test]
fn a_released_slot_is_forgotten_once_ended_and_reused_later() {
    let s = replicated(1);
    let tasks = [
        running(&s, "a", 1, "n1", 1),
        task(&s, "b", 2, "n2", TaskState::Shutdown, TaskState::Remove, 2),
        task(&s, "c", 3, "n2", TaskState::Running, TaskState::Remove, 2),
    ];
    assert_eq!(summary(&run(std::slice::from_ref(&s), &tasks, &nodes(), 10)), ["delete b"]);
    let s2 = replicated(2);
    assert_eq!(summary(&run(&[s2], &tasks, &nodes(), 10)), ["delete b", "start svc:2"]);
}

#[test]
fn tasks_leave_unusable_nodes() {
    let s = replicated(1);
    let mut cases: Vec<(&str, Vec<NodeView>, Vec<&str>)> = Vec::new();
    let mut down = nodes();
    down[0].ready = false;
    cases.push(("down", down, vec!["stop a (NodeDown)", "start svc:1 for a"]));
    let mut drained = nodes();
    drained[0].availability = Availability::Drain;
    cases.push(("drained", drained, vec!["stop a (NodeDrained)", "start svc:1 for a"]));
    let mut paused = nodes();
    paused[0].availability = Availability::Pause;
    cases.push(("paused keeps it", paused, vec![]));
    cases.push(("unknown node", nodes()[1..].to_vec(), vec!["stop a (NodeDown)", "start svc:1 for a"]));
    for (name, nodes, want) in cases {
        let tasks = [running(&s, "a", 1, "n1", 1)];
        assert_eq!(summary(&run(std::slice::from_ref(&s), &tasks, &nodes, 10)), want, "{name}");
    }
    // A task not placed yet is left to the reconciler.
    let pending = [task(&s, "p", 1, "", TaskState::Pending, TaskState::Running, 1)];
    assert!(run(&[s], &pending, &nodes(), 10).actions.is_empty());
}

#[test]
fn avoided_nodes_are_those_taking_no_new_tasks() {
    let mut n = nodes();
    n[0].availability = Availability::Pause;
    n[1].ready = false;
    assert_eq!(avoided_nodes(&n), ["node-01", "node-02"]);
}

#[test]
fn restart_policy() {
    // The task ended at t=100; the default delay is 5 s.
    type Case = (&'static str, serde_json::Value, TaskState, i64, Vec<&'static str>, Option<i64>);
    let cases: Vec<Case> = vec![
        ("any: waits for the delay", json!({}), TaskState::Complete, 101, vec!["stop a (Ended)"], Some(105)),
        (
            "any: restarts after it",
            json!({}),
            TaskState::Complete,
            105,
            vec!["stop a (Ended)", "start svc:1 for a"],
            None,
        ),
        (
            "custom delay",
            json!({"Delay": 0}),
            TaskState::Failed,
            100,
            vec!["stop a (Ended)", "start svc:1 for a"],
            None,
        ),
        ("none", json!({"Condition": "none"}), TaskState::Failed, 200, vec!["stop a (Ended)"], None),
        (
            "on-failure, complete",
            json!({"Condition": "on-failure"}),
            TaskState::Complete,
            200,
            vec!["stop a (Ended)"],
            None,
        ),
        (
            "on-failure, failed",
            json!({"Condition": "on-failure"}),
            TaskState::Failed,
            200,
            vec!["stop a (Ended)", "start svc:1 for a"],
            None,
        ),
        (
            "on-failure, rejected",
            json!({"Condition": "on-failure"}),
            TaskState::Rejected,
            200,
            vec!["stop a (Ended)", "start svc:1 for a"],
            None,
        ),
    ];
    for (name, policy, state, now, want, wake) in cases {
        let s = with_restart(replicated(1), policy);
        let tasks = [ended(running(&s, "a", 1, "n1", 1), state, 100)];
        let p = run(&[s], &tasks, &nodes(), now);
        assert_eq!(summary(&p), want, "{name}");
        assert_eq!(p.wake_at, wake.map(at), "{name}");
    }
}

#[test]
fn a_task_stopped_by_the_manager_is_replaced_at_once() {
    let s = with_restart(replicated(1), json!({"Condition": "none"}));
    let stopped = [task(&s, "a", 1, "n1", TaskState::Shutdown, TaskState::Shutdown, 1)];
    assert_eq!(summary(&run(std::slice::from_ref(&s), &stopped, &nodes(), 2)), ["start svc:1 for a"]);
    // Its stop is still under way: the new one may start (only it is wanted).
    let stopping = [task(&s, "a", 1, "n1", TaskState::Running, TaskState::Shutdown, 1)];
    assert_eq!(summary(&run(&[s], &stopping, &nodes(), 2)), ["start svc:1 for a"]);
}

#[test]
fn restart_attempts_and_window() {
    let history = |s: &Service| {
        vec![
            task(&s.clone(), "a", 1, "n1", TaskState::Failed, TaskState::Shutdown, 10),
            ended(task(s, "b", 1, "n1", TaskState::Running, TaskState::Shutdown, 20), TaskState::Failed, 30),
            ended(running(s, "c", 1, "n1", 40), TaskState::Failed, 50),
        ]
    };
    let cases: Vec<(&str, serde_json::Value, Vec<&str>)> = vec![
        ("unlimited", json!({"Delay": 0}), vec!["stop c (Ended)", "start svc:1 for c"]),
        ("three attempts allowed", json!({"Delay": 0, "MaxAttempts": 3}), vec!["stop c (Ended)", "start svc:1 for c"]),
        ("two attempts used up", json!({"Delay": 0, "MaxAttempts": 2}), vec!["stop c (Ended)"]),
        // Failures at 10, 30, 50; a 25 s window before 50 holds two of them.
        (
            "window",
            json!({"Delay": 0, "MaxAttempts": 2, "Window": 25_000_000_000i64}),
            vec!["stop c (Ended)", "start svc:1 for c"],
        ),
    ];
    for (name, policy, want) in cases {
        let s = with_restart(replicated(1), policy);
        let mut tasks = history(&s);
        tasks[0].task.status.timestamp = at(10);
        assert_eq!(summary(&run(&[s], &tasks, &nodes(), 1000)), want, "{name}");
    }
}

#[test]
fn duplicates_in_a_slot_are_stopped() {
    let s = replicated(1);
    let tasks = [running(&s, "old", 1, "n1", 1), running(&s, "new", 1, "n2", 2)];
    assert_eq!(summary(&run(&[s], &tasks, &nodes(), 10)), ["stop old (Duplicate)"]);
}

#[test]
fn removed_services_and_slotless_tasks() {
    let s = replicated(1);
    let gone = Service { id: "gone".into(), ..s.clone() };
    let tasks = [
        running(&gone, "g1", 1, "n1", 1),
        task(&gone, "g2", 1, "n1", TaskState::Shutdown, TaskState::Remove, 0),
        running(&s, "a", 1, "n1", 1),
        running(&s, "x", 0, "n2", 1),
    ];
    assert_eq!(summary(&run(&[s], &tasks, &nodes(), 10)), ["stop g1 (ServiceRemoved)", "delete g2", "stop x (NoSlot)"]);
}

#[test]
fn history_is_bounded_per_slot() {
    let s = with_restart(replicated(1), json!({"Condition": "none"}));
    let mut tasks: Vec<TaskRecord> =
        (0..7).map(|i| task(&s, &format!("t{i}"), 1, "n1", TaskState::Shutdown, TaskState::Shutdown, i)).collect();
    tasks.push(running(&s, "live", 1, "n1", 10));
    assert_eq!(summary(&run(std::slice::from_ref(&s), &tasks, &nodes(), 20)), ["delete t0", "delete t1", "delete t2"]);
    // A restart policy counting more attempts keeps more.
    let s = with_restart(replicated(1), json!({"MaxAttempts": 10}));
    for t in &mut tasks {
        t.task.spec = s.spec.task_template.clone();
    }
    assert!(run(&[s], &tasks, &nodes(), 20).actions.is_empty());
}

#[test]
fn global_service_runs_on_each_eligible_node() {
    let g = global();
    let mut n = nodes();
    n.push(NodeView { availability: Availability::Pause, ..NodeView::new("n4", "node-04") });
    n.push(NodeView { availability: Availability::Drain, ..NodeView::new("n5", "node-05") });
    n.push(NodeView { ready: false, ..NodeView::new("n6", "node-06") });
    let tasks = [
        running(&g, "on1", 0, "n1", 1),
        running(&g, "on4", 0, "n4", 1),
        running(&g, "on5", 0, "n5", 1),
        running(&g, "on6", 0, "n6", 1),
        running(&g, "on9", 0, "n9", 1),
    ];
    let p = run(std::slice::from_ref(&g), &tasks, &n, 10);
    assert_eq!(
        summary(&p),
        ["start glob:n2", "start glob:n3", "stop on5 (NodeDrained)", "stop on9 (NodeGone)"],
        "paused n4 keeps its task, down n6 is left alone"
    );
    let Action::StartTask { record, .. } = &p.actions[0] else { panic!() };
    assert_eq!((record.task.slot, record.task.node_id.as_str(), record.task.name.as_str()), (0, "n2", "agent.n2"));

    // Constraints choose the nodes.
    let mut picky = g.clone();
    picky.spec.task_template.placement =
        Some(serde_json::from_value(json!({"Constraints": ["node.labels.zone==east"]})).unwrap());
    let mut n = nodes();
    n[1].labels.insert("zone".into(), "east".into());
    let tasks = [running(&g, "on1", 0, "n1", 1)];
    // n1 no longer qualifies; n2 does and has no task yet.
    assert_eq!(summary(&run(&[picky], &tasks, &n, 10)), ["stop on1 (ConstraintsUnmet)", "start glob:n2"]);
}

#[test]
fn global_restart_waits_and_paused_nodes_get_no_restart() {
    let g = global();
    let mut n = nodes()[..1].to_vec();
    let tasks = [ended(running(&g, "a", 0, "n1", 1), TaskState::Failed, 100)];
    let p = run(std::slice::from_ref(&g), &tasks, &n, 102);
    assert_eq!((summary(&p), p.wake_at), (vec!["stop a (Ended)".to_string()], Some(at(105))));
    assert_eq!(summary(&run(std::slice::from_ref(&g), &tasks, &n, 105)), ["stop a (Ended)", "start glob:n1 for a"]);
    n[0].availability = Availability::Pause;
    assert_eq!(summary(&run(&[g], &tasks, &n, 105)), ["stop a (Ended)"]);
}

fn update_config(s: &mut Service, config: serde_json::Value) {
    s.spec.update_config = Some(serde_json::from_value(config).unwrap());
}

/// Three tasks of `old`, running since t=1, and `new` (the updated service).
fn updating(config: serde_json::Value) -> (Vec<TaskRecord>, Service) {
    let old = replicated(3);
    let tasks = (1..=3).map(|i| running(&old, &format!("o{i}"), i, &format!("n{i}"), 1)).collect();
    let mut new = with_image(old.clone(), "nginx:2");
    new.previous_spec = Some(old.spec.clone());
    update_config(&mut new, config);
    (tasks, new)
}

#[test]
fn rolling_update_in_batches_with_delay() {
    let (mut tasks, new) = updating(json!({"Parallelism": 2, "Delay": 10_000_000_000i64, "Monitor": 5_000_000_000i64}));
    let mut services = vec![new];

    let p = run(&services, &tasks, &nodes(), 100);
    assert_eq!(
        summary(&p),
        ["status Updating", "stop o1 (Updated)", "start svc:1 for o1", "stop o2 (Updated)", "start svc:2 for o2"]
    );
    apply(&mut tasks, &mut services, &p, at(100));
    assert_eq!(services[0].update_status.as_ref().and_then(|s| s.started_at), Some(at(100)));

    // The batch is not finished while its tasks start.
    assert!(run(&services, &tasks, &nodes(), 101).actions.is_empty());
    // Both run from t=103: the next batch waits for the delay.
    for t in tasks.iter_mut().filter(|t| t.task.created_at == at(100)) {
        t.task.status.state = TaskState::Running;
        t.task.status.timestamp = at(103);
    }
    let p = run(&services, &tasks, &nodes(), 110);
    assert_eq!((p.actions.len(), p.wake_at), (0, Some(at(113))));
    let p = run(&services, &tasks, &nodes(), 113);
    assert_eq!(summary(&p), ["stop o3 (Updated)", "start svc:3 for o3"]);
    apply(&mut tasks, &mut services, &p, at(113));
    for t in tasks.iter_mut().filter(|t| t.task.created_at == at(113)) {
        t.task.status.state = TaskState::Running;
        t.task.status.timestamp = at(120);
    }
    // Completed once the last task has run for the monitor period.
    let p = run(&services, &tasks, &nodes(), 122);
    assert_eq!((p.actions.len(), p.wake_at), (0, Some(at(125))));
    let p = run(&services, &tasks, &nodes(), 125);
    assert_eq!(summary(&p), ["status Completed"]);
    apply(&mut tasks, &mut services, &p, at(125));
    assert!(run(&services, &tasks, &nodes(), 200).actions.is_empty());
    assert_eq!(doubly_wanted(&tasks), vec![]);
}

#[test]
fn parallelism_zero_replaces_all_at_once() {
    let (tasks, new) = updating(json!({"Parallelism": 0}));
    let p = run(&[new], &tasks, &nodes(), 100);
    assert_eq!(p.actions.iter().filter(|a| matches!(a, Action::StartTask { .. })).count(), 3);
}

#[test]
fn force_update_and_port_changes_make_tasks_out_of_date() {
    let s = replicated(1);
    let tasks = [running(&s, "a", 1, "n1", 1)];
    let mut forced = s.clone();
    forced.spec.task_template.force_update = Some(1);
    assert_eq!(summary(&run(&[forced], &tasks, &nodes(), 10))[..2], ["status Updating", "stop a (Updated)"]);
    let mut ported = s.clone();
    ported.spec.endpoint_spec = Some(serde_json::from_value(json!({"Ports": [{"TargetPort": 80}]})).unwrap());
    assert_eq!(summary(&run(&[ported], &tasks, &nodes(), 10))[..2], ["status Updating", "stop a (Updated)"]);
}

/// The update's first batch (o1 → new1) failed at t=105.
fn failed_update(action: &str) -> (Vec<TaskRecord>, Vec<Service>) {
    let (mut tasks, new) = updating(json!({"FailureAction": action}));
    let mut services = vec![new];
    let p = run(&services, &tasks, &nodes(), 100);
    apply(&mut tasks, &mut services, &p, at(100));
    if let Some(t) = tasks.iter_mut().find(|t| t.task.id == "new1") {
        t.task.status.state = TaskState::Failed;
        t.task.status.timestamp = at(105);
    }
    (tasks, services)
}

#[test]
fn update_failure_pauses() {
    let (tasks, services) = failed_update("pause");
    let p = run(&services, &tasks, &nodes(), 106);
    let status = p.actions.iter().find_map(|a| match a {
        Action::SetUpdateStatus { status, .. } => Some(status.clone()),
        _ => None,
    });
    let status = status.unwrap();
    assert_eq!(status.state, UpdateState::Paused);
    assert_eq!(status.message, "update paused due to failure or early termination of task new1");
    assert_eq!(status.started_at, Some(at(100)));
    // The slot is still restarted (restart policy), but no new batch starts.
    assert_eq!(summary(&p)[..2], ["stop new1 (Ended)", "status Paused"]);
    let mut services = services;
    services[0].update_status = Some(status);
    let p = run(&services, &tasks, &nodes(), 200);
    assert_eq!(summary(&p), ["stop new1 (Ended)", "start svc:1 for new1"]);
}

#[test]
fn update_failure_rolls_back() {
    let (mut tasks, mut services) = failed_update("rollback");
    let p = run(&services, &tasks, &nodes(), 106);
    assert_eq!(summary(&p)[1..], ["rollback svc", "status RollbackStarted"]);
    apply(&mut tasks, &mut services, &p, at(106));
    assert_eq!(services[0].spec.task_template.container_spec.as_ref().unwrap().image, "nginx:1");
    // Back on the old spec, the updated slot is the out-of-date one.
    let p = run(&services, &tasks, &nodes(), 200);
    assert_eq!(summary(&p), ["start svc:1 for new1"]);
    let mut p_tasks = tasks.clone();
    apply(&mut p_tasks, &mut services, &p, at(200));
    for t in p_tasks.iter_mut().filter(|t| t.task.created_at == at(200)) {
        t.task.status.state = TaskState::Running;
        t.task.status.timestamp = at(201);
    }
    let p = run(&services, &p_tasks, &nodes(), 300);
    assert_eq!(summary(&p), ["status RollbackCompleted"]);
}

#[test]
fn update_failure_continues_or_pauses_without_a_previous_spec() {
    let (tasks, services) = failed_update("continue");
    assert!(!summary(&run(&services, &tasks, &nodes(), 106)).iter().any(|a| a.starts_with("status")));
    let (tasks, mut services) = failed_update("rollback");
    services[0].previous_spec = None;
    assert!(summary(&run(&services, &tasks, &nodes(), 106)).contains(&"status Paused".to_string()));
    // A failure ratio tolerating one failure of three.
    let (tasks, mut services) = failed_update("pause");
    if let Some(c) = services[0].spec.update_config.as_mut() {
        c.max_failure_ratio = Some(0.34);
        c.failure_action = Some(FailureAction::Pause);
    }
    assert!(!summary(&run(&services, &tasks, &nodes(), 106)).contains(&"status Paused".to_string()));
}

#[test]
fn planning_is_deterministic() {
    let s = replicated(2);
    let tasks = [ended(running(&s, "a", 1, "n1", 1), TaskState::Failed, 50)];
    assert_eq!(run(std::slice::from_ref(&s), &tasks, &nodes(), 52), run(&[s], &tasks, &nodes(), 52));
}

// ------------------------------------------------------------ random

const STATES: [TaskState; 9] = [
    TaskState::New,
    TaskState::Pending,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Complete,
    TaskState::Shutdown,
    TaskState::Failed,
    TaskState::Rejected,
    TaskState::Orphaned,
];
const DESIRED: [TaskState; 3] = [TaskState::Running, TaskState::Shutdown, TaskState::Remove];

fn random_services(rng: &mut StdRng) -> Vec<Service> {
    let mut out = Vec::new();
    for i in 0..rng.gen_range(1..=3) {
        let mode = if rng.gen_bool(0.3) {
            json!({"Global": {}})
        } else {
            json!({"Replicated": {"Replicas": rng.gen_range(0..5)}})
        };
        let condition = ["any", "none", "on-failure"][rng.gen_range(0..3)];
        let action = ["pause", "continue", "rollback"][rng.gen_range(0..3)];
        let mut s = service(
            &format!("s{i}"),
            json!({
                "Name": format!("svc{i}"),
                "TaskTemplate": {
                    "ContainerSpec": {"Image": format!("img:{}", rng.gen_range(1..3))},
                    "RestartPolicy": {"Condition": condition, "Delay": rng.gen_range(0..3) * SEC as i64,
                                      "MaxAttempts": rng.gen_range(0..3)}
                },
                "Mode": mode,
                "UpdateConfig": {"Parallelism": rng.gen_range(0..3), "Delay": rng.gen_range(0..3) * SEC as i64,
                                 "FailureAction": action, "Monitor": SEC as i64}
            }),
        );
        if rng.gen_bool(0.5) {
            s.previous_spec = Some(with_image(s.clone(), "img:0").spec);
        }
        s.update_status = match rng.gen_range(0..4) {
            0 => None,
            n => Some(UpdateStatus {
                state: [UpdateState::Updating, UpdateState::Paused, UpdateState::RollbackStarted][n - 1],
                started_at: Some(at(rng.gen_range(0..20))),
                completed_at: None,
                message: String::new(),
            }),
        };
        out.push(s);
    }
    out
}

fn random_nodes(rng: &mut StdRng) -> Vec<NodeView> {
    (0..rng.gen_range(0..5))
        .map(|i| NodeView {
            ready: rng.gen_bool(0.8),
            availability: [Availability::Active, Availability::Pause, Availability::Drain][rng.gen_range(0..3)],
            ..NodeView::new(&format!("n{i}"), &format!("node-{i}"))
        })
        .collect()
}

fn random_tasks(rng: &mut StdRng, services: &[Service]) -> Vec<TaskRecord> {
    let mut out = Vec::new();
    for i in 0..rng.gen_range(0..15) {
        let s = &services[rng.gen_range(0..services.len())];
        let s = if rng.gen_bool(0.2) { with_image(s.clone(), "img:old") } else { s.clone() };
        let s = if rng.gen_bool(0.1) { Service { id: "gone".into(), ..s } } else { s };
        let slot = rng.gen_range(0..4);
        let node = if rng.gen_bool(0.1) { String::new() } else { format!("n{}", rng.gen_range(0..6)) };
        let state = STATES[rng.gen_range(0..STATES.len())];
        let desired = DESIRED[rng.gen_range(0..DESIRED.len())];
        out.push(task(&s, &format!("t{i}"), slot, &node, state, desired, rng.gen_range(0..20)));
    }
    out
}

/// Moves tasks along their lifecycle as engines would.
fn progress(rng: &mut StdRng, tasks: &mut [TaskRecord], now: Timestamp) {
    for t in tasks.iter_mut() {
        let next = match t.task.status.state {
            s if s < TaskState::Running && t.wanted() => Some(TaskState::Running),
            TaskState::Running if !t.wanted() => Some(TaskState::Shutdown),
            TaskState::Running if rng.gen_bool(0.2) => {
                Some([TaskState::Failed, TaskState::Complete][rng.gen_range(0..2)])
            }
            _ => None,
        };
        if let Some(state) = next.filter(|_| rng.gen_bool(0.7)) {
            t.task.status.state = state;
            t.task.status.timestamp = now;
            if t.task.node_id.is_empty() && t.task.slot > 0 {
                t.task.node_id = format!("n{}", rng.gen_range(0..4));
            }
        }
    }
}

#[test]
fn no_slot_ever_has_two_tasks_wanted_running() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for case in 0..400 {
        let mut services = random_services(&mut rng);
        let nodes = random_nodes(&mut rng);
        let mut tasks = random_tasks(&mut rng, &services);
        let mut now = 20;
        let mut n = 0;
        for round in 0..8 {
            let mut ids = || {
                n += 1;
                format!("new{n}")
            };
            let p = plan(&services, &tasks, &nodes, at(now), &mut ids);
            if let Some(w) = p.wake_at {
                assert!(w > at(now), "case {case} round {round}: wake in the past");
            }
            apply(&mut tasks, &mut services, &p, at(now));
            assert_eq!(doubly_wanted(&tasks), vec![], "case {case} round {round}: {:#?}", summary(&p));
            for s in &services {
                if let ServiceMode::Replicated(r) = s.spec.mode() {
                    let occupied: BTreeSet<u64> = tasks
                        .iter()
                        .filter(|t| t.task.service_id == s.id && !t.released() && t.task.slot > 0)
                        .map(|t| t.task.slot)
                        .collect();
                    assert_eq!(
                        occupied.len() as u64,
                        r.replicas.unwrap_or(1),
                        "case {case} round {round}: slots of {}",
                        s.id
                    );
                }
            }
            let known: BTreeSet<&str> = services.iter().map(|s| s.id.as_str()).collect();
            assert!(
                tasks.iter().all(|t| known.contains(t.task.service_id.as_str()) || !t.wanted()),
                "case {case}: a removed service's task is still wanted"
            );
            now += rng.gen_range(0..4);
            progress(&mut rng, &mut tasks, at(now));
        }
    }
}
