//! Command line, compatible with the original `swarm` binary.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The version string `swarm --version` prints.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Parser)]
#[command(
    name = "swarm",
    about = "A Docker-native clustering system",
    version = VERSION,
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version and exit.
    #[arg(short = 'v', long = "version", global = true)]
    pub version: bool,
    /// Debug mode (same as --log-level debug).
    #[arg(long, global = true, env = "DEBUG")]
    pub debug: bool,
    /// Log level (debug, info, warn, error, fatal, panic).
    #[arg(short = 'l', long = "log-level", global = true, default_value = "info")]
    pub log_level: String,
    /// Log format: text (logrus's: short on a terminal, key=value otherwise) or json (one object per line).
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    pub log_format: crate::logging::LogFormat,
    /// Run with experimental features (accepted for compatibility).
    #[arg(long, global = true)]
    pub experimental: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage a docker cluster.
    #[command(visible_alias = "m")]
    Manage(ManageArgs),
    /// Join a docker cluster: register an engine in the discovery service.
    #[command(visible_alias = "j")]
    Join(JoinArgs),
    /// List the engines registered in the discovery service.
    #[command(visible_alias = "l")]
    List(ListArgs),
}

/// Where the discovery service is, for every command that uses one.
#[derive(Debug, Args)]
pub struct DiscoveryArgs {
    /// Discovery options (kv.path, kv.cacertfile, kv.certfile, kv.keyfile).
    #[arg(long = "discovery-opt")]
    pub opts: Vec<String>,
    /// Discovery URL (or SWARM_DISCOVERY).
    #[arg(env = "SWARM_DISCOVERY")]
    pub url: Option<String>,
}

impl DiscoveryArgs {
    /// The discovery URL, or the original's message for `command` without one.
    pub fn url(&self, command: &str) -> Result<&str, String> {
        self.url
            .as_deref()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| format!("discovery required to {command} a cluster. See 'swarm {command} --help'."))
    }

    /// The configured backend.
    pub fn backend(&self, command: &str) -> Result<swarm_discovery::Backend, String> {
        swarm_discovery::Backend::parse_with_options(self.url(command)?, &self.opts).map_err(|e| e.to_string())
    }
}

/// Flags of `swarm join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Address of the engine to register: ip:port or hostname:port.
    #[arg(long = "advertise", visible_alias = "addr", env = "SWARM_ADVERTISE")]
    pub advertise: Option<String>,
    /// Period of the registration refresh.
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
    pub heartbeat: Duration,
    /// Expiration of the registration; must exceed the heartbeat.
    #[arg(long, default_value = "180s", value_parser = crate::duration::parse)]
    pub ttl: Duration,
    /// Wait a random time up to this long before the first registration.
    #[arg(long, default_value = "0s", value_parser = crate::duration::parse)]
    pub delay: Duration,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// Flags of `swarm list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// How long to wait for the discovery service.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse)]
    pub timeout: Duration,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// Flags of `swarm manage`.
#[derive(Debug, Args)]
pub struct ManageArgs {
    /// Address(es) to listen on: tcp://ip:port or unix:///path.
    #[arg(
        short = 'H',
        long = "host",
        env = "SWARM_HOST",
        default_value = "tcp://127.0.0.1:2375",
        value_delimiter = ','
    )]
    pub hosts: Vec<String>,
    /// Scheduler strategy: spread, binpack or random.
    #[arg(long, default_value = "spread")]
    pub strategy: String,
    /// Scheduler filter (repeatable; replaces the default set and fixes the order).
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Period of the discovery polling.
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
    pub heartbeat: Duration,
    /// Minimum time between two refreshes of an engine.
    #[arg(long = "engine-refresh-min-interval", default_value = "30s", value_parser = crate::duration::parse)]
    pub refresh_min: Duration,
    /// Maximum time between two refreshes of an engine.
    #[arg(long = "engine-refresh-max-interval", default_value = "60s", value_parser = crate::duration::parse)]
    pub refresh_max: Duration,
    /// Failed refreshes in a row before an engine is flagged unhealthy.
    #[arg(long = "engine-failure-retry", default_value_t = 3)]
    pub failure_retry: u32,
    /// Add CORS headers to the remote API.
    #[arg(long = "api-enable-cors", visible_alias = "cors")]
    pub cors: bool,
    /// Cluster driver options (swarm.overcommit=0.05, swarm.createretry=0).
    #[arg(long = "cluster-opt")]
    pub cluster_opts: Vec<String>,
    /// Cluster driver (only "swarm").
    #[arg(short = 'c', long = "cluster-driver", default_value = "swarm")]
    pub cluster_driver: String,
    /// Replicate the manager: one primary, elected through the discovery store; the others relay to it.
    #[arg(long)]
    pub replication: bool,
    /// How long the store keeps a silent primary's lock; a primary that cannot
    /// renew for two thirds of it steps down (Consul: TTL of the lock's health
    /// check; etcd: lease TTL, at least 2s; ZooKeeper: session timeout, bounded by the server).
    #[arg(long = "replication-ttl", default_value = "2s", value_parser = crate::duration::parse)]
    pub replication_ttl: Duration,
    /// Address other managers reach this one at, for replication: ip:port or hostname:port.
    #[arg(long = "advertise", visible_alias = "addr", env = "SWARM_ADVERTISE")]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// Checks an `--advertise` value: `ip:port` or `hostname:port`.
