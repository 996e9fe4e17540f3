//! `swarm` processes: a `swarm manage` on a free loopback port (or inside a
//! testbed namespace) and any other `swarm` command (`join`, `list`), killed
//! when dropped and by a watchdog if the owner dies without unwinding.
//!
//! The binary is the `swarm` cargo built next to the running test or bench
//! (see [`swarm_binary`]); [`ManagerBuilder::binary`] picks another.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::process::{free_port, poll, read_log, tail, temp_dir, OwnedChild, Streaming};
use crate::{http, DOCKER};

/// Refresh settings that make tests quick: engines are refreshed every
/// 1-2 s, given up after 2 failures, and joins heartbeat every second.
const TEST_REFRESH: [&str; 8] = [
    "--engine-refresh-min-interval",
    "1s",
    "--engine-refresh-max-interval",
    "2s",
    "--engine-failure-retry",
    "2",
    "--heartbeat",
    "1s",
];

/// How long a manager may take to answer `/_ping` after a (re)start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `swarm` binary cargo built for the running test or bench: the test
/// executable is `target/<profile>/deps/<name>-<hash>`, the binary
/// `target/<profile>/swarm` (what `CARGO_BIN_EXE_swarm` names in the root
/// package). Only the root package's tests and benches get it built.
pub fn swarm_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let binary = exe.parent().and_then(Path::parent).map(|profile| profile.join("swarm"));
    match binary {
        Some(binary) if binary.is_file() => binary,
        _ => panic!("no swarm binary next to {}: only the root package's tests and benches build it", exe.display()),
    }
}

/// How to start a [`Manager`]; see [`Manager::builder`].
pub struct ManagerBuilder {
    /// The `swarm` binary to run.
    binary: PathBuf,
    /// The discovery URL, the last argument.
    discovery: String,
    /// `ip:port` to listen on.
    addr: String,
    /// The testbed network namespace to run in, if not the root one.
    netns: Option<String>,
    /// Whether the test refresh settings ([`TEST_REFRESH`]) are passed.
    test_refresh: bool,
    /// Whether to pass `--replication --advertise <addr>`.
    replicated: bool,
    /// With `--tlsverify`: the directory of `ca.pem`, `cert.pem`, `key.pem`.
    tls: Option<PathBuf>,
    /// Further arguments, before the discovery URL.
    extra: Vec<String>,
    /// Worker threads of the manager's runtime; `None`: one per core.
    workers: Option<usize>,
}

impl ManagerBuilder {
    /// Runs `binary` instead of [`swarm_binary`].
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> ManagerBuilder {
        self.binary = binary.into();
        self
    }

    /// Leaves the refresh settings at the manager's defaults (what the
    /// benches measure) instead of the quick test settings.
    pub fn default_refresh(mut self) -> ManagerBuilder {
        self.test_refresh = false;
        self
    }

