//! A fleet: many hollow engines served by one process, each on its own
//! listening address, plus the churn that can run on them.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::churn::{self, ChurnConfig};
use crate::clock;
use crate::engine::{Counters, Engine, Population, Shared};
use crate::events::DEFAULT_HISTORY;
use crate::fixtures::templates;
use crate::ids::Id;
use crate::model::{sorted_labels, Image, Spec};
use crate::server;

/// How to make a fleet. Start from [`FleetConfig::new`] (or `default()`)
/// and change what the bench needs.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// One engine per address; port 0 picks a free port ([`Fleet::addrs`]
    /// tells which). See [`loopback_ips`] and [`consecutive_ports`].
    pub addrs: Vec<SocketAddr>,
    /// Containers each engine starts with (default 30).
    pub containers_per_engine: usize,
    /// Of those, how many are running (default 20); the others exited.
    pub running_per_engine: usize,
    /// Added to every answer but the events stream (default 0). Models a
    /// busy dockerd: a real one takes about a millisecond for `/info`.
    pub latency: Duration,
    /// Engine labels (`/info`'s `Labels`), the same on every engine.
    pub labels: Vec<(String, String)>,
    /// Labels of the pre-populated and churned containers (default `app=hollow`).
    pub container_labels: Vec<(String, String)>,
    /// `NCPU` of every engine (default 2).
    pub ncpu: u32,
    /// `MemTotal` of every engine, bytes (default 2 GiB).
    pub mem_total: u64,
    /// Engines are named `<prefix>-0001`, `<prefix>-0002`, … (default `hollow`).
    pub name_prefix: String,
    /// Images every engine has, `name:tag` (default `busybox:latest`, with
    /// the ID of the captured real one). Creates of any other image get
    /// dockerd's `No such image`.
    pub images: Vec<String>,
    /// Events each engine keeps for `since` (default 256, as dockerd).
    pub event_history: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            addrs: Vec::new(),
            containers_per_engine: 30,
            running_per_engine: 20,
            latency: Duration::ZERO,
            labels: Vec::new(),
            container_labels: vec![("app".to_string(), "hollow".to_string())],
            ncpu: 2,
            mem_total: 2 << 30,
            name_prefix: "hollow".to_string(),
            images: vec!["busybox:latest".to_string()],
            event_history: DEFAULT_HISTORY,
        }
    }
}

impl FleetConfig {
    /// The defaults, one engine per address.
    pub fn new(addrs: Vec<SocketAddr>) -> FleetConfig {
        FleetConfig { addrs, ..FleetConfig::default() }
    }
}

/// `n` addresses on distinct loopback IPs from 127.1.0.1 on, all on
/// `port`: `127.1.0.1:port`, `127.1.0.2:port`, … Linux answers on all of
/// 127.0.0.0/8 without any setup. Panics past 127.255.255.255.
pub fn loopback_ips(n: usize, port: u16) -> Vec<SocketAddr> {
    loopback_ips_from(Ipv4Addr::new(127, 1, 0, 1), n, port)
}

/// `n` addresses on consecutive IPs from `first` on, all on `port`.
/// Panics when they would leave 127.0.0.0/8.
pub fn loopback_ips_from(first: Ipv4Addr, n: usize, port: u16) -> Vec<SocketAddr> {
    let first = u32::from(first);
    (0..n)
        .map(|i| {
            let ip = u32::try_from(i).ok().and_then(|i| first.checked_add(i)).map(Ipv4Addr::from);
            match ip {
                Some(ip) if ip.is_loopback() => SocketAddr::new(IpAddr::V4(ip), port),
                _ => panic!("{n} addresses from {} leave 127.0.0.0/8", Ipv4Addr::from(first)),
            }
        })
        .collect()
}

/// `n` addresses on `ip` with consecutive ports from `first_port` on.
/// Panics when they would run past port 65535.
pub fn consecutive_ports(ip: IpAddr, first_port: u16, n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| {
            let port = u16::try_from(i).ok().and_then(|i| first_port.checked_add(i));
            let port = port.unwrap_or_else(|| panic!("{n} ports from {first_port} run past 65535"));
            SocketAddr::new(ip, port)
        })
        .collect()
}

