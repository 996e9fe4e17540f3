//! The JSON answers, rendered from the captured templates (`fixtures`)
//! with an engine's own values written over: every field a real engine
//! sends is there, with the type it has there.

use serde_json::{json, Map, Value};

use crate::clock::{self, rfc3339_nano, rfc3339_seconds};
use crate::engine::{Engine, State};
use crate::fixtures::{templates, CAPTURED_ENGINE_ADDR};
use crate::ids::Id;
use crate::model::{Container, Network, RunState, Volume};

/// Writes `value` at `pointer` (`/a/b`) when its parent is an object.
/// The templates are real answers, so the parent is always there; a
/// broken fixture leaves the field out rather than panicking.
fn put(target: &mut Value, pointer: &str, value: impl Into<Value>) {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if let Some(Value::Object(map)) = target.pointer_mut(parent) {
        map.insert(key.to_string(), value.into());
    }
}

fn labels_object(labels: &[(Box<str>, Box<str>)]) -> Value {
    Value::Object(labels.iter().map(|(k, v)| (k.to_string(), Value::from(&**v))).collect())
}

/// `null` for no labels, as dockerd writes a nil map.
fn labels_or_null(labels: &[(Box<str>, Box<str>)]) -> Value {
    if labels.is_empty() {
        Value::Null
    } else {
        labels_object(labels)
    }
}

/// The fields of `overlay` (a JSON object, as the create gave it) that
/// the template knows, or that are in `optional`, written over `base`:
/// dockerd decodes a create into its own structs, so fields it does not
/// know never show, and its `omitempty` ones (`optional`, absent from
/// the template) only when given.
fn overlay(base: &mut Value, overlay: Option<&str>, except: &[&str], optional: &[&str]) {
    let Some(Ok(Value::Object(given))) = overlay.map(serde_json::from_str::<Value>) else { return };
    let Value::Object(base) = base else { return };
    for (key, value) in given {
        let known = base.contains_key(&key) || (optional.contains(&key.as_str()) && !value.is_null());
        if known && !except.contains(&key.as_str()) {
            base.insert(key, value);
        }
    }
}

/// dockerd's `HostConfig` fields that only show when set.
const OPTIONAL_HOST_CONFIG: [&str; 2] = ["Init", "Annotations"];
/// dockerd's `Config` fields that only show when set.
const OPTIONAL_CONFIG: [&str; 8] = [
    "ExposedPorts",
    "Healthcheck",
    "StopSignal",
    "StopTimeout",
    "Shell",
    "ArgsEscaped",
    "NetworkDisabled",
    "MacAddress",
];

pub fn version() -> Value {
    templates().version.clone()
}

pub fn info(engine: &Engine, state: &mut State) -> Value {
    let mut info = templates().info.clone();
    let count = |wanted: &[RunState]| state.containers.iter().filter(|c| wanted.contains(&c.state)).count();
    let shared = &engine.shared;
    put(&mut info, "/ID", engine.id.as_str());
    put(&mut info, "/Name", engine.name.as_str());
    put(&mut info, "/Containers", state.containers.len());
    put(&mut info, "/ContainersRunning", count(&[RunState::Running]));
    put(&mut info, "/ContainersPaused", count(&[RunState::Paused]));
    put(&mut info, "/ContainersStopped", count(&[RunState::Created, RunState::Exited]));
    put(&mut info, "/Images", shared.images.len());
    put(&mut info, "/NCPU", shared.ncpu);
    put(&mut info, "/MemTotal", shared.mem_total);
    put(&mut info, "/Labels", shared.labels.clone());
    put(&mut info, "/SystemTime", rfc3339_nano(clock::now_nanos()));
    put(&mut info, "/NEventsListener", state.events.listeners());
    let addr = engine.addr.to_string();
    if let Some(Value::Array(warnings)) = info.get_mut("Warnings") {
        for warning in warnings.iter_mut() {
            if let Some(text) = warning.as_str() {
                *warning = Value::String(text.replace(CAPTURED_ENGINE_ADDR, &addr));
            }
        }
    }
    info
}

/// `docker ps`'s status: `Created`, `Up 5 minutes`, `Up 5 minutes
/// (Paused)`, `Exited (0) 2 hours ago`.
fn status(c: &Container, now: i64) -> String {
    match c.state {
        RunState::Created => "Created".to_string(),
        RunState::Running => format!("Up {}", clock::human_duration(now - c.started)),
        RunState::Paused => format!("Up {} (Paused)", clock::human_duration(now - c.started)),
        RunState::Exited => format!("Exited ({}) {} ago", c.exit_code, clock::human_duration(now - c.finished)),
    }
}

