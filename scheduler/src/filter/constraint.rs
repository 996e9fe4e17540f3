//! Constraint filter: `node` matches the node name, engine ID or node ID, any other key an
//! engine label (a label the node lacks reads as "", so `!=` matches it).

use super::{retain_per_expr, Ctx, Unsatisfied};

/// Applies each constraint in turn.
pub(super) fn apply(ctx: &mut Ctx<'_>, candidates: &mut Vec<usize>, soft: bool) -> Result<(), Unsatisfied> {
    retain_per_expr(ctx.request.constraints(), soft, ctx.nodes, candidates, |expr, node| match expr.key() {
        "node" => expr.matches_any([node.id.as_str(), node.name.as_str(), node.node_id.as_str()]),
        key => expr.matches_any([node.labels.get(key).map_or("", String::as_str)]),
    })
}

#[cfg(test)]
mod tests {
    use crate::filter::test_support::{request, run};
    use crate::filter::FilterKind;
    use crate::snapshot::NodeSnapshot;
    use serde_json::json;

    fn nodes() -> Vec<NodeSnapshot> {
        let mut out = Vec::new();
        for (i, (storage, kernel)) in [("ssd", "5.4.0"), ("hdd", "4.19.0"), ("ssd", "3.10.0")].iter().enumerate() {
            let mut n = NodeSnapshot::new(&format!("id-{i}"), &format!("node-0{i}"), "");
            n.labels.insert("storage".into(), storage.to_string());
            n.labels.insert("kernelversion".into(), kernel.to_string());
            out.push(n);
        }
        out[0].labels.insert("region".into(), "us-east".into());
        out
    }

    fn names(env: &[&str], soft: bool) -> Option<Vec<String>> {
        let req = request(json!({ "Env": env }));
        run(FilterKind::Constraint, &nodes(), &req, soft).ok()
    }

    #[test]
    fn label_equality_and_globs() {
        assert_eq!(names(&["constraint:storage==ssd"], true).unwrap(), ["node-00", "node-02"]);
        assert_eq!(names(&["constraint:kernelversion==5.*"], true).unwrap(), ["node-00"]);
        assert_eq!(names(&["constraint:storage==ssd", "constraint:kernelversion==3.*"], true).unwrap(), ["node-02"]);
        assert_eq!(names(&["constraint:storage==SSD"], true), None);
    }

    #[test]
    fn node_key_matches_name_or_id() {
        assert_eq!(names(&["constraint:node!=node-01"], true).unwrap(), ["node-00", "node-02"]);
        assert_eq!(names(&["constraint:node==id-1"], true).unwrap(), ["node-01"]);
        assert_eq!(names(&["constraint:node==/node-0[02]/"], true).unwrap(), ["node-00", "node-02"]);
    }

    #[test]
    fn missing_label_matches_not_equal_only() {
        assert_eq!(names(&["constraint:region!=us-east"], true).unwrap(), ["node-01", "node-02"]);
        assert_eq!(names(&["constraint:region==us-*"], true).unwrap(), ["node-00"]);
        assert_eq!(names(&["constraint:gpu==yes"], true), None);
    }

    #[test]
    fn soft_constraints_are_skipped_without_soft() {
        assert_eq!(names(&["constraint:storage==~nvme"], true), None);
        assert_eq!(names(&["constraint:storage==~nvme"], false).unwrap().len(), 3);
    }

    #[test]
    fn conditions_list_expressions_without_soft_marker() {
        let req = request(json!({"Env": ["constraint:storage==ssd", "constraint:zone!=~b"]}));
        assert_eq!(FilterKind::Constraint.conditions(&req), ["storage==ssd", "zone!=b"]);
    }
}
