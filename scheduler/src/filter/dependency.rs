//! Dependency filter: `--volumes-from`, `--link` and `--net=container:`
//! targets must all live on the chosen node.

use crate::lookup::find_container;
use crate::request::ContainerRequest;

use super::{retain_nonempty, Ctx, Unsatisfied};

/// Prefix of a `NetworkMode` that joins another container's stack.
const CONTAINER_NET_PREFIX: &str = "container:";

/// Names of the containers the request depends on.
fn dependencies(request: &ContainerRequest) -> impl Iterator<Item = &str> {
    let volumes = request.volumes_from.iter().map(|v| v.split_once(':').map_or(v.as_str(), |(name, _)| name));
    let links = request.links.iter().map(|l| l.split_once(':').map_or(l.as_str(), |(name, _)| name));
    let net = request.network_mode.strip_prefix(CONTAINER_NET_PREFIX);
    volumes.chain(links).chain(net)
}

/// Keeps the nodes holding every dependency.
pub(super) fn apply(ctx: &mut Ctx<'_>, candidates: &mut Vec<usize>) -> Result<(), Unsatisfied> {
    let (nodes, request) = (ctx.nodes, ctx.request);
    if candidates.is_empty() || dependencies(request).next().is_none() {
        return Ok(());
    }
    retain_nonempty(candidates, |&i| dependencies(request).all(|name| find_container(nodes[i], name).is_some()))
}

/// `--volumes-from=…`, `--link=…`, `--net=container:…` as given.
pub(super) fn conditions(request: &ContainerRequest) -> Vec<String> {
    let mut out: Vec<String> = request.volumes_from.iter().map(|v| format!("--volumes-from={v}")).collect();
    out.extend(request.links.iter().map(|l| format!("--link={l}")));
    if request.network_mode.starts_with(CONTAINER_NET_PREFIX) {
        out.push(format!("--net={}", request.network_mode));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::filter::test_support::{request, run};
    use crate::filter::FilterKind;
    use crate::snapshot::{ContainerSnapshot, NodeSnapshot};
    use serde_json::{json, Value};

    fn nodes() -> Vec<NodeSnapshot> {
        let mut n0 = NodeSnapshot::new("id0", "node-0", "");
        n0.add_container(ContainerSnapshot::new("c0aaaaaaaaaaaaaa", "/c0"));
        let mut n1 = NodeSnapshot::new("id1", "node-1", "");
        n1.add_container(ContainerSnapshot::new("c1bbbbbbbbbbbbbb", "/c1"));
        n1.add_container(ContainerSnapshot::new("c2cccccccccccccc", "/c2"));
        vec![n0, n1, NodeSnapshot::new("id2", "node-2", "")]
    }

    fn survivors(host_config: Value) -> Option<Vec<String>> {
        let req = request(json!({ "HostConfig": host_config }));
        run(FilterKind::Dependency, &nodes(), &req, true).ok()
    }

    #[test]
    fn no_dependencies_keeps_everything() {
        assert_eq!(survivors(json!({})).unwrap().len(), 3);
    }

    #[test]
    fn volumes_from_pins_to_the_node() {
        assert_eq!(survivors(json!({"VolumesFrom": ["c0"]})).unwrap(), ["node-0"]);
        assert_eq!(survivors(json!({"VolumesFrom": ["c1:ro"]})).unwrap(), ["node-1"]);
        assert_eq!(survivors(json!({"VolumesFrom": ["c1bbbb"]})).unwrap(), ["node-1"]);
        assert_eq!(survivors(json!({"VolumesFrom": ["nope"]})), None);
    }

    #[test]
    fn links_and_net_pin_to_the_node() {
        assert_eq!(survivors(json!({"Links": ["c2:db"]})).unwrap(), ["node-1"]);
        assert_eq!(survivors(json!({"Links": ["/c2:/me/db"]})).unwrap(), ["node-1"]);
        assert_eq!(survivors(json!({"NetworkMode": "container:c0"})).unwrap(), ["node-0"]);
        assert_eq!(survivors(json!({"NetworkMode": "bridge"})).unwrap().len(), 3);
    }

    #[test]
    fn all_dependencies_must_be_on_one_node() {
        assert_eq!(survivors(json!({"VolumesFrom": ["c1"], "Links": ["c2:x"]})).unwrap(), ["node-1"]);
        assert_eq!(survivors(json!({"VolumesFrom": ["c0"], "Links": ["c2:x"]})), None);
    }

    #[test]
    fn conditions_list_the_flags() {
        let req = request(json!({"HostConfig": {
            "VolumesFrom": ["c0:ro"], "Links": ["c2:db"], "NetworkMode": "container:c1"
        }}));
        assert_eq!(
            FilterKind::Dependency.conditions(&req),
            ["--volumes-from=c0:ro", "--link=c2:db", "--net=container:c1"]
        );
    }
}
