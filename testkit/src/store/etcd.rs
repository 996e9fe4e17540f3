//! A real single-member etcd server (Debian's `etcd-server`, `/usr/bin/etcd`),
//! plain or HTTPS with client-certificate authentication (a throw-away CA
//! made by [`TestCa::generate`]). Keys and leases survive a restart.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ServerProcess, StoreFixture, StoreProfile};
use crate::process::free_tcp_udp_ports;
use crate::INSTALL_HINT;

// TestCa lives in `crate::certs` now; re-exported so `store::TestCa` (and
// `super::etcd::TestCa`) keep working.
pub use crate::certs::TestCa;

/// The etcd binary of Debian's `etcd-server` package.
pub const ETCD: &str = "/usr/bin/etcd";

/// How long a (re)start may take before the fixture gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Client-side files the health check needs to talk to a TLS server.
#[derive(Clone)]
struct ClientTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A running (or stopped) etcd server.
pub struct EtcdServer {
    /// `ip:PORT` of the client URL.
    pub addr: String,
    /// The client URL, `http://` or `https://` + `addr`.
    pub url: String,
    /// The server; its dir holds the data dir (`data/`) and the log.
    process: ServerProcess,
    /// The peer port on 127.0.0.1, the same across restarts.
    peer_port: u16,
    /// `(cert, key, trusted CA)` of the server when it speaks TLS.
    server_tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// What the health check presents when the server speaks TLS.
    client_tls: Option<ClientTls>,
}

impl StoreFixture for EtcdServer {
    const PROFILE: StoreProfile =
        StoreProfile { name: "etcd", scheme: "etcd", join_ttl: "3s", join_expiry: Duration::from_secs(15) };

    fn start_on(ip: &str) -> EtcdServer {
        Self::launch(None, ip)
    }

    fn process(&self) -> &ServerProcess {
        &self.process
    }

    fn process_mut(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let name = "swarm-test";
        let mut command = Command::new(ETCD);
        command
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &self.url, "--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            // Settings from the environment (ETCD_*) would change the server.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        if let Some((cert, key, ca)) = &self.server_tls {
            command.arg("--cert-file").arg(cert).arg("--key-file").arg(key).arg("--trusted-ca-file").arg(ca);
            command.arg("--client-cert-auth");
        }
        let (url, tls) = (&self.url, &self.client_tls);
        if let Err(e) = self.process.launch(&mut command, "etcd", START_TIMEOUT, || healthy(url, tls.as_ref())) {
            panic!("{e}");
        }
    }
}

impl EtcdServer {
    /// Starts an etcd that only speaks HTTPS on its client URL and requires
    /// a client certificate signed by `ca`.
    pub fn start_tls(ca: &TestCa) -> EtcdServer {
        Self::launch(Some(ca), "127.0.0.1")
    }

    fn launch(ca: Option<&TestCa>, ip: &str) -> EtcdServer {
        // Chosen together: two `free_port()`s in a row can return the same
        // port, and etcd then fails to bind its second listener.
        let ports = free_tcp_udp_ports(2);
        let (client_port, peer_port) = (ports[0], ports[1]);
        let addr = format!("{ip}:{client_port}");
        let scheme = if ca.is_some() { "https" } else { "http" };
        let mut server = EtcdServer {
            url: format!("{scheme}://{addr}"),
            process: ServerProcess::new("etcd", addr.clone()),
            addr,
            peer_port,
            server_tls: ca.map(|ca| (ca.server_cert.clone(), ca.server_key.clone(), ca.ca.clone())),
            client_tls: ca.map(|ca| ClientTls {
                ca: ca.ca.clone(),
                cert: ca.client_cert.clone(),
                key: ca.client_key.clone(),
            }),
        };
        server.spawn();
        server
    }

    /// True if `GET /health` answers `"health":"true"`.
    pub fn healthy(&self) -> bool {
        healthy(&self.url, self.client_tls.as_ref())
    }

    /// Path of the data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.process.dir.path().join("data")
    }
}

/// Asks `url/health` with curl, which also does the TLS side.
fn healthy(url: &str, tls: Option<&ClientTls>) -> bool {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "2"]);
    if let Some(tls) = tls {
        cmd.arg("--cacert").arg(&tls.ca).arg("--cert").arg(&tls.cert).arg("--key").arg(&tls.key);
    }
    match cmd.arg(format!("{url}/health")).stdin(Stdio::null()).stderr(Stdio::null()).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).contains("\"health\":\"true\""),
        Err(e) => panic!("cannot run curl: {e}. {INSTALL_HINT}"),
    }
}
