//! TLS on every link: the certificates of `--tls`/`--tlsverify`, the server
//! configuration of the API listeners, and the client configuration (and
//! connector) of the connections to engines and to the primary.
//!
//! The configurations sit behind locks read once per new connection, so
//! they can be replaced (certificate rotation) without touching the pools
//! or listeners that use them: live connections keep the configuration
//! they were made with.

use std::future::Future;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why the TLS material could not be loaded; the messages are the original's.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The certificate or key file is unreadable, empty, or they do not match.
    #[error("Couldn't load X509 key pair ({cert}, {key}): {reason}. Key encrypted?")]
    KeyPair { cert: String, key: String, reason: String },
    /// The CA file is unreadable or holds no usable certificate.
    #[error("Couldn't read CA certificate: {reason}")]
    Ca { reason: String },
    /// rustls refused the configuration built from valid material.
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the TLS material comes from: read at start and again on every
/// reload.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Our certificate chain (PEM), presented to clients and to upstreams.
    pub cert: PathBuf,
    /// The private key of `cert` (PEM).
    pub key: PathBuf,
    /// The CA every peer's certificate must chain to; `None` with `--tls`
    /// alone, where no peer certificate is checked.
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// What the files look like on disk now (inode, size and modification
    /// time of each), to notice a replacement without reading them. A
    /// missing file has its own stamp, so its return is noticed too.
    pub fn stamp(&self) -> FilesStamp {
        let of = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.ino(), m.len(), m.modified().ok()));
        FilesStamp([Some(&self.cert), Some(&self.key), self.ca.as_ref()].map(|path| path.and_then(|p| of(p))))
    }
}

/// A snapshot of the TLS files' metadata; equal stamps mean the files were
/// (very probably) not replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesStamp([Option<(u64, u64, Option<SystemTime>)>; 3]);

/// The TLS configurations of one manager, shared by its listeners and its
/// outgoing connections.
#[derive(Debug)]
pub struct TlsConfigs {
    /// The files the configurations are made of.
    files: TlsFiles,
    /// True with `--tlsverify`: every peer must present a certificate signed
    /// by the CA. False with `--tls` alone: no peer certificate is checked.
    /// Fixed for the manager's life: a reload changes the material, not the mode.
    verify: bool,
    /// What the API listeners present and require; read once per accepted
    /// connection, replaced whole when the certificates change.
    server: RwLock<Arc<ServerConfig>>,
    /// What connections to engines and to the primary present and check;
    /// read once per new connection, replaced whole when the certificates change.
    client: RwLock<Arc<ClientConfig>>,
}

impl TlsConfigs {
    /// Loads our certificate chain and key and, when `ca` is given
    /// (`--tlsverify`), the CA that every peer's certificate must chain to.
    /// Without a CA (`--tls`), clients are not asked for a certificate and
    /// servers' certificates are accepted unchecked.
    pub fn load(files: TlsFiles) -> Result<TlsConfigs, TlsError> {
        let (server, client) = build(&files)?;
        Ok(TlsConfigs {
            verify: files.ca.is_some(),
            files,
            server: RwLock::new(Arc::new(server)),
            client: RwLock::new(Arc::new(client)),
        })
    }

    /// The files the configurations are made of.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again and, only if the whole new set is usable (the
    /// key matches the certificate, the CA parses), puts it in place for
    /// the connections made from now on. On error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (server, client) = build(&self.files)?;
        *self.server.write() = Arc::new(server);
        *self.client.write() = Arc::new(client);
        Ok(())
    }

    /// True when peers' certificates are verified (`--tlsverify`).
    pub fn verifies_peers(&self) -> bool {
        self.verify
    }

    /// The configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.read().clone()
    }

    /// The configuration for the next outgoing connection.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.read().clone()
    }
}

/// The server and client configurations made of `files`.
fn build(files: &TlsFiles) -> Result<(ServerConfig, ClientConfig), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = Arc::new(load_key_pair(&files.cert, &files.key, &provider)?);
    let roots = files.ca.as_deref().map(load_ca).transpose()?;
    let server = server_config(&provider, &certified, roots.clone())?;
    let client = client_config(&provider, &certified, roots)?;
    Ok((server, client))
}

fn load_key_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let failed =
        |reason: String| TlsError::KeyPair { cert: cert.display().to_string(), key: key.display().to_string(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if chain.is_empty() {
        return Err(failed("no certificate found in the certificate file".into()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| failed(e.to_string()))?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|e| failed(e.to_string()))
}

fn load_ca(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let failed = |reason: String| TlsError::Ca { reason };
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).map_err(|e| failed(e.to_string()))? {
        roots.add(certificate.map_err(|e| failed(e.to_string()))?).map_err(|e| failed(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(failed(format!("no certificate found in {}", ca.display())));
    }
    Ok(Arc::new(roots))
}

/// TLS 1.2 and 1.3; rustls offers nothing older.
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn server_config(
    provider: &Arc<CryptoProvider>,
    certified: &Arc<CertifiedKey>,
    roots: Option<Arc<RootCertStore>>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(VERSIONS)?;
    let builder = match roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| TlsError::Ca { reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified.clone()))))
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    certified: &Arc<CertifiedKey>,
    roots: Option<Arc<RootCertStore>>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(VERSIONS)?;
    let builder = match roots {
        Some(roots) => builder.with_root_certificates(roots),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider: provider.clone() })),
    };
    Ok(builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified.clone()))))
}

/// `--tls` without `--tlsverify`: any server certificate is accepted, as
/// the original did, but the handshake signatures are still checked, so
/// the peer must hold the key of the certificate it presents.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The name a server certificate must carry for `host`: an IP address SAN
/// for an address, a DNS name otherwise.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(host.to_string()).map_err(|e| format!("invalid server name {host:?}: {e}")),
    }
}

/// Opens TCP connections for the pool, wrapped in TLS when configured.
#[derive(Clone)]
pub(crate) struct UpstreamConnector {
    /// Makes the TCP connections (timeouts, keepalive, nodelay).
    pub(crate) tcp: HttpConnector,
    /// When set, every connection is a TLS client of these configurations.
    pub(crate) tls: Option<Arc<TlsConfigs>>,
    /// How long the TLS handshake may take once the TCP connection is made:
    /// a peer that accepts but never answers must not hold a request forever.
    pub(crate) handshake_timeout: Duration,
}

/// A connection to an upstream, plain or TLS.
pub(crate) enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for UpstreamConnector {
    type Response = TokioIo<UpstreamStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        // Read now: a connection uses the configuration current when it was asked for.
        let tls = self.tls.as_ref().map(|tls| tls.client_config());
        let handshake_timeout = self.handshake_timeout;
        Box::pin(async move {
            let name = match &tls {
                Some(_) => Some(server_name(uri.host().unwrap_or_default())?),
                None => None,
            };
            let stream = tcp.call(uri).await?.into_inner();
            match (tls, name) {
                (Some(config), Some(name)) => {
                    let handshake = TlsConnector::from(config).connect(name, stream);
                    let stream = tokio::time::timeout(handshake_timeout, handshake)
                        .await
                        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
                    Ok(TokioIo::new(UpstreamStream::Tls(Box::new(stream))))
                }
                _ => Ok(TokioIo::new(UpstreamStream::Plain(stream))),
            }
        })
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(stream) => stream.connected(),
            UpstreamStream::Tls(stream) => stream.get_ref().0.connected(),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            UpstreamStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            UpstreamStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            UpstreamStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            UpstreamStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
