//! Docker's reference resolution rules: finding a container on a node by
//! ID or name, and splitting image references into repository and tag.

use crate::snapshot::NodeSnapshot;

/// Length of a Docker short ID.
pub(crate) const SHORT_ID_LEN: usize = 12;

/// Docker's `TruncateID`: drops an algorithm prefix (`sha256:`) and keeps
/// the first 12 characters.
pub(crate) fn truncate_id(id: &str) -> &str {
    let id = id.split_once(':').map_or(id, |(_, rest)| rest);
    match id.char_indices().nth(SHORT_ID_LEN) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// Resolves `reference` among the node's containers with the precedence
/// the original used:
/// 1. exact or short container ID;
/// 2. exact or short Swarm ID (label `com.docker.swarm.id`);
/// 3. name, `/name`, `<node id>/name` or `<node name>/name` — only if
///    exactly one container has it (an ambiguous name resolves to nothing);
/// 4. unique container-ID or Swarm-ID prefix.
///
/// Returns the index into `node.containers`.
pub(crate) fn find_container(node: &NodeSnapshot, reference: &str) -> Option<usize> {
    if reference.is_empty() {
        return None;
    }
    let containers = &node.containers;
    let by_id =
        containers.iter().position(|c| !c.id.is_empty() && (c.id == reference || truncate_id(&c.id) == reference));
    if by_id.is_some() {
        return by_id;
    }
    let by_swarm_id = containers.iter().position(|c| {
        let sid = c.swarm_id();
        !sid.is_empty() && (sid == reference || truncate_id(sid) == reference)
    });
    if by_swarm_id.is_some() {
        return by_swarm_id;
    }

    let name_matches = |name: &str| {
        name == reference
            || name.strip_prefix('/') == Some(reference)
            || prefixed_by(reference, &node.id, name)
            || prefixed_by(reference, &node.name, name)
    };
    let mut by_name =
        containers.iter().enumerate().filter(|(_, c)| c.names.iter().any(|n| name_matches(n))).map(|(i, _)| i);
    if let Some(first) = by_name.next() {
        return if by_name.next().is_none() { Some(first) } else { None };
    }

    let mut by_prefix = containers
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            (!c.id.is_empty() && c.id.starts_with(reference))
                || (!c.swarm_id().is_empty() && c.swarm_id().starts_with(reference))
        })
        .map(|(i, _)| i);
    match (by_prefix.next(), by_prefix.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// Whether `reference == prefix + name` (names carry their leading `/`),
/// without allocating.
fn prefixed_by(reference: &str, prefix: &str, name: &str) -> bool {
    !prefix.is_empty() && reference.strip_prefix(prefix) == Some(name)
}

/// Splits an image reference into repository and tag (or digest), the way
/// the original did: `repo@digest`, else the text after the last `:` when it
/// contains no `/` (so a registry port is not taken for a tag).
pub(crate) fn parse_repository_tag(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ContainerSnapshot, SWARM_ID_LABEL};

    fn node() -> NodeSnapshot {
        let mut n = NodeSnapshot::new("node-id", "node-1", "10.0.0.1:2375");
        n.add_container(ContainerSnapshot::new("aaaaaaaaaaaabbbbbbbbbbbbcccc", "/db"));
        n.add_container(ContainerSnapshot::new("abcdef0000001111", "/web"));
        let mut swarm = ContainerSnapshot::new("ffff00001111", "/cache");
        swarm.labels.insert(SWARM_ID_LABEL.into(), "5555666677778888".into());
        n.add_container(swarm);
        n
    }

    #[test]
    fn truncate() {
        assert_eq!(truncate_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(truncate_id("short"), "short");
    }

    /// References to the containers of [`node`], grouped by what they resolve to.
    const FOUND: &[(Option<usize>, &[&str])] = &[
        // Container ID: whole, short, unique prefix.
        (Some(0), &["aaaaaaaaaaaabbbbbbbbbbbbcccc", "aaaaaaaaaaaa", "aaaa"]),
        (Some(1), &["abcd"]),
        // "a" is a prefix of two IDs: ambiguous.
        (None, &["a"]),
        // Swarm ID: whole, short, unique prefix.
        (Some(2), &["5555666677778888", "555566667777", "5555"]),
        // Name: bare, with its slash, after the node's name or ID.
        (Some(0), &["db", "/db", "node-1/db"]),
        (Some(1), &["node-id/web"]),
        // Another node's name, nothing, an unknown name.
        (None, &["other/db", "", "nope"]),
    ];

    #[test]
    fn finds_by_id_swarm_id_name_and_unique_prefix() {
        let n = node();
        for &(expected, references) in FOUND {
            for reference in references {
                assert_eq!(find_container(&n, reference), expected, "reference {reference:?}");
            }
        }
    }

    #[test]
    fn ambiguous_name_resolves_to_nothing() {
        let mut n = node();
        n.add_container(ContainerSnapshot::new("999", "/db"));
        assert_eq!(find_container(&n, "db"), None);
    }

    #[test]
    fn pending_containers_are_found_by_name_only() {
        let mut n = NodeSnapshot::new("id", "n", "a");
        n.add_container(ContainerSnapshot::new("", "/pending"));
        assert_eq!(find_container(&n, "pending"), Some(0));
        assert_eq!(find_container(&n, "p"), None);
    }

    #[test]
    fn repository_tag() {
        assert_eq!(parse_repository_tag("redis:3.0"), ("redis", "3.0"));
        assert_eq!(parse_repository_tag("redis"), ("redis", ""));
        assert_eq!(parse_repository_tag("localhost:5000/foo/bar:latest"), ("localhost:5000/foo/bar", "latest"));
        assert_eq!(parse_repository_tag("localhost:5000/foo/bar"), ("localhost:5000/foo/bar", ""));
        assert_eq!(parse_repository_tag("foo@sha256:abc"), ("foo", "sha256:abc"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::snapshot::{ContainerSnapshot, SWARM_ID_LABEL};
    use proptest::prelude::*;

    proptest! {
        /// Any reference resolves to a container of the node or to nothing;
        /// IDs and references may hold any characters (multi-byte ones too).
        #[test]
        fn lookups_never_panic(
            containers in prop::collection::vec(("[ab:é]{0,14}", "[/ab]{0,4}", "[ab:é]{0,14}"), 0..5),
            reference in "[/ab:é]{0,14}|.{0,14}",
        ) {
            let mut node = NodeSnapshot::new("node-id", "node-1", "h:1");
            for (id, name, swarm_id) in containers {
                let mut c = ContainerSnapshot::new(&id, &name);
                c.labels.insert(SWARM_ID_LABEL.into(), swarm_id);
                node.add_container(c);
            }
            if let Some(i) = find_container(&node, &reference) {
                prop_assert!(i < node.containers.len());
            }
            let short = truncate_id(&reference);
            prop_assert!(short.chars().count() <= SHORT_ID_LEN);
            let (repo, tag) = parse_repository_tag(&reference);
            prop_assert!(reference.starts_with(repo) && reference.ends_with(tag));
        }
    }
}
