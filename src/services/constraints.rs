//! Swarm-mode placement constraints (`--constraint node.labels.zone==a`):
//! parsed once, evaluated against a node (global services choose their
//! nodes here) and turned into the classic `constraint:` environment entries
//! that `Cluster::create_container` hands to the scheduler (replicated
//! services are placed by the classic scheduler).
//!
//! The mapping, key by key:
//!
//! | swarm mode                    | classic                     |
//! |-------------------------------|-----------------------------|
//! | `node.id==x`                  | `constraint:node==x` (the classic `node` key matches the engine ID or name) |
//! | `node.hostname==x`            | `constraint:node==x`        |
//! | `node.labels.k==v`            | `constraint:k==v`           |
//! | `engine.labels.k==v`          | `constraint:k==v`           |
//! | `node.platform.os==linux`     | `constraint:ostype==linux`  |
//! | `node.role==worker`, `node.role!=manager` | dropped: always true |
//! | `node.role==manager`, `node.role!=worker` | refused: [`ConstraintError::NoManagers`] |
//! | `node.platform.arch==...`     | refused: engines carry no architecture label |
//!
//! Every engine is a worker: the managers are `swarm manage` processes, not
//! engines, so a service asking for a manager could never run and is refused
//! when created rather than left pending forever. Node labels and engine
//! labels are one set here: the classic scheduler sees engine labels, so
//! labels added with `docker node update --label-add` only constrain
//! replicated services if the lead folds them into the scheduler's view.
//!
//! Values differ slightly: swarm mode compares them literally and without
//! case, the classic scheduler as case-sensitive globs (`*`) or `/regex/`.

use swarm_scheduler::{Expr, ExprError, ExprKind};
use thiserror::Error;

use super::plan::NodeView;

/// Why a placement constraint cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConstraintError {
    #[error("invalid constraint {0:?}: expected key==value or key!=value")]
    Malformed(String),
    #[error("invalid constraint {expr:?}: unknown key {key:?}")]
    UnknownKey { expr: String, key: String },
    #[error("constraint {0:?} cannot be met: the engines of a classic cluster are all workers")]
    NoManagers(String),
    #[error("constraint {0:?} is not supported: engines report no architecture to the scheduler")]
    NoArchitecture(String),
    #[error(transparent)]
    Classic(#[from] ExprError),
}

/// What a constraint compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstraintKey {
    NodeId,
    NodeHostname,
    NodeRole,
    NodeOs,
    NodeArch,
    /// `node.labels.<k>` or `engine.labels.<k>`: one label set here.
    Label(String),
}

/// A parsed swarm-mode constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The text as sent; errors name it.
    raw: String,
    key: ConstraintKey,
    /// `true` for `==`, `false` for `!=`.
    equal: bool,
    /// Right-hand side, trimmed; never empty.
    value: String,
}

impl Constraint {
    /// Parses `key==value` / `key!=value` (the first `==` wins, as in swarmkit).
    pub fn parse(raw: &str) -> Result<Constraint, ConstraintError> {
        let malformed = || ConstraintError::Malformed(raw.to_string());
        let (key, equal, value) = if let Some((k, v)) = raw.split_once("==") {
            (k, true, v)
        } else if let Some((k, v)) = raw.split_once("!=") {
            (k, false, v)
        } else {
            return Err(malformed());
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(malformed());
        }
        let label = |prefix: &str| key.strip_prefix(prefix).filter(|k| !k.is_empty()).map(str::to_string);
        let key = match key {
            "node.id" => ConstraintKey::NodeId,
            "node.hostname" => ConstraintKey::NodeHostname,
            "node.role" => ConstraintKey::NodeRole,
            "node.platform.os" => ConstraintKey::NodeOs,
            "node.platform.arch" => ConstraintKey::NodeArch,
            _ => match label("node.labels.").or_else(|| label("engine.labels.")) {
                Some(k) => ConstraintKey::Label(k),
                None => return Err(ConstraintError::UnknownKey { expr: raw.to_string(), key: key.to_string() }),
            },
        };
        Ok(Constraint { raw: raw.to_string(), key, equal, value: value.to_string() })
    }

    /// Whether `node` satisfies the constraint, with swarm mode's
    /// case-insensitive literal comparison (a missing label is "").
    pub fn matches(&self, node: &NodeView) -> bool {
        let role_worker = "worker";
        let actual = match &self.key {
            ConstraintKey::NodeId => node.id.as_str(),
            ConstraintKey::NodeHostname => node.name.as_str(),
            ConstraintKey::NodeRole => role_worker,
            ConstraintKey::NodeOs => node.labels.get("ostype").map_or("", String::as_str),
            ConstraintKey::NodeArch => node.labels.get("architecture").map_or("", String::as_str),
            ConstraintKey::Label(k) => node.labels.get(k).map_or("", String::as_str),
        };
        actual.eq_ignore_ascii_case(&self.value) == self.equal
    }

    /// The classic `constraint:` environment entry, `None` when the
    /// constraint holds on every engine.
    pub fn to_classic(&self) -> Result<Option<String>, ConstraintError> {
        let op = if self.equal { "==" } else { "!=" };
        let key = match &self.key {
            ConstraintKey::NodeId | ConstraintKey::NodeHostname => "node",
            ConstraintKey::NodeOs => "ostype",
            ConstraintKey::Label(k) => k.as_str(),
            ConstraintKey::NodeArch => return Err(ConstraintError::NoArchitecture(self.raw.clone())),
            ConstraintKey::NodeRole => {
                let wants_worker = self.value.eq_ignore_ascii_case("worker") == self.equal;
                return if wants_worker { Ok(None) } else { Err(ConstraintError::NoManagers(self.raw.clone())) };
            }
        };
        let expr = format!("{key}{op}{}", self.value);
        // Parsed here so that a value the classic grammar refuses fails at
        // `service create`, not at every create of a task.
        Expr::parse(ExprKind::Constraint, &expr)?;
        Ok(Some(format!("constraint:{expr}")))
    }
}

