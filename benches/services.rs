//! Services on classic engines, measured against real engines.
//!
//! `cargo bench --bench services` starts a 3-engine testbed, a local etcd
//! and two replicated release managers (quick engine refresh: 1-2 s, 2
//! failures), then measures:
//!
//! 1. `docker service create --replicas 30` (image present) to 30/30 running;
//! 2. at rest with `SWARM_BENCH_SERVICES` services (default 100, one replica
//!    each): the primary's CPU and the store writes (etcd revision growth)
//!    over 20 s;
//! 3. a lost engine (SIGKILL of its dockerd and everything on it): time to
//!    the engine flagged unhealthy (the detection time) and to every task
//!    running on the other engines;
//! 4. SIGKILL of the primary: time until the survivor has run a scale-up
//!    asked through it (election plus the first reconciler pass).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use swarm::services::{Task, TaskState, Timestamp};
use swarm_testkit::bench::{cpu_seconds, requested};
use swarm_testkit::http;
use swarm_testkit::manager::{Manager, SwarmProcess};
use swarm_testkit::store::{EtcdServer, StoreFixture};
use swarm_testkit::testbed::Testbed;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|v| *v > 0).unwrap_or(default)
}

/// `(running, desired)` summed over every service, from `GET /services?status=true`.
fn tasks_running(m: &Manager) -> (u64, u64) {
    let Ok((200, body)) = m.get("/v1.41/services?status=true") else { return (0, u64::MAX) };
    let services: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
    services.iter().fold((0, 0), |(r, d), s| {
        (
            r + s["ServiceStatus"]["RunningTasks"].as_u64().unwrap_or(0),
            d + s["ServiceStatus"]["DesiredTasks"].as_u64().unwrap_or(0),
        )
    })
}

fn create_service(m: &Manager, name: &str, replicas: u64) {
    let spec = json!({
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "3600"]}},
        "Mode": {"Replicated": {"Replicas": replicas}},
    });
    let (status, body) =
        m.request("POST", "/v1.41/services/create", Some(&spec.to_string())).expect("create a service");
    assert_eq!(status, 201, "create {name}: {body}");
}

