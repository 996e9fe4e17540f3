//! Helpers that turn a failed store call into a message saying why.

use std::time::Duration;

/// An error and its sources, joined with `: `: transport errors often say
/// only "transport error" or "client error (Connect)" at the top and the
/// cause further down. A source whose text is already shown is skipped.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// Tries a TCP connection to each endpoint: `Ok` if one accepts, otherwise
/// each endpoint's error (e.g. `127.0.0.1:2379: Connection refused`).
/// Tells "nothing listens" apart from "something listens but does not
/// answer" after a call timed out.
pub(super) async fn tcp_probe(endpoints: &[String], timeout: Duration) -> Result<(), String> {
    let mut errors = Vec::new();
    for endpoint in endpoints {
        let host_port = endpoint.split_once("://").map_or(endpoint.as_str(), |(_, rest)| rest);
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(host_port)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => errors.push(format!("{endpoint}: {e}")),
            Err(_) => errors.push(format!("{endpoint}: no TCP connection within {timeout:?}")),
        }
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn chains_sources_without_repeating_them() {
        let refused = Layer("Connection refused", None);
        let connect = Layer("tcp connect error: Connection refused", Some(Box::new(refused)));
        let top = Layer("client error (Connect)", Some(Box::new(connect)));
        assert_eq!(error_chain(&top), "client error (Connect): tcp connect error: Connection refused");
    }

    #[tokio::test]
    async fn probe_reports_refused_ports() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = tcp_probe(&[format!("127.0.0.1:{port}")], Duration::from_secs(1)).await.unwrap_err();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
