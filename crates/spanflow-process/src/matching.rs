//! Matching of names and attribute values: exact, glob and regex.
//!
//! Patterns are compiled once, when a processor is built; matching a span
//! never allocates.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use spanflow_otlp::AnyValueView;

use crate::error::ProcessorConfigError;

/// How string patterns are interpreted.
///
/// `exact` compares whole strings; `glob` uses shell-style wildcards where `*`
/// also matches `/` (so `GET /api/*` matches `GET /api/v1/users`); `regex` uses
/// the `regex` crate's syntax and is **unanchored**, as in the OpenTelemetry
/// Collector: write `^…$` to match whole strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchType {
    /// Whole-string equality.
    #[default]
    Exact,
    /// Shell-style wildcards (`*`, `?`, `[abc]`, `{a,b}`).
    Glob,
    /// Unanchored regular expression.
    Regex,
}

/// A compiled set of string patterns of one [`MatchType`]; a string matches
/// the set when it matches any pattern.
#[derive(Debug, Clone)]
pub(crate) enum StringSet {
    Exact(HashSet<String>),
    /// Globs that are a literal with `*` only at the start and/or end
    /// (`GET /health*`, `*.internal`, `*cache*`), matched without globset.
    Simple(Vec<SimpleGlob>),
    Glob(GlobSet),
    Regex(RegexSet),
}

#[cfg(feature = "regex")]
use globset::GlobSet;
#[cfg(feature = "regex")]
pub(crate) use regex::{Regex, RegexSet};

/// Without the `regex` feature no glob engine exists: only simple globs ([`SimpleGlob`]) match.
#[cfg(not(feature = "regex"))]
#[derive(Debug, Clone)]
pub(crate) enum GlobSet {}

/// Without the `regex` feature no regex exists: configurations asking for one are refused.
#[cfg(not(feature = "regex"))]
#[derive(Debug, Clone)]
pub(crate) enum Regex {}

/// Without the `regex` feature no regex set exists either.
#[cfg(not(feature = "regex"))]
#[derive(Debug, Clone)]
pub(crate) enum RegexSet {}

#[cfg(not(feature = "regex"))]
impl GlobSet {
    fn is_match(&self, _s: &str) -> bool {
        match *self {}
    }
}

#[cfg(not(feature = "regex"))]
impl Regex {
    pub(crate) fn is_match(&self, _s: &str) -> bool {
        match *self {}
    }
}

#[cfg(not(feature = "regex"))]
impl RegexSet {
    pub(crate) fn is_match(&self, _s: &str) -> bool {
        match *self {}
    }
}

/// A glob made of one literal and leading/trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SimpleGlob {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl SimpleGlob {
    /// Classifies `pattern`; `None` when it needs a real glob engine.
    fn parse(pattern: &str) -> Option<SimpleGlob> {
        let leading = pattern.starts_with('*');
        let trimmed = pattern.strip_prefix('*').unwrap_or(pattern);
        let trailing = trimmed.ends_with('*');
        let literal = trimmed.strip_suffix('*').unwrap_or(trimmed);
        if literal.contains(['*', '?', '[', ']', '{', '}', '\\']) {
            return None;
        }
        let literal = literal.to_owned();
        Some(match (leading, trailing) {
            (false, false) => SimpleGlob::Exact(literal),
            (false, true) => SimpleGlob::Prefix(literal),
            (true, false) => SimpleGlob::Suffix(literal),
            (true, true) => SimpleGlob::Contains(literal),
        })
    }

    fn is_match(&self, s: &str) -> bool {
        match self {
            SimpleGlob::Exact(l) => s == l,
            SimpleGlob::Prefix(l) => s.starts_with(l.as_str()),
            SimpleGlob::Suffix(l) => s.ends_with(l.as_str()),
            SimpleGlob::Contains(l) => s.contains(l.as_str()),
        }
    }
}

