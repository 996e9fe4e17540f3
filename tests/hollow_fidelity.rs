//! Fidelity of the hollow engine (`swarm-hollow`, the benches' fake
//! engines) to a real dockerd 20.10 (the shared testbed's node-01):
//!
//! * the same Docker CLI commands against each (network create, create,
//!   network connect, start, stop, create, rm, network rm, volume rm)
//!   give answers with the same field paths and types for everything the
//!   manager reads (info, version, inspects and list entries in each
//!   state, the manager's list filters, images, networks, volumes), and
//!   the same events in the same order, each with the same fields;
//! * a manager over each shows the same `docker info` (line by line, the
//!   Nodes section included) and the same `docker ps -a` columns.
//!
//! Names are unique (`hfid-<pid>-…`) and everything made is removed;
//! the hollow engine listens on a free loopback port. Needs root
//! (the testbed) and `sudo scripts/install-deps.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use swarm_hollow::{Fleet, FleetConfig};
use swarm_testkit::manager::Manager;
use swarm_testkit::process::temp_dir;
use swarm_testkit::testbed::Testbed;
use swarm_testkit::{http, DOCKER};

/// A hollow engine on a free loopback port, served by a runtime of its own
/// (the test itself is synchronous: it drives CLIs).
struct Hollow {
    /// Dropped first: its engine stops serving.
    fleet: Fleet,
    _runtime: tokio::runtime::Runtime,
    addr: String,
}

impl Hollow {
    /// Labelled as the shared testbed's node-01 (`storage=ssd`).
    fn start() -> Hollow {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
        let any_port = "127.0.0.1:0".parse().expect("an address");
        let config = FleetConfig { labels: vec![("storage".into(), "ssd".into())], ..FleetConfig::new(vec![any_port]) };
        let fleet = runtime.block_on(Fleet::start(config)).expect("a hollow engine");
        let addr = fleet.addrs()[0].to_string();
        Hollow { fleet, _runtime: runtime, addr }
    }
}

