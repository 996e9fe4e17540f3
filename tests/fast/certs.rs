//! Test certificates: a CA and leaf certificates it signs, valid for
//! `127.0.0.1` as servers and as clients, written as PEM files.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use swarm_proxy::{TlsConfigs, TlsFiles};
use tempfile::TempDir;

/// A certificate authority whose files live as long as it does.
pub struct TestCa {
    dir: TempDir,
    name: String,
    cert: Certificate,
    key: KeyPair,
}

/// The files of one leaf certificate, with the CA that signed it.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name` (the name prefixes its files).
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().expect("a directory for certificates");
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("a self-signed CA");
        std::fs::write(dir.path().join(format!("{name}-ca.pem")), cert.pem()).expect("write the CA");
        TestCa { dir, name: name.to_string(), cert, key }
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join(format!("{}-ca.pem", self.name))
    }

    /// A leaf certificate for `127.0.0.1`, usable by servers and clients.
    pub fn issue(&self, leaf: &str) -> CertFiles {
        let key = KeyPair::generate().expect("a leaf key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf parameters");
        params.distinguished_name.push(DnType::CommonName, leaf);
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("a signed leaf");
        let files = CertFiles {
            ca: self.ca_file(),
            cert: self.dir.path().join(format!("{}-{leaf}-cert.pem", self.name)),
            key: self.dir.path().join(format!("{}-{leaf}-key.pem", self.name)),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write a leaf certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write a leaf key");
        files
    }
}

impl CertFiles {
    /// `--tlsverify` with these files, as `swarm manage` flags.
    pub fn verify_flags(&self) -> Vec<String> {
        vec![
            "--tlsverify".into(),
            format!("--tlscacert={}", self.ca.display()),
            format!("--tlscert={}", self.cert.display()),
            format!("--tlskey={}", self.key.display()),
        ]
    }

    /// Configurations that present this certificate and verify peers against its CA.
    pub fn verifying(&self) -> Arc<TlsConfigs> {
        self.load(Some(self.ca.clone()))
    }

    /// Configurations that present this certificate and check no peer's
    /// (`--tls` alone).
    pub fn accepting_anyone(&self) -> Arc<TlsConfigs> {
        self.load(None)
    }

    /// Configurations that present this certificate and verify peers against `ca`.
    pub fn load(&self, ca: Option<PathBuf>) -> Arc<TlsConfigs> {
        let files = TlsFiles { cert: self.cert.clone(), key: self.key.clone(), ca };
        Arc::new(TlsConfigs::load(files).expect("load test certificates"))
    }
}