impl StringSet {
    pub(crate) fn new(
        processor: &str,
        match_type: MatchType,
        patterns: &[String],
    ) -> Result<Self, ProcessorConfigError> {
        match match_type {
            MatchType::Exact => Ok(StringSet::Exact(patterns.iter().cloned().collect())),
            MatchType::Glob => {
                // Validate with globset first, so errors are reported the same
                // way whichever matcher runs.
                #[cfg(feature = "regex")]
                for pattern in patterns {
                    compile_glob(processor, pattern)?;
                }
                if let Some(simple) = patterns
                    .iter()
                    .map(|p| SimpleGlob::parse(p))
                    .collect::<Option<Vec<_>>>()
                {
                    return Ok(StringSet::Simple(simple));
                }
                glob_set(processor, patterns).map(StringSet::Glob)
            }
            MatchType::Regex => regex_set(processor, patterns).map(StringSet::Regex),
        }
    }

    pub(crate) fn is_match(&self, s: &str) -> bool {
        match self {
            StringSet::Exact(set) => set.contains(s),
            StringSet::Simple(globs) => globs.iter().any(|g| g.is_match(s)),
            StringSet::Glob(set) => set.is_match(s),
            StringSet::Regex(set) => set.is_match(s),
        }
    }
}

#[cfg(feature = "regex")]
fn glob_set(processor: &str, patterns: &[String]) -> Result<GlobSet, ProcessorConfigError> {
    let mut builder = globset::GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(compile_glob(processor, pattern)?);
    }
    builder
        .build()
        .map_err(|source| ProcessorConfigError::Glob {
            processor: processor.to_owned(),
            pattern: patterns.join(", "),
            source,
        })
}

#[cfg(not(feature = "regex"))]
fn glob_set(processor: &str, patterns: &[String]) -> Result<GlobSet, ProcessorConfigError> {
    let _ = (processor, patterns);
    Err(ProcessorConfigError::FeatureDisabled {
        what: "a glob pattern beyond a literal with leading or trailing `*`",
        feature: "regex",
    })
}

#[cfg(feature = "regex")]
pub(crate) fn regex_set(
    processor: &str,
    patterns: &[String],
) -> Result<RegexSet, ProcessorConfigError> {
    // Compile one by one first so an error names the bad pattern.
    for pattern in patterns {
        compile_regex(processor, pattern)?;
    }
    RegexSet::new(patterns).map_err(|source| ProcessorConfigError::Regex {
        processor: processor.to_owned(),
        pattern: patterns.join(", "),
        source: Box::new(source),
    })
}

#[cfg(not(feature = "regex"))]
pub(crate) fn regex_set(
    processor: &str,
    patterns: &[String],
) -> Result<RegexSet, ProcessorConfigError> {
    let _ = patterns;
    compile_regex(processor, "").map(|never| match never {})
}

#[cfg(feature = "regex")]
pub(crate) fn compile_glob(
    processor: &str,
    pattern: &str,
) -> Result<globset::Glob, ProcessorConfigError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|source| ProcessorConfigError::Glob {
            processor: processor.to_owned(),
            pattern: pattern.to_owned(),
            source,
        })
}

#[cfg(feature = "regex")]
pub(crate) fn compile_regex(processor: &str, pattern: &str) -> Result<Regex, ProcessorConfigError> {
    Regex::new(pattern).map_err(|source| ProcessorConfigError::Regex {
        processor: processor.to_owned(),
        pattern: pattern.to_owned(),
        source: Box::new(source),
    })
}

/// `s` with every match of `re` replaced by `mask`, taken literally (no `$` expansion).
#[cfg(feature = "regex")]
pub(crate) fn replace_all_literal<'a>(
    re: &Regex,
    s: &'a str,
    mask: &str,
) -> std::borrow::Cow<'a, str> {
    re.replace_all(s, regex::NoExpand(mask))
}