/// The Docker CLI straight at the engine at `addr` (no manager).
fn docker(addr: &str, config: &Path, args: &[&str]) -> String {
    let out = Command::new(DOCKER)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env("DOCKER_CONFIG", config)
        .arg("-H")
        .arg(format!("tcp://{addr}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker CLI runs");
    assert!(out.status.success(), "docker {args:?} at {addr}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn get(addr: &str, path: &str) -> Value {
    match http::get(addr, &format!("/v1.41{path}"), Duration::from_secs(10)) {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} at {addr}: {e}: {body}")),
        other => panic!("GET {path} at {addr}: {other:?}"),
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Maps whose keys are data that differs between the two engines for
/// reasons of their own (the testbed's registry address), not shape.
const DATA_KEYED: [&str; 1] = ["RegistryConfig.IndexConfigs"];

/// Every field path of `value` with the JSON type found there (`a.b:string`);
/// array elements are `a[]`, so a list contributes the union of its
/// elements' shapes.
fn field_paths(value: &Value) -> BTreeSet<String> {
    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
    fn walk(v: &Value, path: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (key, child) in map {
                    let key = if DATA_KEYED.contains(&path) { "*" } else { key.as_str() };
                    let child_path = if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
                    out.insert(format!("{child_path}:{}", kind(child)));
                    walk(child, &child_path, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    let item_path = format!("{path}[]");
                    out.insert(format!("{item_path}:{}", kind(item)));
                    walk(item, &item_path, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::from([format!(":{}", kind(value))]);
    walk(value, "", &mut out);
    out
}

/// Panics with both differences when `real` and `hollow` differ in shape.
fn assert_same_shape(what: &str, real: &Value, hollow: &Value) {
    let (real_paths, hollow_paths) = (field_paths(real), field_paths(hollow));
    let only_real: Vec<_> = real_paths.difference(&hollow_paths).collect();
    let only_hollow: Vec<_> = hollow_paths.difference(&real_paths).collect();
    assert!(
        only_real.is_empty() && only_hollow.is_empty(),
        "{what}: the shapes differ\n  only the real engine's: {only_real:?}\n  only the hollow engine's: {only_hollow:?}"
    );
}

/// What one engine answered to the sequence.
struct Record {
    /// Answers by name.
    answers: BTreeMap<&'static str, Value>,
    /// The events about the objects the sequence made, in order.
    events: Vec<Value>,
}

/// The same sequence on the engine at `addr`, as a user would run it.
fn exercise(addr: &str, tag: &str) -> Record {
    let config = temp_dir("hfid-cli-");
    let docker = |args: &[&str]| docker(addr, config.path(), args);
    let (net, vol, run, made) =
        (format!("{tag}-net"), format!("{tag}-vol"), format!("{tag}-run"), format!("{tag}-made"));
    let since = now_secs();
    let mut answers = BTreeMap::new();
    let net_id = docker(&["network", "create", &net]);
    let bind = format!("{vol}:/data");
    let run_id = docker(&[
        "create",
        "--name",
        &run,
        "--init",
        "-l",
        "app=fid",
        "-e",
        "MODE=test",
        "-p",
        "80",
        "-v",
        &bind,
        "busybox",
        "sleep",
        "300",
    ]);
    docker(&["network", "connect", &net, &run]);
    docker(&["start", &run]);
    let entry = |id: &str| {
        let listed = get(addr, "/containers/json?all=1");
        listed.as_array().and_then(|l| l.iter().find(|c| c["Id"] == id).cloned()).expect("listed")
    };
    answers.insert("inspect (running)", get(addr, &format!("/containers/{run_id}/json")));
    answers.insert("list entry (running)", entry(&run_id));
    // The filters the manager sends: by ID (refreshes), by label (a relayed create).
    let by_id = url_encode(&format!("{{\"id\":[\"{run_id}\"]}}"));
    answers.insert("list by id", get(addr, &format!("/containers/json?all=1&filters={by_id}")));
    let by_label = url_encode("{\"label\":[\"app=fid\"]}");
    answers.insert("list by label", get(addr, &format!("/containers/json?all=1&filters={by_label}")));
    docker(&["stop", &run]);
    answers.insert("inspect (exited)", get(addr, &format!("/containers/{run_id}/json")));
    answers.insert("list entry (exited)", entry(&run_id));
    let made_id = docker(&["create", "--name", &made, "busybox", "true"]);
    answers.insert("inspect (created)", get(addr, &format!("/containers/{made_id}/json")));
    answers.insert("list entry (created)", entry(&made_id));
    answers.insert("info", get(addr, "/info"));
    answers.insert("version", get(addr, "/version"));
    answers.insert("images", get(addr, "/images/json"));
    answers.insert("networks", get(addr, "/networks"));
    answers.insert("volumes", get(addr, "/volumes"));
    docker(&["rm", &run, &made]);
    docker(&["network", "rm", &net]);
    docker(&["volume", "rm", &vol]);
    // Now, to the nanosecond: the answer ends at once.
    let until =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()));
    let until = until.unwrap_or_default();
    let history = match http::get(addr, &format!("/v1.41/events?since={since}&until={until}"), Duration::from_secs(10))
    {
        Ok((200, body)) => body,
        other => panic!("events at {addr}: {other:?}"),
    };
    let ours = |e: &Value| {
        let actor = e["Actor"]["ID"].as_str().unwrap_or_default();
        let container = e["Actor"]["Attributes"]["container"].as_str().unwrap_or_default();
        [run_id.as_str(), made_id.as_str(), net_id.as_str(), vol.as_str()].contains(&actor)
            || [run_id.as_str(), made_id.as_str()].contains(&container)
    };
    let events = history.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(ours).collect();
    Record { answers, events }
}

/// `Type Action` of each event; a run of network events (a container
/// joining or leaving several networks) sorted, as dockerd walks them
/// in a Go map's random order.
fn event_sequence(events: &[Value]) -> Vec<String> {
    let mut sequence: Vec<(bool, String)> = events
        .iter()
        .map(|e| {
            let network = e["Type"] == "network";
            let name = e["Actor"]["Attributes"]["name"].as_str().unwrap_or_default();
            let label = format!("{} {}", e["Type"].as_str().unwrap_or("?"), e["Action"].as_str().unwrap_or("?"));
            (network, if network { format!("{label} ({})", name.rsplit('-').next().unwrap_or(name)) } else { label })
        })
        .collect();
    let mut start = 0;
    while start < sequence.len() {
        let end = (start..sequence.len()).find(|&i| !sequence[i].0).unwrap_or(sequence.len());
        sequence[start..end].sort();
        start = end.max(start + 1);
    }
    sequence.into_iter().map(|(_, label)| label).collect()
}

#[test]
fn the_same_calls_give_the_same_shapes_and_events() {
    let tb = Testbed::shared();
    let hollow = Hollow::start();
    let tag = format!("hfid-{}", std::process::id());
    let (real, fake) = std::thread::scope(|s| {
        let real = s.spawn(|| exercise(&tb.engine("node-01").addr, &tag));
        let fake = exercise(&hollow.addr, &tag);
        (real.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), fake)
    });

    for (what, real_answer) in &real.answers {
        let hollow_answer = &fake.answers[what];
        assert_same_shape(what, real_answer, hollow_answer);
        let (real_size, hollow_size) = (real_answer.to_string().len(), hollow_answer.to_string().len());
        eprintln!("{what}: {real_size} bytes from dockerd, {hollow_size} from the hollow engine");
    }
    for what in ["inspect (running)", "list entry (running)", "inspect (exited)", "inspect (created)"] {
        let (real_size, hollow_size) = (real.answers[what].to_string().len(), fake.answers[what].to_string().len());
        assert!(hollow_size.abs_diff(real_size) * 10 < real_size, "{what}: {hollow_size} bytes, dockerd's {real_size}");
    }

    let real_sequence = event_sequence(&real.events);
    assert_eq!(event_sequence(&fake.events), real_sequence, "the events of the same operations");
    assert!(real_sequence.len() >= 15, "{real_sequence:?}");
    let mut real_shapes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut hollow_shapes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (events, shapes) in [(&real.events, &mut real_shapes), (&fake.events, &mut hollow_shapes)] {
        for e in events {
            let key = format!("{} {}", e["Type"].as_str().unwrap_or("?"), e["Action"].as_str().unwrap_or("?"));
            shapes.entry(key).or_default().extend(field_paths(e));
        }
    }
    for (key, real_paths) in &real_shapes {
        assert_eq!(hollow_shapes.get(key), Some(real_paths), "the fields of a {key} event");
    }
    drop(hollow);
}

/// `docker info`'s lines as keys (the text before `:`), node names
/// replaced by `<node>`; and the label keys of each node's `Labels` line.
fn info_structure(info: &str, node: &str) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::new();
    let mut label_keys = Vec::new();
    for line in info.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim_start().replace(node, "<node>");
        let key = text.split_once(':').map(|(k, _)| k.to_string()).unwrap_or(text.clone());
        if let Some(labels) = text.strip_prefix("└ Labels: ") {
            label_keys.extend(labels.split(", ").map(|l| l.split_once('=').map(|(k, _)| k).unwrap_or(l).to_string()));
        }
        keys.push(format!("{}{key}", " ".repeat(indent)));
    }
    (keys, label_keys)
}

/// Removes what a test made through a manager, also when it fails.
struct Remove<'a>(&'a Manager, String);

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let _ = self.0.docker(["rm", "-f", &self.1]);
    }
}

