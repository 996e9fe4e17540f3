//! Core performance figures of the manager, measured against real engines.
//!
//! `cargo bench --bench core` starts its own 3-engine testbed and a release
//! `swarm manage` in front of it, then measures:
//!
//! 1. `GET /containers/{id}/json` latency, direct vs through the manager;
//! 2. `GET /_ping` latency, direct vs through the manager;
//! 3. `GET /containers/json?all=1` latency through the manager with 300
//!    containers on the 3 engines;
//! 4. the manager's RSS with those 300 containers;
//! 5. inspect throughput with `wrk -t1 -c4`, direct vs through the manager,
//!    with the CPU each process spends per request (from `/proc`), as is
//!    and with the manager pinned to one core, wrk and dockerd to the other;
//! 6. `POST /containers/create` latency, direct vs through the manager (the
//!    manager's create pinned to the same engine by a constraint);
//! 7. a reference for 5: the same wrk runs through a byte relay (blocking
//!    threads copying bytes, no HTTP), with its CPU
//!    per request and dockerd's, as is and pinned like the manager; and
//!    dockerd's CPU per request direct at lower rates (`wrk -c1`, `-c2`);
//! 8. 5 again through a second manager whose runtime has one worker thread
//!    (`TOKIO_WORKER_THREADS=1`) instead of one per core.
//!
//! Latencies come from one persistent HTTP/1.1 connection, requests sent one
//! after the other. Direct and manager samples are taken in alternating
//! blocks so that background load affects both alike. Everything is torn
//! down at the end, also on panic (the fixtures' `Drop`).
//!
//! Environment knobs: `SWARM_BENCH_REQUESTS` (samples per latency figure,
//! default 2000), `SWARM_BENCH_WRK_SECS` (default 5), `SWARM_BENCH_CONTAINERS`
//! (default 300).

use std::process::Command;
use std::time::{Duration, Instant};

use swarm_testkit::bench::{
    create_containers, percentile, pin, requested, vm_rss_kib, wait_running, wrk, wrk_on, wrk_with, ByteRelay, Sampler,
    WrkResult,
};
use swarm_testkit::http::Conn;
use swarm_testkit::manager::Manager;
use swarm_testkit::testbed::Testbed;

const API: &str = "/v1.41";
const ENGINES: usize = 3;
/// Requests sent (and discarded) on a connection before it is measured.
const WARMUP: usize = 300;
/// Direct and manager samples alternate in this many blocks.
const BLOCKS: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|v| *v > 0).unwrap_or(default)
}

/// One line of the verdict table.
struct Figure {
    name: &'static str,
    measured: String,
    target: String,
    original: &'static str,
    pass: bool,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would run this
    // too: only measure when asked to.
    if !requested("core") {
        return;
    }
    let requests = env_usize("SWARM_BENCH_REQUESTS", 2000);
    let wrk_secs = env_usize("SWARM_BENCH_WRK_SECS", 5);
    let total_containers = env_usize("SWARM_BENCH_CONTAINERS", 300).max(ENGINES);

    let swarm = env!("CARGO_BIN_EXE_swarm");
    assert!(swarm.contains("/release/"), "the manager must be the release build, got {swarm}");
    println!("manager binary: {swarm}");
    print_machine();

    let started = Instant::now();
    let tb = Testbed::start(ENGINES, &[], false);

    // One running busybox per engine.
    let ids: Vec<String> = tb
        .engines
        .iter()
        .map(|e| tb.docker_ok(&e.name, ["run", "-d", "--label", "swarm-bench=1", "busybox", "sleep", "3600"]))
        .collect();

