//! Networks across engines. Engines outside swarm mode refuse `overlay`,
//! so a network created without a node prefix and without a multi-host
//! driver is made as a bridge network of that name on every engine, and on
//! engines that join later: a cluster-wide network. Its create request is
//! kept in memory only, so after a manager restart the set is re-derived
//! from the engines.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use serde_json::{json, Value};
use thiserror::Error;

use super::engine::{Engine, NetworkRecord};
use super::Cluster;

/// The networks every engine predefines; each engine's own, never cluster-wide.
pub const BUILTIN_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

/// Where a network name points.
#[derive(Debug)]
pub enum NetworkTarget {
    /// A network present on every engine under this name.
    ClusterWide(String),
    /// One engine's network: (engine, that engine's network ID).
    OnNode(Arc<Engine>, String),
}

/// Why a network reference does not resolve.
#[derive(Debug, Error)]
pub enum NetworkLookupError {
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network {0} is ambiguous: it exists on several nodes; use node/{0}")]
    Ambiguous(String),
}

impl Cluster {
    /// Brings the cluster-wide set in line with the engines: a local,
    /// non-builtin network that every healthy engine (at least two) has
    /// under one name with one driver is cluster-wide (it was created
    /// through a manager before a restart, or through another manager), so
    /// it resolves and lists as one network and engines that join later get
    /// it; one that no healthy engine has any more is forgotten.
    pub fn sync_cluster_networks(&self) {
        let per_engine: Vec<Arc<Vec<NetworkRecord>>> = self.healthy_engines().iter().map(|e| e.networks()).collect();
        if per_engine.is_empty() {
            return;
        }
        let seen = local_networks(&per_engine);
        let mut cluster_wide = self.context.cluster_networks.lock();
        cluster_wide.retain(|name, _| seen.contains_key(name));
        if per_engine.len() < 2 {
            return;
        }
        for (name, (body, everywhere)) in seen {
            if everywhere {
                cluster_wide.entry(name).or_insert(body);
            }
        }
    }

    /// The names of the cluster-wide networks.
    pub fn cluster_network_names(&self) -> BTreeSet<String> {
        self.context.cluster_networks.lock().keys().cloned().collect()
    }

    /// True when `name` is taken by a cluster-wide network or by a network
    /// of one of `engines`.
    pub fn network_name_taken(&self, name: &str, engines: &[Arc<Engine>]) -> bool {
        self.context.cluster_networks.lock().contains_key(name)
            || engines.iter().any(|e| e.networks().iter().any(|n| n.name == name))
    }

    /// Records a network just created on every engine, so engines that join
    /// later get it too.
    pub fn add_cluster_network(&self, name: String, create_body: Value) {
        self.context.cluster_networks.lock().insert(name, create_body);
    }

    pub fn forget_cluster_network(&self, name: &str) {
        self.context.cluster_networks.lock().remove(name);
    }

    /// Resolves a network reference: a cluster-wide name, `node/name`, a
    /// name unique to one node, or an ID (prefix).
    pub fn resolve_network(&self, key: &str) -> Result<NetworkTarget, NetworkLookupError> {
        self.sync_cluster_networks();
        if self.context.cluster_networks.lock().contains_key(key) {
            return Ok(NetworkTarget::ClusterWide(key.to_string()));
        }
        if let Some((node, name)) = key.split_once('/') {
            if let Some(engine) = self.engine(node) {
                let found = engine.networks().iter().find(|n| n.name == name || n.id == name).map(|n| n.id.clone());
                if let Some(id) = found {
                    return Ok(NetworkTarget::OnNode(engine, id));
                }
            }
        }
        let cluster_wide: HashSet<String> = self.context.cluster_networks.lock().keys().cloned().collect();
        let mut by_name = Vec::new();
        let mut by_id = Vec::new();
        for engine in self.engines() {
            for n in engine.networks().iter() {
                if n.name == key {
                    by_name.push((engine.clone(), n.id.clone()));
                } else if n.id == key || (key.len() >= 3 && n.id.starts_with(key)) {
                    // The ID `docker network ls` shows for a cluster-wide
                    // network is one copy's: it stands for all of them.
                    if cluster_wide.contains(&n.name) {
                        return Ok(NetworkTarget::ClusterWide(n.name.clone()));
                    }
                    by_id.push((engine.clone(), n.id.clone()));
                }
            }
        }
        let mut candidates = if by_name.is_empty() { by_id } else { by_name };
        match (candidates.pop(), candidates.is_empty()) {
            (None, _) => Err(NetworkLookupError::NotFound(key.to_string())),
            (Some((engine, id)), true) => Ok(NetworkTarget::OnNode(engine, id)),
            (Some(_), false) => Err(NetworkLookupError::Ambiguous(key.to_string())),
        }
    }

