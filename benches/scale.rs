//! Scale bench: one release `swarm manage` over hollow engines
//! (`swarm-hollow`, one in-process fleet of fake engines on loopback
//! addresses), against Docker's 2015 scale test of Classic Swarm (1,000
//! engines, 30,000 containers).
//!
//! For each size (`SWARM_SCALE_ENGINES`, default `100,300,1000`) it starts a
//! fleet with `SWARM_SCALE_CONTAINERS` containers per engine (30) answering
//! in `SWARM_SCALE_LATENCY_MS` (1 ms), a manager over a `file://` list of
//! their addresses with the default refresh intervals, and measures:
//! start to all engines Healthy (and `/info` while they come up), `/info`
//! and `/containers/json?all=1` latency, `docker run -d` (create + start
//! with a constraint and an affinity) against the same on one hollow engine
//! directly, event fan-in to one `/events` client while every engine
//! churns containers (`SWARM_SCALE_EVENT_RATE` events/s, default 6000),
//! and the manager's RSS and idle CPU. At the largest size it then runs
//! three replicated managers over the same engines registered in etcd
//! (the keys `swarm join` writes) and measures their start, RSS, and the
//! failover after a SIGKILL of the primary (`SWARM_SCALE_REPLICATED=0`
//! skips it).
//!
//! `cargo bench --bench scale`; a table of every figure by size, next to
//! its target, comes last.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use swarm_discovery::kv::{join_key, Store};
use swarm_discovery::Backend;
use swarm_hollow::{loopback_ips_from, ChurnConfig, Fleet, FleetConfig};
use swarm_testkit::bench::{cpu_seconds, percentile, requested, vm_rss_kib};
use swarm_testkit::http::{self, Conn};
use swarm_testkit::manager::Manager;
use swarm_testkit::metrics;
use swarm_testkit::store::{EtcdServer, StoreFixture};

/// The engine label every hollow engine has, for the constraint.
const LABEL: (&str, &str) = ("storage", "ssd");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Latencies in ms, sorted.
struct Latencies(Vec<f64>);

impl Latencies {
    fn of(mut samples: Vec<f64>) -> Latencies {
        samples.sort_by(f64::total_cmp);
        Latencies(samples)
    }

    fn p(&self, q: f64) -> f64 {
        percentile(&self.0, q)
    }

    fn triple(&self) -> String {
        format!("{:.1}/{:.1}/{:.1}", self.p(0.5), self.p(0.9), self.p(0.99))
    }
}

/// One figure of one size.
struct Row {
    figure: &'static str,
    measured: String,
    target: String,
    /// `None` when the figure has no target (shown for growth only).
    met: Option<bool>,
}

fn row(figure: &'static str, measured: String, target: &str, met: Option<bool>) -> Row {
    Row { figure, measured, target: target.to_string(), met }
}

/// Healthy engines as the manager's `/metrics` counts them.
fn healthy(addr: &str) -> usize {
    match http::get(addr, "/metrics", Duration::from_secs(10)) {
        Ok((200, text)) => metrics::parse(&text).value("swarm_engines", &[("health", "Healthy")]) as usize,
        _ => 0,
    }
}

/// Containers the manager has loaded, as its `/metrics` counts them.
fn loaded(addr: &str) -> usize {
    match http::get(addr, "/metrics", Duration::from_secs(10)) {
        Ok((200, text)) => metrics::parse(&text).value("swarm_containers", &[]) as usize,
        _ => 0,
    }
}

