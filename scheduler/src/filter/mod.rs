//! The placement filters. Each filter narrows the candidate node list for
//! one kind of condition and can describe its conditions for the error
//! message, exactly like the original's `Filter`/`GetFilters` pair.

mod affinity;
mod constraint;
mod dependency;
mod health;
mod port;
mod slots;
mod whitelist;

use crate::expr::Expr;
use crate::request::ContainerRequest;
use crate::snapshot::NodeSnapshot;

/// A placement filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterKind {
    /// Only healthy nodes.
    Health,
    /// No host-port conflicts.
    Port,
    /// At most `containerslots` containers per node.
    ContainerSlots,
    /// `--volumes-from`, `--link` and `--net=container:` targets.
    Dependency,
    /// `affinity:` expressions (containers, images, container labels).
    Affinity,
    /// `constraint:` expressions (node name/ID and engine labels).
    Constraint,
    /// `whitelist:` node-name lists.
    Whitelist,
}

impl FilterKind {
    /// Every filter, in the default order.
    pub const ALL: [FilterKind; 7] = [
        FilterKind::Health,
        FilterKind::Port,
        FilterKind::ContainerSlots,
        FilterKind::Dependency,
        FilterKind::Affinity,
        FilterKind::Constraint,
        FilterKind::Whitelist,
    ];

    /// The default filter chain of `swarm manage`.
    pub const DEFAULT: [FilterKind; 7] = FilterKind::ALL;

    /// The name used by `--filter` and shown by `docker info`.
    pub fn name(self) -> &'static str {
        match self {
            FilterKind::Health => "health",
            FilterKind::Port => "port",
            FilterKind::ContainerSlots => "containerslots",
            FilterKind::Dependency => "dependency",
            FilterKind::Affinity => "affinity",
            FilterKind::Constraint => "constraint",
            FilterKind::Whitelist => "whitelist",
        }
    }

    /// Comma-separated names of all filters, for error messages.
    pub fn valid_names() -> String {
        join_names(Self::ALL.iter().map(|f| f.name()))
    }

    /// Narrows `candidates` (indices into `ctx.nodes`, in order). With
    /// `soft == false` soft expressions are ignored.
    pub(crate) fn apply(self, ctx: &mut Ctx<'_>, candidates: &mut Vec<usize>, soft: bool) -> Result<(), Unsatisfied> {
        match self {
            FilterKind::Health => health::apply(ctx, candidates),
            FilterKind::Port => port::apply(ctx, candidates),
            FilterKind::ContainerSlots => slots::apply(ctx, candidates),
            FilterKind::Dependency => dependency::apply(ctx, candidates),
            FilterKind::Affinity => affinity::apply(ctx, candidates, soft),
            FilterKind::Constraint => constraint::apply(ctx, candidates, soft),
            FilterKind::Whitelist => whitelist::apply(ctx, candidates, soft),
        }
    }

    /// The conditions this filter checks for `request`, one string each,
    /// worded like the original's `GetFilters`.
    pub fn conditions(self, request: &ContainerRequest) -> Vec<String> {
        match self {
            FilterKind::Health => Vec::new(),
            FilterKind::Port => port::conditions(request),
            FilterKind::ContainerSlots => vec!["available container slots".to_string()],
            FilterKind::Dependency => dependency::conditions(request),
            FilterKind::Affinity => soft_tagged(request.affinities()),
            FilterKind::Constraint => request.constraints().iter().map(Expr::to_string).collect(),
            FilterKind::Whitelist => soft_tagged(request.whitelists()),
        }
    }
}

/// `Display` as the item's `name()`, and `FromStr` finding the item of that
/// name in `ALL`, else failing with the [`ConfigError`](crate::error::ConfigError)
/// variant `$unknown`, which lists every valid name. Shared by [`FilterKind`]
/// and the strategies, which are both chosen by name on the command line.
macro_rules! impl_display_and_from_str {
    ($type:ty, $unknown:ident) => {
        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $type {
            type Err = $crate::error::ConfigError;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                let valid = || $crate::filter::join_names(Self::ALL.iter().map(|item| item.name()));
                Self::ALL
                    .into_iter()
                    .find(|item| item.name() == name)
                    .ok_or_else(|| $crate::error::ConfigError::$unknown { name: name.to_string(), valid: valid() })
            }
        }
    };
}
pub(crate) use impl_display_and_from_str;

