//! A real Consul agent: `consul agent -dev` (in-memory single-node server)
//! with every listener on a free port. A `-dev` agent keeps its data in
//! memory only, so after [`StoreFixture::restart`] it comes back **empty**
//! (no keys, no sessions, an index history starting over): a store that
//! lost its state, which clients must cope with anyway.
//!
//! [`ConsulServer::start_tls`] starts an agent whose API is HTTPS only,
//! requiring a client certificate (Consul 1.8's top-level `ca_file`,
//! `cert_file`, `key_file` and `verify_incoming_https` keys; the
//! `tls { defaults { ... } }` block only came with 1.12).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ServerProcess, StoreFixture, StoreProfile, TestCa};
use crate::process::free_tcp_udp_ports;
use crate::{http, INSTALL_HINT};

/// How long an agent may take to elect itself and register its node.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The ports of one agent: HTTP API plus everything else it listens on.
#[derive(Debug, Clone, Copy)]
struct Ports {
    /// The API's port: HTTP, or HTTPS (and no HTTP) for a TLS agent.
    http: u16,
    dns: u16,
    serf_lan: u16,
    serf_wan: u16,
    server: u16,
    grpc: u16,
}

impl Ports {
    /// Six distinct ports free for TCP and UDP (serf and DNS use both).
    fn pick() -> Ports {
        let p = free_tcp_udp_ports(6);
        Ports { http: p[0], dns: p[1], serf_lan: p[2], serf_wan: p[3], server: p[4], grpc: p[5] }
    }
}

/// A running (or deliberately stopped) Consul agent.
pub struct ConsulServer {
    /// `ip:PORT` of the HTTP (or, started with [`ConsulServer::start_tls`], HTTPS) API.
    pub addr: String,
    /// The agent's node name (unique per server).
    pub node: String,
    /// The agent; its dir holds the log.
    process: ServerProcess,
    /// The ports it listens on, the same across restarts.
    ports: Ports,
    /// Address the HTTP API listens on.
    client_ip: String,
    /// The certificates of an HTTPS-only agent.
    tls: Option<AgentTls>,
}

/// The PEM files of an HTTPS agent: what it presents and trusts, and what
/// the fixture's own requests present.
#[derive(Clone)]
struct AgentTls {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl StoreFixture for ConsulServer {
    /// Consul's session TTL is at least 10 s, which the client asks as half
    /// the `--ttl`; it may take twice the session TTL to enforce it.
    const PROFILE: StoreProfile =
        StoreProfile { name: "consul", scheme: "consul", join_ttl: "20s", join_expiry: Duration::from_secs(40) };

    /// Starts an agent and waits until it has a leader and its node is
    /// registered (so sessions can be created).
    fn start_on(ip: &str) -> ConsulServer {
        Self::start_with(ip, None)
    }

    fn process(&self) -> &ServerProcess {
        &self.process
    }

    fn process_mut(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    /// Starts the agent (again on the same ports, empty: see the module docs).
    fn spawn(&mut self) {
        if let Err(e) = self.launch() {
            panic!("{e}");
        }
    }
}

impl ConsulServer {
    /// Starts an agent on 127.0.0.1 whose API speaks only HTTPS, with the
    /// server certificate of `ca`, and requires a client certificate signed
    /// by `ca`. Its URL (`consul://127.0.0.1:PORT/...`) names the HTTPS port.
    pub fn start_tls(ca: &TestCa) -> ConsulServer {
        let tls = AgentTls {
            ca: ca.ca.clone(),
            server_cert: ca.server_cert.clone(),
            server_key: ca.server_key.clone(),
            client_cert: ca.client_cert.clone(),
            client_key: ca.client_key.clone(),
        };
        Self::start_with("127.0.0.1", Some(tls))
    }

