//! Replicated managers on real Consul, etcd and ZooKeeper, in front of real
//! engines, driven by the real Docker CLI. Needs root and `sudo scripts/install-deps.sh`.

use std::time::{Duration, Instant};

use swarm_testkit::manager::{Manager, SwarmProcess};
use swarm_testkit::per_store;
use swarm_testkit::store::{ConsulServer, EtcdServer, StoreFixture, TestCa, ZkServer};
use swarm_testkit::testbed::Testbed;

/// Three managers, three joined engines, one store.
struct Replicated {
    managers: Vec<Manager>,
    _joins: Vec<SwarmProcess>,
}

fn start(url: &str, join_ttl: &str) -> Replicated {
    let tb = Testbed::shared();
    let joins = SwarmProcess::join_all(&tb.addrs(), join_ttl, url);
    let managers: Vec<Manager> = (0..3).map(|_| Manager::start_replicated(url, &[])).collect();
    for m in &managers {
        m.wait_healthy(3);
    }
    let r = Replicated { managers, _joins: joins };
    r.primary();
    r
}

impl Replicated {
    /// Waits until exactly one live manager is primary and every other live
    /// one names it; returns its index.
    fn primary(&self) -> usize {
        self.primary_among(&(0..self.managers.len()).collect::<Vec<_>>(), Duration::from_secs(20))
    }

