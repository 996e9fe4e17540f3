//! The answers of a real dockerd 20.10 (`fixtures/`, refreshed by
//! `tests/capture_fixtures.rs`), parsed once into the templates every
//! hollow answer is rendered from: an answer is a template with the
//! engine's own values written over, so its fields, their types and its
//! size are a real engine's.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

/// Where the captured engine listened, as the capture left it in the
/// fixtures (`/info`'s `Warnings` name it); replaced by each hollow engine's address.
pub const CAPTURED_ENGINE_ADDR: &str = "192.0.2.11:2375";

const VERSION: &str = include_str!("../fixtures/version.json");
const INFO: &str = include_str!("../fixtures/info.json");
const CONTAINERS: &str = include_str!("../fixtures/containers.json");
const INSPECT_RUNNING: &str = include_str!("../fixtures/inspect-running.json");
const INSPECT_CREATED: &str = include_str!("../fixtures/inspect-created.json");
const INSPECT_EXITED: &str = include_str!("../fixtures/inspect-exited.json");
const IMAGES: &str = include_str!("../fixtures/images.json");
const NETWORKS: &str = include_str!("../fixtures/networks.json");
const VOLUMES: &str = include_str!("../fixtures/volumes.json");
const EVENTS: &str = include_str!("../fixtures/events.jsonl");

/// Every template, parsed. Each is a whole answer (or one element of a
/// list answer) exactly as the real engine sent it.
pub struct Templates {
    pub version: Value,
    pub info: Value,
    /// A `/containers/json` entry (the running container: it has ports,
    /// labels and mounts, so every field is there).
    pub summary: Value,
    /// A published port of a list entry (`IP`, `PrivatePort`, `PublicPort`, `Type`).
    pub summary_port: Value,
    /// A list entry's mount.
    pub summary_mount: Value,
    /// A list entry's network endpoint on the default bridge, and on a
    /// user network; of a container that ran (`NetworkID` set).
    pub summary_bridge: Value,
    pub summary_user_network: Value,
    /// Inspects by state: running (also paused), created (never started), exited.
    pub inspect_running: Value,
    pub inspect_created: Value,
    pub inspect_exited: Value,
    /// An inspect's endpoint on the default bridge, and on a user network.
    pub inspect_bridge: Value,
    pub inspect_user_network: Value,
    /// An inspect's mount.
    pub inspect_mount: Value,
    /// A `/images/json` entry.
    pub image: Value,
    /// The ID of the captured busybox image: hollow engines list busybox
    /// under the same ID as the testbed's real engines.
    pub busybox_id: String,
    /// `/networks` entries: the built-in `bridge`, `host` and `none`, and a
    /// user-defined bridge network.
    pub bridge: Value,
    pub host: Value,
    pub none: Value,
    pub user_network: Value,
    /// A `/volumes` entry.
    pub volume: Value,
    /// The `/volumes` answer around the entries.
    pub volumes: Value,
    /// One event per (`Type`, `Action`) the real engine sent.
    events: HashMap<(String, String), Value>,
}

impl Templates {
    /// The template event of `kind` (`container`, `network`, `volume`,
    /// `image`) and `action`; one of the same kind when that action was not
    /// captured (the shape is per kind).
    pub fn event(&self, kind: &str, action: &str) -> Option<&Value> {
        self.events
            .get(&(kind.to_string(), action.to_string()))
            .or_else(|| self.events.iter().find(|((k, _), _)| k == kind).map(|(_, v)| v))
    }
}

/// The templates, parsed on first use.
pub fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    // The fixtures are part of the build: one that does not parse is a
    // broken checkout, caught by this crate's tests before anything runs.
    TEMPLATES.get_or_init(|| parse().unwrap_or_else(|e| panic!("hollow/fixtures: {e}")))
}

fn json(name: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))
}

