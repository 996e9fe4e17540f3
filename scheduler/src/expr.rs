//! The `key==value` / `key!=value` expression grammar shared by
//! constraints, affinities and whitelists.
//!
//! Grammar (as in the original manager):
//! - the operator is the first `==` if the text contains one, otherwise the
//!   first `!=`; text with neither is rejected;
//! - the key must match `[A-Za-z_][A-Za-z0-9-_.]+` (so one-character keys
//!   are rejected, exactly like the original);
//! - the value must match `[=!/]?~?[A-Za-z0-9:-_ whitespace .*/()?+[]\^$|]+`;
//!   a leading `~` marks a *soft* expression and is stripped;
//! - `/re/` values are unanchored regular expressions, other values are
//!   anchored globs where `*` matches any run of characters (see
//!   [`crate::pattern`] for the exact semantics). Matching is case-sensitive.

use std::fmt;

use crate::error::{ExprError, ExprKind, ExprProblem};
use crate::pattern::Pattern;

/// Comparison operator of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `==`: some candidate string matches the value.
    Eq,
    /// `!=`: no candidate string matches the value.
    NotEq,
}

impl Op {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::NotEq => "!=",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, validated and compiled scheduling expression.
#[derive(Debug, Clone)]
pub struct Expr {
    /// The text as given (e.g. `storage==~ssd`); written back into labels.
    raw: String,
    /// Left-hand side; satisfies the key syntax.
    key: String,
    /// Comparison operator.
    op: Op,
    /// Right-hand side with the soft marker stripped; never empty.
    value: String,
    /// Whether the value started with `~` (may be dropped on retry).
    soft: bool,
    /// `value` compiled once, so matching never re-parses it.
    pattern: Pattern,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        // The pattern is derived from the raw text, so the text suffices.
        self.raw == other.raw
    }
}

impl Eq for Expr {}

impl Expr {
    /// Parses one expression of the given family (`kind` is only used to
    /// make error messages say where the expression came from).
    pub fn parse(kind: ExprKind, raw: &str) -> Result<Expr, ExprError> {
        let fail = |problem| ExprError::Malformed { kind, expr: raw.to_string(), problem };
        let (key, op, value) = if let Some((k, v)) = raw.split_once("==") {
            (k, Op::Eq, v)
        } else if let Some((k, v)) = raw.split_once("!=") {
            (k, Op::NotEq, v)
        } else {
            return Err(fail(ExprProblem::MissingOperator));
        };
        if !is_valid_key(key) {
            return Err(fail(ExprProblem::InvalidKey(key.to_string())));
        }
        if !is_valid_value(value) {
            return Err(fail(ExprProblem::InvalidValue(value.to_string())));
        }
        let soft = value.starts_with('~');
        let value = value.trim_start_matches('~');
        let pattern = Pattern::compile(value).map_err(|e| fail(ExprProblem::InvalidRegex(e)))?;
        Ok(Expr { raw: raw.to_string(), key: key.to_string(), op, value: value.to_string(), soft, pattern })
    }

    /// The expression exactly as given.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The key (left-hand side).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The value without its soft marker.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether this is a soft (`~`) expression.
    pub fn is_soft(&self) -> bool {
        self.soft
    }

    /// Whether the value matches `subject`, ignoring the operator.
    pub fn value_matches(&self, subject: &str) -> bool {
        self.pattern.is_match(subject)
    }

    /// Applies the expression to a set of candidate strings: with `==`,
    /// true when any of them matches; with `!=`, true when none does.
    pub fn matches_any<'a, I>(&self, subjects: I) -> bool
    where
        I: IntoIterator<Item = &'a str>,
    {
        let found = subjects.into_iter().any(|s| self.pattern.is_match(s));
        self.apply_op(found)
    }

    /// Turns "some subject matched the value" into the expression's verdict.
    pub fn apply_op(&self, found: bool) -> bool {
        match self.op {
            Op::Eq => found,
            Op::NotEq => !found,
        }
    }

    /// The value when it is a plain string (no glob or regex syntax).
    pub fn literal_value(&self) -> Option<&str> {
        self.pattern.as_literal()
    }
}

