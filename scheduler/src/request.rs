//! What a `POST /containers/create` asks of the scheduler.
//!
//! [`ContainerRequest::from_create_body`] reads the Docker create body,
//! takes the `constraint:`, `affinity:`, `whitelist:` and `reschedule:`
//! entries out of `Env` (the engine must not see them) and stores the
//! combined lists back into the `com.docker.swarm.*` labels, so they survive
//! in `docker inspect` and when the container is rescheduled.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{ExprError, ExprKind, RescheduleError};
use crate::expr::Expr;
use crate::json;
use crate::snapshot::{cpus_from_nano, PortBinding};

/// Label holding the constraints, a JSON array of strings.
pub const CONSTRAINTS_LABEL: &str = "com.docker.swarm.constraints";
/// Label holding the affinities, a JSON array of strings.
pub const AFFINITIES_LABEL: &str = "com.docker.swarm.affinities";
/// Label holding the whitelists, a JSON array of strings.
pub const WHITELISTS_LABEL: &str = "com.docker.swarm.whitelists";
/// Label holding the reschedule policies, a JSON array of strings.
pub const RESCHEDULE_POLICIES_LABEL: &str = "com.docker.swarm.reschedule-policies";

/// Reschedule policies the original accepted.
pub const VALID_RESCHEDULE_POLICIES: [&str; 2] = ["off", "on-node-failure"];

/// A container creation as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRequest {
    /// Requested container name (`?name=`), if any.
    pub name: Option<String>,
    /// `Image` of the create body.
    pub image: String,
    /// The container labels after the expressions were written back
    /// (string-valued labels only).
    pub labels: BTreeMap<String, String>,
    /// CPUs to reserve, in whole CPUs: `CpuShares` read as a CPU count (the
    /// original's meaning of `-c N`), else `NanoCpus` rounded up.
    pub cpus: i64,
    /// Memory to reserve in bytes (`HostConfig.Memory`, else `Memory`).
    pub memory: i64,
    /// `HostConfig.NetworkMode`.
    pub network_mode: String,
    /// `ExposedPorts` keys, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// `HostConfig.PortBindings`, one entry per requested binding.
    pub port_bindings: Vec<PortBinding>,
    /// `HostConfig.VolumesFrom` entries as given (`name[:ro]`).
    pub volumes_from: Vec<String>,
    /// `HostConfig.Links` entries as given (`name:alias`).
    pub links: Vec<String>,
    /// Parsed constraints, label ones first, then env ones.
    constraints: Vec<Expr>,
    /// Parsed affinities, label ones first, then env ones.
    affinities: Vec<Expr>,
    /// Parsed whitelists, label ones first, then env ones.
    whitelists: Vec<Expr>,
    /// Reschedule policies as given (not validated here).
    reschedule_policies: Vec<String>,
}

impl ContainerRequest {
    /// Parses a Docker create body, moving the scheduling entries out of
    /// `Env` into the `com.docker.swarm.*` labels of `body`.
    ///
    /// On error `body` is left untouched. Fields of the wrong JSON type that
    /// the scheduler needs are errors rather than silently ignored.
    pub fn from_create_body(name: Option<&str>, body: &mut Value) -> Result<ContainerRequest, ExprError> {
        let Value::Object(root) = &*body else {
            return Err(ExprError::BadField { field: "body".to_string(), expected: "a JSON object" });
        };
        let parsed = Parsed::read(root)?;
        let request = parsed.build(name)?;
        write_back(body, &parsed.kept_env, &request);
        Ok(request)
    }

    /// The constraints, in order.
    pub fn constraints(&self) -> &[Expr] {
        &self.constraints
    }

    /// The affinities, in order.
    pub fn affinities(&self) -> &[Expr] {
        &self.affinities
    }

    /// The whitelists, in order.
    pub fn whitelists(&self) -> &[Expr] {
        &self.whitelists
    }

    /// The reschedule policies, in order.
    pub fn reschedule_policies(&self) -> &[String] {
        &self.reschedule_policies
    }

    /// Adds a constraint (e.g. when rescheduling pins a container).
    pub fn add_constraint(&mut self, raw: &str) -> Result<(), ExprError> {
        self.constraints.push(Expr::parse(ExprKind::Constraint, raw)?);
        Ok(())
    }

