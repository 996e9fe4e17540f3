//! The changes to an engine's state, made as dockerd makes them: each
//! checks what dockerd checks, changes the state, and emits dockerd's
//! events for it in dockerd's order, all under the engine's lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;

use crate::clock;
use crate::create::{valid_name, CreateRequest};
use crate::engine::{Shared, State};
use crate::error::ApiError;
use crate::events::Subject;
use crate::ids::Id;
use crate::model::{normalize_reference, sorted_labels, Attachment, Container, Network, RunState, Spec, Volume};

pub const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

/// A change to an engine's state in progress, with the lock held.
pub struct Ops<'a> {
    pub state: &'a mut State,
    pub shared: &'a Shared,
    /// Whether the churn made this change (its events are counted as churn's too).
    pub churn: bool,
}

impl Ops<'_> {
    pub fn emit(&mut self, action: &'static str, subject: Subject) {
        let counter = match subject {
            Subject::Container { .. } => &self.shared.counters.container,
            Subject::Network { .. } => &self.shared.counters.network,
            Subject::Volume { .. } => &self.shared.counters.volume,
        };
        self.state.events.emit(action, subject);
        self.state.emitted += 1;
        counter.fetch_add(1, Ordering::Relaxed);
        if self.churn {
            self.shared.counters.churn.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn container_event(&mut self, i: usize, action: &'static str, detail: Option<(&'static str, i32)>) {
        let c = &self.state.containers[i];
        let subject = Subject::Container { id: c.id, name: c.name.clone(), spec: c.spec.clone(), detail };
        self.emit(action, subject);
    }

    pub fn index_of(&self, id: &Id) -> Option<usize> {
        self.state.containers.iter().position(|c| c.id == *id)
    }

    /// The container `reference` names: a full ID, a name (with or
    /// without its `/`), or an ID prefix, in dockerd's order.
    pub fn find(&self, reference: &str) -> Result<usize, ApiError> {
        self.state.find(reference).ok_or_else(|| ApiError::no_such_container(reference))
    }

    pub fn network_index(&self, reference: &str) -> Result<usize, ApiError> {
        self.state.find_network(reference).ok_or_else(|| ApiError::not_found(format!("network {reference} not found")))
    }

    pub fn create(&mut self, name: Option<&str>, request: CreateRequest) -> Result<Id, ApiError> {
        let name: Arc<str> = match name {
            Some(name) => {
                let name = name.strip_prefix('/').unwrap_or(name);
                if !valid_name(name) {
                    return Err(ApiError::bad_request(format!(
                        "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                name.into()
            }
            None => self.generated_name().into(),
        };
        if let Some(holder) = self.state.containers.iter().find(|c| c.name == name) {
            return Err(ApiError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                holder.id
            )));
        }
        let reference = normalize_reference(&request.image);
        let Some(image) = self.shared.images.iter().find(|i| i.matches(&reference)) else {
            return Err(ApiError::not_found(format!("No such image: {reference}")));
        };
        // The CLI names the network mode's endpoint too: `default` is the bridge.
        let network = match request.endpoint.as_deref().unwrap_or(&request.network_mode) {
            "default" => "bridge".to_string(),
            named => named.to_string(),
        };
        if self.state.find_network(&network).is_none() && !network.starts_with("container:") {
            return Err(ApiError::not_found(format!("network {network} not found")));
        }
        let command = if request.command.is_empty() { image.default_command.clone() } else { request.command.into() };
        let spec = Arc::new(Spec {
            image: request.image.into(),
            image_id: image.id.clone(),
            command,
            labels: request.labels,
            ports: request.ports.into(),
            mounts: request.mounts.into(),
            network_mode: request.network_mode.into(),
            config: Some(request.config),
            host_config: Some(request.host_config),
        });
        self.create_from_spec(name, spec, &[network])
    }

    /// Makes the container: named volumes it mounts are created (with
    /// their event, as dockerd emits one on every create that names
    /// them), then the container (`create`). It joins `networks` (the
    /// bridge when empty) at its first start.
    pub fn create_from_spec(&mut self, name: Arc<str>, spec: Arc<Spec>, networks: &[String]) -> Result<Id, ApiError> {
        for mount in spec.mounts.iter() {
            self.ensure_volume(&mount.volume, "local", Box::new([]));
        }
        let mut attachments = Vec::new();
        for network in networks {
            if let Some(n) = self.state.find_network(network) {
                attachments.push(Attachment { network: self.state.networks[n].id, host: 0 });
            }
        }
        if networks.is_empty() {
            attachments.push(Attachment { network: self.state.networks[0].id, host: 0 });
        }
        let id = Id::random();
        self.state.containers.push(Container {
            id,
            name,
            spec,
            state: RunState::Created,
            created: clock::now_nanos(),
            started: 0,
            finished: 0,
            exit_code: 0,
            pid: 0,
            restart_count: 0,
            networks: attachments,
            ever_started: false,
        });
        let i = self.state.containers.len() - 1;
        self.container_event(i, "create", None);
        Ok(id)
    }

    /// A name for a container created without one: Docker's are
    /// `adjective_surname`; these are numbered so they never collide.
    pub fn generated_name(&mut self) -> String {
        const ADJECTIVES: [&str; 8] = ["admiring", "brave", "clever", "eager", "gifted", "happy", "keen", "quirky"];
        const SURNAMES: [&str; 8] = ["curie", "darwin", "euler", "hopper", "lovelace", "noether", "pike", "turing"];
        loop {
            self.state.name_seq += 1;
            let n = self.state.name_seq as usize;
            let name = format!("{}_{}{}", ADJECTIVES[n % 8], SURNAMES[n / 8 % 8], n / 64);
            if !self.state.containers.iter().any(|c| *c.name == *name) {
                return name;
            }
        }
    }

    /// Starts container `i`: joins its networks (`connect` each), mounts
    /// its volumes (`mount` each), runs (`start`).
    pub fn start(&mut self, i: usize) -> Result<(), ApiError> {
        if self.state.containers[i].state.is_up() {
            return Err(ApiError::not_modified());
        }
        let id = self.state.containers[i].id;
        for a in 0..self.state.containers[i].networks.len() {
            let network_id = self.state.containers[i].networks[a].network;
            let Some(n) = self.state.networks.iter().position(|n| n.id == network_id) else { continue };
            let network = &mut self.state.networks[n];
            let host = if network.subnet == 0 { 0 } else { network.allocate() };
            let subject = Subject::Network {
                id: network.id,
                name: network.name.clone(),
                driver: network.driver.clone(),
                container: Some(id),
            };
            self.state.containers[i].networks[a].host = host;
            self.emit("connect", subject);
        }
        let spec = self.state.containers[i].spec.clone();
        for mount in spec.mounts.iter() {
            let driver = self.volume_driver(&mount.volume);
            let subject = Subject::Volume {
                name: mount.volume.clone(),
                driver,
                container: Some(id),
                destination: Some(Arc::from(&*mount.destination)),
            };
            self.emit("mount", subject);
        }
        let pid = self.shared.next_pid.fetch_add(1, Ordering::Relaxed);
        let c = &mut self.state.containers[i];
        c.state = RunState::Running;
        c.started = clock::now_nanos();
        c.pid = pid;
        c.ever_started = true;
        self.container_event(i, "start", None);
        Ok(())
    }

    /// `docker stop` of container `i`: its process honours SIGTERM (`kill`
    /// 15, `die` 143, networks and volumes let go), then `stop`.
    pub fn stop(&mut self, i: usize) -> Result<(), ApiError> {
        if !self.state.containers[i].state.is_up() {
            return Err(ApiError::not_modified());
        }
        self.end_process(i, SIGTERM);
        self.container_event(i, "stop", None);
        Ok(())
    }

    /// Ends the process of up container `i` with `signal`: `kill`, `die`
    /// (exit code 128 + signal), `disconnect` from each network (last
    /// joined first), `unmount` each volume.
    pub fn end_process(&mut self, i: usize, signal: i32) {
        self.container_event(i, "kill", Some(("signal", signal)));
        let exit_code = 128 + signal;
        let c = &mut self.state.containers[i];
        c.state = RunState::Exited;
        c.finished = clock::now_nanos();
        c.exit_code = exit_code;
        c.pid = 0;
        let id = c.id;
        self.container_event(i, "die", Some(("exitCode", exit_code)));
        for a in (0..self.state.containers[i].networks.len()).rev() {
            let network_id = self.state.containers[i].networks[a].network;
            self.state.containers[i].networks[a].host = 0;
            let Some(network) = self.state.networks.iter().find(|n| n.id == network_id) else { continue };
            let subject = Subject::Network {
                id: network.id,
                name: network.name.clone(),
                driver: network.driver.clone(),
                container: Some(id),
            };
            self.emit("disconnect", subject);
        }
        let spec = self.state.containers[i].spec.clone();
        for mount in spec.mounts.iter() {
            let driver = self.volume_driver(&mount.volume);
            self.emit(
                "unmount",
                Subject::Volume { name: mount.volume.clone(), driver, container: Some(id), destination: None },
            );
        }
    }

    /// Removes container `i` (`destroy`); a running one only by force,
    /// after SIGKILL.
    pub fn remove(&mut self, i: usize, force: bool) -> Result<(), ApiError> {
        if self.state.containers[i].state.is_up() {
            if !force {
                return Err(ApiError::conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    self.state.containers[i].id
                )));
            }
            self.end_process(i, SIGKILL);
        }
        self.container_event(i, "destroy", None);
        self.state.containers.remove(i);
        Ok(())
    }

    pub fn volume_driver(&self, name: &str) -> Arc<str> {
        self.state.volumes.iter().find(|v| &*v.name == name).map(|v| v.driver.clone()).unwrap_or_else(|| "local".into())
    }

    /// Creates the volume unless it exists; `create` either way, as dockerd.
    pub fn ensure_volume(&mut self, name: &Arc<str>, driver: &str, labels: Box<[(Box<str>, Box<str>)]>) -> Arc<str> {
        let driver = match self.state.volumes.iter().find(|v| v.name == *name) {
            Some(v) => v.driver.clone(),
            None => {
                let driver: Arc<str> = driver.into();
                let created = clock::now_nanos();
                self.state.volumes.push(Volume { name: name.clone(), driver: driver.clone(), created, labels });
                driver
            }
        };
        self.emit(
            "create",
            Subject::Volume { name: name.clone(), driver: driver.clone(), container: None, destination: None },
        );
        driver
    }

    pub fn create_network(&mut self, body: &Value) -> Result<Id, ApiError> {
        let name = body["Name"].as_str().unwrap_or_default();
        if name.is_empty() {
            return Err(ApiError::bad_request("network name must be given"));
        }
        if self.state.networks.iter().any(|n| &*n.name == name) {
            return Err(ApiError::conflict(format!("network with name {name} already exists")));
        }
        let driver: Arc<str> = body["Driver"].as_str().filter(|d| !d.is_empty()).unwrap_or("bridge").into();
        let pairs = |key: &str| {
            sorted_labels(
                body[key]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())).collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
        };
        // 172.17 is the default bridge's; user networks take the next ones.
        let subnet = self.state.networks.iter().map(|n| n.subnet).max().unwrap_or(17).checked_add(1).unwrap_or(18);
        let network = Network {
            id: Id::random(),
            name: name.into(),
            driver,
            created: clock::now_nanos(),
            builtin: false,
            subnet,
            next_host: 2,
            labels: pairs("Labels"),
            options: pairs("Options"),
            internal: body["Internal"].as_bool().unwrap_or(false),
            attachable: body["Attachable"].as_bool().unwrap_or(false),
        };
        let id = network.id;
        let subject =
            Subject::Network { id, name: network.name.clone(), driver: network.driver.clone(), container: None };
        self.state.networks.push(network);
        self.emit("create", subject);
        Ok(id)
    }

    /// Joins a container to a network: at once (`connect`) when it runs,
    /// at its next start otherwise, as dockerd.
    pub fn connect(&mut self, network: &str, container: &str) -> Result<(), ApiError> {
        let n = self.network_index(network)?;
        let i = self.find(container)?;
        let network_id = self.state.networks[n].id;
        if self.state.containers[i].networks.iter().any(|a| a.network == network_id) {
            return Err(ApiError::forbidden(format!(
                "endpoint with name {} already exists in network {}",
                self.state.containers[i].name, self.state.networks[n].name
            )));
        }
        let up = self.state.containers[i].state.is_up();
        let host = if up && self.state.networks[n].subnet != 0 { self.state.networks[n].allocate() } else { 0 };
        self.state.containers[i].networks.push(Attachment { network: network_id, host });
        if up {
            let net = &self.state.networks[n];
            let subject = Subject::Network {
                id: net.id,
                name: net.name.clone(),
                driver: net.driver.clone(),
                container: Some(self.state.containers[i].id),
            };
            self.emit("connect", subject);
        }
        Ok(())
    }

    pub fn disconnect(&mut self, network: &str, container: &str) -> Result<(), ApiError> {
        let n = self.network_index(network)?;
        let i = self.find(container)?;
        let network_id = self.state.networks[n].id;
        let Some(a) = self.state.containers[i].networks.iter().position(|a| a.network == network_id) else {
            return Err(ApiError::forbidden(format!(
                "container {} is not connected to network {}",
                self.state.containers[i].id, self.state.networks[n].name
            )));
        };
        self.state.containers[i].networks.remove(a);
        if self.state.containers[i].state.is_up() {
            let net = &self.state.networks[n];
            let subject = Subject::Network {
                id: net.id,
                name: net.name.clone(),
                driver: net.driver.clone(),
                container: Some(self.state.containers[i].id),
            };
            self.emit("disconnect", subject);
        }
        Ok(())
    }

    pub fn remove_network(&mut self, network: &str) -> Result<(), ApiError> {
        let n = self.network_index(network)?;
        let net = &self.state.networks[n];
        if net.builtin {
            return Err(ApiError::forbidden(format!("{} is a pre-defined network and cannot be removed", net.name)));
        }
        let in_use =
            self.state.containers.iter().any(|c| c.state.is_up() && c.networks.iter().any(|a| a.network == net.id));
        if in_use {
            return Err(ApiError::forbidden(format!(
                "error while removing network: network {} id {} has active endpoints",
                net.name, net.id
            )));
        }
        let net = self.state.networks.remove(n);
        self.emit("destroy", Subject::Network { id: net.id, name: net.name, driver: net.driver, container: None });
        Ok(())
    }

    pub fn create_volume(&mut self, body: &Value) -> Result<String, ApiError> {
        let name: Arc<str> = match body["Name"].as_str() {
            Some(name) if !name.is_empty() => name.into(),
            _ => Id::random().hex().into(),
        };
        let driver = body["Driver"].as_str().filter(|d| !d.is_empty()).unwrap_or("local");
        let labels = sorted_labels(
            body["Labels"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        self.ensure_volume(&name, driver, labels);
        Ok(name.to_string())
    }

    pub fn remove_volume(&mut self, name: &str) -> Result<(), ApiError> {
        let Some(v) = self.state.volumes.iter().position(|v| &*v.name == name) else {
            return Err(ApiError::not_found(format!("get {name}: no such volume")));
        };
        let users: Vec<String> = self
            .state
            .containers
            .iter()
            .filter(|c| c.spec.mounts.iter().any(|m| &*m.volume == name))
            .map(|c| c.id.hex())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::conflict(format!("remove {name}: volume is in use - [{}]", users.join(", "))));
        }
        let volume = self.state.volumes.remove(v);
        self.emit(
            "destroy",
            Subject::Volume { name: volume.name, driver: volume.driver, container: None, destination: None },
        );
        Ok(())
    }
}
