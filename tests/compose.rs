//! docker-compose (Debian's 1.29, Python) through a manager in front of 3
//! real engines: legacy (version 1) and `version: "2"` files, `up -d`, `ps`,
//! `logs`, `scale`, `down`, services pinned with `constraint:node==...`, and
//! a project outliving a manager restart.
//! Needs root, `sudo scripts/install-deps.sh` and /usr/bin/docker-compose.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use swarm_testkit::manager::Manager;
use swarm_testkit::process::{poll, tail};
use swarm_testkit::testbed::Testbed;

/// The compose binary under test.
const COMPOSE: &str = "/usr/bin/docker-compose";

/// Every compose call is cut off after this long (`timeout(1)`), so a hang
/// fails the test instead of blocking it.
const COMPOSE_TIMEOUT_SECS: &str = "180";

const NODES: [&str; 3] = ["node-01", "node-02", "node-03"];

/// A compose project in its own temp dir, torn down on drop (compose `down`,
/// then force removal on every engine directly) so a failing test leaves
/// nothing behind.
struct Project {
    /// Project name (`-p`), unique per test and test process.
    name: String,
    /// Holds `docker-compose.yml` and the CLI config dir.
    dir: tempfile::TempDir,
    /// `tcp://...` of the manager compose talks to.
    host: String,
    /// The manager's log, shown when a compose command fails.
    log: std::path::PathBuf,
}

impl Project {
    /// Writes `yaml` as the project's compose file; `tag` makes the name unique.
    fn new(manager: &Manager, tag: &str, yaml: &str) -> Project {
        let dir = tempfile::Builder::new().prefix("swarm-compose-").tempdir().expect("temp dir");
        std::fs::write(dir.path().join("docker-compose.yml"), yaml).expect("write compose file");
        std::fs::create_dir(dir.path().join("docker-config")).expect("config dir");
        let mut project = Project {
            name: format!("cmp{tag}{}", std::process::id()),
            dir,
            host: String::new(),
            log: Default::default(),
        };
        project.use_manager(manager);
        project
    }

    /// Points compose at `manager` from now on.
    fn use_manager(&mut self, manager: &Manager) {
        self.host = format!("tcp://{}", manager.addr);
        self.log = manager.dir.path().join("manager.log");
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("docker-compose.yml")
    }

    /// `docker-compose -p NAME -f FILE args...` against the manager.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg(COMPOSE_TIMEOUT_SECS)
            .arg(COMPOSE)
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(self.file())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("COMPOSE_PROJECT_NAME")
            .env_remove("COMPOSE_FILE")
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {COMPOSE}: {e}"))
    }

    /// Like [`Project::run`] but panics on failure; returns stdout and stderr
    /// (compose reports progress on stderr).
    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "docker-compose -p {} {} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- manager log tail ---\n{}",
            self.name,
            args.join(" "),
            out.status,
            tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
        );
        (stdout, stderr)
    }

    /// Container IDs `docker-compose ps -q [service]` lists.
    fn ids(&self, service: &str) -> Vec<String> {
        let mut args = vec!["ps", "-q"];
        if !service.is_empty() {
            args.push(service);
        }
        let (stdout, _) = self.ok(&args);
        stdout.lines().map(|l| l.trim().to_string()).collect()
    }

    /// The compose label filter selecting this project's containers.
    fn label(&self) -> String {
        format!("label=com.docker.compose.project={}", self.name)
    }

    /// The network a `version: "2"` file gets by default.
    fn default_network(&self) -> String {
        format!("{}_default", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--remove-orphans", "-t", "1"]);
        // Whatever is left (e.g. the manager is gone): straight on the engines.
        let tb = Testbed::shared();
        for node in NODES {
            let out = tb.docker(node, ["ps", "-aq", "--filter", &self.label()]);
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = tb.docker(node, [&["rm", "-f"][..], &ids].concat());
            }
            let _ = tb.docker(node, ["network", "rm", &self.default_network()]);
        }
    }
}

fn shared_manager() -> Manager {
    let tb = Testbed::shared();
    let manager = Manager::start(&tb.addrs().join(","), &[]);
    manager.wait_healthy(3);
    manager
}

/// Polls `check` every 200 ms until it holds or `within` has passed.
fn eventually(within: Duration, check: impl Fn() -> bool) -> bool {
    poll(within, Duration::from_millis(200), check)
}

/// `docker-compose ps` shows every one of `containers` as up.
fn assert_ps_shows_up(project: &Project, containers: &[&str]) {
    let (ps, _) = project.ok(&["ps"]);
    for name in containers {
        assert!(
            ps.lines().any(|l| l.starts_with(&format!("{name} ")) && l.contains(" Up")),
            "{name} is not listed as Up by docker-compose ps:\n{ps}"
        );
    }
}

