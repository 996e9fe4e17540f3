//! `GET /events`: engine events tagged with their node, plus swarm's own,
//! honouring `since`, `until` and `filters`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::join_all;
use http::{header, Method, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use swarm_proxy::{BoxError, ProxyBody};
use tokio::sync::{broadcast, mpsc};

use super::request::{parse_filters, query_get};
use super::server::ClientConnection;
use super::{ApiError, Ctx};
use crate::cluster::events::{docker_timestamp, ClusterEvent, NodeTag};
use crate::cluster::Cluster;
use crate::observe::Observed;

/// How many events may wait for one `docker events` client before it is
/// disconnected as too slow. Events are about a kilobyte when tagged, so a
/// client costs at most about a megabyte; a reader that keeps up never has
/// more than a few waiting, and a burst of a thousand events (a stack of
/// containers starting) still fits.
const CLIENT_QUEUE: usize = 1024;

const EVENT_FILTERS: [&str; 13] = [
    "config",
    "container",
    "daemon",
    "event",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "secret",
    "service",
    "type",
];

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Parses Docker's timestamp form `seconds[.nanoseconds]` into nanoseconds.
fn parse_timestamp(text: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::BadRequest(format!("invalid timestamp {text:?}: expected seconds[.nanoseconds]"));
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let nanos: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| bad())? };
    secs.checked_mul(1_000_000_000).and_then(|s| s.checked_add(nanos)).ok_or_else(bad)
}

/// The `filters` of an events request.
struct EventFilter(BTreeMap<String, Vec<String>>);

impl EventFilter {
    fn matches(&self, e: &Value) -> bool {
        let attr = |k: &str| e["Actor"]["Attributes"][k].as_str().unwrap_or_default().to_string();
        let kind = e["Type"].as_str().unwrap_or_default();
        let actor = e["Actor"]["ID"].as_str().unwrap_or_default();
        self.0.iter().all(|(key, values)| {
            values.is_empty()
                || values.iter().any(|v| match key.as_str() {
                    "type" => kind == v,
                    "event" => e["Action"].as_str().is_some_and(|a| a == v || a.starts_with(&format!("{v}:"))),
                    "container" => kind == "container" && (actor.starts_with(v.as_str()) || attr("name") == *v),
                    "image" => attr("image") == *v || (kind == "image" && (actor == v || attr("name") == *v)),
                    "network" | "volume" | "plugin" | "config" | "secret" | "service" => {
                        kind == key && (actor.starts_with(v.as_str()) || attr("name") == *v)
                    }
                    "label" => match v.split_once('=') {
                        Some((k, val)) => attr(k) == val,
                        None => e["Actor"]["Attributes"].get(v.as_str()).is_some(),
                    },
                    "node" => {
                        e["node"]["Name"].as_str() == Some(v.as_str()) || e["node"]["Id"].as_str() == Some(v.as_str())
                    }
                    "scope" => e["scope"].as_str().unwrap_or("local") == v,
                    _ => true,
                })
        })
    }
}

