//! Placement strategies: rank the nodes that passed the filters.
//!
//! `spread` and `binpack` weigh each node as the original's `weighNodes`:
//! with totals scaled by the overcommit ratio,
//! `cpu = (reserved + requested) * 100 / total` when CPUs are requested
//! (else 100), the same for memory, and a node is dropped when it is smaller
//! than the request or either score exceeds 100. The weight is
//! `cpu + memory + factor * health` with factor −10 for spread (lowest
//! first, ties to fewer containers) and +10 for binpack (highest first,
//! ties to more containers), so health dominates and a node with recent
//! failures sinks. `random` shuffles the candidates without looking at
//! resources, like the original.

use rand::seq::SliceRandom;
use rand::Rng;

use crate::error::ScheduleError;
use crate::request::ContainerRequest;
use crate::snapshot::NodeSnapshot;

/// A placement strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Least loaded node first (the default).
    #[default]
    Spread,
    /// Most loaded node that still fits first.
    Binpack,
    /// Random order.
    Random,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 3] = [Strategy::Spread, Strategy::Binpack, Strategy::Random];

    /// The name used by `--strategy` and shown by `docker info`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Spread => "spread",
            Strategy::Binpack => "binpack",
            Strategy::Random => "random",
        }
    }

    /// Ranks `candidates` (indices into `nodes`), best first.
    pub(crate) fn rank<R: Rng + ?Sized>(
        self,
        nodes: &[&NodeSnapshot],
        mut candidates: Vec<usize>,
        request: &ContainerRequest,
        params: &Weighing,
        rng: &mut R,
    ) -> Result<Vec<usize>, ScheduleError> {
        match self {
            Strategy::Random => {
                candidates.shuffle(rng);
                Ok(candidates)
            }
            Strategy::Spread | Strategy::Binpack => {
                let factor = if self == Strategy::Spread { -10 } else { 10 };
                let mut weighted = weigh(nodes, &candidates, request, params, factor);
                if weighted.is_empty() {
                    return Err(ScheduleError::NoResources);
                }
                // Stable sorts: exact ties keep the input order.
                if self == Strategy::Spread {
                    weighted.sort_by(|a, b| a.weight.cmp(&b.weight).then(a.containers.cmp(&b.containers)));
                } else {
                    weighted.sort_by(|a, b| b.weight.cmp(&a.weight).then(b.containers.cmp(&a.containers)));
                }
                Ok(weighted.into_iter().map(|w| w.index).collect())
            }
        }
    }
}

crate::filter::impl_display_and_from_str!(Strategy, UnknownStrategy);

/// Cluster-wide numbers the weighing needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Weighing {
    /// Overcommit in whole percent, truncated like the original's
    /// `int64(ratio * 100)`.
    pub overcommit_percent: i64,
    /// Engine failure retry count, for the health indicator (≥ 1).
    pub failure_retry: u32,
}

/// Applies the overcommit like the original's `TotalCpus`/`TotalMemory`:
/// `total + total * percent / 100` in integer arithmetic.
pub fn overcommitted(total: i64, overcommit_percent: i64) -> i64 {
    let total = i128::from(total);
    let scaled = total + total * i128::from(overcommit_percent) / 100;
    i64::try_from(scaled).unwrap_or(if scaled < 0 { i64::MIN } else { i64::MAX })
}

/// A candidate with its weight.
#[derive(Debug, Clone, Copy)]
struct Weighted {
    /// Index into the node list.
    index: usize,
    /// `cpu + memory + factor * health`.
    weight: i64,
    /// Number of containers (tie breaker).
    containers: usize,
}

