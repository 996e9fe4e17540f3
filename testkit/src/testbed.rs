//! Test fixture: a throw-away cluster of real Docker engines on this machine.
//!
//! Thin wrapper around `scripts/testbed.sh`: every engine is a separate
//! "host" (own network namespace and IP, own hostname and engine ID) hanging
//! off a bridge in the root namespace, so tests reach engine `node-0i` at
//! `10.250.K.(10+i):2375` and the optional registry at `10.250.K.1:5000`.
//!
//! * [`Testbed::shared`] — one 3-engine testbed (+ registry) per test binary,
//!   created on first use. Never dropped: the script's watchdog tears it down
//!   when the test process exits (even on SIGKILL). Tests using it run in
//!   parallel, so they must not stop/cut its engines and should use unique
//!   container names / ports and clean up after themselves.
//! * [`Testbed::start`] — a private testbed, torn down on `Drop`. Use it for
//!   anything destructive (stop/start engines, partitions).
//! * [`Testbed::shared_tls`] / [`Testbed::start_tls`] — the same with TLS
//!   engines: each serves its API only over TLS on `10.250.K.(10+i):2376`
//!   and requires a client certificate signed by the testbed's CA
//!   (`dockerd --tlsverify`); its unix socket stays plain. The CA and the
//!   certificates are in [`Testbed::tls`] ([`TestbedTls`]).
//!
//! Needs root and the system packages from `scripts/install-deps.sh`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::certs::{Ca, CertDir};
use crate::{http, process, DOCKER, INSTALL_HINT};

/// One engine ("host") of a testbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// Engine name = its hostname: `node-01`, `node-02`, ...
    pub name: String,
    /// TCP API address, `ip:2375` (`ip:2376` on a TLS testbed).
    pub addr: String,
    /// The engine's own IP address (published ports are reachable here).
    pub ip: String,
    /// The engine's unix socket (reachable without going through the network).
    pub socket: PathBuf,
}

impl Engine {
    /// `tcp://ip:2375` (or `:2376`), e.g. for the manager's engine list.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

/// The certificates of a TLS testbed (`testbed.sh up --tls`), all signed by
/// its CA, valid for 30 days, for both `serverAuth` and `clientAuth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestbedTls {
    /// `DIR/tls`, where all of them are.
    pub dir: PathBuf,
    /// The testbed CA's certificate, `DIR/tls/ca.pem`.
    pub ca_cert: PathBuf,
    /// The testbed CA's key, `DIR/tls/ca-key.pem` (see [`TestbedTls::ca`]).
    pub ca_key: PathBuf,
    /// `DIR/tls/client` (`ca.pem`, `cert.pem`, `key.pem`; SANs
    /// `IP:127.0.0.1`, `DNS:localhost`): `DOCKER_CERT_PATH` for the Docker
    /// CLI, and the certificate of managers serving on 127.0.0.1 (which
    /// present it to the engines too).
    pub client: CertDir,
}

impl TestbedTls {
    fn at(dir: PathBuf) -> TestbedTls {
        TestbedTls {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            client: CertDir::at(dir.join("client")),
            dir,
        }
    }

    /// The certificate engine `name` serves with (`DIR/tls/<name>`; SANs
    /// `IP:<engine ip>`, `DNS:<name>`).
    pub fn engine(&self, name: &str) -> CertDir {
        CertDir::at(self.dir.join(name))
    }

    /// The testbed CA, to issue more certificates it signs (they go to a
    /// temp dir of the returned value, never into `DIR/tls`).
    pub fn ca(&self) -> Ca {
        Ca::load(&self.ca_cert, &self.ca_key)
    }

    /// `DOCKER_TLS_VERIFY=1` and `DOCKER_CERT_PATH=<client dir>`: the Docker
    /// CLI's environment to talk to the engines, or to a manager using the
    /// client certificate.
    pub fn cli_env(&self) -> [(&'static str, OsString); 2] {
        [("DOCKER_TLS_VERIFY", "1".into()), ("DOCKER_CERT_PATH", self.client.dir.clone().into())]
    }
}

/// A running testbed (see the module docs).
#[derive(Debug)]
pub struct Testbed {
    /// The engines, in name order (`node-01` first).
    pub engines: Vec<Engine>,
    /// `ip:5000` of the registry, if the testbed was started with one.
    pub registry: Option<String>,
    /// Address of the root-namespace bridge all engines hang off.
    pub bridge_ip: String,
    /// The testbed directory (logs, pidfiles, engine state).
    pub dir: PathBuf,
    /// The testbed index K (subnet 10.250.K.0/24).
    pub index: u32,
    /// The CA and certificates, if the engines speak TLS.
    pub tls: Option<TestbedTls>,
}

/// Path of `scripts/testbed.sh` in the workspace.
pub fn script_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/testbed.sh"))
}