pub async fn events(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let query = req.uri().query();
    let since = query_get(query, "since").filter(|s| !s.is_empty()).map(|s| parse_timestamp(&s)).transpose()?;
    let until = query_get(query, "until").filter(|s| !s.is_empty()).map(|s| parse_timestamp(&s)).transpose()?;
    let filters = parse_filters(query_get(query, "filters").as_deref())?;
    for key in filters.keys() {
        if !EVENT_FILTERS.contains(&key.as_str()) {
            return Err(ApiError::BadRequest(format!("invalid filter '{key}'")));
        }
    }
    let filter = EventFilter(filters);
    let cluster = ctx.cluster().clone();
    // Subscribe before reading history so nothing falls between the two.
    let live = cluster.context.events.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(CLIENT_QUEUE);
    let client = req.extensions().get::<ClientConnection>().cloned();
    tokio::spawn(stream_events(cluster, live, Client { tx, connection: client }, since, until, filter));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|data| (Ok::<_, BoxError>(Frame::data(data)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// One `docker events` client's end of its queue.
struct Client {
    tx: mpsc::Sender<Bytes>,
    /// Its connection, to cut it off when too slow (absent when the request
    /// did not come through a listener).
    connection: Option<ClientConnection>,
}

impl Client {
    /// Queues a live event without waiting: a client whose queue is full is
    /// disconnected (false), so it holds neither memory nor the bus.
    fn offer(&self, line: Bytes) -> bool {
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.too_slow(CLIENT_QUEUE);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Disconnects the client, `queued` events behind.
    fn too_slow(&self, queued: usize) {
        let peer = self.connection.as_ref().and_then(|c| c.peer.clone());
        Observed::EventsReaderTooSlow { peer: peer.as_deref(), queued }.emit();
        if let Some(connection) = &self.connection {
            connection.close();
        }
    }

    fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

async fn stream_events(
    cluster: Arc<Cluster>,
    mut live: broadcast::Receiver<Arc<ClusterEvent>>,
    client: Client,
    since: Option<i64>,
    until: Option<i64>,
    filter: EventFilter,
) {
    let start = now_nanos();
    if let Some(since) = since.filter(|s| *s <= start) {
        let end = until.map_or(start, |u| u.min(start));
        // History is already in memory and bounded: waiting for the client
        // to take it costs nothing more, and a slow start is not falling behind.
        for event in history(&cluster, since, end).await {
            if filter.matches(&event.value) && client.tx.send(event.line.clone()).await.is_err() {
                return;
            }
        }
    }
    let Some(deadline_ns) = until.map(|u| u.max(start)).or(Some(i64::MAX)) else {
        return;
    };
    if until.is_some_and(|u| u <= start) {
        return;
    }
    let wait = Duration::from_nanos(deadline_ns.saturating_sub(start).max(0) as u64);
    let deadline = tokio::time::sleep(wait.min(Duration::from_secs(100 * 365 * 24 * 3600)));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(event) => {
                    // Already sent as history.
                    if since.is_some() && event.time_nano <= start {
                        continue;
                    }
                    if event.time_nano > deadline_ns {
                        return;
                    }
                    if filter.matches(&event.value) && !client.offer(event.line.clone()) {
                        return;
                    }
                }
                // The bus moved on without this client (while it was taking
                // its history, or the manager was starved): it missed
                // events, so it is cut off rather than shown a stream with a hole.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    client.too_slow(client.queued().saturating_add(usize::try_from(missed).unwrap_or(usize::MAX)));
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = &mut deadline => return,
            _ = client.tx.closed() => return,
        }
    }
}

/// Past events between `since` and `until`: every engine's own history,
/// tagged, and swarm's, in time order.
async fn history(cluster: &Cluster, since: i64, until: i64) -> Vec<Arc<ClusterEvent>> {
    let path = format!("/events?since={}&until={}", docker_timestamp(since), docker_timestamp(until));
    let engines = cluster.healthy_engines();
    let answers = join_all(engines.iter().map(|e| e.client.call(Method::GET, &path, None))).await;
    let mut events: Vec<Arc<ClusterEvent>> = cluster.context.events.swarm_history(since, until);
    for (engine, answer) in engines.iter().zip(answers) {
        let (Ok((status, body)), Some(info)) = (answer, engine.info()) else {
            continue;
        };
        if !status.is_success() {
            continue;
        }
        let tag = NodeTag::new(&info, &engine.addr, &engine.ip);
        for line in body.split(|b| *b == b'\n') {
            if let Ok(event) = serde_json::from_slice::<Value>(line) {
                events.push(Arc::new(ClusterEvent::new(tag.tag(event))));
            }
        }
    }
    events.sort_by_key(|e| e.time_nano);
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_client_with_a_full_queue_is_disconnected() {
        let (tx, mut rx) = mpsc::channel(CLIENT_QUEUE);
        let connection = ClientConnection::new(Some("10.0.0.9:51000".into()));
        let client = Client { tx, connection: Some(connection.clone()) };
        for _ in 0..CLIENT_QUEUE {
            assert!(client.offer(Bytes::from_static(b"{}\n")));
        }
        assert_eq!(client.queued(), CLIENT_QUEUE);
        // A reader that takes one makes room for one.
        assert!(rx.recv().await.is_some());
        assert!(client.offer(Bytes::from_static(b"{}\n")));
        assert!(!client.offer(Bytes::from_static(b"{}\n")), "full: cut off");
        tokio::time::timeout(Duration::from_secs(1), connection.closed()).await.expect("the connection is closed");
        drop(rx);
        let gone = Client { tx: mpsc::channel(1).0, connection: None };
        assert!(!gone.offer(Bytes::from_static(b"{}\n")), "a client that left takes nothing");
    }

    #[test]
    fn parses_timestamps() {
        assert_eq!(parse_timestamp("10").unwrap(), 10_000_000_000);
        assert_eq!(parse_timestamp("10.5").unwrap(), 10_500_000_000);
        assert_eq!(parse_timestamp("1732240000.000000001").unwrap(), 1_732_240_000_000_000_001);
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("1.x").is_err());
    }

    #[test]
    fn filters_events() {
        let e = json!({"Type": "container", "Action": "start", "Actor": {"ID": "abc123", "Attributes": {"name": "web", "image": "busybox", "a": "b"}}, "node": {"Name": "node-01"}});
        let f = |s: &str| EventFilter(parse_filters(Some(s)).unwrap());
        assert!(f(r#"{"container":["web"]}"#).matches(&e));
        assert!(f(r#"{"container":["abc"]}"#).matches(&e));
        assert!(f(r#"{"node":["node-01"],"event":["start"]}"#).matches(&e));
        assert!(!f(r#"{"node":["node-02"]}"#).matches(&e));
        assert!(f(r#"{"label":["a=b"],"image":["busybox"]}"#).matches(&e));
        assert!(!f(r#"{"type":["image"]}"#).matches(&e));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::proptest_json::engine_json;
    use proptest::prelude::*;

    proptest! {
        /// Any `since`/`until` parses or is a bad request.
        #[test]
        fn timestamps_never_panic(text in "[-+]?[0-9]{0,20}(\\.[0-9]{0,12})?|.{0,12}") {
            if let Err(e) = parse_timestamp(&text) {
                prop_assert!(matches!(e, ApiError::BadRequest(_)));
            }
        }

        /// Seconds and nanoseconds give the instant they say.
        #[test]
        fn timestamps_are_read_exactly(secs in -9_000_000_000i64..9_000_000_000, nanos in 0i64..1_000_000_000) {
            let text = format!("{secs}.{nanos:09}");
            prop_assert_eq!(parse_timestamp(&text).ok(), Some(secs * 1_000_000_000 + nanos));
        }

        /// Any filters applied to any event give a verdict.
        #[test]
        fn filters_on_any_event(
            event in engine_json(),
            filters in prop::collection::btree_map(
                prop::sample::select(EVENT_FILTERS.to_vec()).prop_map(str::to_string),
                prop::collection::vec("[a-z=:.]{0,6}|.{0,4}", 0..3),
                0..4,
            ),
        ) {
            let _ = EventFilter(filters).matches(&event);
        }
    }
}
