//! TLS on every link, with real parts: engines that run `dockerd
//! --tlsverify`, managers with `--tlsverify`, replicated on a real etcd, the
//! real Docker CLI (`DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=...`) and
//! docker-compose. Certificates come from the testbed's CA or from CAs made
//! here (`swarm_testkit::certs`). Needs root and `sudo scripts/install-deps.sh`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use swarm_testkit::certs::{Ca, CertDir, Usage};
use swarm_testkit::http;
use swarm_testkit::manager::{Manager, SwarmProcess};
use swarm_testkit::process::{tail, Streaming};
use swarm_testkit::store::{EtcdServer, StoreFixture};
use swarm_testkit::testbed::Testbed;
use swarm_testkit::DOCKER;

const NODES: [&str; 3] = ["node-01", "node-02", "node-03"];

/// What Go's HTTPS server (and the manager) answers plain HTTP with.
const PLAIN_HTTP_ANSWER: &str = "Client sent an HTTP request to an HTTPS server.\n";

/// Removes containers through `manager` on drop, so a failing test leaves nothing behind.
struct Cleanup<'a> {
    manager: &'a Manager,
    containers: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.manager.docker(["rm", "-f", c]);
        }
    }
}

/// A TLS manager of the shared TLS testbed's engines (a static list).
fn tls_manager(extra: &[&str]) -> Manager {
    let tb = Testbed::shared_tls();
    let m = Manager::builder(&tb.addrs().join(",")).tls(&tb.tls().client.dir).args(extra).start();
    m.wait_healthy(3);
    m
}

/// The Docker CLI against `manager` with the certificate files of `certs`
/// (or none: `DOCKER_TLS_VERIFY` unset).
fn docker_with(manager: &Manager, certs: Option<&Path>, args: &[&str]) -> std::process::Output {
    docker_cmd_with(manager, certs, args).output().expect("cannot run the docker CLI")
}

fn docker_cmd_with(manager: &Manager, certs: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(DOCKER);
    cmd.env_remove("DOCKER_CONTEXT")
        .env("DOCKER_HOST", format!("tcp://{}", manager.addr))
        .env("DOCKER_CONFIG", manager.dir.path().join("docker-config"))
        .args(args);
    match certs {
        Some(dir) => cmd.env("DOCKER_TLS_VERIFY", "1").env("DOCKER_CERT_PATH", dir),
        None => cmd.env_remove("DOCKER_TLS_VERIFY").env_remove("DOCKER_CERT_PATH"),
    };
    cmd
}

/// A directory with `ca.pem` from `trusted` and `cert.pem`/`key.pem` from
/// `presented`: a client that trusts the right CA but shows another certificate.
fn mixed_certs(dir: &Path, trusted: &CertDir, presented: &CertDir) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("a certificate directory");
    for (from, to) in [(&trusted.ca, "ca.pem"), (&presented.cert, "cert.pem"), (&presented.key, "key.pem")] {
        std::fs::copy(from, dir.join(to)).expect("copy a certificate file");
    }
    dir.to_path_buf()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// The cluster-core scenarios of the Docker CLI through `m`: info, run, ps,
