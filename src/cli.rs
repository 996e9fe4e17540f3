//! Command line, compatible with the original `swarm` binary.

use std::ffi::OsString;

use clap::{Arg, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::duration::GoDuration;

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
    Manage(Box<ManageArgs>),
    /// Join a docker cluster: register an engine in the discovery service.
    #[command(visible_alias = "j")]
    Join(JoinArgs),
    /// List the engines registered in the discovery service.
    #[command(visible_alias = "l")]
    List(ListArgs),
    /// Create a cluster token (gone: Docker's hosted token service was shut down).
    #[command(visible_alias = "c")]
    Create,
}

/// What `swarm create` answers: it asked Docker's hosted token service for a
/// cluster token, and that service no longer exists.
pub const CREATE_IS_GONE: &str = "swarm create is gone: Docker's hosted token discovery service was shut down. \
     Use consul://, etcd://, zk://, file://, nodes:// or a static list (h1:p,h2:p) as the discovery instead";

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
    #[arg(long, default_value = "60s", value_parser = GoDuration::parse)]
    pub heartbeat: GoDuration,
    /// Expiration of the registration; must exceed the heartbeat.
    #[arg(long, default_value = "180s", value_parser = GoDuration::parse)]
    pub ttl: GoDuration,
    /// Wait a random time up to this long before the first registration.
    #[arg(long, default_value = "0s", value_parser = GoDuration::parse)]
    pub delay: GoDuration,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// Flags of `swarm list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// How long to wait for the discovery service.
    #[arg(long, default_value = "10s", value_parser = GoDuration::parse)]
    pub timeout: GoDuration,
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
    #[arg(long, default_value = "60s", value_parser = GoDuration::parse)]
    pub heartbeat: GoDuration,
    /// Minimum time between two refreshes of an engine.
    #[arg(long = "engine-refresh-min-interval", default_value = "30s", value_parser = GoDuration::parse)]
    pub refresh_min: GoDuration,
    /// Maximum time between two refreshes of an engine.
    #[arg(long = "engine-refresh-max-interval", default_value = "60s", value_parser = GoDuration::parse)]
    pub refresh_max: GoDuration,
    /// Failed refreshes in a row before an engine is flagged unhealthy.
    #[arg(long = "engine-failure-retry", default_value_t = 3)]
    pub failure_retry: i64,
    /// The original's name for --engine-failure-retry; only its default (3) is accepted.
    #[arg(long = "engine-refresh-retry", default_value_t = 3, hide = true)]
    pub deprecated_refresh_retry: i64,
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
    #[arg(long = "replication-ttl", default_value = "2s", value_parser = GoDuration::parse)]
    pub replication_ttl: GoDuration,
    /// Address other managers reach this one at, for replication: ip:port or hostname:port.
    #[arg(long = "advertise", visible_alias = "addr", env = "SWARM_ADVERTISE")]
    pub advertise: Option<String>,
    /// Use TLS; implied by --tlsverify.
    #[arg(long)]
    pub tls: bool,
    /// Use TLS and verify the remote.
    #[arg(long)]
    pub tlsverify: bool,
    /// Trust only remotes providing a certificate signed by the CA given here.
    #[arg(long)]
    pub tlscacert: Option<String>,
    /// Path to TLS certificate file.
    #[arg(long)]
    pub tlscert: Option<String>,
    /// Path to TLS key file.
    #[arg(long)]
    pub tlskey: Option<String>,
    /// How long a client may take to send the headers of a request, and how
    /// long a kept-alive client connection may stay idle before its next one.
    #[arg(long = "client-header-timeout", default_value = "30s", value_parser = GoDuration::parse)]
    pub client_header_timeout: GoDuration,
    /// Most client connections served at once; further ones wait to be accepted.
    #[arg(long = "max-client-connections", default_value_t = 4096)]
    pub max_client_connections: usize,
    /// Largest JSON request body (in bytes) the manager reads itself (container,
    /// network, volume, service and node requests); a larger one gets a 413.
    #[arg(long = "max-json-body", default_value_t = 1 << 20)]
    pub max_json_body: usize,
    /// Directory of the desired-state file (node availability and labels)
    /// with static discovery; with a key-value store it is kept in the store.
    #[arg(long = "state-dir")]
    pub state_dir: Option<String>,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

