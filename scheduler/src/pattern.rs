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

    #[test]
    fn literal_is_anchored_and_case_sensitive() {
        assert!(m("ssd", "ssd"));
        assert!(!m("ssd", "SSD"));
        assert!(!m("ssd", "ssd1"));
        assert!(!m("ssd", "xssd"));
        assert!(matches!(Pattern::compile("ssd").unwrap(), Pattern::Literal(_)));
    }

    #[test]
    fn star_glob() {
        assert!(m("node-*", "node-1"));
        assert!(m("node-*", "node-"));
        assert!(!m("node-*", "xnode-1"));
        assert!(m("*-1", "node-1"));
        assert!(m("ub*t*", "ubuntu"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "aXXbYYbc"));
        assert!(!m("a*b*c", "aXXbYYb"));
        assert!(m("**", "anything"));
    }

    #[test]
    fn dot_is_any_char_like_the_original() {
        assert!(m("3.10.*", "3.10.0-generic"));
        assert!(m("3.10.*", "3x10y"));
        assert!(!m("3.10", "3.100"));
        assert!(m("é.", "éü"));
    }

    #[test]
    fn newline_falls_back_to_regex_semantics() {
        assert!(!m("a*", "a\nb"));
        assert!(!m("a.b", "a\nb"));
        assert!(m("a*", "abc"));
    }

    #[test]
    fn slashes_make_an_unanchored_regex() {
        assert!(m("/node-[12]/", "node-1"));
        assert!(m("/node-[12]/", "my-node-2-x"));
        assert!(!m("/node-[12]/", "node-3"));
        assert!(m("/^node-\\d$/", "node-7"));
        assert!(!m("/^node-\\d$/", "node-77"));
    }

    #[test]
    fn glob_with_regex_metacharacters_is_an_anchored_regex() {
        assert!(m("node-[12]", "node-1"));
        assert!(!m("node-[12]", "xnode-1"));
        assert!(m("a+", "aaa"));
    }

    #[test]
    fn lone_slash_and_paths_are_globs() {
        assert!(m("/", "/"));
        assert!(m("/data", "/data"));
        assert!(!m("/data", "data"));
    }

    #[test]
    fn invalid_regex_is_an_error() {
        assert!(Pattern::compile("/foo(/").is_err());
        assert!(Pattern::compile("/node-[0-9").is_err());
        assert!(Pattern::compile("(").is_err());
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