/// logs -f, exec -i with piped stdin, attach, cp, events and pull with
/// progress. `tag` keeps container names apart.
fn cli_scenarios(m: &Manager, tag: &str, role: &str) {
    let tb = Testbed::shared_tls();
    let names = ["exec", "attach", "logs", "cp", "events"].map(|n| format!("tls-{tag}-{n}"));
    let _cleanup = Cleanup { manager: m, containers: names.to_vec() };
    let [exec, attach, logs, cp, events] = &names;

    let info = m.docker_ok(["info"]);
    for expected in [&format!(" Role: {role}")[..], " Nodes: 3", "   └ Error: (none)"] {
        assert!(info.contains(expected), "{expected:?} missing from docker info:\n{info}");
    }
    assert_eq!(info.matches("└ Status: Healthy").count(), 3, "{info}");

    m.docker_ok(["run", "-d", "--name", exec, "-e", "constraint:node==node-02", "busybox", "sleep", "300"]);
    assert_eq!(m.docker_ok(["inspect", "-f", "{{.Node.Name}}", exec]), "node-02");
    let ps = m.docker_ok(["ps", "--filter", &format!("name={exec}"), "--format", "{{.Names}}"]);
    assert_eq!(ps, format!("node-02/{exec}"));
    assert_eq!(m.docker_piped(&["exec", "-i", exec, "cat"], "piped over TLS\n"), "piped over TLS");

    m.docker_ok(["run", "-d", "-i", "--name", attach, "busybox", "sh", "-c", "read line; echo got:$line"]);
    assert_eq!(m.docker_attach_line(attach, "attached"), "got:attached");

    let script = "for i in 1 2 3; do echo line$i; sleep 0.3; done";
    m.docker_ok(["run", "-d", "--name", logs, "busybox", "sh", "-c", script]);
    assert_eq!(m.docker_ok(["logs", "-f", logs]), "line1\nline2\nline3");

    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("in.txt");
    std::fs::write(&local, "copied over TLS\n").expect("write");
    m.docker_ok(["run", "-d", "--name", cp, "busybox", "sleep", "300"]);
    m.docker_ok(["cp", local.to_str().expect("path"), &format!("{cp}:/tmp/in.txt")]);
    let back = dir.path().join("back.txt");
    m.docker_ok(["cp", &format!("{cp}:/tmp/in.txt"), back.to_str().expect("path")]);
    assert_eq!(std::fs::read_to_string(back).expect("read"), "copied over TLS\n");

    let since = now_secs();
    m.docker_ok(["run", "--name", events, "-e", "constraint:node==node-03", "busybox", "true"]);
    m.docker_ok(["rm", events]);
    let until = now_secs() + 1;
    std::thread::sleep(Duration::from_millis(1200));
    let seen = m.docker_ok([
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        &format!("container={events}"),
        "--format",
        "{{.Action}} {{index .Actor.Attributes \"node.name\"}}",
    ]);
    for action in ["create", "start", "die", "destroy"] {
        assert!(seen.lines().any(|l| l == format!("{action} node-03")), "{action} missing: {seen}");
    }

    let registry = tb.registry.clone().expect("the shared TLS testbed has a registry");
    let image = format!("{registry}/busybox");
    let pull = m.docker_ok(["pull", &image]);
    for node in NODES {
        assert!(pull.contains(&format!("{node}: Pulling {image}:latest...")), "progress for {node}: {pull}");
        assert!(!tb.docker_ok(node, ["images", "-q", &image]).is_empty(), "{node} has the image");
    }
}