/// Runs `testbed.sh <args>`, returning its output (never panics).
fn run_script<I, S>(args: I) -> std::io::Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new("bash").arg(script_path()).args(args).stdin(Stdio::null()).output()
}

/// Last `n` lines of a script's output.
fn tail(text: &[u8], n: usize) -> String {
    process::tail(&String::from_utf8_lossy(text), n)
}

/// A fresh, empty, short directory under /tmp (unix socket paths below it
/// must stay short).
fn fresh_dir() -> std::io::Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/swtb-{}-{}", std::process::id(), n));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Parses the machine-readable stdout of `testbed.sh up`.
fn parse_up_output(stdout: &str) -> Result<Testbed, String> {
    let mut engines = Vec::new();
    let (mut registry, mut bridge_ip, mut dir, mut index, mut tls) = (None, None, None, None, None);
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["engine", name, addr, socket] => {
                let ip = addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(addr);
                engines.push(Engine {
                    name: name.to_string(),
                    addr: addr.to_string(),
                    ip: ip.to_string(),
                    socket: PathBuf::from(socket),
                });
            }
            ["registry", addr] => registry = Some(addr.to_string()),
            ["bridge", ip] => bridge_ip = Some(ip.to_string()),
            ["dir", d] => dir = Some(PathBuf::from(d)),
            ["index", k] => index = k.parse().ok(),
            ["tls", d] => tls = Some(TestbedTls::at(PathBuf::from(d))),
            _ => {} // unknown lines: newer script, ignore
        }
    }
    match (bridge_ip, dir, index) {
        (Some(bridge_ip), Some(dir), Some(index)) if !engines.is_empty() => {
            Ok(Testbed { engines, registry, bridge_ip, dir, index, tls })
        }
        _ => Err(format!("unexpected output of testbed.sh up:\n{stdout}")),
    }
}

impl Testbed {
    /// Starts a private testbed with `engines` engines named node-01...,
    /// `labels` as (engine name, "key=value") pairs, and optionally a registry.
    /// Panics (with the script's stderr) if that fails.
    pub fn start(engines: usize, labels: &[(&str, &str)], registry: bool) -> Testbed {
        Self::try_start(engines, labels, registry).unwrap_or_else(|msg| panic!("{msg}"))
    }

    /// Like [`Testbed::start`] but returns the failure message.
    pub fn try_start(engines: usize, labels: &[(&str, &str)], registry: bool) -> Result<Testbed, String> {
        Self::launch(engines, labels, registry, false)
    }

    /// Starts a private testbed of `engines` TLS engines (see the module
    /// docs) and optionally a (plain HTTP) registry. Panics if that fails.
    pub fn start_tls(engines: usize, registry: bool) -> Testbed {
        Self::launch(engines, &[], registry, true).unwrap_or_else(|msg| panic!("{msg}"))
    }

    /// Like [`Testbed::start_tls`], and the engines also accept clients
    /// certified by the CAs in each of the `trusted` PEM files.
    pub fn start_tls_trusting(engines: usize, trusted: &[&Path]) -> Testbed {
        Self::launch_with(engines, &[], false, Some(trusted)).unwrap_or_else(|msg| panic!("{msg}"))
    }

    fn launch(engines: usize, labels: &[(&str, &str)], registry: bool, tls: bool) -> Result<Testbed, String> {
        Self::launch_with(engines, labels, registry, tls.then_some(&[]))
    }

