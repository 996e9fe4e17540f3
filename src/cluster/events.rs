//! Cluster events: engine events tagged with their node, and swarm's own.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::engine::EngineInfo;

/// How many swarm events are kept for `docker events --since`.
const SWARM_HISTORY: usize = 1024;
/// How many events a slow `/events` client may lag behind before it misses some.
const BUS_CAPACITY: usize = 4096;

/// How far before the newest event seen a reopened engine events stream
/// starts. dockerd stamps an event before it publishes it, so its stream is
/// not strictly in time order: replaying a little more than the newest and
/// dropping exactly what was seen also catches an event published just after
/// a newer one. A second is far more than that reordering and keeps the set
/// of seen identities small.
const RESUME_WINDOW_NS: i64 = 1_000_000_000;

/// Docker's timestamp form `seconds.nanoseconds` for nanoseconds since the epoch.
pub fn docker_timestamp(ns: i64) -> String {
    format!("{}.{:09}", ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// What tells one engine event from another: its time first, so the seen
/// set can be cut at a time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct EventKey {
    time_nano: i64,
    kind: String,
    action: String,
    actor: String,
}

impl EventKey {
    /// `None` for an event without `timeNano` (engines before API 1.22):
    /// a time in seconds cannot tell repeats from new events.
    fn of(event: &Value) -> Option<EventKey> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Some(EventKey {
            time_nano: event["timeNano"].as_i64()?,
            kind: text(&event["Type"]),
            action: text(event.get("Action").unwrap_or(&event["status"])),
            actor: text(event["Actor"].get("ID").unwrap_or(&event["id"])),
        })
    }

    /// The smallest key at `time_nano`.
    fn floor(time_nano: i64) -> EventKey {
        EventKey { time_nano, kind: String::new(), action: String::new(), actor: String::new() }
    }
}

/// Where one engine's events stream stands, kept across reopenings so that
/// a reopened stream (`since`) replays what was missed and nothing twice.
#[derive(Debug, Default)]
pub struct EventCursor {
    /// The engine's clock when the first stream opened: where a stream that
    /// broke before any event resumes from.
    opened: Option<i64>,
    /// The newest `timeNano` seen.
    newest: Option<i64>,
    /// The events seen within [`RESUME_WINDOW_NS`] of `newest`.
    seen: BTreeSet<EventKey>,
}

impl EventCursor {
    /// Notes that a stream opened at `engine_now` (the engine's clock, from
    /// its `Date` header); only the first opening counts.
    pub fn opened(&mut self, engine_now: i64) {
        self.opened.get_or_insert(engine_now);
    }

    /// The `since` for reopening the stream: `None` until one opened.
    pub fn resume_since(&self) -> Option<i64> {
        self.newest.map(|n| n.saturating_sub(RESUME_WINDOW_NS)).max(self.opened)
    }

    /// Notes an engine event; false when it was seen already (replayed after a reopening).
    pub fn admit(&mut self, event: &Value) -> bool {
        let Some(key) = EventKey::of(event) else {
            return true;
        };
        let time = key.time_nano;
        if !self.seen.insert(key) {
            return false;
        }
        if self.newest.is_none_or(|n| time > n) {
            self.newest = Some(time);
            self.seen = self.seen.split_off(&EventKey::floor(time.saturating_sub(RESUME_WINDOW_NS)));
        }
        true
    }
}

/// One event as clients see it.
#[derive(Debug)]
pub struct ClusterEvent {
    /// The tagged event.
    pub value: Value,
    /// `value` serialized, newline-terminated, ready to send.
    pub line: Bytes,
    /// Nanoseconds since the epoch (`timeNano`).
    pub time_nano: i64,
}

impl ClusterEvent {
    pub fn new(value: Value) -> ClusterEvent {
        let time_nano =
            // An engine's `time` in seconds may be any number: saturate rather than overflow.
            value["timeNano"].as_i64().or_else(|| value["time"].as_i64().map(|s| s.saturating_mul(1_000_000_000))).unwrap_or(0);
        let mut line = serde_json::to_vec(&value).unwrap_or_default();
        line.push(b'\n');
        ClusterEvent { value, line: Bytes::from(line), time_nano }
    }
}