/// `docker-compose logs` eventually shows all of `lines`.
fn assert_logs_contain(project: &Project, args: &[&str], lines: &[&str]) {
    let mut all = vec!["logs", "--no-color"];
    all.extend_from_slice(args);
    let last = std::cell::RefCell::new(String::new());
    let found = eventually(Duration::from_secs(10), || {
        let (logs, _) = project.ok(&all);
        let done = lines.iter().all(|l| logs.contains(l));
        *last.borrow_mut() = logs;
        done
    });
    assert!(found, "docker-compose logs lacks {lines:?}:\n{}", last.borrow());
}

/// `n` containers of `service` run: as compose sees them, and as the manager
/// lists them by label.
fn assert_running(m: &Manager, project: &Project, service: &str, n: usize) {
    let ids = project.ids(service);
    assert_eq!(ids.len(), n, "docker-compose ps -q {service}: {ids:?}");
    for id in &ids {
        assert_eq!(m.docker_ok(["inspect", "-f", "{{.State.Running}}", id]), "true", "{service} container {id} runs");
    }
    let listed = m.docker_ok([
        "ps",
        "-q",
        "--filter",
        &project.label(),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ]);
    assert_eq!(listed.lines().count(), n, "docker ps by label: {listed}");
}

/// After `down`: no container of the project, neither through the manager
/// nor on any engine.
fn assert_no_containers_left(m: &Manager, project: &Project) {
    let through_manager = m.docker_ok(["ps", "-aq", "--filter", &project.label()]);
    assert_eq!(through_manager, "", "containers left after down");
    let tb = Testbed::shared();
    for node in NODES {
        let left = tb.docker_ok(node, ["ps", "-aq", "--filter", &project.label()]);
        assert_eq!(left, "", "containers left on {node} after down");
    }
}

/// `docker-compose down` removes the project's containers and its default
/// network, which then is on no engine any more.
fn assert_down_removes_network(m: &Manager, project: &Project) {
    let network = project.default_network();
    let (_, down) = project.ok(&["down", "-t", "1"]);
    assert!(down.contains(&format!("Removing network {network}")), "{down}");
    assert_no_containers_left(m, project);
    for node in NODES {
        let nets = engine_networks(node);
        assert!(!nets.contains(&network), "{network} left on {node} after down: {nets:?}");
    }
}

/// Names of the networks engine `node` itself has.
fn engine_networks(node: &str) -> Vec<String> {
    Testbed::shared().docker_ok(node, ["network", "ls", "--format", "{{.Name}}"]).lines().map(str::to_string).collect()
}

/// Two services in the legacy (version 1) format, each logging a greeting.
const LEGACY_V1_FILE: &str = "web:\n  image: busybox\n  command: sh -c 'echo hello-from-web; exec sleep 3600'\n\
     db:\n  image: busybox\n  command: sh -c 'echo hello-from-db; exec sleep 3600'\n";

#[test]
fn legacy_v1_file_up_ps_logs_scale_down() {
    let m = shared_manager();
    let p = Project::new(&m, "legacy", LEGACY_V1_FILE);
    let (web1, db1) = (format!("{}_web_1", p.name), format!("{}_db_1", p.name));
    p.ok(&["up", "-d"]);
    assert_ps_shows_up(&p, &[&web1, &db1]);
    assert_logs_contain(&p, &[], &["hello-from-web", "hello-from-db"]);
    assert_logs_contain(&p, &["db"], &["hello-from-db"]);
    let node = m.docker_ok(["inspect", "-f", "{{.Node.Name}}", &web1]);
    assert!(NODES.contains(&node.as_str()), "web runs on {node:?}");

    // A second `up` finds the containers it made and leaves them alone.
    let (_, again) = p.ok(&["up", "-d"]);
    assert!(again.contains("is up-to-date"), "{again}");
    assert_running(&m, &p, "web", 1);

    p.ok(&["up", "-d", "--scale", "web=3", "-t", "1"]);
    assert_running(&m, &p, "web", 3);
    assert_ps_shows_up(&p, &[&web1, &format!("{}_web_3", p.name), &db1]);
    assert_logs_contain(&p, &["web"], &["web_3", "hello-from-web"]);
    // The deprecated `scale` command still works too.
    p.ok(&["scale", "-t", "1", "web=1"]);
    assert_running(&m, &p, "web", 1);
    assert_running(&m, &p, "db", 1);

    let (_, down) = p.ok(&["down", "-t", "1"]);
    assert!(down.contains(&format!("Removing {web1}")), "{down}");
    assert_no_containers_left(&m, &p);
    assert!(p.ids("").is_empty());
}

/// Two services in a `version: "2"` file, which gets a default network.
const VERSION2_FILE: &str = r#"version: "2"
services:
  web:
    image: busybox
    command: sh -c 'echo hello-from-web; exec httpd -f -p 80'
  db:
    image: busybox
    command: sh -c 'echo hello-from-db; exec sleep 3600'
"#;

