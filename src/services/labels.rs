//! A task as a container, and a container back to its task.
//!
//! Conventions (swarm mode's where it has one):
//! - container name `<service>.<slot>.<task id>` for replicated services,
//!   `<service>.<node id>.<task id>` for global ones; the task's name is the
//!   same without the task ID;
//! - labels `com.docker.swarm.service.id`, `.service.name`, `.task` (empty),
//!   `.task.id`, `.task.name`, plus `com.docker.swarm.task.slot` for a
//!   replicated task and `com.docker.swarm.node.id` for a global one; the
//!   container spec's labels come first and cannot override these;
//! - the service's placement constraints become classic `constraint:`
//!   entries in `Env` (see `constraints.rs`); a global task is pinned with
//!   `constraint:node==<node id>`; nodes that take no new tasks (paused,
//!   drained) are excluded with `constraint:node!=<name>`;
//! - `HostConfig.RestartPolicy` is `no`: the reconciler applies the service's
//!   restart policy, and dockerd restarting a container behind its back
//!   would hide failures from it;
//! - resources: `Limits.NanoCPUs` → `HostConfig.NanoCpus`,
//!   `Reservations.NanoCPUs` → `HostConfig.CpuShares` as a CPU count
//!   (rounded up; the manager's `-c N` meaning, turned into the chosen
//!   engine's shares when the create is sent), `Limits.MemoryBytes` →
//!   `HostConfig.Memory`, `Reservations.MemoryBytes` →
//!   `HostConfig.MemoryReservation` (which the classic scheduler does not
//!   count: it reserves `Memory` only);
//! - every published port, ingress or host mode, becomes a host binding
//!   (`ExposedPorts` + `HostConfig.PortBindings`, an empty `HostPort` when
//!   none was given): classic engines have no routing mesh, so a published
//!   port is reachable on the engines that run a task, and the classic port
//!   filter keeps two tasks of a service off one engine;
//! - the first network is the container's `NetworkMode` with the service
//!   name as an alias (so `dnsrr` and `vip` both resolve by name, round
//!   robin); further networks are returned for the reconciler to connect
//!   after the create, since older engines accept one network per create.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use thiserror::Error;

use super::constraints::{to_classic_env, ConstraintError};
use super::model::{NetworkAttachment, Service, SlotKey, Task};

pub const SERVICE_ID_LABEL: &str = "com.docker.swarm.service.id";
pub const SERVICE_NAME_LABEL: &str = "com.docker.swarm.service.name";
pub const TASK_LABEL: &str = "com.docker.swarm.task";
pub const TASK_ID_LABEL: &str = "com.docker.swarm.task.id";
pub const TASK_NAME_LABEL: &str = "com.docker.swarm.task.name";
pub const TASK_SLOT_LABEL: &str = "com.docker.swarm.task.slot";
pub const NODE_ID_LABEL: &str = "com.docker.swarm.node.id";

/// Why a task cannot be turned into a container.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MappingError {
    #[error("task {0} has no container spec")]
    NoContainerSpec(String),
    #[error("global task {0} has no node")]
    GlobalWithoutNode(String),
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
}

/// What the reconciler sends to `Cluster::create_container` for a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskContainer {
    /// `<service>.<slot|node>.<task id>`.
    pub name: String,
    /// Docker's create body.
    pub config: Value,
    /// Networks to connect after the create (all but the first).
    pub extra_networks: Vec<NetworkAttachment>,
}

/// The task's name: `<service>.<slot>` or `<service>.<node id>`.
pub fn task_name(service_name: &str, task: &Task) -> String {
    match task.slot_key() {
        SlotKey::Replica(slot) => format!("{service_name}.{slot}"),
        SlotKey::Node(node) => format!("{service_name}.{node}"),
    }
}

/// The container's name: the task's name and its ID.
pub fn container_name(service_name: &str, task: &Task) -> String {
    format!("{}.{}", task_name(service_name, task), task.id)
}

/// The create path for a container name (`/containers/create?name=...`).
pub fn create_path(name: &str) -> String {
    format!("/containers/create?name={}", url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>())
}