/// No regex exists without the `regex` feature.
#[cfg(not(feature = "regex"))]
pub(crate) fn replace_all_literal<'a>(
    re: &Regex,
    _s: &'a str,
    _mask: &str,
) -> std::borrow::Cow<'a, str> {
    match *re {}
}

/// Without the `regex` feature every regex is refused, naming the feature.
#[cfg(not(feature = "regex"))]
pub(crate) fn compile_regex(processor: &str, pattern: &str) -> Result<Regex, ProcessorConfigError> {
    let _ = (processor, pattern);
    Err(ProcessorConfigError::FeatureDisabled {
        what: "a regular expression",
        feature: "regex",
    })
}

/// A literal attribute value in a configuration: `true`, `42`, `1.5` or `"text"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// A UTF-8 string.
    String(String),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// Condition on one attribute: the key must be present and, when `value` is
/// given, its value must match.
///
/// String values are compared with `match_type`; numbers and booleans by
/// equality (an integer pattern also matches an equal double).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    /// Attribute key, compared exactly.
    pub key: String,
    /// Expected value; `None` means "the key is present".
    #[serde(default)]
    pub value: Option<Value>,
    /// How a string `value` is interpreted.
    #[serde(default)]
    pub match_type: MatchType,
}

impl AttributeMatch {
    /// Matches when `key` is present, whatever its value.
    pub fn exists(key: impl Into<String>) -> Self {
        AttributeMatch {
            key: key.into(),
            value: None,
            match_type: MatchType::Exact,
        }
    }

    /// Matches when `key` equals `value`.
    pub fn equals(key: impl Into<String>, value: impl Into<Value>) -> Self {
        AttributeMatch {
            key: key.into(),
            value: Some(value.into()),
            match_type: MatchType::Exact,
        }
    }

    /// Matches when `key` holds a string matched by the glob `pattern`.
    pub fn glob(key: impl Into<String>, pattern: impl Into<String>) -> Self {
        AttributeMatch {
            key: key.into(),
            value: Some(Value::String(pattern.into())),
            match_type: MatchType::Glob,
        }
    }

    /// Matches when `key` holds a string matched by the regex `pattern`.
    pub fn regex(key: impl Into<String>, pattern: impl Into<String>) -> Self {
        AttributeMatch {
            key: key.into(),
            value: Some(Value::String(pattern.into())),
            match_type: MatchType::Regex,
        }
    }
}

/// A compiled [`AttributeMatch`].
#[derive(Debug, Clone)]
pub(crate) struct AttributeMatcher {
    pub(crate) key: String,
    value: ValueMatcher,
}

#[derive(Debug, Clone)]
enum ValueMatcher {
    Any,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(StringSet),
}

impl AttributeMatcher {
    pub(crate) fn new(processor: &str, m: &AttributeMatch) -> Result<Self, ProcessorConfigError> {
        let value = match (&m.value, m.match_type) {
            (None, _) => ValueMatcher::Any,
            (Some(Value::Bool(b)), _) => ValueMatcher::Bool(*b),
            (Some(Value::Int(i)), _) => ValueMatcher::Int(*i),
            (Some(Value::Double(d)), _) => ValueMatcher::Double(*d),
            (Some(Value::String(s)), mt) => {
                ValueMatcher::Str(StringSet::new(processor, mt, std::slice::from_ref(s))?)
            }
        };
        Ok(AttributeMatcher {
            key: m.key.clone(),
            value,
        })
    }

