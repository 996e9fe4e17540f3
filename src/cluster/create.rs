//! Creating a container: the one entry for the API, rescheduling and
//! anything else that creates, in the spirit of the original's
//! `cluster.CreateContainer`.
//!
//! The name is reserved cluster-wide and the container counts as present on
//! its node from the scheduling decision until the engine has answered. A
//! create that fails because the chosen node lacks an image another node has
//! is placed again with an `image==` affinity; other failures are retried on
//! the next ranked node up to `swarm.createretry` times. A created container
//! is in the cache before [`Cluster::create_container`] returns, so its name
//! resolves as soon as the client has its ID.
//!
//! `--net node/network` names one node's network: the node becomes a
//! `node==` constraint (kept in the container's labels, so a rescheduled copy
//! stays there) and the engine is sent the network's own name.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use rand::Rng;
use serde_json::Value;
use swarm_scheduler::{ContainerRequest, ContainerSnapshot, ExprError, RescheduleError, ScheduleError};
use thiserror::Error;

use super::container::Container;
use super::engine::{error_message, Engine, Unreachable};
use super::placement::cpu_shares_for_engine;
use super::{lost_creates, Cluster, NameInUse, SWARM_ID_LABEL};
use crate::observe::Observed;

/// A container to create, as the client asked for it.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// `--name`, if any (with or without the leading `/`).
    pub name: Option<String>,
    /// Docker's create body; scheduling expressions in its environment are
    /// moved into labels before it reaches an engine.
    pub config: Value,
    /// What the engines are sent: the client's version prefix,
    /// `/containers/create`, and its query.
    pub path: String,
}

/// A container the engine created.
#[derive(Debug)]
pub struct Created {
    pub engine: Arc<Engine>,
    pub id: String,
    /// The engine's answer (`{"Id": …, "Warnings": …}`), relayed to the client.
    pub answer: Bytes,
}

