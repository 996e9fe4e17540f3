//! Discovery URLs and the backend each one names.

use std::path::PathBuf;
use std::time::Duration;

use crate::entry::{parse_entries, Entry};
use crate::error::DiscoveryError;
use crate::file;
use crate::kv::{engines, Kind, KvConfig, Store, TlsFiles};

/// Where engines register below the URL's prefix unless `kv.path` says otherwise.
pub const DEFAULT_NODES_PATH: &str = "docker/swarm/nodes";
/// How long `fetch` waits for a store to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The stores a URL scheme can name; each one's scheme is [`Kind::scheme`].
const KV_KINDS: [Kind; 3] = [Kind::Consul, Kind::Etcd, Kind::Zk];

/// A configured discovery backend. [`Backend::watch`], which follows it,
/// is in `watch.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A fixed list (`h1:p,h2:p`, `nodes://...`, ranges); never changes.
    Static(Vec<Entry>),
    /// A file re-read on every heartbeat.
    File(PathBuf),
    /// A key-value store, watched for changes.
    Kv(KvConfig),
}

impl Backend {
    /// Parses a discovery URL without `--discovery-opt`s.
    pub fn parse(url: &str) -> Result<Backend, DiscoveryError> {
        Backend::parse_with_options(url, &[])
    }

    /// Parses a discovery URL and its `--discovery-opt k=v` options
    /// (`kv.path`, `kv.cacertfile`, `kv.certfile`, `kv.keyfile`).
    pub fn parse_with_options(url: &str, options: &[String]) -> Result<Backend, DiscoveryError> {
        let invalid = |reason: &str| DiscoveryError::InvalidUrl { url: url.to_string(), reason: reason.to_string() };
        let url = url.trim();
        if url.is_empty() {
            return Err(invalid("discovery is empty"));
        }
        match url.split_once("://") {
            None => Ok(Backend::Static(parse_entries(url)?)),
            Some(("nodes", rest)) => {
                let entries = parse_entries(rest)?;
                if entries.is_empty() {
                    return Err(invalid("no address after nodes://"));
                }
                Ok(Backend::Static(entries))
            }
            Some(("file", path)) => {
                if path.is_empty() {
                    return Err(invalid("no path after file://"));
                }
                Ok(Backend::File(PathBuf::from(path)))
            }
            Some(("token", _)) => Err(DiscoveryError::Unsupported(
                "token:// discovery is gone: Docker's hosted discovery service was shut down. \
                 Use consul://, etcd://, zk://, file:// or a static list (nodes://h1:p,h2:p)"
                    .to_string(),
            )),
            Some((scheme, rest)) => match KV_KINDS.into_iter().find(|kind| kind.scheme() == scheme) {
                Some(kind) => Ok(Backend::Kv(parse_kv(url, kind, rest, options)?)),
                None => Err(DiscoveryError::Unsupported(format!(
                    "unsupported discovery scheme {scheme:?} in {url:?}: \
                     use consul://, etcd://, zk://, file://, nodes:// or a comma-separated list of host:port"
                ))),
            },
        }
    }

    /// The current list of engines.
    pub async fn fetch(&self) -> Result<Vec<Entry>, DiscoveryError> {
        match self {
            Backend::Static(entries) => Ok(entries.clone()),
            Backend::File(path) => file::read(path).await,
            Backend::Kv(config) => {
                let store = Store::connect(config, FETCH_TIMEOUT).await?;
                Ok(engines(&store.list(&config.nodes_dir()).await?))
            }
        }
    }

    /// True when the list can change after start-up, so it must be polled.
    pub fn is_dynamic(&self) -> bool {
        !matches!(self, Backend::Static(_))
    }
}

/// Default client port of each store, used when the URL gives none.
fn default_port(kind: Kind) -> u16 {
    match kind {
        Kind::Consul => 8500,
        Kind::Etcd => 2379,
        Kind::Zk => 2181,
    }
}