    /// Adds an affinity.
    pub fn add_affinity(&mut self, raw: &str) -> Result<(), ExprError> {
        self.affinities.push(Expr::parse(ExprKind::Affinity, raw)?);
        Ok(())
    }

    /// Adds a whitelist.
    pub fn add_whitelist(&mut self, raw: &str) -> Result<(), ExprError> {
        self.whitelists.push(Expr::parse(ExprKind::Whitelist, raw)?);
        Ok(())
    }

    /// Adds a reschedule policy.
    pub fn add_reschedule_policy(&mut self, policy: &str) {
        self.reschedule_policies.push(policy.to_string());
    }

    /// Whether any expression is soft (so a failed placement is retried
    /// without them).
    pub fn has_soft_expressions(&self) -> bool {
        self.constraints.iter().chain(&self.affinities).chain(&self.whitelists).any(Expr::is_soft)
    }

    /// Whether a hard `node==` constraint pins the container to a node.
    pub fn has_node_constraint(&self) -> bool {
        self.constraints.iter().any(|c| c.raw().starts_with("node==") && !c.raw().starts_with("node==~"))
    }

    /// Whether `policy` is among the reschedule policies.
    pub fn has_reschedule_policy(&self, policy: &str) -> bool {
        self.reschedule_policies.iter().any(|p| p == policy)
    }

    /// Checks the reschedule policies like the original: at most one, and
    /// one of [`VALID_RESCHEDULE_POLICIES`].
    pub fn validate_reschedule_policies(&self) -> Result<(), RescheduleError> {
        match self.reschedule_policies.as_slice() {
            [] => Ok(()),
            [one] if VALID_RESCHEDULE_POLICIES.contains(&one.as_str()) => Ok(()),
            [one] => Err(RescheduleError::Invalid(one.clone())),
            _ => Err(RescheduleError::TooMany),
        }
    }
}

/// Everything read from the body before anything is modified.
struct Parsed {
    image: String,
    /// `Env` without the scheduling entries; `None` when `Env` was absent.
    kept_env: Option<Vec<String>>,
    labels: BTreeMap<String, String>,
    constraints: Vec<String>,
    affinities: Vec<String>,
    whitelists: Vec<String>,
    reschedule_policies: Vec<String>,
    cpus: i64,
    memory: i64,
    network_mode: String,
    exposed_ports: Vec<String>,
    port_bindings: Vec<PortBinding>,
    volumes_from: Vec<String>,
    links: Vec<String>,
}

impl Parsed {
    fn read(root: &Map<String, Value>) -> Result<Parsed, ExprError> {
        let image = json::string(root, "Image", "Image")?.unwrap_or("").to_string();
        let labels_obj = json::object(root, "Labels", "Labels")?;
        let labels = labels_obj.map(json::string_entries).unwrap_or_default();
        let mut constraints = label_list(labels_obj, CONSTRAINTS_LABEL)?;
        let mut affinities = label_list(labels_obj, AFFINITIES_LABEL)?;
        let mut whitelists = label_list(labels_obj, WHITELISTS_LABEL)?;
        let mut reschedule_policies = label_list(labels_obj, RESCHEDULE_POLICIES_LABEL)?;

        let kept_env = json::string_array(root, "Env", "Env")?.map(|env| {
            let mut kept = Vec::with_capacity(env.len());
            for entry in env {
                match entry.split_once(':') {
                    Some(("constraint", v)) => constraints.push(v.to_string()),
                    Some(("affinity", v)) => affinities.push(v.to_string()),
                    Some(("whitelist", v)) => whitelists.push(v.to_string()),
                    Some(("reschedule", v)) => reschedule_policies.push(v.to_string()),
                    _ => kept.push(entry),
                }
            }
            kept
        });

        let host = json::object(root, "HostConfig", "HostConfig")?;
        let empty = Map::new();
        let host = host.unwrap_or(&empty);
        // Old API versions carried Memory/CpuShares at the top level; the
        // original consolidated both places, preferring a non-zero value.
        let memory = match json::non_negative_int(host, "Memory", "HostConfig.Memory")? {
            0 => json::non_negative_int(root, "Memory", "Memory")?,
            m => m,
        };
        let shares = match json::non_negative_int(host, "CpuShares", "HostConfig.CpuShares")? {
            0 => json::non_negative_int(root, "CpuShares", "CpuShares")?,
            s => s,
        };
        let cpus = if shares > 0 {
            shares
        } else {
            cpus_from_nano(json::non_negative_int(host, "NanoCpus", "HostConfig.NanoCpus")?)
        };
        let network_mode = json::string(host, "NetworkMode", "HostConfig.NetworkMode")?.unwrap_or("").to_string();
        let exposed_ports = json::object(root, "ExposedPorts", "ExposedPorts")?
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let port_bindings = read_port_bindings(host)?;
        let volumes_from = json::string_array(host, "VolumesFrom", "HostConfig.VolumesFrom")?.unwrap_or_default();
        let links = json::string_array(host, "Links", "HostConfig.Links")?.unwrap_or_default();

        Ok(Parsed {
            image,
            kept_env,
            labels,
            constraints,
            affinities,
            whitelists,
            reschedule_policies,
            cpus,
            memory,
            network_mode,
            exposed_ports,
            port_bindings,
            volumes_from,
            links,
        })
    }

