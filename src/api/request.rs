//! Reading the client's request: query parameters, bodies, JSON, filters.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::request::Parts;
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use swarm_proxy::ProxyBody;

use super::ApiError;

/// Largest request body the manager buffers (image loads and imports are
/// copied to every engine, so they are held in memory once).
const MAX_BUFFERED_BODY: usize = 4 << 30;

/// Decoded query pairs, in order.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// The first value of `key` in the query.
pub fn query_get(query: Option<&str>, key: &str) -> Option<String> {
    query_pairs(query).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Rebuilds a query with `key` set to `value` (replacing any earlier value).
pub fn query_set(query: Option<&str>, key: &str, value: &str) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query_pairs(query) {
        if k != key {
            out.append_pair(&k, &v);
        }
    }
    out.append_pair(key, value);
    out.finish()
}

/// True for `1`, `true`, `True`.
pub fn query_bool(query: Option<&str>, key: &str) -> bool {
    matches!(query_get(query, key).as_deref(), Some("1" | "true" | "True"))
}

/// Reads the whole body of `req` (image loads and imports, which are
/// copied to several engines, and requests relayed to the primary).
pub async fn read_body(req: Request<ProxyBody>) -> Result<(Parts, Bytes), ApiError> {
    read_at_most(req, MAX_BUFFERED_BODY).await
}

/// Reads the JSON body of a request the manager parses itself, refusing
/// one larger than `limit` (`--max-json-body`) with a 413 before reading it
/// when its `Content-Length` says so, else as soon as it goes past.
pub async fn read_json_body(req: Request<ProxyBody>, limit: usize) -> Result<(Parts, Bytes), ApiError> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    read_at_most(req, limit).await
}

async fn read_at_most(req: Request<ProxyBody>, limit: usize) -> Result<(Parts, Bytes), ApiError> {
    let (parts, mut body) = req.into_parts();
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("cannot read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(ApiError::TooLarge { limit });
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok((parts, bytes.freeze()))
}

/// Parses a JSON body; an empty body is `{}`.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON in request body: {e}")))
}

/// `--filter node=`: node names matched by any of the patterns (regular
/// expressions, unanchored, as `docker ps --filter node=` always did). No
/// pattern matches every node.
pub struct NodeFilter {
    patterns: Vec<regex::Regex>,
}

/// Upper bound on the compiled size of a `node=` pattern, as for the
/// scheduler's expressions: under the regex crate's default (10 MiB), a
/// pattern of a few hundred kilobytes such as `(a|b)` repeated 50 000 times
/// compiles into megabytes, for every request that sends it.
const NODE_PATTERN_SIZE_LIMIT: usize = 1 << 20;

