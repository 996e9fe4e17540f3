//! The cluster state the scheduler decides on: one [`NodeSnapshot`] per
//! engine with its containers (including ones still being created) and
//! images. Pure data with plain constructors; the JSON constructors turn
//! engine API answers into snapshots without any I/O.
//!
//! Resource units follow the original manager: CPUs are whole CPUs (a
//! container's reservation is its `CpuShares` converted back to CPUs), and
//! memory is in bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::json::{lenient_int, lenient_str, lenient_string_map, lenient_strings};
use crate::lookup;
use crate::request::ContainerRequest;

/// Label holding the Swarm-assigned container ID.
pub const SWARM_ID_LABEL: &str = "com.docker.swarm.id";

/// One published port of a container (or requested by a create request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PortBinding {
    /// Container-side port key as Docker writes it, e.g. `80/tcp` (a key
    /// without `/proto` means tcp).
    pub container_port: String,
    /// Host IP the port is bound on; empty or `0.0.0.0` means all.
    pub host_ip: String,
    /// Host port; empty when the engine picks one (never conflicts).
    pub host_port: String,
}

impl PortBinding {
    /// Builds a binding.
    pub fn new(container_port: &str, host_ip: &str, host_port: &str) -> PortBinding {
        PortBinding {
            container_port: container_port.to_string(),
            host_ip: host_ip.to_string(),
            host_port: host_port.to_string(),
        }
    }

    /// The protocol of the binding (`tcp` unless the key says otherwise).
    pub fn protocol(&self) -> &str {
        split_port(&self.container_port).1
    }

    /// Whether the binding listens on every interface.
    pub fn binds_all_interfaces(&self) -> bool {
        self.host_ip.is_empty() || self.host_ip == "0.0.0.0"
    }
}

/// Splits a Docker port key `80/tcp` into port and protocol (default tcp).
pub fn split_port(key: &str) -> (&str, &str) {
    match key.split_once('/') {
        Some((port, proto)) if !proto.is_empty() => (port, proto),
        Some((port, _)) => (port, "tcp"),
        None => (key, "tcp"),
    }
}

/// A container on a node, as far as scheduling is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSnapshot {
    /// Engine container ID; empty for a pending container not created yet.
    pub id: String,
    /// Names as the engine reports them, usually with a leading `/`.
    pub names: Vec<String>,
    /// Image reference the container was created from.
    pub image: String,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// `HostConfig.NetworkMode` (`host`, `bridge`, `container:<id>`, …).
    pub network_mode: String,
    /// `Config.ExposedPorts` keys, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// Requested and actual port bindings (both are checked, because a
    /// stopped container only has the former and a `-p 80` one only the
    /// latter).
    pub port_bindings: Vec<PortBinding>,
    /// CPUs reserved, in whole CPUs (≥ 0).
    pub reserved_cpus: i64,
    /// Memory reserved, in bytes (≥ 0).
    pub reserved_memory: i64,
    /// True while the container is being created: it already counts for
    /// resources, slots, ports and name lookups.
    pub pending: bool,
}

impl ContainerSnapshot {
    /// A container with an ID and one name and nothing else.
    pub fn new(id: &str, name: &str) -> ContainerSnapshot {
        ContainerSnapshot {
            id: id.to_string(),
            names: if name.is_empty() { Vec::new() } else { vec![name.to_string()] },
            ..ContainerSnapshot::default()
        }
    }

    /// The in-flight container for `request`, to add to the chosen node's
    /// snapshot until the engine reports the real one. It reserves the
    /// request's CPUs, memory and ports and answers to its name.
    pub fn pending_from_request(request: &ContainerRequest) -> ContainerSnapshot {
        let names = match request.name.as_deref() {
            Some(name) if !name.is_empty() => vec![format!("/{}", name.trim_start_matches('/'))],
            _ => Vec::new(),
        };
        ContainerSnapshot {
            id: String::new(),
            names,
            image: request.image.clone(),
            labels: request.labels.clone(),
            network_mode: request.network_mode.clone(),
            exposed_ports: request.exposed_ports.clone(),
            port_bindings: request.port_bindings.clone(),
            reserved_cpus: request.cpus,
            reserved_memory: request.memory,
            pending: true,
        }
    }