    fn primary_among(&self, live: &[usize], within: Duration) -> usize {
        let start = Instant::now();
        loop {
            let roles: Vec<(usize, Option<(String, String)>)> =
                live.iter().map(|&i| (i, self.managers[i].role())).collect();
            let primaries: Vec<usize> = roles
                .iter()
                .filter(|(_, r)| r.as_ref().is_some_and(|(role, _)| role == "primary"))
                .map(|(i, _)| *i)
                .collect();
            assert!(primaries.len() <= 1, "two primaries: {roles:?}");
            if let [p] = primaries[..] {
                let addr = &self.managers[p].addr;
                if roles
                    .iter()
                    .all(|(i, r)| *i == p || r.as_ref().is_some_and(|(role, prim)| role == "replica" && prim == addr))
                {
                    return p;
                }
            }
            assert!(start.elapsed() < within, "no settled primary after {within:?}: {roles:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn replica_of(primary: usize) -> usize {
    (primary + 1) % 3
}

/// Everything a client does, through a replica.
fn clients_work_through_a_replica(r: &Replicated, tag: &str) {
    let p = r.primary();
    let m = &r.managers[replica_of(p)];
    let info = m.docker_ok(["info"]);
    assert!(info.contains(" Role: replica"), "{info}");
    assert!(info.contains(&format!(" Primary: {}", r.managers[p].addr)), "{info}");
    let info = r.managers[p].docker_ok(["info"]);
    assert!(info.contains(" Role: primary") && !info.contains(" Primary:"), "{info}");

    let name = format!("repl-{tag}");
    m.docker_ok(["run", "-d", "--name", &name, "busybox", "sh", "-c", "echo started; sleep 300"]);
    assert_eq!(r.managers[p].docker_ok(["inspect", "-f", "{{.Name}}", &name]), format!("/{name}"));
    let out = m.docker_piped(&["exec", "-i", &name, "cat"], "through a replica\n");
    assert_eq!(out, "through a replica");
    let out = m.docker_piped(&["run", "-i", "--rm", "busybox", "sh", "-c", "read l; echo got:$l"], "hi\n");
    assert_eq!(out, "got:hi");
    let logs_name = format!("repl-logs-{tag}");
    m.docker_ok([
        "run",
        "-d",
        "--name",
        &logs_name,
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo l$i; sleep 0.2; done",
    ]);
    assert_eq!(m.docker_ok(["logs", "-f", &logs_name]), "l1\nl2\nl3");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let events = m.docker_ok([
        "events",
        "--since",
        &(now - 60).to_string(),
        "--until",
        &(now + 1).to_string(),
        "--filter",
        &format!("container={logs_name}"),
        "--format",
        "{{.Action}}",
    ]);
    assert!(events.lines().any(|l| l == "start"), "{events}");
    m.docker_ok(["rm", "-f", &logs_name]);
}

/// kill -9, SIGTERM and SIGSTOP/SIGCONT of the primary.
fn failovers(r: &mut Replicated, tag: &str) {
    let name = format!("repl-{tag}");
    // kill -9: one survivor takes over, the other follows it.
    let p = r.primary();
    let killed = Instant::now();
    r.managers[p].signal("KILL");
    r.managers[p].wait_exit();
    let live: Vec<usize> = (0..3).filter(|i| *i != p).collect();
    let q = r.primary_among(&live, Duration::from_secs(10));
    eprintln!("{tag}: SIGKILL failover took {:?}", killed.elapsed());
    let follower = live.iter().copied().find(|i| *i != q).expect("a follower");
    assert!(r.managers[q].log().contains("Leader Election: Cluster leadership acquired"));
    assert!(r.managers[follower].log().contains(&format!("New leader elected: {}", r.managers[q].addr)));
    for &i in &live {
        let ps = r.managers[i].docker_ok(["ps", "--filter", &format!("name={name}"), "--format", "{{.Names}}"]);
        assert!(ps.ends_with(&format!("/{name}")), "containers created before are listed: {ps}");
    }
    r.managers[p].restart();
    r.managers[p].wait_healthy(3);
    let q = r.primary();

    // SIGTERM: the lock is released, no TTL wait.
    let stopped = Instant::now();
    r.managers[q].signal("TERM");
    let status = r.managers[q].wait_exit();
    assert!(status.success(), "SIGTERM exits cleanly");
    let live: Vec<usize> = (0..3).filter(|i| *i != q).collect();
    r.primary_among(&live, Duration::from_secs(10));
    let took = stopped.elapsed();
    eprintln!("{tag}: SIGTERM failover took {took:?}");
    assert!(took < Duration::from_secs(2), "SIGTERM takeover waited for a TTL: {took:?}");
    r.managers[q].restart();
    r.managers[q].wait_healthy(3);

    // SIGSTOP past the TTL, then SIGCONT: never two primaries.
    let s = r.primary();
    r.managers[s].signal("STOP");
    let live: Vec<usize> = (0..3).filter(|i| *i != s).collect();
    let t = r.primary_among(&live, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(3));
    r.managers[s].signal("CONT");
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_secs(5) {
        let roles: Vec<_> = r.managers.iter().map(Manager::role).collect();
        let primaries = roles.iter().filter(|r| r.as_ref().is_some_and(|(role, _)| role == "primary")).count();
        assert!(primaries <= 1, "two primaries after SIGCONT: {roles:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(r.primary(), t, "the resumed manager stays a replica");
    assert!(r.managers[s].log().contains("Leader Election: Cluster leadership lost"));
    r.managers[t].docker_ok(["rm", "-f", &name]);
}

fn scenario(url: &str, join_ttl: &str, tag: &str) {
    let mut r = start(url, join_ttl);
    clients_work_through_a_replica(&r, tag);
    failovers(&mut r, tag);
}

/// [`scenario`] on a fresh `S` store, tagged with its URL scheme.
fn scenario_on<S: StoreFixture>() {
    let store = S::start();
    scenario(&store.url("repl"), S::JOIN_TTL, S::SCHEME);
}

per_store!(scenario_on: etcd_replication => EtcdServer, consul_replication => ConsulServer, zookeeper_replication => ZkServer);

/// [`kill_loop`] on a fresh `S` store, tagged with its URL scheme.
fn kill_loop_on<S: StoreFixture>() {
    let store = S::start();
    kill_loop(&store.url("loop"), S::JOIN_TTL, S::SCHEME);
}

per_store!(kill_loop_on: kill_loop_on_etcd => EtcdServer, kill_loop_on_consul => ConsulServer, kill_loop_on_zookeeper => ZkServer);

/// 10 consecutive kills of the primary while a client creates containers
/// through a replica: no container is lost or exists twice, every failed
/// request got a clear error, and a create that failed leaves no container
/// (one the dying primary made is found by its swarm ID and removed).
fn kill_loop(url: &str, join_ttl: &str, tag: &str) {
    let mut r = start(url, join_ttl);
    let mut created = Vec::new();
    let mut failures = Vec::new();
    let mut attempt = 0;
    for kill in 0..10 {
        let p = r.primary();
        let client = replica_of(p);
        // Requests in flight while the primary dies.
        let doomed = std::thread::spawn({
            let pid = r.managers[p].pid();
            move || {
                std::thread::sleep(Duration::from_millis(300));
                let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        });
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            attempt += 1;
            let name = format!("loop-{tag}-{attempt}");
            let out = r.managers[client].docker(["create", "--name", &name, "busybox", "true"]);
            if out.status.success() {
                created.push(name);
            } else {
                let err = String::from_utf8_lossy(&out.stderr).to_string();
                assert!(
                    err.contains("primary cluster manager") || err.contains("Error response from daemon"),
                    "a failed request gets a clear error: {err}"
                );
                failures.push(err);
            }
        }
        doomed.join().expect("killer");
        r.managers[p].wait_exit();
        r.managers[p].restart();
        r.managers[p].wait_healthy(3);
        eprintln!("{tag} kill {kill}: {} created, {} failed so far", created.len(), failures.len());
    }
    let p = r.primary();
    let list =
        |m: &Manager| m.docker_ok(["ps", "-a", "--filter", &format!("name=loop-{tag}-"), "--format", "{{.Names}}"]);
    let only_created =
        |listed: &str| listed.lines().filter_map(|l| l.split('/').nth(1)).all(|name| created.iter().any(|c| c == name));
    r.managers[p].wait_until_showing(
        Duration::from_secs(30),
        "only containers whose create succeeded are listed",
        |m| only_created(&list(m)),
        |m| format!("listed:\n{}\ncreated: {created:?}\nfailures: {failures:#?}", list(m)),
    );
    let listed = list(&r.managers[p]);
    let mut names: Vec<&str> = listed.lines().filter_map(|l| l.split('/').nth(1)).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "no container name exists twice: {listed}");
    for name in &created {
        assert!(names.contains(&name.as_str()), "{name} was created but is lost");
    }
    for name in names {
        let _ = r.managers[p].docker(["rm", "-f", name]);
    }
}

/// The primary's host is cut off the network (its veth down): no refusal,
/// only silence. It must step down before the others can win, the others
/// must elect a new primary within the TTL path, and when the host returns
/// the old primary must be a replica. Its role is read from inside its own
/// namespace, so "never two primaries" is checked during the cut too.
fn network_cut_on<S: StoreFixture>() {
    let tb = Testbed::start(3, &[], false);
    let store = S::start_on(&tb.bridge_ip);
    network_cut(&tb, &store.url("cut"), S::JOIN_TTL);
}

per_store!(network_cut_on: network_cut_on_etcd => EtcdServer, network_cut_on_consul => ConsulServer, network_cut_on_zookeeper => ZkServer);

fn network_cut(tb: &Testbed, url: &str, join_ttl: &str) {
    let _joins: Vec<SwarmProcess> = SwarmProcess::join_all(&tb.addrs(), join_ttl, url);
    let managers: Vec<Manager> = tb
        .engines
        .iter()
        .enumerate()
        .map(|(i, e)| Manager::start_replicated_in(&format!("swtb{}-n{}", tb.index, i + 1), &e.ip, url))
        .collect();
    for m in &managers {
        m.wait_healthy(3);
    }
    let r = Replicated { managers, _joins: Vec::new() };
    let p = r.primary();
    let node = tb.engines[p].name.clone();

    let roles = || -> Vec<Option<(String, String)>> { r.managers.iter().map(Manager::role_inside).collect() };
    let count = |roles: &[Option<(String, String)>]| {
        roles.iter().filter(|r| r.as_ref().is_some_and(|(role, _)| role == "primary")).count()
    };
    tb.cut(&node);
    let cut = Instant::now();
    let mut took_over = None;
    while cut.elapsed() < Duration::from_secs(8) {
        let now = roles();
        assert!(count(&now) <= 1, "two primaries while {node} is cut off: {now:?}");
        if took_over.is_none()
            && now.iter().enumerate().any(|(i, r)| i != p && r.as_ref().is_some_and(|(role, _)| role == "primary"))
        {
            took_over = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took_over = took_over.expect("a new primary is elected while the old one is cut off");
    eprintln!("network cut: new primary after {took_over:?}");
    assert!(took_over < Duration::from_millis(3500), "TTL-path failover took {took_over:?}");
    assert!(r.managers[p].log().contains("Leader Election: Cluster leadership lost"), "{}", r.managers[p].log());

    tb.heal(&node);
    let healed = Instant::now();
    while healed.elapsed() < Duration::from_secs(5) {
        let now = roles();
        assert!(count(&now) <= 1, "two primaries after {node} returned: {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let q = r.primary();
    assert_ne!(q, p, "the returning manager stays a replica");
}

/// The store goes away under three managers: the primary steps down (it
/// cannot renew), every manager keeps answering from its own state, and
/// once the store is back an election completes without restarting anything.
#[test]
fn a_store_outage_demotes_the_primary_and_the_election_resumes() {
    let mut store = EtcdServer::start();
    let url = store.url("outage");
    let r = start(&url, EtcdServer::JOIN_TTL);
    r.primary();
    store.stop();
    let stopped = Instant::now();
    loop {
        let roles: Vec<_> = r.managers.iter().map(Manager::role).collect();
        if roles.iter().all(|role| role.as_ref().is_some_and(|(role, _)| role == "replica")) {
            break;
        }
        assert!(stopped.elapsed() < Duration::from_secs(5), "the primary did not step down: {roles:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("primary stepped down {:?} after the store stopped", stopped.elapsed());
    for m in &r.managers {
        assert!(m.docker_ok(["info"]).contains(" Nodes: 3"), "managers keep their state");
    }
    let err = r.managers[0].docker_err(["ps"]);
    assert!(err.contains("primary cluster manager"), "a request without a primary gets a clear error: {err}");

    store.restart();
    let q = r.primary();
    r.managers[replica_of(q)].docker_ok(["ps"]);
}

/// Two replicated managers elect over a Consul agent whose API is HTTPS
/// only and requires a client certificate (`kv.cacertfile`, `kv.certfile`,
/// `kv.keyfile`): one is primary, the other names it; SIGKILL the primary
/// and the other takes the lock over TLS (at once: the replica relaying
/// `docker info` finds the primary gone and ends its lock, through the same
/// HTTPS transport).
#[test]
fn consul_over_tls_elects_and_fails_over() {
    let ca = TestCa::generate();
    let store = ConsulServer::start_tls(&ca);
    let url = store.url("tls-repl");
    let opts: Vec<String> =
        [("kv.cacertfile", &ca.ca), ("kv.certfile", &ca.client_cert), ("kv.keyfile", &ca.client_key)]
            .iter()
            .flat_map(|(opt, path)| ["--discovery-opt".to_string(), format!("{opt}={}", path.display())])
            .collect();
    let tls: Vec<&str> = opts.iter().map(String::as_str).collect();
    let mut managers: Vec<Manager> = (0..2).map(|_| Manager::start_replicated(&url, &tls)).collect();
    let roles = |m: &Manager| {
        let info = m.docker_ok(["info"]);
        let field =
            |name: &str| info.lines().find_map(|l| l.strip_prefix(&format!(" {name}: ")).map(|v| v.trim().to_string()));
        (field("Role"), field("Primary"))
    };
    let start = Instant::now();
    let p = loop {
        let seen: Vec<_> = managers.iter().map(roles).collect();
        let primary = seen.iter().position(|(role, _)| role.as_deref() == Some("primary"));
        if let Some(p) = primary {
            let other = &seen[1 - p];
            if other.0.as_deref() == Some("replica") && other.1.as_deref() == Some(managers[p].addr.as_str()) {
                break p;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no settled primary over Consul HTTPS: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(managers[p].log().contains("Leader Election: Cluster leadership acquired"), "{}", managers[p].log());

    let killed = Instant::now();
    managers[p].signal("KILL");
    managers[p].wait_exit();
    let q = 1 - p;
    managers[q].wait_until(Duration::from_secs(10), "the replica takes over over HTTPS", |m| {
        roles(m).0.as_deref() == Some("primary")
    });
    eprintln!("consul over TLS: SIGKILL failover took {:?}", killed.elapsed());
    assert!(managers[q].log().contains("Leader Election: Cluster leadership acquired"), "{}", managers[q].log());
}
