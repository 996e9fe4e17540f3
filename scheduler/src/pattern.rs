//! Compiled value patterns of scheduling expressions.
//!
//! The original manager turns every value into a Go regular expression on
//! each match: `/re/` is used as is (unanchored), anything else is a "glob"
//! where `*` becomes `.*` and the whole is anchored as `^…$` — every other
//! character keeps its regex meaning. We reproduce exactly those semantics,
//! but compile once per request and avoid the regex engine for the common
//! shapes (plain literals, and globs whose only metacharacters are `*` and
//! `.`), because the scheduler matches tens of thousands of container names
//! per decision and must stay well under a millisecond.

use regex::{Regex, RegexBuilder};

/// Upper bound on the compiled size of a user-supplied regex, so that a
/// hostile expression cannot make the manager allocate unbounded memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One element of a simple glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// Matches exactly this character.
    Char(char),
    /// `.`: any single character except a newline (Go RE2 semantics).
    AnyChar,
    /// `*` (i.e. `.*`): any run of characters without a newline.
    AnyRun,
}

/// A value pattern compiled once per request.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    /// A glob without any metacharacter: equality.
    Literal(String),
    /// A glob whose only metacharacters are `*` and `.`.
    Wildcard {
        /// The glob, one token per pattern character; never empty.
        tokens: Vec<Token>,
        /// The equivalent anchored regex, used only for subjects that
        /// contain a newline (where `.` and `.*` stop matching and the
        /// simple matcher would need backtracking across stars).
        fallback: Regex,
    },
    /// Anything else: a real regular expression (anchored for globs,
    /// unanchored for `/re/` values, as in the original).
    Regex(Regex),
}

/// Characters that make a glob a real regular expression. `*` and `.` are
/// handled by [`Pattern::Wildcard`].
fn is_regex_meta(c: char) -> bool {
    matches!(c, '\\' | '+' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$')
}

fn compile_regex(source: &str) -> Result<Regex, String> {
    RegexBuilder::new(source).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| e.to_string())
}

impl Pattern {
    /// Compiles an expression value (already stripped of its soft `~`).
    ///
    /// Returns the regex compiler's message when the value is not a valid
    /// regular expression.
    pub(crate) fn compile(value: &str) -> Result<Pattern, String> {
        // `/re/` needs at least the two slashes; a lone "/" is a glob (the
        // original sliced it as value[1:0] and panicked).
        if value.len() >= 2 && value.starts_with('/') && value.ends_with('/') {
            let inner = &value[1..value.len() - 1];
            return compile_regex(inner).map(Pattern::Regex);
        }
        let anchored = format!("^{}$", value.replace('*', ".*"));
        if value.chars().any(is_regex_meta) {
            return compile_regex(&anchored).map(Pattern::Regex);
        }
        if !value.contains(['*', '.']) {
            return Ok(Pattern::Literal(value.to_string()));
        }
        let tokens = value
            .chars()
            .map(|c| match c {
                '*' => Token::AnyRun,
                '.' => Token::AnyChar,
                other => Token::Char(other),
            })
            .collect();
        let fallback = compile_regex(&anchored)?;
        Ok(Pattern::Wildcard { tokens, fallback })
    }

    /// Whether `subject` matches the pattern.
    pub(crate) fn is_match(&self, subject: &str) -> bool {
        match self {
            Pattern::Literal(lit) => lit == subject,
            Pattern::Wildcard { tokens, fallback } => {
                if subject.contains('\n') {
                    fallback.is_match(subject)
                } else {
                    wildcard_match(tokens, subject)
                }
            }
            Pattern::Regex(re) => re.is_match(subject),
        }
    }

    /// The literal value when the pattern is a plain string comparison.
    pub(crate) fn as_literal(&self) -> Option<&str> {
        match self {
            Pattern::Literal(lit) => Some(lit),
            _ => None,
        }
    }
}