/// Parses every constraint of a service.
pub fn parse_all(constraints: &[String]) -> Result<Vec<Constraint>, ConstraintError> {
    constraints.iter().map(|c| Constraint::parse(c)).collect()
}

/// The classic environment entries for a service's constraints; what
/// `service create` should validate with.
pub fn to_classic_env(constraints: &[String]) -> Result<Vec<String>, ConstraintError> {
    let mut out = Vec::new();
    for c in parse_all(constraints)? {
        out.extend(c.to_classic()?);
    }
    Ok(out)
}

/// Whether `node` satisfies all constraints; unparsable ones match nothing.
pub fn node_matches(constraints: &[String], node: &NodeView) -> bool {
    constraints.iter().all(|c| Constraint::parse(c).is_ok_and(|c| c.matches(node)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::model::Availability;

    fn node() -> NodeView {
        let mut n = NodeView::new("ENGINE:ID", "node-01");
        n.labels.insert("zone".into(), "East".into());
        n.labels.insert("ostype".into(), "linux".into());
        n.availability = Availability::Active;
        n
    }

    #[test]
    fn maps_to_classic_entries() {
        let cases: &[(&str, Option<&str>)] = &[
            ("node.hostname==node-01", Some("constraint:node==node-01")),
            ("node.id==abc", Some("constraint:node==abc")),
            ("node.labels.zone==east", Some("constraint:zone==east")),
            ("engine.labels.storage!=hdd", Some("constraint:storage!=hdd")),
            ("node.platform.os==linux", Some("constraint:ostype==linux")),
            (" node.labels.zone == east ", Some("constraint:zone==east")),
            ("node.role==worker", None),
            ("node.role!=manager", None),
        ];
        for (swarm, classic) in cases {
            let got = Constraint::parse(swarm).unwrap().to_classic().unwrap();
            assert_eq!(got.as_deref(), *classic, "{swarm}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_met_or_read() {
        let err = |c: &str| Constraint::parse(c).and_then(|c| c.to_classic()).unwrap_err();
        assert!(matches!(err("node.role==manager"), ConstraintError::NoManagers(_)));
        assert!(matches!(err("node.role!=worker"), ConstraintError::NoManagers(_)));
        assert!(matches!(err("node.platform.arch==x86_64"), ConstraintError::NoArchitecture(_)));
        assert!(matches!(err("zone==a"), ConstraintError::UnknownKey { .. }));
        assert!(matches!(err("node.labels.==a"), ConstraintError::UnknownKey { .. }));
        assert!(matches!(err("node.hostname"), ConstraintError::Malformed(_)));
        assert!(matches!(err("node.hostname=="), ConstraintError::Malformed(_)));
        // A one-character label key is refused by the classic grammar.
        assert!(matches!(err("node.labels.k==v"), ConstraintError::Classic(_)));
    }

    #[test]
    fn evaluates_against_a_node_without_case() {
        let n = node();
        for (c, want) in [
            ("node.hostname==NODE-01", true),
            ("node.id==engine:id", true),
            ("node.labels.zone==east", true),
            ("node.labels.zone!=east", false),
            ("node.labels.rack!=r1", true),
            ("node.labels.rack==r1", false),
            ("node.role==worker", true),
            ("node.role==manager", false),
            ("node.platform.os==linux", true),
        ] {
            assert_eq!(Constraint::parse(c).unwrap().matches(&n), want, "{c}");
        }
        assert!(node_matches(&["node.labels.zone==east".into(), "node.role!=manager".into()], &n));
        assert!(!node_matches(&["garbage".into()], &n));
    }

    #[test]
    fn classic_env_for_a_service() {
        let env = to_classic_env(&["node.role==worker".into(), "node.labels.zone==east".into()]).unwrap();
        assert_eq!(env, ["constraint:zone==east"]);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Constraints as `docker service create --constraint` sends them:
    /// known keys and label keys, either operator, any value.
    fn constraint_like() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("node.id".to_string()),
            Just("node.hostname".to_string()),
            Just("node.role".to_string()),
            Just("node.platform.os".to_string()),
            Just("node.platform.arch".to_string()),
            "(node|engine)\\.labels\\.[a-z.]{0,6}",
            "[a-z. ]{0,10}",
        ];
        let op = prop_oneof![Just("=="), Just("!="), Just("="), Just("")];
        let value = prop_oneof!["[a-zA-Z0-9*/ ~=!]{0,8}", ".{0,6}"];
        (key, op, value).prop_map(|(key, op, value)| format!("{key}{op}{value}"))
    }

    proptest! {
        /// Any constraint parses or is refused; a parsed one matches a node
        /// or not and has a classic form or a reason not to.
        #[test]
        fn constraints_never_panic(raw in constraint_like(), any_raw in any::<String>()) {
            let mut node = NodeView::new("id", "node-01");
            node.labels.insert("ostype".into(), "linux".into());
            for text in [&raw, &any_raw] {
                if let Ok(c) = Constraint::parse(text) {
                    let _ = c.matches(&node);
                    if let Ok(Some(env)) = c.to_classic() {
                        prop_assert!(env.starts_with("constraint:"));
                    }
                }
                let _ = to_classic_env(std::slice::from_ref(text));
            }
        }
    }
}
