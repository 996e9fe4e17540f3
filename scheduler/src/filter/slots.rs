//! Container-slots filter: the engine label `containerslots=N` caps the
//! number of containers (pending ones included) on that node.

use super::{retain_nonempty, Ctx, Unsatisfied};

/// Engine label holding the slot count.
const SLOTS_LABEL: &str = "containerslots";

/// Keeps nodes without the label, with a non-integer label (ignored, with a
/// warning, as the original did), or with fewer containers than slots.
pub(super) fn apply(ctx: &mut Ctx<'_>, candidates: &mut Vec<usize>) -> Result<(), Unsatisfied> {
    let nodes = ctx.nodes;
    let mut invalid = Vec::new();
    let result = retain_nonempty(candidates, |&i| {
        let node = &nodes[i];
        match node.labels.get(SLOTS_LABEL) {
            None => true,
            Some(raw) => match raw.parse::<i64>() {
                Ok(slots) => i64::try_from(node.containers.len()).unwrap_or(i64::MAX) < slots,
                Err(_) => {
                    invalid.push(i);
                    true
                }
            },
        }
    });
    for i in invalid {
        let node = &nodes[i];
        let raw = node.labels.get(SLOTS_LABEL).map_or("", String::as_str);
        ctx.warn(format!("node {}: ignoring label {SLOTS_LABEL}=\"{raw}\" (not an integer)", node.name));
    }
    result
}

#[cfg(test)]
mod tests {
    use crate::filter::test_support::{run, run_with_warnings};
    use crate::filter::FilterKind;
    use crate::request::ContainerRequest;
    use crate::snapshot::{ContainerSnapshot, NodeSnapshot};

    fn node(name: &str, slots: Option<&str>, containers: usize) -> NodeSnapshot {
        let mut n = NodeSnapshot::new(name, name, "");
        if let Some(s) = slots {
            n.labels.insert("containerslots".into(), s.into());
        }
        for i in 0..containers {
            n.add_container(ContainerSnapshot::new(&format!("{name}-{i}"), ""));
        }
        n
    }

    #[test]
    fn caps_containers_per_node() {
        let nodes = vec![node("free", Some("3"), 2), node("full", Some("2"), 2), node("unlimited", None, 50)];
        let req = ContainerRequest::default();
        assert_eq!(run(FilterKind::ContainerSlots, &nodes, &req, true).unwrap(), ["free", "unlimited"]);
        assert_eq!(FilterKind::ContainerSlots.conditions(&req), ["available container slots"]);
    }

    #[test]
    fn pending_containers_take_slots() {
        let mut n = node("n", Some("1"), 0);
        let mut p = ContainerSnapshot::new("", "/pending");
        p.pending = true;
        n.add_container(p);
        let req = ContainerRequest::default();
        assert!(run(FilterKind::ContainerSlots, &[n], &req, true).is_err());
    }

    #[test]
    fn invalid_label_is_ignored_with_a_warning() {
        let nodes = vec![node("odd", Some("lots"), 10), node("full", Some("0"), 0)];
        let req = ContainerRequest::default();
        let mut warnings = Vec::new();
        let kept = run_with_warnings(FilterKind::ContainerSlots, &nodes, &req, true, &mut warnings).unwrap();
        assert_eq!(kept, ["odd"]);
        assert_eq!(warnings, ["node odd: ignoring label containerslots=\"lots\" (not an integer)"]);
    }
}