    /// With `tls` set, the engines speak TLS and also trust the CAs of its files.
    fn launch_with(
        engines: usize,
        labels: &[(&str, &str)],
        registry: bool,
        tls: Option<&[&Path]>,
    ) -> Result<Testbed, String> {
        let dir = fresh_dir().map_err(|e| format!("testbed: cannot create a temp dir: {e}"))?;
        let mut args: Vec<String> = vec![
            "up".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--engines".into(),
            engines.to_string(),
            "--owner-pid".into(),
            std::process::id().to_string(),
        ];
        for (engine, label) in labels {
            args.push("--label".into());
            args.push(format!("{engine}:{label}"));
        }
        if registry {
            args.push("--registry".into());
        }
        if let Some(trusted) = tls {
            args.push("--tls".into());
            for ca in trusted {
                args.push("--tls-trust".into());
                args.push(ca.display().to_string());
            }
        }
        let started = Instant::now();
        let out = run_script(&args)
            .map_err(|e| format!("testbed: cannot run {}: {e}\n{INSTALL_HINT}", script_path().display()))?;
        if !out.status.success() {
            // The script tears down after itself; remove the dir if it is left.
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "testbed: `testbed.sh {}` failed ({}).\n{INSTALL_HINT}\n--- stderr (tail) ---\n{}",
                args.join(" "),
                out.status,
                tail(&out.stderr, 40)
            ));
        }
        let tb = parse_up_output(&String::from_utf8_lossy(&out.stdout))?;
        eprintln!(
            "testbed {} up in {:.1}s: {}",
            tb.index,
            started.elapsed().as_secs_f64(),
            tb.engines.iter().map(|e| format!("{}={}", e.name, e.addr)).collect::<Vec<_>>().join(" ")
        );
        Ok(tb)
    }

    /// The testbed shared by all tests of this test binary: 3 engines
    /// (node-01 storage=ssd, node-02 storage=disk, node-03 storage=ssd) and a
    /// registry. Created once; cleaned up by the watchdog after the process
    /// exits. Do not stop, restart or cut its engines.
    pub fn shared() -> &'static Testbed {
        static SHARED: OnceLock<Result<Testbed, String>> = OnceLock::new();
        let tb = SHARED.get_or_init(|| {
            Testbed::try_start(
                3,
                &[("node-01", "storage=ssd"), ("node-02", "storage=disk"), ("node-03", "storage=ssd")],
                true,
            )
        });
        match tb {
            Ok(tb) => tb,
            Err(msg) => panic!("shared testbed unavailable: {msg}"),
        }
    }

    /// Like [`Testbed::shared`] (3 engines with the same labels, a
    /// registry, shared by the tests of this binary, never stopped or cut)
    /// but with TLS engines; independent of [`Testbed::shared`].
    pub fn shared_tls() -> &'static Testbed {
        static SHARED: OnceLock<Result<Testbed, String>> = OnceLock::new();
        let tb = SHARED.get_or_init(|| {
            Testbed::launch(
                3,
                &[("node-01", "storage=ssd"), ("node-02", "storage=disk"), ("node-03", "storage=ssd")],
                true,
                true,
            )
        });
        match tb {
            Ok(tb) => tb,
            Err(msg) => panic!("shared TLS testbed unavailable: {msg}"),
        }
    }

    /// The certificates of a TLS testbed (panics on a plain one).
    pub fn tls(&self) -> &TestbedTls {
        self.tls.as_ref().unwrap_or_else(|| panic!("testbed {} was not started with TLS", self.index))
    }

    /// The engine called `name` (panics if there is none).
    pub fn engine(&self, name: &str) -> &Engine {
        self.engines
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("testbed {} has no engine {name}", self.index))
    }

    /// TCP addresses (`ip:2375`, or `ip:2376` with TLS) of all engines.
    pub fn addrs(&self) -> Vec<String> {
        self.engines.iter().map(|e| e.addr.clone()).collect()
    }

    fn script(&self, cmd: &str, name: &str) {
        if let Err(e) = self.try_script(cmd, name) {
            panic!("{e}");
        }
    }

    fn try_script(&self, cmd: &str, name: &str) -> Result<(), String> {
        self.engine(name); // validate the name first
        let dir = self.dir.display().to_string();
        let out = run_script([cmd, "--dir", &dir, "--name", name])
            .map_err(|e| format!("cannot run testbed.sh {cmd}: {e}"))?;
        if !out.status.success() {
            return Err(format!("testbed.sh {cmd} --name {name} failed ({}):\n{}", out.status, tail(&out.stderr, 40)));
        }
        Ok(())
    }

    /// Crashes engine `name`: SIGKILL for its dockerd and all its processes
    /// (containerd, shims, containers). Its API stops answering.
    pub fn stop_engine(&self, name: &str) {
        self.script("stop-engine", name)
    }

    /// Starts engine `name` again with the same ID, name, address and data;
    /// returns once it answers `/_ping`.
    pub fn start_engine(&self, name: &str) {
        self.script("start-engine", name)
    }

    /// [`Testbed::start_engine`], failing with the script's output instead
    /// of panicking when the engine does not answer within its minute (a
    /// dockerd restoring hundreds of containers after a crash may need
    /// longer; asking again waits for the one already starting).
    pub fn try_start_engine(&self, name: &str) -> Result<(), String> {
        self.try_script("start-engine", name)
    }

    /// Network partition: takes engine `name`'s link to the bridge down.
    pub fn cut(&self, name: &str) {
        self.script("cut", name)
    }

    /// Ends a [`Testbed::cut`].
    pub fn heal(&self, name: &str) {
        self.script("heal", name)
    }

    /// Hangs engine `name`: its dockerd gets SIGSTOP, so connections to it
    /// are accepted by the kernel and never answered.
    pub fn freeze(&self, name: &str) {
        self.script("freeze", name)
    }

    /// Ends a [`Testbed::freeze`] (SIGCONT).
    pub fn thaw(&self, name: &str) {
        self.script("thaw", name)
    }

    /// Runs the docker CLI directly against engine `name` (unix socket,
    /// bypassing the network and any manager) and returns its output.
    pub fn docker<I, S>(&self, name: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let engine = self.engine(name);
        Command::new(DOCKER)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .arg("-H")
            .arg(format!("unix://{}", engine.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {DOCKER}: {e}. {INSTALL_HINT}"))
    }

    /// Like [`Testbed::docker`] but panics on failure; returns trimmed stdout.
    pub fn docker_ok<I, S>(&self, name: &str, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let out = self.docker(name, &args);
        let shown: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        assert!(
            out.status.success(),
            "docker {} on {name} failed ({}):\n{}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs the docker CLI against engine `name`'s TCP address, as a
    /// client on the network would: on a TLS testbed with `--tlsverify` and
    /// the client certificate ([`TestbedTls::cli_env`]).
    pub fn docker_tcp<I, S>(&self, name: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let engine = self.engine(name);
        let mut command = Command::new(DOCKER);
        command
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env("DOCKER_CONFIG", self.dir.join("docker-config"));
        if let Some(tls) = &self.tls {
            command.envs(tls.cli_env());
        }
        command
            .arg("-H")
            .arg(engine.url())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {DOCKER}: {e}. {INSTALL_HINT}"))
    }

    /// True if engine `name` answers `GET /_ping` on its TCP address (over
    /// TLS with the client certificate on a TLS testbed).
    pub fn ping(&self, name: &str) -> bool {
        let engine = self.engine(name);
        match &self.tls {
            None => {
                matches!(http::get(&engine.addr, "/_ping", Duration::from_secs(2)), Ok((200, body)) if body.trim() == "OK")
            }
            Some(tls) => {
                // curl does the TLS side (the testkit has no TLS client of its own).
                let out = Command::new("curl")
                    .args(["-sS", "--max-time", "2", "--cacert"])
                    .arg(&tls.client.ca)
                    .arg("--cert")
                    .arg(&tls.client.cert)
                    .arg("--key")
                    .arg(&tls.client.key)
                    .arg(format!("https://{}/_ping", engine.addr))
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run curl: {e}. {INSTALL_HINT}"));
                out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "OK"
            }
        }
    }

    /// Tears the testbed down now (same as dropping it).
    pub fn down(self) {}
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        match run_script(["down", "--dir", &dir]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("testbed.sh down --dir {dir} failed ({}):\n{}", out.status, tail(&out.stderr, 20)),
            Err(e) => eprintln!("cannot run testbed.sh down: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_output_of_a_tls_testbed() {
        let tb = parse_up_output(
            "engine node-01 10.250.7.11:2376 /tmp/tb/node-01/docker.sock\n\
             registry 10.250.7.1:5000\ntls /tmp/tb/tls\nbridge 10.250.7.1\ndir /tmp/tb\nindex 7\nsomething new\n",
        )
        .expect("parse");
        assert_eq!(tb.engines[0].ip, "10.250.7.11");
        assert_eq!(tb.engines[0].url(), "tcp://10.250.7.11:2376");
        let tls = tb.tls().clone();
        assert_eq!(tls.ca_cert, PathBuf::from("/tmp/tb/tls/ca.pem"));
        assert_eq!(tls.client.dir, PathBuf::from("/tmp/tb/tls/client"));
        assert_eq!(tls.client.key, PathBuf::from("/tmp/tb/tls/client/key.pem"));
        assert_eq!(tls.engine("node-01").cert, PathBuf::from("/tmp/tb/tls/node-01/cert.pem"));
        // Not a live testbed: keep Drop from calling `testbed.sh down`.
        std::mem::forget(tb);
    }

    #[test]
    fn a_plain_testbed_has_no_tls() {
        let tb = parse_up_output("engine node-01 10.250.7.11:2375 /s\nbridge 10.250.7.1\ndir /tmp/tb\nindex 7\n")
            .expect("parse");
        assert!(tb.tls.is_none());
        std::mem::forget(tb);
    }
}