    /// Adds arguments before the discovery URL.
    pub fn args(mut self, extra: &[&str]) -> ManagerBuilder {
        self.extra.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    /// Runs the manager's runtime with `n` worker threads (tokio's
    /// `TOKIO_WORKER_THREADS`) instead of one per core.
    pub fn workers(mut self, n: usize) -> ManagerBuilder {
        self.workers = Some(n);
        self
    }

    /// A replicated manager (`--replication`, advertising its own address).
    pub fn replicated(mut self) -> ManagerBuilder {
        self.replicated = true;
        self
    }

    /// Serves and calls with `--tlsverify` and the files of `dir` (`ca.pem`,
    /// `cert.pem`, `key.pem`, as in `DOCKER_CERT_PATH`); the manager's CLI
    /// and requests then use TLS with the same files.
    pub fn tls(mut self, dir: &Path) -> ManagerBuilder {
        self.tls = Some(dir.to_path_buf());
        self
    }

    /// Runs inside the network namespace `netns` (a testbed host), listening
    /// on `ip`; `cut` on that host cuts it off.
    pub fn in_netns(mut self, netns: &str, ip: &str) -> ManagerBuilder {
        self.netns = Some(netns.to_string());
        self.addr = format!("{ip}:{}", free_port());
        self
    }

    /// Starts the manager and waits until it answers `/_ping`.
    pub fn start(self) -> Manager {
        let mut args: Vec<String> = vec!["manage".into(), "-H".into(), format!("tcp://{}", self.addr)];
        if self.test_refresh {
            args.extend(TEST_REFRESH.iter().map(|s| s.to_string()));
        }
        if self.replicated {
            args.extend(["--replication".into(), "--advertise".into(), self.addr.clone()]);
        }
        let link = match &self.tls {
            Some(tls) => {
                args.push("--tlsverify".into());
                for (flag, file) in [("--tlscacert", "ca.pem"), ("--tlscert", "cert.pem"), ("--tlskey", "key.pem")] {
                    args.extend([flag.into(), tls.join(file).display().to_string()]);
                }
                http::Link::tls_from_dir(tls).unwrap_or_else(|e| panic!("TLS files for the manager: {e}"))
            }
            None => http::Link::Plain,
        };
        args.extend(self.extra);
        args.push(self.discovery);
        let dir = temp_dir("swarm-mgr-");
        let child = spawn_manager(&self.binary, &dir, &args, self.netns.as_deref(), self.workers);
        let mut manager = Manager {
            child,
            addr: self.addr,
            dir,
            binary: self.binary,
            args,
            netns: self.netns,
            tls: self.tls,
            link,
            workers: self.workers,
        };
        manager.wait_started();
        manager
    }
}

/// A running `swarm manage`.
pub struct Manager {
    /// The manager process; replaced by [`Manager::restart`].
    child: OwnedChild,
    /// `ip:PORT` the manager listens on.
    pub addr: String,
    /// Temp dir holding the log (`manager.log`, continued across restarts)
    /// and the CLI's config.
    pub dir: tempfile::TempDir,
    /// The binary it runs, for `restart`.
    binary: PathBuf,
    /// The arguments it was started with, for `restart`.
    args: Vec<String>,
    /// The testbed network namespace it runs in, if not the root one.
    netns: Option<String>,
    /// With `--tlsverify`: the directory of its certificate files, which
    /// its CLI uses too (`DOCKER_CERT_PATH`).
    pub tls: Option<PathBuf>,
    /// How its requests reach it: plain, or TLS with the files of `tls`.
    pub link: http::Link,
    /// Worker threads of its runtime, for `restart`; `None`: one per core.
    workers: Option<usize>,
}

impl Manager {
    /// A manager of `discovery` on a free loopback port with the quick test
    /// refresh settings; change any of that on the builder.
    pub fn builder(discovery: &str) -> ManagerBuilder {
        ManagerBuilder {
            binary: swarm_binary(),
            discovery: discovery.to_string(),
            addr: format!("127.0.0.1:{}", free_port()),
            netns: None,
            test_refresh: true,
            replicated: false,
            tls: None,
            extra: Vec::new(),
            workers: None,
        }
    }

    /// Starts `swarm manage` with the test refresh settings and `extra`
    /// arguments, then waits until it answers `/_ping`.
    pub fn start(discovery: &str, extra: &[&str]) -> Manager {
        Manager::builder(discovery).args(extra).start()
    }

    /// A replicated manager (`--replication`, advertising its own address).
    pub fn start_replicated(discovery: &str, extra: &[&str]) -> Manager {
        Manager::builder(discovery).replicated().args(extra).start()
    }

    /// A replicated manager inside the network namespace `netns` (a testbed
    /// host), listening and advertising on `ip`; `cut` on that host cuts it off.
    pub fn start_replicated_in(netns: &str, ip: &str, discovery: &str) -> Manager {
        Manager::builder(discovery).in_netns(netns, ip).replicated().start()
    }

    fn wait_started(&mut self) {
        self.wait_until(START_TIMEOUT, "manager answers /_ping", |m| m.get("/_ping").is_ok_and(|(s, _)| s == 200));
    }

    /// Polls `check` until it holds or `within` passes; panics with the log.
    pub fn wait_until(&self, within: Duration, what: &str, check: impl Fn(&Manager) -> bool) {
        if !poll(within, Duration::from_millis(100), || check(self)) {
            panic!("timed out after {within:?} waiting until {what}\nmanager log:\n{}", self.log());
        }
    }

    /// As [`Manager::wait_until`], and on timeout the panic also shows what
    /// `show` reads then (the state the check was waiting on).
    pub fn wait_until_showing(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&Manager) -> bool,
        show: impl Fn(&Manager) -> String,
    ) {
        if !poll(within, Duration::from_millis(100), || check(self)) {
            panic!(
                "timed out after {within:?} waiting until {what}\nlast seen:\n{}\nmanager log:\n{}",
                show(self),
                self.log()
            );
        }
    }

    /// Waits (up to 30 s) until `/info` shows `n` healthy nodes.
    pub fn wait_healthy(&self, n: usize) {
        self.wait_healthy_within(n, Duration::from_secs(30));
    }

    /// Waits until `/info` shows `n` healthy nodes.
    pub fn wait_healthy_within(&self, n: usize, within: Duration) {
        self.wait_until(within, &format!("{n} nodes are healthy"), |m| m.healthy_count() == n);
    }