/// Who an engine of the fleet is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineIdentity {
    /// `Name` in `/info`, e.g. `hollow-0001`.
    pub name: String,
    /// `ID` in `/info`.
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Events emitted so far by all engines of a fleet, by `Type`. Every
/// event an engine emitted was sent to each `/events` stream open on it
/// then, so a client following every engine (a manager's `docker events`)
/// should have received exactly these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// All events: `container + network + volume`.
    pub total: u64,
    pub container: u64,
    pub network: u64,
    pub volume: u64,
    /// Of `total`, those the churn caused.
    pub churn: u64,
}

impl EventCounts {
    /// What was emitted between `earlier` and `self`.
    pub fn since(&self, earlier: &EventCounts) -> EventCounts {
        EventCounts {
            total: self.total.saturating_sub(earlier.total),
            container: self.container.saturating_sub(earlier.container),
            network: self.network.saturating_sub(earlier.network),
            volume: self.volume.saturating_sub(earlier.volume),
            churn: self.churn.saturating_sub(earlier.churn),
        }
    }

    fn read(counters: &Counters) -> EventCounts {
        let container = counters.container.load(Ordering::Relaxed);
        let network = counters.network.load(Ordering::Relaxed);
        let volume = counters.volume.load(Ordering::Relaxed);
        EventCounts {
            total: container + network + volume,
            container,
            network,
            volume,
            churn: counters.churn.load(Ordering::Relaxed),
        }
    }
}

/// The churn running now.
struct RunningChurn {
    config: ChurnConfig,
    task: JoinHandle<()>,
}

/// Many hollow engines in this process, served on the caller's tokio
/// runtime. Dropping the fleet stops every engine (listeners and
/// connections close) and the churn.
pub struct Fleet {
    /// In address order; fixed for the fleet's life.
    engines: Vec<Arc<Engine>>,
    shared: Arc<Shared>,
    /// What churned containers are created with.
    churn_spec: Arc<Spec>,
    /// One accept loop per engine; aborted on drop.
    servers: Vec<JoinHandle<()>>,
    churn: Mutex<Option<RunningChurn>>,
}

impl Fleet {
    /// Binds every address, then serves the engines. Fails (serving none)
    /// when any address cannot be bound.
    pub async fn start(config: FleetConfig) -> io::Result<Fleet> {
        let mut listeners = Vec::with_capacity(config.addrs.len());
        for addr in &config.addrs {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            listeners.push(listener);
        }
        let now = clock::now_nanos();
        let shared = Arc::new(Shared {
            latency: config.latency,
            ncpu: config.ncpu,
            mem_total: config.mem_total,
            labels: config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            images: images(&config.images, now),
            event_history: config.event_history,
            counters: Counters::default(),
            next_pid: AtomicU32::new(4000),
        });
        let spec = container_spec(&shared, &config.container_labels);
        let population = Population {
            containers: config.containers_per_engine,
            running: config.running_per_engine.min(config.containers_per_engine),
            spec: spec.clone(),
            now,
        };
        let width = config.addrs.len().to_string().len().max(4);
        let mut engines = Vec::with_capacity(listeners.len());
        let mut servers = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.into_iter().enumerate() {
            let addr = listener.local_addr()?;
            let name = format!("{}-{:0width$}", config.name_prefix, index + 1);
            let engine = Arc::new(Engine::new(name, addr, shared.clone(), &population));
            servers.push(tokio::spawn(server::serve(listener, engine.clone())));
            engines.push(engine);
        }
        Ok(Fleet { engines, shared, churn_spec: spec, servers, churn: Mutex::new(None) })
    }

