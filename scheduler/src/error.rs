//! Typed errors of the crate.

use std::fmt;

use crate::filter::FilterKind;

/// Which family of scheduling expressions an expression belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExprKind {
    /// `constraint:` / `com.docker.swarm.constraints`.
    Constraint,
    /// `affinity:` / `com.docker.swarm.affinities`.
    Affinity,
    /// `whitelist:` / `com.docker.swarm.whitelists`.
    Whitelist,
}

impl ExprKind {
    /// The env prefix (without the colon) and singular name of the kind.
    pub fn name(self) -> &'static str {
        match self {
            ExprKind::Constraint => "constraint",
            ExprKind::Affinity => "affinity",
            ExprKind::Whitelist => "whitelist",
        }
    }
}

impl fmt::Display for ExprKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an expression string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprProblem {
    /// Neither `==` nor `!=` occurs in the expression.
    MissingOperator,
    /// The key does not match `[A-Za-z_][A-Za-z0-9-_.]+`.
    InvalidKey(String),
    /// The value is empty or holds characters outside the accepted set.
    InvalidValue(String),
    /// The value is not a valid regular expression (message of the compiler).
    InvalidRegex(String),
}

impl fmt::Display for ExprProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Wording follows the original manager's messages.
            ExprProblem::MissingOperator => f.write_str("one of operator ==, != is expected"),
            ExprProblem::InvalidKey(key) => write!(f, "key '{key}' is invalid"),
            ExprProblem::InvalidValue(value) => write!(f, "value '{value}' is invalid"),
            ExprProblem::InvalidRegex(msg) => write!(f, "invalid regular expression: {msg}"),
        }
    }
}

/// An error found while extracting the scheduling expressions and
/// resources from a container create request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// An expression is malformed; `expr` is the offending text as given.
    #[error("invalid {kind} expression \"{expr}\": {problem}")]
    Malformed {
        /// Family the expression was given for.
        kind: ExprKind,
        /// The expression as the user wrote it (without the env prefix).
        expr: String,
        /// What is wrong with it.
        problem: ExprProblem,
    },
    /// A `com.docker.swarm.*` label does not hold a JSON array of strings.
    #[error("label {label} must hold a JSON array of strings, got '{value}'")]
    BadLabel {
        /// The label key.
        label: String,
        /// Its value as found.
        value: String,
    },
    /// A field of the create body has the wrong JSON type.
    #[error("invalid container config: {field} must be {expected}")]
    BadField {
        /// Dotted path of the field, e.g. `HostConfig.Links`.
        field: String,
        /// Human description of the expected type.
        expected: &'static str,
    },
}

/// A request's reschedule policies are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RescheduleError {
    /// More than one policy was given.
    #[error("too many reschedule policies")]
    TooMany,
    /// The policy is not `off` or `on-node-failure`.
    #[error("invalid reschedule policy: {0}")]
    Invalid(String),
}

/// A scheduler configuration error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The strategy name is unknown.
    #[error("unsupported strategy \"{name}\"; valid strategies are: {valid}")]
    UnknownStrategy {
        /// The name given.
        name: String,
        /// Comma-separated list of the supported names.
        valid: String,
    },
    /// A filter name is unknown.
    #[error("unsupported filter \"{name}\"; valid filters are: {valid}")]
    UnknownFilter {
        /// The name given.
        name: String,
        /// Comma-separated list of the supported names.
        valid: String,
    },
    /// The overcommit ratio is not a finite number greater than -1.
    #[error("invalid overcommit ratio {0}: it must be a number greater than -1")]
    InvalidOvercommit(f64),
    /// The engine failure retry count must be at least 1.
    #[error("invalid engine failure retry {0}: it must be at least 1")]
    InvalidFailureRetry(u32),
}

/// Why no node could be selected. `Display` is the user-facing message the
/// original manager returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The health filter left no node.
    #[error("No healthy node available in the cluster")]
    NoHealthyNode,
    /// Every filter passed but no node was left (no filters and no nodes).
    #[error("No nodes available in the cluster")]
    NoNodes,
    /// The strategy found no node with enough CPU and memory.
    #[error("no resources available to schedule container")]
    NoResources,
    /// A filter left no node.
    #[error("Unable to find a node that satisfies the following conditions {}", ConditionLines(.conditions))]
    Unsatisfiable {
        /// The filter that eliminated the last candidate.
        failed: FilterKind,
        /// One bracketed line per configured filter up to and including the
        /// failing one, for those filters that have conditions, e.g.
        /// `[port 8080 (Bridge mode)]`.
        conditions: Vec<String>,
    },
}

/// Renders condition lines each on its own line, as the original did
/// (hence the trailing space after "conditions" in the message).
struct ConditionLines<'a>(&'a [String]);

impl fmt::Display for ConditionLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.0 {
            write!(f, "\n{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsatisfiable_message_matches_the_original_layout() {
        let err = ScheduleError::Unsatisfiable {
            failed: FilterKind::ContainerSlots,
            conditions: vec!["[port 8080 (Bridge mode)]".to_string(), "[available container slots]".to_string()],
        };
        assert_eq!(
            err.to_string(),
            "Unable to find a node that satisfies the following conditions \n\
             [port 8080 (Bridge mode)]\n[available container slots]"
        );
    }

    #[test]
    fn fixed_messages() {
        assert_eq!(ScheduleError::NoHealthyNode.to_string(), "No healthy node available in the cluster");
        assert_eq!(ScheduleError::NoResources.to_string(), "no resources available to schedule container");
        assert_eq!(ScheduleError::NoNodes.to_string(), "No nodes available in the cluster");
    }

    #[test]
    fn malformed_expression_quotes_it() {
        let err = ExprError::Malformed {
            kind: ExprKind::Constraint,
            expr: "foo=bar".into(),
            problem: ExprProblem::MissingOperator,
        };
        assert_eq!(err.to_string(), "invalid constraint expression \"foo=bar\": one of operator ==, != is expected");
    }
}
