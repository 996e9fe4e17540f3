//! The swarm-mode API objects (`/services`, `/tasks`, `/nodes`), in the JSON
//! shapes of Engine API 1.41+.
//!
//! What the client sends (`ServiceSpec` and everything in it) keeps fields
//! this manager does not read in `extra`, so `docker service inspect` shows
//! back what the CLI sent. Optional fields stay `None` when absent rather
//! than being filled with defaults: the defaults live in the accessors the
//! planner and the container mapping use.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use super::timestamp::Timestamp;

/// String labels, as everywhere in the API.
pub type Labels = BTreeMap<String, String>;

/// Fields kept as sent but not interpreted.
pub type Extra = Map<String, Value>;

/// swarmkit's default delay between restarts of a task.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);
/// swarmkit's default time an updated task is watched for failure.
pub const DEFAULT_UPDATE_MONITOR: Duration = Duration::from_secs(5);

/// Why a spec cannot be run on this cluster.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("service mode {0} is not supported on classic engines")]
    UnsupportedMode(&'static str),
    #[error("ContainerSpec is required: only container tasks run on classic engines")]
    NoContainerSpec,
    #[error("ContainerSpec.Image is required")]
    NoImage,
}

/// `Version`: the store index of an object's last write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ObjectVersion {
    #[serde(default)]
    pub index: u64,
}

fn nanos(value: Option<i64>) -> Option<Duration> {
    value.map(|n| Duration::from_nanos(u64::try_from(n).unwrap_or(0)))
}

// ---------------------------------------------------------------- services

/// `ServiceSpec`: what `docker service create/update` sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(default)]
    pub task_template: TaskSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServiceMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    /// Deprecated top-level networks; kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<NetworkAttachment>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spec: Option<EndpointSpec>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ServiceSpec {
    /// The mode, swarm mode's default (one replica) when absent.
    pub fn mode(&self) -> ServiceMode {
        self.mode.clone().unwrap_or(ServiceMode::Replicated(Replicated { replicas: Some(1), extra: Extra::new() }))
    }

    /// Refuses what the planner cannot run: job modes, plugin or attachment
    /// tasks, a missing image.
    pub fn validate(&self) -> Result<(), SpecError> {
        match self.mode() {
            ServiceMode::ReplicatedJob(_) => return Err(SpecError::UnsupportedMode("ReplicatedJob")),
            ServiceMode::GlobalJob(_) => return Err(SpecError::UnsupportedMode("GlobalJob")),
            ServiceMode::Replicated(_) | ServiceMode::Global(_) => {}
        }
        let container = self.task_template.container_spec.as_ref().ok_or(SpecError::NoContainerSpec)?;
        if container.image.is_empty() {
            return Err(SpecError::NoImage);
        }
        Ok(())
    }

    /// The update settings, or the rollback settings while rolling back;
    /// swarmkit's defaults for whatever is absent.
    pub fn update_settings(&self, rolling_back: bool) -> UpdateConfig {
        let config = if rolling_back { &self.rollback_config } else { &self.update_config };
        config.clone().unwrap_or_default()
    }

    /// Published ports, as sent.
    pub fn ports(&self) -> &[PortConfig] {
        self.endpoint_spec.as_ref().and_then(|e| e.ports.as_deref()).unwrap_or(&[])
    }
}

/// `Mode`: exactly one of its members is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServiceMode {
    Replicated(Replicated),
    Global(Empty),
    ReplicatedJob(Empty),
    GlobalJob(Empty),
}

/// `Mode.Replicated`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Replicated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An object whose members are only kept (`Mode.Global`, the job modes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {
    #[serde(flatten)]
    pub extra: Extra,
}

/// `TaskTemplate` (`TaskSpec`): what every task of the service runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_spec: Option<ContainerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<NetworkAttachment>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<LogDriver>,
    /// A counter: changing it alone makes every task out of date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_update: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl TaskSpec {
    /// The restart policy with swarmkit's defaults (condition `any`, 5 s).
    pub fn restart(&self) -> RestartPolicy {
        self.restart_policy.clone().unwrap_or_default()
    }

    /// The placement constraints, as sent.
    pub fn constraints(&self) -> &[String] {
        self.placement.as_ref().and_then(|p| p.constraints.as_deref()).unwrap_or(&[])
    }
}