impl Cli {
    /// Reads a command line the way the original's Go flag parser did: a long
    /// flag takes one dash or two, with its value after `=` or as the next
    /// item, whatever that item looks like (`--timeout -10s`).
    pub fn parse_go_style<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut command = values_may_start_with_a_dash(Cli::command());
        // Built, the subcommands carry the global flags and --help too.
        command.build();
        let argv = single_dash_longs_to_double(&command, argv.into_iter().map(Into::into).collect())
            .map_err(|message| command.error(clap::error::ErrorKind::InvalidValue, message))?;
        let mut matches = command.try_get_matches_from_mut(argv)?;
        Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
    }
}

/// Go's flag package gives an option the next item as its value whatever it
/// looks like; clap would take `-10s` for a flag of its own.
fn values_may_start_with_a_dash(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            if !arg.is_positional() && arg.get_action().takes_values() {
                arg.allow_hyphen_values(true)
            } else {
                arg
            }
        })
        .mut_subcommands(values_may_start_with_a_dash)
}

/// Rewrites `-name` and `-name=value` into `--name...` when `name` is a long
/// flag or alias of the command being read (built, so with the global flags):
/// Go accepts both forms, clap only the second. A one-letter item keeps its
/// short meaning unless a long flag has that name. The item after an option
/// that takes a value is its value and is passed as is, as is everything after `--`.
/// A switch given a value (`--tlsverify=true`, Go's syntax for booleans) is
/// written as the switch or left out; a value Go would refuse is an error.
fn single_dash_longs_to_double(root: &clap::Command, argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut command = root;
    let mut rewritten = Vec::with_capacity(argv.len());
    let mut items = argv.into_iter();
    rewritten.extend(items.next());
    while let Some(item) = items.next() {
        let Some(text) = item.to_str() else {
            rewritten.push(item);
            continue;
        };
        if text == "--" {
            rewritten.push(item);
            rewritten.extend(items.by_ref());
            break;
        }
        if text.len() < 2 || !text.starts_with('-') {
            if let Some(subcommand) = command.find_subcommand(text) {
                command = subcommand;
            }
            rewritten.push(item);
            continue;
        }
        let flag = WrittenFlag::read(command, text);
        if let (Some(arg), Some((name, value))) = (flag.switch(), text.split_once('=')) {
            match go_bool(value) {
                Some(true) => rewritten.push(format!("--{}", arg.get_long().unwrap_or_default()).into()),
                Some(false) => {}
                None => return Err(format!("invalid boolean value {value:?} for {name}: parse error")),
            }
            continue;
        }
        let awaits_value = flag.arg.is_some_and(|arg| arg.get_action().takes_values()) && !flag.value_attached;
        rewritten.push(flag.double_dashed.map_or(item, OsString::from));
        if awaits_value {
            rewritten.extend(items.next());
        }
    }
    Ok(rewritten)
}

/// A boolean as Go's `strconv.ParseBool` reads it.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A flag item as the user wrote it, matched against a command's flags.
struct WrittenFlag<'c> {
    /// The flag it names, when it names one.
    arg: Option<&'c Arg>,
    /// Whether the value is in the same item (`--name=value`, `-Hvalue`).
    value_attached: bool,
    /// The item with two dashes, when it was a long flag written with one.
    double_dashed: Option<String>,
}

