//! The real Docker CLI (v28) against a manager in front of 3 real engines.
//! Needs root and `sudo scripts/install-deps.sh`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use swarm_testkit::http;
use swarm_testkit::manager::Manager;
use swarm_testkit::metrics::Samples;
use swarm_testkit::testbed::Testbed;

/// Removes containers on drop, so a failing test leaves nothing behind.
struct Cleanup<'a> {
    manager: &'a Manager,
    containers: Vec<String>,
}

impl<'a> Cleanup<'a> {
    fn new(manager: &'a Manager, containers: &[&str]) -> Cleanup<'a> {
        Cleanup { manager, containers: containers.iter().map(|s| s.to_string()).collect() }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.manager.docker(["rm", "-f", c]);
        }
    }
}

fn shared_manager() -> Manager {
    let tb = Testbed::shared();
    let manager = Manager::start(&tb.addrs().join(","), &[]);
    manager.wait_healthy(3);
    manager
}

#[test]
fn info_shows_every_node_in_the_original_format() {
    let m = shared_manager();
    let info = m.docker_ok(["info"]);
    for expected in [
        " Role: primary",
        " Strategy: spread",
        " Filters: health, port, containerslots, dependency, affinity, constraint, whitelist",
        " Nodes: 3",
        "  node-01: 10.",
        "   └ Status: Healthy",
        "   └ Reserved CPUs: 0 / ",
        "   └ Reserved Memory: 0 B / ",
        "   └ Error: (none)",
        "   └ ServerVersion: 20.10",
        " Server Version: swarm/",
    ] {
        assert!(info.contains(expected), "{expected:?} missing from docker info:\n{info}");
    }
    assert!(info.contains("storage=ssd"), "engine labels shown:\n{info}");
    assert_eq!(info.matches("└ Status: Healthy").count(), 3, "{info}");
    let version = m.docker_ok(["version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"]);
    assert!(version.starts_with("swarm/"), "{version}");
    assert!(version.ends_with("1.41"), "API version negotiated to the engines' 1.41: {version}");
}

#[test]
fn run_ps_inspect_and_lifecycle() {
    let m = shared_manager();
    let _cleanup = Cleanup::new(&m, &["cli-life", "cli-life2", "cli-pinned"]);
    assert_eq!(m.docker_ok(["run", "--rm", "busybox", "echo", "hello from swarm"]), "hello from swarm");

    let id = m.docker_ok(["run", "-d", "--name", "cli-life", "--label", "suite=cli", "busybox", "sleep", "300"]);
    assert_eq!(id.len(), 64);
    m.docker_ok(["run", "-d", "--name", "cli-pinned", "-e", "constraint:node==node-03", "busybox", "sleep", "300"]);
    let node = m.docker_ok(["inspect", "-f", "{{.Node.Name}}", "cli-pinned"]);
    assert_eq!(node, "node-03");

    let ps = m.docker_ok(["ps", "--filter", "label=suite=cli", "--format", "{{.Names}}"]);
    assert!(ps.ends_with("/cli-life") && ps.starts_with("node-0"), "name shown as node/name: {ps}");
    let by_node = m.docker_ok(["ps", "--filter", "node=node-03", "--format", "{{.Names}}"]);
    assert!(by_node.lines().any(|l| l == "node-03/cli-pinned"), "{by_node}");
    let by_id = m.docker_ok(["ps", "-q", "--no-trunc", "--filter", &format!("id={}", &id[..12])]);
    assert_eq!(by_id, id);

    // Every lookup form resolves: name, /name, node/name, short ID.
    let node_name = m.docker_ok(["inspect", "-f", "{{.Node.Name}}", "cli-life"]);
    for key in ["cli-life", "/cli-life", &format!("{node_name}/cli-life"), &id[..12]] {
        assert_eq!(m.docker_ok(["inspect", "-f", "{{.Id}}", key]), id, "lookup by {key}");
    }

    m.docker_ok(["stop", "-t", "1", "cli-life"]);
    let exited =
        m.docker_ok(["ps", "-a", "--filter", "status=exited", "--filter", "name=cli-life", "--format", "{{.Names}}"]);
    assert!(exited.contains("cli-life"), "{exited}");
    assert!(!m.docker_ok(["ps", "--format", "{{.Names}}"]).contains("/cli-life\n"));
    m.docker_ok(["start", "cli-life"]);
    m.docker_ok(["restart", "-t", "1", "cli-life"]);
    m.docker_ok(["pause", "cli-life"]);
    let paused = m.docker_ok(["ps", "--filter", "name=cli-life$", "--format", "{{.Status}}"]);
    assert!(paused.contains("Paused"), "paused containers are listed: {paused}");
    m.docker_ok(["unpause", "cli-life"]);
    m.docker_ok(["rename", "cli-life", "cli-life2"]);
    assert_eq!(m.docker_ok(["inspect", "-f", "{{.Name}}", "cli-life2"]), "/cli-life2");
    let conflict = m.docker_err(["rename", "cli-life2", "cli-pinned"]);
    assert!(conflict.contains("Conflict"), "{conflict}");
    let top = m.docker_ok(["top", "cli-life2"]);
    assert!(top.contains("sleep 300"), "{top}");
    let stats = m.docker_ok(["stats", "--no-stream", "--format", "{{.Name}}", "cli-life2"]);
    assert_eq!(stats, "cli-life2");
    m.docker_ok(["kill", "cli-life2"]);
    m.docker_ok(["rm", "-f", "cli-life2", "cli-pinned"]);
    let gone = m.docker_err(["inspect", "cli-life2"]);
    assert!(gone.contains("No such object"), "{gone}");
}

