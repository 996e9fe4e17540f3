//! A small certificate toolkit for tests, on the `openssl` CLI: throw-away
//! CAs ([`Ca::generate`]) or an existing one such as a TLS testbed's
//! ([`Ca::load`]), and certificates they sign ([`Ca::issue`], and
//! [`Ca::issue_expired`] for one whose validity ended long ago), each in a
//! directory of the Docker CLI's layout ([`CertDir`]: `ca.pem`, `cert.pem`,
//! `key.pem`, usable as `DOCKER_CERT_PATH`). A second unrelated CA is just
//! another [`Ca::generate`].
//!
//! Keys are P-256 (quick to make). Every certificate carries X.509 v3
//! extensions (rustls refuses v1 certificates): `CA:FALSE`, its key usages,
//! its extended key usage ([`Usage`]) and the subject alternative names it
//! is verified against. The helpers panic with openssl's stderr on failure,
//! as fixtures do.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::process::temp_dir;
use crate::INSTALL_HINT;

/// How long [`Ca::generate`] CAs and [`Ca::issue`] certificates are valid.
const VALID_DAYS: &str = "30";

/// The extended key usage of an issued certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// `serverAuth`: a TLS server (an engine, a manager's API).
    Server,
    /// `clientAuth`: a TLS client (the Docker CLI, `swarm join`).
    Client,
    /// Both: what a manager needs, which serves the API and calls engines
    /// and the primary with the same certificate.
    Both,
}

impl Usage {
    fn extended_key_usage(self) -> &'static str {
        match self {
            Usage::Server => "serverAuth",
            Usage::Client => "clientAuth",
            Usage::Both => "serverAuth,clientAuth",
        }
    }
}

/// A directory holding `ca.pem`, `cert.pem` and `key.pem`: the names the
/// Docker CLI expects in `DOCKER_CERT_PATH`, and what `swarm manage
/// --tlscacert/--tlscert/--tlskey` take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDir {
    /// The directory (`DOCKER_CERT_PATH`).
    pub dir: PathBuf,
    /// `dir/ca.pem`: the CA that signed `cert`, to verify peers with.
    pub ca: PathBuf,
    /// `dir/cert.pem`: the certificate.
    pub cert: PathBuf,
    /// `dir/key.pem`: its private key.
    pub key: PathBuf,
}

impl CertDir {
    /// The three paths in `dir` (whether the files exist or not).
    pub fn at(dir: impl Into<PathBuf>) -> CertDir {
        let dir = dir.into();
        CertDir { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem"), dir }
    }

    /// `--tlscacert <ca> --tlscert <cert> --tlskey <key>`, as `swarm` and
    /// `dockerd` take them.
    pub fn flags(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tlscacert".into(),
            path(&self.ca),
            "--tlscert".into(),
            path(&self.cert),
            "--tlskey".into(),
            path(&self.key),
        ]
    }
}

/// A certificate authority: its certificate and key, and a directory where
/// the certificates it issues go (one subdirectory per name).
#[derive(Debug)]
pub struct Ca {
    /// The name given to [`Ca::generate`] (its CN), or the loaded file's stem.
    pub name: String,
    /// The CA certificate (PEM).
    pub cert: PathBuf,
    /// The CA key (PEM).
    pub key: PathBuf,
    /// Where [`Ca::issue`] puts `<name>/{ca,cert,key}.pem`.
    pub dir: PathBuf,
    /// The temp dir behind `dir`, if this owns one (removed on drop).
    _temp: Option<tempfile::TempDir>,
}

impl Ca {
    /// A new CA called `name` (its CN) in a fresh temp dir, removed with
    /// the returned value (and so are the certificates it issues).
    pub fn generate(name: &str) -> Ca {
        let temp = temp_dir("swarm-ca-");
        let mut ca = Ca::generate_in(temp.path(), name);
        ca._temp = Some(temp);
        ca
    }

