//! Strategies for property tests of the code that reads JSON from outside:
//! values with the key names the readers look at, at any depth, holding
//! values of any type (nulls, huge and negative numbers, odd strings), so
//! that most cases get past the first lookup.

use proptest::prelude::*;
use serde_json::Value;

/// Any scalar, biased toward the awkward ones.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(i64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(u64::MAX)),
        any::<f64>().prop_map(Value::from),
        Just(Value::from("0.0.0.0")),
        "[a-z0-9/:=.-]{0,8}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

/// JSON values whose object keys come from `keys`, up to four levels deep.
pub fn json_with_keys(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop::sample::select(keys).prop_map(str::to_string);
    scalar().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Key names of the engine answers the manager reads (`/info`, `/version`,
/// `/containers/json`, inspect, `/images/json`, `/networks`, `/volumes`,
/// `/system/df`, `/events`).
pub const ENGINE_KEYS: &[&str] = &[
    "ID",
    "Id",
    "Name",
    "Names",
    "NCPU",
    "MemTotal",
    "Labels",
    "KernelVersion",
    "OperatingSystem",
    "OSType",
    "Driver",
    "ServerVersion",
    "SystemStatus",
    "ApiVersion",
    "MinAPIVersion",
    "Image",
    "ImageID",
    "State",
    "Status",
    "ExitCode",
    "Health",
    "Created",
    "Config",
    "HostConfig",
    "NetworkSettings",
    "Networks",
    "NetworkID",
    "Aliases",
    "Links",
    "Ports",
    "PortBindings",
    "ExposedPorts",
    "PrivatePort",
    "PublicPort",
    "Type",
    "IP",
    "HostIp",
    "HostPort",
    "Mounts",
    "Destination",
    "CpuShares",
    "NanoCpus",
    "Memory",
    "RepoTags",
    "RepoDigests",
    "Scope",
    "Options",
    "Internal",
    "Volumes",
    "Images",
    "Containers",
    "BuildCache",
    "LayersSize",
    "Action",
    "status",
    "id",
    "Actor",
    "Attributes",
    "container",
    "time",
    "timeNano",
    "message",
    "node",
    "scope",
    "com.docker.swarm.id",
    "com.docker.swarm.reschedule-policies",
    "80/tcp",
];

/// JSON shaped like an engine's answers.
pub fn engine_json() -> impl Strategy<Value = Value> {
    json_with_keys(ENGINE_KEYS)
}