/// Waits until `running == desired` with at least `want` tasks; returns how long it took.
fn until_all_running(m: &Manager, want: u64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (running, desired) = tasks_running(m);
        if running >= want && running == desired {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "only {running}/{desired} running after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// etcd's current revision: it grows with every write, and only with
/// writes (lease keep-alives do not count); from its `/metrics`.
fn etcd_revision(store: &EtcdServer) -> u64 {
    let (_, metrics) = http::get(&store.addr, "/metrics", Duration::from_secs(5)).expect("etcd /metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_current_revision "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no revision in etcd's /metrics"))
}

/// The node ID of the engine called `hostname`.
fn node_id(m: &Manager, hostname: &str) -> String {
    let (_, body) = m.get(&format!("/v1.41/nodes/{hostname}")).expect("node inspect");
    let node: Value = serde_json::from_str(&body).unwrap_or_default();
    node["ID"].as_str().unwrap_or_default().to_string()
}

/// Where the replacement time went: for the tasks created since `since`
/// (the replacements), when the first and last were planned and when the
/// last reached running, and the median create-to-running time of one.
fn replacement_breakdown(m: &Manager, since: Timestamp) -> String {
    let Ok((200, body)) = m.get("/v1.41/tasks") else { return "no task list".into() };
    let tasks: Vec<Task> = serde_json::from_str(&body).unwrap_or_default();
    let new: Vec<&Task> =
        tasks.iter().filter(|t| t.created_at >= since && t.status.state == TaskState::Running).collect();
    let after = |t: Timestamp| t.since(since).as_millis();
    let (Some(first), Some(last), Some(done)) = (
        new.iter().map(|t| t.created_at).min(),
        new.iter().map(|t| t.created_at).max(),
        new.iter().map(|t| t.status.timestamp).max(),
    ) else {
        return "no replacement task".into();
    };
    let mut each: Vec<u128> = new.iter().map(|t| t.status.timestamp.since(t.created_at).as_millis()).collect();
    each.sort_unstable();
    format!(
        "{} replacements: planned {}-{} ms after the kill, last running at {} ms, create-to-running p50 {} ms",
        new.len(),
        after(first),
        after(last),
        after(done),
        each[each.len() / 2]
    )
}

/// Tasks wanted and running on any node but `lost`.
fn running_off(m: &Manager, lost: &str) -> u64 {
    let Ok((200, body)) = m.get("/v1.41/tasks") else { return 0 };
    let tasks: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
    tasks
        .iter()
        .filter(|t| t["DesiredState"] == "running" && t["Status"]["State"] == "running" && t["NodeID"] != lost)
        .count() as u64
}

fn primary_of(managers: &[Manager]) -> usize {
    let start = Instant::now();
    loop {
        if let Some(p) = managers.iter().position(|m| m.role().is_some_and(|(role, _)| role == "primary")) {
            return p;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no primary");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if !requested("services") {
        return;
    }
    let at_rest_services = env_usize("SWARM_BENCH_SERVICES", 100) as u64;
    let swarm = env!("CARGO_BIN_EXE_swarm");
    assert!(swarm.contains("/release/"), "the manager must be the release build, got {swarm}");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("machine: loadavg {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));

    let tb = Testbed::start(3, &[], false);
    let store = EtcdServer::start();
    let url = store.url("bench");
    let _joins: Vec<SwarmProcess> = SwarmProcess::join_all(&tb.addrs(), "3s", &url);
    let managers: Vec<Manager> = (0..2).map(|_| Manager::builder(&url).binary(swarm).replicated().start()).collect();
    for m in &managers {
        m.wait_healthy(3);
    }
    let p = primary_of(&managers);
    let (primary, replica) = (&managers[p], &managers[1 - p]);

    // 1: 30 replicas.
    let start = Instant::now();
    create_service(primary, "thirty", 30);
    until_all_running(primary, 30, Duration::from_secs(120));
    let thirty = start.elapsed();

    // 2: at rest with many services.
    let start = Instant::now();
    for i in 0..at_rest_services {
        create_service(primary, &format!("rest{i}"), 1);
    }
    until_all_running(primary, 30 + at_rest_services, Duration::from_secs(600));
    println!("setup: {at_rest_services} more services running in {:.1}s", start.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(3));
    let (cpu_before, revision_before) = (cpu_seconds(primary.pid()), etcd_revision(&store));
    let rest = Duration::from_secs(20);
    std::thread::sleep(rest);
    let (cpu_after, revision_after) = (cpu_seconds(primary.pid()), etcd_revision(&store));
    let cpu_share = (cpu_after[0] + cpu_after[1] - cpu_before[0] - cpu_before[1]) / rest.as_secs_f64() * 100.0;
    let writes = revision_after - revision_before;

    // 3: a lost engine.
    let total = 30 + at_rest_services;
    let lost = node_id(primary, "node-03");
    let start = Instant::now();
    let killed_at = Timestamp::now();
    tb.stop_engine("node-03");
    primary.wait_until(Duration::from_secs(60), "node-03 is flagged", |m| {
        m.get("/info").is_ok_and(|(_, body)| body.contains("\"Unhealthy\""))
    });
    let detected = start.elapsed();
    primary.wait_until(Duration::from_secs(300), "every task runs off node-03", |m| running_off(m, &lost) == total);
    let replaced = start.elapsed();
    println!("lost engine: {}", replacement_breakdown(primary, killed_at));

    // 4: SIGKILL of the primary, then a scale-up through the survivor.
    primary.signal("KILL");
    let start = Instant::now();
    replica.wait_until(Duration::from_secs(30), "the survivor is primary", |m| {
        m.role().is_some_and(|(role, _)| role == "primary")
    });
    let elected = start.elapsed();
    let spec_of = |m: &Manager| -> (u64, Value) {
        let (_, body) = m.get("/v1.41/services/thirty").expect("inspect");
        let service: Value = serde_json::from_str(&body).unwrap_or_default();
        (service["Version"]["Index"].as_u64().unwrap_or(0), service["Spec"].clone())
    };
    let resumed = loop {
        let (index, mut spec) = spec_of(replica);
        spec["Mode"]["Replicated"]["Replicas"] = json!(31);
        let path = format!("/v1.41/services/thirty/update?version={index}");
        if let Ok((200, _)) = replica.request("POST", &path, Some(&spec.to_string())) {
            let accepted = start.elapsed();
            replica.wait_until(Duration::from_secs(60), "the new task runs", |m| running_off(m, &lost) == total + 1);
            println!(
                "failover: survivor primary after {} ms, update accepted after {} ms",
                elected.as_millis(),
                accepted.as_millis()
            );
            break start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the survivor never took the update");
        std::thread::sleep(Duration::from_millis(20));
    };

    // 5: the engines' own floor for the replacements: as many containers
    // created and started directly on the two surviving engines, with the
    // reconciler's parallelism, and no manager in between.
    let replacements = tasks_of_node_replaced(replica, &lost);
    let floor = direct_starts(&tb, &["node-01", "node-02"], replacements);

    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    println!();
    println!("{:<58} {:>14} {:>22}  verdict", "figure", "measured", "target");
    let row = |name: &str, measured: String, target: &str, pass: Option<bool>| {
        let verdict = match pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "info",
        };
        println!("{name:<58} {measured:>14} {target:>22}  {verdict}");
    };
    row(
        "service create --replicas 30 to 30/30 running",
        ms(thirty),
        "<= 10000 ms",
        Some(thirty <= Duration::from_secs(10)),
    );
    row(&format!("primary CPU at rest, {} services", at_rest_services + 1), format!("{cpu_share:.2} %"), "-", None);
    row(&format!("store writes at rest over {}s", rest.as_secs()), writes.to_string(), "0", Some(writes == 0));
    row("lost engine: detection (quick refresh settings)", ms(detected), "-", None);
    row(
        "lost engine: all tasks running elsewhere",
        ms(replaced),
        "<= detection + 5000 ms",
        Some(replaced <= detected + Duration::from_secs(5)),
    );
    row(
        &format!("engines' floor: {replacements} create+start direct, {DIRECT_IN_FLIGHT} in flight"),
        ms(floor),
        "-",
        None,
    );
    row(
        "lost engine: replacement after detection, minus the floor",
        ms(replaced.saturating_sub(detected + floor)),
        "-",
        None,
    );
    row("primary SIGKILL: survivor runs a scale-up", ms(resumed), "-", None);
}

/// How many tasks the manager started for the ones it lost with `node`:
/// the tasks whose shutdown names that node.
fn tasks_of_node_replaced(m: &Manager, node: &str) -> usize {
    let Ok((200, body)) = m.get("/v1.41/tasks") else { return 0 };
    let tasks: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
    tasks.iter().filter(|t| t["NodeID"] == node && t["DesiredState"] != "running").count()
}

/// As many container starts at once as the reconciler runs.
const DIRECT_IN_FLIGHT: usize = 16;

/// Creates and starts `count` busybox containers directly on `engines`
/// (round robin), `DIRECT_IN_FLIGHT` at a time; returns how long it took.
fn direct_starts(tb: &Testbed, engines: &[&str], count: usize) -> Duration {
    let addrs: Vec<String> = engines.iter().map(|name| tb.engine(name).addr.clone()).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..DIRECT_IN_FLIGHT {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let addr = &addrs[i % addrs.len()];
                let body = json!({"Image": "busybox", "Cmd": ["sleep", "3600"], "Labels": {"swarm-bench-floor": "1"}});
                let (status, answer) = http::request(
                    addr,
                    "POST",
                    "/v1.41/containers/create",
                    body.to_string().as_bytes(),
                    Duration::from_secs(60),
                )
                .expect("direct create");
                assert_eq!(status, 201, "direct create: {answer}");
                let id = serde_json::from_str::<Value>(&answer).unwrap_or_default()["Id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let path = format!("/v1.41/containers/{id}/start");
                let (status, answer) =
                    http::request(addr, "POST", &path, b"", Duration::from_secs(60)).expect("direct start");
                assert_eq!(status, 204, "direct start: {answer}");
            });
        }
    });
    start.elapsed()
}