pub fn parse_advertise(text: &str) -> Result<String, String> {
    let bad = || "--advertise should be of the form ip:port or hostname:port".to_string();
    let entry = swarm_discovery::Entry::parse(text).map_err(|_| bad())?;
    if entry.host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(entry.to_string())
}

/// A listening address from `-H`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(String),
    Unix(String),
}

impl Listen {
    /// Parses `tcp://ip:port`, `unix:///path`, `ip:port` or `:port`.
    pub fn parse(text: &str) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("invalid listen address {text:?}: no socket path"));
            }
            return Ok(Listen::Unix(path.to_string()));
        }
        let addr = text.strip_prefix("tcp://").unwrap_or(text);
        if text.contains("://") && !text.starts_with("tcp://") {
            return Err(format!("invalid listen address {text:?}: use tcp://ip:port or unix:///path"));
        }
        let addr = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.to_string() };
        match addr.parse::<std::net::SocketAddr>() {
            Ok(_) => Ok(Listen::Tcp(addr)),
            Err(_) => Err(format!("invalid listen address {text:?}: use tcp://ip:port or unix:///path")),
        }
    }
}

/// Options given with `--cluster-opt`, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterOpts {
    /// Fraction added to each engine's CPUs and memory for scheduling.
    pub overcommit: f64,
    /// How many other nodes a failed create is retried on.
    pub create_retry: u32,
}

impl ClusterOpts {
    pub fn parse(opts: &[String]) -> Result<ClusterOpts, String> {
        let mut parsed = ClusterOpts { overcommit: 0.05, create_retry: 0 };
        for opt in opts {
            let (key, value) =
                opt.split_once('=').ok_or_else(|| format!("invalid --cluster-opt {opt:?}: expected key=value"))?;
            match key {
                "swarm.overcommit" => {
                    parsed.overcommit =
                        value.parse::<f64>().ok().filter(|v| v.is_finite() && *v > -1.0).ok_or_else(|| {
                            format!("invalid --cluster-opt {opt:?}: overcommit must be a number above -1")
                        })?
                }
                "swarm.createretry" => {
                    parsed.create_retry = value
                        .parse::<u32>()
                        .map_err(|_| format!("invalid --cluster-opt {opt:?}: createretry must be a whole number"))?
                }
                _ => {
                    return Err(format!(
                        "unsupported --cluster-opt {key:?} (supported: swarm.overcommit, swarm.createretry)"
                    ))
                }
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(Listen::parse("tcp://0.0.0.0:4000").unwrap(), Listen::Tcp("0.0.0.0:4000".into()));
        assert_eq!(Listen::parse(":4000").unwrap(), Listen::Tcp("0.0.0.0:4000".into()));
        assert_eq!(Listen::parse("unix:///tmp/s.sock").unwrap(), Listen::Unix("/tmp/s.sock".into()));
        assert!(Listen::parse("http://x:1").is_err());
        assert!(Listen::parse("tcp://nohost").is_err());
    }

    #[test]
    fn checks_advertise() {
        assert_eq!(parse_advertise("10.0.0.1:2375").unwrap(), "10.0.0.1:2375");
        assert_eq!(parse_advertise("node1:2375").unwrap(), "node1:2375");
        for bad in ["10.0.0.1", ":2375", "h:x", ""] {
            assert!(parse_advertise(bad).unwrap_err().contains("ip:port or hostname:port"));
        }
    }

    #[test]
    fn parses_cluster_opts() {
        let opts = ClusterOpts::parse(&["swarm.overcommit=0.1".into(), "swarm.createretry=2".into()]).unwrap();
        assert_eq!(opts.overcommit, 0.1);
        assert_eq!(opts.create_retry, 2);
        assert!(ClusterOpts::parse(&["swarm.overcommit=x".into()]).is_err());
        assert!(ClusterOpts::parse(&["nope=1".into()]).is_err());
        assert!(ClusterOpts::parse(&["novalue".into()]).is_err());
    }
}
