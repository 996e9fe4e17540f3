//! What TLS costs through the manager, measured against real engines.
//!
//! `cargo bench --bench tls` starts two one-engine testbeds, one plain and
//! one whose engine runs `--tlsverify`, and a release `swarm manage` in
//! front of each (plain, and `--tlsverify` with the testbed's certificates),
//! then measures:
//!
//! 1. `GET /containers/{id}/json` p50/p99 on one kept-alive connection, TLS
//!    against plain (samples in alternating blocks, so background load
//!    affects both alike);
//! 2. the same request's throughput on 4 kept-alive connections;
//! 3. new TLS connections per second the manager accepts: full handshakes
//!    (no session resumption), one `/_ping` each, from 2 client threads;
//! 4. the replica hop over TLS: inspect through a replica against through
//!    the primary, two `--replication` managers on a local etcd, TLS and plain.
//!
//! The clients run on the same 2 CPUs as the manager and the engines; the
//! handshake rate includes the clients' own share of the cryptography.
//!
//! Environment knobs: `SWARM_BENCH_REQUESTS` (samples per latency figure,
//! default 2000), `SWARM_BENCH_SECS` (seconds per throughput and handshake
//! run, default 5).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_testkit::bench::{percentile, requested, Sampler};
use swarm_testkit::http::{Conn, Link};
use swarm_testkit::manager::{Manager, SwarmProcess};
use swarm_testkit::store::{EtcdServer, StoreFixture};
use swarm_testkit::testbed::Testbed;

const API: &str = "/v1.41";
/// Requests sent (and discarded) on a connection before it is measured.
const WARMUP: usize = 300;
/// TLS and plain samples alternate in this many blocks.
const BLOCKS: usize = 10;
/// Kept-alive connections of the throughput runs.
const CONNECTIONS: usize = 4;
/// Client threads of the handshake runs.
const HANDSHAKERS: usize = 2;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|v| *v > 0).unwrap_or(default)
}

/// A manager in front of its own one-engine testbed, with one running
/// container to inspect.
struct Setup {
    testbed: Testbed,
    manager: Manager,
    inspect: String,
}

impl Setup {
    fn start(swarm: &str, tls: bool) -> Setup {
        let testbed = if tls { Testbed::start_tls(1, false) } else { Testbed::start(1, &[], false) };
        let engine = &testbed.engines[0].name;
        let id = testbed.docker_ok(engine, ["run", "-d", "--label", "swarm-bench=1", "busybox", "sleep", "3600"]);
        let mut builder = Manager::builder(&testbed.addrs().join(",")).binary(swarm).default_refresh();
        if let Some(tls) = &testbed.tls {
            builder = builder.tls(&tls.client.dir);
        }
        let manager = builder.start();
        manager.wait_healthy_within(1, Duration::from_secs(60));
        manager.wait_until(Duration::from_secs(60), "the manager lists the container", |m| {
            m.containers().is_some_and(|list| list.iter().any(|c| c["Id"].as_str() == Some(id.as_str())))
        });
        Setup { testbed, manager, inspect: format!("{API}/containers/{id}/json") }
    }

    fn conn(&self) -> Conn {
        Conn::connect_over(&self.manager.addr, self.manager.link.clone())
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.manager.addr))
    }
}

/// Requests per second of `CONNECTIONS` kept-alive connections sending
/// `path` one after the other for `secs`.
fn throughput(setup: &Setup, path: &str, secs: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let mut conn = setup.conn();
            conn.get_ok(path);
            let (stop, done, path) = (stop.clone(), done.clone(), path.to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    conn.get_ok(&path);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs as u64));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("a throughput worker panicked");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// New connections per second, each a full TLS handshake (no resumption)