/// Classic star-backtracking glob match over characters. Only valid for
/// subjects without newlines (then `.` and `*` match any character), which
/// [`Pattern::is_match`] guarantees.
fn wildcard_match(tokens: &[Token], subject: &str) -> bool {
    let mut t = 0usize; // next token
    let mut i = 0usize; // byte offset into subject, always on a char boundary
                        // Position after the last star seen, and where its run currently ends.
    let mut star: Option<(usize, usize)> = None;
    loop {
        let current = subject[i..].chars().next();
        if let Some(token) = tokens.get(t) {
            match (token, current) {
                (Token::AnyRun, _) => {
                    star = Some((t + 1, i));
                    t += 1;
                    continue;
                }
                (Token::AnyChar, Some(c)) => {
                    t += 1;
                    i += c.len_utf8();
                    continue;
                }
                (Token::Char(want), Some(c)) if *want == c => {
                    t += 1;
                    i += c.len_utf8();
                    continue;
                }
                _ => {}
            }
        } else if current.is_none() {
            return true;
        }
        // Mismatch: let the last star swallow one more character.
        match star {
            Some((after_star, run_end)) => match subject[run_end..].chars().next() {
                Some(c) => {
                    let next_end = run_end + c.len_utf8();
                    star = Some((after_star, next_end));
                    t = after_star;
                    i = next_end;
                }
                None => return false,
            },
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(value: &str, subject: &str) -> bool {
        Pattern::compile(value).unwrap().is_match(subject)
    }

    /// Each value with the subjects it matches and the subjects it does not.
    const CASES: &[(&str, &[&str], &[&str])] = &[
        // A literal is anchored and case sensitive.
        ("ssd", &["ssd"], &["SSD", "ssd1", "xssd"]),
        // `*` is any run of characters.
        ("node-*", &["node-1", "node-"], &["xnode-1"]),
        ("*-1", &["node-1"], &[]),
        ("ub*t*", &["ubuntu"], &[]),
        ("*", &[""], &[]),
        ("a*b*c", &["aXXbYYbc"], &["aXXbYYb"]),
        ("**", &["anything"], &[]),
        // `.` is any character, like in the original.
        ("3.10.*", &["3.10.0-generic", "3x10y"], &[]),
        ("3.10", &[], &["3.100"]),
        ("é.", &["éü"], &[]),
        // A subject with a newline falls back to the regex semantics.
        ("a*", &["abc"], &["a\nb"]),
        ("a.b", &[], &["a\nb"]),
        // Slashes make an unanchored regex.
        ("/node-[12]/", &["node-1", "my-node-2-x"], &["node-3"]),
        ("/^node-\\d$/", &["node-7"], &["node-77"]),
        // A glob with regex metacharacters is an anchored regex.
        ("node-[12]", &["node-1"], &["xnode-1"]),
        ("a+", &["aaa"], &[]),
        // A lone slash and paths are globs.
        ("/", &["/"], &[]),
        ("/data", &["/data"], &["data"]),
    ];

    #[test]
    fn values_match_like_the_original() {
        for &(value, matching, not_matching) in CASES {
            for subject in matching {
                assert!(m(value, subject), "value {value:?} should match {subject:?}");
            }
            for subject in not_matching {
                assert!(!m(value, subject), "value {value:?} should not match {subject:?}");
            }
        }
    }

    #[test]
    fn plain_value_compiles_to_a_literal() {
        assert!(matches!(Pattern::compile("ssd").unwrap(), Pattern::Literal(_)));
    }

    #[test]
    fn invalid_regex_is_an_error() {
        for value in ["/foo(/", "/node-[0-9", "("] {
            assert!(Pattern::compile(value).is_err(), "value {value:?}");
        }
    }

    #[test]
    fn wildcard_agrees_with_regex_on_samples() {
        let values = ["a*b", "*.*", "a.c", "*x*y*", "..", "ab*", "*"];
        let subjects = ["", "a", "ab", "abc", "axb", "xy", "a.c", "zzxzzyzz", "ééb"];
        for v in values {
            let re = Regex::new(&format!("^{}$", v.replace('*', ".*"))).unwrap();
            for s in subjects {
                assert_eq!(m(v, s), re.is_match(s), "value {v:?} subject {s:?}");
            }
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The fast glob matcher agrees with the regex the original built.
        #[test]
        fn wildcard_agrees_with_regex(
            value in "[ab.*é]{1,8}",
            subject in "[ab.é\n]{0,10}",
        ) {
            let pattern = Pattern::compile(&value).unwrap();
            let re = Regex::new(&format!("^{}$", value.replace('*', ".*"))).unwrap();
            prop_assert_eq!(pattern.is_match(&subject), re.is_match(&subject));
        }

        /// Compiling any value either works or reports an error.
        #[test]
        fn compile_never_panics(value in any::<String>(), subject in any::<String>()) {
            if let Ok(p) = Pattern::compile(&value) {
                let _ = p.is_match(&subject);
            }
        }
    }
}
