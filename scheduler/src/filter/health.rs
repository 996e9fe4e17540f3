//! Health filter: only nodes whose health indicator is positive.

use super::{retain_nonempty, Ctx, Unsatisfied};

/// Keeps healthy nodes (healthy state and fewer failures than the retry
/// count).
pub(super) fn apply(ctx: &mut Ctx<'_>, candidates: &mut Vec<usize>) -> Result<(), Unsatisfied> {
    let (nodes, retry) = (ctx.nodes, ctx.failure_retry);
    retain_nonempty(candidates, |&i| nodes[i].health_indicator(retry) > 0)
}

#[cfg(test)]
mod tests {
    use crate::filter::test_support::run;
    use crate::filter::FilterKind;
    use crate::request::ContainerRequest;
    use crate::snapshot::NodeSnapshot;

    #[test]
    fn keeps_only_healthy_nodes() {
        let mut nodes = vec![
            NodeSnapshot::new("1", "ok", ""),
            NodeSnapshot::new("2", "down", ""),
            NodeSnapshot::new("3", "flaky", ""),
            NodeSnapshot::new("4", "failing", ""),
        ];
        nodes[1].healthy = false;
        nodes[2].failure_count = 2;
        nodes[3].failure_count = 3;
        let req = ContainerRequest::default();
        assert_eq!(run(FilterKind::Health, &nodes, &req, true).unwrap(), ["ok", "flaky"]);
        nodes[0].healthy = false;
        nodes[2].healthy = false;
        assert!(run(FilterKind::Health, &nodes, &req, true).is_err());
        assert!(run(FilterKind::Health, &[], &req, true).is_err());
        assert!(FilterKind::Health.conditions(&req).is_empty());
    }
}
