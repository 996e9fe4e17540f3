//! The scheduler: the configured filter chain followed by the strategy,
//! with the soft-expression retry of the original.

use std::fmt;

use rand::Rng;

use crate::error::{ConfigError, ScheduleError};
use crate::filter::{join_names, Ctx, FilterKind};
use crate::request::ContainerRequest;
use crate::snapshot::NodeSnapshot;
use crate::strategy::{overcommitted, Strategy, Weighing};

/// Default `swarm.overcommit` cluster option.
pub const DEFAULT_OVERCOMMIT: f64 = 0.05;
/// Default `--engine-failure-retry`.
pub const DEFAULT_FAILURE_RETRY: u32 = 3;

/// The outcome of a successful decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// Indices into the node slice given to [`Scheduler::select`], best
    /// first; never empty. Later entries are the fallbacks to try when
    /// creating on an earlier one fails (`swarm.createretry`).
    pub ranked: Vec<usize>,
    /// Non-fatal findings about the cluster state (e.g. an unparsable
    /// `containerslots` label), for the caller to log.
    pub warnings: Vec<String>,
}

impl Placement {
    /// The chosen node's index.
    pub fn best(&self) -> Option<usize> {
        self.ranked.first().copied()
    }

    /// The IDs of the ranked nodes, best first.
    pub fn node_ids<'a>(&self, nodes: &'a [NodeSnapshot]) -> Vec<&'a str> {
        self.ranked.iter().filter_map(|&i| nodes.get(i)).map(|n| n.id.as_str()).collect()
    }
}

/// The placement engine: a strategy, a filter chain and cluster options.
/// Immutable and `Sync`; one instance serves every decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduler {
    /// How candidates are ranked.
    strategy: Strategy,
    /// Filters in application order (duplicates allowed, as originally).
    filters: Vec<FilterKind>,
    /// `swarm.overcommit`; finite and greater than -1.
    overcommit: f64,
    /// Derived from `overcommit` and the failure retry count.
    weighing: Weighing,
}

impl Default for Scheduler {
    /// `spread`, the default filter chain, 5% overcommit, 3 retries.
    fn default() -> Self {
        Scheduler {
            strategy: Strategy::Spread,
            filters: FilterKind::DEFAULT.to_vec(),
            overcommit: DEFAULT_OVERCOMMIT,
            weighing: Weighing {
                overcommit_percent: overcommit_percent(DEFAULT_OVERCOMMIT),
                failure_retry: DEFAULT_FAILURE_RETRY,
            },
        }
    }
}

/// `int64(ratio * 100)` as the original computed it (truncation).
fn overcommit_percent(ratio: f64) -> i64 {
    (ratio * 100.0) as i64
}

