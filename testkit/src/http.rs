//! Minimal HTTP/1.1 clients on std::net, for checks behind the back of the
//! code under test: one-shot requests and a keep-alive connection, over
//! plain TCP or TLS.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// How a client reaches a server: plain TCP, or TLS with a configuration.
#[derive(Clone, Default)]
pub enum Link {
    #[default]
    Plain,
    Tls(Arc<ClientConfig>),
}

/// A connection of either kind.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

impl Link {
    /// TLS as the Docker CLI does it with `DOCKER_CERT_PATH=dir`: trusts
    /// `dir/ca.pem`, presents `dir/cert.pem` with `dir/key.pem`.
    pub fn tls_from_dir(dir: &Path) -> io::Result<Link> {
        let invalid = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{what} in {}: {e}", dir.display()))
        };
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(dir.join("ca.pem")).map_err(|e| invalid("ca.pem", &e))? {
            roots.add(ca.map_err(|e| invalid("ca.pem", &e))?).map_err(|e| invalid("ca.pem", &e))?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
            .map_err(|e| invalid("cert.pem", &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("cert.pem", &e))?;
        let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).map_err(|e| invalid("key.pem", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS versions", &e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid("cert.pem/key.pem", &e))?;
        Ok(Link::Tls(Arc::new(config)))
    }

    /// The same link without TLS session resumption, so that every new
    /// connection does a full handshake.
    pub fn without_resumption(&self) -> Link {
        match self {
            Link::Plain => Link::Plain,
            Link::Tls(config) => {
                let mut config = ClientConfig::clone(config);
                config.resumption = rustls::client::Resumption::disabled();
                Link::Tls(Arc::new(config))
            }
        }
    }

    /// A connection to `addr` (`ip:port`), with nodelay and I/O timeouts.
    /// The TLS handshake happens with the first write.
    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<Box<dyn Stream>> {
        let sock: SocketAddr =
            addr.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        let stream = TcpStream::connect_timeout(&sock, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        match self {
            Link::Plain => Ok(Box::new(stream)),
            Link::Tls(config) => {
                let name = ServerName::IpAddress(sock.ip().into());
                let tls = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
                Ok(Box::new(StreamOwned::new(tls, stream)))
            }
        }
    }
}

/// One request on a fresh connection (`Connection: close`); returns the
/// status and the (de-chunked) body.
pub fn request(addr: &str, method: &str, path: &str, body: &[u8], timeout: Duration) -> io::Result<(u16, String)> {
    request_over(&Link::Plain, addr, method, path, body, timeout)
}

/// [`request`] over `link`.
pub fn request_over(
    link: &Link,
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let mut stream = link.connect(addr, timeout)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        // A TLS peer that closes without close_notify: the answer is complete
        // once the server closed, which is all `Connection: close` promises.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        other => {
            other?;
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line"))?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

/// `GET path` on a fresh connection.
pub fn get(addr: &str, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    request(addr, "GET", path, b"", timeout)
}

/// Retries [`get`] until it gets an answer or `within` has passed.
pub fn get_retry(addr: &str, path: &str, within: Duration) -> io::Result<(u16, String)> {
    let deadline = Instant::now() + within;
    loop {
        match get(addr, path, Duration::from_secs(1)) {
            Ok(r) => return Ok(r),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// I/O timeout of a [`Conn`].
const CONN_TIMEOUT: Duration = Duration::from_secs(30);

/// One persistent HTTP/1.1 connection; requests are sent one at a time.
pub struct Conn {
    /// `host:port` the connection goes to (and reconnects to when the server closes).
    addr: String,
    /// Plain or TLS, for reconnections too.
    link: Link,
    /// The open connection; replaced when the server announces `Connection: close`.
    stream: Box<dyn Stream>,
    /// I/O timeout of the connection and of its reconnections.
    timeout: Duration,
    /// Bytes read but not consumed yet (the start of the next response).
    buf: Vec<u8>,
    /// Body of the last response (de-chunked).
    body: Vec<u8>,
    /// Read buffer, reused across reads.
    scratch: Box<[u8; 65536]>,
}

impl Conn {
    /// Connects, panicking on failure.
    pub fn connect(addr: &str) -> Conn {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
    }

    /// Connects (with nodelay and 30 s I/O timeouts).
    pub fn try_connect(addr: &str) -> io::Result<Conn> {
        Self::connect_over(addr, Link::Plain)
    }

    /// Connects over `link` (with nodelay and 30 s I/O timeouts).
    pub fn connect_over(addr: &str, link: Link) -> io::Result<Conn> {
        Self::connect_within(addr, link, CONN_TIMEOUT)
    }

    /// Connects over `link` with nodelay and `timeout` on every read and
    /// write: a client that waits as long as the server may take.
    pub fn connect_within(addr: &str, link: Link, timeout: Duration) -> io::Result<Conn> {
        Ok(Conn {
            addr: addr.to_string(),
            stream: link.connect(addr, timeout)?,
            timeout,
            link,
            buf: Vec::with_capacity(1 << 20),
            body: Vec::with_capacity(1 << 20),
            scratch: Box::new([0; 65536]),
        })
    }

    /// Sends one request and reads the whole answer; returns the status.
    /// The body is in [`Conn::body`].
    pub fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<u16> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(body) = body {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.unwrap_or_default());
        self.stream.write_all(&out)?;
        let (status, close) = self.read_response(method == "HEAD")?;
        if close {
            self.stream = self.link.connect(&self.addr, self.timeout)?;
            self.buf.clear();
        }
        Ok(status)
    }

    /// GET that must answer 200; returns the body.
    pub fn get_ok(&mut self, path: &str) -> &[u8] {
        match self.request("GET", path, None) {
            Ok(200) => &self.body,
            Ok(status) => panic!(
                "GET {path} on {} answered {status}: {}",
                self.addr,
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            ),
            Err(e) => panic!("GET {path} on {} failed: {e}", self.addr),
        }
    }

    /// The body of the last response.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    fn fill(&mut self) -> io::Result<()> {
        let n = loop {
            match self.stream.read(&mut self.scratch[..]) {
                // A signal to the process (a child exiting) is not an answer.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => break read?,
            }
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-response"));
        }
        self.buf.extend_from_slice(&self.scratch[..n]);
        Ok(())
    }

    /// Position just after the next CRLF at or after `from`, reading more as needed.
    fn line_end(&mut self, from: usize) -> io::Result<usize> {
        let mut searched = from;
        loop {
            if let Some(i) = find(&self.buf[searched..], b"\r\n") {
                return Ok(searched + i + 2);
            }
            searched = self.buf.len().saturating_sub(1).max(from);
            self.fill()?;
        }
    }

    fn need(&mut self, len: usize) -> io::Result<()> {
        while self.buf.len() < len {
            self.fill()?;
        }
        Ok(())
    }

    /// Reads one response; returns its status and whether the server closes.
    fn read_response(&mut self, head_only: bool) -> io::Result<(u16, bool)> {
        self.body.clear();
        // Head.
        let mut searched = 0;
        let head_end = loop {
            if let Some(i) = find(&self.buf[searched..], b"\r\n\r\n") {
                break searched + i + 4;
            }
            searched = self.buf.len().saturating_sub(3);
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 head"))?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let mut pos = head_end;
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            // No body.
        } else if chunked {
            loop {
                let end = self.line_end(pos)?;
                let size_text = std::str::from_utf8(&self.buf[pos..end - 2]).unwrap_or("");
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                pos = end;
                if size == 0 {
                    // Trailers, up to an empty line.
                    loop {
                        let end = self.line_end(pos)?;
                        let empty = end - pos == 2;
                        pos = end;
                        if empty {
                            break;
                        }
                    }
                    break;
                }
                self.need(pos + size + 2)?;
                self.body.extend_from_slice(&self.buf[pos..pos + size]);
                pos += size + 2;
            }
        } else if let Some(length) = length {
            self.need(pos + length)?;
            self.body.extend_from_slice(&self.buf[pos..pos + length]);
            pos += length;
        } else {
            // Body delimited by the end of the connection.
            loop {
                match self.fill() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            self.body.extend_from_slice(&self.buf[pos..]);
            pos = self.buf.len();
            close = true;
        }
        self.buf.drain(..pos);
        Ok((status, close))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