    /// Builds a snapshot from `GET /containers/{id}/json`. `engine_cpus` is
    /// the engine's CPU count, needed to turn `CpuShares` back into CPUs.
    /// Missing or oddly typed fields are treated as absent.
    pub fn from_inspect(inspect: &Value, engine_cpus: i64) -> ContainerSnapshot {
        let null = Value::Null;
        let config = inspect.get("Config").unwrap_or(&null);
        let host = inspect.get("HostConfig").unwrap_or(&null);
        let name = lenient_str(inspect, "Name");
        let mut image = lenient_str(config, "Image");
        if image.is_empty() {
            image = lenient_str(inspect, "Image");
        }
        let mut port_bindings = bindings_from_map(host.get("PortBindings"));
        let network_ports = inspect.get("NetworkSettings").and_then(|n| n.get("Ports"));
        for binding in bindings_from_map(network_ports) {
            if !port_bindings.contains(&binding) {
                port_bindings.push(binding);
            }
        }
        let shares = lenient_int(host, "CpuShares");
        let reserved_cpus = if shares > 0 {
            cpus_from_shares(shares, engine_cpus)
        } else {
            cpus_from_nano(lenient_int(host, "NanoCpus"))
        };
        let mut reserved_memory = lenient_int(host, "Memory");
        if reserved_memory == 0 {
            reserved_memory = lenient_int(config, "Memory");
        }
        ContainerSnapshot {
            id: lenient_str(inspect, "Id").to_string(),
            names: if name.is_empty() { Vec::new() } else { vec![name.to_string()] },
            image: image.to_string(),
            labels: lenient_string_map(config, "Labels"),
            network_mode: lenient_str(host, "NetworkMode").to_string(),
            exposed_ports: object_keys(config.get("ExposedPorts")),
            port_bindings,
            reserved_cpus,
            reserved_memory,
            pending: false,
        }
    }

    /// Builds a snapshot from one entry of `GET /containers/json`. The list
    /// carries no resource reservations, so those are 0.
    pub fn from_summary(summary: &Value) -> ContainerSnapshot {
        let mut exposed_ports = Vec::new();
        let mut port_bindings = Vec::new();
        for port in summary.get("Ports").and_then(Value::as_array).into_iter().flatten() {
            let private = lenient_int(port, "PrivatePort");
            let proto = match lenient_str(port, "Type") {
                "" => "tcp",
                other => other,
            };
            let key = format!("{private}/{proto}");
            if !exposed_ports.contains(&key) {
                exposed_ports.push(key.clone());
            }
            let public = lenient_int(port, "PublicPort");
            if public > 0 {
                port_bindings.push(PortBinding {
                    container_port: key,
                    host_ip: lenient_str(port, "IP").to_string(),
                    host_port: public.to_string(),
                });
            }
        }
        let network_mode = summary.get("HostConfig").map(|h| lenient_str(h, "NetworkMode")).unwrap_or("");
        ContainerSnapshot {
            id: lenient_str(summary, "Id").to_string(),
            names: lenient_strings(summary, "Names"),
            image: lenient_str(summary, "Image").to_string(),
            labels: lenient_string_map(summary, "Labels"),
            network_mode: network_mode.to_string(),
            exposed_ports,
            port_bindings,
            reserved_cpus: 0,
            reserved_memory: 0,
            pending: false,
        }
    }

    /// The Swarm ID label, or "".
    pub fn swarm_id(&self) -> &str {
        self.labels.get(SWARM_ID_LABEL).map_or("", String::as_str)
    }
}

/// An image present on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSnapshot {
    /// Image ID, e.g. `sha256:…`.
    pub id: String,
    /// `repo:tag` references.
    pub repo_tags: Vec<String>,
    /// `repo@digest` references.
    pub repo_digests: Vec<String>,
}

impl ImageSnapshot {
    /// An image with an ID and tags.
    pub fn new(id: &str, repo_tags: &[&str]) -> ImageSnapshot {
        ImageSnapshot {
            id: id.to_string(),
            repo_tags: repo_tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: Vec::new(),
        }
    }

    /// Builds a snapshot from one entry of `GET /images/json`.
    pub fn from_summary(summary: &Value) -> ImageSnapshot {
        ImageSnapshot {
            id: lenient_str(summary, "Id").to_string(),
            repo_tags: lenient_strings(summary, "RepoTags"),
            repo_digests: lenient_strings(summary, "RepoDigests"),
        }
    }
}

