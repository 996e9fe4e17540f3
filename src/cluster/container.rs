//! A container as the manager caches it.
//!
//! Only what the manager reads is kept: the list entry pre-rendered for
//! `docker ps`, the few list fields that `ps --filter` needs, and the
//! details distilled from the engine's inspect. Keeping whole JSON trees
//! cost about 48 KB per container.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use swarm_scheduler::ContainerSnapshot;

/// What the manager keeps of a container's inspect; shared between
/// refreshes for as long as the container does not change.
#[derive(Debug, Default)]
pub struct Details {
    /// False until the container was inspected; then the list entry alone
    /// is not trusted for resources.
    pub inspected: bool,
    /// `State.ExitCode`.
    pub exit_code: Option<i64>,
    /// `State.Health.Status`, or `none`.
    pub health: String,
    /// What the scheduler needs (names, labels, ports, reserved resources).
    pub snapshot: Option<Arc<ContainerSnapshot>>,
    /// The create body that reproduces the container, kept only for
    /// containers with a reschedule policy.
    pub recreate: Option<Value>,
}

impl Details {
    /// Distils an inspect answer. `engine_cpus` turns CPU shares back into CPUs.
    pub fn from_inspect(inspect: &Value, engine_cpus: i64) -> Details {
        let reschedules = inspect["Config"]["Labels"]
            .get(swarm_scheduler::RESCHEDULE_POLICIES_LABEL)
            .and_then(Value::as_str)
            .is_some_and(|p| p.contains("on-node-failure"));
        Details {
            inspected: true,
            exit_code: inspect["State"]["ExitCode"].as_i64(),
            health: inspect["State"]["Health"]["Status"].as_str().unwrap_or("none").to_string(),
            snapshot: Some(Arc::new(ContainerSnapshot::from_inspect(inspect, engine_cpus))),
            recreate: if reschedules { create_config(inspect) } else { None },
        }
    }
}

/// The create body that reproduces an inspected container: its `Config`,
/// `HostConfig` and networks. The hostname is left to the new engine.
pub fn create_config(inspect: &Value) -> Option<Value> {
    let mut config = inspect.get("Config")?.clone();
    let obj = config.as_object_mut()?;
    obj.remove("Hostname");
    obj.insert("HostConfig".into(), inspect.get("HostConfig").cloned().unwrap_or_else(|| json!({})));
    if let Some(networks) = inspect["NetworkSettings"]["Networks"].as_object() {
        let endpoints: Map<String, Value> = networks
            .iter()
            .map(|(name, net)| (name.clone(), json!({"Aliases": net["Aliases"], "Links": net["Links"]})))
            .collect();
        obj.insert("NetworkingConfig".into(), json!({"EndpointsConfig": endpoints}));
    }
    Some(config)
}

/// A published or exposed port from the list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub private: u64,
    /// 0 when not published.
    pub public: u64,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

/// One container on one engine.
///
/// Immutable: a refresh replaces the whole `Arc<Container>`.
#[derive(Debug)]
pub struct Container {
    /// Full 64-hex ID as the engine reports it.
    pub id: String,
    /// The container's own name without the leading `/` (e.g. `web`).
    pub name: String,
    /// All names as the engine lists them, without the leading `/`,
    /// including link aliases (`other/alias`).
    pub names: Vec<String>,
    /// `running`, `exited`, `paused`, `created`, `restarting`, `removing` or `dead`.
    pub state: String,
    /// Image as given at create time (`busybox`, `busybox:latest`).
    pub image: String,
    /// Image ID the container was created from.
    pub image_id: String,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Ports of the list entry.
    pub ports: Vec<Port>,
    /// Networks it is attached to: (name, network ID).
    pub networks: Vec<(String, String)>,
    /// Mounts: (volume name, destination).
    pub mounts: Vec<(String, String)>,
    /// The entry as the manager lists it: names prefixed with the node name and
    /// unbound (0.0.0.0) port IPs replaced by the engine's IP. Rendered once
    /// per refresh so that listing is a concatenation.
    pub rendered: Bytes,
    /// What the inspect said.
    pub details: Arc<Details>,
    /// What the scheduler needs of this container.
    pub snapshot: Arc<ContainerSnapshot>,
}