    /// Number of nodes `/info` shows as Healthy.
    pub fn healthy_count(&self) -> usize {
        self.get("/info").map(|(_, body)| body.matches("[\"  └ Status\",\"Healthy\"]").count()).unwrap_or(0)
    }

    /// The manager's `/containers/json?all=1`, if it answers.
    pub fn containers(&self) -> Option<Vec<Value>> {
        match self.get("/containers/json?all=1") {
            Ok((200, body)) => match serde_json::from_str(&body) {
                Ok(Value::Array(list)) => Some(list),
                _ => None,
            },
            _ => None,
        }
    }

    /// The manager's log so far (all runs).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("manager.log"))
    }

    /// The Docker CLI pointed at this manager.
    pub fn docker<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.docker_cmd(args).output().expect("cannot run the docker CLI")
    }

    /// A Docker CLI command pointed at this manager whose output lines are
    /// read as they come (`logs -f`, `events`); killed on drop.
    pub fn docker_stream(&self, args: &[&str]) -> Streaming {
        Streaming::spawn(self.docker_cmd(args))
    }

    /// A prepared Docker CLI command pointed at this manager.
    pub fn docker_cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(DOCKER);
        cmd.env_remove("DOCKER_CONTEXT")
            .env("DOCKER_HOST", format!("tcp://{}", self.addr))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .args(args);
        match &self.tls {
            Some(tls) => cmd.env("DOCKER_TLS_VERIFY", "1").env("DOCKER_CERT_PATH", tls),
            None => cmd.env_remove("DOCKER_TLS_VERIFY").env_remove("DOCKER_CERT_PATH"),
        };
        cmd
    }

    /// Runs the CLI; returns its arguments as one string (for messages) and its output.
    fn docker_shown<I, S>(&self, args: I) -> (String, Output)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        (args.join(" "), self.docker(&args))
    }

    /// Runs the CLI and returns trimmed stdout; panics with stderr and the log on failure.
    pub fn docker_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (shown, out) = self.docker_shown(args);
        assert!(
            out.status.success(),
            "docker {shown} failed: {}\n{}\nmanager log tail:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs the CLI with `input` on its stdin (closed afterwards); returns
    /// trimmed stdout, panicking with stderr on failure.
    pub fn docker_piped(&self, args: &[&str], input: &str) -> String {
        let mut child = self
            .docker_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run the docker CLI");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        let out = child.wait_with_output().expect("docker output");
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `docker attach container`, writing `line` to its stdin half a second
    /// in and keeping stdin open until the container has had time to
    /// answer (closing it early detaches, also on a plain engine); returns
    /// trimmed stdout once the container ends.
    pub fn docker_attach_line(&self, container: &str, line: &str) -> String {
        let mut attach = self
            .docker_cmd(["attach", container])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot run docker attach");
        {
            let mut stdin = attach.stdin.take().expect("stdin");
            std::thread::sleep(Duration::from_millis(500));
            stdin.write_all(format!("{line}\n").as_bytes()).expect("write to docker attach");
            std::thread::sleep(Duration::from_millis(1500));
        }
        let out = attach.wait_with_output().expect("docker attach output");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs the CLI expecting failure; returns stderr.
    pub fn docker_err<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (shown, out) = self.docker_shown(args);
        assert!(!out.status.success(), "docker {shown} should have failed");
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }

    /// A raw HTTP/1.1 request on a fresh connection; returns status and body.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
        let body = body.unwrap_or("").as_bytes();
        http::request_over(&self.link, &self.addr, method, path, body, Duration::from_secs(30))
    }

    /// `GET path` on a fresh connection.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.request("GET", path, None)
    }

    /// The manager's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many established TCP connections the manager holds to `addr`
    /// (`a.b.c.d:port`), from its sockets and its network namespace's
    /// `/proc/PID/net/tcp`.
    pub fn connections_to(&self, addr: &str) -> usize {
        let pid = self.pid();
        let Some(remote) = proc_tcp_address(addr) else {
            panic!("not an IPv4 address with a port: {addr}");
        };
        let sockets: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| {
                dir.flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .filter_map(|target| {
                        let target = target.to_string_lossy().into_owned();
                        Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
        table
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|fields| {
                fields.len() > 9 && fields[2] == remote && fields[3] == "01" && sockets.contains(fields[9])
            })
            .count()
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to the manager.
    pub fn signal(&self, signal: &str) {
        self.child.signal(signal);
    }

    /// Waits for the manager process to end.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.child.wait()
    }

    /// Starts the manager again on the same address (killing it first if it
    /// still runs); the log continues.
    pub fn restart(&mut self) {
        self.child.kill();
        self.child = spawn_manager(&self.binary, &self.dir, &self.args, self.netns.as_deref(), self.workers);
        self.wait_started();
    }

    /// The `Role` and `Primary` lines of `/info` (`("primary", "")`, `("replica", "127.0.0.1:4000")`).
    pub fn role(&self) -> Option<(String, String)> {
        let (status, body) = self.get("/info").ok()?;
        if status != 200 {
            return None;
        }
        parse_role(&body)
    }

    /// [`Manager::role`] asked from inside the manager's own network
    /// namespace, so it answers even while its host is cut off.
    pub fn role_inside(&self) -> Option<(String, String)> {
        let Some(netns) = &self.netns else { return self.role() };
        let mut curl = Command::new("nsenter");
        curl.arg(format!("--net=/var/run/netns/{netns}")).args(["curl", "-s", "-m", "1"]);
        let url = match &self.tls {
            Some(tls) => {
                for (flag, file) in [("--cacert", "ca.pem"), ("--cert", "cert.pem"), ("--key", "key.pem")] {
                    curl.arg(flag).arg(tls.join(file));
                }
                format!("https://{}/info", self.addr)
            }
            None => format!("http://{}/info", self.addr),
        };
        let out = curl.arg(url).output().ok()?;
        parse_role(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("manager log tail:\n{}", tail(&self.log(), 60));
        }
    }
}

fn parse_role(body: &str) -> Option<(String, String)> {
    let role = body.split("[\"Role\",\"").nth(1)?.split('"').next()?.to_string();
    let primary =
        body.split("[\"Primary\",\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string();
    Some((role, primary))
}

fn spawn_manager(
    binary: &Path,
    dir: &tempfile::TempDir,
    args: &[String],
    netns: Option<&str>,
    workers: Option<usize>,
) -> OwnedChild {
    // nsenter execs the manager, so the child's PID is the manager's.
    let mut command = match netns {
        Some(netns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{netns}")).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    command.args(args);
    if let Some(n) = workers {
        command.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    OwnedChild::spawn(&mut command, &dir.path().join("manager.log"), "swarm")
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}

/// Any other `swarm` process (`join`, `list`), killed when dropped.
pub struct SwarmProcess {
    /// The process.
    child: OwnedChild,
    /// Holds the process's log (`swarm.log`).
    pub dir: tempfile::TempDir,
}

impl SwarmProcess {
    /// Starts [`swarm_binary`] with `args`.
    pub fn start(args: &[&str]) -> SwarmProcess {
        let dir = temp_dir("swarm-proc-");
        let binary = swarm_binary();
        let child = OwnedChild::spawn(Command::new(&binary).args(args), &dir.path().join("swarm.log"), "swarm")
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        SwarmProcess { child, dir }
    }

    /// `swarm join` of the engine at `addr` into `discovery`, heartbeating
    /// every second with registrations that live `ttl`.
    pub fn join(addr: &str, ttl: &str, discovery: &str) -> SwarmProcess {
        SwarmProcess::start(&["join", "--advertise", addr, "--heartbeat", "1s", "--ttl", ttl, discovery])
    }

    /// [`SwarmProcess::join`] of every address in `addrs`.
    pub fn join_all(addrs: &[String], ttl: &str, discovery: &str) -> Vec<SwarmProcess> {
        addrs.iter().map(|a| SwarmProcess::join(a, ttl, discovery)).collect()
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("swarm.log"))
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for the process to end.
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        self.child.signal(signal);
        self.child.wait()
    }

    /// Polls until the log contains `text`.
    pub fn wait_for_log(&self, text: &str, within: Duration) {
        if !poll(within, Duration::from_millis(50), || self.log().contains(text)) {
            panic!("{text:?} not in the log after {within:?}:\n{}", self.log());
        }
    }
}

/// Runs [`swarm_binary`] to completion; returns (success, stdout, stderr).
/// Runs `swarm args` to its end without the environment variables that
/// stand in for flags; returns its exit code and stderr.
pub fn swarm_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(swarm_binary())
        .args(args)
        .env_remove("SWARM_DISCOVERY")
        .env_remove("SWARM_ADVERTISE")
        .env_remove("SWARM_HOST")
        .env_remove("DEBUG")
        .output()
        .expect("run swarm");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn swarm_output(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(swarm_binary()).args(args).output().expect("run swarm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `a.b.c.d:port` as `/proc/net/tcp` writes it: the address as a
/// little-endian 32-bit hex number, the port in hex.
fn proc_tcp_address(addr: &str) -> Option<String> {
    let (ip, port) = addr.rsplit_once(':')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    Some(format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets())))
}