/// One engine of the cluster at decision time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSnapshot {
    /// Engine ID; unique in the cluster.
    pub id: String,
    /// Engine name (host name); what `node==` and whitelists match.
    pub name: String,
    /// The node's ID as swarm mode shows it (`docker node ls`); `node==`
    /// matches it too. Empty when unknown.
    pub node_id: String,
    /// Engine address `host:port`.
    pub addr: String,
    /// Engine labels, including the engine's own `kernelversion`,
    /// `operatingsystem`, `ostype` and `storagedriver`.
    pub labels: BTreeMap<String, String>,
    /// CPUs of the engine, before overcommit.
    pub total_cpus: i64,
    /// Memory of the engine in bytes, before overcommit.
    pub total_memory: i64,
    /// Whether the engine is in the healthy state.
    pub healthy: bool,
    /// Consecutive failed refreshes; pushes the node down the ranking and
    /// makes it unhealthy once it reaches the failure retry count.
    pub failure_count: u32,
    /// Containers, including pending ones; shared with the cache they
    /// come from, so taking a snapshot of a node copies no container.
    pub containers: Vec<Arc<ContainerSnapshot>>,
    /// Images present on the engine.
    /// Shared with the cache they come from, like `containers`.
    pub images: Arc<Vec<ImageSnapshot>>,
}

impl Default for NodeSnapshot {
    /// An empty, *healthy* node: forgetting to set health should not make
    /// a test cluster silently unschedulable.
    fn default() -> Self {
        NodeSnapshot {
            id: String::new(),
            name: String::new(),
            node_id: String::new(),
            addr: String::new(),
            labels: BTreeMap::new(),
            total_cpus: 0,
            total_memory: 0,
            healthy: true,
            failure_count: 0,
            containers: Vec::new(),
            images: Arc::new(Vec::new()),
        }
    }
}

impl NodeSnapshot {
    /// A healthy node with an ID, name and address and nothing else.
    pub fn new(id: &str, name: &str, addr: &str) -> NodeSnapshot {
        NodeSnapshot { id: id.to_string(), name: name.to_string(), addr: addr.to_string(), ..NodeSnapshot::default() }
    }

    /// Adds a container (a test's, or a pending one).
    pub fn add_container(&mut self, container: ContainerSnapshot) {
        self.containers.push(Arc::new(container));
    }

    /// Adds an image (a test's).
    pub fn add_image(&mut self, image: ImageSnapshot) {
        Arc::make_mut(&mut self.images).push(image);
    }

    /// CPUs reserved by all containers, pending ones included.
    pub fn reserved_cpus(&self) -> i64 {
        self.containers.iter().fold(0i64, |acc, c| acc.saturating_add(c.reserved_cpus))
    }

    /// Memory reserved by all containers, pending ones included.
    pub fn reserved_memory(&self) -> i64 {
        self.containers.iter().fold(0i64, |acc, c| acc.saturating_add(c.reserved_memory))
    }

    /// Degree of health between 0 and 100, as the original computed it:
    /// 0 when unhealthy or when `failure_count` reached `failure_retry`,
    /// otherwise `100 - failure_count * 100 / failure_retry`.
    pub fn health_indicator(&self, failure_retry: u32) -> i64 {
        if !self.healthy || failure_retry == 0 || self.failure_count >= failure_retry {
            return 0;
        }
        100 - i64::from(self.failure_count) * 100 / i64::from(failure_retry)
    }

    /// Finds a container by ID, short ID, Swarm ID, name (`name`, `/name`,
    /// `<node>/name`) or unique ID prefix, like Docker and the original
    /// manager resolve `--link`, `--volumes-from` and `--net=container:`.
    pub fn container(&self, id_or_name: &str) -> Option<&ContainerSnapshot> {
        lookup::find_container(self, id_or_name).map(|i| self.containers[i].as_ref())
    }
}

/// Converts an engine's `CpuShares` into CPUs the way the original did on
/// refresh: `shares * engine_cpus / 1024` (integer division).
pub fn cpus_from_shares(shares: i64, engine_cpus: i64) -> i64 {
    let cpus = i128::from(shares) * i128::from(engine_cpus) / 1024;
    clamp_i64(cpus).max(0)
}

/// Converts requested CPUs into the `CpuShares` to send to an engine with
/// `engine_cpus` CPUs: `ceil(cpus * 1024 / engine_cpus)`, as the original
/// did before forwarding a create. Returns 0 (engine default) when either
/// number is not positive.
pub fn shares_for_cpus(cpus: i64, engine_cpus: i64) -> i64 {
    if cpus <= 0 || engine_cpus <= 0 {
        return 0;
    }
    let numerator = i128::from(cpus) * 1024;
    let denominator = i128::from(engine_cpus);
    clamp_i64((numerator + denominator - 1) / denominator)
}

