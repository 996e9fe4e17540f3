//! Cluster events: engine events tagged with their node, and swarm's own.

use std::collections::VecDeque;
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