    /// A new CA called `name` with `ca.pem` and `ca-key.pem` in `dir`
    /// (created if missing; left in place on drop). Issued certificates go
    /// to subdirectories of `dir`.
    pub fn generate_in(dir: &Path, name: &str) -> Ca {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            VALID_DAYS,
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &path_arg(&key),
            "-out",
            &path_arg(&cert),
        ]);
        Ca { name: name.to_string(), cert, key, dir: dir.to_path_buf(), _temp: None }
    }

    /// An existing CA (e.g. a TLS testbed's, see `TestbedTls::ca`), to issue
    /// more certificates it signs. They go to a fresh temp dir removed with
    /// the returned value; the CA's own files are never written.
    pub fn load(cert: &Path, key: &Path) -> Ca {
        for file in [cert, key] {
            assert!(file.is_file(), "CA file {} does not exist", file.display());
        }
        let temp = temp_dir("swarm-ca-");
        Ca {
            name: cert.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            dir: temp.path().to_path_buf(),
            _temp: Some(temp),
        }
    }

    /// Issues a certificate valid for 30 days, with CN `name`, the SANs
    /// `IP:<ips>` and `DNS:<dns>` (none if both are empty) and `usage`, in
    /// `self.dir/name` (a name may be issued once per CA).
    pub fn issue(&self, name: &str, ips: &[&str], dns: &[&str], usage: Usage) -> CertDir {
        let (out, csr, ext) = self.request(name, ips, dns, usage);
        openssl(&[
            "x509",
            "-req",
            "-days",
            VALID_DAYS,
            "-set_serial",
            &random_serial(),
            "-in",
            &path_arg(&csr),
            "-CA",
            &path_arg(&self.cert),
            "-CAkey",
            &path_arg(&self.key),
            "-extfile",
            &path_arg(&ext),
            "-out",
            &path_arg(&out.cert),
        ]);
        finish(&self.cert, &out, &[csr, ext]);
        out
    }

    /// Like [`Ca::issue`], but the certificate was valid only in January
    /// 2020: signed by this CA, well-formed, and expired.
    pub fn issue_expired(&self, name: &str, ips: &[&str], dns: &[&str], usage: Usage) -> CertDir {
        self.issue_dated(name, ips, dns, usage, "20200101000000Z", "20200201000000Z")
    }

    /// Like [`Ca::issue`], valid from `not_before` to `not_after` (both as
    /// `YYYYMMDDHHMMSSZ`, UTC), which may lie in the past or the future.
    pub fn issue_dated(
        &self,
        name: &str,
        ips: &[&str],
        dns: &[&str],
        usage: Usage,
        not_before: &str,
        not_after: &str,
    ) -> CertDir {
        let (out, csr, ext) = self.request(name, ips, dns, usage);
        // OpenSSL 3.0's `x509 -req` cannot set the start date; `openssl ca`
        // can, with a minimal configuration and a database of its own.
        let db = out.dir.join("ca-db");
        std::fs::create_dir(&db).unwrap_or_else(|e| panic!("cannot create {}: {e}", db.display()));
        write(&db.join("index.txt"), "");
        write(&db.join("serial"), &format!("{}\n", random_serial().trim_start_matches("0x")));
        let config = db.join("ca.cnf");
        write(
            &config,
            &format!(
                "[ca]\ndefault_ca = test\n[test]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\n\
                 serial = {db}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
                 copy_extensions = none\n[any]\ncommonName = supplied\n",
                db = db.display()
            ),
        );
        openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            &path_arg(&config),
            "-cert",
            &path_arg(&self.cert),
            "-keyfile",
            &path_arg(&self.key),
            "-startdate",
            not_before,
            "-enddate",
            not_after,
            "-extfile",
            &path_arg(&ext),
            "-in",
            &path_arg(&csr),
            "-out",
            &path_arg(&out.cert),
        ]);
        finish(&self.cert, &out, &[csr, ext]);
        let _ = std::fs::remove_dir_all(&db);
        out
    }

    /// Makes `self.dir/name` with a new key, its signing request and the
    /// extensions file; returns the directory's paths, the CSR and the
    /// extensions file.
    fn request(&self, name: &str, ips: &[&str], dns: &[&str], usage: Usage) -> (CertDir, PathBuf, PathBuf) {
        let out = CertDir::at(self.dir.join(name));
        if let Err(e) = std::fs::create_dir(&out.dir) {
            panic!("cannot create {} (a certificate name is issued once per CA): {e}", out.dir.display());
        }
        let ext = out.dir.join("ext.cnf");
        write(&ext, &extensions(ips, dns, usage));
        let csr = out.dir.join("req.csr");
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &path_arg(&out.key),
            "-out",
            &path_arg(&csr),
        ]);
        (out, csr, ext)
    }
}

/// The v3 extensions of a leaf certificate, as an openssl `-extfile`.
fn extensions(ips: &[&str], dns: &[&str], usage: Usage) -> String {
    let mut text = format!(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage={}\n",
        usage.extended_key_usage()
    );
    let sans: Vec<String> =
        ips.iter().map(|ip| format!("IP:{ip}")).chain(dns.iter().map(|name| format!("DNS:{name}"))).collect();
    if !sans.is_empty() {
        text.push_str(&format!("subjectAltName={}\n", sans.join(",")));
    }
    text
}

/// Copies the CA certificate next to the issued one (the Docker layout) and
/// drops the scratch files.
fn finish(ca_cert: &Path, out: &CertDir, scratch: &[PathBuf]) {
    if let Err(e) = std::fs::copy(ca_cert, &out.ca) {
        panic!("cannot copy {} to {}: {e}", ca_cert.display(), out.ca.display());
    }
    for file in scratch {
        let _ = std::fs::remove_file(file);
    }
}

