//! An engine's events: kept compact in a bounded history (dockerd keeps
//! its last 256), fanned out to the open `/events` streams, and rendered
//! to JSON from the captured events only when sent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::clock;
use crate::fixtures::templates;
use crate::ids::Id;
use crate::model::Spec;

/// How many events dockerd keeps for `since` (its `eventsLimit`).
pub const DEFAULT_HISTORY: usize = 256;
/// How many rendered events a stream may have queued before it is cut
/// off (dockerd's subscriber buffer). A cut-off client reconnects with
/// `since` and is replayed what it missed, as from a real engine.
const STREAM_QUEUE: usize = 1024;

/// What an event is about, with the attributes it carries.
#[derive(Debug, Clone)]
pub enum Subject {
    Container {
        id: Id,
        name: Arc<str>,
        spec: Arc<Spec>,
        /// `exitCode` of a `die`, `signal` of a `kill`.
        detail: Option<(&'static str, i32)>,
    },
    Network {
        id: Id,
        name: Arc<str>,
        driver: Arc<str>,
        /// The container of a `connect` or `disconnect`.
        container: Option<Id>,
    },
    Volume {
        name: Arc<str>,
        driver: Arc<str>,
        /// The container and destination of a `mount` (container only for `unmount`).
        container: Option<Id>,
        destination: Option<Arc<str>>,
    },
}

impl Subject {
    /// The event's `Type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Container { .. } => "container",
            Subject::Network { .. } => "network",
            Subject::Volume { .. } => "volume",
        }
    }
}

/// One event, as the history keeps it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Nanoseconds since the epoch; strictly increasing within an engine.
    pub time_nano: i64,
    /// The `Action` (`create`, `start`, `die`, `connect`, …).
    pub action: &'static str,
    pub subject: Subject,
}

impl Event {
    /// The event as dockerd sends it on a stream: its JSON and a newline.
    pub fn render(&self) -> Bytes {
        let mut line = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    /// The event's JSON, from the captured event of the same type and action.
    pub fn to_json(&self) -> Value {
        let kind = self.subject.kind();
        let mut event = templates().event(kind, self.action).cloned().unwrap_or_else(|| Value::Object(Map::new()));
        let (actor_id, attributes) = self.actor();
        if let Value::Object(map) = &mut event {
            if let Subject::Container { spec, .. } = &self.subject {
                // Only container events carry the old-style fields.
                map.insert("status".into(), self.action.into());
                map.insert("id".into(), actor_id.clone().into());
                map.insert("from".into(), Value::from(&*spec.image));
            }
            map.insert("Type".into(), kind.into());
            map.insert("Action".into(), self.action.into());
            let attributes: Map<String, Value> = attributes.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            map.insert("Actor".into(), serde_json::json!({"ID": actor_id, "Attributes": attributes}));
            map.insert("time".into(), clock::seconds(self.time_nano).into());
            map.insert("timeNano".into(), self.time_nano.into());
        }
        event
    }

    /// `Actor.ID` and `Actor.Attributes` as dockerd fills them for this action.
    fn actor(&self) -> (String, BTreeMap<String, String>) {
        let mut attributes = BTreeMap::new();
        match &self.subject {
            Subject::Container { id, name, spec, detail } => {
                for (k, v) in spec.labels.iter() {
                    attributes.insert(k.to_string(), v.to_string());
                }
                attributes.insert("image".into(), spec.image.to_string());
                attributes.insert("name".into(), name.to_string());
                if let Some((key, value)) = detail {
                    attributes.insert(key.to_string(), value.to_string());
                }
                (id.hex(), attributes)
            }
            Subject::Network { id, name, driver, container } => {
                if let Some(container) = container {
                    attributes.insert("container".into(), container.hex());
                }
                attributes.insert("name".into(), name.to_string());
                attributes.insert("type".into(), driver.to_string());
                (id.hex(), attributes)
            }
            Subject::Volume { name, driver, container, destination } => {
                if let Some(container) = container {
                    attributes.insert("container".into(), container.hex());
                }
                attributes.insert("driver".into(), driver.to_string());
                if let Some(destination) = destination {
                    attributes.insert("destination".into(), destination.to_string());
                    attributes.insert("propagation".into(), String::new());
                    attributes.insert("read/write".into(), "true".into());
                }
                (name.to_string(), attributes)
            }
        }
    }
}

/// The `filters` of an `/events` request: every key given must match
/// (any of its values), as dockerd's.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    filters: BTreeMap<String, Vec<String>>,
}

