//! Reading a manager's `GET /metrics` answer in tests: a strict reader of
//! the OpenMetrics text format's sample lines, enough to check values.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a scrape.
#[derive(Debug, Clone)]
pub struct Samples(pub Vec<Sample>);

/// Parses a scrape; panics (failing the test) on any line that is not a
/// comment (`# HELP`, `# TYPE`, `# UNIT`), a sample, or the final `# EOF`.
pub fn parse(text: &str) -> Samples {
    let mut samples = Vec::new();
    let mut ended = false;
    for line in text.lines() {
        assert!(!ended, "text after # EOF: {line:?}");
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap_or("");
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "unknown comment: {line:?}");
            continue;
        }
        samples.push(sample(line));
    }
    assert!(ended, "no # EOF at the end:\n{text}");
    Samples(samples)
}

fn sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
    let value: f64 = value.parse().unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
            (name, labels_of(inner, line))
        }
    };
    assert!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line:?}"
    );
    Sample { name: name.to_string(), labels, value }
}

/// `k="v",k2="v2"` (values as the manager writes them: no escaped quotes).
fn labels_of(inner: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for pair in inner.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
        labels.insert(key.to_string(), value.to_string());
    }
    labels
}

impl Samples {
    /// The value of the sample `name` whose labels include `labels`; `None`
    /// if there is none, a panic if several match.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<&Sample> = self.matching(name, labels).collect();
        assert!(matching.len() <= 1, "several samples match {name} {labels:?}: {matching:?}");
        matching.first().map(|s| s.value)
    }

    /// Like [`Samples::get`], 0 when absent (a counter never incremented has no sample).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// The sum of every sample `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
    }
}