/// Converts `NanoCpus` (billionths of a CPU) into whole CPUs, rounding up
/// so that a fractional request still reserves capacity.
pub fn cpus_from_nano(nano_cpus: i64) -> i64 {
    if nano_cpus <= 0 {
        return 0;
    }
    let nano = i128::from(nano_cpus);
    clamp_i64((nano + 999_999_999) / 1_000_000_000)
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn object_keys(value: Option<&Value>) -> Vec<String> {
    value.and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// Reads a Docker port map `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`
/// leniently.
fn bindings_from_map(value: Option<&Value>) -> Vec<PortBinding> {
    let Some(map) = value.and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, list) in map {
        for binding in list.as_array().into_iter().flatten() {
            let host_port = match binding.get("HostPort") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            out.push(PortBinding {
                container_port: key.clone(),
                host_ip: lenient_str(binding, "HostIp").to_string(),
                host_port,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_port_defaults_to_tcp() {
        assert_eq!(split_port("80/udp"), ("80", "udp"));
        assert_eq!(split_port("80"), ("80", "tcp"));
        assert_eq!(split_port("80/"), ("80", "tcp"));
    }

    #[test]
    fn default_node_is_healthy() {
        assert!(NodeSnapshot::default().healthy);
        assert!(NodeSnapshot::new("id", "n", "a:1").healthy);
    }

    #[test]
    fn health_indicator_follows_the_original() {
        let mut n = NodeSnapshot::new("id", "n", "a");
        assert_eq!(n.health_indicator(3), 100);
        n.failure_count = 1;
        assert_eq!(n.health_indicator(3), 67);
        n.failure_count = 2;
        assert_eq!(n.health_indicator(3), 34);
        n.failure_count = 3;
        assert_eq!(n.health_indicator(3), 0);
        n.failure_count = 0;
        n.healthy = false;
        assert_eq!(n.health_indicator(3), 0);
    }

    #[test]
    fn reservations_sum_all_containers_including_pending() {
        let mut n = NodeSnapshot::new("id", "n", "a");
        let mut c = ContainerSnapshot::new("c1", "/a");
        c.reserved_cpus = 2;
        c.reserved_memory = 100;
        n.add_container(c);
        let mut p = ContainerSnapshot::new("", "/b");
        p.pending = true;
        p.reserved_cpus = 1;
        p.reserved_memory = 50;
        n.add_container(p);
        assert_eq!(n.reserved_cpus(), 3);
        assert_eq!(n.reserved_memory(), 150);
    }

    #[test]
    fn share_conversions_round_trip() {
        assert_eq!(shares_for_cpus(1, 4), 256);
        assert_eq!(cpus_from_shares(256, 4), 1);
        assert_eq!(shares_for_cpus(1, 3), 342);
        assert_eq!(cpus_from_shares(342, 3), 1);
        assert_eq!(shares_for_cpus(0, 4), 0);
        assert_eq!(shares_for_cpus(2, 0), 0);
        assert_eq!(cpus_from_shares(1024, 2), 2);
        assert_eq!(cpus_from_shares(i64::MAX, i64::MAX), i64::MAX);
        assert_eq!(cpus_from_nano(1_500_000_000), 2);
        assert_eq!(cpus_from_nano(1_000_000_000), 1);
        assert_eq!(cpus_from_nano(0), 0);
    }

    #[test]
    fn from_inspect_reads_what_scheduling_needs() {
        let v = json!({
            "Id": "abc123",
            "Name": "/web",
            "Image": "sha256:fff",
            "Config": {
                "Image": "nginx:latest",
                "Labels": {"app": "web", "odd": 1},
                "ExposedPorts": {"80/tcp": {}}
            },
            "HostConfig": {
                "NetworkMode": "bridge",
                "CpuShares": 512,
                "Memory": 1048576,
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
            },
            "NetworkSettings": {"Ports": {
                "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
                "443/tcp": null
            }}
        });
        let c = ContainerSnapshot::from_inspect(&v, 4);
        assert_eq!(c.id, "abc123");
        assert_eq!(c.names, vec!["/web"]);
        assert_eq!(c.image, "nginx:latest");
        assert_eq!(c.labels.get("app").map(String::as_str), Some("web"));
        assert!(!c.labels.contains_key("odd"));
        assert_eq!(c.exposed_ports, vec!["80/tcp"]);
        assert_eq!(c.port_bindings, vec![PortBinding::new("80/tcp", "", "8080")]);
        assert_eq!(c.reserved_cpus, 2);
        assert_eq!(c.reserved_memory, 1_048_576);
        assert!(!c.pending);
    }

    #[test]
    fn from_inspect_tolerates_garbage() {
        for v in [json!(null), json!(1), json!([]), json!({"HostConfig": "x", "Config": 3})] {
            let c = ContainerSnapshot::from_inspect(&v, 4);
            assert_eq!(c, ContainerSnapshot::default());
        }
        let c = ContainerSnapshot::from_inspect(&json!({"HostConfig": {"NanoCpus": 500_000_000}}), 4);
        assert_eq!(c.reserved_cpus, 1);
    }

    #[test]
    fn from_summary_reads_ports_and_names() {
        let v = json!({
            "Id": "abc",
            "Names": ["/web", "/other/alias"],
            "Image": "nginx",
            "Labels": {"a": "b"},
            "Ports": [
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"PrivatePort": 443, "Type": "tcp"}
            ],
            "HostConfig": {"NetworkMode": "default"}
        });
        let c = ContainerSnapshot::from_summary(&v);
        assert_eq!(c.names, vec!["/web", "/other/alias"]);
        assert_eq!(c.exposed_ports, vec!["80/tcp", "443/tcp"]);
        assert_eq!(c.port_bindings, vec![PortBinding::new("80/tcp", "0.0.0.0", "8080")]);
        assert_eq!(c.network_mode, "default");
    }

    #[test]
    fn image_from_summary() {
        let i = ImageSnapshot::from_summary(&json!({
            "Id": "sha256:1", "RepoTags": ["redis:3"], "RepoDigests": null
        }));
        assert_eq!(i, ImageSnapshot::new("sha256:1", &["redis:3"]));
    }

    #[test]
    fn pending_from_request_reserves_what_was_asked() {
        let mut body = json!({
            "Image": "redis",
            "HostConfig": {"Memory": 64, "CpuShares": 2,
                "PortBindings": {"6379/tcp": [{"HostPort": "6379"}]}}
        });
        let req = ContainerRequest::from_create_body(Some("cache"), &mut body).unwrap();
        let p = ContainerSnapshot::pending_from_request(&req);
        assert!(p.pending);
        assert_eq!(p.names, vec!["/cache"]);
        assert_eq!((p.reserved_cpus, p.reserved_memory), (2, 64));
        assert_eq!(p.port_bindings, vec![PortBinding::new("6379/tcp", "", "6379")]);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// JSON shaped like what engines send (`/containers/json`, inspect,
    /// `/images/json`): the key names the readers look at, with values of
    /// any type, huge and negative numbers included.
    fn engine_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z0-9/:.]{0,8}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        let key = prop_oneof![
            Just("Id"),
            Just("Name"),
            Just("Names"),
            Just("Image"),
            Just("Config"),
            Just("HostConfig"),
            Just("NetworkSettings"),
            Just("Ports"),
            Just("PortBindings"),
            Just("ExposedPorts"),
            Just("Labels"),
            Just("NetworkMode"),
            Just("CpuShares"),
            Just("NanoCpus"),
            Just("Memory"),
            Just("PrivatePort"),
            Just("PublicPort"),
            Just("Type"),
            Just("IP"),
            Just("HostIp"),
            Just("HostPort"),
            Just("RepoTags"),
            Just("RepoDigests"),
            Just("80/tcp"),
            Just(SWARM_ID_LABEL),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key.clone().prop_map(str::to_string), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any engine answer gives a snapshot with no negative reservation.
        #[test]
        fn engine_json_never_panics(json in engine_json(), engine_cpus in any::<i64>()) {
            let inspected = ContainerSnapshot::from_inspect(&json, engine_cpus);
            prop_assert!(inspected.reserved_cpus >= 0 && inspected.reserved_memory >= 0);
            let listed = ContainerSnapshot::from_summary(&json);
            prop_assert_eq!((listed.reserved_cpus, listed.reserved_memory), (0, 0));
            let _ = ImageSnapshot::from_summary(&json);
            let mut node = NodeSnapshot::new("id", "name", "h:1");
            node.containers = vec![inspected.into(), listed.into()];
            prop_assert!(node.reserved_cpus() >= 0 && node.reserved_memory() >= 0);
        }

        /// The resource conversions saturate instead of overflowing.
        #[test]
        fn conversions_never_overflow(a in any::<i64>(), b in any::<i64>()) {
            prop_assert!(cpus_from_shares(a, b) >= 0);
            prop_assert!(shares_for_cpus(a, b) >= 0);
            prop_assert!(cpus_from_nano(a) >= 0);
        }

        #[test]
        fn split_port_of_any_key(key in ".{0,12}") {
            let (port, proto) = split_port(&key);
            prop_assert!(key.starts_with(port) && !proto.is_empty());
        }
    }
}