/// Builds the container of `task` (whose own spec is what runs) for
/// `service`; `avoid` names the engines that take no new tasks.
pub fn task_container(service: &Service, task: &Task, avoid: &[&str]) -> Result<TaskContainer, MappingError> {
    let spec = task.spec.container_spec.as_ref().ok_or_else(|| MappingError::NoContainerSpec(task.id.clone()))?;
    let service_name = service.spec.name.as_str();
    let mut root = Map::new();
    root.insert("Image".into(), json!(spec.image));
    let mut host = Map::new();

    let mut labels: BTreeMap<String, String> = spec.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_ID_LABEL.into(), service.id.clone());
    labels.insert(SERVICE_NAME_LABEL.into(), service_name.to_string());
    labels.insert(TASK_LABEL.into(), String::new());
    labels.insert(TASK_ID_LABEL.into(), task.id.clone());
    labels.insert(TASK_NAME_LABEL.into(), task_name(service_name, task));
    let mut env = spec.env.clone().unwrap_or_default();
    env.extend(to_classic_env(task.spec.constraints())?);
    match task.slot_key() {
        SlotKey::Replica(slot) => {
            labels.insert(TASK_SLOT_LABEL.into(), slot.to_string());
        }
        SlotKey::Node(node) if node.is_empty() => return Err(MappingError::GlobalWithoutNode(task.id.clone())),
        SlotKey::Node(node) => {
            labels.insert(NODE_ID_LABEL.into(), node.clone());
            env.push(format!("constraint:node=={node}"));
        }
    }
    env.extend(avoid.iter().map(|name| format!("constraint:node!={name}")));
    root.insert("Labels".into(), json!(labels));
    if !env.is_empty() {
        root.insert("Env".into(), json!(env));
    }

    // `Command` replaces the image's entrypoint, `Args` its command.
    if let Some(command) = &spec.command {
        root.insert("Entrypoint".into(), json!(command));
    }
    if let Some(args) = &spec.args {
        root.insert("Cmd".into(), json!(args));
    }
    let put = |map: &mut Map<String, Value>, key: &str, value: Option<Value>| {
        if let Some(v) = value {
            map.insert(key.to_string(), v);
        }
    };
    put(&mut root, "Hostname", spec.hostname.clone().map(Value::from));
    put(&mut root, "WorkingDir", spec.dir.clone().map(Value::from));
    put(&mut root, "User", spec.user.clone().map(Value::from));
    put(&mut root, "Tty", spec.tty.map(Value::from));
    put(&mut root, "OpenStdin", spec.open_stdin.map(Value::from));
    put(&mut root, "StopSignal", spec.stop_signal.clone().map(Value::from));
    // Seconds, rounded up so a grace period is never shortened.
    put(
        &mut root,
        "StopTimeout",
        spec.stop_grace_period.map(|ns| Value::from((ns.max(0) as u64).div_ceil(1_000_000_000))),
    );
    put(&mut root, "Healthcheck", spec.health_check.clone());

    put(&mut host, "Mounts", spec.mounts.clone().map(Value::from));
    put(&mut host, "ReadonlyRootfs", spec.read_only.map(Value::from));
    put(&mut host, "Init", spec.init.map(Value::from));
    put(&mut host, "GroupAdd", spec.groups.clone().map(Value::from));
    put(&mut host, "CapAdd", spec.capability_add.clone().map(Value::from));
    put(&mut host, "CapDrop", spec.capability_drop.clone().map(Value::from));
    put(&mut host, "Ulimits", spec.ulimits.clone().map(Value::from));
    put(&mut host, "Sysctls", spec.sysctls.as_ref().map(|s| json!(s)));
    put(&mut host, "Isolation", spec.isolation.clone().map(Value::from));
    put(&mut host, "ExtraHosts", spec.hosts.as_deref().map(|h| Value::from(extra_hosts(h))));
    if let Some(dns) = &spec.dns_config {
        put(&mut host, "Dns", dns.nameservers.clone().map(Value::from));
        put(&mut host, "DnsSearch", dns.search.clone().map(Value::from));
        put(&mut host, "DnsOptions", dns.options.clone().map(Value::from));
    }
    if let Some(log) = &task.spec.log_driver {
        host.insert("LogConfig".into(), json!({"Type": log.name, "Config": log.options.clone().unwrap_or_default()}));
    }
    host.insert("RestartPolicy".into(), json!({"Name": "no"}));
    resources(task, &mut host);
    ports(service, &mut root, &mut host);

    let mut networks = task.spec.networks.clone().or_else(|| service.spec.networks.clone()).unwrap_or_default();
    for n in &mut networks {
        let aliases = n.aliases.get_or_insert_with(Vec::new);
        if !service_name.is_empty() && !aliases.iter().any(|a| a == service_name) {
            aliases.insert(0, service_name.to_string());
        }
    }
    let extra_networks = if networks.is_empty() { Vec::new() } else { networks.split_off(1) };
    if let Some(first) = networks.first() {
        host.insert("NetworkMode".into(), json!(first.target));
        root.insert(
            "NetworkingConfig".into(),
            json!({"EndpointsConfig": {first.target.clone(): {"Aliases": first.aliases.clone().unwrap_or_default()}}}),
        );
    }
    root.insert("HostConfig".into(), Value::Object(host));
    Ok(TaskContainer { name: container_name(service_name, task), config: Value::Object(root), extra_networks })
}