/// `ContainerSpec`. Fields the container mapping uses are typed; the rest
/// (secrets, configs, privileges, ...) are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpec {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    /// The entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The command's arguments (`Cmd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(rename = "TTY", default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_stdin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// `Mount` objects; the same shape as `HostConfig.Mounts`, so relayed as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<i64>,
    /// `HealthConfig`; the same shape as the container's `Healthcheck`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<Value>,
    /// `IP hostname [alias...]` lines (the hosts file's order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    #[serde(rename = "DNSConfig", default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability_add: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability_drop: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ContainerSpec.DNSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Resources>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Limits` / `Reservations` (and a node's `Description.Resources`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(rename = "NanoCPUs", default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    #[serde(rename = "MemoryBytes", default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `RestartPolicy.Condition`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    #[default]
    Any,
}

/// `RestartPolicy`. Applied by the reconciler, never by dockerd.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<RestartCondition>,
    /// Nanoseconds between a task ending and its replacement starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<i64>,
    /// Restarts before giving up; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    /// Nanoseconds over which restarts are counted; 0 means forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl RestartPolicy {
    pub fn condition(&self) -> RestartCondition {
        self.condition.unwrap_or_default()
    }

    pub fn delay(&self) -> Duration {
        nanos(self.delay).unwrap_or(DEFAULT_RESTART_DELAY)
    }

    pub fn max_attempts(&self) -> u64 {
        self.max_attempts.unwrap_or(0)
    }

    /// `None` for "count every restart".
    pub fn window(&self) -> Option<Duration> {
        nanos(self.window).filter(|w| !w.is_zero())
    }
}

/// `Placement`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Placement {
    /// `node.hostname==x`, `node.labels.k!=v`, ...; see `constraints.rs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `NetworkAttachmentConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    #[serde(default)]
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `LogDriver`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogDriver {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Labels>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `UpdateConfig.FailureAction`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}

/// `UpdateConfig.Order`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

/// `UpdateConfig` and `RollbackConfig` (the same shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfig {
    /// Tasks replaced at a time; 0 means all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u64>,
    /// Nanoseconds between one batch finishing and the next starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<FailureAction>,
    /// Nanoseconds an updated task is watched for failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<i64>,
    /// Fraction of tasks that may fail before the failure action applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<UpdateOrder>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl UpdateConfig {
    /// swarmkit's default parallelism is 1 when no config was sent.
    pub fn parallelism(&self) -> u64 {
        self.parallelism.unwrap_or(1)
    }

    pub fn delay(&self) -> Duration {
        nanos(self.delay).unwrap_or(Duration::ZERO)
    }

    pub fn failure_action(&self) -> FailureAction {
        self.failure_action.unwrap_or_default()
    }

    pub fn monitor(&self) -> Duration {
        nanos(self.monitor).unwrap_or(DEFAULT_UPDATE_MONITOR)
    }

    pub fn max_failure_ratio(&self) -> f64 {
        self.max_failure_ratio.filter(|r| r.is_finite()).unwrap_or(0.0).clamp(0.0, 1.0)
    }
}

/// `EndpointSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpec {
    /// `vip` or `dnsrr`; both resolve by the service name's aliases here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortConfig>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `EndpointPortConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `tcp` (default), `udp`, `sctp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default)]
    pub target_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_port: Option<u16>,
    /// `ingress` (default) or `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_mode: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl PortConfig {
    pub fn protocol(&self) -> &str {
        self.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("tcp")
    }
}

/// `Service`: the spec plus what the manager keeps about it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub version: ObjectVersion,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub spec: ServiceSpec,
    /// The spec before the last update; what a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// Present once the spec has been updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Service.Endpoint`: the ports as applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<EndpointSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
    #[serde(rename = "VirtualIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_ips: Vec<Value>,
}