    let discovery = tb.addrs().join(",");
    let manager = Manager::builder(&discovery).binary(swarm).default_refresh().start();
    manager.wait_healthy_within(ENGINES, Duration::from_secs(60));
    manager.wait_until(Duration::from_secs(60), "the manager lists the containers", |m| {
        m.containers()
            .is_some_and(|list| ids.iter().all(|id| list.iter().any(|c| c["Id"].as_str() == Some(id.as_str()))))
    });
    println!(
        "setup: testbed + manager ready in {:.1}s (manager pid {})",
        started.elapsed().as_secs_f64(),
        manager.pid()
    );

    let engine = &tb.engines[0];
    let id = &ids[0];
    let inspect = format!("{API}/containers/{id}/json");
    let ping = "/_ping".to_string();

    // 1 + 2: latency, direct vs manager.
    let mut direct = Conn::connect(&engine.addr);
    let mut through = Conn::connect(&manager.addr);
    let inspect_lat = Sampler::pair((&mut direct, &inspect), (&mut through, &inspect), WARMUP, requests, BLOCKS);
    let ping_lat = Sampler::pair((&mut direct, &ping), (&mut through, &ping), WARMUP, requests, BLOCKS);
    drop((direct, through));
    let rss_small = vm_rss_kib(manager.pid());