/// Swarm mode's `IP host [alias...]` lines as Docker's `host:IP` entries.
fn extra_hosts(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines {
        let mut fields = line.split_whitespace();
        let Some(ip) = fields.next() else { continue };
        out.extend(fields.map(|host| format!("{host}:{ip}")));
    }
    out
}

fn resources(task: &Task, host: &mut Map<String, Value>) {
    let Some(r) = &task.spec.resources else { return };
    if let Some(limits) = &r.limits {
        if let Some(n) = limits.nano_cpus.filter(|n| *n > 0) {
            host.insert("NanoCpus".into(), json!(n));
        }
        if let Some(m) = limits.memory_bytes.filter(|m| *m > 0) {
            host.insert("Memory".into(), json!(m));
        }
    }
    if let Some(reservations) = &r.reservations {
        if let Some(n) = reservations.nano_cpus.filter(|n| *n > 0) {
            host.insert("CpuShares".into(), json!(swarm_scheduler::cpus_from_nano(n)));
        }
        if let Some(m) = reservations.memory_bytes.filter(|m| *m > 0) {
            host.insert("MemoryReservation".into(), json!(m));
        }
    }
}

fn ports(service: &Service, root: &mut Map<String, Value>, host: &mut Map<String, Value>) {
    let mut exposed = Map::new();
    let mut bindings: Map<String, Value> = Map::new();
    for p in service.spec.ports() {
        let key = format!("{}/{}", p.target_port, p.protocol());
        exposed.insert(key.clone(), json!({}));
        let host_port = p.published_port.filter(|p| *p != 0).map(|p| p.to_string()).unwrap_or_default();
        let entry = bindings.entry(key).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(json!({"HostIp": "", "HostPort": host_port}));
        }
    }
    if !exposed.is_empty() {
        root.insert("ExposedPorts".into(), Value::Object(exposed));
        host.insert("PortBindings".into(), Value::Object(bindings));
    }
}

/// A task as found on an engine, from its container's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskIdentity {
    pub service_id: String,
    pub service_name: String,
    pub task_id: String,
    pub slot: SlotKey,
}