impl NodeFilter {
    pub fn new(patterns: &[String]) -> Result<NodeFilter, ApiError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .size_limit(NODE_PATTERN_SIZE_LIMIT)
                    .build()
                    .map_err(|e| ApiError::BadRequest(format!("invalid filter 'node={p}': {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(NodeFilter { patterns })
    }

    pub fn matches(&self, node: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|re| re.is_match(node))
    }
}

/// Takes the filters named `keys` out of the query's `filters` parameter,
/// for the manager to apply itself: returns their values and the query to
/// forward to the engines (the other filters, or no `filters` at all).
pub fn take_filters(query: Option<&str>, keys: &[&str]) -> Result<(BTreeMap<String, Vec<String>>, String), ApiError> {
    let mut rest = parse_filters(query_get(query, "filters").as_deref())?;
    let taken = keys.iter().filter_map(|k| rest.remove_entry(*k)).collect();
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query_pairs(query) {
        if k != "filters" {
            out.append_pair(&k, &v);
        }
    }
    if !rest.is_empty() {
        let encoded: serde_json::Map<String, Value> = rest
            .into_iter()
            .map(|(key, values)| (key, Value::Object(values.into_iter().map(|v| (v, Value::Bool(true))).collect())))
            .collect();
        out.append_pair("filters", &Value::Object(encoded).to_string());
    }
    Ok((taken, out.finish()))
}

/// Parses Docker's `filters` query parameter, in either of its two forms:
/// `{"key":["v1","v2"]}` or `{"key":{"v1":true}}`.
pub fn parse_filters(raw: Option<&str>) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut filters = BTreeMap::new();
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(filters);
    };
    let value: Value = serde_json::from_str(raw).map_err(|e| ApiError::BadRequest(format!("invalid filter: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::BadRequest("invalid filter: expected a JSON object".into()));
    };
    for (key, values) in obj {
        let list = match values {
            Value::Array(items) => items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Value::Object(map) => {
                map.into_iter().filter(|(_, on)| on.as_bool().unwrap_or(false)).map(|(k, _)| k).collect()
            }
            _ => return Err(ApiError::BadRequest(format!("invalid filter: bad value for {key:?}"))),
        };
        filters.insert(key, list);
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_filter_forms() {
        let a = parse_filters(Some(r#"{"label":["a=b"],"status":{"running":true}}"#)).unwrap();
        assert_eq!(a["label"], ["a=b"]);
        assert_eq!(a["status"], ["running"]);
        assert!(parse_filters(Some("{nope")).is_err());
        assert!(parse_filters(Some("[1]")).is_err());
        assert!(parse_filters(None).unwrap().is_empty());
    }

    #[test]
    fn takes_filters_out_of_the_query() {
        let query = r#"all=1&filters={"node":["node-01"],"dangling":{"true":true}}"#;
        let (taken, rest) = take_filters(Some(query), &["node", "name"]).unwrap();
        assert_eq!(taken["node"], ["node-01"]);
        assert!(!taken.contains_key("name"));
        assert_eq!(query_get(Some(&rest), "all").as_deref(), Some("1"));
        assert_eq!(query_get(Some(&rest), "filters").as_deref(), Some(r#"{"dangling":{"true":true}}"#));
        let (_, rest) = take_filters(Some(r#"filters={"node":["n"]}"#), &["node"]).unwrap();
        assert_eq!(rest, "");
    }

    #[test]
    fn node_filters_are_unanchored_patterns() {
        let filter = NodeFilter::new(&["node-0".to_string(), "^other$".to_string()]).unwrap();
        assert!(filter.matches("node-01") && filter.matches("other"));
        assert!(!filter.matches("another"));
        assert!(NodeFilter::new(&[]).unwrap().matches("any"));
        assert!(NodeFilter::new(&["(".to_string()]).is_err());
    }

    #[test]
    fn edits_queries() {
        assert_eq!(query_set(Some("container=web&a=1"), "container", "abc"), "a=1&container=abc");
        assert!(query_bool(Some("all=1"), "all"));
        assert!(!query_bool(Some("all=0"), "all"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Query strings made of what queries are written with, escapes included.
    const QUERY_LIKE: &str = "[a-z=&%0-9A-F+{}\\[\\]\":,]{0,40}";

    /// `filters` values: JSON objects of lists or of booleans, or anything.
    fn filters_like() -> impl Strategy<Value = String> {
        prop_oneof![
            crate::proptest_json::json_with_keys(&["node", "name", "label", "status", "dangling"])
                .prop_map(|v| v.to_string()),
            "[{}\\[\\]\":,a-z0-9 ]{0,24}",
            any::<String>(),
        ]
    }

    proptest! {
        /// No query panics the readers; every pair read is in the query.
        #[test]
        fn queries_never_panic(query in QUERY_LIKE, any_query in any::<String>(), key in "[a-z]{0,3}") {
            for q in [&query, &any_query] {
                let pairs = query_pairs(Some(q));
                prop_assert_eq!(query_get(Some(q), &key), pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()));
                let _ = query_bool(Some(q), &key);
                // Setting a key and reading it back gives the value set.
                let set = query_set(Some(q), &key, "v&=%");
                let read = query_get(Some(&set), &key);
                prop_assert_eq!(read.as_deref(), Some("v&=%"));
            }
        }

        /// Any `filters` parses or is a bad request; what `take_filters`
        /// takes out is no longer in the query it forwards.
        #[test]
        fn filters_never_panic(filters in filters_like(), other in "[a-z]{0,3}=[a-z]{0,3}") {
            let _ = parse_filters(Some(&filters));
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("filters", &filters)
                .finish();
            let query = format!("{other}&{query}");
            match take_filters(Some(&query), &["node", "name"]) {
                Ok((taken, rest)) => {
                    prop_assert!(taken.keys().all(|k| k == "node" || k == "name"));
                    let left = parse_filters(query_get(Some(&rest), "filters").as_deref());
                    prop_assert!(left.is_ok_and(|left| !left.contains_key("node") && !left.contains_key("name")));
                }
                Err(e) => prop_assert!(matches!(e, ApiError::BadRequest(_))),
            }
        }

        #[test]
        fn json_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_json(&body);
        }

        /// Node patterns from the user compile or are a bad request, and
        /// matching is quick.
        #[test]
        fn node_patterns_never_panic(patterns in prop::collection::vec("[a-z.*+?()|\\[\\]{}0-9^$\\\\,-]{0,16}", 0..3), node in "[a-z0-9-]{0,12}") {
            if let Ok(filter) = NodeFilter::new(&patterns) {
                let _ = filter.matches(&node);
            }
        }
    }

    #[test]
    fn huge_node_patterns_are_refused_quickly() {
        let started = std::time::Instant::now();
        for pattern in [r"\w{1000}{1000}", r"(\pL{100}){100}", &"(a|b)".repeat(50_000)] {
            assert!(NodeFilter::new(&[pattern.to_string()]).is_err(), "{pattern:.40}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