#[test]
fn a_manager_shows_the_same_info_and_ps_over_either() {
    let tb = Testbed::shared();
    let hollow = Hollow::start();
    let real_engine = tb.engine("node-01");
    let over_real = Manager::start(&real_engine.addr, &[]);
    let over_hollow = Manager::start(&hollow.addr, &[]);
    over_real.wait_healthy(1);
    over_hollow.wait_healthy(1);
    let hollow_name = hollow.fleet.engines()[0].name.clone();

    let (real_info, real_labels) = info_structure(&over_real.docker_ok(["info"]), &real_engine.name);
    let (hollow_info, hollow_labels) = info_structure(&over_hollow.docker_ok(["info"]), &hollow_name);
    assert_eq!(hollow_info, real_info, "docker info, line by line");
    assert!(real_info.iter().any(|l| l.trim() == "<node>"), "a Nodes section: {real_info:#?}");
    assert_eq!(hollow_labels, real_labels, "the node's labels");

    let name = format!("hfid-ps-{}", std::process::id());
    let filter = format!("name={name}");
    let mut rows = Vec::new();
    for m in [&over_real, &over_hollow] {
        let _remove = Remove(m, name.clone());
        m.docker_ok(["create", "--name", &name, "-p", "80", "-l", "app=fid-ps", "busybox", "sleep", "300"]);
        m.docker_ok(["start", &name]);
        let table = m.docker_ok(["ps", "-a", "--filter", &filter]);
        let json = m.docker_ok(["ps", "-a", "--filter", &filter, "--format", "{{json .}}"]);
        let json: Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("docker ps --format json: {e}: {json}"));
        rows.push((table, json));
    }
    let ((real_table, real_json), (hollow_table, hollow_json)) = (&rows[0], &rows[1]);
    let lines = |t: &str| t.lines().map(str::to_string).collect::<Vec<_>>();
    let (real_lines, hollow_lines) = (lines(real_table), lines(hollow_table));
    assert_eq!(real_lines.len(), 2, "{real_table}");
    assert_eq!(hollow_lines.len(), 2, "{hollow_table}");
    // Columns are as wide as their widest value: compare their names, and
    // that every column of the row is filled.
    let columns =
        |row: &str| row.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(columns(&hollow_lines[0]), columns(&real_lines[0]), "the same columns");
    assert_eq!(columns(&hollow_lines[1]).len(), columns(&real_lines[1]).len(), "{real_table}\n{hollow_table}");
    assert_eq!(columns(&real_lines[1]).len(), columns(&real_lines[0]).len(), "{real_table}");
    let filled = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .map(|m| {
                m.iter().filter(|(_, v)| v.as_str().is_none_or(|s| !s.is_empty())).map(|(k, _)| k.clone()).collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(filled(hollow_json), filled(real_json), "the fields docker ps fills\n{real_json}\n{hollow_json}");
    assert!(hollow_json["Names"].as_str().is_some_and(|n| n == format!("{hollow_name}/{name}")), "{hollow_json}");
    assert!(hollow_json["Status"].as_str().is_some_and(|s| s.starts_with("Up ")), "{hollow_json}");
}
