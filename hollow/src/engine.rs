//! One hollow engine: its identity, its state and the operations on it
//! (each a change made by `ops` under the state's lock), and what every
//! engine of a fleet shares.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use serde_json::Value;

use crate::create::CreateRequest;
use crate::error::ApiError;
use crate::events::EventLog;
use crate::ids::{engine_id, Id};
use crate::model::{Attachment, Container, Image, Network, RunState, Spec, Volume};
use crate::ops::{Ops, SIGTERM};

/// What every engine of a fleet shares: its settings and its counters.
#[derive(Debug)]
pub struct Shared {
    /// Added to every answer but the events stream.
    pub latency: Duration,
    /// `NCPU` and `MemTotal` of `/info`.
    pub ncpu: u32,
    pub mem_total: u64,
    /// Engine labels (`key=value`), the same on every engine.
    pub labels: Vec<String>,
    /// The images every engine has; never changes.
    pub images: Vec<Image>,
    /// How many events each engine keeps for `since`.
    pub event_history: usize,
    pub counters: Counters,
    /// Source of the fake process IDs of started containers.
    pub next_pid: AtomicU32,
}

/// Events emitted by every engine of a fleet, by `Type`; only ever grow.
#[derive(Debug, Default)]
pub struct Counters {
    pub container: AtomicU64,
    pub network: AtomicU64,
    pub volume: AtomicU64,
    /// Of these, the ones churn lifecycles caused.
    pub churn: AtomicU64,
}

/// One engine.
pub struct Engine {
    /// `Name` in `/info` (the hostname), unique in the fleet.
    pub name: String,
    /// `ID` in `/info`, derived from the name and address: the same
    /// engine keeps its ID across restarts of the fleet, as a real one
    /// keeps its key.
    pub id: String,
    /// Where it listens (the bound address, so port 0 is resolved).
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// Everything that changes. Locked for short, non-blocking sections
    /// only: a change, its events and its place in every stream are one step.
    state: Mutex<State>,
}

/// A churn lifecycle's container, created by the churn and not yet destroyed.
#[derive(Debug, Clone, Copy)]
pub struct ChurnSlot {
    pub container: Id,
}

/// An engine's mutable state.
pub struct State {
    /// Oldest first (`/containers/json` lists them newest first); names and IDs unique.
    pub containers: Vec<Container>,
    /// The built-in `bridge`, `host` and `none` first; names and IDs
    /// unique. Built-ins cannot be removed, so `networks[0]` is always the
    /// default bridge.
    pub networks: Vec<Network>,
    /// Names unique.
    pub volumes: Vec<Volume>,
    pub events: EventLog,
    /// Events emitted by this engine so far.
    pub emitted: u64,
    /// The churn lifecycle in progress here, if any.
    pub churn: Option<ChurnSlot>,
    /// Numbers the names of containers created without one, and churn's.
    pub name_seq: u64,
}

/// Containers an engine starts with.
#[derive(Debug, Clone)]
pub struct Population {
    pub containers: usize,
    /// The first `running` are running, the others exited.
    pub running: usize,
    /// What they were all created with.
    pub spec: Arc<Spec>,
    /// When the fleet started; the containers were made before it.
    pub now: i64,
}

const MINUTE: i64 = 60_000_000_000;