/// The node fields the original adds to every event.
#[derive(Debug, Clone)]
pub struct NodeTag {
    pub name: String,
    pub id: String,
    pub addr: String,
    pub ip: String,
}

impl NodeTag {
    pub fn new(info: &EngineInfo, addr: &str, ip: &str) -> NodeTag {
        NodeTag { name: info.name.clone(), id: info.id.clone(), addr: addr.to_string(), ip: ip.to_string() }
    }

    /// Adds `node` and the `node.*` actor attributes to an engine event.
    pub fn tag(&self, mut event: Value) -> Value {
        if let Some(obj) = event.as_object_mut() {
            obj.insert("node".into(), json!({"Name": self.name, "Id": self.id, "Addr": self.addr, "Ip": self.ip}));
            let actor = obj.entry("Actor").or_insert_with(|| json!({}));
            if let Some(actor) = actor.as_object_mut() {
                let attrs = actor.entry("Attributes").or_insert_with(|| json!({}));
                if let Some(attrs) = attrs.as_object_mut() {
                    attrs.insert("node.name".into(), self.name.clone().into());
                    attrs.insert("node.id".into(), self.id.clone().into());
                    attrs.insert("node.addr".into(), self.addr.clone().into());
                    attrs.insert("node.ip".into(), self.ip.clone().into());
                }
            }
        }
        event
    }

    /// A swarm event (`engine_connect`, `engine_disconnect`, `engine_reconnect`) about this node.
    pub fn swarm_event(&self, action: &str) -> Value {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
        self.tag(json!({
            "status": action,
            "from": "swarm",
            "Type": "swarm",
            "Action": action,
            "Actor": {"ID": self.id, "Attributes": {}},
            "scope": "local",
            "time": nanos / 1_000_000_000,
            "timeNano": nanos,
        }))
    }
}

/// Fan-out of all cluster events to `/events` clients, plus a short history
/// of swarm's own events (engines replay their own history).
#[derive(Debug)]
pub struct EventBus {
    /// Live events; each `/events` client holds a receiver.
    sender: broadcast::Sender<Arc<ClusterEvent>>,
    /// The last [`SWARM_HISTORY`] swarm events, oldest first.
    swarm_history: Mutex<VecDeque<Arc<ClusterEvent>>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus { sender: broadcast::channel(BUS_CAPACITY).0, swarm_history: Mutex::new(VecDeque::new()) }
    }
}

