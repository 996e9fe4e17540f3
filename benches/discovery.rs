//! Discovery figures, per backend (real Consul, etcd and ZooKeeper; real
//! engines; a release-build manager at `--heartbeat 1s`):
//!
//! 1. time from `swarm join` start to the engine being Healthy in the
//!    manager's `/info` (median and max of several joins);
//! 2. with 200 registered addresses, most of them not answering, the time
//!    for the manager to notice one new real engine.
//!
//! `cargo bench --bench discovery`. Targets: at most 0.3 s for both, on
//! every backend (the original: 0.56 s on its slowest backend).

use std::time::{Duration, Instant};

use swarm_discovery::kv::{join_key, Kind, KvConfig, Store};
use swarm_testkit::bench;
use swarm_testkit::manager::{Manager, SwarmProcess};
use swarm_testkit::store::{ConsulServer, EtcdServer, StoreFixture, ZkServer};
use swarm_testkit::testbed::Testbed;

const TARGET: Duration = Duration::from_millis(300);
const JOINS: usize = 5;
/// Addresses registered besides the real engine in the second figure.
const CROWD: usize = 199;

fn healthy(m: &Manager) -> usize {
    m.healthy_count()
}

/// Spawns `swarm join` for `addr` and returns how long until the manager
/// shows one more healthy engine.
fn time_join(m: &Manager, url: &str, addr: &str, ttl: &str, before: usize) -> (Duration, SwarmProcess) {
    let start = Instant::now();
    let join = SwarmProcess::join(addr, ttl, url);
    while healthy(m) <= before {
        assert!(start.elapsed() < Duration::from_secs(30), "engine never became healthy:\n{}\n{}", join.log(), m.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    (start.elapsed(), join)
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

struct Row {
    backend: &'static str,
    figure: &'static str,
    median: Duration,
    max: Duration,
}

/// Median and max of `JOINS` times from `swarm join` start to the engine
/// `addr` being Healthy in `m`, each join ended (SIGTERM) before the next.
fn join_times(m: &Manager, url: &str, addr: &str, ttl: &str) -> (Duration, Duration) {
    let mut samples = Vec::new();
    for _ in 0..JOINS {
        let (took, mut join) = time_join(m, url, addr, ttl, 0);
        samples.push(took);
        join.signal("TERM");
        m.wait_until(Duration::from_secs(10), "the engine leaves", |m| healthy(m) == 0);
    }
    stats(samples)
}

fn bench_backend<S: StoreFixture>(kind: Kind, tb: &Testbed, rows: &mut Vec<Row>) {
    let store = S::start();
    let (backend, ttl) = (S::NAME, S::JOIN_TTL);
    let url = store.url("bench");
    let manager = Manager::start(&url, &[]);
    let engine = &tb.engines[0].addr;
    let (median, max) = join_times(&manager, &url, engine, ttl);
    rows.push(Row { backend, figure: "join -> Healthy", median, max });

    // A crowd of registrations, most of which never answer.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let config = KvConfig {
        kind,
        endpoints: vec![store.addr().to_string()],
        prefix: "crowd".into(),
        path: swarm_discovery::DEFAULT_NODES_PATH.into(),
        tls: None,
    };
    let _registrations = runtime.block_on(async {
        let store = Store::connect(&config, Duration::from_secs(10)).await.expect("store");
        let mut regs = Vec::new();
        for i in 0..CROWD {
            // 127.0.0.2 ports with nothing listening: they refuse, forever Pending.
            let addr = format!("127.0.0.2:{}", 20000 + i);
            let key = join_key(&config.nodes_dir(), &addr);
            regs.push(store.register(&key, addr.as_bytes(), Duration::from_secs(600)).await.expect("register"));
        }
        (store, regs)
    });
    let crowd_url = store.url("crowd");
    let crowded = Manager::start(&crowd_url, &[]);
    crowded.wait_until(Duration::from_secs(30), "the crowd is known", |m| {
        m.docker_ok(["info"]).contains(&format!(" Nodes: {CROWD}"))
    });
    let (median, max) = join_times(&crowded, &crowd_url, engine, ttl);
    rows.push(Row { backend, figure: "notice 1 new among 200", median, max });
}

fn main() {
    if !bench::requested("discovery") {
        return;
    }
    let tb = Testbed::start(1, &[], false);
    let mut rows = Vec::new();
    bench_backend::<ConsulServer>(Kind::Consul, &tb, &mut rows);
    bench_backend::<EtcdServer>(Kind::Etcd, &tb, &mut rows);
    bench_backend::<ZkServer>(Kind::Zk, &tb, &mut rows);
    println!("\ndiscovery figures ({JOINS} joins each, --heartbeat 1s)\n");
    println!("{:<10} {:<24} {:>9} {:>9} {:>9}  verdict", "backend", "figure", "median", "max", "target");
    for r in &rows {
        println!(
            "{:<10} {:<24} {:>9} {:>9} {:>9}  {}",
            r.backend,
            r.figure,
            ms(r.median),
            ms(r.max),
            format!("<= {}", ms(TARGET)),
            if r.median <= TARGET { "PASS" } else { "MISS" }
        );
    }
    println!("\n(original Classic Swarm, measured the same way: 0.56 s on its slowest backend)");
}