/// `UpdateStatus.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    /// A rolling replacement is under way (forward or back).
    pub fn in_progress(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    pub fn is_paused(self) -> bool {
        matches!(self, UpdateState::Paused | UpdateState::RollbackPaused)
    }

    pub fn is_rollback(self) -> bool {
        matches!(self, UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted)
    }
}

/// `Service.UpdateStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    pub state: UpdateState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    #[serde(default)]
    pub message: String,
}

// ------------------------------------------------------------------- tasks

/// `TaskState`, in lifecycle order (the derive's order is used: a state is
/// "before running" when it compares less than `Running`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    New,
    Allocated,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Ready,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

impl TaskState {
    /// The task's container has ended (or never will run).
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }

    /// Ended on its own rather than stopped by the manager: what the
    /// restart policy applies to.
    pub fn ended_by_itself(self) -> bool {
        matches!(self, TaskState::Complete | TaskState::Failed | TaskState::Rejected)
    }

    /// Counts as a failure for the restart condition `on-failure` and for
    /// rolling updates.
    pub fn is_failure(self) -> bool {
        matches!(self, TaskState::Failed | TaskState::Rejected)
    }
}

/// `Task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub version: ObjectVersion,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    /// The service's `TaskTemplate` when the task was created.
    pub spec: TaskSpec,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Replicated services: 1, 2, ...; global services: 0 (the node is the slot).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slot: u64,
    /// The engine the task's container is on; empty until placed.
    #[serde(rename = "NodeID", default, skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    pub status: TaskStatus,
    pub desired_state: TaskState,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where a task belongs in its service: the replica number, or for a
/// global service the node. At most one task per slot is wanted running.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotKey {
    Replica(u64),
    Node(String),
}

impl Task {
    /// The task's slot: its replica number when it has one, else its node.
    pub fn slot_key(&self) -> SlotKey {
        if self.slot > 0 {
            SlotKey::Replica(self.slot)
        } else {
            SlotKey::Node(self.node_id.clone())
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `Task.Status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    /// When `state` was reached.
    pub timestamp: Timestamp,
    pub state: TaskState,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_status: Option<PortStatus>,
}

/// `Task.Status.ContainerStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    #[serde(rename = "ContainerID", default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(rename = "PID", default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    #[serde(rename = "ExitCode", default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

/// `Task.Status.PortStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
}

// ------------------------------------------------------------------- nodes

/// `NodeSpec.Role`. Every classic engine is a worker: the managers are
/// `swarm manage` processes, not engines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    #[default]
    Worker,
    Manager,
}

/// `NodeSpec.Availability`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// New tasks may be placed here.
    #[default]
    Active,
    /// Running tasks stay; no new ones.
    Pause,
    /// Tasks are moved away; no new ones.
    Drain,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }

    /// Whether new containers (tasks, and plain `docker run`s) may be placed on the node.
    pub fn takes_new_containers(self) -> bool {
        self == Availability::Active
    }
}

/// `NodeStatus.State`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Unknown,
    Down,
    Ready,
    Disconnected,
}

/// `Node`: an engine as `docker node ls/inspect` show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub version: ObjectVersion,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default)]
    pub description: NodeDescription,
    #[serde(default)]
    pub status: NodeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_status: Option<ManagerStatus>,
}