#[test]
fn the_cli_drives_a_tls_primary_and_a_tls_replica_and_a_kill_9_fails_over() {
    let tb = Testbed::shared_tls();
    let store = EtcdServer::start();
    let url = store.url("tls-cli");
    let _joins: Vec<SwarmProcess> = SwarmProcess::join_all(&tb.addrs(), "3s", &url);
    let managers: Vec<Manager> =
        (0..2).map(|_| Manager::builder(&url).tls(&tb.tls().client.dir).replicated().start()).collect();
    for m in &managers {
        m.wait_healthy(3);
    }
    let is = |m: &Manager, role: &str| m.role().is_some_and(|(r, _)| r == role);
    let deadline = Instant::now() + Duration::from_secs(20);
    let primary = loop {
        if let Some(p) = managers.iter().position(|m| is(m, "primary")) {
            if is(&managers[1 - p], "replica") {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "no primary and replica among the TLS managers");
        std::thread::sleep(Duration::from_millis(50));
    };
    cli_scenarios(&managers[primary], "primary", "primary");
    cli_scenarios(&managers[1 - primary], "replica", "replica");

    // kill -9 of the primary: the replica takes over and the CLI goes on through it.
    managers[primary].signal("KILL");
    let survivor = &managers[1 - primary];
    survivor.wait_until(Duration::from_secs(20), "the TLS replica takes over", |m| is(m, "primary"));
    let _cleanup = Cleanup { manager: survivor, containers: vec!["tls-after-failover".into()] };
    survivor.docker_ok([
        "run",
        "-d",
        "--name",
        "tls-after-failover",
        "busybox",
        "sh",
        "-c",
        "echo survived; sleep 300",
    ]);
    survivor.wait_until(Duration::from_secs(10), "the container's log is there", |m| {
        m.docker(["logs", "tls-after-failover"]).stdout.starts_with(b"survived")
    });
    let ps = survivor.docker_ok(["ps", "--filter", "name=tls-after-failover", "--format", "{{.Names}}"]);
    assert!(ps.ends_with("/tls-after-failover"), "{ps}");
}

#[test]
fn refused_clients_fail_at_the_handshake_and_good_clients_keep_working() {
    let tb = Testbed::shared_tls();
    let m = tls_manager(&["--log-level", "debug"]);
    let good = &tb.tls().client;
    let since = now_secs().to_string();
    let watching =
        m.docker_stream(&["events", "--since", &since, "--format", "{{.Action}} {{.Actor.Attributes.name}}"]);
    let work = tempfile::tempdir().expect("temp dir");

    // No client certificate: curl trusts the CA but presents nothing.
    let curl = Command::new("curl")
        .args(["-sS", "-m", "10", "--cacert"])
        .arg(&good.ca)
        .arg(format!("https://{}/_ping", m.addr))
        .output()
        .expect("curl");
    assert!(!curl.status.success(), "a client without a certificate is refused");

    // A certificate from another CA, and an expired one from the right CA.
    let other_ca = Ca::generate("intruders");
    let intruder = other_ca.issue("intruder", &["127.0.0.1"], &[], Usage::Client);
    let intruder_dir = mixed_certs(&work.path().join("intruder"), good, &intruder);
    let testbed_ca = tb.tls().ca();
    let expired = testbed_ca.issue_expired("expired-client", &["127.0.0.1"], &[], Usage::Client);
    let expired_dir = mixed_certs(&work.path().join("expired"), good, &expired);
    for (who, dir) in [("another CA's certificate", &intruder_dir), ("an expired certificate", &expired_dir)] {
        let out = docker_with(&m, Some(dir), &["version"]);
        assert!(!out.status.success(), "a client with {who} is refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("certificate") || err.contains("tls"), "{who}: a TLS error: {err}");
        // The good client works during the refusals.
        assert_eq!(m.docker_ok(["version", "--format", "{{.Server.Os}}"]), "linux");
    }

    // Plain HTTP to the TLS port gets dockerd's 400.
    let (status, body) = http::get(&m.addr, "/_ping", Duration::from_secs(10)).expect("a plain HTTP answer");
    assert_eq!((status, body.as_str()), (400, PLAIN_HTTP_ANSWER));
    let plain_cli = docker_with(&m, None, &["ps"]);
    assert!(!plain_cli.status.success(), "the CLI without TLS is refused");

    // After all of it, the good clients go on: a new request, and the
    // events stream opened before the refusals.
    let _cleanup = Cleanup { manager: &m, containers: vec!["tls-refusals-after".into()] };
    m.docker_ok(["run", "-d", "--name", "tls-refusals-after", "busybox", "sleep", "300"]);
    watching.expect("start tls-refusals-after", Duration::from_secs(20));

    let log = m.log();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("TLS handshake failed")).collect();
    assert!(refusals.len() >= 3, "each refused handshake is logged:\n{}", tail(&log, 40));
    assert!(refusals.iter().all(|l| l.contains("level=debug")), "at debug level: {refusals:?}");
}

#[test]
fn a_manager_with_the_wrong_ca_for_its_engines_shows_them_unhealthy_with_the_reason() {
    let tb = Testbed::shared_tls();
    let wrong_ca = Ca::generate("wrong");
    let own = wrong_ca.issue("manager", &["127.0.0.1"], &["localhost"], Usage::Both);
    let m = Manager::builder(&tb.addrs().join(",")).tls(&own.dir).start();
    m.wait_until(Duration::from_secs(30), "the engines' TLS errors show in info", |m| {
        let info = String::from_utf8_lossy(&m.docker(["info"]).stdout).into_owned();
        info.matches("└ Error: ").filter(|l| !l.contains("(none)")).count() >= 3
            && info.lines().filter(|l| l.contains("└ Error: ")).all(|l| l.contains("certificate"))
    });
    let info = m.docker_ok(["info"]);
    assert_eq!(info.matches("└ Status: Healthy").count(), 0, "{info}");
    // The manager still answers its clients.
    assert_eq!(m.docker_ok(["ps", "-q"]), "");
}

/// A compose file of each kind: version 1 (legacy) and version 2.
const COMPOSE_FILES: [(&str, &str); 2] = [
    ("v1", "web:\n  image: busybox\n  command: sh -c 'echo hello-v1; exec sleep 300'\n"),
    (
        "v2",
        "version: \"2\"\nservices:\n  web:\n    image: busybox\n    command: sh -c 'echo hello-v2; exec sleep 300'\n",
    ),
];

#[test]
fn docker_compose_v1_and_v2_files_through_a_tls_manager() {
    let tb = Testbed::shared_tls();
    let m = tls_manager(&[]);
    for (kind, yaml) in COMPOSE_FILES {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("docker-compose.yml"), yaml).expect("write the compose file");
        let project = format!("tls{kind}{}", std::process::id());
        let compose = |args: &[&str]| {
            let out = Command::new("timeout")
                .args(["180", "/usr/bin/docker-compose", "-p", &project])
                .args(args)
                .current_dir(dir.path())
                .env_remove("DOCKER_CONTEXT")
                // The CA must come from DOCKER_CERT_PATH, not from these.
                .env_remove("REQUESTS_CA_BUNDLE")
                .env_remove("CURL_CA_BUNDLE")
                .env("DOCKER_HOST", format!("tcp://{}", m.addr))
                .env("DOCKER_TLS_VERIFY", "1")
                .env("DOCKER_CERT_PATH", &tb.tls().client.dir)
                .env("DOCKER_CONFIG", dir.path().join("docker-config"))
                .stdin(Stdio::null())
                .output()
                .expect("cannot run docker-compose");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "docker-compose {args:?} ({kind}):\n{text}\n{}", tail(&m.log(), 20));
            text
        };
        compose(&["up", "-d"]);
        let ids = compose(&["ps", "-q"]);
        assert_eq!(ids.lines().filter(|l| l.len() == 64).count(), 1, "{kind}: one container: {ids}");
        let expected = format!("hello-{kind}");
        m.wait_until(Duration::from_secs(20), "the service logged", |_| compose(&["logs"]).contains(&expected));
        compose(&["down", "-t", "1"]);
        let left = m.docker_ok(["ps", "-aq", "--filter", &format!("label=com.docker.compose.project={project}")]);
        assert!(left.is_empty(), "{kind}: down removed everything: {left}");
    }
}