    fn start_with(ip: &str, tls: Option<AgentTls>) -> ConsulServer {
        let mut last_error = String::new();
        // A port picked free can be taken by someone else before consul binds
        // it: try again with new ports.
        for _ in 0..3 {
            let ports = Ports::pick();
            let addr = format!("{ip}:{}", ports.http);
            let mut server = ConsulServer {
                process: ServerProcess::new("consul", addr.clone()),
                addr,
                client_ip: ip.to_string(),
                node: format!("consul-test-{}", ports.http),
                ports,
                tls: tls.clone(),
            };
            match server.launch() {
                Ok(()) => return server,
                Err(e) if server.log().contains("address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_error}");
    }

    /// True while the agent process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// A raw HTTP request to the agent's API (for checks behind the client's
    /// back; HTTPS with the client certificate for a TLS agent): returns
    /// status and body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        request(&self.addr, self.tls.as_ref(), method, path, body)
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = self.process.dir.path().join("consul.log");
        if let Ok(mut log) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(log, "=== consul fixture: starting agent on {} ===", self.addr);
        }
        let p = self.ports;
        let mut command = Command::new("consul");
        command.args(["agent", "-dev", "-client", &self.client_ip, "-bind", "127.0.0.1"]);
        match &self.tls {
            None => command.arg(format!("-http-port={}", p.http)).arg("-https-port=-1"),
            Some(tls) => {
                let config = self.process.dir.path().join("tls.json");
                std::fs::write(&config, tls_config(tls).to_string())
                    .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
                command.arg("-http-port=-1").arg(format!("-https-port={}", p.http)).arg("-config-file").arg(config)
            }
        };
        command
            .arg(format!("-dns-port={}", p.dns))
            .arg(format!("-serf-lan-port={}", p.serf_lan))
            .arg(format!("-serf-wan-port={}", p.serf_wan))
            .arg(format!("-server-port={}", p.server))
            .arg(format!("-grpc-port={}", p.grpc))
            .arg(format!("-node={}", self.node))
            // No phoning home: traffic stays on 127.0.0.1.
            .arg("-hcl=disable_update_check = true")
            .env("CHECKPOINT_DISABLE", "1");
        let (addr, node, tls) = (&self.addr, &self.node, self.tls.as_ref());
        self.process.launch(&mut command, "consul", START_TIMEOUT, || ready(addr, tls, node))
    }
}

/// The agent configuration that makes its API HTTPS with client
/// certificates (the ports come from the command line).
fn tls_config(tls: &AgentTls) -> serde_json::Value {
    serde_json::json!({
        "ca_file": tls.ca,
        "cert_file": tls.server_cert,
        "key_file": tls.server_key,
        // HTTPS clients must present a certificate signed by `ca_file`;
        // RPC and gossip stay as they are (a -dev agent is alone anyway).
        "verify_incoming_https": true,
    })
}

fn request(
    addr: &str,
    tls: Option<&AgentTls>,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    match tls {
        None => http::request(addr, method, path, body, Duration::from_secs(5)),
        Some(tls) => curl(addr, tls, method, path, body),
    }
}

/// An HTTPS request with curl (which does the TLS side), presenting the
/// client certificate.
fn curl(addr: &str, tls: &AgentTls, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "5", "-X", method, "-w", "\n%{http_code}"]);
    command.arg("--cacert").arg(&tls.ca).arg("--cert").arg(&tls.client_cert).arg("--key").arg(&tls.client_key);
    if !body.is_empty() {
        command.args(["--data-binary", "@-"]);
    }
    let mut child = command
        .arg(format!("https://{addr}{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run curl: {e}. {INSTALL_HINT}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(body)?;
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    match status.trim().parse::<u16>() {
        Ok(status) if out.status.success() && status != 0 => Ok((status, body.to_string())),
        _ => Err(std::io::Error::other(format!(
            "curl {method} https://{addr}{path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// True once the agent has a leader and its node's serfHealth check passes
/// (a session cannot be created before the node is in the catalog).
fn ready(addr: &str, tls: Option<&AgentTls>, node: &str) -> bool {
    let leader = request(addr, tls, "GET", "/v1/status/leader", b"");
    if !matches!(&leader, Ok((200, body)) if body.trim().len() > 2) {
        return false;
    }
    let Ok((200, body)) = request(addr, tls, "GET", &format!("/v1/health/node/{node}"), b"") else {
        return false;
    };
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("\"CheckID\":\"serfHealth\"") && compact.contains("\"Status\":\"passing\"")
}