/// The element of the array `list` whose `key` is `value`.
fn find(list: &Value, key: &str, value: &str, what: &str) -> Result<Value, String> {
    list.as_array()
        .and_then(|items| items.iter().find(|item| item[key] == value))
        .cloned()
        .ok_or_else(|| format!("{what}: no entry with {key} = {value}"))
}

/// `value` at `pointer`, which the capture guarantees is there.
fn at(value: &Value, pointer: &str, what: &str) -> Result<Value, String> {
    value.pointer(pointer).cloned().ok_or_else(|| format!("{what}: nothing at {pointer}"))
}

fn parse() -> Result<Templates, String> {
    let containers = json("containers.json", CONTAINERS)?;
    let summary = find(&containers, "State", "running", "containers.json")?;
    let inspect_running = json("inspect-running.json", INSPECT_RUNNING)?;
    let images = json("images.json", IMAGES)?;
    let image = at(&images, "/0", "images.json")?;
    let networks = json("networks.json", NETWORKS)?;
    let volumes = json("volumes.json", VOLUMES)?;
    let mut events = HashMap::new();
    for (n, line) in EVENTS.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let event = json(&format!("events.jsonl line {}", n + 1), line)?;
        let key = (
            event["Type"].as_str().unwrap_or_default().to_string(),
            event["Action"].as_str().unwrap_or_default().to_string(),
        );
        events.entry(key).or_insert(event);
    }
    let busybox_id = image["Id"].as_str().unwrap_or_default().to_string();
    Ok(Templates {
        version: json("version.json", VERSION)?,
        info: json("info.json", INFO)?,
        summary_port: at(&summary, "/Ports/0", "containers.json")?,
        summary_mount: at(&summary, "/Mounts/0", "containers.json")?,
        summary_bridge: at(&summary, "/NetworkSettings/Networks/bridge", "containers.json")?,
        summary_user_network: at(&summary, "/NetworkSettings/Networks/hollow-net", "containers.json")?,
        summary,
        inspect_bridge: at(&inspect_running, "/NetworkSettings/Networks/bridge", "inspect-running.json")?,
        inspect_user_network: at(&inspect_running, "/NetworkSettings/Networks/hollow-net", "inspect-running.json")?,
        inspect_mount: at(&inspect_running, "/Mounts/0", "inspect-running.json")?,
        inspect_running,
        inspect_created: json("inspect-created.json", INSPECT_CREATED)?,
        inspect_exited: json("inspect-exited.json", INSPECT_EXITED)?,
        image,
        busybox_id,
        bridge: find(&networks, "Name", "bridge", "networks.json")?,
        host: find(&networks, "Name", "host", "networks.json")?,
        none: find(&networks, "Name", "none", "networks.json")?,
        user_network: find(&networks, "Name", "hollow-net", "networks.json")?,
        volume: at(&volumes, "/Volumes/0", "volumes.json")?,
        volumes,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_parses_and_has_what_rendering_needs() {
        let t = parse().expect("fixtures parse");
        assert_eq!(t.version["ApiVersion"], "1.41");
        assert!(t.info["Warnings"].to_string().contains(CAPTURED_ENGINE_ADDR), "{}", t.info["Warnings"]);
        assert!(t.busybox_id.starts_with("sha256:"));
        assert_eq!(t.inspect_created["State"]["Status"], "created");
        assert_eq!(t.inspect_exited["State"]["Status"], "exited");
        for (kind, action) in [
            ("container", "create"),
            ("container", "start"),
            ("container", "kill"),
            ("container", "die"),
            ("container", "stop"),
            ("container", "restart"),
            ("container", "pause"),
            ("container", "unpause"),
            ("container", "destroy"),
            ("network", "create"),
            ("network", "connect"),
            ("network", "disconnect"),
            ("network", "destroy"),
            ("volume", "create"),
            ("volume", "mount"),
            ("volume", "unmount"),
            ("volume", "destroy"),
        ] {
            let event = t.events.get(&(kind.to_string(), action.to_string()));
            assert!(event.is_some(), "no captured {kind} {action} event");
        }
    }
}
