//! `swarm join`, `swarm list` and `swarm manage` on real Consul, etcd and
//! ZooKeeper servers, with real engines. Needs root and `sudo scripts/install-deps.sh`.

use std::time::{Duration, Instant};

use swarm_testkit::manager::{swarm_output, Manager, SwarmProcess};
use swarm_testkit::per_store;
use swarm_testkit::store::{ConsulServer, EtcdServer, StoreFixture, TestCa, ZkServer};
use swarm_testkit::testbed::Testbed;

fn join(url: &str, addr: &str, ttl: &str) -> SwarmProcess {
    let join = SwarmProcess::join(addr, ttl, url);
    join.wait_for_log("Registering on the discovery service every 1s...", Duration::from_secs(15));
    join
}

/// `swarm list`, sorted.
fn listed(url: &str) -> Vec<String> {
    let (ok, out, err) = swarm_output(&["list", "--timeout", "5s", url]);
    assert!(ok, "swarm list {url} failed: {err}");
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn wait_listed(url: &str, expected: &[String], within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = listed(url);
        if now == expected {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "swarm list shows {now:?}, expected {expected:?} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn nodes(m: &Manager) -> usize {
    m.docker_ok(["info"])
        .lines()
        .find_map(|l| l.strip_prefix(" Nodes: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The whole story on one store: 3 engines join, list and manage see them;
/// SIGTERM deregisters at once, SIGKILL expires with the TTL; a store
/// outage keeps the manager serving, and it resynchronises afterwards.
fn lifecycle<S: StoreFixture>() {
    let mut store = S::start();
    let tb = Testbed::shared();
    let url = store.url("swarm");
    let ttl = S::JOIN_TTL;
    let mut addrs = tb.addrs();
    addrs.sort();
    let mut joins: Vec<SwarmProcess> = addrs.iter().map(|a| join(&url, a, ttl)).collect();
    wait_listed(&url, &addrs, Duration::from_secs(10));

    let m = Manager::start(&url, &[]);
    m.wait_healthy(3);
    assert_eq!(nodes(&m), 3);

    // SIGTERM: gone at once, not after the TTL.
    let status = joins[0].signal("TERM");
    assert!(status.success(), "swarm join exits cleanly on SIGTERM: {}", joins[0].log());
    let took = wait_listed(&url, &addrs[1..], Duration::from_secs(3));
    eprintln!("deregistered {took:?} after SIGTERM");
    m.wait_until(Duration::from_secs(5), "the manager drops the deregistered engine", |m| nodes(m) == 2);
    assert!(m.docker_ok(["info"]).contains("└ Status: Healthy"));

    // SIGKILL: the registration expires with its TTL.
    joins[1].signal("KILL");
    let took = wait_listed(&url, &addrs[2..], S::JOIN_EXPIRY);
    eprintln!("expired {took:?} after SIGKILL (ttl {ttl})");
    m.wait_until(Duration::from_secs(5), "the manager drops the expired engine", |m| nodes(m) == 1);

    // Store outage: the manager keeps its engines and keeps serving.
    store.stop();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(nodes(&m), 1, "last known engines are kept");
    assert_eq!(m.docker_ok(["run", "--rm", "busybox", "echo", "ok"]), "ok");
    let (ok, _, err) = swarm_output(&["list", "--timeout", "3s", &url]);
    assert!(!ok && err.lines().count() == 1, "swarm list fails with one line: {err}");
    store.restart();
    // The running join registers again; a new one joins.
    let _rejoined = join(&url, &addrs[0], ttl);
    m.wait_until(Duration::from_secs(30), "the manager resynchronises after the outage", |m| nodes(m) == 2);
    let log = m.log();
    assert_eq!(log.matches("Discovery error").count(), 1, "the outage is logged once:\n{log}");
    assert!(log.contains("Discovery is working again"), "{log}");
    drop(joins);
}

per_store!(lifecycle: consul_discovery => ConsulServer, etcd_discovery => EtcdServer, zookeeper_discovery => ZkServer);

#[test]
fn etcd_over_tls() {
    let ca = TestCa::generate();
    let store = EtcdServer::start_tls(&ca);
    let tb = Testbed::shared();
    let url = store.url("tls");
    let opts = [
        format!("kv.cacertfile={}", ca.ca.display()),
        format!("kv.certfile={}", ca.client_cert.display()),
        format!("kv.keyfile={}", ca.client_key.display()),
    ];
    let mut args = vec!["join", "--advertise", &tb.engines[0].addr, "--heartbeat", "1s", "--ttl", "3s"];
    for o in &opts {
        args.extend(["--discovery-opt", o.as_str()]);
    }
    args.push(&url);
    let join = SwarmProcess::start(&args);
    join.wait_for_log("Registering on the discovery service", Duration::from_secs(15));
    let mut list = vec!["list"];
    for o in &opts {
        list.extend(["--discovery-opt", o.as_str()]);
    }
    list.push(&url);
    let start = Instant::now();
    loop {
        let (ok, out, err) = swarm_output(&list);
        if ok && out.trim() == tb.engines[0].addr {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "swarm list over TLS: {out} {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, _, err) = swarm_output(&["list", "--timeout", "3s", &url]);
    assert!(!ok, "without client certificates the store refuses us: {err}");
    let (ok, _, err) = swarm_output(&["list", "--discovery-opt", &opts[0], &url]);
    assert!(!ok && err.contains("all three"), "{err}");
}

/// `--discovery-opt` arguments giving the store's CA and our client
/// certificate from `ca`.
fn tls_opts(ca: &TestCa) -> Vec<String> {
    [("kv.cacertfile", &ca.ca), ("kv.certfile", &ca.client_cert), ("kv.keyfile", &ca.client_key)]
        .iter()
        .flat_map(|(opt, path)| ["--discovery-opt".to_string(), format!("{opt}={}", path.display())])
        .collect()
}

/// `join`, `list` and `manage` on a Consul agent whose API is HTTPS only
/// and requires a client certificate; `list` without the certificates fails
/// with one line saying what to set.
#[test]
fn consul_over_tls() {
    let ca = TestCa::generate();
    let store = ConsulServer::start_tls(&ca);
    let tb = Testbed::shared();
    let url = store.url("tls");
    let opts = tls_opts(&ca);
    let tls: Vec<&str> = opts.iter().map(String::as_str).collect();
    let engine = tb.engines[0].addr.as_str();
    let join_args = ["join", "--advertise", engine, "--heartbeat", "1s", "--ttl", ConsulServer::JOIN_TTL];
    let join = SwarmProcess::start(&[&join_args[..], &tls, &[&url]].concat());
    join.wait_for_log("Registering on the discovery service every 1s...", Duration::from_secs(15));
    let list = [&["list", "--timeout", "5s"][..], &tls, &[&url]].concat();
    let start = Instant::now();
    loop {
        let (ok, out, err) = swarm_output(&list);
        if ok && out.trim() == engine {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "swarm list over HTTPS: {out} {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = Manager::start(&url, &tls);
    m.wait_healthy(1);
    assert_eq!(nodes(&m), 1);

    let (ok, _, err) = swarm_output(&["list", "--timeout", "3s", &url]);
    eprintln!("swarm list without certificates: {err}");
    assert!(!ok && err.trim().lines().count() == 1, "swarm list fails with one line: {err}");
    assert!(err.contains("speaks HTTPS") && err.contains("kv.cacertfile"), "{err}");
    drop(join);
}

#[test]
fn join_and_list_validate_their_input() {
    let cases: [(&[&str], &str); 6] = [
        (&["join", "etcd://127.0.0.1:2379"], "--advertise"),
        (&["join", "--advertise", "10.0.0.1", "etcd://127.0.0.1:2379"], "ip:port or hostname:port"),
        (
            &["join", "--advertise", "10.0.0.1:2375", "--heartbeat", "10s", "--ttl", "5s", "etcd://127.0.0.1:2379"],
            "--ttl must be strictly superior",
        ),
        (&["join", "--advertise", "10.0.0.1:2375", "nodes://10.0.0.1:2375"], "key-value discovery"),
        (&["list", "consul://"], "no consul address"),
        (&["list", "foo://x"], "unsupported discovery scheme"),
    ];
    for (args, expected) in cases {
        let (ok, _, err) = swarm_output(args);
        assert!(!ok, "swarm {args:?} should fail");
        assert!(err.contains(expected), "swarm {args:?}: expected {expected:?} in {err:?}");
    }
    let (ok, _, err) = swarm_output(&["list", "--timeout", "2s", "etcd://127.0.0.1:1/x"]);
    assert!(!ok && err.trim().lines().count() == 1, "unreachable store: one line: {err}");
    let (ok, out, _) = swarm_output(&["list", "10.0.0.[1:3]:2375"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 3, "{out}");
}
