//! `docker ps` while one engine hangs, against the same with every engine
//! healthy (issue 11's figure: within 2x).
//!
//! `cargo bench --bench hardening` starts a 3-engine testbed with 30
//! containers and a release manager (quick refresh settings),
//! then samples `GET /containers/json?all=1` (what `docker ps -a` sends) on
//! a keep-alive connection and the `docker ps -a` CLI itself, first with all
//! engines healthy, then with node-02's dockerd stopped by SIGSTOP (before
//! and after it is flagged Unhealthy).

use std::time::{Duration, Instant};

use swarm_testkit::bench::{create_containers, percentile, requested};
use swarm_testkit::http::Conn;
use swarm_testkit::manager::Manager;
use swarm_testkit::testbed::Testbed;

/// p50 and p99 in ms of `samples` API calls and of `cli_runs` CLI runs.
fn sample(m: &Manager, samples: usize, cli_runs: usize) -> ([f64; 2], [f64; 2]) {
    let mut conn = Conn::connect(&m.addr);
    let mut api: Vec<f64> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            conn.get_ok("/v1.41/containers/json?all=1");
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mut cli: Vec<f64> = (0..cli_runs)
        .map(|_| {
            let start = Instant::now();
            m.docker_ok(["ps", "-a", "-q"]);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    api.sort_by(f64::total_cmp);
    cli.sort_by(f64::total_cmp);
    let q = |v: &[f64]| [percentile(v, 0.5), percentile(v, 0.99)];
    (q(&api), q(&cli))
}

fn main() {
    if !requested("hardening") {
        return;
    }
    let swarm = env!("CARGO_BIN_EXE_swarm");
    assert!(swarm.contains("/release/"), "the manager must be the release build, got {swarm}");
    let tb = Testbed::start(3, &[], false);
    create_containers(&tb, 30);
    let m = Manager::builder(&tb.addrs().join(",")).binary(swarm).start();
    m.wait_healthy(3);
    let (samples, cli_runs) = (500, 20);

    let healthy = sample(&m, samples, cli_runs);
    tb.freeze("node-02");
    let frozen = sample(&m, samples, cli_runs);
    m.wait_until(Duration::from_secs(60), "node-02 is flagged", |m| {
        m.get("/info").is_ok_and(|(_, body)| body.contains("\"Unhealthy\""))
    });
    let flagged = sample(&m, samples, cli_runs);
    tb.thaw("node-02");
    m.wait_healthy(3);

    println!();
    println!("{:<52} {:>16} {:>16}  verdict", "figure (p50 / p99 ms)", "measured", "target");
    let row = |name: &str, q: [f64; 2], base: Option<[f64; 2]>| {
        let (target, verdict) = match base {
            Some(b) => (format!("<= {:.1} / {:.1}", 2.0 * b[0], 2.0 * b[1]), {
                if q[0] <= 2.0 * b[0] && q[1] <= 2.0 * b[1] {
                    "PASS"
                } else {
                    "MISS"
                }
            }),
            None => ("-".to_string(), "info"),
        };
        println!("{name:<52} {:>16} {target:>16}  {verdict}", format!("{:.2} / {:.2}", q[0], q[1]));
    };
    // The figure is the CLI's. The API alone answers in tens of
    // microseconds, where twice the healthy figure is below what this
    // machine resolves: shown for information.
    row("GET /containers/json?all=1, all healthy", healthy.0, None);
    row("GET /containers/json?all=1, node-02 frozen", frozen.0, None);
    row("GET /containers/json?all=1, node-02 flagged", flagged.0, None);
    row("docker ps -a (CLI), all healthy", healthy.1, None);
    row("docker ps -a (CLI), node-02 frozen", frozen.1, Some(healthy.1));
    row("docker ps -a (CLI), node-02 flagged", flagged.1, Some(healthy.1));
}
