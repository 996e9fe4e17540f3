//! The long run: a mixed load through a replica while primaries die and an
//! engine restarts; nothing may leak, get lost or fail without a documented
//! error, and the managers' memory and descriptors must come back.
//!
//! `cargo bench --bench longrun` starts a 3-engine testbed, a local etcd,
//! three `swarm join` and three replicated release managers, then for
//! `SWARM_LONGRUN_MINUTES` (default 10) runs `SWARM_LONGRUN_CLIENTS`
//! (default 32) API clients, each on a keep-alive connection to a current
//! replica, mixing create+start, inspect, logs, ps, exec and rm of their own
//! containers. Every `SWARM_LONGRUN_KILL_EVERY` seconds (default 120) the
//! primary gets SIGKILL and is started again 5 s later; half-way, one
//! engine's dockerd is killed and started again.
//!
//! At the end: every container whose create returned an ID is either
//! removed by its client or listed, and nothing else carries the run's
//! label; every failed request has a documented kind (README, "Errors a
//! client may see"); RSS and open descriptors of the managers that ran the
//! whole time are back within 10 % of their level after the warm-up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use swarm_testkit::bench::{percentile, requested, vm_rss_kib};
use swarm_testkit::http::{self, Conn, Link};
use swarm_testkit::manager::{Manager, SwarmProcess};
use swarm_testkit::store::{EtcdServer, StoreFixture};
use swarm_testkit::testbed::Testbed;

/// How long a client waits for an answer: longer than the manager may take
/// for a create (its 30 s engine call, the search after it, a failover),
/// as a Docker client has no timeout of its own. A client that gave up
/// first could not know what it made.
const CLIENT_WAIT: Duration = Duration::from_secs(180);

/// The label on every container of the run.
const LABEL: &str = "swarm-longrun";

/// When the bench began; events are printed in seconds since then.
static BEGAN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn since_began() -> u64 {
    BEGAN.get_or_init(Instant::now).elapsed().as_secs()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|v| *v > 0).unwrap_or(default)
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// What the clients saw, shared.
#[derive(Default)]
struct Record {
    /// Latencies in ms by operation, successful requests only.
    latencies: BTreeMap<&'static str, Vec<f64>>,
    /// Failed requests by kind (see [`error_kind`]).
    errors: BTreeMap<String, u64>,
    /// Requests sent, by operation.
    sent: BTreeMap<&'static str, u64>,
    /// IDs returned by creates.
    created: BTreeSet<String>,
    /// Creates that got no answer at all (the client waits longer than the
    /// manager may take, so none should): a container such a create made
    /// counts as leaked.
    creates_unanswered: u64,
    /// IDs a `DELETE` removed (204, or 404 after a failover).
    removed: BTreeSet<String>,
    /// How each removal of `removed` was answered: when (s), the status and
    /// the manager's message.
    removal_answers: BTreeMap<String, String>,
    /// IDs whose removal was asked and answered with an error that leaves
    /// the outcome open (the primary or engine failed while doing it).
    removal_unsure: BTreeSet<String>,
    /// Requests that got an HTTP answer (any status), follow-up starts
    /// included: what the manager's `/metrics` must count.
    answered: u64,
}

/// The documented kind of a failed request: the operation, the status and
/// the class of its message; `None` for an error the README does not list.
fn error_kind(op: &str, status: Option<u16>, message: &str) -> (String, bool) {
    let class = match (status, message) {
        (None, m) if m.contains("refused") || m.contains("reset") || m.contains("closed") => "manager restarting",
        (None, m) if m.contains("timed out") || m.contains("WouldBlock") || m.contains("temporarily") => "timeout",
        (Some(503), _) => "no primary during failover",
        (Some(500), m) if m.contains("Cannot connect") || m.contains("cannot connect") => "engine unreachable",
        (Some(500), m) if m.contains("unhealthy") => "engine unhealthy",
        (Some(500), m) if m.contains("request to") && m.contains("failed") => "engine connection broken",
        (Some(409), _) => "conflict from the engine",
        (Some(404), m) if m.contains("No such container") => "container gone with its engine",
        _ => "",
    };
    let documented = !class.is_empty();
    let class = if documented { class.to_string() } else { message.chars().take(120).collect() };
    (format!("{op}: {} {class}", status.map_or("io".to_string(), |s| s.to_string())), documented)
}