impl EventFilter {
    /// The keys dockerd 20.10 accepts on `/events`.
    const KEYS: [&'static str; 14] = [
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
        "volume",
    ];

    /// Reads decoded `filters` (see [`crate::api::parse_filters`]); an unknown
    /// key is dockerd's `Invalid filter`.
    pub fn new(filters: BTreeMap<String, Vec<String>>) -> Result<EventFilter, String> {
        if let Some(key) = filters.keys().find(|k| !Self::KEYS.contains(&k.as_str())) {
            return Err(format!("Invalid filter '{key}'"));
        }
        Ok(EventFilter { filters })
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.filters.iter().all(|(key, values)| values.is_empty() || values.iter().any(|v| self.one(key, v, event)))
    }

    fn one(&self, key: &str, value: &str, event: &Event) -> bool {
        let subject = &event.subject;
        match key {
            "type" => subject.kind() == value,
            "event" => event.action == value,
            "scope" => value == "local",
            "container" => match subject {
                Subject::Container { id, name, .. } => id.has_prefix(value) || &**name == value,
                Subject::Network { container: Some(id), .. } | Subject::Volume { container: Some(id), .. } => {
                    id.has_prefix(value)
                }
                _ => false,
            },
            "image" => matches!(subject, Subject::Container { spec, .. }
                if *spec.image == *value || spec.image_id.trim_start_matches("sha256:").starts_with(value.trim_start_matches("sha256:"))),
            "label" => match subject {
                Subject::Container { spec, .. } => match value.split_once('=') {
                    Some((k, v)) => spec.label(k) == Some(v),
                    None => spec.label(value).is_some(),
                },
                _ => false,
            },
            "network" => {
                matches!(subject, Subject::Network { id, name, .. } if id.has_prefix(value) || &**name == value)
            }
            "volume" => matches!(subject, Subject::Volume { name, .. } if &**name == value),
            // Objects a hollow engine never has events about.
            _ => false,
        }
    }
}

/// An open `/events` stream.
struct Subscriber {
    filter: Arc<EventFilter>,
    tx: mpsc::Sender<Bytes>,
}

/// An engine's event history and open streams. Lives inside the engine's
/// state lock, so an event, the state change it reports, and its place
/// in every stream are one step.
#[derive(Default)]
pub struct EventLog {
    /// The last `capacity` events, oldest first; times strictly increase.
    history: VecDeque<Event>,
    capacity: usize,
    subscribers: Vec<Subscriber>,
    /// `timeNano` of the newest event, so the next is later.
    last_time: i64,
}

impl EventLog {
    pub fn new(capacity: usize) -> EventLog {
        EventLog { capacity, ..EventLog::default() }
    }

    /// Records an event now and sends it to every stream that wants it;
    /// returns its time.
    pub fn emit(&mut self, action: &'static str, subject: Subject) -> i64 {
        let time_nano = clock::now_nanos().max(self.last_time + 1);
        self.last_time = time_nano;
        let event = Event { time_nano, action, subject };
        if !self.subscribers.is_empty() {
            let mut line: Option<Bytes> = None;
            self.subscribers.retain(|s| {
                if !s.filter.matches(&event) {
                    return !s.tx.is_closed();
                }
                let line = line.get_or_insert_with(|| event.render()).clone();
                // A full queue cuts the stream rather than lose an event in it.
                s.tx.try_send(line).is_ok()
            });
        }
        if self.capacity > 0 {
            if self.history.len() >= self.capacity {
                self.history.pop_front();
            }
            self.history.push_back(event);
        }
        time_nano
    }

