//! Whitelist filter: `whitelist:node==a|b|c` keeps only the listed nodes
//! (by name). The key is not interpreted, as in the original.

use super::{retain_per_expr, Ctx, Unsatisfied};

/// Applies each whitelist. `==` keeps listed nodes; `!=` keeps the others
/// (the original ignored the operator; excluding is what `!=` says).
pub(super) fn apply(ctx: &mut Ctx<'_>, candidates: &mut Vec<usize>, soft: bool) -> Result<(), Unsatisfied> {
    retain_per_expr(ctx.request.whitelists(), soft, ctx.nodes, candidates, |expr, node| {
        expr.apply_op(expr.value().split('|').any(|name| name == node.name))
    })
}

#[cfg(test)]
mod tests {
    use crate::filter::test_support::{request, run};
    use crate::filter::FilterKind;
    use crate::snapshot::NodeSnapshot;
    use serde_json::json;

    fn nodes() -> Vec<NodeSnapshot> {
        ["n1", "n2", "n3"].iter().map(|n| NodeSnapshot::new(&format!("id-{n}"), n, "")).collect()
    }

    #[test]
    fn keeps_listed_nodes() {
        let req = request(json!({"Env": ["whitelist:node==n1|n3"]}));
        assert_eq!(run(FilterKind::Whitelist, &nodes(), &req, true).unwrap(), ["n1", "n3"]);
        assert_eq!(FilterKind::Whitelist.conditions(&req), ["node==n1|n3 (soft=false)"]);
    }

    #[test]
    fn names_are_exact() {
        let req = request(json!({"Env": ["whitelist:node==n"]}));
        assert!(run(FilterKind::Whitelist, &nodes(), &req, true).is_err());
    }

    #[test]
    fn not_equal_excludes() {
        let req = request(json!({"Env": ["whitelist:node!=n1|n2"]}));
        assert_eq!(run(FilterKind::Whitelist, &nodes(), &req, true).unwrap(), ["n3"]);
    }

    #[test]
    fn several_whitelists_intersect_and_soft_ones_can_be_dropped() {
        let req = request(json!({"Env": ["whitelist:node==n1|n2", "whitelist:node==~n3"]}));
        assert!(run(FilterKind::Whitelist, &nodes(), &req, true).is_err());
        assert_eq!(run(FilterKind::Whitelist, &nodes(), &req, false).unwrap(), ["n1", "n2"]);
    }
}
