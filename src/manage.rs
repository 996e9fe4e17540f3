//! `swarm manage`: validates the flags, wires the cluster, the scheduler,
//! the election and the API together, and serves until a signal.
//!
//! [`Manager`] is the same wiring started in-process on a listener the
//! caller bound, which is how the fast test layer runs whole managers in
//! front of fake engines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use swarm_leadership::Leadership;
use swarm_proxy::{TlsConfigs, TlsFiles};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{self, Api, ClientLimits};
use crate::cli::{self, Cli, ClusterOpts, Command, Listen, ManageArgs};
use crate::cluster::monitor::MonitorConfig;
use crate::cluster::{lost_creates, Cluster, PlacementPolicy};
use crate::metrics::Metrics;
use crate::observe::Observed;
use crate::state::backend::{Backend, FileBackend, KvBackend};
use crate::state::DesiredState;
use crate::{cert_reload, reconcile, replication, reschedule};

/// What `swarm manage` was asked to do, validated.
struct Settings {
    listen: Vec<Listen>,
    backend: swarm_discovery::Backend,
    heartbeat: Duration,
    policy: PlacementPolicy,
    monitor: MonitorConfig,
    cors: bool,
    /// `Some((store, advertise))` with `--replication`.
    replication: Option<(swarm_discovery::kv::KvConfig, String)>,
    replication_ttl: Duration,
    /// With `--tls` or `--tlsverify`: the configurations of the API
    /// listeners and of the connections to engines and to the primary.
    tls: Option<Arc<TlsConfigs>>,
    /// `--state-dir`: where the desired state is kept with static discovery.
    state_dir: Option<std::path::PathBuf>,
    limits: ClientLimits,
}

impl Settings {
    /// Checks the flags in the original's order, with its messages.
    fn from_args(args: ManageArgs) -> Result<Settings, String> {
        let tls = tls_configs(&args)?;
        let refresh_min = args
            .refresh_min
            .to_std()
            .filter(|min| !min.is_zero())
            .ok_or("min refresh interval should be a positive number")?;
        let refresh_max = args
            .refresh_max
            .to_std()
            .filter(|max| *max >= refresh_min)
            .ok_or("max refresh interval cannot be less than min refresh interval")?;
        if args.deprecated_refresh_retry != 3 {
            return Err("--engine-refresh-retry is deprecated. Use --engine-failure-retry".into());
        }
        let failure_retry =
            u32::try_from(args.failure_retry).ok().filter(|n| *n > 0).ok_or("invalid failure retry count")?;
        args.discovery.url("manage")?;
        let heartbeat = args
            .heartbeat
            .to_std()
            .filter(|hb| *hb >= Duration::from_secs(1))
            .ok_or("--heartbeat should be at least one second")?;
        let backend = args.discovery.backend("manage")?;
        if args.cluster_driver != "swarm" {
            return Err(format!("unsupported cluster driver {:?} (only \"swarm\")", args.cluster_driver));
        }
        let opts = ClusterOpts::parse(&args.cluster_opts)?;
        let policy = PlacementPolicy::new(&args.strategy, &args.filters, opts, failure_retry)?;
        let listen: Vec<Listen> = args.hosts.iter().map(|h| Listen::parse(h)).collect::<Result<_, _>>()?;
        let limits = ClientLimits {
            header_timeout: args
                .client_header_timeout
                .to_std()
                .filter(|t| !t.is_zero())
                .ok_or("--client-header-timeout should be a positive duration")?,
            max_connections: Some(args.max_client_connections)
                .filter(|n| *n > 0)
                .ok_or("--max-client-connections should be at least 1")?,
            max_json_body: args.max_json_body,
        };
        let (replication, replication_ttl) = if args.replication {
            let advertise = args
                .advertise
                .as_deref()
                .filter(|a| !a.is_empty())
                .ok_or("--advertise address must be provided when using --leader-election")?;
            let advertise = cli::parse_advertise(advertise)?;
            let ttl = args
                .replication_ttl
                .to_std()
                .filter(|ttl| !ttl.is_zero())
                .ok_or("--replication-ttl should be a positive number")?;
            if ttl < Duration::from_millis(500) {
                return Err("--replication-ttl should be at least 500ms".into());
            }
            let swarm_discovery::Backend::Kv(kv) = &backend else {
                return Err("Leader election is only supported with consul, etcd and zookeeper discovery.".into());
            };
            (Some((kv.clone(), advertise)), ttl)
        } else {
            // As in the original, --replication-ttl is not validated without
            // --replication; it still sets how long a replica waits for a
            // failover when the caller runs the election (`Manager::start`).
            (None, args.replication_ttl.to_std().unwrap_or(Duration::ZERO))
        };
        Ok(Settings {
            listen,
            backend,
            heartbeat,
            policy,
            monitor: MonitorConfig { refresh_min, refresh_max, failure_retry },
            cors: args.cors,
            replication,
            replication_ttl,
            tls,
            state_dir: args.state_dir.filter(|d| !d.is_empty()).map(Into::into),
            limits,
        })
    }
}

/// Loads the certificates of `--tls`/`--tlsverify`, checked as the original did.
fn tls_configs(args: &ManageArgs) -> Result<Option<Arc<TlsConfigs>>, String> {
    if !args.tls && !args.tlsverify {
        if args.tlscert.is_some() || args.tlskey.is_some() || args.tlscacert.is_some() {
            return Err("--tlscert, --tlskey and --tlscacert require the use of either --tls or --tlsverify".into());
        }
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&args.tlscert, &args.tlskey) else {
        return Err("--tlscert and --tlskey must be provided when using --tls".into());
    };
    // As in the original, the CA is read only when peers are verified.
    let ca = match (args.tlsverify, &args.tlscacert) {
        (true, None) => return Err("--tlscacert must be provided when using --tlsverify".into()),
        (true, Some(ca)) => Some(ca.into()),
        (false, _) => None,
    };
    let files = TlsFiles { cert: cert.into(), key: key.into(), ca };
    let configs = TlsConfigs::load(files).map_err(|e| e.to_string())?;
    Ok(Some(Arc::new(configs)))
}