/// Puts a CA bundle of `cas`, `cert` and `key` into `live` as `ca.pem`,
/// `cert.pem` and `key.pem`, each written aside and renamed into place.
fn install(live: &Path, cas: &[&Path], cert: &Path, key: &Path) {
    let bundle: String = cas.iter().map(|ca| std::fs::read_to_string(ca).expect("read a CA")).collect();
    for (name, content) in [
        ("ca.pem", bundle),
        ("cert.pem", std::fs::read_to_string(cert).expect("read a certificate")),
        ("key.pem", std::fs::read_to_string(key).expect("read a key")),
    ] {
        let aside = live.join(format!(".{name}.new"));
        std::fs::write(&aside, content).expect("write a certificate file");
        std::fs::rename(&aside, live.join(name)).expect("put a certificate file in place");
    }
}

/// Copies the three files of `from` into a new directory `to`.
fn snapshot(from: &Path, to: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(to).expect("a certificate directory");
    for name in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(from.join(name), to.join(name)).expect("copy a certificate file");
    }
    to.to_path_buf()
}

#[test]
fn certificates_rotate_on_sighup_while_logs_follow_and_a_broken_pair_is_refused() {
    let new_ca = Ca::generate("rotated");
    // The engine trusts both CAs, as engines do while a cluster moves to a new one.
    let tb = Testbed::start_tls_trusting(1, &[&new_ca.cert]);
    let work = tempfile::tempdir().expect("temp dir");
    let old = snapshot(&tb.tls().client.dir, &work.path().join("old"));
    let live = snapshot(&old, &work.path().join("live"));
    let m = Manager::builder(&tb.addrs().join(",")).tls(&live).start();
    m.wait_healthy(1);
    let _cleanup = Cleanup { manager: &m, containers: vec!["tls-ticker".into()] };
    let ticker = "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done";
    m.docker_ok(["run", "-d", "--name", "tls-ticker", "busybox", "sh", "-c", ticker]);
    let follow = Streaming::spawn(docker_cmd_with(&m, Some(&old), &["logs", "-f", "tls-ticker"]));
    follow.expect("tick", Duration::from_secs(20));

    // A new pair from a new CA; the bundle keeps the testbed CA, which
    // certifies the engine.
    let rotated = new_ca.issue("manager", &["127.0.0.1"], &["localhost"], Usage::Both);
    install(&live, &[&rotated.ca, &tb.tls().ca_cert], &rotated.cert, &rotated.key);
    m.signal("HUP");
    m.wait_until(Duration::from_secs(10), "the manager reloads its certificates", |m| {
        m.log().contains("TLS certificates reloaded")
    });
    let refused = docker_with(&m, Some(&old), &["version"]);
    assert!(!refused.status.success(), "a new client with the old CA no longer verifies the manager");
    let rotated_client = snapshot(&live, &work.path().join("rotated-client"));
    let out = docker_with(&m, Some(&rotated_client), &["run", "--rm", "busybox", "echo", "after rotation"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "after rotation",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The stream opened with the old certificates goes on.
    let before = follow.expect("tick", Duration::from_secs(5));
    follow.expect("tick", Duration::from_secs(5));

    // A key that does not match its certificate: refused, the rotated set stays.
    let stranger = new_ca.issue("stranger", &["127.0.0.1"], &[], Usage::Both);
    std::fs::copy(&stranger.key, live.join("key.pem")).expect("write a mismatched key");
    m.signal("HUP");
    m.wait_until(Duration::from_secs(10), "the manager refuses the broken pair", |m| {
        m.log().contains("TLS certificates not reloaded")
    });
    let out = docker_with(&m, Some(&rotated_client), &["version", "--format", "{{.Server.Os}}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "linux", "{}", String::from_utf8_lossy(&out.stderr));
    let after = follow.expect("tick", Duration::from_secs(5));
    assert_ne!(before, after, "the stream is not cut");
}