    /// The engines' addresses, in the order of [`FleetConfig::addrs`].
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.engines.iter().map(|e| e.addr).collect()
    }

    /// The engines' names, IDs and addresses.
    pub fn engines(&self) -> Vec<EngineIdentity> {
        self.engines.iter().map(|e| EngineIdentity { name: e.name.clone(), id: e.id.clone(), addr: e.addr }).collect()
    }

    pub fn len(&self) -> usize {
        self.engines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    /// Containers on all engines now.
    pub fn containers(&self) -> usize {
        self.engines.iter().map(|e| e.lock().containers.len()).sum()
    }

    /// Events emitted so far by all engines.
    pub fn event_counts(&self) -> EventCounts {
        EventCounts::read(&self.shared.counters)
    }

    /// Events emitted so far by all engines, of every type.
    pub fn events_emitted(&self) -> u64 {
        self.event_counts().total
    }

    /// Starts churn as `config` says, replacing any running. A rate of 0
    /// (or less) stops it. Must be called within the fleet's runtime.
    pub fn set_churn(&self, config: ChurnConfig) {
        let mut churn = self.churn.lock();
        if let Some(running) = churn.take() {
            running.task.abort();
        }
        if config.events_per_second.is_nan() || config.events_per_second <= 0.0 {
            return;
        }
        let count = config.engines.unwrap_or(self.engines.len()).min(self.engines.len());
        let engines = self.engines[..count].to_vec();
        let task = tokio::spawn(churn::run(engines, self.churn_spec.clone(), config.events_per_second));
        *churn = Some(RunningChurn { config, task });
    }

    /// Stops the churn. Lifecycles in progress stay where they are (at
    /// most one container per churning engine).
    pub fn stop_churn(&self) {
        if let Some(running) = self.churn.lock().take() {
            running.task.abort();
        }
    }

    /// The churn running now, if any.
    pub fn churn(&self) -> Option<ChurnConfig> {
        self.churn.lock().as_ref().map(|r| r.config)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_churn();
        for server in &self.servers {
            server.abort();
        }
    }
}

/// The fleet's images: the captured busybox under its real ID, others
/// under IDs derived from their names.
fn images(names: &[String], now: i64) -> Vec<Image> {
    let t = templates();
    names
        .iter()
        .map(|name| {
            let tag = crate::model::normalize_reference(name);
            let id = if tag == "busybox:latest" {
                t.busybox_id.clone()
            } else {
                format!("sha256:{}", Id::derived(&[b"image", tag.as_bytes()]).hex())
            };
            Image {
                id: id.into(),
                tags: vec![tag.into()].into_boxed_slice(),
                created: t.image["Created"].as_i64().map(|s| s * 1_000_000_000).unwrap_or(now),
                size: t.image["Size"].as_i64().unwrap_or(0),
                default_command: vec![Box::from("sh")].into_boxed_slice(),
            }
        })
        .collect()
}

/// What the pre-populated and churned containers run: the fleet's first
/// image, sleeping, with `labels`. A fleet without images gets a busybox
/// that no create could name.
fn container_spec(shared: &Shared, labels: &[(String, String)]) -> Arc<Spec> {
    let (image, image_id) = match shared.images.first() {
        Some(image) => (image.tags.first().map(|t| t.to_string()).unwrap_or_default(), image.id.clone()),
        None => ("busybox:latest".to_string(), templates().busybox_id.as_str().into()),
    };
    let image = image.strip_suffix(":latest").map(str::to_string).unwrap_or(image);
    Arc::new(Spec {
        image: image.into(),
        image_id,
        command: vec![Box::from("sleep"), Box::from("infinity")].into_boxed_slice(),
        labels: sorted_labels(labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        ports: Box::new([]),
        mounts: Box::new([]),
        network_mode: "default".into(),
        config: None,
        host_config: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_by_ip_or_by_port() {
        let ips = loopback_ips(300, 2375);
        assert_eq!(ips[0].to_string(), "127.1.0.1:2375");
        assert_eq!(ips[299].to_string(), "127.1.1.44:2375");
        let ports = consecutive_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 23750, 3);
        assert_eq!(ports[2].to_string(), "127.0.0.1:23752");
    }

    #[test]
    #[should_panic(expected = "run past 65535")]
    fn ports_do_not_wrap() {
        consecutive_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 65535, 2);
    }

    #[test]
    fn counts_subtract() {
        let before = EventCounts { total: 3, container: 2, network: 1, volume: 0, churn: 0 };
        let after = EventCounts { total: 10, container: 7, network: 3, volume: 0, churn: 5 };
        assert_eq!(after.since(&before), EventCounts { total: 7, container: 5, network: 2, volume: 0, churn: 5 });
    }
}