/// A running manager: the cluster following discovery, rescheduling, and
/// the API on its listeners. Dropping it stops all of it.
pub struct Manager {
    /// Where the API answers (the first listener, for in-process use).
    addr: Option<SocketAddr>,
    /// The tasks the manager runs; aborted on drop.
    tasks: Vec<JoinHandle<()>>,
}

impl Manager {
    /// Starts a manager in-process from the flags of `swarm manage` (without
    /// `-H`: it serves on `listener`). With `leadership`, it is one of a
    /// replicated set whose election the caller runs (for example on an
    /// in-memory lock store).
    pub async fn start(
        args: &[&str],
        listener: tokio::net::TcpListener,
        leadership: Option<Arc<Leadership>>,
    ) -> Result<Manager, String> {
        let cli = Cli::parse_go_style(["swarm", "manage"].into_iter().chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        let Some(Command::Manage(args)) = cli.command else {
            return Err("not a manage command line".into());
        };
        let settings = Settings::from_args(*args)?;
        let addr = listener.local_addr().ok();
        let (api, mut tasks) = wire(&settings, leadership, None, Arc::new(Metrics::new()))?;
        tasks.push(tokio::spawn(api::accept_all(api, vec![api::Listener::Tcp(listener)])));
        Ok(Manager { addr, tasks })
    }

    /// The address the API answers on.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Where the desired state lives: in the discovery store when there is
/// one, else in the state file with `--state-dir`, else in memory (lost
/// with the process).
fn state_backend(settings: &Settings) -> Result<Backend, String> {
    match (&settings.backend, &settings.state_dir) {
        (swarm_discovery::Backend::Kv(config), _) => Ok(Backend::Kv(Box::new(KvBackend::new(config.clone())))),
        (_, Some(dir)) => Ok(Backend::File(FileBackend::open(dir).map_err(|e| e.to_string())?)),
        (_, None) => Ok(Backend::memory()),
    }
}

/// Builds the cluster and the API, and starts discovery, rescheduling and,
/// with TLS, the certificate reloads (also on every value of `hangups`).
/// Everything counts in `metrics`, this manager's own.
fn wire(
    settings: &Settings,
    leadership: Option<Arc<Leadership>>,
    hangups: Option<mpsc::Receiver<()>>,
    metrics: Arc<Metrics>,
) -> Result<(Arc<Api>, Vec<JoinHandle<()>>), String> {
    let state = DesiredState::new(state_backend(settings)?, metrics.clone());
    let mut tasks = Vec::new();
    if let Some(tls) = &settings.tls {
        if !tls.verifies_peers() {
            Observed::TlsPeersUnverified.emit();
        }
        tasks.push(tokio::spawn(cert_reload::run(tls.clone(), hangups)));
    }
    let cluster = Cluster::new(settings.monitor, settings.policy.clone(), settings.tls.clone(), state, metrics.clone());
    let discovery = tokio::spawn(cluster.clone().run_discovery(settings.backend.clone(), settings.heartbeat));
    let rescheduling = tokio::spawn(reschedule::run(cluster.clone(), leadership.clone()));
    let reconciling = tokio::spawn(reconcile::run(cluster.clone(), leadership.clone()));
    let sweeping = tokio::spawn({
        let leadership = leadership.clone();
        lost_creates::sweep(cluster.clone(), move || reconcile::primary_term(leadership.as_deref()).is_some())
    });
    tasks.extend([discovery, rescheduling, reconciling, sweeping]);
    let api = Arc::new(Api {
        cluster,
        cors: settings.cors,
        leadership,
        // Long enough for the TTL path of a failover, plus an election.
        failover_wait: settings.replication_ttl + Duration::from_secs(2),
        primaries: parking_lot::Mutex::new(HashMap::new()),
        tls: settings.tls.clone(),
        limits: settings.limits,
        metrics,
    });
    Ok((api, tasks))
}

/// `swarm manage` as a command: serves until SIGINT or SIGTERM.
pub(crate) async fn run(args: ManageArgs) -> Result<(), String> {
    let settings = Settings::from_args(args)?;
    let (stop_election, stop_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let (leadership, election) = match &settings.replication {
        Some((kv, advertise)) => {
            let (leadership, task) =
                replication::start(kv, advertise, settings.replication_ttl, stop_rx, metrics.clone());
            (Some(leadership), Some(task))
        }
        None => (None, None),
    };
    let hangups = match settings.tls {
        Some(_) => Some(cert_reload::hangups().map_err(|e| format!("cannot handle SIGHUP: {e}"))?),
        None => None,
    };
    let (api, _tasks) = wire(&settings, leadership, hangups, metrics)?;
    let listeners = api::bind(&settings.listen).await?;
    tokio::select! {
        _ = api::accept_all(api, listeners) => {}
        _ = crate::shutdown_signal() => {}
    }
    // A primary gives the lock up before exiting, so a replica takes over at once.
    stop_election.send_replace(true);
    if let Some(election) = election {
        let _ = tokio::time::timeout(Duration::from_secs(2), election).await;
    }
    for l in &settings.listen {
        if let Listen::Unix(path) = l {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}