impl_display_and_from_str!(FilterKind, UnknownFilter);

/// Joins names with ", " as `docker info` shows them.
pub(crate) fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// A filter eliminated every candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsatisfied;

/// What the filters read; borrowed for one decision.
pub(crate) struct Ctx<'a> {
    /// The whole cluster snapshot; candidates index into it.
    pub nodes: &'a [&'a NodeSnapshot],
    /// The container being placed.
    pub request: &'a ContainerRequest,
    /// Engine failure retry count, for the health indicator.
    pub failure_retry: u32,
    /// Non-fatal findings (deduplicated) to hand back to the caller.
    pub warnings: &'a mut Vec<String>,
}

impl Ctx<'_> {
    /// Records a warning once.
    pub fn warn(&mut self, message: String) {
        if !self.warnings.contains(&message) {
            self.warnings.push(message);
        }
    }
}

/// Keeps only candidates for which `keep` holds; fails when none is left.
pub(crate) fn retain_nonempty(
    candidates: &mut Vec<usize>,
    keep: impl FnMut(&usize) -> bool,
) -> Result<(), Unsatisfied> {
    candidates.retain(keep);
    if candidates.is_empty() {
        Err(Unsatisfied)
    } else {
        Ok(())
    }
}

/// Applies each expression in turn (skipping soft ones unless `soft`),
/// keeping the nodes for which `node_ok` holds.
pub(crate) fn retain_per_expr(
    exprs: &[Expr],
    soft: bool,
    nodes: &[&NodeSnapshot],
    candidates: &mut Vec<usize>,
    mut node_ok: impl FnMut(&Expr, &NodeSnapshot) -> bool,
) -> Result<(), Unsatisfied> {
    for expr in exprs {
        if expr.is_soft() && !soft {
            continue;
        }
        retain_nonempty(candidates, |&i| node_ok(expr, nodes[i]))?;
    }
    Ok(())
}

/// `key==value (soft=false)`, the original's listing of affinities and
/// whitelists.
fn soft_tagged(exprs: &[Expr]) -> Vec<String> {
    exprs.iter().map(|e| format!("{e} (soft={})", e.is_soft())).collect()
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Runs one filter over all `nodes`, returning surviving node names.
    pub fn run(
        kind: FilterKind,
        nodes: &[NodeSnapshot],
        request: &ContainerRequest,
        soft: bool,
    ) -> Result<Vec<String>, Unsatisfied> {
        let mut warnings = Vec::new();
        run_with_warnings(kind, nodes, request, soft, &mut warnings)
    }

    /// Like [`run`], collecting warnings.
    pub fn run_with_warnings(
        kind: FilterKind,
        nodes: &[NodeSnapshot],
        request: &ContainerRequest,
        soft: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<String>, Unsatisfied> {
        let nodes: Vec<&NodeSnapshot> = nodes.iter().collect();
        let nodes = nodes.as_slice();
        let mut ctx = Ctx { nodes, request, failure_retry: 3, warnings };
        let mut candidates: Vec<usize> = (0..nodes.len()).collect();
        kind.apply(&mut ctx, &mut candidates, soft)?;
        Ok(candidates.iter().map(|&i| nodes[i].name.clone()).collect())
    }

    /// A request from a create body given as JSON.
    pub fn request(body: serde_json::Value) -> ContainerRequest {
        let mut body = body;
        ContainerRequest::from_create_body(None, &mut body).expect("valid test request")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in FilterKind::ALL {
            assert_eq!(f.name().parse::<FilterKind>().unwrap(), f);
        }
    }

    #[test]
    fn unknown_name_lists_valid_ones() {
        let err = "bogus".parse::<FilterKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported filter \"bogus\"; valid filters are: health, port, containerslots, \
             dependency, affinity, constraint, whitelist"
        );
    }
}
