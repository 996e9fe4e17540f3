//! Port filter: a requested host port must be free on the node.
//!
//! Bridge mode: each requested binding conflicts with an existing binding
//! of the same host port and protocol when either side binds all
//! interfaces (empty or `0.0.0.0`) or both name the same IP. Host mode:
//! each exposed port conflicts with another host-mode container exposing
//! it. In both modes we also treat the other mode's use of the port as a
//! conflict (a host-mode container on :80 does occupy :80), which the
//! original did not check.

use crate::request::ContainerRequest;
use crate::snapshot::{split_port, ContainerSnapshot, NodeSnapshot, PortBinding};

use super::{retain_nonempty, Ctx, Unsatisfied};

/// `HostConfig.NetworkMode` of containers sharing the host's stack.
const HOST_MODE: &str = "host";

/// Removes nodes where a requested port is taken, one port at a time.
pub(super) fn apply(ctx: &mut Ctx<'_>, candidates: &mut Vec<usize>) -> Result<(), Unsatisfied> {
    let (nodes, request) = (ctx.nodes, ctx.request);
    if request.network_mode == HOST_MODE {
        for key in &request.exposed_ports {
            let (port, proto) = split_port(key);
            retain_nonempty(candidates, |&i| !host_port_taken(nodes[i], port, proto))?;
        }
    } else {
        for binding in &request.port_bindings {
            // An engine-chosen port cannot conflict.
            if binding.host_port.is_empty() {
                continue;
            }
            retain_nonempty(candidates, |&i| !binding_taken(nodes[i], binding))?;
        }
    }
    Ok(())
}

/// `port 80/tcp (Host mode)` or `port 8080 (Bridge mode)` per port.
pub(super) fn conditions(request: &ContainerRequest) -> Vec<String> {
    if request.network_mode == HOST_MODE {
        request.exposed_ports.iter().map(|key| format!("port {key} (Host mode)")).collect()
    } else {
        request
            .port_bindings
            .iter()
            .filter(|b| !b.host_port.is_empty())
            .map(|b| format!("port {} (Bridge mode)", b.host_port))
            .collect()
    }
}

fn exposes(container: &ContainerSnapshot, port: &str, proto: &str) -> bool {
    container.network_mode == HOST_MODE && container.exposed_ports.iter().any(|key| split_port(key) == (port, proto))
}

fn host_port_taken(node: &NodeSnapshot, port: &str, proto: &str) -> bool {
    node.containers.iter().any(|c| {
        exposes(c, port, proto)
            || c.port_bindings.iter().any(|b| !b.host_port.is_empty() && b.host_port == port && b.protocol() == proto)
    })
}

fn binding_taken(node: &NodeSnapshot, requested: &PortBinding) -> bool {
    let proto = requested.protocol();
    node.containers.iter().any(|c| {
        exposes(c, &requested.host_port, proto) || c.port_bindings.iter().any(|b| bindings_conflict(b, requested))
    })
}

fn bindings_conflict(existing: &PortBinding, requested: &PortBinding) -> bool {
    !existing.host_port.is_empty()
        && existing.host_port == requested.host_port
        && existing.protocol() == requested.protocol()
        && (existing.host_ip == requested.host_ip
            || existing.binds_all_interfaces()
            || requested.binds_all_interfaces())
}

#[cfg(test)]
mod tests {
    use crate::filter::test_support::{request, run};
    use crate::filter::FilterKind;
    use crate::snapshot::{ContainerSnapshot, NodeSnapshot, PortBinding};
    use serde_json::{json, Value};

    fn node_with(name: &str, container: Option<ContainerSnapshot>) -> NodeSnapshot {
        let mut n = NodeSnapshot::new(name, name, "");
        n.containers.extend(container.map(std::sync::Arc::new));
        n
    }

    fn bound(ip: &str, port: &str, key: &str) -> ContainerSnapshot {
        let mut c = ContainerSnapshot::new("c", "/c");
        c.port_bindings.push(PortBinding::new(key, ip, port));
        c
    }

    fn bridge_request(ip: &str, port: &str) -> Value {
        json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": ip, "HostPort": port}]}}})
    }

    fn survivors(nodes: &[NodeSnapshot], body: Value) -> Option<Vec<String>> {
        run(FilterKind::Port, nodes, &request(body), true).ok()
    }

