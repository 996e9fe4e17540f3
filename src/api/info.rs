//! Cluster-level answers: `/_ping`, `/version`, `/info`, `/system/df`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::OnceLock;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use swarm_proxy::{full, ProxyBody};

use super::forward::healthy;
use super::reply::{json_bytes, json_response};
use super::{ApiError, Ctx};
use crate::cluster::compare_versions;
use crate::cluster::engine::{Health, UNKNOWN_NAME};
use crate::observe::Observed;
use crate::services::plan::TASK_HISTORY_LIMIT;
use crate::services::{new_id, Timestamp};

const SWARM_VERSION: &str = concat!("swarm/", env!("CARGO_PKG_VERSION"));

/// `GET|HEAD /_ping`: carries `API-Version` so the CLI negotiates down to
/// what every engine speaks.
pub fn ping(ctx: &Ctx<'_>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    let body = if req.method() == Method::HEAD { full("") } else { full("OK") };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ctx.cluster().api_version()) {
        headers.insert("api-version", v);
    }
    headers.insert("docker-experimental", HeaderValue::from_static("false"));
    headers.insert("ostype", HeaderValue::from_static("linux"));
    // The CLI enables `docker service`, `node` and `stack` on a swarm manager.
    headers.insert("swarm", HeaderValue::from_static("active/manager"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(resp)
}

/// `GET /version`.
pub fn version(ctx: &Ctx<'_>) -> Result<Response<ProxyBody>, ApiError> {
    let api_version = ctx.cluster().api_version();
    let min_version = ctx
        .cluster()
        .healthy_engines()
        .iter()
        .filter_map(|e| e.info().map(|i| i.min_api_version.clone()))
        .filter(|v| !v.is_empty())
        .max_by(|a, b| compare_versions(a, b))
        .unwrap_or_else(|| "1.24".to_string());
    let arch = if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "swarm-rs"},
            "Components": [{
                "Name": "Swarm",
                "Version": env!("CARGO_PKG_VERSION"),
                "Details": {"ApiVersion": api_version, "MinAPIVersion": min_version, "Os": "linux", "Arch": arch},
            }],
            "Version": SWARM_VERSION,
            "ApiVersion": api_version,
            "MinAPIVersion": min_version,
            "GitCommit": "",
            "GoVersion": "rust",
            "Os": "linux",
            "Arch": arch,
            "KernelVersion": "",
            "BuildTime": "",
        }),
    ))
}