#[test]
fn version2_file_creates_its_default_network_on_every_engine() {
    let m = shared_manager();
    let p = Project::new(&m, "vtwo", VERSION2_FILE);
    let network = p.default_network();
    let (_, up) = p.ok(&["up", "-d"]);
    assert!(up.contains(&format!("Creating network \"{network}\"")), "{up}");
    for node in NODES {
        let nets = engine_networks(node);
        assert!(nets.contains(&network), "{network} missing on {node}: {nets:?}");
    }
    let listed = m.docker_ok(["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert_eq!(
        listed.lines().filter(|l| *l == format!("{network} bridge")).count(),
        1,
        "listed once through the manager: {listed}"
    );
    let (web1, db1) = (format!("{}_web_1", p.name), format!("{}_db_1", p.name));
    assert_ps_shows_up(&p, &[&web1, &db1]);
    for c in [&web1, &db1] {
        let nets = m.docker_ok(["inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", c]);
        assert_eq!(nets, network, "{c} is on the project network");
    }
    assert_logs_contain(&p, &[], &["hello-from-web", "hello-from-db"]);

    // Re-running `up` inspects the network and keeps everything.
    let (_, again) = p.ok(&["up", "-d"]);
    assert!(!again.contains("Recreating"), "{again}");

    p.ok(&["scale", "-t", "1", "web=3"]);
    assert_running(&m, &p, "web", 3);
    for id in p.ids("web") {
        let nets = m.docker_ok(["inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", &id]);
        assert_eq!(nets, network, "scaled container {id} joined its node's copy");
    }
    p.ok(&["up", "-d", "--scale", "web=2", "-t", "1"]);
    assert_running(&m, &p, "web", 2);

    assert_down_removes_network(&m, &p);
    let listed = m.docker_ok(["network", "ls", "--format", "{{.Name}}"]);
    assert!(!listed.contains(&network), "{listed}");
}

/// Three services pinned to one node each: the list form of the classic
/// compose-on-swarm guides, and the mapping form (`KEY: "=value"` makes
/// `KEY==value`).
const PINNED_FILE: &str = r#"one:
  image: busybox
  command: sleep 3600
  environment:
    - "constraint:node==node-01"
two:
  image: busybox
  command: sleep 3600
  environment:
    - "constraint:node==node-02"
three:
  image: busybox
  command: sleep 3600
  environment:
    "constraint:node": "=node-03"
"#;

#[test]
fn constraint_environment_pins_each_service_to_its_node() {
    let m = shared_manager();
    let p = Project::new(&m, "pin", PINNED_FILE);
    p.ok(&["up", "-d"]);
    for (service, node) in [("one", "node-01"), ("two", "node-02"), ("three", "node-03")] {
        let name = format!("{}_{service}_1", p.name);
        assert_eq!(m.docker_ok(["inspect", "-f", "{{.Node.Name}}", &name]), node, "{name}");
    }
    // Scaled copies stay on their node.
    p.ok(&["up", "-d", "--scale", "two=3"]);
    let ids = p.ids("two");
    assert_eq!(ids.len(), 3, "{ids:?}");
    for id in &ids {
        assert_eq!(m.docker_ok(["inspect", "-f", "{{.Node.Name}}", id]), "node-02");
    }
    assert_eq!(
        Testbed::shared().docker_ok("node-02", ["ps", "-q", "--filter", &p.label()]).lines().count(),
        3,
        "node-02 itself runs two_1..3 and nothing else"
    );
    p.ok(&["down", "-t", "1"]);
    assert_no_containers_left(&m, &p);
}

/// One service in a `version: "2"` file.
const RESTART_FILE: &str =
    "version: \"2\"\nservices:\n  app:\n    image: busybox\n    command: sh -c 'echo hello-from-app; \
     exec sleep 3600'\n";

#[test]
fn version2_project_outlives_a_manager_restart() {
    let tb = Testbed::shared();
    let first = shared_manager();
    let mut p = Project::new(&first, "restart", RESTART_FILE);
    p.ok(&["up", "-d"]);
    let network = p.default_network();
    drop(first);

    // A new manager knows nothing of what the old one created: it must still
    // treat the network every engine has as the project's one network.
    let second = Manager::start(&tb.addrs().join(","), &[]);
    second.wait_healthy(3);
    p.use_manager(&second);
    let (_, again) = p.ok(&["up", "-d"]);
    assert!(again.contains("is up-to-date"), "{again}");
    assert_ps_shows_up(&p, &[&format!("{}_app_1", p.name)]);
    assert_logs_contain(&p, &[], &["hello-from-app"]);
    let listed = second.docker_ok(["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(listed.lines().filter(|l| *l == network).count(), 1, "listed once by the new manager: {listed}");
    p.ok(&["up", "-d", "--scale", "app=2", "-t", "1"]);
    assert_running(&second, &p, "app", 2);

    assert_down_removes_network(&second, &p);
}
