//! A real single-member etcd server (Debian's `etcd-server`, `/usr/bin/etcd`),
//! plain or HTTPS with client-certificate authentication (a throw-away CA
//! made by [`TestCa::generate`]). Keys and leases survive a restart.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ServerProcess, StoreFixture, StoreProfile};
use crate::process::{free_port, temp_dir};
use crate::INSTALL_HINT;

/// The etcd binary of Debian's `etcd-server` package.
pub const ETCD: &str = "/usr/bin/etcd";

/// How long a (re)start may take before the fixture gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A throw-away certificate authority with one server certificate (for
/// `127.0.0.1` / `localhost`) and one client certificate, as PEM files in
/// a temp dir that is removed when this is dropped.
pub struct TestCa {
    /// Holds the PEM files; removed on drop.
    pub dir: tempfile::TempDir,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate (for `127.0.0.1` and `localhost`) and its key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The client certificate and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestCa {
    /// Generates the CA and both certificates with the `openssl` CLI (P-256
    /// keys, which are quick to make; valid for 30 days).
    pub fn generate() -> TestCa {
        let dir = temp_dir("swarm-ca-");
        let d = dir.path();
        let p = |name: &str| d.join(name).display().to_string();
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write server.ext");
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n",
        )
        .expect("write client.ext");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[&["req", "-x509"][..], &ec[..], &["-days", "30", "-subj", "/CN=swarm-test-ca"]].concat(),
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &p("ca-key.pem"),
                "-out",
                &p("ca.pem"),
            ],
        );
        for (who, cn) in [("server", "127.0.0.1"), ("client", "swarm-test-client")] {
            openssl(
                &[&["req"][..], &ec[..]].concat(),
                &[
                    "-subj",
                    &format!("/CN={cn}"),
                    "-keyout",
                    &p(&format!("{who}-key.pem")),
                    "-out",
                    &p(&format!("{who}.csr")),
                ],
            );
            openssl(
                &["x509", "-req", "-days", "30", "-set_serial", if who == "server" { "2" } else { "3" }],
                &[
                    "-in",
                    &p(&format!("{who}.csr")),
                    "-CA",
                    &p("ca.pem"),
                    "-CAkey",
                    &p("ca-key.pem"),
                    "-extfile",
                    &p(&format!("{who}.ext")),
                    "-out",
                    &p(&format!("{who}.pem")),
                ],
            );
        }
        TestCa {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server-key.pem"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client-key.pem"),
            dir,
        }
    }
}

/// Runs `openssl <a> <b>`, panicking with its stderr on failure.
fn openssl(a: &[&str], b: &[&str]) {
    let out = Command::new("openssl")
        .args(a)
        .args(b)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}. {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "openssl {} {} failed ({}):\n{}",
        a.join(" "),
        b.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

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
        let addr = format!("{ip}:{}", free_port());
        let scheme = if ca.is_some() { "https" } else { "http" };
        let mut server = EtcdServer {
            url: format!("{scheme}://{addr}"),
            process: ServerProcess::new("etcd", addr.clone()),
            addr,
            peer_port: free_port(),
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
