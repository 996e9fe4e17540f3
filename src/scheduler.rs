//! Scheduling glue: turns the cluster's state into the `filters` crate's
//! snapshots and runs the configured strategy and filters on them.

use std::sync::Arc;

use serde_json::Value;
use swarm_scheduler::{ContainerRequest, ContainerSnapshot, ImageSnapshot, NodeSnapshot, ScheduleError};

use crate::api::ApiError;
use crate::cli::ClusterOpts;
use crate::cluster::engine::{Engine, Health};
use crate::cluster::{Cluster, PendingReservation};

/// The configured scheduler.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// Strategy, filter chain, overcommit and failure-retry weighting.
    inner: swarm_scheduler::Scheduler,
    /// `swarm.createretry`: further nodes a failed create is tried on.
    create_retry: u32,
}

/// A placement decision: engines best first, and the reservation of the
/// container on the first one (held until the create is answered).
pub struct Placement<'a> {
    pub ranked: Vec<Arc<Engine>>,
    pub reservation: Option<PendingReservation<'a>>,
}

impl Scheduler {
    pub fn new(strategy: &str, filters: &[String], opts: ClusterOpts, failure_retry: u32) -> Result<Scheduler, String> {
        let inner = if filters.is_empty() {
            swarm_scheduler::Scheduler::new(strategy, swarm_scheduler::FilterKind::DEFAULT.map(|f| f.name()))
        } else {
            swarm_scheduler::Scheduler::new(strategy, filters)
        };
        let inner = inner
            .and_then(|s| s.with_overcommit(opts.overcommit))
            .and_then(|s| s.with_failure_retry(failure_retry))
            .map_err(|e| e.to_string())?;
        Ok(Scheduler { inner, create_retry: opts.create_retry })
    }

    pub fn strategy_name(&self) -> String {
        self.inner.strategy().to_string()
    }

    pub fn filter_names(&self) -> String {
        self.inner.filter_names()
    }

    pub fn overcommit(&self) -> f64 {
        self.inner.overcommit()
    }

    pub fn create_retry(&self) -> u32 {
        self.create_retry
    }

    /// Decides where `request` goes and reserves it there, in one step.
    pub fn place<'a>(&self, cluster: &'a Cluster, request: &ContainerRequest) -> Result<Placement<'a>, ApiError> {
        let (ranked, reservation) = cluster.with_pending(|pending| {
            let (nodes, engines) = snapshot(cluster, pending);
            let placement = self.inner.select(&nodes, request).map_err(schedule_error)?;
            for warning in &placement.warnings {
                tracing::warn!("{warning}");
            }
            let ranked: Vec<Arc<Engine>> = placement.ranked.iter().map(|&i| engines[i].clone()).collect();
            let reserve = ranked.first().map(|e| (e.addr.clone(), ContainerSnapshot::pending_from_request(request)));
            Ok((ranked, reserve))
        })?;
        Ok(Placement { ranked, reservation })
    }
}

fn schedule_error(e: ScheduleError) -> ApiError {
    ApiError::NoNode(e.to_string())
}

/// The scheduler's view of every validated engine, with the pending creates
/// added to their engines. `engines[i]` is the engine of `nodes[i]`.
fn snapshot(cluster: &Cluster, pending: &[(u64, String, ContainerSnapshot)]) -> (Vec<NodeSnapshot>, Vec<Arc<Engine>>) {
    let mut nodes = Vec::new();
    let mut engines = Vec::new();
    for engine in cluster.engines() {
        let state = engine.state.read();
        let Some(info) = state.info.clone() else {
            continue;
        };
        if state.health == Health::Pending {
            continue;
        }
        let mut node = NodeSnapshot::new(&info.id, &info.name, &engine.addr);
        node.labels = info.labels.clone();
        node.total_cpus = info.cpus;
        node.total_memory = info.memory;
        node.healthy = state.health == Health::Healthy;
        node.failure_count = state.failures;
        node.containers = state.containers.values().map(|c| c.snapshot.clone()).collect();
        node.containers.extend(pending.iter().filter(|(_, addr, _)| *addr == engine.addr).map(|(_, _, c)| c.clone()));
        node.images = state.images.iter().map(ImageSnapshot::from_summary).collect();
        drop(state);
        nodes.push(node);
        engines.push(engine);
    }
    (nodes, engines)
}

/// True when some engine has `image` (by tag, repository or ID prefix).
pub fn cluster_has_image(cluster: &Cluster, image: &str) -> bool {
    let with_tag = if image.contains('@') || image.rsplit('/').next().is_some_and(|l| l.contains(':')) {
        image.to_string()
    } else {
        format!("{image}:latest")
    };
    cluster.healthy_engines().iter().any(|e| {
        e.state.read().images.iter().any(|i| {
            i["RepoTags"].as_array().into_iter().flatten().any(|t| t.as_str() == Some(with_tag.as_str()))
                || i["Id"].as_str().is_some_and(|id| id == image || id.trim_start_matches("sha256:").starts_with(image))
        })
    })
}

/// Rewrites `-c N` (N CPUs, the original's meaning) into the CPU shares the
/// chosen engine needs: `ceil(N × 1024 / engine CPUs)`.
pub fn cpu_shares_for_engine(config: &mut Value, engine: &Engine) {
    let Some(cpus) = engine.info().map(|i| i.cpus) else {
        return;
    };
    let shares = &mut config["HostConfig"]["CpuShares"];
    if let Some(n) = shares.as_i64().filter(|n| *n > 0) {
        *shares = Value::from(swarm_scheduler::shares_for_cpus(n, cpus));
    }
}
