//! HTTPS to Consul (`kv.cacertfile`, `kv.certfile`, `kv.keyfile`): the
//! rustls client configuration, the connector that wraps the pool's TCP
//! connections in it, and the hints that turn a TLS failure into a reason
//! a user can act on.
//!
//! A hand-written connector rather than hyper-rustls: it is a few lines
//! over the `HttpConnector` the plain client uses anyway, and it keeps the
//! crate on the one rustls (with ring) the workspace already builds.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::kv::{KvError, TlsFiles, CA_FILE, CERT_FILE, KEY_FILE};

/// What a Go HTTPS server answers a plain HTTP request with (status 400).
const PLAIN_TO_HTTPS: &str = "Client sent an HTTP request to an HTTPS server";

/// The client configuration from the three PEM files: the agents'
/// certificates must chain to the CA, and we present our certificate.
pub(super) fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, KvError> {
    let pem = files.read()?;
    let invalid = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        KvError::Tls(format!("the {what} {}: {e}", path.display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem.ca) {
        let cert = cert.map_err(|e| invalid(CA_FILE, &files.ca, &e))?;
        roots.add(cert).map_err(|e| invalid(CA_FILE, &files.ca, &e))?;
    }
    if roots.is_empty() {
        return Err(invalid(CA_FILE, &files.ca, &"holds no certificate"));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(CERT_FILE, &files.cert, &e))?;
    if chain.is_empty() {
        return Err(invalid(CERT_FILE, &files.cert, &"holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| invalid(KEY_FILE, &files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Checks that the key is the certificate's, so a mix-up is reported
    // here and not as a handshake the agent refuses.
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        KvError::Tls(format!(
            "the {CERT_FILE} {} and the {KEY_FILE} {} do not go together: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| KvError::Tls(format!("invalid TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::new(certified))));
    Ok(Arc::new(config))
}

/// Why a call failed, with a hint when the cause is a TLS mismatch:
/// `reason` is the transport's error chain, `tls` whether we spoke TLS.
pub(super) fn explain(reason: String, tls: bool) -> String {
    let hint = if tls {
        if reason.contains("InvalidContentType") || reason.contains("corrupt message") {
            "the agent does not speak TLS there: is it its HTTPS port (`ports { https = ... }`)? \
             For plain HTTP leave out kv.cacertfile, kv.certfile and kv.keyfile"
        } else if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
            "the agent's certificate is not signed by the CA of kv.cacertfile"
        } else if reason.contains("NotValidForName") {
            "the agent's certificate does not name the address it was reached at"
        } else if reason.contains("Expired") || reason.contains("NotValidYet") {
            "the agent's certificate is outside its validity period"
        } else if ["BadCertificate", "CertificateRequired", "UnknownCA", "bad certificate"]
            .iter()
            .any(|alert| reason.contains(alert))
        {
            "the agent refused our client certificate: is kv.certfile signed by a CA the agent trusts?"
        } else if ["connection was not ready", "connection closed", "reset by peer", "broken pipe"]
            .iter()
            .any(|hang_up| reason.contains(hang_up))
        {
            // Under TLS 1.3 the agent judges our certificate after the
            // handshake completes on our side; its alert can race our first
            // request, leaving only a hang-up to see.
            "the agent hung up right after the TLS handshake: did it refuse our client certificate? \
             Is kv.certfile signed by a CA the agent trusts?"
        } else {
            return reason;
        }
    } else if reason.contains(PLAIN_TO_HTTPS) {
        "the agent speaks HTTPS there: set kv.cacertfile, kv.certfile and kv.keyfile"
    } else {
        return reason;
    };
    format!("{reason} ({hint})")
}

/// True if an HTTP answer is a TLS port's complaint about plain HTTP (a
/// failure to talk, not an answer from Consul).
pub(super) fn is_plain_to_https(status: http::StatusCode, body: &[u8]) -> bool {
    status == http::StatusCode::BAD_REQUEST && String::from_utf8_lossy(body).contains(PLAIN_TO_HTTPS)
}

/// The name the agent's certificate must carry for `host`: an IP address
/// SAN for an address (`127.0.0.1`), a DNS name otherwise.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(host.to_string()).map_err(|e| format!("invalid server name {host:?}: {e}")),
    }
}

/// Opens the pool's connections: TCP, wrapped in TLS when configured.
#[derive(Clone)]
pub(super) struct Connector {
    /// Makes the TCP connections (connect timeout, nodelay).
    pub(super) tcp: HttpConnector,
    /// When set, every connection is a TLS client of this configuration.
    pub(super) tls: Option<Arc<ClientConfig>>,
}

/// A connection to an agent, plain or TLS.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    /// No handshake timeout of its own: every request, connect included,
    /// is bounded by the transport's call timeout.
    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let Some(config) = tls else {
                return Ok(TokioIo::new(Stream::Plain(tcp.call(uri).await?.into_inner())));
            };
            let name = server_name(uri.host().unwrap_or_default())?;
            let stream = tcp.call(uri).await?.into_inner();
            let stream = TlsConnector::from(config).connect(name, stream).await?;
            Ok(TokioIo::new(Stream::Tls(Box::new(stream))))
        })
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(stream) => stream.connected(),
            Stream::Tls(stream) => stream.get_ref().0.connected(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ip_names() {
        assert!(matches!(server_name("127.0.0.1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("consul.local"), Ok(ServerName::DnsName(_))));
    }

    #[test]
    fn tls_mismatches_get_a_hint() {
        let plain = explain("client error (Connect): received corrupt message of type InvalidContentType".into(), true);
        assert!(plain.contains("does not speak TLS"), "{plain}");
        let https = explain(format!("HTTP 400 Bad Request: {PLAIN_TO_HTTPS}."), false);
        assert!(https.contains("set kv.cacertfile"), "{https}");
        let refused = explain("connection error: received fatal alert: BadCertificate".into(), true);
        assert!(refused.contains("client certificate"), "{refused}");
        let hung_up = explain("client error (Canceled): operation was canceled: connection was not ready".into(), true);
        assert!(hung_up.contains("client certificate"), "{hung_up}");
        assert_eq!(explain("Connection refused".into(), true), "Connection refused");
    }

    #[test]
    fn unreadable_files_name_their_option() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles { ca: dir.path().join("ca.pem"), cert: dir.path().join("c"), key: dir.path().join("k") };
        let Err(KvError::Tls(message)) = client_config(&files) else { panic!("a missing CA file is an error") };
        assert!(message.contains("kv.cacertfile") && message.contains("ca.pem"), "{message}");
        std::fs::write(&files.ca, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").unwrap();
        std::fs::write(&files.cert, "not pem").unwrap();
        let Err(KvError::Tls(message)) = client_config(&files) else { panic!("a non-PEM file is an error") };
        assert!(message.contains("kv.certfile") && message.contains("not a PEM file"), "{message}");
    }
}
