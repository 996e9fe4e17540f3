//! Drop-in compatibility of the API (issue 13), through the real Docker CLI
//! (v28) and a manager in front of the shared testbed's 3 real engines.
//! Every test uses names of its own (`capi-…`) and removes what it made.
//! Needs root and `sudo scripts/install-deps.sh`.

use std::time::Duration;

use swarm_testkit::manager::Manager;
use swarm_testkit::process::poll;
use swarm_testkit::testbed::Testbed;

/// Longest wait for the manager to see a change made on an engine directly.
const CACHE_WAIT: Duration = Duration::from_secs(15);

/// Runs `docker` commands through the manager on drop (removals), so a
/// failing test leaves nothing behind; their failures are ignored.
struct Cleanup<'a> {
    manager: &'a Manager,
    commands: Vec<Vec<String>>,
}

impl<'a> Cleanup<'a> {
    fn new(manager: &'a Manager) -> Cleanup<'a> {
        Cleanup { manager, commands: Vec::new() }
    }

    fn later(&mut self, args: &[&str]) {
        self.commands.push(args.iter().map(|a| a.to_string()).collect());
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for args in &self.commands {
            let _ = self.manager.docker(args);
        }
    }
}

fn shared_manager() -> Manager {
    let tb = Testbed::shared();
    let manager = Manager::start(&tb.addrs().join(","), &[]);
    manager.wait_healthy(3);
    manager
}

/// `docker volume ls` names matching `filters`, sorted.
fn volumes(m: &Manager, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["volume", "ls", "--format", "{{.Name}}"];
    for filter in filters {
        args.extend(["--filter", filter]);
    }
    let mut names: Vec<String> = m.docker_ok(args).lines().map(str::to_string).collect();
    names.sort();
    names
}

#[test]
fn run_on_a_nodes_network_runs_there() {
    let m = shared_manager();
    let mut cleanup = Cleanup::new(&m);
    cleanup.later(&["rm", "-f", "capi-net-pinned"]);
    cleanup.later(&["network", "rm", "node-02/capi-net"]);
    m.docker_ok(["network", "create", "node-02/capi-net"]);
    m.docker_ok(["run", "-d", "--name", "capi-net-pinned", "--net", "node-02/capi-net", "busybox", "sleep", "300"]);
    let placed = m.docker_ok([
        "inspect",
        "-f",
        "{{.Node.Name}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}} \
         {{index .Config.Labels \"com.docker.swarm.constraints\"}}",
        "capi-net-pinned",
    ]);
    assert_eq!(placed, "node-02 capi-net [\"node==node-02\"]", "node, network, and the pin kept for rescheduling");
}

#[test]
fn ps_filters_on_swarm_mode_tasks() {
    let m = shared_manager();
    let mut cleanup = Cleanup::new(&m);
    cleanup.later(&["rm", "-f", "capi-task", "capi-not-task"]);
    m.docker_ok(["run", "-d", "--name", "capi-task", "--label", "com.docker.swarm.task=", "busybox", "sleep", "300"]);
    m.docker_ok(["run", "-d", "--name", "capi-not-task", "busybox", "sleep", "300"]);
    let listed = |is_task: &str| -> Vec<String> {
        let filter = format!("is-task={is_task}");
        let out = m.docker_ok(["ps", "--filter", "name=capi-", "--filter", &filter, "--format", "{{.Names}}"]);
        out.lines().filter_map(|l| l.rsplit('/').next()).map(str::to_string).collect()
    };
    assert_eq!(listed("true"), ["capi-task"]);
    assert_eq!(listed("false"), ["capi-not-task"]);
    let err = m.docker_err(["ps", "--filter", "is-task=maybe"]);
    assert!(err.contains("Invalid filter 'is-task=[maybe]'"), "{err}");
}

#[test]
fn a_64_hex_image_name_is_refused_before_scheduling() {
    let m = shared_manager();
    let hex = "0123456789abcdef".repeat(4);
    let err = m.docker_err(["run", "-d", &hex]);
    let expected = format!("invalid repository name ({hex}), cannot specify 64-byte hexadecimal strings");
    assert!(err.contains(&expected), "{err}");
    assert!(!err.contains("Unable to find image"), "nothing pulled: {err}");
    let (status, body) =
        m.request("POST", "/v1.41/containers/create", Some(&format!("{{\"Image\":\"{hex}\"}}"))).expect("request");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_missing_volume_driver_is_reported_without_a_pull() {
    let m = shared_manager();
    let out = m.docker(["run", "--rm", "--volume-driver=capi_no_driver", "-v", "/data", "busybox", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("plugin \"capi_no_driver\" not found"), "the driver's message: {err}");
    assert!(!err.contains("Unable to find image"), "the CLI must not pull: {err}");
    let body = r#"{"Image":"busybox","Volumes":{"/data":{}},"HostConfig":{"VolumeDriver":"capi_no_driver"}}"#;
    let (status, body) = m.request("POST", "/v1.41/containers/create", Some(body)).expect("request");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn images_filter_by_node_and_save_needs_one_engine_with_all() {
    let tb = Testbed::shared();
    let m = shared_manager();
    let mut cleanup = Cleanup::new(&m);
    cleanup.later(&["rmi", "capi-tagged:v1", "capi-on-03:v1"]);
    m.docker_ok(["tag", "busybox", "capi-tagged:v1"]);
    let listed = |node: &str| -> Vec<String> {
        let filter = format!("node={node}");
        let out = m.docker_ok(["images", "--filter", &filter, "--format", "{{.Repository}}:{{.Tag}}"]);
        out.lines().filter(|l| l.starts_with("capi-")).map(str::to_string).collect()
    };
    assert_eq!(listed("node-0"), ["capi-tagged:v1"], "tagged on every node, listed once");

    tb.docker_ok("node-03", ["tag", "busybox", "capi-on-03:v1"]);
    m.wait_until(CACHE_WAIT, "node-03's new tag is listed", |_| listed("node-03").contains(&"capi-on-03:v1".into()));
    assert!(!listed("node-01").contains(&"capi-on-03:v1".into()), "{:?}", listed("node-01"));
    let both = m.docker_ok(["images", "--filter", "node=node-03", "--filter", "reference=capi-on-03", "-q"]);
    assert_eq!(both.lines().count(), 1, "other filters still reach the engines: {both}");

    // Saved from the one engine that holds both (once the manager's cache has the tag).
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("both.tar");
    let archive = archive.to_str().expect("path");
    let saved = poll(CACHE_WAIT, Duration::from_millis(200), || {
        m.docker(["save", "-o", archive, "busybox", "capi-on-03:v1"]).status.success()
    });
    assert!(saved, "docker save of images node-03 holds");
    let err = m.docker_err(["save", "-o", archive, "busybox:latest", "capi-nope:latest"]);
    assert!(
        err.contains("Unable to find a healthy engine containing all images: [busybox:latest capi-nope:latest]"),
        "{err}"
    );
}

#[test]
fn volumes_follow_placement_rules_and_filters() {
    let m = shared_manager();
    let mut cleanup = Cleanup::new(&m);
    cleanup.later(&["rm", "-f", "-v", "capi-vol-anchor", "capi-vol-anon"]);
    cleanup.later(&[
        "volume",
        "rm",
        "capi-vol-all",
        "capi-vol-label",
        "capi-vol-opt",
        "capi-vol-white",
        "capi-vol-aff",
    ]);
    m.docker_ok([
        "run",
        "-d",
        "--name",
        "capi-vol-anchor",
        "-e",
        "constraint:node==node-03",
        "busybox",
        "sleep",
        "300",
    ]);

    m.docker_ok(["volume", "create", "--name", "capi-vol-all"]);
    m.docker_ok(["volume", "create", "--label", r#"com.docker.swarm.constraints=["node==node-02"]"#, "capi-vol-label"]);
    m.docker_ok(["volume", "create", "-o", "constraint:node==node-01", "capi-vol-opt"]);
    m.docker_ok([
        "volume",
        "create",
        "--label",
        r#"com.docker.swarm.whitelists=["node==node-01|node-03"]"#,
        "capi-vol-white",
    ]);
    m.docker_ok([
        "volume",
        "create",
        "--label",
        r#"com.docker.swarm.affinities=["container==capi-vol-anchor"]"#,
        "capi-vol-aff",
    ]);
    assert_eq!(
        volumes(&m, &["name=capi-vol-"]),
        [
            "node-01/capi-vol-all",
            "node-01/capi-vol-opt",
            "node-01/capi-vol-white",
            "node-02/capi-vol-all",
            "node-02/capi-vol-label",
            "node-03/capi-vol-aff",
            "node-03/capi-vol-all",
            "node-03/capi-vol-white",
        ]
    );
    assert_eq!(volumes(&m, &["name=capi-vol-", "node=node-02"]), ["node-02/capi-vol-all", "node-02/capi-vol-label"]);
    assert_eq!(volumes(&m, &["name=node-01/capi-vol-o"]), ["node-01/capi-vol-opt"]);
    let labels = m.docker_ok(["volume", "inspect", "-f", "{{json .Labels}} {{json .Options}}", "node-01/capi-vol-opt"]);
    assert!(labels.starts_with(r#"{"com.docker.swarm.constraints":"[\"node==node-01\"]"}"#), "{labels}");
    assert!(!labels.contains("constraint:node"), "the driver never sees the rule: {labels}");

    // An anonymous volume lives on the container's node, listed once.
    m.docker_ok(["run", "--name", "capi-vol-anon", "-v", "/data", "-e", "constraint:node==node-02", "busybox", "true"]);
    let anonymous = m.docker_ok(["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", "capi-vol-anon"]);
    assert_eq!(anonymous.len(), 64, "{anonymous}");
    assert_eq!(volumes(&m, &[&format!("name={anonymous}")]), [format!("node-02/{anonymous}")]);
}

#[test]
fn placement_labels_that_are_not_json_arrays_are_refused() {
    let m = shared_manager();
    for label in ["com.docker.swarm.constraints", "com.docker.swarm.affinities"] {
        let err = m.docker_err(["run", "--rm", "--label", &format!("{label}=node==node-01"), "busybox", "true"]);
        assert!(
            err.contains(&format!("label {label} must hold a JSON array of strings, got 'node==node-01'")),
            "{err}"
        );
        let err = m.docker_err(["volume", "create", "--label", &format!("{label}=node==node-01"), "capi-vol-bad"]);
        assert!(err.contains(&format!("label {label} must hold a JSON array")), "{err}");
    }
    let body = r#"{"Image":"busybox","Labels":{"com.docker.swarm.constraints":"node==node-01"}}"#;
    let (status, body) = m.request("POST", "/v1.41/containers/create", Some(body)).expect("request");
    assert_eq!(status, 400, "{body}");
    assert!(!m.docker_ok(["volume", "ls", "--format", "{{.Name}}"]).contains("capi-vol-bad"));
}

/// A container made on an engine directly is found through the manager by
/// its full ID at once, also before the engine's event reached the cache
/// (a full ID the caches miss is asked of the engines).
#[test]
fn a_container_made_on_an_engine_is_found_by_its_full_id_at_once() {
    let tb = Testbed::shared();
    let m = shared_manager();
    for n in 0..5 {
        let name = format!("capi-direct-{n}-{}", std::process::id());
        let id = tb.docker_ok("node-03", ["create", "--name", &name, "busybox", "true"]).trim().to_string();
        let seen = m.docker_ok(["inspect", "-f", "{{.Id}} {{.Node.Name}}", &id]);
        assert_eq!(seen.trim(), format!("{id} node-03"));
        m.docker_ok(["rm", &id]);
    }
}