    /// The first healthy engine with a network called `name`, and that
    /// network's ID there.
    pub fn first_with_network(&self, name: &str) -> Result<(Arc<Engine>, String), NetworkLookupError> {
        self.healthy_engines()
            .into_iter()
            .find_map(|e| {
                let id = e.networks().iter().find(|n| n.name == name).map(|n| n.id.clone());
                id.map(|id| (e, id))
            })
            .ok_or_else(|| NetworkLookupError::NotFound(name.to_string()))
    }

    /// Every engine with a network called `name`, with that network's ID there.
    pub fn holders_of_network(&self, name: &str) -> Vec<(Arc<Engine>, String)> {
        self.engines()
            .into_iter()
            .filter_map(|e| {
                let id = e.networks().iter().find(|n| n.name == name).map(|n| n.id.clone());
                id.map(|id| (e, id))
            })
            .collect()
    }
}

/// The local, non-builtin networks in some engine's list (one list per
/// engine): name → (a create request for it made from its first copy,
/// whether every engine has it with the same driver).
fn local_networks(per_engine: &[Arc<Vec<NetworkRecord>>]) -> BTreeMap<String, (Value, bool)> {
    // name → (create body, engines holding it, one driver so far)
    let mut seen: BTreeMap<String, (Value, usize, bool)> = BTreeMap::new();
    for networks in per_engine {
        let mut on_this_engine = HashSet::new();
        for n in networks.iter() {
            let name = n.name.as_str();
            if name.is_empty() || BUILTIN_NETWORKS.contains(&name) || n.scope != "local" || !on_this_engine.insert(name)
            {
                continue;
            }
            let entry = seen.entry(name.to_string()).or_insert_with(|| {
                let body = json!({
                    "Name": name, "Driver": n.driver, "Labels": n.labels,
                    "Options": n.options, "Internal": n.internal,
                    "EnableIPv6": n.enable_ipv6, "Attachable": n.attachable,
                });
                (body, 0, true)
            });
            entry.1 += 1;
            entry.2 &= entry.0["Driver"] == n.driver.as_str();
        }
    }
    seen.into_iter()
        .map(|(name, (body, holders, one_driver))| (name, (body, one_driver && holders == per_engine.len())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_networks_every_engine_has() {
        let net = |name: &str, driver: &str, scope: &str| json!({"Name": name, "Driver": driver, "Scope": scope, "Labels": {"l": "v"}});
        let engine =
            |nets: Vec<Value>| Arc::new(NetworkRecord::list_from(&serde_json::to_vec(&nets).unwrap()).unwrap());
        let seen = local_networks(&[
            engine(vec![
                net("bridge", "bridge", "local"),
                net("proj_default", "bridge", "local"),
                net("solo", "bridge", "local"),
                net("mixed", "bridge", "local"),
                net("ingress", "overlay", "swarm"),
            ]),
            engine(vec![
                net("bridge", "bridge", "local"),
                net("proj_default", "bridge", "local"),
                net("mixed", "macvlan", "local"),
                net("ingress", "overlay", "swarm"),
            ]),
        ]);
        let everywhere = |name: &str| seen.get(name).map(|(_, all)| *all);
        assert_eq!(everywhere("proj_default"), Some(true));
        assert_eq!(everywhere("solo"), Some(false));
        assert_eq!(everywhere("mixed"), Some(false));
        assert_eq!(everywhere("bridge"), None, "builtin networks are per node");
        assert_eq!(everywhere("ingress"), None, "only local networks");
        let body = &seen["proj_default"].0;
        assert_eq!(body["Name"], "proj_default");
        assert_eq!(body["Driver"], "bridge");
        assert_eq!(body["Labels"]["l"], "v");
    }
}
