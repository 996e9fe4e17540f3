//! Affinity filter: place a container relative to other containers and
//! images on the node.
//!
//! - `container==…` matches a container ID or name (leading `/` ignored);
//!   a plain hex value of at least 12 characters also matches as an ID
//!   prefix (short IDs as `docker ps` prints them);
//! - `image==…` matches an image ID, a `repo:tag`, or a repo name;
//! - any other key matches the label of that name on some container (a
//!   container without the label reads as "").

use crate::expr::Expr;
use crate::lookup::{parse_repository_tag, SHORT_ID_LEN};
use crate::snapshot::NodeSnapshot;

use super::{retain_per_expr, Ctx, Unsatisfied};

/// Applies each affinity in turn.
pub(super) fn apply(ctx: &mut Ctx<'_>, candidates: &mut Vec<usize>, soft: bool) -> Result<(), Unsatisfied> {
    retain_per_expr(ctx.request.affinities(), soft, ctx.nodes, candidates, |expr, node| match expr.key() {
        "container" => expr.apply_op(has_container(expr, node)),
        "image" => expr.apply_op(has_image(expr, node)),
        key => expr.apply_op(has_container_label(expr, key, node)),
    })
}

fn has_container(expr: &Expr, node: &NodeSnapshot) -> bool {
    // Only a long-enough hex literal is tried as an ID prefix, so that a
    // short name such as "cafe" cannot accidentally match random IDs.
    let id_prefix =
        expr.literal_value().filter(|v| v.len() >= SHORT_ID_LEN && v.bytes().all(|b| b.is_ascii_hexdigit()));
    node.containers.iter().any(|c| {
        (!c.id.is_empty() && expr.value_matches(&c.id))
            || id_prefix.is_some_and(|p| c.id.starts_with(p))
            || c.names.iter().any(|n| expr.value_matches(n.strip_prefix('/').unwrap_or(n)))
    })
}

fn has_image(expr: &Expr, node: &NodeSnapshot) -> bool {
    node.images.iter().any(|image| {
        expr.value_matches(&image.id)
            || image
                .repo_tags
                .iter()
                .any(|tag| expr.value_matches(tag) || expr.value_matches(parse_repository_tag(tag).0))
    })
}

fn has_container_label(expr: &Expr, key: &str, node: &NodeSnapshot) -> bool {
    node.containers.iter().any(|c| expr.value_matches(c.labels.get(key).map_or("", String::as_str)))
}

#[cfg(test)]
mod tests {
    use crate::filter::test_support::{request, run};
    use crate::filter::FilterKind;
    use crate::snapshot::{ContainerSnapshot, ImageSnapshot, NodeSnapshot};
    use serde_json::json;

    /// Mirrors the fixture of the original's affinity tests.
    fn nodes() -> Vec<NodeSnapshot> {
        let mut n0 = NodeSnapshot::new("node-0-id", "node-0-name", "node-0");
        n0.add_container(ContainerSnapshot::new("container-n0-0-id", "/container-n0-0-name"));
        n0.add_container(ContainerSnapshot::new("container-n0-1-id", "/container-n0-1-name"));
        n0.add_image(ImageSnapshot::new("image-0-id", &["image-0:tag1", "image-0:tag2"]));
        let mut n1 = NodeSnapshot::new("node-1-id", "node-1-name", "node-1");
        n1.add_container(ContainerSnapshot::new("container-n1-0-id", "/container-n1-0-name"));
        n1.add_container(ContainerSnapshot::new("container-n1-1-id", "/container-n1-1-name"));
        n1.add_image(ImageSnapshot::new("image-1-id", &["image-1:tag1", "image-0:tag3", "image-1:tag2"]));
        let n2 = NodeSnapshot::new("node-2-id", "node-2-name", "node-2");
        vec![n0, n1, n2]
    }

    fn names(env: &[&str], soft: bool) -> Option<Vec<String>> {
        let req = request(json!({ "Env": env }));
        run(FilterKind::Affinity, &nodes(), &req, soft).ok()
    }

    #[test]
    fn no_affinity_keeps_everything() {
        assert_eq!(names(&[], true).unwrap().len(), 3);
    }

    #[test]
    fn container_by_name_id_and_glob() {
        assert_eq!(names(&["affinity:container==does_not_exist"], true), None);
        assert_eq!(names(&["affinity:container==container-n0*"], true).unwrap(), ["node-0-name"]);
        assert_eq!(names(&["affinity:container==container-*"], true).unwrap(), ["node-0-name", "node-1-name"]);
        assert_eq!(names(&["affinity:container==container-n0-0-id"], true).unwrap(), ["node-0-name"]);
        assert_eq!(names(&["affinity:container!=container-n0-1-id"], true).unwrap(), ["node-1-name", "node-2-name"]);
        assert_eq!(names(&["affinity:container==container-n1-0-name"], true).unwrap(), ["node-1-name"]);
        assert_eq!(names(&["affinity:container!=container-n1-1-name"], true).unwrap(), ["node-0-name", "node-2-name"]);
    }

