//! What a hollow engine stores: compact records of its containers,
//! networks, volumes and images. JSON is rendered from these on demand
//! (`render`), never stored, so 30 containers cost a few KB per engine.

use std::sync::Arc;

use crate::ids::Id;

/// A container's run state, as `State.Status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Paused,
    Exited,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Created => "created",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Exited => "exited",
        }
    }

    /// Running or paused: the container has a process, an IP and its ports.
    pub fn is_up(self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

/// A port of the container: exposed, and published when `host_port` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub private: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: Box<str>,
    /// The published host port; `None` for a port only exposed, 0 for
    /// one the engine picks (see [`Container::public_port`]).
    pub host_port: Option<u16>,
}

/// A named volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub volume: Arc<str>,
    pub destination: Box<str>,
    pub read_write: bool,
}

/// What a container was created with; never changes, and is shared (by
/// `Arc`) between the container and its events, and between all the
/// pre-populated containers of a fleet.
#[derive(Debug)]
pub struct Spec {
    /// The image as the create named it (`busybox`, `busybox:latest`).
    pub image: Arc<str>,
    /// `sha256:…` of that image.
    pub image_id: Arc<str>,
    /// The process: entrypoint then command (`Path` then `Args`); never empty.
    pub command: Box<[Box<str>]>,
    /// Container labels, sorted by key, keys unique.
    pub labels: Box<[(Box<str>, Box<str>)]>,
    pub ports: Box<[PortSpec]>,
    pub mounts: Box<[MountSpec]>,
    /// `HostConfig.NetworkMode` as given (`default` when none was).
    pub network_mode: Box<str>,
    /// The create body's own `Config` fields (a JSON object, compact), laid
    /// over the template's `Config` when inspected; `None` for the
    /// pre-populated containers, which show the template's defaults.
    pub config: Option<Box<str>>,
    /// The create body's `HostConfig` (a JSON object, compact), laid over
    /// the template's the same way.
    pub host_config: Option<Box<str>>,
}

impl Spec {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }
}

/// A container's endpoint on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The network's ID (the network itself may be gone by now).
    pub network: Id,
    /// The host part of its IPv4 address in the network's /16, while the
    /// container is up; 0 when it is not.
    pub host: u16,
}

/// One container.
#[derive(Debug)]
pub struct Container {
    pub id: Id,
    /// Without the leading `/`; unique on the engine.
    pub name: Arc<str>,
    pub spec: Arc<Spec>,
    pub state: RunState,
    /// Nanoseconds since the epoch; `started` and `finished` are 0 until
    /// the container first started or stopped.
    pub created: i64,
    pub started: i64,
    pub finished: i64,
    /// The last exit code (0 until the container first exited).
    pub exit_code: i32,
    /// The process ID while up, 0 otherwise.
    pub pid: u32,
    pub restart_count: u32,
    /// Networks in the order they were joined (the first is where
    /// `NetworkMode` put it).
    pub networks: Vec<Attachment>,
    /// False until the first start: a created container's endpoints show
    /// no `NetworkID` yet, as dockerd's do.
    pub ever_started: bool,
}

impl Container {
    /// `Path` then `Args` joined, as `/containers/json`'s `Command`.
    pub fn command_line(&self) -> String {
        self.spec.command.join(" ")
    }

    /// The host port `port` is published on: the one asked for, or for 0
    /// one from dockerd's ephemeral range (32768-60999), derived from the
    /// container so it is stable without being stored.
    pub fn public_port(&self, port: &PortSpec) -> Option<u16> {
        match port.host_port? {
            0 => {
                let seed = Id::derived(&[self.id.bytes(), &port.private.to_le_bytes(), port.protocol.as_bytes()]);
                let spread = u16::from_le_bytes([seed.bytes()[0], seed.bytes()[1]]) % (60_999 - 32_768 + 1);
                Some(32_768 + spread)
            }
            given => Some(given),
        }
    }
}

/// One network.
#[derive(Debug)]
pub struct Network {
    pub id: Id,
    pub name: Arc<str>,
    /// `bridge`, `host`, `null`, or what the create asked for.
    pub driver: Arc<str>,
    pub created: i64,
    /// `bridge`, `host` and `none` come with the engine and cannot be removed.
    pub builtin: bool,
    /// The second octet of its subnet `172.N.0.0/16` (0: no subnet, as
    /// `host` and `none`).
    pub subnet: u8,
    /// The next host number to hand out; addresses are never reused, as
    /// nothing reads them but the inspect.
    pub next_host: u16,
    pub labels: Box<[(Box<str>, Box<str>)]>,
    pub options: Box<[(Box<str>, Box<str>)]>,
    pub internal: bool,
    pub attachable: bool,
}