    fn build(&self, name: Option<&str>) -> Result<ContainerRequest, ExprError> {
        let parse_all = |kind, raws: &[String]| -> Result<Vec<Expr>, ExprError> {
            raws.iter().map(|raw| Expr::parse(kind, raw)).collect()
        };
        let mut labels = self.labels.clone();
        for (label, list) in [
            (CONSTRAINTS_LABEL, &self.constraints),
            (AFFINITIES_LABEL, &self.affinities),
            (WHITELISTS_LABEL, &self.whitelists),
            (RESCHEDULE_POLICIES_LABEL, &self.reschedule_policies),
        ] {
            if !list.is_empty() {
                labels.insert(label.to_string(), encode_list(list));
            }
        }
        Ok(ContainerRequest {
            name: name.map(str::to_string),
            image: self.image.clone(),
            labels,
            cpus: self.cpus,
            memory: self.memory,
            network_mode: self.network_mode.clone(),
            exposed_ports: self.exposed_ports.clone(),
            port_bindings: self.port_bindings.clone(),
            volumes_from: self.volumes_from.clone(),
            links: self.links.clone(),
            constraints: parse_all(ExprKind::Constraint, &self.constraints)?,
            affinities: parse_all(ExprKind::Affinity, &self.affinities)?,
            whitelists: parse_all(ExprKind::Whitelist, &self.whitelists)?,
            reschedule_policies: self.reschedule_policies.clone(),
        })
    }
}

/// Reads one of the `com.docker.swarm.*` list labels. An empty value or
/// JSON `null` is an empty list.
fn label_list(labels: Option<&Map<String, Value>>, label: &str) -> Result<Vec<String>, ExprError> {
    let bad = |value: String| ExprError::BadLabel { label: label.to_string(), value };
    match labels.and_then(|l| l.get(label)) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => {
            serde_json::from_str::<Option<Vec<String>>>(s).map(Option::unwrap_or_default).map_err(|_| bad(s.clone()))
        }
        Some(other) => Err(bad(other.to_string())),
    }
}

fn encode_list(list: &[String]) -> String {
    // Serializing a list of strings cannot fail.
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_string())
}

fn read_port_bindings(host: &Map<String, Value>) -> Result<Vec<PortBinding>, ExprError> {
    const PATH: &str = "HostConfig.PortBindings";
    let Some(map) = json::object(host, "PortBindings", PATH)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (key, list) in map {
        let items = match list {
            Value::Null => continue,
            Value::Array(items) => items,
            _ => {
                return Err(ExprError::BadField {
                    field: format!("{PATH}.{key}"),
                    expected: "an array of port bindings",
                })
            }
        };
        for item in items {
            let Value::Object(binding) = item else {
                return Err(ExprError::BadField {
                    field: format!("{PATH}.{key}"),
                    expected: "an array of port bindings",
                });
            };
            out.push(PortBinding {
                container_port: key.clone(),
                host_ip: json::scalar_string(binding.get("HostIp"), "HostIp")?,
                host_port: json::scalar_string(binding.get("HostPort"), "HostPort")?,
            });
        }
    }
    Ok(out)
}

