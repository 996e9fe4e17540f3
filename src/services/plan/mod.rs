//! The reconciliation planner: from the services' desired state, the task
//! records and the nodes, the actions that bring the cluster closer to it.
//!
//! Pure: no I/O and no clock (`now` is an argument, new IDs come from the
//! caller), so the reconciler on the primary runs it, applies the actions in
//! order, and runs it again when something changes or at [`Plan::wake_at`].
//!
//! Rules, per service:
//! - **Slots.** A replicated service's tasks belong to slots `1, 2, ...`; a
//!   global service's to nodes. A slot is *occupied* while it holds a task
//!   whose desired state is not `remove`. The invariant: after the actions
//!   are applied, no slot holds two tasks wanted running (desired state
//!   `running`); extra ones found are stopped (`StopReason::Duplicate`).
//! - **Scale.** More occupied slots than replicas: slots whose newest task is
//!   not live go first, then the newest tasks; all tasks of a released slot
//!   get desired state `remove`. Fewer: new tasks in the lowest free slots.
//! - **Nodes.** A replicated task on a node that is down, unknown or drained
//!   is replaced (placed anew). A global service runs one task on each
//!   ready, active node its constraints allow; a drained node or one the
//!   constraints no longer allow has its tasks stopped; a paused node keeps
//!   its task but gets no new one; a down node's task is left alone.
//! - **Restarts.** A task that ended by itself (complete, failed, rejected)
//!   is marked shut down and, per its restart policy (condition, `Delay`
//!   after it ended, `MaxAttempts` within `Window` before it ended),
//!   replaced; a task the manager stopped is replaced at once.
//! - **Rolling updates** (`update.rs`): tasks whose spec or published ports
//!   differ from the service's are replaced in batches.
//! - **History.** Ended tasks beyond [`TASK_HISTORY_LIMIT`] per slot, and
//!   released tasks that have ended, are deleted.
//!
//! `UpdateConfig.Order` `start-first` is accepted and shown back but runs as
//! `stop-first`: starting the new task before stopping the old would put two
//! tasks wanted running in one slot.

mod restart;
mod update;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::constraints::node_matches;
use super::labels::task_name;
use super::model::{
    Availability, Labels, PortConfig, Service, ServiceMode, ServiceSpec, SlotKey, Task, TaskState, TaskStatus,
    UpdateStatus,
};
use super::timestamp::Timestamp;
use restart::Restart;

/// Ended tasks kept per slot (swarm mode's default `--task-history-limit`);
/// more when the restart policy counts more attempts.
pub const TASK_HISTORY_LIMIT: usize = 5;

/// What the planner needs to know of an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Engine ID: what a task's `NodeID` and `node.id==` hold.
    pub id: String,
    /// Engine name (host name): what `node.hostname==` matches.
    pub name: String,
    /// The engine is reachable and healthy (node state `ready`).
    pub ready: bool,
    pub availability: Availability,
    /// Engine labels (with `ostype` and the other labels the manager adds),
    /// overlaid with the node's own labels.
    pub labels: Labels,
}

impl NodeView {
    /// A ready, active node without labels.
    pub fn new(id: &str, name: &str) -> NodeView {
        NodeView {
            id: id.to_string(),
            name: name.to_string(),
            ready: true,
            availability: Availability::Active,
            labels: Labels::new(),
        }
    }

    /// Whether new tasks may be placed here.
    pub fn takes_new_tasks(&self) -> bool {
        self.ready && self.availability == Availability::Active
    }
}

/// The names of the engines that take no new tasks: what the container
/// mapping excludes with `constraint:node!=`.
pub fn avoided_nodes(nodes: &[NodeView]) -> Vec<&str> {
    nodes.iter().filter(|n| !n.takes_new_tasks()).map(|n| n.name.as_str()).collect()
}

/// A task as the store keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskRecord {
    pub task: Task,
    /// The service's published ports when the task was created: a change
    /// makes the task out of date like a change of its spec.
    pub ports: Vec<PortConfig>,
}

impl TaskRecord {
    /// Whether the task runs what `spec` asks for now.
    pub fn is_current(&self, spec: &ServiceSpec) -> bool {
        self.task.spec == spec.task_template && self.ports == spec.ports()
    }

    /// Desired state `running` (or before it).
    pub fn wanted(&self) -> bool {
        self.task.desired_state <= TaskState::Running
    }

    /// Wanted running and not ended.
    pub fn live(&self) -> bool {
        self.wanted() && !self.task.status.state.is_terminal()
    }