impl EventBus {
    pub fn publish(&self, event: Value) {
        let event = Arc::new(ClusterEvent::new(event));
        if event.value["Type"] == "swarm" {
            let mut history = self.swarm_history.lock();
            if history.len() == SWARM_HISTORY {
                history.pop_front();
            }
            history.push_back(event.clone());
        }
        // No receivers is not an error: nobody is listening right now.
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ClusterEvent>> {
        self.sender.subscribe()
    }

    /// Swarm events with `since <= timeNano <= until`.
    pub fn swarm_history(&self, since: i64, until: i64) -> Vec<Arc<ClusterEvent>> {
        self.swarm_history.lock().iter().filter(|e| e.time_nano >= since && e.time_nano <= until).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag() -> NodeTag {
        NodeTag {
            name: "node-01".into(),
            id: "ID|10.0.0.1:2375".into(),
            addr: "10.0.0.1:2375".into(),
            ip: "10.0.0.1".into(),
        }
    }

    #[test]
    fn tags_engine_events() {
        let e = tag()
            .tag(json!({"Type": "container", "Action": "start", "Actor": {"ID": "c1", "Attributes": {"name": "web"}}}));
        assert_eq!(e["node"]["Name"], "node-01");
        assert_eq!(e["Actor"]["Attributes"]["node.name"], "node-01");
        assert_eq!(e["Actor"]["Attributes"]["name"], "web");
    }

    fn engine_event(time_nano: i64, action: &str, id: &str) -> Value {
        json!({"Type": "container", "Action": action, "Actor": {"ID": id}, "timeNano": time_nano})
    }

    #[test]
    fn a_replay_delivers_only_what_was_not_seen() {
        let mut cursor = EventCursor::default();
        assert_eq!(cursor.resume_since(), None);
        cursor.opened(5_000_000_000);
        assert_eq!(cursor.resume_since(), Some(5_000_000_000), "a stream broken before any event");
        for (t, action) in [(10_000_000_000, "create"), (10_500_000_000, "start"), (10_500_000_000, "attach")] {
            assert!(cursor.admit(&engine_event(t, action, "c1")));
        }
        assert_eq!(cursor.resume_since(), Some(9_500_000_000));
        // The replay from `since`: what was seen, one event published late, new ones.
        let replay = [
            (10_000_000_000, "create", "c1", false),
            (10_200_000_000, "create", "c2", true),
            (10_500_000_000, "start", "c1", false),
            (10_500_000_000, "attach", "c1", false),
            (10_500_000_000, "start", "c2", true),
            (11_000_000_000, "die", "c1", true),
        ];
        for (t, action, id, new) in replay {
            assert_eq!(cursor.admit(&engine_event(t, action, id)), new, "{t} {action} {id}");
        }
        assert_eq!(cursor.resume_since(), Some(10_000_000_000));
    }

    #[test]
    fn the_seen_set_keeps_one_window() {
        let mut cursor = EventCursor::default();
        for i in 0..10_000 {
            assert!(cursor.admit(&engine_event(i * 1_000_000, "kill", "c1")));
        }
        // 10 s of events, one per millisecond: only the last second's are kept.
        assert_eq!(cursor.seen.len(), 1001);
        // Old engines' events have no `timeNano`: never held back.
        let old = json!({"status": "start", "id": "c1", "time": 5});
        assert!(cursor.admit(&old) && cursor.admit(&old));
    }

    #[test]
    fn timestamps_in_docker_form() {
        assert_eq!(docker_timestamp(1_732_240_000_000_000_001), "1732240000.000000001");
        assert_eq!(docker_timestamp(-1), "-1.999999999");
    }

    #[test]
    fn keeps_swarm_history() {
        let bus = EventBus::default();
        bus.publish(tag().swarm_event("engine_connect"));
        bus.publish(json!({"Type": "container", "timeNano": 5}));
        let all = bus.swarm_history(0, i64::MAX);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].value["Action"], "engine_connect");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::proptest_json::engine_json;
    use proptest::prelude::*;

    proptest! {
        /// Any event an engine sends is tagged and serialized; one that is
        /// an object gets the node.
        #[test]
        fn any_event_is_tagged(event in engine_json()) {
            let was_object = event.is_object();
            let tagged = tag().tag(event);
            if was_object {
                prop_assert_eq!(&tagged["node"]["Name"], "node-01");
            }
            let e = ClusterEvent::new(tagged);
            prop_assert_eq!(e.line.last(), Some(&b'\n'));
        }
    }

    proptest! {
        /// Whatever an engine sent, its replay from `resume_since` (every
        /// event at or after it, as dockerd sends) publishes nothing again.
        #[test]
        fn a_replay_repeats_nothing(
            sent in prop::collection::btree_set((0i64..3_000_000_000, 0usize..3, 0usize..3), 1..200),
        ) {
            let event = |(t, action, id): (i64, usize, usize)| {
                let action = ["start", "die", "kill"][action];
                json!({"Type": "container", "Action": action, "Actor": {"ID": id.to_string()}, "timeNano": t})
            };
            let mut cursor = EventCursor::default();
            for e in &sent {
                prop_assert!(cursor.admit(&event(*e)));
            }
            let since = cursor.resume_since().unwrap_or(i64::MIN);
            for e in sent.iter().filter(|(t, _, _)| *t >= since) {
                prop_assert!(!cursor.admit(&event(*e)), "{:?} repeated", e);
            }
        }
    }

    fn tag() -> NodeTag {
        NodeTag { name: "node-01".into(), id: "ID|h:1".into(), addr: "h:1".into(), ip: "h".into() }
    }

    #[test]
    fn huge_times_saturate() {
        assert_eq!(ClusterEvent::new(json!({"time": i64::MAX})).time_nano, i64::MAX);
        assert_eq!(ClusterEvent::new(json!({"time": i64::MIN})).time_nano, i64::MIN);
        assert_eq!(ClusterEvent::new(json!({"time": 2})).time_nano, 2_000_000_000);
    }
}