impl Container {
    /// Builds the cached container from an engine's list entry and the
    /// details of its inspect. Returns `None` when the entry has no ID.
    pub fn from_summary(
        mut summary: Map<String, Value>,
        details: Arc<Details>,
        node_name: &str,
        node_ip: &str,
    ) -> Option<Container> {
        let id = summary.get("Id")?.as_str()?.to_string();
        let names = names_of(&summary);
        let name = names.iter().find(|n| !n.contains('/')).or(names.first()).cloned().unwrap_or_default();
        let text = |summary: &Map<String, Value>, key: &str| {
            summary.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
        };
        let labels = summary
            .get("Labels")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        let ports = array_of(&summary, "Ports", |p| Port {
            private: p["PrivatePort"].as_u64().unwrap_or(0),
            public: p["PublicPort"].as_u64().unwrap_or(0),
            protocol: p["Type"].as_str().unwrap_or("tcp").to_string(),
        });
        let networks = summary
            .get("NetworkSettings")
            .and_then(|n| n.get("Networks"))
            .and_then(Value::as_object)
            .map(|nets| {
                nets.iter()
                    .map(|(name, n)| (name.clone(), n["NetworkID"].as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let mounts = array_of(&summary, "Mounts", |m| {
            (
                m["Name"].as_str().unwrap_or_default().to_string(),
                m["Destination"].as_str().unwrap_or_default().to_string(),
            )
        });
        let snapshot = match &details.snapshot {
            Some(s) => s.clone(),
            None => Arc::new(ContainerSnapshot::from_summary(&Value::Object(summary.clone()))),
        };
        let container = Container {
            state: text(&summary, "State"),
            image: text(&summary, "Image"),
            image_id: text(&summary, "ImageID"),
            created: summary.get("Created").and_then(Value::as_i64).unwrap_or(0),
            rendered: render(&mut summary, node_name, node_ip),
            id,
            name,
            names,
            labels,
            ports,
            networks,
            mounts,
            details,
            snapshot,
        };
        Some(container)
    }

    /// The entry for a container an engine has just created from `config`
    /// (the create body it was sent), until the engine's `create` event or
    /// the next refresh replaces it with what the engine says. It is not
    /// marked inspected, so a refresh that finds it inspects it.
    pub fn provisional(
        id: &str,
        name: Option<&str>,
        config: &Value,
        snapshot: ContainerSnapshot,
        node_name: &str,
        node_ip: &str,
    ) -> Option<Container> {
        let command = ["Entrypoint", "Cmd"]
            .iter()
            .filter_map(|key| config.get(*key).and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let names = name.map(|n| vec![format!("/{}", n.trim_start_matches('/'))]).unwrap_or_default();
        let network_mode = config.pointer("/HostConfig/NetworkMode").and_then(Value::as_str).unwrap_or("default");
        let summary = json!({
            "Id": id,
            "Names": names,
            "Image": config.get("Image").and_then(Value::as_str).unwrap_or_default(),
            "ImageID": "",
            "Command": command,
            "Created": created,
            "Ports": [],
            "Labels": config.get("Labels").filter(|l| l.is_object()).cloned().unwrap_or_else(|| json!({})),
            "State": "created",
            "Status": "Created",
            "HostConfig": {"NetworkMode": network_mode},
            "NetworkSettings": {"Networks": {}},
            "Mounts": [],
        });
        let Value::Object(summary) = summary else { return None };
        let snapshot = ContainerSnapshot { id: id.to_string(), names: names.clone(), pending: false, ..snapshot };
        let details = Details { health: "none".into(), snapshot: Some(Arc::new(snapshot)), ..Details::default() };
        Container::from_summary(summary, Arc::new(details), node_name, node_ip)
    }

    /// Docker lists paused and restarting containers as running ones.
    pub fn is_running(&self) -> bool {
        matches!(self.state.as_str(), "running" | "paused" | "restarting")
    }

    /// The list entry with `Status` replaced (for `Host Down`).
    pub fn rendered_with_status(&self, status: &str) -> Bytes {
        match serde_json::from_slice::<Value>(&self.rendered) {
            Ok(Value::Object(mut entry)) => {
                entry.insert("Status".into(), Value::String(status.to_string()));
                Bytes::from(serde_json::to_vec(&entry).unwrap_or_default())
            }
            _ => self.rendered.clone(),
        }
    }
}

/// The items of the array at `key`, each turned by `item`; empty when absent.
fn array_of<T>(summary: &Map<String, Value>, key: &str, item: impl Fn(&Value) -> T) -> Vec<T> {
    summary.get(key).and_then(Value::as_array).map(|items| items.iter().map(item).collect()).unwrap_or_default()
}

/// The `Names` of a list entry, without their leading `/`.
pub fn names_of(summary: &Map<String, Value>) -> Vec<String> {
    summary
        .get("Names")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(|s| s.trim_start_matches('/').to_string()).collect())
        .unwrap_or_default()
}

/// Renders a list entry the way the manager shows it: node-prefixed names,
/// the engine's IP for unbound ports.
fn render(entry: &mut Map<String, Value>, node_name: &str, node_ip: &str) -> Bytes {
    if let Some(Value::Array(names)) = entry.get_mut("Names") {
        for name in names.iter_mut() {
            if let Value::String(s) = name {
                *s = format!("/{node_name}{s}");
            }
        }
    }
    if let Some(Value::Array(ports)) = entry.get_mut("Ports") {
        for port in ports.iter_mut() {
            if let Some(ip) = port.get_mut("IP") {
                if ip.as_str() == Some("0.0.0.0") {
                    *ip = Value::String(node_ip.to_string());
                }
            }
        }
    }
    Bytes::from(serde_json::to_vec(entry).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(summary: Value) -> Container {
        let Value::Object(summary) = summary else { panic!("object") };
        Container::from_summary(summary, Arc::new(Details::default()), "node-01", "10.0.0.1").unwrap()
    }

    #[test]
    fn renders_node_prefixed_names_and_engine_ip() {
        let c = container(json!({
            "Id": "abc", "Names": ["/web"], "State": "running", "Image": "busybox",
            "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}],
            "Labels": {"a": "b"},
            "NetworkSettings": {"Networks": {"bridge": {"NetworkID": "n1"}}},
            "Mounts": [{"Name": "v1", "Destination": "/data"}]
        }));
        assert_eq!(c.name, "web");
        let shown: Value = serde_json::from_slice(&c.rendered).unwrap();
        assert_eq!(shown["Names"][0], "/node-01/web");
        assert_eq!(shown["Ports"][0]["IP"], "10.0.0.1");
        assert_eq!(c.labels["a"], "b");
        assert_eq!(c.ports, [Port { private: 80, public: 8080, protocol: "tcp".into() }]);
        assert_eq!(c.networks, [("bridge".to_string(), "n1".to_string())]);
        assert_eq!(c.mounts, [("v1".to_string(), "/data".to_string())]);
        let down: Value = serde_json::from_slice(&c.rendered_with_status("Host Down")).unwrap();
        assert_eq!(down["Status"], "Host Down");
    }

    #[test]
    fn prefers_own_name_over_link_alias() {
        let c = container(json!({"Id": "x", "Names": ["/a/alias", "/db"]}));
        assert_eq!(c.name, "db");
    }

    #[test]
    fn keeps_a_recreate_body_only_for_rescheduled_containers() {
        let plain = Details::from_inspect(&json!({"Config": {"Image": "busybox"}, "State": {"ExitCode": 3}}), 2);
        assert!(plain.recreate.is_none());
        assert_eq!(plain.exit_code, Some(3));
        assert_eq!(plain.health, "none");
        let inspect = json!({
            "Config": {"Hostname": "abc", "Image": "busybox", "Labels": {"com.docker.swarm.reschedule-policies": "[\"on-node-failure\"]"}},
            "HostConfig": {"Memory": 1024},
            "NetworkSettings": {"Networks": {"appnet": {"Aliases": ["web"], "Links": null}}}
        });
        let body = Details::from_inspect(&inspect, 2).recreate.unwrap();
        assert!(body.get("Hostname").is_none());
        assert_eq!(body["HostConfig"]["Memory"], 1024);
        assert_eq!(body["NetworkingConfig"]["EndpointsConfig"]["appnet"]["Aliases"][0], "web");
        assert!(create_config(&Value::Null).is_none());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::proptest_json::engine_json;
    use proptest::prelude::*;

    proptest! {
        /// Any list entry and inspect answer give a container (or none
        /// without an ID) whose rendered entry is JSON.
        #[test]
        fn containers_from_any_answers(summary in engine_json(), inspect in engine_json(), engine_cpus in any::<i64>()) {
            let details = Arc::new(Details::from_inspect(&inspect, engine_cpus));
            let _ = create_config(&inspect);
            let summary = match summary {
                Value::Object(m) => m,
                other => Map::from_iter([("Id".to_string(), Value::from("x")), ("Names".to_string(), other)]),
            };
            let has_id = summary.get("Id").is_some_and(Value::is_string);
            match Container::from_summary(summary, details, "node-01", "10.0.0.1") {
                Some(c) => {
                    prop_assert!(has_id);
                    prop_assert!(serde_json::from_slice::<Value>(&c.rendered).is_ok());
                    prop_assert!(serde_json::from_slice::<Value>(&c.rendered_with_status("Host Down")).is_ok());
                    let _ = c.is_running();
                }
                None => prop_assert!(!has_id),
            }
        }
    }
}