fn weigh(
    nodes: &[&NodeSnapshot],
    candidates: &[usize],
    request: &ContainerRequest,
    params: &Weighing,
    health_factor: i64,
) -> Vec<Weighted> {
    // i128 throughout: byte counts times 100 must not overflow.
    let want_cpus = i128::from(request.cpus);
    let want_memory = i128::from(request.memory);
    let mut out = Vec::with_capacity(candidates.len());
    for &index in candidates {
        let node = &nodes[index];
        let total_cpus = i128::from(overcommitted(node.total_cpus, params.overcommit_percent));
        let total_memory = i128::from(overcommitted(node.total_memory, params.overcommit_percent));
        if total_memory < want_memory || total_cpus < want_cpus {
            continue;
        }
        // When something is requested, the total is at least as large and
        // so positive: the divisions below cannot be by zero.
        let cpu_score =
            if want_cpus > 0 { (i128::from(node.reserved_cpus()) + want_cpus) * 100 / total_cpus } else { 100 };
        let memory_score =
            if want_memory > 0 { (i128::from(node.reserved_memory()) + want_memory) * 100 / total_memory } else { 100 };
        if cpu_score > 100 || memory_score > 100 {
            continue;
        }
        let health = node.health_indicator(params.failure_retry);
        // Both scores are in [.., 100] here; the sum fits easily.
        let weight = i64::try_from(cpu_score + memory_score).unwrap_or(i64::MIN) + health_factor * health;
        out.push(Weighted { index, weight, containers: node.containers.len() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ContainerSnapshot;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const GB: i64 = 1 << 30;
    const PARAMS: Weighing = Weighing { overcommit_percent: 0, failure_retry: 3 };

    fn node(name: &str, cpus: i64, memory: i64) -> NodeSnapshot {
        let mut n = NodeSnapshot::new(name, name, "");
        n.total_cpus = cpus;
        n.total_memory = memory;
        n
    }

    fn reserve(node: &mut NodeSnapshot, cpus: i64, memory: i64) {
        let mut c = ContainerSnapshot::new(&format!("c{}", node.containers.len()), "");
        c.reserved_cpus = cpus;
        c.reserved_memory = memory;
        node.add_container(c);
    }

    fn ask(cpus: i64, memory: i64) -> ContainerRequest {
        let mut req = ContainerRequest::default();
        req.cpus = cpus;
        req.memory = memory;
        req
    }

    fn rank(strategy: Strategy, nodes: &[NodeSnapshot], req: &ContainerRequest) -> Result<Vec<String>, ScheduleError> {
        rank_with(strategy, nodes, req, &PARAMS)
    }

    fn rank_with(
        strategy: Strategy,
        nodes: &[NodeSnapshot],
        req: &ContainerRequest,
        params: &Weighing,
    ) -> Result<Vec<String>, ScheduleError> {
        let mut rng = StdRng::seed_from_u64(7);
        let candidates = (0..nodes.len()).collect();
        let refs: Vec<&NodeSnapshot> = nodes.iter().collect();
        strategy
            .rank(&refs, candidates, req, params, &mut rng)
            .map(|v| v.into_iter().map(|i| nodes[i].name.clone()).collect())
    }

    #[test]
    fn names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>().unwrap(), s);
        }
        assert_eq!(
            "fast".parse::<Strategy>().unwrap_err().to_string(),
            "unsupported strategy \"fast\"; valid strategies are: spread, binpack, random"
        );
    }

    #[test]
    fn spread_prefers_the_least_loaded() {
        let mut a = node("a", 2, 2 * GB);
        let b = node("b", 2, 2 * GB);
        reserve(&mut a, 1, GB);
        assert_eq!(rank(Strategy::Spread, &[a, b], &ask(1, GB)).unwrap(), ["b", "a"]);
    }

    #[test]
    fn binpack_prefers_the_most_loaded_that_fits() {
        let mut a = node("a", 2, 2 * GB);
        let b = node("b", 2, 2 * GB);
        let mut full = node("full", 2, 2 * GB);
        reserve(&mut a, 1, GB);
        reserve(&mut full, 2, 2 * GB);
        assert_eq!(rank(Strategy::Binpack, &[b, a, full], &ask(1, GB)).unwrap(), ["a", "b"]);
    }

    #[test]
    fn ties_break_on_container_count() {
        // Nothing requested: every score is 100, only containers differ.
        let mut a = node("a", 2, GB);
        let b = node("b", 2, GB);
        let mut c = node("c", 2, GB);
        reserve(&mut a, 0, 0);
        reserve(&mut c, 0, 0);
        reserve(&mut c, 0, 0);
        let nodes = [a, b, c];
        assert_eq!(rank(Strategy::Spread, &nodes, &ask(0, 0)).unwrap(), ["b", "a", "c"]);
        assert_eq!(rank(Strategy::Binpack, &nodes, &ask(0, 0)).unwrap(), ["c", "a", "b"]);
    }

    #[test]
    fn exact_arithmetic_of_the_original() {
        // (1 + 1) * 100 / 3 = 66 for a; (0 + 1) * 100 / 3 = 33 for b.
        let mut a = node("a", 3, GB);
        reserve(&mut a, 1, 0);
        let b = node("b", 3, GB);
        let weights = weigh(&[&a, &b], &[0, 1], &ask(1, 0), &PARAMS, -10);
        assert_eq!(weights[0].weight, 66 + 100 - 1000);
        assert_eq!(weights[1].weight, 33 + 100 - 1000);
    }

    #[test]
    fn nodes_without_room_are_not_candidates() {
        let small = node("small", 1, GB);
        let mut busy = node("busy", 4, 4 * GB);
        reserve(&mut busy, 4, 0);
        let ok = node("ok", 4, 4 * GB);
        assert_eq!(rank(Strategy::Spread, &[small, busy, ok], &ask(2, GB)).unwrap(), ["ok"]);
        assert_eq!(rank(Strategy::Spread, &[node("tiny", 1, GB)], &ask(0, 2 * GB)), Err(ScheduleError::NoResources));
    }

    #[test]
    fn pending_containers_reserve_resources() {
        let mut a = node("a", 2, 2 * GB);
        let mut p = ContainerSnapshot::new("", "/pending");
        p.pending = true;
        p.reserved_memory = 2 * GB;
        a.add_container(p);
        assert_eq!(rank(Strategy::Spread, &[a], &ask(0, GB)), Err(ScheduleError::NoResources));
    }

    #[test]
    fn overcommit_scales_totals() {
        assert_eq!(overcommitted(100, 5), 105);
        assert_eq!(overcommitted(10, 5), 10); // 10 * 5 / 100 truncates to 0
        assert_eq!(overcommitted(GB, 50), GB + GB / 2);
        assert_eq!(overcommitted(i64::MAX, 100), i64::MAX);
        let mut a = node("a", 100, GB);
        reserve(&mut a, 100, 0);
        let req = ask(5, 0);
        assert_eq!(rank(Strategy::Spread, &[a.clone()], &req), Err(ScheduleError::NoResources));
        let params = Weighing { overcommit_percent: 5, ..PARAMS };
        assert_eq!(rank_with(Strategy::Spread, &[a], &req, &params).unwrap(), ["a"]);
    }

    #[test]
    fn failures_push_a_node_down() {
        let mut flaky = node("flaky", 4, 4 * GB);
        flaky.failure_count = 1;
        let mut loaded = node("loaded", 4, 4 * GB);
        reserve(&mut loaded, 3, 3 * GB);
        let nodes = [flaky, loaded];
        // Health outweighs load for spread…
        assert_eq!(rank(Strategy::Spread, &nodes, &ask(1, GB)).unwrap(), ["loaded", "flaky"]);
        // …and binpack prefers the healthy one too.
        assert_eq!(rank(Strategy::Binpack, &nodes, &ask(1, GB)).unwrap(), ["loaded", "flaky"]);
    }

    #[test]
    fn random_is_a_seeded_shuffle_of_all_candidates() {
        let nodes: Vec<_> = (0..20).map(|i| node(&format!("n{i}"), 0, 0)).collect();
        let req = ask(8, 8 * GB);
        let first = rank(Strategy::Random, &nodes, &req).unwrap();
        let again = rank(Strategy::Random, &nodes, &req).unwrap();
        assert_eq!(first, again);
        let mut sorted = first.clone();
        sorted.sort();
        let mut expected: Vec<_> = nodes.iter().map(|n| n.name.clone()).collect();
        expected.sort();
        assert_eq!(sorted, expected);
        assert_ne!(first, nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>());
    }
}