    /// Opens a stream: the kept events from `since` (to `until`) that pass
    /// `filter`, rendered, and, unless `until` has passed, a receiver of
    /// the ones to come.
    pub fn subscribe(
        &mut self,
        filter: Arc<EventFilter>,
        since: Option<i64>,
        until: Option<i64>,
        now: i64,
    ) -> (Vec<Bytes>, Option<mpsc::Receiver<Bytes>>) {
        let replay = match since {
            Some(since) => self
                .history
                .iter()
                .filter(|e| e.time_nano >= since && until.is_none_or(|u| e.time_nano <= u) && filter.matches(e))
                .map(Event::render)
                .collect(),
            None => Vec::new(),
        };
        if until.is_some_and(|u| u <= now) {
            return (replay, None);
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.subscribers.push(Subscriber { filter, tx });
        (replay, Some(rx))
    }

    /// Open streams (`/info`'s `NEventsListener`).
    pub fn listeners(&mut self) -> usize {
        self.subscribers.retain(|s| !s.tx.is_closed());
        self.subscribers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sorted_labels;

    fn spec() -> Arc<Spec> {
        Arc::new(Spec {
            image: "busybox".into(),
            image_id: "sha256:abc".into(),
            command: vec!["sleep".into()].into_boxed_slice(),
            labels: sorted_labels([("app", "web")]),
            ports: Box::new([]),
            mounts: Box::new([]),
            network_mode: "default".into(),
            config: None,
            host_config: None,
        })
    }

    fn container_event() -> Subject {
        Subject::Container { id: Id::derived(&[b"c"]), name: "web".into(), spec: spec(), detail: None }
    }

    #[test]
    fn renders_like_the_captured_events() {
        let mut log = EventLog::new(4);
        let id = Id::derived(&[b"c"]);
        log.emit("die", Subject::Container { id, name: "web".into(), spec: spec(), detail: Some(("exitCode", 143)) });
        let event = log.history.back().cloned().expect("kept");
        let json: Value = serde_json::from_slice(&event.render()).expect("JSON");
        assert_eq!(json["status"], "die");
        assert_eq!(json["id"], id.hex());
        assert_eq!(json["from"], "busybox");
        assert_eq!(json["Actor"]["Attributes"]["exitCode"], "143");
        assert_eq!(json["Actor"]["Attributes"]["app"], "web");
        assert_eq!(json["scope"], "local");
        assert_eq!(json["timeNano"].as_i64(), Some(event.time_nano));
        let captured = templates().event("container", "die").expect("captured");
        let keys = |v: &Value| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert_eq!(keys(&json), keys(captured));
        log.emit(
            "connect",
            Subject::Network { id, name: "bridge".into(), driver: "bridge".into(), container: Some(id) },
        );
        let json = log.history.back().map(Event::to_json).expect("kept");
        assert!(json.get("status").is_none(), "network events have no old-style fields");
        assert_eq!(json["Actor"]["Attributes"]["container"], id.hex());
    }

    #[test]
    fn history_is_bounded_and_replayed_from_since() {
        let mut log = EventLog::new(3);
        let times: Vec<i64> = (0..5).map(|_| log.emit("create", container_event())).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        let all = Arc::new(EventFilter::default());
        let (replay, live) = log.subscribe(all.clone(), Some(0), Some(times[4]), times[0]);
        assert_eq!(replay.len(), 3, "only the last 3 are kept");
        assert!(live.is_some(), "until is still to come");
        let (replay, live) = log.subscribe(all, Some(times[3]), Some(times[3]), times[4]);
        assert_eq!(replay.len(), 1);
        assert!(live.is_none(), "until has passed");
    }

    #[test]
    fn streams_get_what_their_filter_takes() {
        let mut log = EventLog::new(8);
        let only_start =
            EventFilter::new(BTreeMap::from([("event".to_string(), vec!["start".to_string()])])).expect("a known key");
        let (_, rx) = log.subscribe(Arc::new(only_start), None, None, 0);
        let mut rx = rx.expect("a live stream");
        log.emit("create", container_event());
        log.emit("start", container_event());
        let line = rx.try_recv().expect("the start");
        assert!(String::from_utf8_lossy(&line).contains("\"Action\":\"start\""));
        assert!(rx.try_recv().is_err(), "nothing else");
        assert_eq!(log.listeners(), 1);
        drop(rx);
        assert_eq!(log.listeners(), 0);
        assert!(EventFilter::new(BTreeMap::from([("bogus".to_string(), vec![])])).is_err());
    }
}