/// `host[:port][,host[:port]...][/prefix]` after `consul://`, `etcd://` or `zk://`.
fn parse_kv(url: &str, kind: Kind, rest: &str, options: &[String]) -> Result<KvConfig, DiscoveryError> {
    let invalid = |reason: String| DiscoveryError::InvalidUrl { url: url.to_string(), reason };
    let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let mut endpoints = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        // A colon after any `]` (IPv6 literals are bracketed) starts the port.
        let with_port = if host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']')) {
            host.to_string()
        } else {
            format!("{host}:{}", default_port(kind))
        };
        let entry = Entry::parse(&with_port).map_err(|e| invalid(e.to_string()))?;
        endpoints.push(entry.to_string());
    }
    if endpoints.is_empty() {
        return Err(invalid(format!("no {} address (expected {}://host:port/prefix)", kind.scheme(), kind.scheme())));
    }
    let mut config = KvConfig {
        kind,
        endpoints,
        prefix: prefix.trim_matches('/').to_string(),
        path: DEFAULT_NODES_PATH.to_string(),
        tls: None,
    };
    let (mut ca, mut cert, mut key) = (None, None, None);
    for option in options {
        let (k, v) = option
            .split_once('=')
            .ok_or_else(|| invalid(format!("invalid --discovery-opt {option:?}: expected key=value")))?;
        match k {
            "kv.path" => config.path = v.trim_matches('/').to_string(),
            "kv.cacertfile" => ca = Some(PathBuf::from(v)),
            "kv.certfile" => cert = Some(PathBuf::from(v)),
            "kv.keyfile" => key = Some(PathBuf::from(v)),
            other => {
                return Err(invalid(format!(
                    "unsupported --discovery-opt {other:?} (supported: kv.path, kv.cacertfile, kv.certfile, kv.keyfile)"
                )))
            }
        }
    }
    config.tls = match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
        (None, None, None) => None,
        _ => {
            return Err(invalid(
                "TLS to the store needs all three of kv.cacertfile, kv.certfile and kv.keyfile".to_string(),
            ))
        }
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_static_forms() {
        let plain = Backend::parse("127.0.0.[11:13]:2375").unwrap();
        let nodes = Backend::parse("nodes://127.0.0.11:2375,127.0.0.12:2375,127.0.0.13:2375").unwrap();
        assert_eq!(plain, nodes);
        assert!(!plain.is_dynamic());
    }

    #[test]
    fn parses_file() {
        assert_eq!(Backend::parse("file:///tmp/cluster").unwrap(), Backend::File(PathBuf::from("/tmp/cluster")));
    }

    #[test]
    fn parses_kv_urls() {
        let Backend::Kv(c) = Backend::parse("consul://10.0.0.1:8500,10.0.0.2/nodes").unwrap() else { panic!() };
        assert_eq!(c.kind, Kind::Consul);
        assert_eq!(c.endpoints, ["10.0.0.1:8500", "10.0.0.2:8500"]);
        assert_eq!(c.nodes_dir(), "nodes/docker/swarm/nodes");
        let Backend::Kv(c) =
            Backend::parse_with_options("etcd://127.0.0.1:2379", &["kv.path=custom/dir".into()]).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.nodes_dir(), "custom/dir");
        let Backend::Kv(c) = Backend::parse("zk://h1,h2:2182/swarm").unwrap() else { panic!() };
        assert_eq!(c.endpoints, ["h1:2181", "h2:2182"]);
        let tls = ["kv.cacertfile=/ca".to_string(), "kv.certfile=/c".into(), "kv.keyfile=/k".into()];
        let Backend::Kv(c) = Backend::parse_with_options("etcd://h:1", &tls).unwrap() else { panic!() };
        assert!(c.tls.is_some());
    }

    #[test]
    fn rejects_bad_kv_urls() {
        for bad in ["consul://", "etcd://:99999", "zk:///prefix", "etcd://h:0"] {
            let err = Backend::parse(bad).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{err}");
        }
        let partial = Backend::parse_with_options("etcd://h:1", &["kv.cacertfile=/ca".into()]).unwrap_err();
        assert!(partial.to_string().contains("all three"), "{partial}");
        assert!(Backend::parse_with_options("etcd://h:1", &["kv.nope=1".into()]).is_err());
    }

    #[test]
    fn rejects_bad_urls_with_one_line() {
        for bad in ["", "foo://x", "token://abc", "nodes://", "file://", "host-without-port"] {
            let err = Backend::parse(bad).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{err}");
        }
        let token = Backend::parse("token://abc").unwrap_err().to_string();
        assert!(token.contains("consul://"), "{token}");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Discovery URLs: a known scheme (or none, or an unknown one) and text
    /// made of the characters host lists, ranges and prefixes use.
    fn url_like() -> impl Strategy<Value = String> {
        let scheme = prop_oneof![
            Just(""),
            Just("nodes://"),
            Just("file://"),
            Just("token://"),
            Just("consul://"),
            Just("etcd://"),
            Just("zk://"),
            Just("foo://"),
        ];
        (scheme, "[a-z0-9.:/,\\[\\] -]{0,40}").prop_map(|(scheme, rest)| format!("{scheme}{rest}"))
    }

    fn option_like() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("kv.path"),
            Just("kv.cacertfile"),
            Just("kv.certfile"),
            Just("kv.keyfile"),
            Just("kv.other"),
            Just(""),
        ];
        (key, prop::option::of("[a-z/=.]{0,12}")).prop_map(|(key, value)| match value {
            Some(value) => format!("{key}={value}"),
            None => key.to_string(),
        })
    }

    proptest! {
        /// Any URL and options give a backend or a one-line error.
        #[test]
        fn parse_never_panics(
            url in url_like(),
            options in prop::collection::vec(option_like(), 0..4),
        ) {
            match Backend::parse_with_options(&url, &options) {
                Ok(Backend::Kv(config)) => {
                    prop_assert!(!config.endpoints.is_empty());
                    for endpoint in &config.endpoints {
                        prop_assert!(Entry::parse(endpoint).is_ok(), "{}", endpoint);
                    }
                }
                Ok(Backend::Static(entries)) => prop_assert!(entries.len() <= crate::entry::MAX_ENTRIES),
                Ok(Backend::File(_)) => {}
                Err(e) => prop_assert!(!e.to_string().contains('\n'), "{}", e),
            }
        }

        #[test]
        fn parse_any_text(url in any::<String>(), options in prop::collection::vec(any::<String>(), 0..3)) {
            let _ = Backend::parse_with_options(&url, &options);
        }
    }
}