/// `NodeSpec`: what `docker node update` changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub role: NodeRole,
    #[serde(default)]
    pub availability: Availability,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `NodeDescription`: what the engine reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeDescription {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub platform: Platform,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub engine: EngineDescription,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Platform`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(rename = "Architecture", default)]
    pub architecture: String,
    #[serde(rename = "OS", default)]
    pub os: String,
}

/// `EngineDescription`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EngineDescription {
    #[serde(default)]
    pub engine_version: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `NodeStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatus {
    #[serde(default)]
    pub state: NodeState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub addr: String,
}

/// `ManagerStatus`; engines are never managers, so the lead decides whether
/// to show one at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerStatus {
    #[serde(default)]
    pub leader: bool,
    #[serde(default)]
    pub reachability: String,
    #[serde(default)]
    pub addr: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `Service` example of the Engine API reference (v1.41), plus
    /// fields the CLI sends that the manager does not read.
    fn service_sample() -> Value {
        json!({
            "ID": "9mnpnzenvg8p8tdbtq4wvbkcz",
            "Version": {"Index": 19},
            "CreatedAt": "2016-06-07T21:05:51.880065305Z",
            "UpdatedAt": "2016-06-07T21:07:29.962229872Z",
            "Spec": {
                "Name": "hopeful_cori",
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": "redis",
                        "Secrets": [{"SecretName": "s", "SecretID": "x", "File": {"Name": "s", "UID": "0", "GID": "0", "Mode": 292}}],
                        "Isolation": "default"
                    },
                    "Resources": {"Limits": {}, "Reservations": {}},
                    "RestartPolicy": {"Condition": "any", "MaxAttempts": 0},
                    "Placement": {"Platforms": [{"Architecture": "amd64", "OS": "linux"}]},
                    "ForceUpdate": 0,
                    "Runtime": "container"
                },
                "Mode": {"Replicated": {"Replicas": 1}},
                "UpdateConfig": {
                    "Parallelism": 1, "Delay": 1_000_000_000i64, "FailureAction": "pause",
                    "Monitor": 15_000_000_000i64, "MaxFailureRatio": 0.15
                },
                "RollbackConfig": {
                    "Parallelism": 1, "Delay": 1_000_000_000i64, "FailureAction": "pause",
                    "Monitor": 15_000_000_000i64, "MaxFailureRatio": 0.15
                },
                "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 6379, "PublishedPort": 30001}]}
            },
            "Endpoint": {
                "Spec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 6379, "PublishedPort": 30001}]},
                "Ports": [{"Protocol": "tcp", "TargetPort": 6379, "PublishedPort": 30001}],
                "VirtualIPs": [{"NetworkID": "4qvuz4ko70xaltuqbt8956gd1", "Addr": "10.255.0.2/16"}]
            },
            "UpdateStatus": {"State": "paused", "StartedAt": "2016-06-07T21:07:29Z", "Message": "update paused"}
        })
    }

    #[test]
    fn service_round_trips_with_unknown_fields() {
        let sample = service_sample();
        let service: Service = serde_json::from_value(sample.clone()).unwrap();
        assert_eq!(service.id, "9mnpnzenvg8p8tdbtq4wvbkcz");
        assert_eq!(service.version.index, 19);
        assert_eq!(service.spec.mode(), ServiceMode::Replicated(Replicated { replicas: Some(1), extra: Extra::new() }));
        let update = service.spec.update_settings(false);
        assert_eq!(update.delay(), Duration::from_secs(1));
        assert_eq!(update.monitor(), Duration::from_secs(15));
        assert_eq!(update.failure_action(), FailureAction::Pause);
        assert_eq!(service.spec.ports()[0].published_port, Some(30001));
        assert_eq!(service.spec.task_template.restart().condition(), RestartCondition::Any);
        assert_eq!(service.update_status.as_ref().map(|s| s.state), Some(UpdateState::Paused));
        let container = service.spec.task_template.container_spec.as_ref().unwrap();
        assert!(container.extra.contains_key("Secrets"));
        assert_eq!(serde_json::to_value(&service).unwrap(), sample);
    }

    #[test]
    fn what_the_cli_sends_is_shown_back_unchanged() {
        // `docker service create --name web --replicas 2 -p 8080:80 --restart-condition on-failure
        //  --update-order start-first --mount type=volume,src=data,dst=/data nginx`
        let spec = json!({
            "Name": "web",
            "Labels": {},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "nginx:latest@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                    "Init": false,
                    "Mounts": [{"Type": "volume", "Source": "data", "Target": "/data"}],
                    "StopGracePeriod": 10_000_000_000i64,
                    "DNSConfig": {},
                    "Isolation": "default"
                },
                "Resources": {"Limits": {}, "Reservations": {}},
                "RestartPolicy": {"Condition": "on-failure", "Delay": 5_000_000_000i64, "MaxAttempts": 0},
                "Placement": {},
                "ForceUpdate": 0,
                "Runtime": "container"
            },
            "Mode": {"Replicated": {"Replicas": 2}},
            "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000i64,
                             "MaxFailureRatio": 0.5, "Order": "start-first"},
            "RollbackConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000i64,
                               "MaxFailureRatio": 0.5, "Order": "stop-first"},
            "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}
        });
        let parsed: ServiceSpec = serde_json::from_value(spec.clone()).unwrap();
        assert_eq!(parsed.validate(), Ok(()));
        assert_eq!(parsed.update_settings(false).order, Some(UpdateOrder::StartFirst));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), spec);
    }

    #[test]
    fn modes_and_validation() {
        let global: ServiceSpec = serde_json::from_value(
            json!({"Name": "g", "TaskTemplate": {"ContainerSpec": {"Image": "x"}}, "Mode": {"Global": {}}}),
        )
        .unwrap();
        assert!(matches!(global.mode(), ServiceMode::Global(_)));
        assert_eq!(serde_json::to_value(&global).unwrap()["Mode"], json!({"Global": {}}));
        let job: ServiceSpec = serde_json::from_value(json!({"TaskTemplate": {"ContainerSpec": {"Image": "x"}},
            "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 3}}}))
        .unwrap();
        assert_eq!(job.validate(), Err(SpecError::UnsupportedMode("ReplicatedJob")));
        assert_eq!(serde_json::to_value(&job).unwrap()["Mode"]["ReplicatedJob"]["TotalCompletions"], 3);
        let default: ServiceSpec =
            serde_json::from_value(json!({"TaskTemplate": {"ContainerSpec": {"Image": "x"}}})).unwrap();
        assert!(matches!(default.mode(), ServiceMode::Replicated(Replicated { replicas: Some(1), .. })));
        let plugin: ServiceSpec = serde_json::from_value(json!({"TaskTemplate": {"PluginSpec": {}}})).unwrap();
        assert_eq!(plugin.validate(), Err(SpecError::NoContainerSpec));
        let empty: ServiceSpec = serde_json::from_value(json!({"TaskTemplate": {"ContainerSpec": {}}})).unwrap();
        assert_eq!(empty.validate(), Err(SpecError::NoImage));
    }

    #[test]
    fn defaults_when_configs_are_absent() {
        let spec = ServiceSpec::default();
        let update = spec.update_settings(false);
        assert_eq!(
            (
                update.parallelism(),
                update.delay(),
                update.failure_action(),
                update.monitor(),
                update.max_failure_ratio()
            ),
            (1, Duration::ZERO, FailureAction::Pause, DEFAULT_UPDATE_MONITOR, 0.0)
        );
        let restart = spec.task_template.restart();
        assert_eq!(
            (restart.condition(), restart.delay(), restart.max_attempts(), restart.window()),
            (RestartCondition::Any, DEFAULT_RESTART_DELAY, 0, None)
        );
    }

    /// The `Task` example of the Engine API reference.
    #[test]
    fn task_sample_round_trips() {
        let sample = json!({
            "ID": "0kzzo1i0y4jz6027t0k7aezc7",
            "Version": {"Index": 71},
            "CreatedAt": "2016-06-07T21:07:31.171892745Z",
            "UpdatedAt": "2016-06-07T21:07:31.376370513Z",
            "Labels": {},
            "Spec": {
                "ContainerSpec": {"Image": "redis"},
                "Resources": {"Limits": {}, "Reservations": {}},
                "RestartPolicy": {"Condition": "any", "MaxAttempts": 0},
                "Placement": {}
            },
            "ServiceID": "9mnpnzenvg8p8tdbtq4wvbkcz",
            "Slot": 1,
            "NodeID": "60gvrl6tm78dmak4yl7srz94v",
            "Status": {
                "Timestamp": "2016-06-07T21:07:31.290032978Z",
                "State": "running",
                "Message": "started",
                "ContainerStatus": {
                    "ContainerID": "e5d62702a1b48d01c3e02ca1e0212a250801fa8d67caca0b6f35919ebc12f035",
                    "PID": 677
                }
            },
            "DesiredState": "running",
            "NetworksAttachments": [{"Network": {"ID": "4qvuz4ko70xaltuqbt8956gd1"}, "Addresses": ["10.255.0.10/16"]}]
        });
        let task: Task = serde_json::from_value(sample.clone()).unwrap();
        assert_eq!(task.status.state, TaskState::Running);
        assert_eq!(task.slot_key(), SlotKey::Replica(1));
        assert_eq!(task.status.container_status.as_ref().and_then(|c| c.pid), Some(677));
        assert_eq!(serde_json::to_value(&task).unwrap(), sample);
    }

    #[test]
    fn task_states_are_lowercase_and_ordered() {
        let all = [
            "new",
            "allocated",
            "pending",
            "assigned",
            "accepted",
            "preparing",
            "ready",
            "starting",
            "running",
            "complete",
            "shutdown",
            "failed",
            "rejected",
            "remove",
            "orphaned",
        ];
        for name in all {
            let state: TaskState = serde_json::from_value(json!(name)).unwrap();
            assert_eq!(serde_json::to_value(state).unwrap(), json!(name));
            assert_eq!(
                state.is_terminal(),
                all.iter().position(|n| *n == name) > all.iter().position(|n| *n == "running")
            );
        }
        assert!(TaskState::Failed.ended_by_itself() && !TaskState::Shutdown.ended_by_itself());
        assert!(TaskState::Rejected.is_failure() && !TaskState::Complete.is_failure());
    }

    /// The `Node` example of the Engine API reference.
    #[test]
    fn node_sample_round_trips() {
        let sample = json!({
            "ID": "24ifsmvkjbyhk",
            "Version": {"Index": 373531},
            "CreatedAt": "2016-08-18T10:44:24.496525531Z",
            "UpdatedAt": "2017-08-09T07:09:37.632105588Z",
            "Spec": {"Availability": "active", "Name": "node-name", "Role": "manager", "Labels": {"foo": "bar"}},
            "Description": {
                "Hostname": "bf3067039e47",
                "Platform": {"Architecture": "x86_64", "OS": "linux"},
                "Resources": {"NanoCPUs": 4_000_000_000i64, "MemoryBytes": 8_272_408_576i64},
                "Engine": {
                    "EngineVersion": "17.06.0",
                    "Labels": {"foo": "bar"},
                    "Plugins": [{"Type": "Log", "Name": "awslogs"}]
                },
                "TLSInfo": {"TrustRoot": "-----BEGIN CERTIFICATE-----\n"}
            },
            "Status": {"State": "ready", "Message": "", "Addr": "172.17.0.2"},
            "ManagerStatus": {"Leader": true, "Reachability": "reachable", "Addr": "10.0.0.46:2377"}
        });
        let node: Node = serde_json::from_value(sample.clone()).unwrap();
        assert_eq!(node.spec.availability, Availability::Active);
        assert_eq!(node.spec.role, NodeRole::Manager);
        assert_eq!(node.status.state, NodeState::Ready);
        assert_eq!(node.description.resources.nano_cpus, Some(4_000_000_000));
        assert_eq!(serde_json::to_value(&node).unwrap(), sample);
        for (text, a) in [("pause", Availability::Pause), ("drain", Availability::Drain)] {
            assert_eq!(serde_json::from_value::<Availability>(json!(text)).unwrap(), a);
        }
        assert_eq!(serde_json::from_value::<NodeState>(json!("down")).unwrap(), NodeState::Down);
    }

    #[test]
    fn bad_enums_are_refused() {
        assert!(serde_json::from_value::<RestartPolicy>(json!({"Condition": "sometimes"})).is_err());
        assert!(serde_json::from_value::<UpdateConfig>(json!({"FailureAction": "explode"})).is_err());
        assert!(serde_json::from_value::<ServiceSpec>(json!({"Mode": {"Sometimes": {}}})).is_err());
    }
}
