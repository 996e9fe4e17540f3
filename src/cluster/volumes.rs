//! Where a volume is created. Volumes are local to an engine: a create
//! without a node prefix makes the volume on every healthy engine, as the
//! original did, unless it carries placement rules; then it is made on every
//! engine the scheduler's filters allow, exactly as a container with those
//! rules could be placed there. The rules come as the container labels do
//! (`com.docker.swarm.constraints`, `…affinities`, `…whitelists`, JSON
//! arrays) or env-style, as driver options or labels
//! (`-o constraint:node==node-01`); a `node/name` name is a `node==`
//! constraint.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use swarm_scheduler::{ContainerRequest, ExprError, ScheduleError};
use thiserror::Error;

use super::engine::Engine;
use super::Cluster;

/// Prefixes of env-style placement rules (`constraint:node==node-01`).
const RULE_PREFIXES: [&str; 3] = ["constraint:", "affinity:", "whitelist:"];

/// Why a volume create cannot be placed.
#[derive(Debug, Error)]
pub enum VolumePlacementError {
    #[error("invalid JSON in request body: expected an object")]
    NotAnObject,
    #[error(transparent)]
    Expression(#[from] ExprError),
    #[error(transparent)]
    Unschedulable(#[from] ScheduleError),
}

impl Cluster {
    /// The engines a volume create goes to, best first, with `body` made
    /// ready for them: a `node/` prefix removed from the name, env-style
    /// rules taken out of the driver options (which the engine's driver
    /// would refuse) and labels, and every rule written into the
    /// `com.docker.swarm.*` labels, as for containers. An anonymous volume
    /// (no name) goes to one engine only: its generated name differs per
    /// engine.
    pub fn volume_targets(&self, body: &mut Value) -> Result<Vec<Arc<Engine>>, VolumePlacementError> {
        let Some(fields) = body.as_object_mut() else {
            return Err(VolumePlacementError::NotAnObject);
        };
        let mut rules = take_rules(fields, "DriverOpts");
        rules.extend(take_rules(fields, "Labels"));
        let name = fields.get("Name").and_then(Value::as_str).unwrap_or_default().to_string();
        if let Some((node, local)) = name.split_once('/') {
            if let Some(engine) = self.engine(node) {
                fields.insert("Name".into(), Value::String(local.to_string()));
                rules.push(format!("constraint:node=={}", engine.name()));
            }
        }
        let labels = fields.get("Labels").cloned().unwrap_or(Value::Null);
        let mut as_container = json!({"Labels": labels, "Env": rules});
        let request = ContainerRequest::from_create_body(None, &mut as_container)?;
        let has_rules =
            !(request.constraints().is_empty() && request.affinities().is_empty() && request.whitelists().is_empty());
        let mut engines = if has_rules {
            fields.insert("Labels".into(), as_container["Labels"].take());
            self.engines_matching(&request)?
        } else {
            let healthy = self.healthy_engines();
            if healthy.is_empty() {
                return Err(ScheduleError::NoHealthyNode.into());
            }
            healthy
        };
        if name.is_empty() {
            engines.truncate(1);
        }
        Ok(engines)
    }
}

/// Removes the env-style rules from the object `key` of `fields` and
/// returns them as env entries. The CLI splits `-o constraint:node==n1` at
/// the first `=` into `constraint:node` and `=n1`; joining them again with
/// `=` gives the rule back.
fn take_rules(fields: &mut Map<String, Value>, key: &str) -> Vec<String> {
    let Some(Value::Object(map)) = fields.get_mut(key) else {
        return Vec::new();
    };
    let keys: Vec<String> = map.keys().filter(|k| RULE_PREFIXES.iter().any(|p| k.starts_with(p))).cloned().collect();
    keys.into_iter()
        .filter_map(|k| {
            let value = map.remove(&k)?;
            Some(match value {
                Value::String(v) => format!("{k}={v}"),
                other => format!("{k}={other}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_env_style_rules_out_of_options_and_labels() {
        let mut body = json!({
            "DriverOpts": {"constraint:node": "=node-01", "type": "tmpfs"},
            "Labels": {"affinity:container": "=db", "team": "a"},
        });
        let fields = body.as_object_mut().unwrap();
        assert_eq!(take_rules(fields, "DriverOpts"), ["constraint:node==node-01"]);
        assert_eq!(take_rules(fields, "Labels"), ["affinity:container==db"]);
        assert!(take_rules(fields, "Missing").is_empty());
        assert_eq!(body, json!({"DriverOpts": {"type": "tmpfs"}, "Labels": {"team": "a"}}));
    }
}
