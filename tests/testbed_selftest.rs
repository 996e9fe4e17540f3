//! Self-test of the testbed fixture: real engines, one per network namespace.
//! Needs root and `scripts/install-deps.sh`.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use swarm_testkit::certs::{Ca, Usage};
use swarm_testkit::testbed::Testbed;
use swarm_testkit::{http, DOCKER};

/// Removes a container on drop, so a failing assertion does not leave it
/// running on the shared testbed.
struct Container<'a> {
    tb: &'a Testbed,
    engine: &'a str,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.tb.docker(self.engine, ["rm", "-f", &self.name]);
    }
}

#[test]
fn engines_have_distinct_names_and_ids() {
    let tb = Testbed::shared();
    assert_eq!(tb.engines.len(), 3);
    let mut names = Vec::new();
    let mut ids = HashSet::new();
    for e in &tb.engines {
        let info = tb.docker_ok(&e.name, ["info", "--format", "{{.Name}} {{.ID}}"]);
        let (name, id) = info.split_once(' ').expect("name and id");
        assert_eq!(name, e.name, "engine name is the hostname");
        assert!(!id.is_empty());
        names.push(name.to_string());
        ids.insert(id.to_string());
    }
    assert_eq!(names, ["node-01", "node-02", "node-03"]);
    assert_eq!(ids.len(), 3, "engine IDs must differ: {ids:?}");
    // Addresses are distinct hosts on the testbed subnet.
    let ips: HashSet<_> = tb.engines.iter().map(|e| e.ip.clone()).collect();
    assert_eq!(ips.len(), 3);
    assert!(tb.engines.iter().all(|e| e.addr == format!("{}:2375", e.ip)));
}

#[test]
fn engines_carry_their_labels() {
    let tb = Testbed::shared();
    for (name, label) in [("node-01", "storage=ssd"), ("node-02", "storage=disk"), ("node-03", "storage=ssd")] {
        let labels = tb.docker_ok(name, ["info", "--format", "{{json .Labels}}"]);
        assert!(labels.contains(label), "{name}: {labels}");
    }
}

#[test]
fn engines_answer_ping_over_tcp() {
    let tb = Testbed::shared();
    for e in &tb.engines {
        assert!(tb.ping(&e.name), "{} at {}", e.name, e.addr);
    }
}