/// The endpoint of `c` on `net` as a list entry or an inspect shows it
/// (`template`): addresses while up, the network's ID once it ever ran.
fn endpoint(mut template: Value, c: &Container, net: &Network, host: u16) -> Value {
    let up = c.state.is_up();
    let addressed = up && net.subnet != 0;
    let endpoint_id = if up { Id::derived(&[c.id.bytes(), net.id.bytes()]).hex() } else { String::new() };
    put(&mut template, "/NetworkID", if c.ever_started { net.id.hex() } else { String::new() });
    put(&mut template, "/EndpointID", endpoint_id);
    put(&mut template, "/Gateway", if addressed { net.gateway() } else { String::new() });
    put(&mut template, "/IPAddress", if addressed { net.address(host) } else { String::new() });
    put(&mut template, "/IPPrefixLen", if addressed { 16 } else { 0 });
    put(&mut template, "/MacAddress", if addressed { net.mac(host) } else { String::new() });
    template
}

/// The container's networks by name, each from the bridge's template or
/// a user network's (they differ: `IPAMConfig`, `Aliases`, `DriverOpts`).
fn endpoints(state: &State, c: &Container, bridge: &Value, user: &Value, aliases: bool) -> Value {
    let mut networks = Map::new();
    for attachment in &c.networks {
        let Some(net) = state.network(&attachment.network) else { continue };
        let template = if net.builtin { bridge } else { user };
        let mut entry = endpoint(template.clone(), c, net, attachment.host);
        if aliases && !net.builtin {
            put(&mut entry, "/Aliases", vec![c.id.short()]);
        }
        networks.insert(net.name.to_string(), entry);
    }
    Value::Object(networks)
}

/// A `/containers/json` entry.
pub fn summary(state: &State, c: &Container, now: i64) -> Value {
    let t = templates();
    let mut entry = t.summary.clone();
    let spec = &c.spec;
    put(&mut entry, "/Id", c.id.hex());
    put(&mut entry, "/Names", vec![format!("/{}", c.name)]);
    put(&mut entry, "/Image", &*spec.image);
    put(&mut entry, "/ImageID", &*spec.image_id);
    put(&mut entry, "/Command", c.command_line());
    put(&mut entry, "/Created", clock::seconds(c.created));
    let mut ports = Vec::new();
    if c.state.is_up() {
        for port in spec.ports.iter() {
            let Some(public) = c.public_port(port) else {
                ports.push(json!({"PrivatePort": port.private, "Type": &*port.protocol}));
                continue;
            };
            // dockerd publishes on IPv4 and IPv6 both.
            for ip in ["0.0.0.0", "::"] {
                let mut p = t.summary_port.clone();
                put(&mut p, "/IP", ip);
                put(&mut p, "/PrivatePort", port.private);
                put(&mut p, "/PublicPort", public);
                put(&mut p, "/Type", &*port.protocol);
                ports.push(p);
            }
        }
    }
    put(&mut entry, "/Ports", ports);
    put(&mut entry, "/Labels", labels_object(&spec.labels));
    put(&mut entry, "/State", c.state.as_str());
    put(&mut entry, "/Status", status(c, now));
    put(&mut entry, "/HostConfig/NetworkMode", &*spec.network_mode);
    put(
        &mut entry,
        "/NetworkSettings/Networks",
        endpoints(state, c, &t.summary_bridge, &t.summary_user_network, false),
    );
    let mounts: Vec<Value> = spec.mounts.iter().map(|m| mount(t.summary_mount.clone(), state, m)).collect();
    put(&mut entry, "/Mounts", mounts);
    entry
}

fn mount(mut template: Value, state: &State, m: &crate::model::MountSpec) -> Value {
    let driver = state.volume(&m.volume).map(|v| v.driver.to_string()).unwrap_or_else(|| "local".into());
    put(&mut template, "/Name", &*m.volume);
    put(&mut template, "/Source", format!("/var/lib/docker/volumes/{}/_data", m.volume));
    put(&mut template, "/Destination", &*m.destination);
    put(&mut template, "/Driver", driver);
    put(&mut template, "/RW", m.read_write);
    template
}