impl fmt::Display for Expr {
    /// `key`, operator and value without the soft marker, as the original
    /// listed expressions in its error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key, self.op, self.value)
    }
}

/// `[A-Za-z_][A-Za-z0-9-_.]+`.
fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest = chars.as_str();
    first_ok && !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Characters allowed in the body of a value: the original's class
/// `[a-z0-9:\-_\s\.\*/\(\)\?\+\[\]\\\^\$\|]` with `(?i)`; Go's `\s` is
/// `[\t\n\f\r ]`.
fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            ':' | '-'
                | '_'
                | '\t'
                | '\n'
                | '\x0c'
                | '\r'
                | ' '
                | '.'
                | '*'
                | '/'
                | '('
                | ')'
                | '?'
                | '+'
                | '['
                | ']'
                | '\\'
                | '^'
                | '$'
                | '|'
        )
}

/// `^[=!/]?(~)?[class]+$`, trying every way the optional prefixes can be
/// taken (a leading `/` may belong to either the prefix or the body).
fn is_valid_value(value: &str) -> bool {
    let body_ok = |s: &str| !s.is_empty() && s.chars().all(is_value_char);
    let with_tilde = |s: &str| body_ok(s) || s.strip_prefix('~').is_some_and(body_ok);
    with_tilde(value) || value.strip_prefix(['=', '!', '/']).is_some_and(with_tilde)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Expr, ExprError> {
        Expr::parse(ExprKind::Constraint, raw)
    }

    fn problem(raw: &str) -> ExprProblem {
        match parse(raw) {
            Err(ExprError::Malformed { problem, .. }) => problem,
            other => panic!("expected a malformed error for {raw:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_eq_and_neq() {
        let e = parse("storage==ssd").unwrap();
        assert_eq!((e.key(), e.op(), e.value(), e.is_soft()), ("storage", Op::Eq, "ssd", false));
        let e = parse("node!=node-01").unwrap();
        assert_eq!((e.key(), e.op(), e.value()), ("node", Op::NotEq, "node-01"));
        assert_eq!(e.to_string(), "node!=node-01");
        assert_eq!(e.raw(), "node!=node-01");
    }

    #[test]
    fn soft_marker_is_stripped() {
        let e = parse("storage==~ssd").unwrap();
        assert!(e.is_soft());
        assert_eq!(e.value(), "ssd");
        assert_eq!(e.to_string(), "storage==ssd");
        assert_eq!(e.raw(), "storage==~ssd");
        let e = parse("image!=~redis").unwrap();
        assert!(e.is_soft());
        assert_eq!(e.op(), Op::NotEq);
    }

    #[test]
    fn keys_follow_the_original_syntax() {
        assert!(parse("com.example.zone==a").is_ok());
        assert!(parse("_k==a").is_ok());
        assert!(parse("a-b_c.d==a").is_ok());
        assert_eq!(problem("k==v"), ExprProblem::InvalidKey("k".into()));
        assert_eq!(problem("==v"), ExprProblem::InvalidKey(String::new()));
        assert_eq!(problem("1a==v"), ExprProblem::InvalidKey("1a".into()));
        assert_eq!(problem("a b==v"), ExprProblem::InvalidKey("a b".into()));
    }

    #[test]
    fn operator_is_required() {
        assert_eq!(problem("storage=ssd"), ExprProblem::MissingOperator);
        assert_eq!(problem("storage"), ExprProblem::MissingOperator);
        assert_eq!(problem(""), ExprProblem::MissingOperator);
        assert_eq!(problem("image=!x"), ExprProblem::MissingOperator);
    }

    #[test]
    fn equal_sign_wins_over_not_equal() {
        // As in the original, "==" is looked for first anywhere in the text.
        assert_eq!(problem("a!=b==c"), ExprProblem::InvalidKey("a!=b".into()));
    }

    #[test]
    fn values_are_validated() {
        assert_eq!(problem("storage=="), ExprProblem::InvalidValue(String::new()));
        assert_eq!(problem("storage==~"), ExprProblem::InvalidValue("~".into()));
        assert_eq!(problem("image==~ima~ge"), ExprProblem::InvalidValue("~ima~ge".into()));
        assert_eq!(problem("image==a@b"), ExprProblem::InvalidValue("a@b".into()));
        assert!(parse("image==redis:3.0").is_ok());
        assert!(parse("a1==/").is_ok());
        assert!(parse("a1===x").is_ok());
        assert!(parse("kernelversion==3.*").is_ok());
        assert!(parse("name==/web-\\d+/").is_ok());
        assert!(parse("os==Ubuntu 16.04").is_ok());
    }

    #[test]
    fn invalid_regex_is_an_error_not_a_panic() {
        assert!(matches!(problem("node==/node-(/"), ExprProblem::InvalidRegex(_)));
        // Unterminated: a glob, whose regex translation is invalid.
        assert!(matches!(problem("node==/node-[0-9"), ExprProblem::InvalidRegex(_)));
        assert!(matches!(problem("node==a(b"), ExprProblem::InvalidRegex(_)));
    }

    #[test]
    fn unterminated_slash_value_is_a_literal_glob() {
        // Kept from the original: a value that merely starts with '/' (a
        // path, say) is an anchored glob rather than a regex.
        let e = parse("mount==/data").unwrap();
        assert!(e.matches_any(["/data"]));
        assert!(!e.matches_any(["/data/x"]));
    }

    #[test]
    fn matching_applies_the_operator() {
        let eq = parse("storage==ssd").unwrap();
        let ne = parse("storage!=ssd").unwrap();
        assert!(eq.matches_any(["hdd", "ssd"]));
        assert!(!ne.matches_any(["hdd", "ssd"]));
        assert!(!eq.matches_any([]));
        assert!(ne.matches_any([]));
        assert!(ne.matches_any([""]));
    }

    #[test]
    fn error_message_quotes_the_expression() {
        let err = Expr::parse(ExprKind::Affinity, "container=foo").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid affinity expression \"container=foo\": one of operator ==, != is expected"
        );
        let err = Expr::parse(ExprKind::Constraint, "x==y").unwrap_err();
        assert_eq!(err.to_string(), "invalid constraint expression \"x==y\": key 'x' is invalid");
    }

    #[test]
    fn literal_value_is_exposed_only_for_plain_strings() {
        assert_eq!(parse("container==web").unwrap().literal_value(), Some("web"));
        assert_eq!(parse("container==web*").unwrap().literal_value(), None);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// No input string panics the parser; accepted expressions can be
        /// displayed and matched.
        #[test]
        fn parse_never_panics(raw in any::<String>(), subject in any::<String>()) {
            if let Ok(e) = Expr::parse(ExprKind::Affinity, &raw) {
                let _ = e.to_string();
                let _ = e.matches_any([subject.as_str()]);
            }
        }

        /// Same, with text made of the grammar's own characters so that
        /// most inputs get past the operator and key checks.
        #[test]
        fn parse_grammar_like_never_panics(
            raw in "[a-z_.~=!/*()\\[\\]|^$+?\\\\: -]{0,24}",
            subject in "[a-z./-]{0,12}",
        ) {
            match Expr::parse(ExprKind::Constraint, &raw) {
                Ok(e) => {
                    prop_assert!(!e.value().is_empty());
                    prop_assert!(!e.value().starts_with('~'));
                    let _ = e.matches_any([subject.as_str()]);
                }
                Err(err) => {
                    // The message always quotes the input.
                    let quoted = format!("\"{raw}\"");
                    prop_assert!(err.to_string().contains(&quoted));
                }
            }
        }

        /// Well-formed literal expressions round-trip through Display.
        #[test]
        fn display_round_trips(
            key in "[a-z_][a-z0-9_.-]{1,10}",
            eq in any::<bool>(),
            soft in any::<bool>(),
            value in "[a-z0-9:_-][a-z0-9:_.-]{0,10}",
        ) {
            let op = if eq { "==" } else { "!=" };
            let tilde = if soft { "~" } else { "" };
            let raw = format!("{key}{op}{tilde}{value}");
            let e = Expr::parse(ExprKind::Constraint, &raw).unwrap();
            prop_assert_eq!(e.to_string(), format!("{key}{op}{value}"));
            prop_assert_eq!(e.is_soft(), soft);
            prop_assert_eq!(e.raw(), raw.as_str());
        }
    }
}