impl<'c> WrittenFlag<'c> {
    /// The long switch (a flag without a value) this item names.
    fn switch(&self) -> Option<&'c Arg> {
        self.arg.filter(|arg| matches!(arg.get_action(), clap::ArgAction::SetTrue) && arg.get_long().is_some())
    }

    /// Reads `text`, an item of at least two characters starting with `-`.
    fn read(command: &'c clap::Command, text: &str) -> WrittenFlag<'c> {
        let (dashes, body) = match text.strip_prefix("--") {
            Some(body) => (2, body),
            None => (1, &text[1..]),
        };
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let long = command.get_arguments().find(|arg| {
            arg.get_long() == Some(name) || arg.get_all_aliases().is_some_and(|aliases| aliases.contains(&name))
        });
        if let Some(arg) = long {
            let double_dashed = (dashes == 1).then(|| format!("-{text}"));
            return WrittenFlag { arg: Some(arg), value_attached: value.is_some(), double_dashed };
        }
        if dashes == 2 {
            return WrittenFlag { arg: None, value_attached: value.is_some(), double_dashed: None };
        }
        let mut chars = body.chars();
        let short = chars.next().and_then(|letter| {
            command.get_arguments().find(|arg| {
                arg.get_short() == Some(letter)
                    || arg.get_all_short_aliases().is_some_and(|aliases| aliases.contains(&letter))
            })
        });
        WrittenFlag { arg: short, value_attached: !chars.as_str().is_empty(), double_dashed: None }
    }
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
                    let overcommit = value.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                        format!("invalid --cluster-opt {opt:?}: overcommit must be a number above -1")
                    })?;
                    if overcommit <= -1.0 {
                        // Go's %f: six decimals.
                        return Err(format!("swarm.overcommit should be larger than -1, {overcommit:.6} is invalid"));
                    }
                    parsed.overcommit = overcommit;
                }
                "swarm.createretry" => {
                    let create_retry = value
                        .parse::<i64>()
                        .map_err(|_| format!("invalid --cluster-opt {opt:?}: createretry must be a whole number"))?;
                    if create_retry < 0 {
                        return Err(format!("swarm.createretry can not be negative, {create_retry} is invalid"));
                    }
                    parsed.create_retry = u32::try_from(create_retry)
                        .map_err(|_| format!("invalid --cluster-opt {opt:?}: createretry is too large"))?;
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

    /// The command line clap is given for `argv` (after `swarm`).
    fn rewritten(argv: &[&str]) -> Vec<String> {
        let mut command = values_may_start_with_a_dash(Cli::command());
        command.build();
        let argv = std::iter::once("swarm").chain(argv.iter().copied()).map(OsString::from).collect();
        single_dash_longs_to_double(&command, argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn parsed(argv: &[&str]) -> Cli {
        Cli::parse_go_style(std::iter::once("swarm").chain(argv.iter().copied())).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn single_dash_long_flags_get_two() {
        assert_eq!(
            rewritten(&[
                "-l",
                "debug",
                "-experimental",
                "manage",
                "-H",
                "127.0.0.1:4000",
                "--heartbeat=1s",
                "nodes://h:1"
            ]),
            ["-l", "debug", "--experimental", "manage", "-H", "127.0.0.1:4000", "--heartbeat=1s", "nodes://h:1"]
        );
        assert_eq!(
            rewritten(&["manage", "-cluster-opt", "swarm.createretry=1", "-heartbeat=5s", "-cors", "-addr", "h:1"]),
            ["manage", "--cluster-opt", "swarm.createretry=1", "--heartbeat=5s", "--cors", "--addr", "h:1"]
        );
        // Global flags after the command, and the ones clap adds.
        assert_eq!(
            rewritten(&["list", "-debug", "-log-level=warn", "-help"]),
            ["list", "--debug", "--log-level=warn", "--help"]
        );
        assert_eq!(rewritten(&["-version"]), ["--version"]);
    }

    #[test]
    fn switches_take_go_boolean_values() {
        assert_eq!(
            rewritten(&["manage", "--tlsverify=true", "-replication=1", "--cors=false", "-debug=F", "h:1"]),
            ["manage", "--tlsverify", "--replication", "h:1"]
        );
        let err = Cli::parse_go_style(["swarm", "manage", "--tls=yes", "h:1"]).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("invalid boolean value \"yes\" for --tls: parse error"), "{err}");
    }

    #[test]
    fn short_flags_keep_their_meaning() {
        assert_eq!(
            rewritten(&["manage", "-c", "swarm", "-f", "health", "-H=:4000", "-Htcp://h:1", "-v"]),
            ["manage", "-c", "swarm", "-f", "health", "-H=:4000", "-Htcp://h:1", "-v"]
        );
    }

    #[test]
    fn values_are_never_rewritten() {
        // `-strategy` is a flag's name, but here it is --advertise's value.
        assert_eq!(
            rewritten(&["join", "-advertise", "-strategy", "-ttl", "-10s"]),
            ["join", "--advertise", "-strategy", "--ttl", "-10s"]
        );
        assert_eq!(rewritten(&["manage", "-H", "-heartbeat"]), ["manage", "-H", "-heartbeat"]);
        // After `--`, and flags of another command (`-ttl` is join's, not manage's).
        assert_eq!(rewritten(&["manage", "-ttl", "--", "-heartbeat"]), ["manage", "-ttl", "--", "-heartbeat"]);
        // Unknown single-dash items are left for clap to refuse.
        assert_eq!(rewritten(&["manage", "-nope=1", "-10s"]), ["manage", "-nope=1", "-10s"]);
    }

    #[test]
    fn parses_go_style_command_lines() {
        let cli =
            parsed(&["-l", "debug", "-experimental", "m", "-H", "127.0.0.1:4000", "-heartbeat", "1s", "nodes://h:1"]);
        assert!(cli.experimental);
        assert_eq!(cli.log_level, "debug");
        let Some(Command::Manage(manage)) = cli.command else { panic!("not manage") };
        assert_eq!(manage.hosts, ["127.0.0.1:4000"]);
        assert_eq!(manage.heartbeat, GoDuration::parse("1s").unwrap());
        assert_eq!(manage.discovery.url.as_deref(), Some("nodes://h:1"));

        let Some(Command::List(list)) = parsed(&["list", "--timeout", "-10s", "nodes://h:1"]).command else {
            panic!("not list")
        };
        assert_eq!(list.timeout, GoDuration::parse("-10s").unwrap());

        let Some(Command::Join(join)) = parsed(&["join", "-delay=-30s", "-advertise=", "etcd://h:1"]).command else {
            panic!("not join")
        };
        assert_eq!(join.delay, GoDuration::parse("-30s").unwrap());
        assert_eq!(join.advertise.as_deref(), Some(""));

        assert!(matches!(parsed(&["c"]).command, Some(Command::Create)));
        assert!(Cli::parse_go_style(["swarm", "manage", "-nope", "nodes://h:1"]).is_err());
    }

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
        assert_eq!(
            ClusterOpts::parse(&["swarm.overcommit=-1".into()]),
            Err("swarm.overcommit should be larger than -1, -1.000000 is invalid".into())
        );
        assert_eq!(ClusterOpts::parse(&["swarm.overcommit=-0.5".into()]).map(|o| o.overcommit), Ok(-0.5));
        assert_eq!(
            ClusterOpts::parse(&["swarm.createretry=-1".into()]),
            Err("swarm.createretry can not be negative, -1 is invalid".into())
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn cluster_opt() -> impl Strategy<Value = String> {
        let key = prop_oneof![Just("swarm.overcommit"), Just("swarm.createretry"), Just("swarm.other"), Just("")];
        let value = prop_oneof![
            "-?[0-9]{0,22}(\\.[0-9]{0,4})?(e[0-9]{1,3})?",
            Just("NaN".to_string()),
            Just("inf".to_string()),
            any::<String>(),
        ];
        (key, prop::option::of(value)).prop_map(|(key, value)| match value {
            Some(value) => format!("{key}={value}"),
            None => key.to_string(),
        })
    }

    /// Command-line items: the manager's flags with one or two dashes, with
    /// and without values, and odd items.
    fn argv_item() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "manage",
                "join",
                "list",
                "create",
                "c",
                "-H",
                "--host",
                "-host",
                "--strategy",
                "-filter",
                "--heartbeat",
                "-heartbeat=",
                "--cluster-opt",
                "-discovery-opt",
                "--tlsverify=",
                "-tlsverify",
                "--replication",
                "--advertise",
                "-addr",
                "--timeout",
                "--delay",
                "--",
                "-",
                "-=",
                "--=x",
            ])
            .prop_map(str::to_string),
            "-{1,2}[a-z-]{1,12}(=[a-z0-9:/.-]{0,8})?",
            "[a-z0-9:/.=-]{0,12}",
            any::<String>(),
        ]
    }

    proptest! {
        /// Any `--cluster-opt`s give options or an error; accepted ones are
        /// in range.
        #[test]
        fn cluster_opts_never_panic(opts in prop::collection::vec(cluster_opt(), 0..4)) {
            if let Ok(parsed) = ClusterOpts::parse(&opts) {
                prop_assert!(parsed.overcommit.is_finite() && parsed.overcommit > -1.0);
            }
        }

        #[test]
        fn addresses_never_panic(text in "(tcp://|unix://|http://)?[a-z0-9:.\\[\\]/ ]{0,20}", any_text in any::<String>()) {
            for t in [&text, &any_text] {
                let _ = Listen::parse(t);
                if let Ok(advertised) = parse_advertise(t) {
                    prop_assert_eq!(parse_advertise(&advertised), Ok(advertised.clone()));
                }
            }
        }
    }

    proptest! {
        // Building clap's command for each case is slow in debug builds.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any command line parses or is a clap error; none panics.
        #[test]
        fn command_lines_never_panic(items in prop::collection::vec(argv_item(), 0..6)) {
            let _ = Cli::parse_go_style(std::iter::once("swarm".to_string()).chain(items));
        }
    }
}
