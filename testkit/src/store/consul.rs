//! A real Consul agent: `consul agent -dev` (in-memory single-node server)
//! with every listener on a free port. A `-dev` agent keeps its data in
//! memory only, so after [`StoreFixture::restart`] it comes back **empty**
//! (no keys, no sessions, an index history starting over): a store that
//! lost its state, which clients must cope with anyway.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use super::{ServerProcess, StoreFixture, StoreProfile};
use crate::http;
use crate::process::free_tcp_udp_ports;

/// How long an agent may take to elect itself and register its node.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The ports of one agent: HTTP API plus everything else it listens on.
#[derive(Debug, Clone, Copy)]
struct Ports {
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
    /// `ip:PORT` of the HTTP API.
    pub addr: String,
    /// The agent's node name (unique per server).
    pub node: String,
    /// The agent; its dir holds the log.
    process: ServerProcess,
    /// The ports it listens on, the same across restarts.
    ports: Ports,
    /// Address the HTTP API listens on.
    client_ip: String,
}

impl StoreFixture for ConsulServer {
    /// Consul's session TTL is at least 10 s, which the client asks as half
    /// the `--ttl`; it may take twice the session TTL to enforce it.
    const PROFILE: StoreProfile =
        StoreProfile { name: "consul", scheme: "consul", join_ttl: "20s", join_expiry: Duration::from_secs(40) };

    /// Starts an agent and waits until it has a leader and its node is
    /// registered (so sessions can be created).
    fn start_on(ip: &str) -> ConsulServer {
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
            };
            match server.launch() {
                Ok(()) => return server,
                Err(e) if server.log().contains("address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_error}");
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
    /// True while the agent process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// A raw HTTP request to the agent's API (for checks behind the client's
    /// back): returns status and body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        request(&self.addr, method, path, body)
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = self.process.dir.path().join("consul.log");
        if let Ok(mut log) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(log, "=== consul fixture: starting agent on {} ===", self.addr);
        }
        let p = self.ports;
        let mut command = Command::new("consul");
        command
            .args(["agent", "-dev", "-client", &self.client_ip, "-bind", "127.0.0.1"])
            .arg(format!("-http-port={}", p.http))
            .arg("-https-port=-1")
            .arg(format!("-dns-port={}", p.dns))
            .arg(format!("-serf-lan-port={}", p.serf_lan))
            .arg(format!("-serf-wan-port={}", p.serf_wan))
            .arg(format!("-server-port={}", p.server))
            .arg(format!("-grpc-port={}", p.grpc))
            .arg(format!("-node={}", self.node))
            // No phoning home: traffic stays on 127.0.0.1.
            .arg("-hcl=disable_update_check = true")
            .env("CHECKPOINT_DISABLE", "1");
        let (addr, node) = (&self.addr, &self.node);
        self.process.launch(&mut command, "consul", START_TIMEOUT, || ready(addr, node))
    }
}

fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    http::request(addr, method, path, body, Duration::from_secs(5))
}

/// True once the agent has a leader and its node's serfHealth check passes
/// (a session cannot be created before the node is in the catalog).
fn ready(addr: &str, node: &str) -> bool {
    let leader = request(addr, "GET", "/v1/status/leader", b"");
    if !matches!(&leader, Ok((200, body)) if body.trim().len() > 2) {
        return false;
    }
    let Ok((200, body)) = request(addr, "GET", &format!("/v1/health/node/{node}"), b"") else {
        return false;
    };
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("\"CheckID\":\"serfHealth\"") && compact.contains("\"Status\":\"passing\"")
}