impl Scheduler {
    /// Builds a scheduler from a strategy name and filter names, with the
    /// default overcommit and failure retry.
    pub fn new<I, S>(strategy: &str, filters: I) -> Result<Scheduler, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let strategy = strategy.parse::<Strategy>()?;
        let filters =
            filters.into_iter().map(|name| name.as_ref().parse::<FilterKind>()).collect::<Result<Vec<_>, _>>()?;
        Ok(Scheduler { strategy, filters, ..Scheduler::default() })
    }

    /// Sets the `swarm.overcommit` ratio (e.g. 0.05 for 5%).
    pub fn with_overcommit(mut self, ratio: f64) -> Result<Scheduler, ConfigError> {
        if !ratio.is_finite() || ratio <= -1.0 {
            return Err(ConfigError::InvalidOvercommit(ratio));
        }
        self.overcommit = ratio;
        self.weighing.overcommit_percent = overcommit_percent(ratio);
        Ok(self)
    }

    /// Sets the engine failure retry count used by the health indicator.
    pub fn with_failure_retry(mut self, retry: u32) -> Result<Scheduler, ConfigError> {
        if retry == 0 {
            return Err(ConfigError::InvalidFailureRetry(retry));
        }
        self.weighing.failure_retry = retry;
        Ok(self)
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The filters, in order.
    pub fn filters(&self) -> &[FilterKind] {
        &self.filters
    }

    /// The filter names as `docker info` shows them: `health, port, …`.
    pub fn filter_names(&self) -> String {
        join_names(self.filters.iter().map(|f| f.name()))
    }

    /// The overcommit ratio.
    pub fn overcommit(&self) -> f64 {
        self.overcommit
    }

    /// The engine failure retry count.
    pub fn failure_retry(&self) -> u32 {
        self.weighing.failure_retry
    }

    /// A node total (CPUs or memory) with the overcommit applied, as the
    /// original reported it in `docker info` and used for scheduling.
    pub fn total_with_overcommit(&self, total: i64) -> i64 {
        overcommitted(total, self.weighing.overcommit_percent)
    }

    /// Chooses where to create `request`, using the thread-local RNG for
    /// the `random` strategy.
    pub fn select(&self, nodes: &[NodeSnapshot], request: &ContainerRequest) -> Result<Placement, ScheduleError> {
        self.select_with_rng(nodes, request, &mut rand::thread_rng())
    }

    /// [`Scheduler::select`] on snapshots the caller shares (a manager
    /// keeps each engine's snapshot until the engine changes, so a
    /// placement copies nothing).
    pub fn select_shared(
        &self,
        nodes: &[std::sync::Arc<NodeSnapshot>],
        request: &ContainerRequest,
    ) -> Result<Placement, ScheduleError> {
        let nodes: Vec<&NodeSnapshot> = nodes.iter().map(|n| n.as_ref()).collect();
        self.select_refs(&nodes, request, &mut rand::thread_rng())
    }

    /// Chooses where to create `request`, shuffling with `rng` under the
    /// `random` strategy (deterministic with a seeded RNG).
    ///
    /// The filters run with soft expressions first; if that fails for any
    /// reason and the request has soft expressions, everything runs again
    /// without them and that second outcome is returned.
    pub fn select_with_rng<R: Rng + ?Sized>(
        &self,
        nodes: &[NodeSnapshot],
        request: &ContainerRequest,
        rng: &mut R,
    ) -> Result<Placement, ScheduleError> {
        let nodes: Vec<&NodeSnapshot> = nodes.iter().collect();
        self.select_refs(&nodes, request, rng)
    }

    fn select_refs<R: Rng + ?Sized>(
        &self,
        nodes: &[&NodeSnapshot],
        request: &ContainerRequest,
        rng: &mut R,
    ) -> Result<Placement, ScheduleError> {
        let mut warnings = Vec::new();
        let mut result = self.attempt(nodes, request, true, rng, &mut warnings);
        if result.is_err() && request.has_soft_expressions() {
            result = self.attempt(nodes, request, false, rng, &mut warnings);
        }
        result.map(|ranked| Placement { ranked, warnings })
    }

    fn attempt<R: Rng + ?Sized>(
        &self,
        nodes: &[&NodeSnapshot],
        request: &ContainerRequest,
        soft: bool,
        rng: &mut R,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<usize>, ScheduleError> {
        let mut ctx = Ctx { nodes, request, failure_retry: self.weighing.failure_retry, warnings };
        let mut candidates: Vec<usize> = (0..nodes.len()).collect();
        for (position, filter) in self.filters.iter().enumerate() {
            if filter.apply(&mut ctx, &mut candidates, soft).is_err() {
                return Err(self.failure(position, request));
            }
        }
        if candidates.is_empty() {
            return Err(ScheduleError::NoNodes);
        }
        self.strategy.rank(nodes, candidates, request, &self.weighing, rng)
    }

    /// The error for the filter at `position` having failed.
    fn failure(&self, position: usize, request: &ContainerRequest) -> ScheduleError {
        let failed = self.filters[position];
        if failed == FilterKind::Health {
            return ScheduleError::NoHealthyNode;
        }
        let conditions = self.filters[..=position]
            .iter()
            .map(|f| f.conditions(request))
            .filter(|list| !list.is_empty())
            .map(|list| format!("[{}]", list.join(" ")))
            .collect();
        ScheduleError::Unsatisfiable { failed, conditions }
    }
}

impl fmt::Display for Scheduler {
    /// `Strategy: spread` and `Filters: …` on two lines, as in `docker info`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Strategy: {}\nFilters: {}", self.strategy, self.filter_names())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ContainerSnapshot, ImageSnapshot, PortBinding};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::{json, Value};

    const GB: i64 = 1 << 30;

    fn node(name: &str) -> NodeSnapshot {
        let mut n = NodeSnapshot::new(&format!("id-{name}"), name, "10.0.0.1:2375");
        n.total_cpus = 4;
        n.total_memory = 8 * GB;
        n
    }

    fn request(body: Value) -> ContainerRequest {
        let mut body = body;
        ContainerRequest::from_create_body(Some("new"), &mut body).expect("valid request")
    }

    fn names(nodes: &[NodeSnapshot], placement: &Placement) -> Vec<String> {
        placement.ranked.iter().map(|&i| nodes[i].name.clone()).collect()
    }

    #[test]
    fn config_from_names() {
        let s = Scheduler::new("binpack", ["health", "constraint"]).unwrap();
        assert_eq!(s.strategy(), Strategy::Binpack);
        assert_eq!(s.filters(), [FilterKind::Health, FilterKind::Constraint]);
        assert_eq!(s.filter_names(), "health, constraint");
        assert_eq!(s.to_string(), "Strategy: binpack\nFilters: health, constraint");
        assert!(matches!(Scheduler::new("spread", ["health", "nope"]), Err(ConfigError::UnknownFilter { .. })));
        assert!(matches!(Scheduler::new("nope", Vec::<String>::new()), Err(ConfigError::UnknownStrategy { .. })));
        let d = Scheduler::default();
        assert_eq!(d.filter_names(), "health, port, containerslots, dependency, affinity, constraint, whitelist");
        assert_eq!(d.strategy().to_string(), "spread");
        assert_eq!(d.overcommit(), DEFAULT_OVERCOMMIT);
        assert_eq!(d.failure_retry(), DEFAULT_FAILURE_RETRY);
    }

    #[test]
    fn options_are_validated() {
        let s = Scheduler::default();
        assert!(s.clone().with_overcommit(-1.0).is_err());
        assert!(s.clone().with_overcommit(f64::NAN).is_err());
        assert!(s.clone().with_failure_retry(0).is_err());
        let s = s.with_overcommit(0.5).unwrap().with_failure_retry(5).unwrap();
        assert_eq!(s.total_with_overcommit(4), 6);
        assert_eq!(s.failure_retry(), 5);
        assert_eq!(Scheduler::default().total_with_overcommit(100), 105);
    }

    #[test]
    fn default_spread_ranks_every_fitting_node() {
        let mut busy = node("busy");
        let mut c = ContainerSnapshot::new("c1", "/c1");
        c.reserved_cpus = 2;
        busy.add_container(c);
        let nodes = [busy, node("idle")];
        let req = request(json!({"HostConfig": {"CpuShares": 1}}));
        let p = Scheduler::default().select(&nodes, &req).unwrap();
        assert_eq!(names(&nodes, &p), ["idle", "busy"]);
        assert_eq!(p.best(), Some(1));
        assert_eq!(p.node_ids(&nodes), ["id-idle", "id-busy"]);
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn soft_expressions_fall_back() {
        let mut ssd = node("ssd");
        ssd.labels.insert("storage".into(), "ssd".into());
        let nodes = [node("plain"), ssd];
        let s = Scheduler::default();
        // Satisfiable soft constraint: honoured.
        let p = s.select(&nodes, &request(json!({"Env": ["constraint:storage==~ssd"]}))).unwrap();
        assert_eq!(names(&nodes, &p), ["ssd"]);
        // Unsatisfiable soft constraint: ignored on retry.
        let p = s.select(&nodes, &request(json!({"Env": ["constraint:storage==~nvme"]}))).unwrap();
        assert_eq!(p.ranked.len(), 2);
        // Soft affinity that fails, with a hard constraint that holds.
        let req = request(json!({"Env": ["affinity:image==~redis", "constraint:storage==ssd"]}));
        let p = s.select(&nodes, &req).unwrap();
        assert_eq!(names(&nodes, &p), ["ssd"]);
        // Hard constraint that fails: error even with soft retry.
        let req = request(json!({"Env": ["affinity:image==~redis", "constraint:storage==nvme"]}));
        let err = s.select(&nodes, &req).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unable to find a node that satisfies the following conditions \n\
             [available container slots]\n\
             [image==redis (soft=true)]\n\
             [storage==nvme]"
        );
    }

    #[test]
    fn soft_retry_also_covers_resource_failures() {
        // With the soft affinity the only candidate lacks memory; without
        // it the big node is chosen.
        let mut small = node("small");
        small.total_memory = GB;
        small.add_image(ImageSnapshot::new("sha256:1", &["redis:latest"]));
        let nodes = [small, node("big")];
        let req = request(json!({
            "Env": ["affinity:image==~redis"],
            "HostConfig": {"Memory": 4 * GB}
        }));
        let p = Scheduler::default().select(&nodes, &req).unwrap();
        assert_eq!(names(&nodes, &p), ["big"]);
    }

    #[test]
    fn error_lists_conditions_up_to_the_failing_filter() {
        let mut n = node("n1");
        n.labels.insert("containerslots".into(), "0".into());
        let req = request(json!({
            "Env": ["constraint:storage==ssd"],
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}
        }));
        let err = Scheduler::default().select(&[n], &req).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unable to find a node that satisfies the following conditions \n\
             [port 8080 (Bridge mode)]\n\
             [available container slots]"
        );
        assert!(matches!(err, ScheduleError::Unsatisfiable { failed: FilterKind::ContainerSlots, .. }));
    }

    #[test]
    fn port_conflict_message() {
        let mut n = node("n1");
        let mut c = ContainerSnapshot::new("c", "/c");
        c.port_bindings.push(PortBinding::new("80/tcp", "", "8080"));
        n.add_container(c);
        let req = request(json!({
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}
        }));
        let err = Scheduler::default().select(&[n], &req).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unable to find a node that satisfies the following conditions \n\
             [port 8080 (Bridge mode)]"
        );
    }

    #[test]
    fn dependency_and_whitelist_messages() {
        let nodes = [node("n1"), node("n2")];
        let req = request(json!({"HostConfig": {"VolumesFrom": ["data:ro"], "Links": ["db:db"]}}));
        assert_eq!(
            Scheduler::default().select(&nodes, &req).unwrap_err().to_string(),
            "Unable to find a node that satisfies the following conditions \n\
             [available container slots]\n\
             [--volumes-from=data:ro --link=db:db]"
        );
        let req = request(json!({"Env": ["whitelist:node==n3", "affinity:container!=x"]}));
        assert_eq!(
            Scheduler::default().select(&nodes, &req).unwrap_err().to_string(),
            "Unable to find a node that satisfies the following conditions \n\
             [available container slots]\n\
             [container!=x (soft=false)]\n\
             [node==n3 (soft=false)]"
        );
    }

    #[test]
    fn health_failure_has_its_own_message() {
        let mut n = node("n1");
        n.healthy = false;
        let req = request(json!({"Env": ["constraint:storage==ssd"]}));
        assert_eq!(Scheduler::default().select(&[n], &req), Err(ScheduleError::NoHealthyNode));
        assert_eq!(Scheduler::default().select(&[], &req), Err(ScheduleError::NoHealthyNode));
    }

    #[test]
    fn no_filters_and_no_nodes() {
        let s = Scheduler::new("spread", Vec::<&str>::new()).unwrap();
        assert_eq!(s.select(&[], &ContainerRequest::default()), Err(ScheduleError::NoNodes));
    }

    #[test]
    fn resource_exhaustion_message() {
        let req = request(json!({"HostConfig": {"Memory": 64 * GB}}));
        let err = Scheduler::default().select(&[node("n1")], &req).unwrap_err();
        assert_eq!(err, ScheduleError::NoResources);
        assert_eq!(err.to_string(), "no resources available to schedule container");
    }

    #[test]
    fn binpack_fills_the_busiest_node() {
        let mut busy = node("busy");
        let mut c = ContainerSnapshot::new("c", "/c");
        c.reserved_memory = 4 * GB;
        busy.add_container(c);
        let nodes = [node("idle"), busy];
        let s = Scheduler::new("binpack", FilterKind::DEFAULT.map(FilterKind::name)).unwrap();
        let p = s.select(&nodes, &request(json!({"HostConfig": {"Memory": GB}}))).unwrap();
        assert_eq!(names(&nodes, &p), ["busy", "idle"]);
    }

    #[test]
    fn random_is_reproducible_with_a_seed() {
        let nodes: Vec<_> = (0..10).map(|i| node(&format!("n{i}"))).collect();
        let s = Scheduler::new("random", ["health"]).unwrap();
        let req = ContainerRequest::default();
        let a = s.select_with_rng(&nodes, &req, &mut StdRng::seed_from_u64(1)).unwrap();
        let b = s.select_with_rng(&nodes, &req, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.ranked.len(), 10);
        assert!(s.select(&nodes, &req).is_ok());
    }

    #[test]
    fn warnings_reach_the_placement() {
        let mut n = node("n1");
        n.labels.insert("containerslots".into(), "many".into());
        let p = Scheduler::default().select(&[n], &ContainerRequest::default()).unwrap();
        assert_eq!(p.warnings, ["node n1: ignoring label containerslots=\"many\" (not an integer)"]);
    }

    #[test]
    fn pending_container_is_seen_by_the_next_decision() {
        let mut n1 = node("n1");
        let n2 = node("n2");
        let first = request(json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "80"}]}}}));
        n1.add_container(ContainerSnapshot::pending_from_request(&first));
        let nodes = [n1, n2];
        let p = Scheduler::default().select(&nodes, &first).unwrap();
        assert_eq!(names(&nodes, &p), ["n2"]);
    }

    /// 1,000 nodes × 30 containers with a constraint and an affinity; not
    /// timed here (the manager benchmarks it), just exercised end to end.
    #[test]
    fn large_cluster_decision_completes() {
        let nodes = large_cluster(1000, 30);
        let req = request(json!({
            "Env": ["constraint:zone==z3", "affinity:container!=app-17-5"],
            "HostConfig": {"Memory": GB, "CpuShares": 1,
                "PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}
        }));
        let p = Scheduler::default().select(&nodes, &req).unwrap();
        assert!(!p.ranked.is_empty());
        for &i in &p.ranked {
            assert_eq!(nodes[i].labels["zone"], "z3");
            assert_ne!(nodes[i].name, "node-17");
        }
        let plain = Scheduler::default().select(&nodes, &ContainerRequest::default()).unwrap();
        assert_eq!(plain.ranked.len(), 1000);
    }

    pub(crate) fn large_cluster(node_count: usize, per_node: usize) -> Vec<NodeSnapshot> {
        (0..node_count)
            .map(|i| {
                let mut n = NodeSnapshot::new(&format!("ID{i:04}"), &format!("node-{i}"), "");
                n.total_cpus = 64;
                n.total_memory = 256 * GB;
                n.labels.insert("zone".into(), format!("z{}", i % 10));
                n.labels.insert("storage".into(), "ssd".into());
                n.containers = (0..per_node)
                    .map(|j| {
                        let mut c = ContainerSnapshot::new(
                            &format!("{i:08x}{j:08x}0000000000000000"),
                            &format!("/app-{i}-{j}"),
                        );
                        c.labels.insert("com.example.app".into(), format!("app{j}"));
                        c.reserved_cpus = 1;
                        c.reserved_memory = GB;
                        c.port_bindings.push(PortBinding::new("80/tcp", "", &format!("{}", 10000 + j)));
                        std::sync::Arc::new(c)
                    })
                    .collect();
                n.add_image(ImageSnapshot::new(&format!("sha256:{i:064x}"), &["nginx:latest"]));
                n
            })
            .collect()
    }
}