    /// Desired state `remove`: its slot was given up.
    pub fn released(&self) -> bool {
        self.task.desired_state >= TaskState::Remove
    }

    fn order_key(&self) -> (Timestamp, &str) {
        (self.task.created_at, self.task.id.as_str())
    }
}

/// Why a task is stopped; decides its new desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its slot is no longer wanted.
    ScaledDown,
    /// Its service was removed.
    ServiceRemoved,
    /// Its global service's node left the cluster.
    NodeGone,
    /// It has no valid slot in its service.
    NoSlot,
    /// Its node is down; replaced elsewhere.
    NodeDown,
    /// Its node is drained.
    NodeDrained,
    /// Its global service's constraints no longer allow its node.
    ConstraintsUnmet,
    /// Replaced by a rolling update.
    Updated,
    /// Replaced by a rollback.
    RolledBack,
    /// It ended while wanted running (bookkeeping: nothing left to stop).
    Ended,
    /// Another task of its slot is newer.
    Duplicate,
}

impl StopReason {
    /// `remove` when the slot is given up, else `shutdown`.
    pub fn desired_state(self) -> TaskState {
        match self {
            StopReason::ScaledDown | StopReason::ServiceRemoved | StopReason::NodeGone | StopReason::NoSlot => {
                TaskState::Remove
            }
            _ => TaskState::Shutdown,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::ScaledDown => "scaled down",
            StopReason::ServiceRemoved => "service removed",
            StopReason::NodeGone => "node left the cluster",
            StopReason::NoSlot => "task has no slot in its service",
            StopReason::NodeDown => "node is down",
            StopReason::NodeDrained => "node is drained",
            StopReason::ConstraintsUnmet => "node no longer meets the placement constraints",
            StopReason::Updated => "replaced by a service update",
            StopReason::RolledBack => "replaced by a service rollback",
            StopReason::Ended => "task ended",
            StopReason::Duplicate => "another task runs in its slot",
        })
    }
}

/// One step for the reconciler, applied in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Store the new task (state `new`, desired `running`), then create and
    /// start its container (see `labels::task_container`).
    StartTask { record: Box<TaskRecord>, replaces: Option<String> },
    /// Set the task's desired state to `reason.desired_state()` and stop its
    /// container if it still runs.
    StopTask { task_id: String, reason: StopReason },
    /// Remove the task's container if any and forget the task.
    DeleteTask { task_id: String },
    /// Store the service's new `UpdateStatus`.
    SetUpdateStatus { service_id: String, status: UpdateStatus },
    /// Swap the service's `Spec` and `PreviousSpec` (an update failed).
    Rollback { service_id: String },
}

/// The planner's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The earliest instant at which planning again would act (a restart
    /// delay or an update delay running out); `None` when only a change
    /// would.
    pub wake_at: Option<Timestamp>,
}

/// Plans the actions for `services` given the stored `tasks` and `nodes`;
/// `new_id` gives each new task its ID (`id::new_id` in production).
pub fn plan(
    services: &[Service],
    tasks: &[TaskRecord],
    nodes: &[NodeView],
    now: Timestamp,
    new_id: &mut dyn FnMut() -> String,
) -> Plan {
    let mut planner =
        Planner { now, nodes: nodes.iter().map(|n| (n.id.as_str(), n)).collect(), new_id, out: Plan::default() };
    let known: BTreeSet<&str> = services.iter().map(|s| s.id.as_str()).collect();
    let mut by_service: BTreeMap<&str, Vec<&TaskRecord>> = BTreeMap::new();
    for t in tasks {
        if t.released() {
            if t.task.status.state.is_terminal() {
                planner.delete(t);
            }
        } else if !known.contains(t.task.service_id.as_str()) {
            planner.stop(t, StopReason::ServiceRemoved);
        } else {
            by_service.entry(t.task.service_id.as_str()).or_default().push(t);
        }
    }
    for service in services {
        let tasks = by_service.remove(service.id.as_str()).unwrap_or_default();
        // The API refuses specs that fail validation; one in the store is
        // left as it is rather than guessed at.
        if service.spec.validate().is_ok() {
            planner.service(service, tasks);
        }
    }
    planner.out
}

/// One planning pass: the inputs and the plan being built.
struct Planner<'a> {
    now: Timestamp,
    /// The nodes by ID, in ID order.
    nodes: BTreeMap<&'a str, &'a NodeView>,
    new_id: &'a mut dyn FnMut() -> String,
    out: Plan,
}