#[test]
fn run_busybox_echo() {
    let tb = Testbed::shared();
    let out = tb.docker_ok("node-03", ["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!(out, "hi");
}

#[test]
fn busybox_image_id_is_identical_everywhere() {
    let tb = Testbed::shared();
    let ids: HashSet<String> = tb
        .engines
        .iter()
        .map(|e| tb.docker_ok(&e.name, ["image", "inspect", "--format", "{{.Id}}", "busybox:latest"]))
        .collect();
    assert_eq!(ids.len(), 1, "busybox differs between engines: {ids:?}");
}

#[test]
fn published_port_is_reachable_from_the_root_namespace() {
    let tb = Testbed::shared();
    let name = format!("selftest-httpd-{}", std::process::id());
    let _c = Container { tb, engine: "node-01", name: name.clone() };
    tb.docker_ok(
        "node-01",
        [
            "run",
            "-d",
            "--name",
            &name,
            "-p",
            "18080:80",
            "busybox",
            "sh",
            "-c",
            "echo hello-from-node-01 > /tmp/index.html && exec httpd -f -p 80 -h /tmp",
        ],
    );
    let addr = format!("{}:18080", tb.engine("node-01").ip);
    let (status, body) =
        http::get_retry(&addr, "/", Duration::from_secs(5)).unwrap_or_else(|e| panic!("GET http://{addr}/: {e}"));
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "hello-from-node-01");
}

#[test]
fn pull_from_the_testbed_registry() {
    let tb = Testbed::shared();
    let registry = tb.registry.as_ref().expect("shared testbed has a registry");
    let image = format!("{registry}/busybox:latest");
    tb.docker_ok("node-02", ["pull", &image]);
    let id = tb.docker_ok("node-02", ["image", "inspect", "--format", "{{.Id}}", &image]);
    let local = tb.docker_ok("node-02", ["image", "inspect", "--format", "{{.Id}}", "busybox:latest"]);
    assert_eq!(id, local, "registry image is the busybox image");
    // Leave node-02 as it was (the pull must exercise the network next time too).
    let _ = tb.docker("node-02", ["rmi", &image]);
}

#[test]
fn engine_crash_restart_and_partition() {
    let tb = Testbed::start(1, &[("node-01", "role=crashtest")], false);
    let id = |tb: &Testbed| tb.docker_ok("node-01", ["info", "--format", "{{.ID}}"]);
    let before = id(&tb);
    assert!(tb.ping("node-01"));

    tb.stop_engine("node-01");
    assert!(!tb.ping("node-01"), "engine still answers after stop-engine");

    tb.start_engine("node-01");
    assert!(tb.ping("node-01"));
    assert_eq!(id(&tb), before, "engine ID changed across a restart");
    assert_eq!(tb.docker_ok("node-01", ["info", "--format", "{{.Name}}"]), "node-01");

    tb.cut("node-01");
    assert!(!tb.ping("node-01"), "engine reachable while cut off");
    assert!(tb.docker("node-01", ["version"]).status.success(), "unix socket still works");
    tb.heal("node-01");
    let addr = tb.engine("node-01").addr.clone();
    let (status, _) = http::get_retry(&addr, "/_ping", Duration::from_secs(5)).expect("ping after heal");
    assert_eq!(status, 200);

    let dir = tb.dir.clone();
    tb.down();
    assert!(!dir.exists(), "testbed dir left behind: {}", dir.display());
}

/// Runs the docker CLI against `engine`'s TCP address with `--tlsverify`
/// and `cert_path` as DOCKER_CERT_PATH (whatever it holds).
fn docker_tls(tb: &Testbed, engine: &str, cert_path: &Path, args: &[&str]) -> Output {
    Command::new(DOCKER)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env("DOCKER_CONFIG", tb.dir.join("docker-config"))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", cert_path)
        .args(["-H", &tb.engine(engine).url()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

/// Asserts that `out` is a TLS refusal (not some other failure).
fn assert_refused(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: accepted:\n{}", String::from_utf8_lossy(&out.stdout));
    // With TLS 1.3 the server checks the client's certificate after the
    // client has finished its side of the handshake: the refusal may
    // reach the client as a reset of its first write.
    assert!(
        stderr.contains("certificate") || stderr.contains("tls") || stderr.contains("connection reset by peer"),
        "{what}: refused, but not for TLS reasons:\n{stderr}"
    );
}

#[test]
fn tls_engines_require_a_client_certificate_and_stay_tls_across_restarts() {
    let tb = Testbed::start_tls(1, false);
    let tls = tb.tls().clone();
    let engine = tb.engine("node-01").clone();
    assert_eq!(engine.addr, format!("{}:2376", engine.ip));
    let version =
        |tb: &Testbed| docker_tls(tb, "node-01", &tls.client.dir, &["version", "--format", "{{.Server.Version}}"]);

    let out = version(&tb);
    assert!(out.status.success(), "docker --tlsverify version: {}", String::from_utf8_lossy(&out.stderr));
    assert!(tb.ping("node-01"));

    // The CA alone (no client certificate) is refused by dockerd --tlsverify.
    let ca_only = tempfile::tempdir().expect("temp dir");
    std::fs::copy(&tls.client.ca, ca_only.path().join("ca.pem")).expect("copy ca.pem");
    assert_refused(&docker_tls(&tb, "node-01", ca_only.path(), &["version"]), "no client certificate");
    // Plain HTTP gets dockerd's "Client sent an HTTP request to an HTTPS server".
    let plain = http::get(&engine.addr, "/_ping", Duration::from_secs(2));
    assert!(!matches!(plain, Ok((200, _))), "plain HTTP answered: {plain:?}");
    // The unix socket stays plain (the fixtures' direct access).
    assert!(tb.docker("node-01", ["version"]).status.success());

    tb.stop_engine("node-01");
    assert!(!tb.ping("node-01"), "engine still answers after stop-engine");
    tb.start_engine("node-01");
    let out = version(&tb);
    assert!(out.status.success(), "after restart: {}", String::from_utf8_lossy(&out.stderr));
    assert_refused(&docker_tls(&tb, "node-01", ca_only.path(), &["version"]), "no client certificate after restart");
}

#[test]
fn tls_engines_check_certificates_made_by_the_toolkit() {
    let tb = Testbed::shared_tls();
    let tls = tb.tls();
    for e in &tb.engines {
        assert_eq!(e.addr, format!("{}:2376", e.ip));
        let out = tb.docker_tcp(&e.name, ["info", "--format", "{{.Name}}"]);
        assert!(out.status.success(), "{}: {}", e.name, String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), e.name);
    }

    // More certificates from the testbed's own CA are accepted...
    let ca = tls.ca();
    let client = ca.issue("extra-client", &[], &[], Usage::Client);
    let out = docker_tls(tb, "node-02", &client.dir, &["version"]);
    assert!(out.status.success(), "issued client: {}", String::from_utf8_lossy(&out.stderr));
    // ... unless expired.
    let expired = ca.issue_expired("expired-client", &[], &[], Usage::Both);
    assert_refused(&docker_tls(tb, "node-02", &expired.dir, &["version"]), "expired client certificate");

    // A certificate of an unrelated CA is refused by the engine, and a
    // client trusting only that CA refuses the engine.
    let stranger = Ca::generate("stranger");
    let foreign = stranger.issue("foreign-client", &[], &[], Usage::Client);
    assert_refused(&docker_tls(tb, "node-02", &foreign.dir, &["version"]), "client of another CA");
    let mixed = tempfile::tempdir().expect("temp dir");
    std::fs::copy(&foreign.ca, mixed.path().join("ca.pem")).expect("copy");
    std::fs::copy(&tls.client.cert, mixed.path().join("cert.pem")).expect("copy");
    std::fs::copy(&tls.client.key, mixed.path().join("key.pem")).expect("copy");
    let out = docker_tls(tb, "node-02", mixed.path(), &["version"]);
    assert_refused(&out, "engine verified against another CA");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown authority"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