#[cfg(test)]
mod proptests {
    use super::{FilterKind, Scheduler};
    use crate::request::ContainerRequest;
    use crate::snapshot::{ContainerSnapshot, NodeSnapshot};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn arb_node() -> impl Strategy<Value = NodeSnapshot> {
        (
            "n[0-9]",
            prop::option::of("(ssd|hdd)"),
            0i64..8,
            0i64..8,
            any::<bool>(),
            0u32..4,
            prop::collection::vec(("c[0-9]", 0i64..3, 0i64..3), 0..4),
        )
            .prop_map(|(name, storage, cpus, mem, healthy, failures, containers)| {
                let mut n = NodeSnapshot::new(&format!("id-{name}"), &name, "");
                if let Some(s) = storage {
                    n.labels.insert("storage".into(), s);
                }
                n.total_cpus = cpus;
                n.total_memory = mem;
                n.healthy = healthy;
                n.failure_count = failures;
                for (cname, c, m) in containers {
                    let mut c2 = ContainerSnapshot::new(&format!("{cname}{name}"), &format!("/{cname}"));
                    c2.reserved_cpus = c;
                    c2.reserved_memory = m;
                    n.add_container(c2);
                }
                n
            })
    }

    proptest! {
        /// Decisions never panic, rank each node at most once, and every
        /// ranked node satisfies the hard constraints and affinities.
        #[test]
        fn ranked_nodes_satisfy_hard_expressions(
            nodes in prop::collection::vec(arb_node(), 0..8),
            constraints in prop::collection::vec("(storage|node)(==|!=)~?(ssd|hdd|n[0-9]|\\*)", 0..3),
            affinities in prop::collection::vec("container(==|!=)~?c[0-9]", 0..2),
            cpus in 0i64..4,
            memory in 0i64..4,
            strategy in prop::sample::select(vec!["spread", "binpack", "random"]),
            seed in any::<u64>(),
        ) {
            let mut req = ContainerRequest::default();
            for c in &constraints {
                req.add_constraint(c).unwrap();
            }
            for a in &affinities {
                req.add_affinity(a).unwrap();
            }
            req.cpus = cpus;
            req.memory = memory;
            let s = Scheduler::new(strategy, FilterKind::DEFAULT.map(FilterKind::name)).unwrap();
            let Ok(p) = s.select_with_rng(&nodes, &req, &mut StdRng::seed_from_u64(seed)) else {
                return Ok(());
            };
            prop_assert!(!p.ranked.is_empty());
            let mut seen = p.ranked.clone();
            seen.sort_unstable();
            seen.dedup();
            prop_assert_eq!(seen.len(), p.ranked.len());
            for &i in &p.ranked {
                let node = &nodes[i];
                prop_assert!(node.health_indicator(s.failure_retry()) > 0);
                for c in req.constraints().iter().filter(|c| !c.is_soft()) {
                    let ok = match c.key() {
                        "node" => c.matches_any([node.id.as_str(), node.name.as_str(), node.node_id.as_str()]),
                        key => c.matches_any([node.labels.get(key).map_or("", String::as_str)]),
                    };
                    prop_assert!(ok, "{} violates {}", node.name, c);
                }
                for a in req.affinities().iter().filter(|a| !a.is_soft()) {
                    let found = node.containers.iter().any(|c| {
                        a.value_matches(&c.id)
                            || c.names.iter().any(|n| a.value_matches(n.trim_start_matches('/')))
                    });
                    prop_assert!(a.apply_op(found), "{} violates {}", node.name, a);
                }
            }
        }
    }
}