/// How stale a replica's node settings may be in its `docker info`.
const REPLICA_NODES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /info`: totals over the cluster, and per node the status lines the
/// CLI prints from `SystemStatus`.
pub fn info(ctx: &Ctx<'_>, req: &Request<ProxyBody>) -> Result<Response<ProxyBody>, ApiError> {
    if ctx.api.leadership.as_ref().is_some_and(|l| !l.is_primary()) {
        // A replica's copy of the node settings is the primary's business:
        // read it again in the background when older than this, so a drain
        // shows here too without `docker info` waiting on the store. A
        // store that cannot be read leaves the last copy in place.
        let cluster = ctx.cluster().clone();
        tokio::spawn(async move {
            if let Err(e) = cluster.state.refresh_nodes(REPLICA_NODES_MAX_AGE).await {
                Observed::StateReloadFailed { error: &e.to_string() }.emit();
            }
        });
    }
    let engines = ctx.cluster().engines();
    let policy = &ctx.cluster().policy;
    // The keys of the node lines are the same for every node.
    let mut status: Vec<[Cow<'static, str>; 2]> =
        ctx.api.role_status().into_iter().map(|[k, v]| [Cow::Owned(k), Cow::Owned(v)]).collect();
    status.extend([
        ["Strategy".into(), policy.strategy_name().into()],
        ["Filters".into(), policy.filter_names().into()],
        ["Nodes".into(), engines.len().to_string().into()],
    ]);
    let (mut containers, mut running, mut paused, mut stopped) = (0, 0, 0, 0);
    let (mut cpus, mut memory) = (0i64, 0i64);
    // Each engine's image list, held so the IDs are counted without copies.
    let mut image_lists = Vec::with_capacity(engines.len());
    for engine in &engines {
        let usage = engine.container_usage();
        let (total, r, p, s) = (usage.total, usage.running, usage.paused, usage.stopped());
        let (reserved_cpus, reserved_memory) = (usage.reserved_cpus, usage.reserved_memory);
        let state = engine.status();
        let info = state.info.clone();
        if state.health != Health::Pending {
            containers += total;
            running += r;
            paused += p;
            stopped += s;
            image_lists.push(engine.images());
        }
        let name = info.as_ref().map_or(UNKNOWN_NAME, |i| i.name.as_str());
        let (total_cpus, total_memory) = info.as_ref().map(|i| (i.cpus, i.memory)).unwrap_or((0, 0));
        if state.health == Health::Healthy {
            cpus += total_cpus;
            memory += total_memory;
        }
        let labels = info
            .as_ref()
            .map(|i| i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let updated = time::OffsetDateTime::from(state.updated_at)
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        status.push([format!(" {name}").into(), engine.addr.clone().into()]);
        let mut node = |k: &'static str, v: String| status.push([k.into(), v.into()]);
        node("  └ ID", info.as_ref().map(|i| i.id.clone()).unwrap_or_default());
        node("  └ Status", state.health.as_str().to_string());
        node("  └ Containers", format!("{total} ({r} Running, {p} Paused, {s} Stopped)"));
        node("  └ Reserved CPUs", format!("{reserved_cpus} / {total_cpus}"));
        node(
            "  └ Reserved Memory",
            format!("{} / {}", bytes_size(reserved_memory as f64), bytes_size(total_memory as f64)),
        );
        node("  └ Labels", labels);
        node("  └ Error", state.last_error.clone().unwrap_or_else(|| "(none)".into()));
        node("  └ UpdatedAt", updated);
        node("  └ ServerVersion", info.as_ref().map(|i| i.server_version.clone()).unwrap_or_default());
        // Beyond the original (last, so its lines keep their places).
        if let Some(info) = &info {
            let availability = ctx.cluster().state.node(&info.node_id()).doc.availability;
            node("  └ Availability", capitalized(availability.as_str()));
        }
    }
    let images: HashSet<&str> = image_lists.iter().flat_map(|list| list.iter().map(|i| i.id.as_str())).collect();
    let overcommit = 1.0 + policy.overcommit();
    let hostname =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let arch = std::env::consts::ARCH;
    // A thousand nodes make `SystemStatus` tens of thousands of strings:
    // it is serialized as it is and added to the encoded rest.
    let rest = json!({
        "ID": "",
        "Containers": containers,
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images.len(),
        "Driver": "",
        "DriverStatus": null,

        "Plugins": {"Volume": [], "Network": [], "Authorization": null, "Log": []},
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "IPv4Forwarding": true,
        "Debug": false,
        "NFd": 0,
        "NGoroutines": 0,
        "SystemTime": "",
        "LoggingDriver": "",
        "NEventsListener": 0,
        "KernelVersion": "",
        "OperatingSystem": "linux",
        "OSType": "linux",
        "Architecture": arch,
        "IndexServerAddress": "",
        "NCPU": (cpus as f64 * overcommit) as i64,
        "MemTotal": (memory as f64 * overcommit) as i64,
        "DockerRootDir": "",
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": SWARM_VERSION,
        "Swarm": swarm_section(engines.len(), req),
        "LiveRestoreEnabled": false,
        "SecurityOptions": [],
    });
    let rest = serde_json::to_vec(&rest).unwrap_or_default();
    let status = serde_json::to_vec(&status).ok();
    let body = status
        .and_then(|status| super::containers::insert_field(&rest, "SystemStatus", &status))
        .unwrap_or_else(|| Bytes::from(rest));
    Ok(json_bytes(StatusCode::OK, body))
}

/// This manager's identity as a swarm mode manager: made once per process
/// (managers are not engines, so no node carries it).
struct ManagerIdentity {
    node_id: String,
    cluster_id: String,
    started: Timestamp,
}

fn identity() -> &'static ManagerIdentity {
    static IDENTITY: OnceLock<ManagerIdentity> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let mut rng = rand::thread_rng();
        ManagerIdentity { node_id: new_id(&mut rng), cluster_id: new_id(&mut rng), started: Timestamp::now() }
    })
}

/// `Info.Swarm`: an active manager, so the CLI offers `docker service` and
/// `docker stack deploy` (which checks `ControlAvailable`). With
/// `ControlAvailable` the CLI's `docker info` reads every field of
/// `Cluster.Spec`, so all are present, with swarm mode's defaults (the
/// task history limit is the planner's). `NodeAddr` is the address the
/// client reached this manager at.
fn swarm_section(engines: usize, req: &Request<ProxyBody>) -> Value {
    let id = identity();
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let addr = host.rsplit_once(':').map_or(host, |(ip, _)| ip).trim_start_matches('[').trim_end_matches(']');
    let addr = if addr.parse::<std::net::IpAddr>().is_ok() { addr } else { "" };
    let created = id.started.to_string();
    json!({
        "NodeID": id.node_id,
        "NodeAddr": addr,
        "LocalNodeState": "active",
        "ControlAvailable": true,
        "Error": "",
        "RemoteManagers": [{"NodeID": id.node_id, "Addr": host}],
        "Nodes": engines,
        "Managers": 1,
        "Cluster": {
            "ID": id.cluster_id,
            "Version": {"Index": 1},
            "CreatedAt": created,
            "UpdatedAt": created,
            "Spec": {
                "Name": "default",
                "Labels": {},
                "Orchestration": {"TaskHistoryRetentionLimit": TASK_HISTORY_LIMIT},
                "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0, "LogEntriesForSlowFollowers": 500,
                         "ElectionTick": 10, "HeartbeatTick": 1},
                "Dispatcher": {"HeartbeatPeriod": 5_000_000_000i64},
                "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000i64},
                "TaskDefaults": {},
                "EncryptionConfig": {"AutoLockManagers": false},
            },
            "TLSInfo": {},
            "RootRotationInProgress": false,
            "DataPathPort": 0,
            "SubnetSize": 24,
        },
    })
}

/// `drain` as `docker node ls` shows it: `Drain`.
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Sizes as Docker's `units.BytesSize` prints them: binary units, four
/// significant digits, no trailing zeros (`2.053 GiB`, `0 B`).
pub fn bytes_size(size: f64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = size;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{} {}", four_significant(size), UNITS[unit])
}

/// `%.4g` for values below 1024.
fn four_significant(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits_before = (v.abs().log10().floor() as i32 + 1).max(1);
    let decimals = (4 - digits_before).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `GET /system/df`: every engine's usage, merged; names carry the node.
pub async fn system_df(ctx: &Ctx<'_>) -> Result<Response<ProxyBody>, ApiError> {
    let engines = healthy(ctx.cluster())?;
    let path = ctx.path("/system/df", None);
    let answers = join_all(engines.iter().map(|e| e.get_json::<Value>(&path))).await;
    let mut named = Vec::with_capacity(answers.len());
    for (engine, answer) in engines.iter().zip(answers) {
        named.push((engine.name(), answer?));
    }
    Ok(json_response(StatusCode::OK, &merge_df(named)))
}

/// Merges the engines' `/system/df` answers, each with its node's name.
fn merge_df(answers: Vec<(String, Value)>) -> Value {
    let mut layers = 0i64;
    let (mut images, mut containers, mut volumes, mut cache) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    for (node, mut answer) in answers {
        // Engines' sizes may be any number: saturate rather than overflow.
        layers = layers.saturating_add(answer["LayersSize"].as_i64().unwrap_or(0));
        for image in take_array(&mut answer, "Images") {
            if seen.insert(image["Id"].as_str().unwrap_or_default().to_string()) {
                images.push(image);
            }
        }
        for mut c in take_array(&mut answer, "Containers") {
            if let Some(Value::Array(names)) = c.get_mut("Names") {
                for n in names.iter_mut() {
                    if let Some(s) = n.as_str() {
                        *n = Value::String(format!("/{node}{s}"));
                    }
                }
            }
            containers.push(c);
        }
        for mut v in take_array(&mut answer, "Volumes") {
            if let Some(name) = v["Name"].as_str() {
                v["Name"] = Value::String(format!("{node}/{name}"));
            }
            volumes.push(v);
        }
        cache.extend(take_array(&mut answer, "BuildCache"));
    }
    json!({"LayersSize": layers, "Images": images, "Containers": containers, "Volumes": volumes, "BuildCache": cache})
}

/// Takes the array at `key` out of `answer`; empty when `answer` is not an
/// object (indexing one mutably would panic) or holds no array there.
fn take_array(answer: &mut Value, key: &str) -> Vec<Value> {
    match answer.get_mut(key).map(Value::take) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_like_docker() {
        assert_eq!(bytes_size(0.0), "0 B");
        assert_eq!(bytes_size(2_204_000_000.0), "2.053 GiB");
        assert_eq!(bytes_size(1024.0), "1 KiB");
        assert_eq!(bytes_size(1536.0), "1.5 KiB");
        assert_eq!(bytes_size(1023.0), "1023 B");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::proptest_json::engine_json;
    use proptest::prelude::*;

    proptest! {
        /// Any engines' `/system/df` answers merge into one.
        #[test]
        fn merging_any_df_answers(answers in prop::collection::vec(engine_json(), 0..4)) {
            let merged = merge_df(answers.into_iter().map(|a| ("node-01".to_string(), a)).collect());
            prop_assert!(merged["LayersSize"].is_i64());
        }
    }

    #[test]
    fn odd_df_answers_are_skipped() {
        let merged = merge_df(vec![
            ("n1".into(), json!([1, 2])),
            ("n2".into(), json!({"LayersSize": i64::MAX, "Volumes": [{"Name": "v"}, 3], "Images": "x"})),
            ("n3".into(), json!({"LayersSize": i64::MAX})),
        ]);
        assert_eq!(merged["LayersSize"], i64::MAX);
        assert_eq!(merged["Volumes"], json!([{"Name": "n2/v"}, 3]));
        assert_eq!(merged["Images"], json!([]));
    }
}