/// Why a create failed.
#[derive(Debug, Error)]
pub enum CreateError {
    #[error("invalid JSON in request body: expected an object")]
    NotAnObject,
    /// The image is 64 hex characters that no engine has as an image ID;
    /// the original's (and the registry client's) message for it.
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexRepositoryName(String),
    #[error(transparent)]
    NameInUse(#[from] NameInUse),
    #[error(transparent)]
    Expression(#[from] ExprError),
    #[error(transparent)]
    ReschedulePolicy(#[from] RescheduleError),
    #[error(transparent)]
    Unschedulable(#[from] ScheduleError),
    /// The chosen engine could not be reached.
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// The engine refused the create; its status and message are the answer.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    /// The engine answered 404 for something the request names other than
    /// its image (a volume driver, ...); its message is the answer.
    #[error("{0}")]
    MissingReference(String),
    #[error("cannot encode the create request: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One engine's answer to a create.
type Attempt = Result<(Arc<Engine>, StatusCode, Bytes), CreateError>;

impl CreateError {
    /// The class of failure: the `result` label of the creates metric.
    pub fn class(&self) -> &'static str {
        match self {
            CreateError::NotAnObject
            | CreateError::HexRepositoryName(_)
            | CreateError::Expression(_)
            | CreateError::ReschedulePolicy(_)
            | CreateError::Encode(_) => "invalid_request",
            CreateError::NameInUse(_) => "name_in_use",
            CreateError::Unschedulable(_) => "no_node",
            CreateError::Unreachable(_) => "engine_unreachable",
            CreateError::Refused { .. } | CreateError::MissingReference(_) => "engine_refused",
        }
    }
}

impl Cluster {
    /// Schedules and creates a container; see the module documentation.
    /// Every outcome is observed (and counted) here, whoever asked.
    pub async fn create_container(&self, request: CreateRequest) -> Result<Created, CreateError> {
        let result = self.schedule_and_create(request).await;
        match &result {
            Ok(created) => {
                Observed::ContainerCreated { id: &created.id, node: &created.engine.name() }.record(self.metrics())
            }
            Err(e) => Observed::CreateFailed { reason: e.class(), error: &e.to_string() }.record(self.metrics()),
        }
        result
    }

    async fn schedule_and_create(&self, request: CreateRequest) -> Result<Created, CreateError> {
        let CreateRequest { name, mut config, path } = request;
        if !config.is_object() {
            return Err(CreateError::NotAnObject);
        }
        let image = config["Image"].as_str().unwrap_or_default();
        if is_hex_id(image) && !self.has_image(image) {
            return Err(CreateError::HexRepositoryName(image.to_string()));
        }
        self.pin_to_network_node(&mut config);
        let name = name.filter(|n| !n.is_empty());
        let _name = match &name {
            Some(n) => Some(self.reserve_name(n)?),
            None => None,
        };
        let mut spec = ContainerRequest::from_create_body(name.as_deref(), &mut config)?;
        spec.validate_reschedule_policies()?;
        set_swarm_id(&mut config);

        let mut placement = self.place(&spec)?;
        let mut attempt = create_on(self, &placement.ranked[0], &config, &path).await;
        if is_missing_image(&attempt) && !spec.has_node_constraint() && self.has_image(&spec.image) {
            spec.add_affinity(&format!("image=={}", spec.image))?;
            placement = self.place(&spec)?;
            attempt = create_on(self, &placement.ranked[0], &config, &path).await;
        }
        let mut next = 1;
        while next <= self.policy.create_retry() as usize && next < placement.ranked.len() && is_retryable(&attempt) {
            let engine = &placement.ranked[next];
            Observed::CreateRetried { failed_on: &placement.ranked[next - 1].name(), next: &engine.name() }
                .record(self.metrics());
            placement.reservation =
                Some(self.reserve_pending(&engine.addr, ContainerSnapshot::pending_from_request(&spec)));
            attempt = create_on(self, engine, &config, &path).await;
            next += 1;
        }
        let (engine, status, answer) = attempt?;
        if status != StatusCode::CREATED {
            let message = error_message(&answer);
            if status == StatusCode::NOT_FOUND && !is_missing_image_message(&message) {
                return Err(CreateError::MissingReference(message));
            }
            return Err(CreateError::Refused { status, message });
        }
        let id = serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        // The container is cached before the client learns its ID, from
        // what it was created with: asking the engine again would double
        // the create's time, and its `create` event brings the engine's own
        // entry a moment later.
        let snapshot = ContainerSnapshot::pending_from_request(&spec);
        if let Some(container) =
            Container::provisional(&id, name.as_deref(), &config, snapshot, &engine.name(), &engine.ip)
        {
            engine.lock_containers().await.insert_if_absent(Arc::new(container));
        }
        Ok(Created { engine, id, answer })
    }
}

impl Cluster {
    /// Rewrites `HostConfig.NetworkMode` `node/network` (a node of the
    /// cluster) to the network's name on that node and adds the
    /// `constraint:node==node` the scheduler crate moves into the
    /// constraints label. Endpoint settings keyed by `node/network` are
    /// re-keyed the same way.
    fn pin_to_network_node(&self, config: &mut Value) {
        let Some(mode) = config.pointer("/HostConfig/NetworkMode").and_then(Value::as_str) else {
            return;
        };
        if mode.starts_with("container:") {
            return;
        }
        let Some((node, network)) = mode.split_once('/') else {
            return;
        };
        let Some(engine) = self.engine(node) else {
            return;
        };
        let (given, node) = (mode.to_string(), engine.name());
        let network = engine
            .networks()
            .iter()
            .find(|n| n.name == network || n.id == network)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| network.to_string());
        if let Some(mode) = config.pointer_mut("/HostConfig/NetworkMode") {
            *mode = Value::String(network.clone());
        }
        if let Some(endpoints) = config.pointer_mut("/NetworkingConfig/EndpointsConfig").and_then(Value::as_object_mut)
        {
            if let Some(settings) = endpoints.remove(&given) {
                endpoints.insert(network, settings);
            }
        }
        let pin = Value::String(format!("constraint:node=={node}"));
        match config.get_mut("Env") {
            Some(Value::Array(env)) => env.push(pin),
            None | Some(Value::Null) => config["Env"] = Value::Array(vec![pin]),
            // Any other type is refused when the body is parsed.
            Some(_) => {}
        }
    }
}

/// True for what Docker reads as a full image ID: 64 lowercase hex characters.
fn is_hex_id(image: &str) -> bool {
    image.len() == 64 && image.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Labels the container with a new swarm ID unless it has one (a
/// rescheduled container keeps its own, which is how its stale copy is
/// recognised later; a create relayed by a replica carries the one the
/// replica gave it, which is how the replica finds it after a failover).
/// Returns the ID; `None` for a body that is not an object.
pub fn set_swarm_id(config: &mut Value) -> Option<String> {
    let object = config.as_object_mut()?;
    let labels = object.entry("Labels").or_insert_with(|| Value::Object(Default::default()));
    if !labels.is_object() {
        *labels = Value::Object(Default::default());
    }
    let id = labels.as_object_mut()?.entry(SWARM_ID_LABEL).or_insert_with(|| Value::String(random_id()));
    id.as_str().map(str::to_string)
}

/// A new 256-bit ID in hex, like Docker's.
pub fn random_id() -> String {
    let mut rng = rand::thread_rng();
    (0..32).map(|_| format!("{:02x}", rng.gen::<u8>())).collect()
}

async fn create_on(cluster: &Cluster, engine: &Arc<Engine>, config: &Value, path: &str) -> Attempt {
    let mut config = config.clone();
    cpu_shares_for_engine(&mut config, engine);
    let body = Bytes::from(serde_json::to_vec(&config)?);
    match engine.client.call(Method::POST, path, Some(body)).await {
        Ok((status, answer)) => Ok((engine.clone(), status, answer)),
        Err(e) if e.is_connect() => Err(Unreachable::new(engine, e).into()),
        // The create reached the engine, which may have made the container
        // without the answer coming back.
        Err(e) => {
            if let Some(swarm_id) = config["Labels"][SWARM_ID_LABEL].as_str().filter(|id| !id.is_empty()) {
                if let Ok(Some(id)) = lost_creates::find_by_swarm_id(engine, swarm_id).await {
                    let answer = serde_json::json!({"Id": id, "Warnings": []}).to_string();
                    return Ok((engine.clone(), StatusCode::CREATED, Bytes::from(answer)));
                }
                lost_creates::undo(cluster, swarm_id, vec![engine.addr.clone()]).await;
            }
            Err(Unreachable::new(engine, e).into())
        }
    }
}

fn is_missing_image(attempt: &Attempt) -> bool {
    matches!(attempt, Ok((_, status, answer)) if *status == StatusCode::NOT_FOUND
        && is_missing_image_message(&error_message(answer)))
}

/// True when an engine's 404 to a create is about the image.
fn is_missing_image_message(message: &str) -> bool {
    message.contains("No such image")
}

fn is_retryable(attempt: &Attempt) -> bool {
    match attempt {
        Ok((_, status, _)) => status.is_server_error(),
        Err(CreateError::Unreachable(e)) => e.source.is_connect(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_an_existing_swarm_id() {
        let mut fresh = serde_json::json!({"Image": "busybox", "Labels": null});
        set_swarm_id(&mut fresh);
        assert_eq!(fresh["Labels"][SWARM_ID_LABEL].as_str().map(str::len), Some(64));
        let mut kept = serde_json::json!({"Labels": {SWARM_ID_LABEL: "old"}});
        set_swarm_id(&mut kept);
        assert_eq!(kept["Labels"][SWARM_ID_LABEL], "old");
    }

    #[test]
    fn recognises_full_image_ids() {
        assert!(is_hex_id(&"0123456789abcdef".repeat(4)));
        assert!(!is_hex_id(&"0123456789ABCDEF".repeat(4)), "Docker's IDs are lowercase");
        assert!(!is_hex_id(&"0123456789abcdef".repeat(3)));
        assert!(!is_hex_id("busybox"));
    }
}