impl Network {
    /// `a.b.c.d` of host number `host` in this network.
    pub fn address(&self, host: u16) -> String {
        format!("172.{}.{}.{}", self.subnet, host >> 8, host & 0xff)
    }

    /// The gateway address (host 1), empty without a subnet.
    pub fn gateway(&self) -> String {
        if self.subnet == 0 {
            String::new()
        } else {
            self.address(1)
        }
    }

    /// A MAC address derived from an IP, as Docker's bridge driver does.
    pub fn mac(&self, host: u16) -> String {
        format!("02:42:ac:{:02x}:{:02x}:{:02x}", self.subnet, host >> 8, host & 0xff)
    }

    /// Takes the next free host number (2 and up: 1 is the gateway).
    pub fn allocate(&mut self) -> u16 {
        let host = self.next_host.max(2);
        // Wrapping past 65534 reuses addresses: harmless, nothing routes to them.
        self.next_host = if host >= 65_534 { 2 } else { host + 1 };
        host
    }
}

/// One volume.
#[derive(Debug)]
pub struct Volume {
    pub name: Arc<str>,
    pub driver: Arc<str>,
    pub created: i64,
    pub labels: Box<[(Box<str>, Box<str>)]>,
}

/// One image; the same set on every engine of a fleet.
#[derive(Debug)]
pub struct Image {
    /// `sha256:…`.
    pub id: Arc<str>,
    /// `name:tag`, e.g. `busybox:latest`.
    pub tags: Box<[Arc<str>]>,
    pub created: i64,
    pub size: i64,
    /// The command a container runs when its create gives none.
    pub default_command: Box<[Box<str>]>,
}

impl Image {
    /// Whether `reference` (normalized, see [`normalize_reference`]) names this image.
    pub fn matches(&self, reference: &str) -> bool {
        let id = self.id.trim_start_matches("sha256:");
        let hex = reference.trim_start_matches("sha256:");
        self.tags.iter().any(|t| &**t == reference)
            || (hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && id.starts_with(hex))
    }
}

/// An image reference as dockerd looks it up: without the default
/// registry's prefixes, with `:latest` when it names no tag or digest.
pub fn normalize_reference(reference: &str) -> String {
    let mut name = reference;
    for prefix in ["docker.io/library/", "docker.io/", "index.docker.io/library/", "library/"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            name = rest;
            break;
        }
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    let is_id = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
    if name.starts_with("sha256:") || is_id || last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// Labels from `key=value` pairs or a JSON object, sorted by key.
pub fn sorted_labels<K: Into<Box<str>>, V: Into<Box<str>>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Box<[(Box<str>, Box<str>)]> {
    let mut labels: Vec<(Box<str>, Box<str>)> = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    labels.dedup_by(|later, earlier| later.0 == earlier.0);
    labels.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_like_dockerds() {
        assert_eq!(normalize_reference("busybox"), "busybox:latest");
        assert_eq!(normalize_reference("docker.io/library/busybox"), "busybox:latest");
        assert_eq!(normalize_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(normalize_reference("registry:5000/app"), "registry:5000/app:latest");
        assert_eq!(normalize_reference("app@sha256:abc"), "app@sha256:abc");
    }

    #[test]
    fn addresses_come_from_the_subnet() {
        let mut net = Network {
            id: Id::derived(&[b"n"]),
            name: "bridge".into(),
            driver: "bridge".into(),
            created: 0,
            builtin: true,
            subnet: 17,
            next_host: 0,
            labels: Box::new([]),
            options: Box::new([]),
            internal: false,
            attachable: false,
        };
        let host = net.allocate();
        assert_eq!(net.address(host), "172.17.0.2");
        assert_eq!(net.mac(host), "02:42:ac:11:00:02");
        assert_eq!(net.gateway(), "172.17.0.1");
        assert_eq!(net.allocate(), 3);
    }

    #[test]
    fn labels_are_sorted_and_unique() {
        let labels = sorted_labels([("b", "1"), ("a", "2"), ("b", "3")]);
        assert_eq!(labels.iter().map(|(k, _)| &**k).collect::<Vec<_>>(), ["a", "b"]);
    }
}