    #[test]
    fn bridge_same_port_conflicts() {
        let nodes = vec![
            node_with("busy", Some(bound("", "8080", "80/tcp"))),
            node_with("free", None),
            node_with("other-port", Some(bound("", "9090", "80/tcp"))),
        ];
        assert_eq!(survivors(&nodes, bridge_request("", "8080")).unwrap(), ["free", "other-port"]);
        assert_eq!(survivors(&nodes[..1], bridge_request("0.0.0.0", "8080")), None);
    }

    #[test]
    fn bridge_ip_rules() {
        let specific = vec![node_with("n", Some(bound("10.0.0.1", "8080", "80/tcp")))];
        // Different specific IPs coexist.
        assert!(survivors(&specific, bridge_request("10.0.0.2", "8080")).is_some());
        // Same IP, or all interfaces on either side, conflict.
        assert!(survivors(&specific, bridge_request("10.0.0.1", "8080")).is_none());
        assert!(survivors(&specific, bridge_request("", "8080")).is_none());
        assert!(survivors(&specific, bridge_request("0.0.0.0", "8080")).is_none());
        let all = vec![node_with("n", Some(bound("0.0.0.0", "8080", "80/tcp")))];
        assert!(survivors(&all, bridge_request("10.0.0.2", "8080")).is_none());
    }

    #[test]
    fn bridge_protocols_are_distinct() {
        let nodes = vec![node_with("n", Some(bound("", "53", "53/udp")))];
        let body = json!({"HostConfig": {"PortBindings": {"53/tcp": [{"HostPort": "53"}]}}});
        assert!(survivors(&nodes, body).is_some());
        let body = json!({"HostConfig": {"PortBindings": {"53/udp": [{"HostPort": "53"}]}}});
        assert!(survivors(&nodes, body).is_none());
    }

    #[test]
    fn unbound_ports_never_conflict() {
        let nodes = vec![node_with("n", Some(bound("", "", "80/tcp")))];
        assert!(survivors(&nodes, bridge_request("", "")).is_some());
        assert!(FilterKind::Port.conditions(&request(bridge_request("", ""))).is_empty());
    }

    #[test]
    fn pending_containers_hold_their_ports() {
        let mut pending = bound("", "8080", "80/tcp");
        pending.pending = true;
        pending.id.clear();
        let nodes = vec![node_with("n", Some(pending))];
        assert!(survivors(&nodes, bridge_request("", "8080")).is_none());
    }

    #[test]
    fn host_mode_checks_exposed_ports() {
        let mut host_c = ContainerSnapshot::new("h", "/h");
        host_c.network_mode = "host".into();
        host_c.exposed_ports.push("80/tcp".into());
        let mut bridge_c = ContainerSnapshot::new("b", "/b");
        bridge_c.exposed_ports.push("80/tcp".into());
        let nodes = vec![
            node_with("host-busy", Some(host_c.clone())),
            node_with("bridge-exposed-only", Some(bridge_c)),
            node_with("bridge-bound", Some(bound("", "80", "8000/tcp"))),
        ];
        let body = json!({"ExposedPorts": {"80/tcp": {}}, "HostConfig": {"NetworkMode": "host"}});
        assert_eq!(survivors(&nodes, body.clone()).unwrap(), ["bridge-exposed-only"]);
        assert_eq!(FilterKind::Port.conditions(&request(body)), ["port 80/tcp (Host mode)"]);
        // A bridge request for host port 80 also collides with the
        // host-mode container.
        assert_eq!(survivors(&nodes[..1], bridge_request("", "80")), None);
    }

    #[test]
    fn every_requested_port_must_be_free() {
        let nodes =
            vec![node_with("a", Some(bound("", "8080", "80/tcp"))), node_with("b", Some(bound("", "8443", "443/tcp")))];
        let body = json!({"HostConfig": {"PortBindings": {
            "80/tcp": [{"HostPort": "8080"}],
            "443/tcp": [{"HostPort": "8443"}]
        }}});
        assert_eq!(survivors(&nodes, body.clone()), None);
        // Key order follows the JSON map, which depends on serde_json's
        // features; compare as a set.
        let mut conditions = FilterKind::Port.conditions(&request(body));
        conditions.sort();
        assert_eq!(conditions, ["port 8080 (Bridge mode)", "port 8443 (Bridge mode)"]);
    }
}