/// Applies the env removal and label write-back to the body. Only called
/// once everything parsed, so errors never leave a half-edited body.
fn write_back(body: &mut Value, kept_env: &Option<Vec<String>>, request: &ContainerRequest) {
    let Value::Object(root) = body else {
        return;
    };
    if let Some(env) = kept_env {
        root.insert("Env".to_string(), Value::Array(env.iter().cloned().map(Value::String).collect()));
    }
    let lists = [
        (CONSTRAINTS_LABEL, &request.constraints),
        (AFFINITIES_LABEL, &request.affinities),
        (WHITELISTS_LABEL, &request.whitelists),
    ];
    let needs_labels = lists.iter().any(|(_, l)| !l.is_empty()) || !request.reschedule_policies.is_empty();
    if !needs_labels {
        return;
    }
    let labels = root.entry("Labels").or_insert_with(|| Value::Object(Map::new()));
    if !labels.is_object() {
        // Only `null` can get here (other types were rejected while parsing).
        *labels = Value::Object(Map::new());
    }
    let Value::Object(labels) = labels else {
        return;
    };
    for (label, exprs) in lists {
        if !exprs.is_empty() {
            let raws: Vec<String> = exprs.iter().map(|e| e.raw().to_string()).collect();
            labels.insert(label.to_string(), Value::String(encode_list(&raws)));
        }
    }
    if !request.reschedule_policies.is_empty() {
        labels.insert(RESCHEDULE_POLICIES_LABEL.to_string(), Value::String(encode_list(&request.reschedule_policies)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExprProblem;
    use serde_json::json;

    fn parse(mut body: Value) -> (Result<ContainerRequest, ExprError>, Value) {
        let r = ContainerRequest::from_create_body(Some("web"), &mut body);
        (r, body)
    }

    #[test]
    fn moves_env_expressions_into_labels() {
        let (r, body) = parse(json!({
            "Image": "nginx",
            "Env": ["A=1", "constraint:storage==ssd", "affinity:container==db",
                    "whitelist:node==n1|n2", "reschedule:on-node-failure", "B=constraint:x"],
        }));
        let r = r.unwrap();
        assert_eq!(body["Env"], json!(["A=1", "B=constraint:x"]));
        assert_eq!(body["Labels"][CONSTRAINTS_LABEL], json!("[\"storage==ssd\"]"));
        assert_eq!(body["Labels"][AFFINITIES_LABEL], json!("[\"container==db\"]"));
        assert_eq!(body["Labels"][WHITELISTS_LABEL], json!("[\"node==n1|n2\"]"));
        assert_eq!(body["Labels"][RESCHEDULE_POLICIES_LABEL], json!("[\"on-node-failure\"]"));
        assert_eq!(r.constraints()[0].to_string(), "storage==ssd");
        assert_eq!(r.affinities()[0].key(), "container");
        assert_eq!(r.whitelists()[0].value(), "n1|n2");
        assert_eq!(r.reschedule_policies(), ["on-node-failure"]);
        assert!(r.has_reschedule_policy("on-node-failure"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.image, "nginx");
        assert_eq!(r.labels.get(CONSTRAINTS_LABEL).map(String::as_str), Some("[\"storage==ssd\"]"));
    }

    #[test]
    fn label_expressions_come_first_and_are_kept() {
        let (r, body) = parse(json!({
            "Env": ["constraint:zone==b"],
            "Labels": {CONSTRAINTS_LABEL: "[\"region==us\"]", "app": "x"},
        }));
        let r = r.unwrap();
        let raws: Vec<&str> = r.constraints().iter().map(Expr::raw).collect();
        assert_eq!(raws, ["region==us", "zone==b"]);
        assert_eq!(body["Labels"][CONSTRAINTS_LABEL], json!("[\"region==us\",\"zone==b\"]"));
        assert_eq!(body["Labels"]["app"], json!("x"));
        assert_eq!(body["Env"], json!([]));
    }

    #[test]
    fn nothing_to_move_leaves_labels_alone() {
        let (r, body) = parse(json!({"Image": "x", "Env": ["A=1"]}));
        r.unwrap();
        assert!(body.get("Labels").is_none());
        let (r, body) = parse(json!({"Image": "x", "Labels": null}));
        r.unwrap();
        assert_eq!(body["Labels"], Value::Null);
    }

    #[test]
    fn null_labels_are_replaced_when_needed() {
        let (r, body) = parse(json!({"Env": ["affinity:image==redis"], "Labels": null}));
        r.unwrap();
        assert_eq!(body["Labels"][AFFINITIES_LABEL], json!("[\"image==redis\"]"));
    }

    #[test]
    fn malformed_expression_is_an_error_and_body_is_untouched() {
        let original = json!({"Env": ["A=1", "constraint:storage=ssd"]});
        let (r, body) = parse(original.clone());
        let err = r.unwrap_err();
        assert_eq!(
            err,
            ExprError::Malformed {
                kind: ExprKind::Constraint,
                expr: "storage=ssd".into(),
                problem: ExprProblem::MissingOperator,
            }
        );
        assert_eq!(body, original);
        let (r, _) = parse(json!({"Env": ["constraint:"]}));
        assert!(r.is_err());
    }

    #[test]
    fn bad_label_json_is_an_error() {
        let (r, _) = parse(json!({"Labels": {AFFINITIES_LABEL: "not json"}}));
        assert!(matches!(r, Err(ExprError::BadLabel { .. })));
        let (r, _) = parse(json!({"Labels": {AFFINITIES_LABEL: "[1]"}}));
        assert!(matches!(r, Err(ExprError::BadLabel { .. })));
        let (r, _) = parse(json!({"Labels": {AFFINITIES_LABEL: ["x==y"]}}));
        assert!(matches!(r, Err(ExprError::BadLabel { .. })));
        let (r, _) = parse(json!({"Labels": {AFFINITIES_LABEL: ""}}));
        assert!(r.unwrap().affinities().is_empty());
        let (r, _) = parse(json!({"Labels": {AFFINITIES_LABEL: "null"}}));
        assert!(r.unwrap().affinities().is_empty());
    }

    #[test]
    fn wrong_types_are_clear_errors() {
        for (body, field) in [
            (json!([]), "body"),
            (json!({"Env": "A=1"}), "Env"),
            (json!({"Env": [1]}), "Env"),
            (json!({"Labels": []}), "Labels"),
            (json!({"Image": 3}), "Image"),
            (json!({"HostConfig": 1}), "HostConfig"),
            (json!({"HostConfig": {"Links": "a:b"}}), "HostConfig.Links"),
            (json!({"HostConfig": {"Memory": "1g"}}), "HostConfig.Memory"),
            (json!({"HostConfig": {"PortBindings": {"80/tcp": "x"}}}), "HostConfig.PortBindings.80/tcp"),
            (json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": []}]}}}), "HostPort"),
        ] {
            let (r, _) = parse(body.clone());
            match r {
                Err(ExprError::BadField { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("expected BadField for {body}, got {other:?}"),
            }
        }
    }

    #[test]
    fn resources_are_read() {
        let (r, _) = parse(json!({"HostConfig": {"Memory": 1024, "CpuShares": 2}}));
        let r = r.unwrap();
        assert_eq!((r.cpus, r.memory), (2, 1024));
        let (r, _) = parse(json!({"Memory": 512, "CpuShares": 1, "HostConfig": {}}));
        let r = r.unwrap();
        assert_eq!((r.cpus, r.memory), (1, 512));
        let (r, _) = parse(json!({"HostConfig": {"NanoCpus": 1_500_000_000u64}}));
        assert_eq!(r.unwrap().cpus, 2);
        let (r, _) = parse(json!({"HostConfig": {"NanoCpus": 1, "CpuShares": 3}}));
        assert_eq!(r.unwrap().cpus, 3);
        let (r, _) = parse(json!({"HostConfig": {"Memory": -1}}));
        assert_eq!(r.unwrap().memory, 0);
    }

    #[test]
    fn ports_and_dependencies_are_read() {
        let (r, _) = parse(json!({
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
            "HostConfig": {
                "NetworkMode": "container:db",
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostPort": 8081}], "53/udp": null},
                "VolumesFrom": ["data:ro"],
                "Links": ["db:database"]
            }
        }));
        let mut r = r.unwrap();
        r.exposed_ports.sort();
        assert_eq!(r.exposed_ports, vec!["53/udp", "80/tcp"]);
        assert_eq!(
            r.port_bindings,
            vec![PortBinding::new("80/tcp", "", "8080"), PortBinding::new("80/tcp", "", "8081")]
        );
        assert_eq!(r.network_mode, "container:db");
        assert_eq!(r.volumes_from, vec!["data:ro"]);
        assert_eq!(r.links, vec!["db:database"]);
    }

    #[test]
    fn soft_and_node_constraint_flags() {
        let (r, _) = parse(json!({"Env": ["constraint:node==~n1"]}));
        let r = r.unwrap();
        assert!(r.has_soft_expressions());
        assert!(!r.has_node_constraint());
        let (r, _) = parse(json!({"Env": ["constraint:node==n1"]}));
        let r = r.unwrap();
        assert!(!r.has_soft_expressions());
        assert!(r.has_node_constraint());
    }

    #[test]
    fn reschedule_policy_validation() {
        let mut r = ContainerRequest::default();
        assert!(r.validate_reschedule_policies().is_ok());
        r.add_reschedule_policy("on-node-failure");
        assert!(r.validate_reschedule_policies().is_ok());
        r.add_reschedule_policy("off");
        assert_eq!(r.validate_reschedule_policies(), Err(RescheduleError::TooMany));
        let mut r = ContainerRequest::default();
        r.add_reschedule_policy("sometimes");
        assert_eq!(r.validate_reschedule_policies().unwrap_err().to_string(), "invalid reschedule policy: sometimes");
    }

    #[test]
    fn programmatic_expressions() {
        let mut r = ContainerRequest::default();
        r.add_constraint("node==n1").unwrap();
        r.add_affinity("image==redis").unwrap();
        r.add_whitelist("node==a|b").unwrap();
        assert!(r.add_constraint("bad").is_err());
        assert_eq!(r.constraints().len(), 1);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON values, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z:=~!/ ]{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("constraint:storage==ssd"),
                Just("affinity:container!=~db"),
                Just("whitelist:node==a|b"),
                Just("reschedule:on-node-failure"),
                Just("constraint:bad"),
                Just("[\"node==x\"]"),
                Just("[1, 2]"),
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(field_name(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Field names that the parser looks at, plus noise.
    fn field_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Env"),
            Just("Labels"),
            Just("Image"),
            Just("HostConfig"),
            Just("ExposedPorts"),
            Just("PortBindings"),
            Just("HostPort"),
            Just("HostIp"),
            Just("NetworkMode"),
            Just("VolumesFrom"),
            Just("Links"),
            Just("Memory"),
            Just("CpuShares"),
            Just("NanoCpus"),
            Just("80/tcp"),
            Just(CONSTRAINTS_LABEL),
            Just(AFFINITIES_LABEL),
            Just(WHITELISTS_LABEL),
            Just(RESCHEDULE_POLICIES_LABEL),
            Just("other"),
        ]
        .prop_map(str::to_string)
    }

    fn check(body: Value) -> Result<(), TestCaseError> {
        let original = body.clone();
        let mut body = body;
        match ContainerRequest::from_create_body(Some("x"), &mut body) {
            Ok(request) => {
                // No scheduling entry is left in Env.
                if let Some(env) = body.get("Env").and_then(Value::as_array) {
                    for entry in env.iter().filter_map(Value::as_str) {
                        let prefix = entry.split_once(':').map(|(p, _)| p);
                        prop_assert!(!matches!(prefix, Some("constraint" | "affinity" | "whitelist" | "reschedule")));
                    }
                }
                // Parsing the rewritten body again yields the same request.
                let mut again = body.clone();
                let reparsed = ContainerRequest::from_create_body(Some("x"), &mut again);
                prop_assert_eq!(reparsed.as_ref(), Ok(&request));
                prop_assert!(request.cpus >= 0 && request.memory >= 0);
            }
            Err(_) => prop_assert_eq!(body, original),
        }
        Ok(())
    }

    proptest! {
        /// Arbitrary JSON never panics the body parser.
        #[test]
        fn arbitrary_json_never_panics(body in any_json()) {
            check(body)?;
        }

        /// Bodies shaped like create requests, with random field types.
        #[test]
        fn create_like_bodies_never_panic(
            env in any_json(),
            labels in any_json(),
            host in any_json(),
            exposed in any_json(),
        ) {
            let body = serde_json::json!({
                "Image": "busybox",
                "Env": env,
                "Labels": labels,
                "HostConfig": host,
                "ExposedPorts": exposed,
            });
            check(body)?;
        }

        /// String envs with scheduling prefixes and random expressions.
        #[test]
        fn env_expressions_never_panic(
            entries in prop::collection::vec(
                ("(constraint|affinity|whitelist|reschedule|FOO)", "[a-z_.~=!/*|]{0,12}"),
                0..6,
            ),
        ) {
            let env: Vec<String> = entries.iter().map(|(p, e)| format!("{p}:{e}")).collect();
            check(serde_json::json!({ "Env": env }))?;
        }
    }
}