/// One client's loop until `stop`.
/// Held (shared) by a client for each request and its follow-up; taken
/// (exclusive) by the controller to read its counts and `/metrics` with no
/// request in flight.
type Gate = Arc<RwLock<()>>;

fn client(n: usize, target: Arc<RwLock<String>>, record: Arc<Mutex<Record>>, stop: Arc<AtomicBool>, gate: Gate) {
    let mut conn: Option<(String, Conn)> = None;
    let mut mine: Vec<String> = Vec::new();
    let mut made = 0u64;
    let mut step = n as u64;
    while !stop.load(Ordering::Relaxed) {
        step = step.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let roll = (step >> 33) % 100;
        let id = mine.get((step >> 20) as usize % mine.len().max(1)).cloned();
        let (op, method, path, body): (&'static str, &str, String, Option<Value>) = match (roll, &id) {
            (0..=24, _) | (_, None) => {
                made += 1;
                let body = json!({"Image": "busybox", "Cmd": ["sh", "-c", "echo started; sleep 3600"], "Labels": {LABEL: "1"}});
                ("create", "POST", format!("/v1.41/containers/create?name=lr-{n}-{made}"), Some(body))
            }
            (25..=39, Some(id)) => ("inspect", "GET", format!("/v1.41/containers/{id}/json"), None),
            (40..=49, Some(id)) => ("logs", "GET", format!("/v1.41/containers/{id}/logs?stdout=1&tail=5"), None),
            (50..=64, _) => ("ps", "GET", "/v1.41/containers/json?limit=50".to_string(), None),
            (65..=74, Some(id)) => {
                ("exec", "POST", format!("/v1.41/containers/{id}/exec"), Some(json!({"Cmd": ["true"]})))
            }
            (_, Some(id)) => ("rm", "DELETE", format!("/v1.41/containers/{id}?force=1"), None),
        };
        let _in_flight = gate.read().expect("gate");
        let addr = target.read().map(|t| t.clone()).unwrap_or_default();
        if conn.as_ref().is_none_or(|(a, _)| *a != addr) {
            conn = Conn::connect_within(&addr, Link::Plain, CLIENT_WAIT).ok().map(|c| (addr.clone(), c));
        }
        let start = Instant::now();
        let body_bytes = body.map(|b| b.to_string().into_bytes());
        let answer = match conn.as_mut() {
            Some((_, c)) => c.request(method, &path, body_bytes.as_deref()).map(|s| (s, c.body().to_vec())),
            None => Err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")),
        };
        let outcome = |status: Option<u16>, text: &str, ok: bool, rec: &mut Record| {
            *rec.sent.entry(op).or_default() += 1;
            if ok {
                rec.latencies.entry(op).or_default().push(start.elapsed().as_secs_f64() * 1e3);
            } else {
                let message = serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| text.to_string());
                let (kind, documented) = error_kind(op, status, &message);
                let kind = if documented { kind } else { format!("UNDOCUMENTED {kind}") };
                *rec.errors.entry(kind).or_default() += 1;
            }
        };
        match answer {
            Err(e) => {
                conn = None;
                let mut rec = record.lock().expect("record");
                outcome(None, &e.to_string(), false, &mut rec);
                if op == "create" {
                    rec.creates_unanswered += 1;
                }
            }
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body).into_owned();
                let ok = matches!(status, 200..=299);
                let mut rec = record.lock().expect("record");
                rec.answered += 1;
                outcome(Some(status), &text, ok, &mut rec);
                match op {
                    "create" if ok => {
                        let id = serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|v| v["Id"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        rec.created.insert(id.clone());
                        drop(rec);
                        mine.push(id.clone());
                        if let Some((_, c)) = conn.as_mut() {
                            if c.request("POST", &format!("/v1.41/containers/{id}/start"), None).is_ok() {
                                record.lock().expect("record").answered += 1;
                            }
                        }
                    }
                    "exec" if ok => {
                        drop(rec);
                        let exec = serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|v| v["Id"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        if let Some((_, c)) = conn.as_mut() {
                            let start = json!({"Detach": true}).to_string();
                            if c.request("POST", &format!("/v1.41/exec/{exec}/start"), Some(start.as_bytes())).is_ok() {
                                record.lock().expect("record").answered += 1;
                            }
                        }
                    }
                    // A 404 to a removal retried after a failover: the
                    // dead primary removed it before it could answer.
                    "rm" if ok || status == 404 => {
                        if let Some(id) = &id {
                            rec.removed.insert(id.clone());
                            let answer =
                                format!("{}s: {status} {}", since_began(), text.chars().take(100).collect::<String>());
                            rec.removal_answers.insert(id.clone(), answer);
                            mine.retain(|m| m != id);
                        }
                    }
                    "rm" if status >= 500 => {
                        if let Some(id) = &id {
                            rec.removal_unsure.insert(id.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Requests a manager's `/metrics` counts, all routes but the ones the
/// bench itself uses to watch the managers (`info`, `metrics`).
fn requests_counted(addr: &str) -> u64 {
    let (_, text) = http::get(addr, "/metrics", Duration::from_secs(10)).expect("/metrics");
    text.lines()
        .filter(|l| l.starts_with("swarm_http_requests_total{"))
        .filter(|l| !l.contains("route=\"info\"") && !l.contains("route=\"metrics\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Index of the primary among `managers` (waits up to 30 s).
fn primary_of(managers: &[Manager]) -> usize {
    let start = Instant::now();
    loop {
        if let Some(p) = managers.iter().position(|m| m.role().is_some_and(|(role, _)| role == "primary")) {
            return p;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no primary");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// RSS (KiB) and descriptors of one manager process over its life: from
/// the end of its warm-up to its kill or the end of the run.
struct Lifetime {
    manager: usize,
    began: Instant,
    /// `(when, (rss, fds))` at the end of the warm-up.
    start: Option<(Instant, (u64, usize))>,
    peak: (u64, usize),
    end: (Instant, (u64, usize)),
}

/// How long a manager runs under the load before its level is taken: long
/// enough for its buffers (events bus, connection pools) to fill, so what
/// grows afterwards is growth, not warm-up.
const WARMUP: Duration = Duration::from_secs(60);

impl Lifetime {
    fn new(manager: usize) -> Lifetime {
        let now = Instant::now();
        Lifetime { manager, began: now, start: None, peak: (0, 0), end: (now, (0, 0)) }
    }

    fn sample(&mut self, pid: u32) {
        let now = (vm_rss_kib(pid), open_fds(pid));
        if self.start.is_none() && self.began.elapsed() >= WARMUP {
            self.start = Some((Instant::now(), now));
        }
        if self.start.is_some() {
            self.peak = (self.peak.0.max(now.0), self.peak.1.max(now.1));
            self.end = (Instant::now(), now);
        }
    }

    /// Measured for long enough to judge growth.
    fn judged(&self) -> bool {
        self.start.is_some_and(|(at, _)| self.end.0.duration_since(at) >= Duration::from_secs(150))
    }
}

/// RSS (KiB) and open fds summed over `managers`.
fn cluster_level(managers: &[Manager]) -> (u64, usize) {
    managers.iter().fold((0, 0), |(rss, fds), m| (rss + vm_rss_kib(m.pid()), fds + open_fds(m.pid())))
}

fn main() {
    BEGAN.get_or_init(Instant::now);
    if !requested("longrun") {
        return;
    }
    let minutes = env_u64("SWARM_LONGRUN_MINUTES", 10);
    let clients = env_u64("SWARM_LONGRUN_CLIENTS", 32) as usize;
    let kill_every = Duration::from_secs(env_u64("SWARM_LONGRUN_KILL_EVERY", 120));
    let swarm = env!("CARGO_BIN_EXE_swarm");
    assert!(swarm.contains("/release/"), "the manager must be the release build, got {swarm}");

    let tb = Testbed::start(3, &[], false);
    // The managers' logs carry wall-clock times; the run prints seconds.
    let clock = std::process::Command::new("date").args(["-u", "+%H:%M:%S"]).output();
    let clock = clock.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    println!("{:>4}s is {clock} UTC", since_began());
    let store = EtcdServer::start();
    let url = store.url("longrun");
    let _joins: Vec<SwarmProcess> = SwarmProcess::join_all(&tb.addrs(), "3s", &url);
    let mut managers: Vec<Manager> =
        // At debug level, so the history of a container that ends up lost,
        // leaked or back can be told from the logs (printed at the end).
        (0..3).map(|_| Manager::builder(&url).binary(swarm).replicated().args(&["--log-level", "debug"]).start()).collect();
    for m in &managers {
        m.wait_healthy(3);
    }
    let p = primary_of(&managers);
    let target = Arc::new(RwLock::new(managers[(p + 1) % 3].addr.clone()));
    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let gate: Gate = Arc::new(RwLock::new(()));
    let workers: Vec<_> = (0..clients)
        .map(|n| {
            let (target, record, stop, gate) = (target.clone(), record.clone(), stop.clone(), gate.clone());
            std::thread::spawn(move || client(n, target, record, stop, gate))
        })
        .collect();
    // The agreement window: the client-facing replica's `/metrics` against
    // the clients' own count, over the first minute (no kill in it).
    let window_on = target.read().expect("target").clone();
    let counts = |gate: &Gate| {
        let _paused = gate.write().expect("gate");
        (record.lock().expect("record").answered, requests_counted(&window_on))
    };
    std::thread::sleep(Duration::from_secs(5));
    let window_start = counts(&gate);
    std::thread::sleep(Duration::from_secs(55));
    let window_end = counts(&gate);
    let (by_clients, by_metrics) = (window_end.0 - window_start.0, window_end.1 - window_start.1);

    let mut lives: Vec<Lifetime> = (0..3).map(Lifetime::new).collect();
    let mut finished: Vec<Lifetime> = Vec::new();
    // The three managers together, whose roles (one primary, one replica
    // the clients go through, one idle replica) are the same at the start
    // and the end, while each process changes role with every kill.
    let cluster_start = cluster_level(&managers);
    let started = Instant::now();
    let run = Duration::from_secs(minutes * 60);
    let mut next_kill = kill_every;
    let mut engine_restarted = false;
    let mut kills = 0;
    while started.elapsed() < run {
        std::thread::sleep(Duration::from_secs(1));
        for (life, m) in lives.iter_mut().zip(&managers) {
            life.sample(m.pid());
        }
        if !engine_restarted && started.elapsed() >= run / 2 {
            engine_restarted = true;
            println!("{:>4}s: restarting node-02's dockerd", since_began());
            tb.stop_engine("node-02");
            std::thread::sleep(Duration::from_secs(3));
            // A dockerd restoring hundreds of containers after a crash may
            // take more than the testbed's minute: ask again.
            let mut tries = 0;
            while let Err(e) = tb.try_start_engine("node-02") {
                tries += 1;
                println!("{:>4}s: node-02 not back yet ({})", since_began(), e.lines().next().unwrap_or(""));
                assert!(tries < 5, "node-02 did not come back: {e}");
            }
        }
        if started.elapsed() >= next_kill {
            next_kill += kill_every;
            let p = primary_of(&managers);
            println!("{:>4}s: SIGKILL of the primary {}", since_began(), managers[p].addr);
            managers[p].signal("KILL");
            kills += 1;
            finished.push(std::mem::replace(&mut lives[p], Lifetime::new(p)));
            let survivor = managers.iter().enumerate().find(|(i, _)| *i != p).map(|(_, m)| m.addr.clone());
            let q = {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let found = managers
                        .iter()
                        .enumerate()
                        .find(|(i, m)| *i != p && m.role().is_some_and(|(role, _)| role == "primary"))
                        .map(|(i, _)| i);
                    if let Some(q) = found {
                        break q;
                    }
                    assert!(Instant::now() < deadline, "no new primary");
                    std::thread::sleep(Duration::from_millis(50));
                }
            };
            // Clients go through the one that is neither the dead nor the new primary.
            let replica = (0..3).find(|i| *i != p && *i != q).map(|i| managers[i].addr.clone()).or(survivor);
            if let (Ok(mut t), Some(r)) = (target.write(), replica) {
                *t = r;
            }
            std::thread::sleep(Duration::from_secs(5));
            managers[p].restart();
            lives[p] = Lifetime::new(p);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed();
    // Let in-flight work settle, then read what exists.
    std::thread::sleep(Duration::from_secs(5));
    // An engine the load left hung stays listed (its containers as `Host
    // Down`), so the check goes on without it, saying so.
    for m in &managers {
        let deadline = Instant::now() + Duration::from_secs(120);
        while m.healthy_count() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        if m.healthy_count() < 3 {
            println!("manager {}: only {} engines Healthy at the end", m.addr, m.healthy_count());
        }
    }
    let p = primary_of(&managers);
    let filters = format!("{{\"label\":[\"{LABEL}=1\"]}}");
    let path = format!(
        "/v1.41/containers/json?all=1&filters={}",
        url::form_urlencoded::byte_serialize(filters.as_bytes()).collect::<String>()
    );
    let (_, listed) = http::get(&managers[p].addr, &path, Duration::from_secs(30)).expect("the final list");
    let listed: BTreeSet<String> = serde_json::from_str::<Vec<Value>>(&listed)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["Id"].as_str().map(str::to_string))
        .collect();
    let rec = record.lock().expect("record");
    let expected: BTreeSet<String> = rec.created.difference(&rec.removed).cloned().collect();
    let lost: Vec<&String> = expected.difference(&listed).filter(|id| !rec.removal_unsure.contains(*id)).collect();
    let leaked: Vec<&String> = listed.difference(&rec.created).collect();
    let resurrected: Vec<&String> = listed.intersection(&rec.removed).collect();
    // Where each of them is, asked before the clean-up below removes them.
    let resurrected_on: Vec<Vec<String>> = resurrected
        .iter()
        .map(|id| {
            ["node-01", "node-02", "node-03"]
                .into_iter()
                .filter_map(|node| {
                    let state =
                        tb.docker_ok(node, ["ps", "-a", "--format", "{{.State}}", "--filter", &format!("id={id}")]);
                    (!state.is_empty()).then(|| format!("{node} ({})", state.trim()))
                })
                .collect()
        })
        .collect();

    // The level once the load is over and its containers are gone, as at
    // the end of the warm-up (when only a few existed).
    let remaining: Vec<String> = listed.iter().cloned().collect();
    let cleaners: Vec<_> = remaining
        .chunks(remaining.len().div_ceil(8).max(1))
        .map(|ids| {
            let (addr, ids) = (managers[p].addr.clone(), ids.to_vec());
            std::thread::spawn(move || {
                for id in ids {
                    let path = format!("/v1.41/containers/{id}?force=1");
                    let _ = http::request(&addr, "DELETE", &path, b"", Duration::from_secs(60));
                }
            })
        })
        .collect();
    for c in cleaners {
        let _ = c.join();
    }
    std::thread::sleep(Duration::from_secs(10));
    for (life, m) in lives.iter_mut().zip(&managers) {
        life.sample(m.pid());
    }
    let cluster_end = cluster_level(&managers);
    finished.append(&mut lives);

    let sent: u64 = rec.sent.values().sum();
    let failed: u64 = rec.errors.values().sum();
    let undocumented: u64 = rec.errors.iter().filter(|(k, _)| k.starts_with("UNDOCUMENTED")).map(|(_, n)| n).sum();
    println!();
    println!(
        "{minutes} min, {clients} clients, {kills} primary kills, 1 engine restart: {sent} requests, {:.1} req/s, {failed} failed",
        sent as f64 / elapsed.as_secs_f64()
    );
    println!("{:<10} {:>8} {:>10} {:>10}", "operation", "ok", "p50 ms", "p99 ms");
    for (op, lat) in &rec.latencies {
        let mut sorted = lat.clone();
        sorted.sort_by(f64::total_cmp);
        println!("{op:<10} {:>8} {:>10.1} {:>10.1}", sorted.len(), percentile(&sorted, 0.5), percentile(&sorted, 0.99));
    }
    println!("errors by kind:");
    for (kind, n) in &rec.errors {
        println!("  {n:>6}  {kind}");
    }
    println!(
        "manager processes (RSS KiB / fds after {}s warm-up, peak, end after the load's containers were removed):",
        WARMUP.as_secs()
    );
    for life in &finished {
        let Some((at, start)) = life.start else { continue };
        println!(
            "  manager {} for {:>4}s: start {} / {}, peak {} / {}, end {} / {}",
            life.manager,
            life.end.0.duration_since(at).as_secs(),
            start.0,
            start.1,
            life.peak.0,
            life.peak.1,
            life.end.1 .0,
            life.end.1 .1
        );
    }
    let judged: Vec<&Lifetime> = finished.iter().filter(|l| l.judged()).collect();
    let grew = |pick: fn(&(u64, usize)) -> f64| {
        judged.iter().filter(|l| l.start.is_some_and(|(_, s)| pick(&l.end.1) > pick(&s) * 1.10)).count()
    };
    let (rss_grew, fds_grew) = (grew(|u| u.0 as f64), grew(|u| u.1 as f64));
    println!();
    println!("{:<50} {:>12} {:>10}  verdict", "figure", "measured", "target");
    let row = |name: &str, measured: String, target: &str, pass: bool| {
        println!("{name:<50} {measured:>12} {target:>10}  {}", if pass { "PASS" } else { "MISS" });
    };
    row(
        "containers lost (created, not removed or asked to be, not listed)",
        lost.len().to_string(),
        "0",
        lost.is_empty(),
    );
    row("containers leaked (listed, never returned)", leaked.len().to_string(), "0", leaked.is_empty());
    println!("({} creates got no answer)", rec.creates_unanswered);
    row("containers back after their removal", resurrected.len().to_string(), "0", resurrected.is_empty());
    row("undocumented errors", undocumented.to_string(), "0", undocumented == 0);
    row(
        "/metrics requests vs clients' answers, 55 s window",
        format!("{by_metrics} / {by_clients}"),
        "equal",
        by_metrics == by_clients,
    );
    let within = |start: f64, end: f64| end <= start * 1.10;
    row(
        "the 3 managers' RSS, start -> end (KiB)",
        format!("{} -> {}", cluster_start.0, cluster_end.0),
        "+10 %",
        within(cluster_start.0 as f64, cluster_end.0 as f64),
    );
    row(
        "the 3 managers' open fds, start -> end",
        format!("{} -> {}", cluster_start.1, cluster_end.1),
        "+10 %",
        within(cluster_start.1 as f64, cluster_end.1 as f64),
    );
    // Per process, for information: a process that began as a fresh
    // replica and ended as the primary holds the primary's state.
    println!(
        "(per process, >= 150 s measured: RSS grew in {rss_grew} of {n}, fds in {fds_grew} of {n}; each process changes \
         role at every kill)",
        n = judged.len()
    );
    // Where the lost ones are: on an engine (the manager does not list
    // them) or nowhere (they are gone).
    for id in &lost {
        let on: Vec<&str> = ["node-01", "node-02", "node-03"]
            .into_iter()
            .filter(|node| !tb.docker_ok(node, ["ps", "-aq", "--filter", &format!("id={id}")]).is_empty())
            .collect();
        println!("lost {}: on {:?}", &id[..12], on);
    }
    for id in &leaked {
        println!("leaked {}", &id[..12]);
    }
    for (id, on) in resurrected.iter().zip(&resurrected_on) {
        let answer = rec.removal_answers.get(*id).map_or("?", String::as_str);
        println!("back after removal {}: removal answered at {answer}; now on {on:?}", &id[..12]);
    }
    let logs: Vec<String> = managers.iter().map(Manager::log).collect();
    for id in lost.iter().chain(&leaked).chain(&resurrected) {
        println!("what the managers logged about {}:", &id[..12]);
        for (m, log) in logs.iter().enumerate() {
            for line in log.lines().filter(|l| l.contains(id.as_str())).take(30) {
                println!("  manager {m}: {line}");
            }
        }
    }
}