#[test]
fn names_are_unique_across_the_cluster() {
    let m = shared_manager();
    let _cleanup = Cleanup::new(&m, &["cli-unique"]);
    m.docker_ok(["run", "-d", "--name", "cli-unique", "-e", "constraint:node==node-01", "busybox", "sleep", "300"]);
    // Another node has no container of that name, yet the create is refused.
    let err = m.docker_err(["run", "-d", "--name", "cli-unique", "-e", "constraint:node==node-02", "busybox", "true"]);
    assert!(err.contains("Conflict. The container name \"/cli-unique\" is already in use"), "{err}");
    let count = m.docker_ok(["ps", "-a", "--filter", "name=cli-unique", "-q"]).lines().count();
    assert_eq!(count, 1, "no second container was created");
}

#[test]
fn exec_attach_and_logs_stream_through_the_manager() {
    let m = shared_manager();
    let _cleanup = Cleanup::new(&m, &["cli-exec", "cli-logs", "cli-attach"]);
    m.docker_ok(["run", "-d", "--name", "cli-exec", "busybox", "sleep", "300"]);
    assert_eq!(m.docker_ok(["exec", "cli-exec", "echo", "in-exec"]), "in-exec");

    // exec -i with piped stdin: the half-close must reach the process.
    let out = m.docker_piped(&["exec", "-i", "cli-exec", "cat"], "piped through exec\n");
    assert_eq!(out, "piped through exec");

    // run -i attaches stdin before start, like run -it without a terminal.
    let out = m.docker_piped(&["run", "-i", "--rm", "busybox", "sh", "-c", "read line; echo got:$line"], "hello\n");
    assert_eq!(out, "got:hello");

    // docker attach with stdin to a running container.
    m.docker_ok(["run", "-d", "-i", "--name", "cli-attach", "busybox", "sh", "-c", "read line; echo got:$line"]);
    assert_eq!(m.docker_attach_line("cli-attach", "attached"), "got:attached");

    // logs -f follows until the container exits, then returns.
    m.docker_ok([
        "run",
        "-d",
        "--name",
        "cli-logs",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.3; done",
    ]);
    let started = std::time::Instant::now();
    let logs = m.docker_ok(["logs", "-f", "cli-logs"]);
    assert_eq!(logs, "line1\nline2\nline3");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn cp_both_ways() {
    let m = shared_manager();
    let _cleanup = Cleanup::new(&m, &["cli-cp"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("in.txt");
    std::fs::write(&local, "copied in\n").expect("write");
    m.docker_ok(["run", "-d", "--name", "cli-cp", "busybox", "sleep", "300"]);
    m.docker_ok(["cp", local.to_str().expect("path"), "cli-cp:/tmp/in.txt"]);
    assert_eq!(m.docker_ok(["exec", "cli-cp", "cat", "/tmp/in.txt"]), "copied in");
    let back = dir.path().join("back.txt");
    m.docker_ok(["cp", "cli-cp:/tmp/in.txt", back.to_str().expect("path")]);
    assert_eq!(std::fs::read_to_string(back).expect("read"), "copied in\n");
}

#[test]
fn published_port_is_reachable_on_the_engine_address() {
    let tb = Testbed::shared();
    let m = shared_manager();
    let _cleanup = Cleanup::new(&m, &["cli-port"]);
    m.docker_ok(["run", "-d", "--name", "cli-port", "-p", "18181:80", "busybox", "httpd", "-f", "-p", "80"]);
    let node = m.docker_ok(["inspect", "-f", "{{.Node.Name}}", "cli-port"]);
    let ip = &tb.engine(&node).ip;
    let ports = m.docker_ok(["ps", "--filter", "name=cli-port", "--format", "{{.Ports}}"]);
    assert!(ports.contains(&format!("{ip}:18181->80/tcp")), "0.0.0.0 shown as the engine IP: {ports}");
    let (status, _) =
        http::get_retry(&format!("{ip}:18181"), "/", Duration::from_secs(10)).expect("HTTP to the published port");
    assert!(status == 200 || status == 404, "httpd answered {status}");
}

#[test]
fn events_are_tagged_with_their_node_and_honour_since_until() {
    let m = shared_manager();
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    m.docker_ok(["run", "--rm", "--name", "cli-events", "-e", "constraint:node==node-02", "busybox", "true"]);
    let until = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() + 1;
    std::thread::sleep(Duration::from_millis(1200));
    let out = m.docker_ok([
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        "container=cli-events",
        "--format",
        "{{.Action}} {{index .Actor.Attributes \"node.name\"}}",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    for action in ["create", "start", "die", "destroy"] {
        assert!(lines.contains(&format!("{action} node-02").as_str()), "{action} missing: {out}");
    }
}

#[test]
fn pull_push_images_and_rmi() {
    let tb = Testbed::shared();
    let registry = tb.registry.clone().expect("the shared testbed has a registry");
    let m = shared_manager();
    let image = format!("{registry}/busybox");
    let pull = m.docker_ok(["pull", &image]);
    for node in ["node-01", "node-02", "node-03"] {
        assert!(
            pull.contains(&format!("{node}: Pulling {image}:latest... : downloaded")),
            "progress for {node}: {pull}"
        );
        let present = tb.docker_ok(node, ["images", "-q", &image]);
        assert!(!present.is_empty(), "{node} has the image after the pull");
    }
    let images = m.docker_ok(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(images.lines().filter(|l| *l == format!("{image}:latest")).count(), 1, "listed once: {images}");

    let pushed = format!("{registry}/cli-pushed:v1");
    m.docker_ok(["tag", &image, &pushed]);
    let push = m.docker_ok(["push", &pushed]);
    assert!(push.contains("digest: sha256:"), "{push}");
    m.docker_ok(["rmi", &pushed]);
    let images = m.docker_ok(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!images.contains("cli-pushed"), "{images}");
    let err = m.docker_err(["rmi", "no-such-image:nope"]);
    assert!(err.contains("No such image"), "{err}");
}

#[test]
fn networks_and_volumes() {
    let m = shared_manager();
    let _cleanup = Cleanup::new(&m, &["cli-net-a", "cli-net-b"]);
    m.docker_ok(["network", "create", "cli-net"]);
    let ls = m.docker_ok(["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert_eq!(ls.lines().filter(|l| *l == "cli-net bridge").count(), 1, "{ls}");
    assert!(ls.contains("node-01/bridge"), "local networks shown as node/name: {ls}");
    m.docker_ok([
        "run",
        "-d",
        "--name",
        "cli-net-a",
        "--net",
        "cli-net",
        "-e",
        "constraint:node==node-01",
        "busybox",
        "sleep",
        "300",
    ]);
    m.docker_ok([
        "run",
        "-d",
        "--name",
        "cli-net-b",
        "--net",
        "cli-net",
        "-e",
        "constraint:node==node-02",
        "busybox",
        "sleep",
        "300",
    ]);
    let nets =
        m.docker_ok(["inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}", "cli-net-b"]);
    assert_eq!(nets, "cli-net");
    let err = m.docker_err(["network", "create", "cli-net"]);
    assert!(err.contains("already exists"), "{err}");
    let overlay = m.docker_err(["network", "create", "-d", "overlay", "cli-overlay"]);
    assert!(overlay.contains("swarm"), "engine's own error is returned: {overlay}");
    m.docker_ok(["rm", "-f", "cli-net-a", "cli-net-b"]);
    m.docker_ok(["network", "rm", "cli-net"]);
    assert!(!m.docker_ok(["network", "ls", "--format", "{{.Name}}"]).lines().any(|l| l == "cli-net"));

    m.docker_ok(["network", "create", "node-02/cli-local"]);
    let ls = m.docker_ok(["network", "ls", "--filter", "name=cli-local", "--format", "{{.Name}}"]);
    assert_eq!(ls, "node-02/cli-local");
    m.docker_ok(["network", "rm", "node-02/cli-local"]);

    m.docker_ok(["volume", "create", "cli-vol"]);
    let vols = m.docker_ok(["volume", "ls", "--format", "{{.Name}}"]);
    for node in ["node-01", "node-02", "node-03"] {
        assert!(vols.lines().any(|l| l == format!("{node}/cli-vol")), "{vols}");
    }
    m.docker_ok(["volume", "create", "node-03/cli-vol3"]);
    assert_eq!(m.docker_ok(["volume", "inspect", "-f", "{{.Name}}", "node-03/cli-vol3"]), "cli-vol3");
    m.docker_ok(["volume", "rm", "cli-vol", "node-03/cli-vol3"]);
    let vols = m.docker_ok(["volume", "ls", "--format", "{{.Name}}"]);
    assert!(!vols.contains("cli-vol"), "{vols}");
}

#[test]
fn bad_input_gets_docker_style_errors() {
    let m = shared_manager();
    let (status, body) = m.request("POST", "/v1.41/containers/create", Some("{not json")).expect("request");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"message\":\"invalid JSON"), "{body}");
    let (status, body) = m.request("POST", "/v1.41/containers/create", Some("[1,2]")).expect("request");
    assert_eq!(status, 400, "{body}");
    let (status, body) = m.get("/v1.41/containers/no-such-container/json").expect("request");
    assert_eq!((status, body.trim()), (404, "{\"message\":\"No such container: no-such-container\"}"));
    let (status, body) = m.get("/v1.41/no/such/route").expect("request");
    assert_eq!(status, 404, "{body}");
    let (status, body) = m.get("/containers/json?filters=%7Bbad").expect("request");
    assert_eq!(status, 400, "{body}");
    let (status, body) = m.get("/containers/json?filters=%7B%22nope%22%3A%5B%22x%22%5D%7D").expect("request");
    assert_eq!(status, 400, "{body}");
    let (status, _) = m.get("/events?since=yesterday").expect("request");
    assert_eq!(status, 400);
    let err = m.docker_err(["run", "--rm", "-e", "constraint:node==no-such-node", "busybox", "true"]);
    assert!(err.contains("Unable to find a node that satisfies the following conditions"), "{err}");
}

#[test]
fn node_ls_and_inspect_show_the_engines_and_swarm_verbs_are_refused() {
    let tb = Testbed::shared();
    let m = shared_manager();
    let ls = m.docker_ok(["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}} {{.EngineVersion}}"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 3, "{ls}");
    for (line, engine) in lines.iter().zip(&tb.engines) {
        assert!(line.starts_with(&format!("{} Ready Active 20.10", engine.name)), "{line}");
    }
    let ids = m.docker_ok(["node", "ls", "-q"]);
    let first = ids.lines().next().expect("a node ID");
    assert_eq!(first.len(), 25, "{first}");
    for key in [first, &first[..6], "node-02"] {
        let hostname = m.docker_ok(["node", "inspect", "-f", "{{.Description.Hostname}}", key]);
        assert!(hostname.starts_with("node-0"), "inspect by {key}: {hostname}");
    }
    let labels = m.docker_ok(["node", "inspect", "-f", "{{index .Description.Engine.Labels \"storage\"}}", "node-02"]);
    assert_eq!(labels, "disk");
    let missing = m.docker_err(["node", "inspect", "no-such-node"]);
    assert!(missing.contains("node no-such-node not found"), "{missing}");
    for verb in [&["swarm", "init"][..], &["swarm", "leave"]] {
        let err = m.docker_err(verb);
        assert!(err.contains("managed by swarm manage"), "docker {verb:?}: {err}");
    }
}

#[test]
fn node_update_drains_and_labels_nodes_for_docker_run_and_survives_a_restart() {
    let tb = Testbed::shared();
    let state = tempfile::tempdir().expect("a state dir");
    let state_dir = state.path().display().to_string();
    let mut m = Manager::start(&tb.addrs().join(","), &["--state-dir", &state_dir]);
    m.wait_healthy(3);
    let names: Vec<String> = (0..4).map(|i| format!("cli-drain-{i}")).chain(["cli-zone".into()]).collect();
    let cleanup = Cleanup { manager: &m, containers: names.clone() };

    m.docker_ok(["node", "update", "--availability", "drain", "node-02"]);
    m.docker_ok(["node", "update", "--label-add", "zone=blue", "node-03"]);
    let ls = m.docker_ok(["node", "ls", "--format", "{{.Hostname}} {{.Availability}}"]);
    assert!(ls.contains("node-02 Drain") && ls.contains("node-01 Active"), "{ls}");
    assert!(m.docker_ok(["info"]).contains("└ Availability: Drain"), "docker info shows it");
    let labels = m.docker_ok(["node", "inspect", "-f", "{{.Spec.Labels.zone}} {{.Version.Index}}", "node-03"]);
    assert_eq!(labels, "blue 2");

    for name in &names[..4] {
        m.docker_ok(["run", "-d", "--name", name, "busybox", "sleep", "300"]);
        assert_ne!(
            m.docker_ok(["inspect", "-f", "{{.Node.Name}}", name]),
            "node-02",
            "a drained node takes nothing new"
        );
    }
    let refused = m.docker_err(["run", "-d", "-e", "constraint:node==node-02", "busybox", "true"]);
    assert!(refused.contains("Unable to find a node that satisfies"), "{refused}");
    m.docker_ok(["run", "-d", "--name", "cli-zone", "-e", "constraint:zone==blue", "busybox", "sleep", "300"]);
    assert_eq!(m.docker_ok(["inspect", "-f", "{{.Node.Name}}", "cli-zone"]), "node-03", "node labels constrain");

    // An update from a stale version is refused and changes nothing.
    let id = m.docker_ok(["node", "inspect", "-f", "{{.ID}}", "node-03"]);
    let (status, body) = m
        .request("POST", &format!("/v1.41/nodes/{id}/update?version=1"), Some(r#"{"Availability":"drain"}"#))
        .expect("a stale update");
    assert_eq!((status, body.contains("update out of sequence")), (409, true), "{body}");
    drop(cleanup);

    // The state file keeps it across a restart.
    m.restart();
    m.wait_healthy(3);
    let ls = m.docker_ok(["node", "ls", "--format", "{{.Hostname}} {{.Availability}}"]);
    assert!(ls.contains("node-02 Drain") && ls.contains("node-03 Active"), "after a restart: {ls}");
    m.docker_ok(["node", "update", "--availability", "active", "node-02"]);
    m.docker_ok(["run", "--rm", "-e", "constraint:node==node-02", "busybox", "true"]);
}

/// `/metrics` counts what the real CLI sent, by route class and status, and
/// reads the engines and containers of the cluster.
#[test]
fn metrics_count_the_cli_requests_and_show_the_engines() {
    const REQUESTS: &str = "swarm_http_requests_total";
    let m = shared_manager();
    let _cleanup = Cleanup::new(&m, &["cli-metrics"]);
    let scrape = |m: &Manager| {
        let (status, text) = m.get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{text}");
        swarm_testkit::metrics::parse(&text)
    };
    // What the requests counters gained between two scrapes, by route and status.
    let gained = |before: &Samples, after: &Samples| {
        let mut gained: Vec<(String, String, f64)> = after
            .0
            .iter()
            .filter(|s| s.name == REQUESTS)
            .map(|s| {
                let (route, status) = (s.labels["route"].clone(), s.labels["status"].clone());
                let was = before.value(REQUESTS, &[("route", &route), ("status", &status)]);
                (route, status, s.value - was)
            })
            .filter(|(_, _, n)| *n > 0.0)
            .collect();
        gained.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
        gained
    };
    let counted = |list: &[(&str, &str, f64)]| -> Vec<(String, String, f64)> {
        let mut list: Vec<_> = list.iter().map(|(r, s, n)| (r.to_string(), s.to_string(), *n)).collect();
        list.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
        list
    };

    let before = scrape(&m);
    m.docker_ok(["run", "-d", "--name", "cli-metrics", "busybox", "sleep", "300"]);
    let ran = scrape(&m);
    let run = gained(&before, &ran);
    let ps = m.docker_ok(["ps", "--filter", "name=cli-metrics", "--format", "{{.Names}}"]);
    assert!(ps.ends_with("/cli-metrics"), "{ps}");
    let listed = scrape(&m);
    let list = gained(&ran, &listed);
    m.docker_ok(["rm", "-f", "cli-metrics"]);
    let removed = scrape(&m);
    let remove = gained(&listed, &removed);

    // Each scrape is counted once answered, so it shows in the next one.
    // `docker run -d` also waits for the container's next exit (`/wait`,
    // whose 200 the engine sends at once), cancelled once it has started it.
    let run_expected = counted(&[
        ("metrics", "200", 1.0),
        ("ping", "200", 1.0),
        ("containers_create", "201", 1.0),
        ("container_forward", "200", 1.0),
        ("container_forward", "204", 1.0),
    ]);
    assert_eq!(run, run_expected, "docker run -d");
    assert_eq!(list, counted(&[("metrics", "200", 1.0), ("ping", "200", 1.0), ("containers_list", "200", 1.0)]));
    assert_eq!(remove, counted(&[("metrics", "200", 1.0), ("ping", "200", 1.0), ("container_remove", "204", 1.0)]));
    assert_eq!(removed.value("swarm_container_creates_total", &[("result", "created")]), 1.0);

    assert_eq!(removed.get("swarm_engines", &[("health", "Healthy")]), Some(3.0));
    assert_eq!(removed.get("swarm_leader", &[]), Some(1.0));
    // Other tests share the engines, so only a lower bound holds.
    assert!(ran.value("swarm_containers", &[]) >= 1.0, "cli-metrics is counted");
}
