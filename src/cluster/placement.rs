//! Placement: the cluster's state as the scheduler crate's snapshots, the
//! configured strategy and filters run on them, and the reservation that
//! makes a decision count until its create is answered.

use std::sync::Arc;

use serde_json::Value;
use swarm_scheduler::{ContainerRequest, ContainerSnapshot, ScheduleError, Scheduler};

use super::engine::Engine;
use super::{Cluster, PendingReservation};
use crate::cli::ClusterOpts;
use crate::observe::Observed;

/// How containers are placed: `--strategy`, `--filter`, `--cluster-opt`.
#[derive(Debug, Clone)]
pub struct PlacementPolicy {
    /// Strategy, filter chain, overcommit and failure-retry weighting.
    scheduler: Scheduler,
    /// `swarm.createretry`: further nodes a failed create is tried on.
    create_retry: u32,
}

impl PlacementPolicy {
    pub fn new(
        strategy: &str,
        filters: &[String],
        opts: ClusterOpts,
        failure_retry: u32,
    ) -> Result<PlacementPolicy, String> {
        let scheduler = if filters.is_empty() {
            Scheduler::new(strategy, swarm_scheduler::FilterKind::DEFAULT.map(|f| f.name()))
        } else {
            Scheduler::new(strategy, filters)
        };
        let scheduler = scheduler
            .and_then(|s| s.with_overcommit(opts.overcommit))
            .and_then(|s| s.with_failure_retry(failure_retry))
            .map_err(|e| e.to_string())?;
        Ok(PlacementPolicy { scheduler, create_retry: opts.create_retry })
    }

    pub fn strategy_name(&self) -> String {
        self.scheduler.strategy().to_string()
    }

    pub fn filter_names(&self) -> String {
        self.scheduler.filter_names()
    }

    /// `swarm.overcommit`: the fraction added to each engine's resources.
    pub fn overcommit(&self) -> f64 {
        self.scheduler.overcommit()
    }

    pub fn create_retry(&self) -> u32 {
        self.create_retry
    }
}

/// A placement decision: engines best first, and the reservation of the
/// container on the engine being tried (held until its create is answered).
pub struct Placement<'a> {
    pub ranked: Vec<Arc<Engine>>,
    pub(super) reservation: Option<PendingReservation<'a>>,
}

impl Cluster {
    /// Decides where `request` goes and reserves it there, in one step.
    pub fn place(&self, request: &ContainerRequest) -> Result<Placement<'_>, ScheduleError> {
        let (ranked, reservation) = self.with_pending(|pending| {
            let ranked = self.rank(pending, request)?;
            let reserve = ranked.first().map(|e| (e.addr.clone(), ContainerSnapshot::pending_from_request(request)));
            Ok((ranked, reserve))
        })?;
        Ok(Placement { ranked, reservation })
    }

    /// Every engine the filters allow `request` on, best first, reserving
    /// nothing: where a volume with placement rules is created.
    pub fn engines_matching(&self, request: &ContainerRequest) -> Result<Vec<Arc<Engine>>, ScheduleError> {
        let (ranked, _) = self.with_pending(|pending| Ok((self.rank(pending, request)?, None)))?;
        Ok(ranked)
    }

    /// Runs the scheduler on every engine's snapshot, with the `pending`
    /// creates counted on their engines.
    fn rank(
        &self,
        pending: &[(u64, String, ContainerSnapshot)],
        request: &ContainerRequest,
    ) -> Result<Vec<Arc<Engine>>, ScheduleError> {
        let mut nodes = Vec::new();
        let mut engines = Vec::new();
        for engine in self.engines() {
            let Some(mut node) = engine.node_snapshot() else {
                continue;
            };
            // A paused or drained node takes nothing new; its node labels
            // match constraints as engine labels do (those win on a clash).
            let settings = self.state.node(&node.node_id).doc;
            if !settings.availability.takes_new_containers() {
                continue;
            }
            let here: Vec<&ContainerSnapshot> =
                pending.iter().filter(|(_, addr, _)| *addr == engine.addr).map(|(_, _, c)| c).collect();
            if !settings.labels.is_empty() || !here.is_empty() {
                // Only a node with something to add is copied.
                let node = Arc::make_mut(&mut node);
                for (key, value) in settings.labels {
                    node.labels.entry(key).or_insert(value);
                }
                node.containers.extend(here.into_iter().map(|c| Arc::new(c.clone())));
            }
            nodes.push(node);
            engines.push(engine);
        }
        let placement = self.policy.scheduler.select_shared(&nodes, request)?;
        for warning in &placement.warnings {
            Observed::PlacementWarning { warning }.emit();
        }
        Ok(placement.ranked.iter().map(|&i| engines[i].clone()).collect())
    }

    /// True when some healthy engine has `image` (by tag, repository or ID prefix).
    pub fn has_image(&self, image: &str) -> bool {
        let with_tag = if image.contains('@') || image.rsplit('/').next().is_some_and(|l| l.contains(':')) {
            image.to_string()
        } else {
            format!("{image}:latest")
        };
        self.healthy_engines().iter().any(|e| {
            e.images().iter().any(|i| {
                i.repo_tags.contains(&with_tag)
                    || i.id == image
                    || i.id.trim_start_matches("sha256:").starts_with(image)
            })
        })
    }
}

/// Rewrites `-c N` (N CPUs, the original's meaning) into the CPU shares the
/// chosen engine needs: `ceil(N × 1024 / engine CPUs)`.
pub fn cpu_shares_for_engine(config: &mut Value, engine: &Engine) {
    let Some(cpus) = engine.info().map(|i| i.cpus) else {
        return;
    };
    let Some(shares) = config.get_mut("HostConfig").and_then(|h| h.get_mut("CpuShares")) else {
        return;
    };
    if let Some(n) = shares.as_i64().filter(|n| *n > 0) {
        *shares = Value::from(swarm_scheduler::shares_for_cpus(n, cpus));
    }
}