impl<'a> Planner<'a> {
    fn service<'t>(&mut self, service: &Service, tasks: Vec<&'t TaskRecord>) {
        let limit = TASK_HISTORY_LIMIT.max(self.history_needed(service));
        let mut slots: BTreeMap<SlotKey, Vec<&'t TaskRecord>> = BTreeMap::new();
        for t in tasks {
            slots.entry(t.task.slot_key()).or_default().push(t);
        }
        for tasks in slots.values_mut() {
            tasks.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
            let excess = tasks.len().saturating_sub(limit);
            let (old, _) = tasks.split_at(excess);
            let forget: Vec<&TaskRecord> =
                old.iter().copied().filter(|t| !t.wanted() && t.task.status.state.is_terminal()).collect();
            for t in &forget {
                self.delete(t);
            }
            tasks.retain(|t| !forget.iter().any(|f| f.task.id == t.task.id));
        }
        let all: Vec<&TaskRecord> = slots.values().flatten().copied().collect();
        let first_action = self.out.actions.len();
        let (dirty, total) = match service.spec.mode() {
            ServiceMode::Global(_) => self.global(service, slots),
            ServiceMode::Replicated(r) => self.replicated(service, slots, r.replicas.unwrap_or(1)),
            // Refused by `validate`.
            ServiceMode::ReplicatedJob(_) | ServiceMode::GlobalJob(_) => return,
        };
        // A task started just now (a restart, a new slot) is part of the
        // batch in flight even though the store does not hold it yet.
        let starting = self.out.actions[first_action..].iter().any(|a| matches!(a, Action::StartTask { .. }));
        update::plan_update(self, service, &all, dirty, total, starting);
    }

    /// Tasks a slot must keep for the restart policy to count its attempts.
    fn history_needed(&self, service: &Service) -> usize {
        let attempts = service.spec.task_template.restart().max_attempts();
        usize::try_from(attempts).unwrap_or(usize::MAX).saturating_add(1)
    }

    /// Returns the live, out-of-date tasks (for the update) and the number
    /// of slots.
    fn replicated<'t>(
        &mut self,
        service: &Service,
        slots: BTreeMap<SlotKey, Vec<&'t TaskRecord>>,
        replicas: u64,
    ) -> (Vec<(SlotKey, &'t TaskRecord)>, usize) {
        let mut occupied: Vec<(u64, Vec<&'t TaskRecord>)> = Vec::new();
        for (key, tasks) in slots {
            match key {
                SlotKey::Replica(n) => occupied.push((n, tasks)),
                SlotKey::Node(_) => tasks.iter().for_each(|t| self.stop(t, StopReason::NoSlot)),
            }
        }
        let wanted = usize::try_from(replicas).unwrap_or(usize::MAX);
        if occupied.len() > wanted {
            // Not-live slots first, then the newest tasks.
            occupied.sort_by(|(a_slot, a), (b_slot, b)| {
                let (a_last, b_last) = (a[a.len() - 1], b[b.len() - 1]);
                (a_last.live(), std::cmp::Reverse(a_last.order_key()), std::cmp::Reverse(*a_slot)).cmp(&(
                    b_last.live(),
                    std::cmp::Reverse(b_last.order_key()),
                    std::cmp::Reverse(*b_slot),
                ))
            });
            let released: Vec<_> = occupied.drain(..occupied.len() - wanted).collect();
            for (_, tasks) in released {
                tasks.iter().for_each(|t| self.stop(t, StopReason::ScaledDown));
            }
            occupied.sort_by_key(|(slot, _)| *slot);
        }
        let mut dirty = Vec::new();
        for (slot, tasks) in &occupied {
            let key = SlotKey::Replica(*slot);
            if let Some(t) = self.slot(service, &key, tasks, true, true) {
                dirty.push((key, t));
            }
        }
        let used: BTreeSet<u64> = occupied.iter().map(|(slot, _)| *slot).collect();
        let missing = wanted.saturating_sub(occupied.len());
        for slot in (1..).filter(|s| !used.contains(s)).take(missing) {
            self.start(service, SlotKey::Replica(slot), None);
        }
        (dirty, wanted)
    }

    /// See [`Planner::replicated`].
    fn global<'t>(
        &mut self,
        service: &Service,
        mut slots: BTreeMap<SlotKey, Vec<&'t TaskRecord>>,
    ) -> (Vec<(SlotKey, &'t TaskRecord)>, usize) {
        let constraints = service.spec.task_template.constraints();
        let nodes: Vec<&NodeView> = self.nodes.values().copied().collect();
        let (mut dirty, mut total) = (Vec::new(), 0);
        for node in nodes {
            let key = SlotKey::Node(node.id.clone());
            let tasks = slots.remove(&key).unwrap_or_default();
            let fits = node_matches(constraints, node);
            if !node.ready {
                continue;
            }
            if node.availability == Availability::Drain || !fits {
                let reason = if fits { StopReason::NodeDrained } else { StopReason::ConstraintsUnmet };
                tasks.iter().filter(|t| t.wanted()).for_each(|t| self.stop(t, reason));
                continue;
            }
            let active = node.availability == Availability::Active;
            total += usize::from(active);
            if tasks.is_empty() {
                if active {
                    self.start(service, key, None);
                }
            } else if let Some(t) = self.slot(service, &key, &tasks, active, false) {
                if active {
                    dirty.push((key, t));
                }
            }
        }
        // Tasks on nodes that left, or on none at all.
        for tasks in slots.values() {
            tasks.iter().for_each(|t| self.stop(t, StopReason::NodeGone));
        }
        (dirty, total)
    }

    /// Reconciles one occupied slot (`tasks` oldest first, none released).
    /// Returns its task when it is live but out of date, for the update.
    fn slot<'t>(
        &mut self,
        service: &Service,
        key: &SlotKey,
        tasks: &[&'t TaskRecord],
        can_start: bool,
        check_node: bool,
    ) -> Option<&'t TaskRecord> {
        let (&latest, older) = tasks.split_last()?;
        for t in older.iter().filter(|t| t.wanted()) {
            self.stop(t, StopReason::Duplicate);
        }
        if latest.live() {
            if check_node && !latest.task.node_id.is_empty() {
                let reason = match self.nodes.get(latest.task.node_id.as_str()) {
                    None => Some(StopReason::NodeDown),
                    Some(n) if !n.ready => Some(StopReason::NodeDown),
                    Some(n) if n.availability == Availability::Drain => Some(StopReason::NodeDrained),
                    Some(_) => None,
                };
                if let Some(reason) = reason {
                    self.replace(service, key, latest, reason);
                    return None;
                }
            }
            return (!latest.is_current(&service.spec)).then_some(latest);
        }
        if latest.wanted() {
            self.stop(latest, StopReason::Ended);
        }
        if latest.task.status.state.ended_by_itself() {
            match restart::decide(&service.spec.task_template.restart(), tasks, self.now) {
                Restart::Now if can_start => self.start(service, key.clone(), Some(&latest.task.id)),
                Restart::Now | Restart::Never => {}
                Restart::At(at) => self.wake(at),
            }
        } else if can_start {
            // Stopped (or being stopped) by the manager without a replacement.
            self.start(service, key.clone(), Some(&latest.task.id));
        }
        None
    }

    fn replace(&mut self, service: &Service, key: &SlotKey, old: &TaskRecord, reason: StopReason) {
        self.stop(old, reason);
        self.start(service, key.clone(), Some(&old.task.id));
    }

    fn start(&mut self, service: &Service, key: SlotKey, replaces: Option<&str>) {
        let (slot, node_id) = match key {
            SlotKey::Replica(n) => (n, String::new()),
            SlotKey::Node(id) => (0, id),
        };
        let mut task = Task {
            id: (self.new_id)(),
            version: Default::default(),
            created_at: self.now,
            updated_at: self.now,
            name: String::new(),
            labels: Labels::new(),
            spec: service.spec.task_template.clone(),
            service_id: service.id.clone(),
            slot,
            node_id,
            status: TaskStatus {
                timestamp: self.now,
                state: TaskState::New,
                message: "created".to_string(),
                err: None,
                container_status: None,
                port_status: None,
            },
            desired_state: TaskState::Running,
            extra: Default::default(),
        };
        task.name = task_name(&service.spec.name, &task);
        let record = Box::new(TaskRecord { task, ports: service.spec.ports().to_vec() });
        self.out.actions.push(Action::StartTask { record, replaces: replaces.map(str::to_string) });
    }

    fn stop(&mut self, task: &TaskRecord, reason: StopReason) {
        self.out.actions.push(Action::StopTask { task_id: task.task.id.clone(), reason });
    }

    fn delete(&mut self, task: &TaskRecord) {
        self.out.actions.push(Action::DeleteTask { task_id: task.task.id.clone() });
    }

    fn wake(&mut self, at: Timestamp) {
        self.out.wake_at = Some(self.out.wake_at.map_or(at, |w| w.min(at)));
    }
}