/// Waits until the manager lists `n` containers; the time since `since`.
fn wait_loaded(addr: &str, n: usize, since: Instant, within: Duration) -> Option<Duration> {
    while since.elapsed() < within {
        if loaded(addr) >= n {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Waits until `n` engines are Healthy; samples `/info` every 250 ms
/// meanwhile. Returns the time it took and the `/info` latencies (ms).
fn wait_all_healthy(addr: &str, n: usize, since: Instant, within: Duration) -> (Option<Duration>, Vec<f64>) {
    let mut info = Vec::new();
    loop {
        if healthy(addr) >= n {
            return (Some(since.elapsed()), info);
        }
        if since.elapsed() > within {
            return (None, info);
        }
        let t = Instant::now();
        if let Ok((200, _)) = http::get(addr, "/info", Duration::from_secs(30)) {
            info.push(t.elapsed().as_secs_f64() * 1e3);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `count` sequential GETs of `path` on one kept-alive connection.
fn sample_get(addr: &str, path: &str, count: usize) -> (Latencies, usize) {
    let mut conn = Conn::connect(addr);
    let mut size = 0;
    let samples = (0..count)
        .map(|_| {
            let t = Instant::now();
            let status = conn.request("GET", path, None).expect("GET through the manager");
            assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(conn.body()));
            size = conn.body().len();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (Latencies::of(samples), size)
}

/// `count` `docker run -d`s (create, then start) on `addr`, sequential.
fn sample_runs(addr: &str, count: usize, tag: &str, scheduling: bool) -> Latencies {
    let mut creates = Vec::new();
    let mut conn = Conn::connect(addr);
    let env = if scheduling {
        json!([format!("constraint:{}=={}", LABEL.0, LABEL.1), "affinity:image==busybox"])
    } else {
        json!([])
    };
    let samples = (0..count)
        .map(|i| {
            let body = json!({"Image": "busybox", "Cmd": ["sleep", "3600"], "Env": env, "Labels": {"bench": "scale"}});
            let body = body.to_string();
            let t = Instant::now();
            let path = format!("/v1.41/containers/create?name=scale-{tag}-{i}");
            let status = conn.request("POST", &path, Some(body.as_bytes())).expect("create");
            assert_eq!(status, 201, "create: {}", String::from_utf8_lossy(conn.body()));
            let id = serde_json::from_slice::<Value>(conn.body()).ok().and_then(|v| v["Id"].as_str().map(String::from));
            let id = id.expect("an Id");
            creates.push(t.elapsed().as_secs_f64() * 1e3);
            let status = conn.request("POST", &format!("/v1.41/containers/{id}/start"), None).expect("start");
            assert_eq!(status, 204, "start: {}", String::from_utf8_lossy(conn.body()));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    println!("  ({tag}: the create alone p50/p90/p99 ms: {})", Latencies::of(creates).triple());
    Latencies::of(samples)
}

/// One `/events` client: counts what it reads by `Type`, and repeats.
struct EventsReader {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    repeats: Arc<AtomicU64>,
    last: Arc<Mutex<Instant>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EventsReader {
    fn open(addr: &str) -> EventsReader {
        let mut stream = TcpStream::connect(addr).expect("connect for /events");
        stream.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
        write!(stream, "GET /v1.41/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("ask for events");
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let repeats = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(Instant::now()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counts, repeats, last, stop) = (counts.clone(), repeats.clone(), last.clone(), stop.clone());
            std::thread::spawn(move || read_events(stream, counts, repeats, last, stop))
        };
        EventsReader { counts, repeats, last, stop, thread: Some(thread) }
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("counts").clone()
    }

    fn engine_events(&self) -> u64 {
        self.counts().iter().filter(|(t, _)| t.as_str() != "swarm").map(|(_, n)| n).sum()
    }

    fn last_read(&self) -> Instant {
        *self.last.lock().expect("last")
    }
}

impl Drop for EventsReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a chunked `/events` answer: each event is a JSON line.
fn read_events(
    mut stream: TcpStream,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    repeats: Arc<AtomicU64>,
    last: Arc<Mutex<Instant>>,
    stop: Arc<AtomicBool>,
) {
    let mut raw = Vec::new();
    let mut body = Vec::new();
    let mut head_done = false;
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        if !head_done {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            raw.drain(..end + 4);
            head_done = true;
        }
        // Chunks: `<hex size>\r\n<data>\r\n`.
        while let Some(line) = raw.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&raw[..line]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
            let Some(size) = size else { return };
            if raw.len() < line + 2 + size + 2 {
                break;
            }
            body.extend_from_slice(&raw[line + 2..line + 2 + size]);
            raw.drain(..line + 2 + size + 2);
        }
        let mut got = 0;
        while let Some(nl) = body.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = body.drain(..=nl).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else { continue };
            let kind = event["Type"].as_str().unwrap_or("?").to_string();
            let key = (
                event["timeNano"].as_i64().unwrap_or(0),
                event["Actor"]["ID"].as_str().unwrap_or("").to_string(),
                event["Action"].as_str().unwrap_or("").to_string(),
                event["node"]["Name"].as_str().unwrap_or("").to_string(),
            );
            if !seen.insert(key) {
                repeats.fetch_add(1, Ordering::Relaxed);
            }
            *counts.lock().expect("counts").entry(kind).or_default() += 1;
            got += 1;
        }
        if got > 0 {
            *last.lock().expect("last") = Instant::now();
        }
    }
}

/// The manager's CPU (user + system) as a share of one core over `span`.
fn cpu_share(pid: u32, span: Duration) -> f64 {
    let before = cpu_seconds(pid);
    std::thread::sleep(span);
    let after = cpu_seconds(pid);
    (after[0] + after[1] - before[0] - before[1]) / span.as_secs_f64() * 100.0
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn fleet_config(engines: usize, first: std::net::Ipv4Addr) -> FleetConfig {
    let mut config = FleetConfig::new(loopback_ips_from(first, engines, 2375));
    config.containers_per_engine = env_or("SWARM_SCALE_CONTAINERS", 30);
    config.latency = Duration::from_millis(env_or("SWARM_SCALE_LATENCY_MS", 1));
    config.labels = vec![(LABEL.0.to_string(), LABEL.1.to_string())];
    config
}

/// Measures one size; returns its rows.
/// Each size gets addresses of its own (`127.<20 + nth>.0.1` on): the
/// previous fleet's sockets may still be closing.
fn one_size(runtime: &tokio::runtime::Runtime, nth: u8, engines: usize, swarm: &str) -> Vec<Row> {
    println!("\n== {engines} engines ==");
    let t = Instant::now();
    let first = std::net::Ipv4Addr::new(127, 20u8.saturating_add(nth), 0, 1);
    let fleet = runtime.block_on(Fleet::start(fleet_config(engines, first)));
    let fleet = fleet.expect("start the hollow fleet");
    let containers = fleet.containers();
    println!("fleet: {engines} hollow engines, {containers} containers, up in {:.1}s", t.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().expect("temp dir");
    let list = dir.path().join("engines");
    let addrs: Vec<String> = fleet.addrs().iter().map(|a| a.to_string()).collect();
    std::fs::write(&list, addrs.join("\n") + "\n").expect("write the engine list");

    let started = Instant::now();
    let manager = Manager::builder(&format!("file://{}", list.display())).binary(swarm).default_refresh().start();
    let pid = manager.pid();
    let (took, info_during) = wait_all_healthy(&manager.addr, engines, started, Duration::from_secs(120));
    let info_during = Latencies::of(info_during);
    match took {
        Some(d) => println!("all {engines} Healthy {:.1}s after the manager's start", d.as_secs_f64()),
        None => println!("not all Healthy within 120 s: {} of {engines}", healthy(&manager.addr)),
    }
    println!("  /info while engines came up: {} samples, max {:.1} ms", info_during.0.len(), info_during.p(1.0));
    let all_loaded = wait_loaded(&manager.addr, containers, started, Duration::from_secs(180));
    match all_loaded {
        Some(d) => println!("all {containers} containers listed {:.1}s after the manager's start", d.as_secs_f64()),
        None => println!("not all containers listed within 180 s: {}", loaded(&manager.addr)),
    }
    let rss_loaded = vm_rss_kib(pid);

    let (info, info_size) = sample_get(&manager.addr, "/v1.41/info", 200);
    println!("GET /info ({info_size} bytes) p50/p90/p99 ms: {}", info.triple());
    let (ps, ps_size) = sample_get(&manager.addr, "/v1.41/containers/json?all=1", 30);
    println!("GET /containers/json?all=1 ({ps_size} bytes) p50/p90/p99 ms: {}", ps.triple());

    let direct_addr = addrs[0].clone();
    let direct = sample_runs(&direct_addr, 100, "direct", false);
    // `SWARM_SCALE_PERF=FILE` records the manager's profile while it runs
    // them (FILE), while it answers /info (FILE.info) and, after the idle
    // figure, at rest (FILE.idle).
    let perf = perf_record("", pid);
    let runs = sample_runs(&manager.addr, 200, "swarm", true);
    perf_stop(perf);
    let perf = perf_record(".info", pid);
    let _ = sample_get(&manager.addr, "/v1.41/info", 30);
    perf_stop(perf);
    println!("docker run -d on one hollow engine p50/p90/p99 ms: {}", direct.triple());
    println!("docker run -d through the manager (constraint + affinity) p50/p90/p99 ms: {}", runs.triple());

    // Event fan-in: every engine churns; one client reads through the manager.
    let rate: f64 = env_or("SWARM_SCALE_EVENT_RATE", 6000.0);
    let churn_secs: u64 = env_or("SWARM_SCALE_CHURN_SECS", 20);
    let reader = EventsReader::open(&manager.addr);
    std::thread::sleep(Duration::from_secs(1));
    let before_client = reader.engine_events();
    let before = fleet.event_counts();
    let churn_start = Instant::now();
    let cpu_before = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    fleet.set_churn(ChurnConfig::all(rate));
    std::thread::sleep(Duration::from_secs(churn_secs));
    fleet.stop_churn();
    let cpu_after = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let busy = |a: [f64; 2], b: [f64; 2]| (b[0] + b[1] - a[0] - a[1]) / churn_secs as f64 * 100.0;
    println!(
        "  CPU during the churn: manager {:.0} %, hollow engines and this bench {:.0} % (of one core)",
        busy(cpu_before.0, cpu_after.0),
        busy(cpu_before.1, cpu_after.1)
    );
    let emitted = fleet.event_counts().since(&before);
    // Drained: nothing new for 3 s, or everything arrived.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while reader.engine_events() - before_client < emitted.total
        && reader.last_read().elapsed() < Duration::from_secs(3)
        && Instant::now() < drain_deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let received = reader.engine_events() - before_client;
    let span = reader.last_read().duration_since(churn_start).max(Duration::from_secs(churn_secs));
    let forwarded = received as f64 / span.as_secs_f64();
    let repeats = reader.repeats.load(Ordering::Relaxed);
    println!(
        "events: {} emitted by the engines in {churn_secs}s (asked {rate}/s), {received} received through the manager \
         in {:.1}s = {forwarded:.0}/s; {repeats} repeated; by type {:?}",
        emitted.total,
        span.as_secs_f64(),
        reader.counts()
    );
    drop(reader);
    let log = manager.log();
    let mentions = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    println!(
        "  manager log: {} events streams lost, {} events clients disconnected",
        mentions("Engine events stream lost"),
        mentions("Events client disconnected")
    );
    if let Some(line) = log.lines().find(|l| l.contains("Engine events stream lost")) {
        println!("  first lost stream: {line}");
    }

    // Idle: the default refresh intervals, nobody asking.
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = cpu_share(pid, Duration::from_secs(env_or("SWARM_SCALE_IDLE_SECS", 30)));
    let rss = vm_rss_kib(pid);
    println!(
        "idle: CPU {idle_cpu:.1} % of a core, RSS {} (after load; {} once all were Healthy)",
        mib(rss),
        mib(rss_loaded)
    );
    if let Some(perf) = perf_record(".idle", pid) {
        std::thread::sleep(Duration::from_secs(10));
        perf_stop(Some(perf));
    }
    drop(manager);
    drop(fleet);

    let startup = took.map_or("> 120 s".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    let listed = all_loaded.map_or("> 180 s".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    let hollow_run = direct.p(0.99);
    vec![
        row("start to all engines Healthy", startup, "< 30 s", Some(took.is_some_and(|d| d < Duration::from_secs(30)))),
        row("start to all containers listed", listed, "", None),
        row("/info max while engines come up, ms", format!("{:.1}", info_during.p(1.0)), "", None),
        row("/info p50/p90/p99 ms", info.triple(), "p99 < 50", Some(info.p(0.99) < 50.0)),
        row("ps -a p50/p90/p99 ms", format!("{} ({containers}+)", ps.triple()), "p99 < 500", Some(ps.p(0.99) < 500.0)),
        row(
            "run -d p50/p90/p99 ms",
            runs.triple(),
            &format!("p99 < 20 + {hollow_run:.1}"),
            Some(runs.p(0.99) < 20.0 + hollow_run),
        ),
        row("run -d on a hollow engine directly p50/p90/p99 ms", direct.triple(), "", None),
        row(
            "events forwarded per s (lost, repeated)",
            format!("{forwarded:.0} ({}, {repeats})", emitted.total.saturating_sub(received)),
            ">= 5000, 0 lost",
            Some(forwarded >= 5000.0 && received >= emitted.total && repeats == 0),
        ),
        row("RSS after the load", mib(rss), "< 300 MiB", Some(rss < 300 * 1024)),
        row("idle CPU, % of one core", format!("{idle_cpu:.1}"), "< 10", Some(idle_cpu < 10.0)),
    ]
}

/// Three replicated managers over `engines` hollow engines registered in
/// etcd: start, RSS of each, failover after a SIGKILL of the primary.
fn replicated(runtime: &tokio::runtime::Runtime, engines: usize, swarm: &str) -> Vec<Row> {
    println!("\n== {engines} engines in etcd, 3 replicated managers ==");
    let fleet = runtime.block_on(Fleet::start(fleet_config(engines, std::net::Ipv4Addr::new(127, 30, 0, 1))));
    let fleet = fleet.expect("start the hollow fleet");
    let store = EtcdServer::start();
    let url = store.url("scale");
    // What `swarm join` does for each engine: a key with a TTL, refreshed.
    let Ok(Backend::Kv(config)) = Backend::parse(&url) else { panic!("{url} is a key-value discovery") };
    let registrations = runtime.block_on(async {
        let store = Store::connect(&config, Duration::from_secs(10)).await.expect("connect to etcd");
        let mut registrations = Vec::new();
        for addr in fleet.addrs() {
            let key = join_key(&config.nodes_dir(), &addr.to_string());
            let registration = store.register(&key, addr.to_string().as_bytes(), Duration::from_secs(180)).await;
            registrations.push(registration.expect("register an engine"));
        }
        registrations
    });
    println!("{} engines registered in etcd", registrations.len());

    let started = Instant::now();
    let mut managers: Vec<Manager> =
        (0..3).map(|_| Manager::builder(&url).binary(swarm).default_refresh().replicated().start()).collect();
    let mut startup = Vec::new();
    for m in &managers {
        let (took, _) = wait_all_healthy(&m.addr, engines, started, Duration::from_secs(180));
        startup.push(took);
    }
    let slowest = startup.iter().map(|t| t.unwrap_or(Duration::MAX)).max().unwrap_or(Duration::MAX);
    println!("all three see {engines} Healthy after {:.1}s", slowest.as_secs_f64());
    for m in &managers {
        wait_loaded(&m.addr, fleet.containers(), started, Duration::from_secs(180));
    }
    println!("all three list every container after {:.1}s", started.elapsed().as_secs_f64());
    let rss: Vec<u64> = managers.iter().map(|m| vm_rss_kib(m.pid())).collect();
    let primary = (0..3).find(|&i| managers[i].role().is_some_and(|(r, _)| r == "primary")).expect("a primary");
    println!("RSS: {:?} (primary is manager {primary})", rss.iter().map(|k| mib(*k)).collect::<Vec<_>>());

    let killed = Instant::now();
    managers[primary].signal("KILL");
    let failover = loop {
        let next = (0..3).filter(|&i| i != primary).find(|&i| managers[i].role().is_some_and(|(r, _)| r == "primary"));
        if next.is_some() {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "no new primary within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    println!("failover after SIGKILL of the primary: {:.2}s", failover.as_secs_f64());
    let _ = managers[primary].wait_exit();
    drop(managers);
    drop(registrations);
    drop(fleet);
    vec![
        row(
            "3 replicas on etcd: start to all Healthy",
            format!("{:.1} s", slowest.as_secs_f64()),
            "< 30 s",
            Some(slowest < Duration::from_secs(30)),
        ),
        row(
            "3 replicas: RSS each",
            rss.iter().map(|k| format!("{:.0}", *k as f64 / 1024.0)).collect::<Vec<_>>().join("/") + " MiB",
            "< 300 MiB",
            Some(rss.iter().all(|k| *k < 300 * 1024)),
        ),
        row(
            "3 replicas: failover after SIGKILL",
            format!("{:.2} s", failover.as_secs_f64()),
            "< 1 s",
            Some(failover < Duration::from_secs(1)),
        ),
    ]
}

fn main() {
    if !requested("scale") {
        return;
    }
    let swarm = env!("CARGO_BIN_EXE_swarm");
    assert!(swarm.contains("/release/"), "the manager must be the release build, got {swarm}");
    let sizes: Vec<usize> = std::env::var("SWARM_SCALE_ENGINES")
        .unwrap_or_else(|_| "100,300,1000".to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the hollow engines");
    // The fleet's churn spawns its tasks on this runtime.
    let _in_runtime = runtime.enter();
    let began = Instant::now();
    let mut table: Vec<(usize, Vec<Row>)> =
        sizes.iter().enumerate().map(|(i, &n)| (n, one_size(&runtime, i as u8, n, swarm))).collect();
    if let Some(&largest) = sizes.iter().max() {
        if env_or("SWARM_SCALE_REPLICATED", 1) == 1 {
            table.push((largest, replicated(&runtime, largest, swarm)));
        }
    }

    println!("\nscale bench, {:.0} s in all (hollow engines answer in {} ms)", began.elapsed().as_secs_f64(), {
        env_or("SWARM_SCALE_LATENCY_MS", 1)
    });
    println!("{:<52} {:>7} {:>30} {:>18}  verdict", "figure", "engines", "measured", "target");
    for (engines, rows) in &table {
        for r in rows {
            let verdict = match r.met {
                Some(true) => "MET",
                Some(false) => "MISSED",
                None => "",
            };
            println!("{:<52} {:>7} {:>30} {:>18}  {verdict}", r.figure, engines, r.measured, r.target);
        }
    }
}

/// With `SWARM_SCALE_PERF=FILE`, starts `perf record` of process `pid`
/// into FILE`suffix`.
fn perf_record(suffix: &str, pid: u32) -> Option<std::process::Child> {
    let out = format!("{}{suffix}", std::env::var("SWARM_SCALE_PERF").ok()?);
    std::process::Command::new("perf")
        .args(["record", "-F", "999", "--call-graph", "dwarf", "-o", &out, "-p", &pid.to_string()])
        .spawn()
        .ok()
}

fn perf_stop(perf: Option<std::process::Child>) {
    if let Some(mut perf) = perf {
        let _ = std::process::Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
        let _ = perf.wait();
    }
}