/// A random positive 63-bit serial number in hex (`0x...`), so that the
/// certificates of one CA never share a serial even when issued in parallel.
fn random_serial() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    format!("0x{:016X}", (hasher.finish() >> 1) | (1 << 60))
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Runs `openssl <args>`, panicking with its stderr on failure.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}. {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throw-away CA with one server certificate (for `127.0.0.1` /
/// `localhost`) and one client certificate, as PEM files in a temp dir that
/// is removed when this is dropped. (The stores' TLS fixtures take it.)
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
    /// Generates the CA and both certificates (valid for 30 days).
    pub fn generate() -> TestCa {
        let dir = temp_dir("swarm-ca-");
        let ca = Ca::generate_in(dir.path(), "swarm-test-ca");
        let server = ca.issue("server", &["127.0.0.1"], &["localhost"], Usage::Server);
        let client = ca.issue("client", &[], &[], Usage::Client);
        TestCa {
            ca: ca.cert.clone(),
            server_cert: server.cert,
            server_key: server.key,
            client_cert: client.cert,
            client_key: client.key,
            dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl verify` of `cert` against `ca` for `purpose`: Ok or openssl's output.
    fn verify(ca: &Path, cert: &Path, purpose: &str) -> Result<(), String> {
        let out = Command::new("openssl")
            .args(["verify", "-purpose", purpose, "-CAfile"])
            .arg(ca)
            .arg(cert)
            .output()
            .expect("run openssl verify");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(())
        } else {
            Err(text)
        }
    }

    fn describe(cert: &Path) -> String {
        let out = Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(cert).output().expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn issued_certificates_are_v3_with_their_sans_and_usages() {
        let ca = Ca::generate("toolkit");
        let both = ca.issue("node", &["10.250.3.11", "127.0.0.1"], &["node-01"], Usage::Both);
        assert_eq!(both.dir, ca.dir.join("node"));
        for file in [&both.ca, &both.cert, &both.key] {
            assert!(file.is_file(), "{} missing", file.display());
        }
        assert_eq!(std::fs::read(&both.ca).expect("ca.pem"), std::fs::read(&ca.cert).expect("CA cert"));
        let text = describe(&both.cert);
        assert!(text.contains("Version: 3"), "{text}");
        assert!(text.contains("IP Address:10.250.3.11, IP Address:127.0.0.1, DNS:node-01"), "{text}");
        assert!(text.contains("CA:FALSE"), "{text}");
        verify(&ca.cert, &both.cert, "sslserver").expect("server purpose");
        verify(&ca.cert, &both.cert, "sslclient").expect("client purpose");

        let server = ca.issue("server", &["127.0.0.1"], &[], Usage::Server);
        verify(&ca.cert, &server.cert, "sslserver").expect("server purpose");
        assert!(verify(&ca.cert, &server.cert, "sslclient").is_err(), "a server-only certificate passed as client");
        let client = ca.issue("client", &[], &[], Usage::Client);
        verify(&ca.cert, &client.cert, "sslclient").expect("client purpose");
        assert!(!describe(&client.cert).contains("Subject Alternative Name"));
        assert_eq!(
            client.flags(),
            ["--tlscacert", "--tlscert", "--tlskey"]
                .iter()
                .zip([&client.ca, &client.cert, &client.key])
                .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn expired_and_foreign_certificates_fail_verification() {
        let ca = Ca::generate("toolkit");
        let expired = ca.issue_expired("old", &["127.0.0.1"], &[], Usage::Both);
        let text = describe(&expired.cert);
        assert!(text.contains("Not After : Feb  1 00:00:00 2020 GMT"), "{text}");
        assert!(text.contains("IP Address:127.0.0.1"), "{text}");
        let err = verify(&ca.cert, &expired.cert, "sslserver").expect_err("expired certificate verified");
        assert!(err.contains("expired"), "{err}");

        let other = Ca::generate("other");
        let foreign = other.issue("foreign", &["127.0.0.1"], &[], Usage::Both);
        verify(&other.cert, &foreign.cert, "sslserver").expect("valid under its own CA");
        assert!(verify(&ca.cert, &foreign.cert, "sslserver").is_err(), "verified under an unrelated CA");
    }

    #[test]
    fn a_loaded_ca_issues_into_a_temp_dir_of_its_own() {
        let original = Ca::generate("original");
        let loaded = Ca::load(&original.cert, &original.key);
        assert_ne!(loaded.dir, original.dir);
        let cert = loaded.issue("more", &["127.0.0.1"], &[], Usage::Server);
        assert!(cert.dir.starts_with(&loaded.dir));
        verify(&original.cert, &cert.cert, "sslserver").expect("signed by the loaded CA");
        let dir = loaded.dir.clone();
        drop(loaded);
        assert!(!dir.exists(), "temp dir of a loaded CA left behind");
        assert!(original.cert.is_file(), "dropping a loaded CA removed the CA's files");
    }

    #[test]
    fn test_ca_has_a_server_and_a_client_certificate() {
        let ca = TestCa::generate();
        verify(&ca.ca, &ca.server_cert, "sslserver").expect("server");
        verify(&ca.ca, &ca.client_cert, "sslclient").expect("client");
        assert!(describe(&ca.server_cert).contains("IP Address:127.0.0.1, DNS:localhost"));
        assert!(ca.server_key.is_file() && ca.client_key.is_file());
    }
}