impl TaskIdentity {
    /// Reads the labels [`task_container`] sets; `None` for a container
    /// that is not a task (no service or task ID, no slot or node).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<TaskIdentity> {
        let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
        let slot = match (get(TASK_SLOT_LABEL), get(NODE_ID_LABEL)) {
            (Some(slot), _) => SlotKey::Replica(slot.parse().ok().filter(|s| *s > 0)?),
            (None, Some(node)) => SlotKey::Node(node),
            (None, None) => return None,
        };
        Some(TaskIdentity {
            service_id: get(SERVICE_ID_LABEL)?,
            service_name: get(SERVICE_NAME_LABEL).unwrap_or_default(),
            task_id: get(TASK_ID_LABEL)?,
            slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::model::{ServiceSpec, TaskState, TaskStatus};
    use crate::services::timestamp::Timestamp;

    fn service(spec: Value) -> Service {
        let spec: ServiceSpec = serde_json::from_value(spec).unwrap();
        Service { id: "svc0000000000000000000001".into(), spec, ..Default::default() }
    }

    fn task(service: &Service, slot: u64, node: &str) -> Task {
        Task {
            id: "task000000000000000000001".into(),
            version: Default::default(),
            created_at: Timestamp::EPOCH,
            updated_at: Timestamp::EPOCH,
            name: String::new(),
            labels: Default::default(),
            spec: service.spec.task_template.clone(),
            service_id: service.id.clone(),
            slot,
            node_id: node.into(),
            status: TaskStatus {
                timestamp: Timestamp::EPOCH,
                state: TaskState::New,
                message: String::new(),
                err: None,
                container_status: None,
                port_status: None,
            },
            desired_state: TaskState::Running,
            extra: Default::default(),
        }
    }

    fn web() -> Service {
        service(json!({
            "Name": "web",
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "nginx:alpine",
                    "Labels": {"app": "web", "com.docker.swarm.task.id": "forged"},
                    "Command": ["nginx"], "Args": ["-g", "daemon off;"],
                    "Env": ["A=1"],
                    "Mounts": [{"Type": "volume", "Source": "data", "Target": "/data"}],
                    "Hosts": ["10.0.0.1 db db.local"],
                    "StopGracePeriod": 1_500_000_000i64,
                    "DNSConfig": {"Nameservers": ["8.8.8.8"]}
                },
                "Resources": {
                    "Limits": {"NanoCPUs": 1_500_000_000i64, "MemoryBytes": 268_435_456},
                    "Reservations": {"NanoCPUs": 500_000_000, "MemoryBytes": 134_217_728}
                },
                "RestartPolicy": {"Condition": "on-failure"},
                "Placement": {"Constraints": ["node.labels.zone==east", "node.role==worker"]},
                "Networks": [{"Target": "front", "Aliases": ["www"]}, {"Target": "back"}],
                "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m"}}
            },
            "Mode": {"Replicated": {"Replicas": 2}},
            "EndpointSpec": {"Ports": [
                {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
                {"TargetPort": 53, "Protocol": "udp", "PublishMode": "host"}
            ]}
        }))
    }

    #[test]
    fn replicated_task_container() {
        let s = web();
        let t = task(&s, 2, "");
        let c = task_container(&s, &t, &["node-09"]).unwrap();
        assert_eq!(c.name, "web.2.task000000000000000000001");
        let cfg = &c.config;
        assert_eq!(cfg["Image"], "nginx:alpine");
        assert_eq!(cfg["Entrypoint"], json!(["nginx"]));
        assert_eq!(cfg["Cmd"], json!(["-g", "daemon off;"]));
        assert_eq!(cfg["Labels"]["app"], "web");
        assert_eq!(cfg["Labels"][TASK_ID_LABEL], "task000000000000000000001");
        assert_eq!(cfg["Labels"][TASK_NAME_LABEL], "web.2");
        assert_eq!(cfg["Labels"][TASK_SLOT_LABEL], "2");
        assert_eq!(cfg["Labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(cfg["Env"], json!(["A=1", "constraint:zone==east", "constraint:node!=node-09"]));
        assert_eq!(cfg["StopTimeout"], 2);
        let host = &cfg["HostConfig"];
        assert_eq!(host["NanoCpus"], 1_500_000_000i64);
        assert_eq!(host["CpuShares"], 1);
        assert_eq!(host["Memory"], 268_435_456);
        assert_eq!(host["MemoryReservation"], 134_217_728);
        assert_eq!(host["RestartPolicy"], json!({"Name": "no"}));
        assert_eq!(host["Mounts"][0]["Target"], "/data");
        assert_eq!(host["ExtraHosts"], json!(["db:10.0.0.1", "db.local:10.0.0.1"]));
        assert_eq!(host["Dns"], json!(["8.8.8.8"]));
        assert_eq!(host["LogConfig"], json!({"Type": "json-file", "Config": {"max-size": "10m"}}));
        assert_eq!(cfg["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(
            host["PortBindings"],
            json!({"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "", "HostPort": ""}]})
        );
        assert_eq!(host["NetworkMode"], "front");
        assert_eq!(cfg["NetworkingConfig"]["EndpointsConfig"]["front"]["Aliases"], json!(["web", "www"]));
        assert_eq!(c.extra_networks.len(), 1);
        assert_eq!(c.extra_networks[0].target, "back");
        assert_eq!(c.extra_networks[0].aliases.as_deref(), Some(&["web".to_string()][..]));
    }

    #[test]
    fn the_create_body_is_accepted_by_the_classic_scheduler() {
        let s = web();
        let mut body = task_container(&s, &task(&s, 1, ""), &[]).unwrap().config;
        let request = swarm_scheduler::ContainerRequest::from_create_body(Some("web.1.x"), &mut body).unwrap();
        assert_eq!(request.cpus, 1);
        assert_eq!(request.memory, 268_435_456);
        assert_eq!(request.constraints().len(), 1);
        assert_eq!(request.port_bindings.len(), 2);
    }

    #[test]
    fn global_task_is_pinned_to_its_node() {
        let s = service(
            json!({"Name": "agent", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Mode": {"Global": {}}}),
        );
        let t = task(&s, 0, "ENGINE:ID:1");
        let c = task_container(&s, &t, &[]).unwrap();
        assert_eq!(c.name, "agent.ENGINE:ID:1.task000000000000000000001");
        assert_eq!(c.config["Env"], json!(["constraint:node==ENGINE:ID:1"]));
        assert_eq!(c.config["Labels"][NODE_ID_LABEL], "ENGINE:ID:1");
        assert!(c.config["Labels"].get(TASK_SLOT_LABEL).is_none());
        assert!(c.config.get("ExposedPorts").is_none());
        assert!(c.config["HostConfig"].get("NetworkMode").is_none());
        assert_eq!(task_container(&s, &task(&s, 0, ""), &[]), Err(MappingError::GlobalWithoutNode(t.id.clone())));
    }

    #[test]
    fn unsupported_constraints_and_specs_are_errors() {
        let s = service(json!({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"},
            "Placement": {"Constraints": ["node.role==manager"]}}}));
        assert!(matches!(task_container(&s, &task(&s, 1, ""), &[]), Err(MappingError::Constraint(_))));
        let s = service(json!({"Name": "x", "TaskTemplate": {}}));
        assert!(matches!(task_container(&s, &task(&s, 1, ""), &[]), Err(MappingError::NoContainerSpec(_))));
    }

    #[test]
    fn labels_lead_back_to_the_task() {
        let s = web();
        let c = task_container(&s, &task(&s, 3, ""), &[]).unwrap();
        let labels: BTreeMap<String, String> = serde_json::from_value(c.config["Labels"].clone()).unwrap();
        let id = TaskIdentity::from_labels(&labels).unwrap();
        assert_eq!(id.service_id, s.id);
        assert_eq!(id.service_name, "web");
        assert_eq!(id.task_id, "task000000000000000000001");
        assert_eq!(id.slot, SlotKey::Replica(3));

        let g = service(
            json!({"Name": "g", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Mode": {"Global": {}}}),
        );
        let c = task_container(&g, &task(&g, 0, "n1"), &[]).unwrap();
        let labels: BTreeMap<String, String> = serde_json::from_value(c.config["Labels"].clone()).unwrap();
        assert_eq!(TaskIdentity::from_labels(&labels).unwrap().slot, SlotKey::Node("n1".into()));

        let plain: BTreeMap<String, String> = [("com.docker.swarm.id".to_string(), "x".to_string())].into();
        assert_eq!(TaskIdentity::from_labels(&plain), None);
        let mut bad = labels.clone();
        bad.remove(NODE_ID_LABEL);
        bad.insert(TASK_SLOT_LABEL.into(), "zero".into());
        assert_eq!(TaskIdentity::from_labels(&bad), None);
    }

    #[test]
    fn create_path_escapes_the_name() {
        assert_eq!(create_path("web.1.abc"), "/containers/create?name=web.1.abc");
        assert_eq!(create_path("a b"), "/containers/create?name=a+b");
    }
}