    /// Whether an attribute value found under `self.key` matches.
    pub(crate) fn value_matches(&self, value: &AnyValueView<'_>) -> bool {
        match (&self.value, value) {
            (ValueMatcher::Any, _) => true,
            (ValueMatcher::Bool(want), AnyValueView::Bool(got)) => want == got,
            (ValueMatcher::Int(want), AnyValueView::Int(got)) => want == got,
            (ValueMatcher::Int(want), AnyValueView::Double(got)) => (*want as f64) == *got,
            (ValueMatcher::Double(want), AnyValueView::Double(got)) => want == got,
            (ValueMatcher::Double(want), AnyValueView::Int(got)) => *want == (*got as f64),
            (ValueMatcher::Str(set), AnyValueView::String(got)) => set.is_match(got),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(mt: MatchType, patterns: &[&str]) -> StringSet {
        let patterns: Vec<String> = patterns.iter().map(|s| (*s).to_owned()).collect();
        StringSet::new("t", mt, &patterns).expect("valid patterns")
    }

    #[test]
    fn exact_matches_whole_strings_only() {
        let s = set(MatchType::Exact, &["GET /", "héllo wörld"]);
        assert!(s.is_match("GET /"));
        assert!(s.is_match("héllo wörld"));
        assert!(!s.is_match("GET /x"));
        assert!(!s.is_match(""));
    }

    #[test]
    fn glob_star_crosses_slashes() {
        let s = set(MatchType::Glob, &["GET /api/*", "health?"]);
        assert!(s.is_match("GET /api/v1/users"));
        assert!(s.is_match("healthz"));
        assert!(!s.is_match("health"));
        assert!(!s.is_match("POST /api/x"));
    }

    #[test]
    fn simple_globs_match_like_globset() {
        let patterns = [
            "GET /health*",
            "*.internal",
            "*cache*",
            "exact",
            "*",
            "**",
            "",
            "a*b",
            "h?llo",
            "[ab]c",
            "ü*",
        ];
        let inputs = [
            "GET /health",
            "GET /healthz",
            "x.internal",
            "internal",
            "my cache hit",
            "exact",
            "exactly",
            "",
            "ab",
            "axxb",
            "hello",
            "bc",
            "über",
            "GET /api",
        ];
        for p in patterns {
            let fast = set(MatchType::Glob, &[p]);
            let slow = globset::GlobSetBuilder::new()
                .add(compile_glob("t", p).expect("valid"))
                .build()
                .expect("valid");
            for s in inputs {
                assert_eq!(fast.is_match(s), slow.is_match(s), "pattern {p:?} on {s:?}");
            }
        }
        assert!(matches!(
            set(MatchType::Glob, &["GET /health*"]),
            StringSet::Simple(_)
        ));
        assert!(matches!(
            set(MatchType::Glob, &["h?llo"]),
            StringSet::Glob(_)
        ));
    }

    #[test]
    fn regex_is_unanchored() {
        let s = set(MatchType::Regex, &["^/internal/", "ping"]);
        assert!(s.is_match("/internal/metrics"));
        assert!(s.is_match("xxpingxx"));
        assert!(!s.is_match("/public/internal/"));
    }

    #[test]
    fn bad_patterns_are_config_errors() {
        let bad = vec!["a[".to_owned()];
        assert!(matches!(
            StringSet::new("p", MatchType::Glob, &bad),
            Err(ProcessorConfigError::Glob { .. })
        ));
        let bad = vec!["(".to_owned()];
        assert!(matches!(
            StringSet::new("p", MatchType::Regex, &bad),
            Err(ProcessorConfigError::Regex { .. })
        ));
    }

    #[test]
    fn value_matcher_compares_by_type() {
        let m = AttributeMatcher::new("t", &AttributeMatch::equals("k", 200i64)).expect("valid");
        assert!(m.value_matches(&AnyValueView::Int(200)));
        assert!(m.value_matches(&AnyValueView::Double(200.0)));
        assert!(!m.value_matches(&AnyValueView::String("200")));
        let m = AttributeMatcher::new("t", &AttributeMatch::glob("k", "ü*")).expect("valid");
        assert!(m.value_matches(&AnyValueView::String("über")));
        assert!(!m.value_matches(&AnyValueView::Bool(true)));
        let m = AttributeMatcher::new("t", &AttributeMatch::exists("k")).expect("valid");
        assert!(m.value_matches(&AnyValueView::Empty));
    }
}