    // 5: throughput with wrk (before the 300 containers, like the latencies).
    let wrk_direct_url = format!("http://{}{inspect}", engine.addr);
    let wrk_manager_url = format!("http://{}{inspect}", manager.addr);
    // CPU accounting: the manager and the engine's dockerd.
    let dockerd_pid = std::fs::read_to_string(tb.dir.join(&engine.name).join("dockerd.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    let watch: Vec<u32> = [Some(manager.pid()), dockerd_pid].into_iter().flatten().collect();
    // Warm both paths (the manager opens its upstream connections).
    wrk(&wrk_direct_url, 1, &[]);
    wrk(&wrk_manager_url, 1, &[]);
    let mut wrk_runs: Vec<(WrkResult, WrkResult)> = Vec::new();
    for _ in 0..2 {
        let d = wrk(&wrk_direct_url, wrk_secs, &watch);
        let m = wrk(&wrk_manager_url, wrk_secs, &watch);
        wrk_runs.push((d, m));
    }
    let wrk_direct = WrkResult::combine(wrk_runs.iter().map(|r| &r.0));
    let wrk_manager = WrkResult::combine(wrk_runs.iter().map(|r| &r.1));
    // The same with the manager on CPU 1, wrk and dockerd on CPU 0: the
    // manager no longer takes cycles from the engine or the client.
    let pinned = dockerd_pid.map(|dockerd| {
        pin(manager.pid(), "1");
        pin(dockerd, "0");
        let mut runs = Vec::new();
        for _ in 0..2 {
            runs.push((
                wrk_on(Some(0), &wrk_direct_url, wrk_secs, &watch),
                wrk_on(Some(0), &wrk_manager_url, wrk_secs, &watch),
            ));
        }
        pin(manager.pid(), "0,1");
        pin(dockerd, "0,1");
        (WrkResult::combine(runs.iter().map(|r| &r.0)), WrkResult::combine(runs.iter().map(|r| &r.1)))
    });

    // 7: a reference relay, a byte relay in this process (its CPU counters
    // are the relay's: the main thread only waits for wrk meanwhile).
    let relay = ByteRelay::start(&engine.addr);
    let relay_url = format!("http://{}{inspect}", relay.addr);
    let relay_watch: Vec<u32> = [Some(std::process::id()), dockerd_pid].into_iter().flatten().collect();
    wrk(&relay_url, 1, &[]);
    let relay_runs: Vec<WrkResult> = (0..2).map(|_| wrk(&relay_url, wrk_secs, &relay_watch)).collect();
    let relayed = WrkResult::combine(relay_runs.iter());
    let relay_pinned = dockerd_pid.map(|dockerd| {
        pin(std::process::id(), "1");
        pin(dockerd, "0");
        let runs: Vec<WrkResult> = (0..2).map(|_| wrk_on(Some(0), &relay_url, wrk_secs, &relay_watch)).collect();
        pin(std::process::id(), "0,1");
        pin(dockerd, "0,1");
        WrkResult::combine(runs.iter())
    });

    // 8: a manager with one runtime worker: no hand-over between workers.
    let one_worker = Manager::builder(&discovery).binary(swarm).default_refresh().workers(1).start();
    one_worker.wait_healthy_within(ENGINES, Duration::from_secs(60));
    let one_worker_url = format!("http://{}{inspect}", one_worker.addr);
    let one_worker_watch: Vec<u32> = [Some(one_worker.pid()), dockerd_pid].into_iter().flatten().collect();
    wrk(&one_worker_url, 1, &[]);
    let one_worker_runs: Vec<WrkResult> = (0..2).map(|_| wrk(&one_worker_url, wrk_secs, &one_worker_watch)).collect();
    let one_worker_wrk = WrkResult::combine(one_worker_runs.iter());
    drop(one_worker);

    // dockerd's CPU per request direct at lower request rates (fewer
    // connections): whether what it spends more behind a relay comes with
    // the lower rate rather than with what the relay sends.
    let slower: Vec<(usize, WrkResult)> =
        [1, 2].into_iter().map(|c| (c, wrk_with(None, c, &wrk_direct_url, wrk_secs, &watch))).collect();

    // 6: create latency, direct vs through the manager, on the same engine.
    let (create_direct, create_manager) = create_latencies(&engine.addr, &manager.addr, &engine.name, requests / 10);

    // 3 + 4: the container list with 300 containers.
    let t = Instant::now();
    let extra = total_containers - ENGINES;
    create_containers(&tb, extra);
    println!("setup: {extra} more containers created and started in {:.1}s", t.elapsed().as_secs_f64());
    let caught_up = wait_running(&manager, total_containers, Duration::from_secs(180), Duration::from_secs(5));
    println!("setup: manager lists all {total_containers} running containers {:.1}s later", caught_up.as_secs_f64());
    let list_path = format!("{API}/containers/json?all=1");
    let mut direct = Conn::connect(&engine.addr);
    let mut through = Conn::connect(&manager.addr);
    let list_bytes = through.get_ok(&list_path).len();
    let list_lat = Sampler::pair((&mut direct, &list_path), (&mut through, &list_path), WARMUP / 3, requests, BLOCKS);
    // Inspect again, now that the manager caches 300 containers (info only).
    let inspect_big = Sampler::pair((&mut direct, &inspect), (&mut through, &inspect), WARMUP, requests, BLOCKS);
    drop((direct, through));
    let rss_big = vm_rss_kib(manager.pid());

    // Raw numbers.
    println!();
    println!("raw latencies ({requests} sequential keep-alive requests each, after {WARMUP} warm-up; ms)");
    println!("{:<52} {:>8} {:>8} {:>8} {:>8}", "request", "p50", "p90", "p99", "max");
    let raw = |name: &str, s: &[f64]| {
        println!(
            "{:<52} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            name,
            percentile(s, 0.50),
            percentile(s, 0.90),
            percentile(s, 0.99),
            percentile(s, 1.0)
        );
    };
    raw("inspect, direct", &inspect_lat.0);
    raw("inspect, through the manager", &inspect_lat.1);
    raw("_ping, direct", &ping_lat.0);
    raw("_ping, through the manager", &ping_lat.1);
    raw(&format!("ps -a, direct to one engine ({} containers)", total_containers / ENGINES), &list_lat.0);
    raw(&format!("ps -a, through the manager ({total_containers} containers)"), &list_lat.1);
    raw(&format!("inspect, direct ({total_containers} containers)"), &inspect_big.0);
    raw(&format!("inspect, through the manager ({total_containers} containers)"), &inspect_big.1);
    println!("list answer through the manager: {list_bytes} bytes");
    println!();
    println!("wrk -t1 -c4 -d{wrk_secs}s (2 runs each, alternating) of GET {inspect}");
    for (i, (d, m)) in wrk_runs.iter().enumerate() {
        println!(
            "  run {}: direct {:>8.0} req/s ({} errors, {} connections opened)   manager {:>8.0} req/s ({} errors, {} \
             connections opened, wrk's and the manager's)",
            i + 1,
            d.rps(),
            d.errors,
            d.connects,
            m.rps(),
            m.errors,
            m.connects
        );
    }
    let show = |[user, sys]: [f64; 2]| format!("{:.1} us ({user:.1} user + {sys:.1} sys)", user + sys);
    if dockerd_pid.is_some() {
        println!("CPU per request, direct: dockerd {}", show(wrk_direct.cpu_us_per_request(1)));
        println!(
            "CPU per request, through the manager: dockerd {}, manager {}",
            show(wrk_manager.cpu_us_per_request(1)),
            show(wrk_manager.cpu_us_per_request(0))
        );
    }
    if let Some((d, m)) = &pinned {
        println!(
            "pinned (manager on CPU 1; wrk, dockerd on CPU 0): direct {:.0} req/s, manager {:.0} req/s; \
             CPU per request: dockerd direct {}, dockerd relayed {}, manager {}",
            d.rps(),
            m.rps(),
            show(d.cpu_us_per_request(1)),
            show(m.cpu_us_per_request(1)),
            show(m.cpu_us_per_request(0))
        );
    }
    // A run through something other than the manager: its rate, and the
    // CPU per request of the process in front (`who`) and of dockerd.
    let in_front = |what: &str, who: &str, r: &WrkResult| {
        println!(
            "{what}: {:.0} req/s; CPU per request: {who} {}, dockerd {}",
            r.rps(),
            show(r.cpu_us_per_request(0)),
            show(r.cpu_us_per_request(1))
        );
    };
    in_front("byte relay (reference)", "relay", &relayed);
    if let (Some(r), Some((d, _))) = (&relay_pinned, &pinned) {
        println!(
            "byte relay pinned like the manager: {:.0} req/s ({:.0} % of direct pinned); CPU per request: relay {}, \
             dockerd {}",
            r.rps(),
            r.rps() / d.rps() * 100.0,
            show(r.cpu_us_per_request(0)),
            show(r.cpu_us_per_request(1))
        );
    }
    in_front("manager with one runtime worker", "manager", &one_worker_wrk);
    if dockerd_pid.is_some() {
        for (connections, r) in &slower {
            println!(
                "direct with -c{connections}: {:.0} req/s; dockerd CPU per request {}",
                r.rps(),
                show(r.cpu_us_per_request(1))
            );
        }
    }
    raw("create, direct", &create_direct);
    raw("create, through the manager (constraint:node==)", &create_manager);
    println!("manager RSS: {} KiB with {ENGINES} containers, {} KiB with {total_containers}", rss_small, rss_big);

    // Verdicts.
    let p50 = |s: &[f64]| percentile(s, 0.50);
    let p99 = |s: &[f64]| percentile(s, 0.99);
    let inspect_added = p50(&inspect_lat.1) - p50(&inspect_lat.0);
    let ping_added = p50(&ping_lat.1) - p50(&ping_lat.0);
    let list_p50 = p50(&list_lat.1);
    let rss_mb = rss_big as f64 / 1024.0;
    let ratio = wrk_manager.rps() / wrk_direct.rps() * 100.0;
    let cpu_us = |r: &WrkResult, i: usize| {
        let [user, sys] = r.cpu_us_per_request(i);
        user + sys
    };
    let manager_cpu = cpu_us(&wrk_manager, 0);
    let dockerd_extra = cpu_us(&wrk_manager, 1) - cpu_us(&wrk_direct, 1);
    let pinned_ratio = pinned.as_ref().map_or(f64::NAN, |(d, m)| m.rps() / d.rps() * 100.0);
    let pinned_manager_cpu = pinned.as_ref().map_or(f64::NAN, |(_, m)| cpu_us(m, 0));
    let create_added = p50(&create_manager) - p50(&create_direct);
    let relay_cpu = cpu_us(&relayed, 0);
    let relay_ratio = relayed.rps() / wrk_direct.rps() * 100.0;
    let relay_pinned_ratio = match (&relay_pinned, &pinned) {
        (Some(r), Some((d, _))) => r.rps() / d.rps() * 100.0,
        _ => f64::NAN,
    };
    let relay_dockerd_extra = cpu_us(&relayed, 1) - cpu_us(&wrk_direct, 1);
    let one_worker_cpu = cpu_us(&one_worker_wrk, 0);
    let one_worker_ratio = one_worker_wrk.rps() / wrk_direct.rps() * 100.0;
    let figures = [
        Figure {
            name: "inspect p50 added by manager",
            measured: format!("{inspect_added:.2} ms"),
            target: "<= 0.30 ms".into(),
            original: "1.15 ms",
            pass: inspect_added <= 0.30,
        },
        Figure {
            name: "inspect p50 direct / manager",
            measured: format!("{:.2}/{:.2} ms", p50(&inspect_lat.0), p50(&inspect_lat.1)),
            target: "-".into(),
            original: "0.82/1.97 ms",
            pass: true,
        },
        Figure {
            name: "inspect p99 direct / manager",
            measured: format!("{:.2}/{:.2} ms", p99(&inspect_lat.0), p99(&inspect_lat.1)),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            // No target: the manager answers /_ping itself, like the original.
            name: "_ping p50 added by manager",
            measured: format!("{ping_added:.2} ms"),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "_ping p50 direct / manager",
            measured: format!("{:.2}/{:.2} ms", p50(&ping_lat.0), p50(&ping_lat.1)),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "_ping p99 direct / manager",
            measured: format!("{:.2}/{:.2} ms", p99(&ping_lat.0), p99(&ping_lat.1)),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "ps -a p50, 300 containers",
            measured: format!("{list_p50:.2} ms"),
            target: "<= 2.00 ms".into(),
            original: "5.8 ms",
            pass: list_p50 <= 2.0,
        },
        Figure {
            name: "ps -a p99, 300 containers",
            measured: format!("{:.2} ms", p99(&list_lat.1)),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "manager RSS, 300 containers",
            measured: format!("{rss_mb:.1} MB"),
            target: "<= 20 MB".into(),
            original: "22 MB",
            pass: rss_mb <= 20.0,
        },
        Figure {
            name: "inspect req/s direct / manager",
            measured: format!("{:.0}/{:.0}", wrk_direct.rps(), wrk_manager.rps()),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "inspect throughput manager/direct",
            measured: format!("{ratio:.0} %"),
            target: ">= 80 %".into(),
            original: "22 %",
            pass: ratio >= 80.0,
        },
        Figure {
            name: "inspect throughput, manager pinned",
            measured: format!("{pinned_ratio:.0} %"),
            target: ">= 90 %".into(),
            original: "-",
            pass: pinned_ratio >= 90.0,
        },
        Figure {
            name: "manager CPU per relayed inspect",
            measured: format!("{manager_cpu:.1} us"),
            target: "<= 20 us".into(),
            original: "-",
            pass: manager_cpu <= 20.0,
        },
        Figure {
            name: "  the same, manager pinned",
            measured: format!("{pinned_manager_cpu:.1} us"),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "dockerd CPU relayed - direct",
            measured: format!("{dockerd_extra:.1} us"),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "one worker: manager CPU per request",
            measured: format!("{one_worker_cpu:.1} us"),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "one worker: throughput",
            measured: format!("{one_worker_ratio:.0} %"),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "byte relay: CPU per request",
            measured: format!("{relay_cpu:.1} us"),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "byte relay: throughput",
            measured: format!("{relay_ratio:.0} %"),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "byte relay: throughput pinned",
            measured: format!("{relay_pinned_ratio:.0} %"),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "byte relay: dockerd CPU - direct",
            measured: format!("{relay_dockerd_extra:.1} us"),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "create p50 direct / manager",
            measured: format!("{:.2}/{:.2} ms", p50(&create_direct), p50(&create_manager)),
            target: "-".into(),
            original: "-",
            pass: true,
        },
        Figure {
            name: "create p50 added by manager",
            measured: format!("{create_added:.2} ms"),
            target: "< 0.50 ms".into(),
            original: "3.6 ms",
            pass: create_added < 0.5,
        },
    ];
    println!();
    println!("{:<36} {:>14}  {:<11} {:<13} verdict", "figure", "measured", "target", "original");
    for f in &figures {
        let verdict = if f.target == "-" {
            "info"
        } else if f.pass {
            "PASS"
        } else {
            "MISS"
        };
        println!("{:<36} {:>14}  {:<11} {:<13} {verdict}", f.name, f.measured, f.target, f.original);
    }
    let missed = figures.iter().filter(|f| f.target != "-" && !f.pass).count();
    println!(
        "\n{} of {} targets met; total bench time {:.0}s (MB = 2^20 bytes; MB in RSS = VmRSS/1024)",
        figures.iter().filter(|f| f.target != "-").count() - missed,
        figures.iter().filter(|f| f.target != "-").count(),
        started.elapsed().as_secs_f64()
    );
    print_machine();

    // Manager first, then the testbed (also what unwinding does on panic).
    drop(manager);
    drop(tb);
}

/// `POST /containers/create` latencies (ms, sorted), `n` each, direct on
/// the engine at `engine` and through the manager pinned to that engine
/// (`node`), alternating; every container made is removed afterwards.
fn create_latencies(engine: &str, manager: &str, node: &str, n: usize) -> (Vec<f64>, Vec<f64>) {
    let direct_body = br#"{"Image":"busybox","Cmd":["true"],"Labels":{"swarm-bench-create":"1"}}"#.to_vec();
    let manager_body = format!(
        r#"{{"Image":"busybox","Cmd":["true"],"Labels":{{"swarm-bench-create":"1"}},"Env":["constraint:node=={node}"]}}"#
    )
    .into_bytes();
    let mut direct = Conn::connect(engine);
    let mut through = Conn::connect(manager);
    let path = format!("{API}/containers/create");
    let mut made = Vec::new();
    let mut create = |conn: &mut Conn, body: &[u8], out: &mut Vec<f64>| {
        let t = Instant::now();
        let status = conn.request("POST", &path, Some(body)).expect("create");
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 201, "create: {}", String::from_utf8_lossy(conn.body()));
        let answer: serde_json::Value = serde_json::from_slice(conn.body()).unwrap_or_default();
        made.push(answer["Id"].as_str().unwrap_or_default().to_string());
    };
    let (mut d, mut m) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // A few unmeasured first (connections, caches).
    let mut warmup = Vec::new();
    for _ in 0..5 {
        create(&mut direct, &direct_body, &mut warmup);
        create(&mut through, &manager_body, &mut warmup);
    }
    for _ in 0..n {
        create(&mut direct, &direct_body, &mut d);
        create(&mut through, &manager_body, &mut m);
    }
    for id in made {
        let _ = direct.request("DELETE", &format!("{API}/containers/{id}?force=1"), None);
    }
    d.sort_by(f64::total_cmp);
    m.sort_by(f64::total_cmp);
    (d, m)
}

/// CPU count and load, since the figures depend on them.
fn print_machine() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let wrk_version = Command::new("wrk")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
        .unwrap_or_else(|_| "wrk not found".into());
    println!(
        "machine: {cpus} CPUs, loadavg {}; {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        wrk_version.trim()
    );
}