/// `GET /containers/{id}/json`.
pub fn inspect(state: &State, c: &Container) -> Value {
    let t = templates();
    let spec = &c.spec;
    let mut v = match c.state {
        RunState::Created => t.inspect_created.clone(),
        RunState::Exited => t.inspect_exited.clone(),
        RunState::Running | RunState::Paused => t.inspect_running.clone(),
    };
    let id = c.id.hex();
    put(&mut v, "/Id", id.as_str());
    put(&mut v, "/Created", rfc3339_nano(c.created));
    put(&mut v, "/Path", spec.command.first().map(|p| p.to_string()).unwrap_or_default());
    put(&mut v, "/Args", spec.command.iter().skip(1).map(|a| a.to_string()).collect::<Vec<_>>());
    put(&mut v, "/State/Status", c.state.as_str());
    put(&mut v, "/State/Running", c.state.is_up());
    put(&mut v, "/State/Paused", c.state == RunState::Paused);
    put(&mut v, "/State/Pid", c.pid);
    put(&mut v, "/State/ExitCode", c.exit_code);
    put(&mut v, "/State/StartedAt", rfc3339_nano(if c.ever_started { c.started } else { 0 }));
    put(&mut v, "/State/FinishedAt", rfc3339_nano(c.finished));
    put(&mut v, "/Image", &*spec.image_id);
    // A container that never ran has none of its files yet: empty, as dockerd's.
    for (field, file) in [("ResolvConfPath", "resolv.conf"), ("HostnamePath", "hostname"), ("HostsPath", "hosts")] {
        if v[field].as_str().is_some_and(|p| !p.is_empty()) {
            put(&mut v, &format!("/{field}"), format!("/var/lib/docker/containers/{id}/{file}"));
        }
    }
    put(&mut v, "/LogPath", format!("/var/lib/docker/containers/{id}/{id}-json.log"));
    put(&mut v, "/Name", format!("/{}", c.name));
    put(&mut v, "/RestartCount", c.restart_count);

    // A container created with no options is the exited fixture's; what
    // the create gave is laid over that.
    let mut host_config = t.inspect_exited["HostConfig"].clone();
    // The daemon sets the masked and read-only paths itself.
    let daemon_set = ["MaskedPaths", "ReadonlyPaths"];
    overlay(&mut host_config, spec.host_config.as_deref(), &daemon_set, &OPTIONAL_HOST_CONFIG);
    put(&mut host_config, "/NetworkMode", &*spec.network_mode);
    // The CLI's "unset" values, which dockerd keeps as nil.
    if host_config["MemorySwappiness"].as_i64().is_some_and(|s| s < 0) {
        put(&mut host_config, "/MemorySwappiness", Value::Null);
    }
    if host_config["PidsLimit"].as_i64().is_some_and(|l| l <= 0) {
        put(&mut host_config, "/PidsLimit", Value::Null);
    }
    put(&mut v, "/HostConfig", host_config);

    let mut config = t.inspect_exited["Config"].clone();
    overlay(&mut config, spec.config.as_deref(), &["Hostname", "Image", "Labels", "ExposedPorts"], &OPTIONAL_CONFIG);
    if config["Volumes"].as_object().is_some_and(|volumes| volumes.is_empty()) {
        put(&mut config, "/Volumes", Value::Null);
    }
    put(&mut config, "/Hostname", c.id.short());
    put(&mut config, "/Image", &*spec.image);
    put(&mut config, "/Labels", labels_object(&spec.labels));
    if spec.config.is_none() || config["Cmd"].is_null() {
        put(&mut config, "/Cmd", spec.command.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    }
    let exposed: Map<String, Value> =
        spec.ports.iter().map(|p| (format!("{}/{}", p.private, p.protocol), json!({}))).collect();
    if let Value::Object(config) = &mut config {
        // `omitempty` in dockerd's struct: no key at all without ports.
        if exposed.is_empty() {
            config.remove("ExposedPorts");
        } else {
            config.insert("ExposedPorts".into(), Value::Object(exposed));
        }
    }
    put(&mut v, "/Config", config);

    let mounts: Vec<Value> = spec.mounts.iter().map(|m| mount(t.inspect_mount.clone(), state, m)).collect();
    put(&mut v, "/Mounts", mounts);
    network_settings(&mut v, state, c);
    v
}

/// An inspect's `NetworkSettings`: the sandbox once it ran, ports and
/// the default bridge's addresses while up.
fn network_settings(v: &mut Value, state: &State, c: &Container) {
    let t = templates();
    let sandbox = Id::derived(&[c.id.bytes(), b"sandbox"]);
    let ran = c.ever_started;
    put(v, "/NetworkSettings/SandboxID", if ran { sandbox.hex() } else { String::new() });
    put(
        v,
        "/NetworkSettings/SandboxKey",
        if ran { format!("/var/run/docker/netns/{}", sandbox.short()) } else { String::new() },
    );
    let mut ports = Map::new();
    if c.state.is_up() {
        for port in c.spec.ports.iter() {
            let key = format!("{}/{}", port.private, port.protocol);
            let bindings = match c.public_port(port) {
                Some(public) => json!([
                    {"HostIp": "0.0.0.0", "HostPort": public.to_string()},
                    {"HostIp": "::", "HostPort": public.to_string()},
                ]),
                None => Value::Null,
            };
            ports.insert(key, bindings);
        }
    }
    put(v, "/NetworkSettings/Ports", Value::Object(ports));
    let on_bridge = c
        .networks
        .iter()
        .find_map(|a| state.network(&a.network).filter(|n| n.builtin && &*n.name == "bridge").map(|n| (n, a.host)));
    let up = c.state.is_up();
    let (endpoint_id, gateway, address, prefix, mac) = match on_bridge {
        Some((net, host)) if up => {
            (Id::derived(&[c.id.bytes(), net.id.bytes()]).hex(), net.gateway(), net.address(host), 16, net.mac(host))
        }
        _ => (String::new(), String::new(), String::new(), 0, String::new()),
    };
    put(v, "/NetworkSettings/EndpointID", endpoint_id);
    put(v, "/NetworkSettings/Gateway", gateway);
    put(v, "/NetworkSettings/IPAddress", address);
    put(v, "/NetworkSettings/IPPrefixLen", prefix);
    put(v, "/NetworkSettings/MacAddress", mac);
    put(v, "/NetworkSettings/Networks", endpoints(state, c, &t.inspect_bridge, &t.inspect_user_network, true));
}

/// `GET /images/json`.
pub fn images(engine: &Engine) -> Value {
    let t = templates();
    let images: Vec<Value> = engine
        .shared
        .images
        .iter()
        .map(|image| {
            let mut entry = t.image.clone();
            put(&mut entry, "/Id", &*image.id);
            put(&mut entry, "/RepoTags", image.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>());
            put(&mut entry, "/Created", clock::seconds(image.created));
            put(&mut entry, "/Size", image.size);
            put(&mut entry, "/VirtualSize", image.size);
            entry
        })
        .collect();
    Value::Array(images)
}

/// A `/networks` entry; with `containers`, the endpoints of the
/// containers up on it (the inspect's form; the list leaves them out).
pub fn network(state: &State, net: &Network, containers: bool) -> Value {
    let t = templates();
    let template = match (net.builtin, &*net.name) {
        (true, "bridge") => &t.bridge,
        (true, "host") => &t.host,
        (true, _) => &t.none,
        (false, _) => &t.user_network,
    };
    let mut v = template.clone();
    put(&mut v, "/Name", &*net.name);
    put(&mut v, "/Id", net.id.hex());
    put(&mut v, "/Created", rfc3339_nano(net.created));
    if !net.builtin {
        put(&mut v, "/Driver", &*net.driver);
        put(&mut v, "/Internal", net.internal);
        put(&mut v, "/Attachable", net.attachable);
        put(&mut v, "/Labels", labels_object(&net.labels));
        put(&mut v, "/Options", labels_object(&net.options));
        put(
            &mut v,
            "/IPAM/Config",
            json!([{"Subnet": format!("172.{}.0.0/16", net.subnet), "Gateway": net.gateway()}]),
        );
    }
    let mut endpoints = Map::new();
    if containers {
        for c in state.containers.iter().filter(|c| c.state.is_up()) {
            for a in c.networks.iter().filter(|a| a.network == net.id) {
                let address = if net.subnet == 0 { String::new() } else { format!("{}/16", net.address(a.host)) };
                let mac = if net.subnet == 0 { String::new() } else { net.mac(a.host) };
                endpoints.insert(
                    c.id.hex(),
                    json!({
                        "Name": &*c.name,
                        "EndpointID": Id::derived(&[c.id.bytes(), net.id.bytes()]).hex(),
                        "MacAddress": mac,
                        "IPv4Address": address,
                        "IPv6Address": "",
                    }),
                );
            }
        }
    }
    put(&mut v, "/Containers", Value::Object(endpoints));
    v
}

/// A `/volumes` entry.
pub fn volume(v: &Volume) -> Value {
    let mut entry = templates().volume.clone();
    put(&mut entry, "/CreatedAt", rfc3339_seconds(v.created));
    put(&mut entry, "/Driver", &*v.driver);
    put(&mut entry, "/Labels", labels_or_null(&v.labels));
    put(&mut entry, "/Mountpoint", format!("/var/lib/docker/volumes/{}/_data", v.name));
    put(&mut entry, "/Name", &*v.name);
    entry
}

/// `GET /volumes`: the entries in the captured answer's wrapper.
pub fn volumes<'a>(volumes: impl Iterator<Item = &'a Volume>) -> Value {
    let mut answer = templates().volumes.clone();
    put(&mut answer, "/Volumes", volumes.map(volume).collect::<Vec<_>>());
    answer
}