impl Engine {
    pub fn new(name: String, addr: SocketAddr, shared: Arc<Shared>, population: &Population) -> Engine {
        let seed = Id::derived(&[name.as_bytes(), addr.to_string().as_bytes()]);
        let mut state = State {
            containers: Vec::with_capacity(population.containers),
            networks: builtin_networks(&seed, population.now),
            volumes: Vec::new(),
            events: EventLog::new(shared.event_history),
            emitted: 0,
            churn: None,
            name_seq: 0,
        };
        for k in 0..population.containers {
            // Spread over the last days, oldest first, so `docker ps` shows
            // the ages a long-lived host has.
            let created = population.now - (population.containers - k) as i64 * 97 * MINUTE;
            let up = k < population.running;
            let mut networks = vec![Attachment { network: state.networks[0].id, host: 0 }];
            if up {
                networks[0].host = state.networks[0].allocate();
            }
            state.containers.push(Container {
                id: Id::derived(&[seed.bytes(), b"container", &k.to_le_bytes()]),
                name: format!("{name}-c{:03}", k + 1).into(),
                spec: population.spec.clone(),
                state: if up { RunState::Running } else { RunState::Exited },
                created,
                started: created + 1_000_000_000,
                finished: if up { 0 } else { created + 61 * MINUTE },
                exit_code: 0,
                pid: if up { shared.next_pid.fetch_add(1, Ordering::Relaxed) } else { 0 },
                restart_count: 0,
                networks,
                ever_started: true,
            });
        }
        Engine { id: engine_id(&seed), name, addr, shared, state: Mutex::new(state) }
    }

    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Runs `change` on the state; the events it emits are counted.
    fn change<T>(&self, change: impl FnOnce(&mut Ops<'_>) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut state = self.lock();
        let mut ops = Ops { state: &mut state, shared: &self.shared, churn: false };
        change(&mut ops)
    }

    pub fn create(&self, name: Option<&str>, request: CreateRequest) -> Result<Id, ApiError> {
        self.change(|ops| ops.create(name, request))
    }

    pub fn start(&self, reference: &str) -> Result<(), ApiError> {
        self.change(|ops| {
            let i = ops.find(reference)?;
            ops.start(i)
        })
    }

    pub fn stop(&self, reference: &str) -> Result<(), ApiError> {
        self.change(|ops| {
            let i = ops.find(reference)?;
            ops.stop(i)
        })
    }

    pub fn kill(&self, reference: &str, signal: i32) -> Result<(), ApiError> {
        self.change(|ops| {
            let i = ops.find(reference)?;
            if !ops.state.containers[i].state.is_up() {
                let id = ops.state.containers[i].id;
                return Err(ApiError::conflict(format!(
                    "Cannot kill container: {reference}: Container {id} is not running"
                )));
            }
            ops.end_process(i, signal);
            Ok(())
        })
    }

    pub fn restart(&self, reference: &str) -> Result<(), ApiError> {
        self.change(|ops| {
            let i = ops.find(reference)?;
            if ops.state.containers[i].state.is_up() {
                ops.end_process(i, SIGTERM);
                ops.container_event(i, "stop", None);
            }
            ops.start(i)?;
            ops.state.containers[i].restart_count += 1;
            ops.container_event(i, "restart", None);
            Ok(())
        })
    }

    pub fn pause(&self, reference: &str) -> Result<(), ApiError> {
        self.change(|ops| {
            let i = ops.find(reference)?;
            let c = &mut ops.state.containers[i];
            match c.state {
                RunState::Running => c.state = RunState::Paused,
                RunState::Paused => return Err(ApiError::conflict(format!("Container {} is already paused", c.id))),
                _ => return Err(ApiError::conflict(format!("Container {} is not running", c.id))),
            }
            ops.container_event(i, "pause", None);
            Ok(())
        })
    }

    pub fn unpause(&self, reference: &str) -> Result<(), ApiError> {
        self.change(|ops| {
            let i = ops.find(reference)?;
            let c = &mut ops.state.containers[i];
            if c.state != RunState::Paused {
                return Err(ApiError::conflict(format!("Container {} is not paused", c.id)));
            }
            c.state = RunState::Running;
            ops.container_event(i, "unpause", None);
            Ok(())
        })
    }

    pub fn remove(&self, reference: &str, force: bool) -> Result<(), ApiError> {
        self.change(|ops| {
            let i = ops.find(reference)?;
            ops.remove(i, force)
        })
    }

    /// `POST /networks/create`: the new network's ID.
    pub fn create_network(&self, body: &Value) -> Result<Id, ApiError> {
        self.change(|ops| ops.create_network(body))
    }

    pub fn connect(&self, network: &str, container: &str) -> Result<(), ApiError> {
        self.change(|ops| ops.connect(network, container))
    }

    pub fn disconnect(&self, network: &str, container: &str) -> Result<(), ApiError> {
        self.change(|ops| ops.disconnect(network, container))
    }

    pub fn remove_network(&self, network: &str) -> Result<(), ApiError> {
        self.change(|ops| ops.remove_network(network))
    }

    /// `POST /volumes/create`: the volume's name.
    pub fn create_volume(&self, body: &Value) -> Result<String, ApiError> {
        self.change(|ops| ops.create_volume(body))
    }

    pub fn remove_volume(&self, name: &str) -> Result<(), ApiError> {
        self.change(|ops| ops.remove_volume(name))
    }

    /// One step of this engine's churn lifecycle (create, start, stop,
    /// destroy, then again): real state changes with their events. Returns
    /// how many events it emitted.
    pub fn churn_step(&self, spec: &Arc<Spec>) -> u64 {
        let mut state = self.lock();
        let before = state.emitted;
        let mut ops = Ops { state: &mut state, shared: &self.shared, churn: true };
        let slot = ops.state.churn.and_then(|slot| ops.index_of(&slot.container));
        // Each step is valid in the container's state, so none fails; a
        // container changed from outside (stopped, removed through the
        // API) just moves the lifecycle along.
        let _ = match slot {
            None => {
                ops.state.name_seq += 1;
                let name = format!("{}-churn-{}", self.name, ops.state.name_seq);
                ops.create_from_spec(name.into(), spec.clone(), &[]).map(|id| {
                    ops.state.churn = Some(ChurnSlot { container: id });
                })
            }
            Some(i) => match ops.state.containers[i].state {
                RunState::Created => ops.start(i),
                RunState::Running | RunState::Paused => ops.stop(i),
                RunState::Exited => {
                    ops.state.churn = None;
                    ops.remove(i, false)
                }
            },
        };
        state.emitted - before
    }
}

impl State {
    /// The container `reference` names, in dockerd's order: full ID, name, ID prefix.
    pub fn find(&self, reference: &str) -> Option<usize> {
        let name = reference.strip_prefix('/').unwrap_or(reference);
        let by_id = self.containers.iter().position(|c| c.id.is(reference));
        by_id.or_else(|| self.containers.iter().position(|c| *c.name == *name)).or_else(|| {
            let mut matches = self.containers.iter().enumerate().filter(|(_, c)| c.id.has_prefix(reference));
            match (matches.next(), matches.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        })
    }

    /// The network `reference` names: full ID, name, or ID prefix.
    pub fn find_network(&self, reference: &str) -> Option<usize> {
        let by_name = self.networks.iter().position(|n| *n.name == *reference);
        by_name.or_else(|| self.networks.iter().position(|n| n.id.has_prefix(reference)))
    }

    pub fn network(&self, id: &Id) -> Option<&Network> {
        self.networks.iter().find(|n| n.id == *id)
    }

    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| &*v.name == name)
    }
}

/// The networks every engine comes with, in dockerd's order of creation
/// (`bridge` first here: it is where containers go by default).
fn builtin_networks(seed: &Id, now: i64) -> Vec<Network> {
    let builtin = |name: &str, driver: &str, subnet: u8, options: &[(&str, &str)]| Network {
        id: Id::derived(&[seed.bytes(), b"network", name.as_bytes()]),
        name: name.into(),
        driver: driver.into(),
        created: now - 3 * 86_400_000_000_000,
        builtin: true,
        subnet,
        next_host: 2,
        labels: Box::new([]),
        options: crate::model::sorted_labels(options.iter().copied()),
        internal: false,
        attachable: false,
    };
    vec![
        builtin(
            "bridge",
            "bridge",
            17,
            &[
                ("com.docker.network.bridge.default_bridge", "true"),
                ("com.docker.network.bridge.enable_icc", "true"),
                ("com.docker.network.bridge.enable_ip_masquerade", "true"),
                ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
                ("com.docker.network.bridge.name", "docker0"),
                ("com.docker.network.driver.mtu", "1500"),
            ],
        ),
        builtin("host", "host", 0, &[]),
        builtin("none", "null", 0, &[]),
    ]
}