    #[test]
    fn conflicting_and_chained_affinities() {
        assert_eq!(
            names(&["affinity:container!=container-n1-1-name", "affinity:container==container-n1-1-name"], true),
            None
        );
        assert_eq!(
            names(&["affinity:container!=container-n0-1-id", "affinity:container!=container-n1-1-id"], true).unwrap(),
            ["node-2-name"]
        );
        assert_eq!(
            names(&["affinity:container==container-n0-1-id", "affinity:container==container-n1-1-id"], true),
            None
        );
    }

    #[test]
    fn container_by_short_id_prefix() {
        let mut ns = nodes();
        let long = "0123456789abcdef0123456789abcdef";
        ns[2].add_container(ContainerSnapshot::new(long, "/x"));
        let run_env = |env: &str| run(FilterKind::Affinity, &ns, &request(json!({ "Env": [env] })), true).ok();
        assert_eq!(run_env("affinity:container==0123456789ab").unwrap(), ["node-2-name"]);
        assert_eq!(run_env("affinity:container!=0123456789ab").unwrap().len(), 2);
        // Too short to be taken as an ID prefix.
        assert_eq!(run_env("affinity:container==0123"), None);
    }

    #[test]
    fn image_by_id_tag_and_repo() {
        assert_eq!(names(&["affinity:image==image-0-id"], true).unwrap(), ["node-0-name"]);
        assert_eq!(names(&["affinity:image==image-0:tag3"], true).unwrap(), ["node-1-name"]);
        assert_eq!(names(&["affinity:image!=image-0:tag3"], true).unwrap().len(), 2);
        assert_eq!(names(&["affinity:image==image-1"], true).unwrap(), ["node-1-name"]);
        assert_eq!(names(&["affinity:image!=image-1"], true).unwrap().len(), 2);
        assert_eq!(names(&["affinity:image==image-0"], true).unwrap(), ["node-0-name", "node-1-name"]);
    }

    #[test]
    fn soft_affinities() {
        assert_eq!(names(&["affinity:image==~image-0:tag3"], true).unwrap().len(), 1);
        assert_eq!(names(&["affinity:image==~image-1:tag3"], true), None);
        assert_eq!(names(&["affinity:image==~image-1:tag3"], false).unwrap().len(), 3);
        assert_eq!(names(&["affinity:image==~image-*"], true).unwrap().len(), 2);
        assert_eq!(names(&["affinity:image!=~image-*"], true).unwrap(), ["node-2-name"]);
        assert_eq!(names(&["affinity:image==~/image-\\d*/"], true).unwrap().len(), 2);
    }

    #[test]
    fn container_labels() {
        let mut ns = nodes();
        std::sync::Arc::make_mut(&mut ns[0].containers[0]).labels.insert("com.example.type".into(), "frontend".into());
        std::sync::Arc::make_mut(&mut ns[1].containers[1]).labels.insert("com.example.type".into(), "db".into());
        let run_env = |env: &str| run(FilterKind::Affinity, &ns, &request(json!({ "Env": [env] })), true).ok();
        assert_eq!(run_env("affinity:com.example.type==frontend").unwrap(), ["node-0-name"]);
        assert_eq!(run_env("affinity:com.example.type!=frontend").unwrap(), ["node-1-name", "node-2-name"]);
        assert_eq!(run_env("affinity:com.example.type==/d./").unwrap(), ["node-1-name"]);
    }

    #[test]
    fn affinities_from_labels() {
        let req = request(json!({"Labels": {"com.docker.swarm.affinities": "[\"image==image-1\"]"}}));
        assert_eq!(run(FilterKind::Affinity, &nodes(), &req, true).unwrap(), ["node-1-name"]);
    }

    #[test]
    fn pending_containers_count_for_affinity() {
        let mut ns = nodes();
        let mut p = ContainerSnapshot::new("", "/being-created");
        p.pending = true;
        ns[2].add_container(p);
        let req = request(json!({"Env": ["affinity:container==being-created"]}));
        assert_eq!(run(FilterKind::Affinity, &ns, &req, true).unwrap(), ["node-2-name"]);
    }

    #[test]
    fn conditions_show_soft_flag() {
        let req = request(json!({"Env": ["affinity:container==web", "affinity:image!=~redis"]}));
        assert_eq!(FilterKind::Affinity.conditions(&req), ["container==web (soft=false)", "image!=redis (soft=true)"]);
    }
}