/// and one `/_ping`, from `HANDSHAKERS` threads for `secs`.
fn handshakes(manager: &Manager, secs: usize) -> (f64, u64) {
    let link = manager.link.without_resumption();
    assert!(matches!(link, Link::Tls(_)), "the handshake figure needs a TLS manager");
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let workers: Vec<_> = (0..HANDSHAKERS)
        .map(|_| {
            let (stop, done, failed, link, addr) =
                (stop.clone(), done.clone(), failed.clone(), link.clone(), manager.addr.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answered = Conn::connect_over(&addr, link.clone())
                        .and_then(|mut conn| conn.request("GET", "/_ping", None));
                    match answered {
                        Ok(200) => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs as u64));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("a handshake worker panicked");
    }
    (done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(), failed.load(Ordering::Relaxed))
}

/// Inspect latencies (ms, sorted) through the primary and through a
/// replica of two `--replication` managers in front of `setup`'s engine.
fn replica_hop(setup: &Setup, swarm: &str, store: &EtcdServer, requests: usize) -> (Vec<f64>, Vec<f64>) {
    let tls = setup.testbed.tls.as_ref();
    let url = store.url(if tls.is_some() { "tls" } else { "plain" });
    let engine = &setup.testbed.engines[0].addr;
    let _join = SwarmProcess::join(engine, "3s", &url);
    let managers: Vec<Manager> = (0..2)
        .map(|_| {
            let mut builder = Manager::builder(&url).binary(swarm).default_refresh().replicated();
            if let Some(tls) = tls {
                builder = builder.tls(&tls.client.dir);
            }
            builder.start()
        })
        .collect();
    for m in &managers {
        m.wait_healthy_within(1, Duration::from_secs(60));
    }
    let primary = managers
        .iter()
        .position(|m| m.role().is_some_and(|(role, _)| role == "primary"))
        .unwrap_or_else(|| panic!("no primary among the replicated managers"));
    let (p, r) = (&managers[primary], &managers[1 - primary]);
    r.wait_until(Duration::from_secs(30), "the replica knows the primary", |r| {
        r.role().is_some_and(|(role, primary)| role == "replica" && primary == p.addr)
    });
    let connect = |m: &Manager| {
        Conn::connect_over(&m.addr, m.link.clone()).unwrap_or_else(|e| panic!("cannot connect to {}: {e}", m.addr))
    };
    let (mut to_primary, mut to_replica) = (connect(p), connect(r));
    let path = &setup.inspect;
    Sampler::pair((&mut to_primary, path), (&mut to_replica, path), WARMUP, requests, BLOCKS)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would run this
    // too: only measure when asked to.
    if !requested("tls") {
        return;
    }
    let requests = env_usize("SWARM_BENCH_REQUESTS", 2000);
    let secs = env_usize("SWARM_BENCH_SECS", 5);
    let swarm = env!("CARGO_BIN_EXE_swarm");
    assert!(swarm.contains("/release/"), "the manager must be the release build, got {swarm}");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("manager binary: {swarm}");
    println!("machine: {cpus} CPUs, loadavg {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));

    let started = Instant::now();
    let plain = Setup::start(swarm, false);
    let tls = Setup::start(swarm, true);
    println!("setup: two testbeds and managers ready in {:.1}s", started.elapsed().as_secs_f64());

    // 1: kept-alive latency.
    let (mut plain_conn, mut tls_conn) = (plain.conn(), tls.conn());
    let (plain_lat, tls_lat) =
        Sampler::pair((&mut plain_conn, &plain.inspect), (&mut tls_conn, &tls.inspect), WARMUP, requests, BLOCKS);
    drop((plain_conn, tls_conn));

    // 2: throughput, alternating runs.
    let (mut plain_rps, mut tls_rps) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        plain_rps.push(throughput(&plain, &plain.inspect, secs));
        tls_rps.push(throughput(&tls, &tls.inspect, secs));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;

    // 3: full handshakes.
    handshakes(&tls.manager, 1);
    let (handshake_rate, handshake_failures) = handshakes(&tls.manager, secs);

    // 4: the replica hop, TLS and plain.
    let store = EtcdServer::start();
    let plain_hop = replica_hop(&plain, swarm, &store, requests);
    let tls_hop = replica_hop(&tls, swarm, &store, requests);

    let p50 = |s: &[f64]| percentile(s, 0.50);
    let p99 = |s: &[f64]| percentile(s, 0.99);
    println!();
    println!("raw latencies ({requests} sequential kept-alive requests each, after {WARMUP} warm-up; ms)");
    println!("{:<48} {:>8} {:>8} {:>8}", "GET /containers/{id}/json", "p50", "p90", "p99");
    for (name, s) in [
        ("plain manager, plain engine", &plain_lat),
        ("TLS manager, TLS engine", &tls_lat),
        ("plain: through the primary", &plain_hop.0),
        ("plain: through a replica", &plain_hop.1),
        ("TLS: through the primary", &tls_hop.0),
        ("TLS: through a replica", &tls_hop.1),
    ] {
        println!("{name:<48} {:>8.3} {:>8.3} {:>8.3}", p50(s), percentile(s, 0.90), p99(s));
    }
    println!();
    println!("throughput, {CONNECTIONS} kept-alive connections, {secs}s runs (req/s):");
    println!("  plain {:?}", plain_rps.iter().map(|r| r.round()).collect::<Vec<_>>());
    println!("  TLS   {:?}", tls_rps.iter().map(|r| r.round()).collect::<Vec<_>>());
    println!("handshakes: {handshake_rate:.0}/s over {secs}s from {HANDSHAKERS} threads, {handshake_failures} failed");

    let added = p50(&tls_lat) - p50(&plain_lat);
    let tls_hop_added = p50(&tls_hop.1) - p50(&tls_hop.0);
    let plain_hop_added = p50(&plain_hop.1) - p50(&plain_hop.0);
    let rows = [
        ("inspect p50, TLS - plain", format!("{added:+.3} ms"), "<= +0.100 ms".to_string(), Some(added <= 0.1)),
        ("inspect p99, TLS / plain", format!("{:.3} / {:.3} ms", p99(&tls_lat), p99(&plain_lat)), "-".into(), None),
        (
            "inspect throughput, TLS / plain",
            format!(
                "{:.0} / {:.0} req/s ({:.0} %)",
                mean(&tls_rps),
                mean(&plain_rps),
                mean(&tls_rps) / mean(&plain_rps) * 100.0
            ),
            "-".into(),
            None,
        ),
        (
            "full TLS handshakes accepted",
            format!("{handshake_rate:.0}/s"),
            ">= 1000/s".into(),
            Some(handshake_rate >= 1000.0 && handshake_failures == 0),
        ),
        ("replica hop p50 added, TLS", format!("{tls_hop_added:+.3} ms"), "-".into(), None),
        ("replica hop p50 added, plain", format!("{plain_hop_added:+.3} ms"), "-".into(), None),
    ];
    println!();
    println!("{:<34} {:>36} {:>14}  verdict", "figure", "measured", "target");
    for (name, measured, target, pass) in rows {
        let verdict = match pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "info",
        };
        println!("{name:<34} {measured:>36} {target:>14}  {verdict}");
    }
}
