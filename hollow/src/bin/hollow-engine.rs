//! `hollow-engine`: many hollow Docker engines in one process, for
//! benches of `swarm manage` (see the `swarm_hollow` crate). A bench tool
//! only: nothing runs in these engines.
//!
//! Prints `engine <name> <addr>` for every engine, then `ready`, on
//! stdout; runs until SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use swarm_hollow::{consecutive_ports, control, ChurnConfig, Fleet, FleetConfig};

/// How the engines' addresses are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Spread {
    /// One IP (`--ip`), consecutive ports from `--port`.
    Ports,
    /// Consecutive loopback IPs from `--ip`, all on `--port`.
    Ips,
}

#[derive(Debug, Parser)]
#[command(name = "hollow-engine", about = "Many fake Docker engines in one process, for benches of swarm manage")]
struct Args {
    /// How many engines.
    #[arg(long, default_value_t = 1)]
    engines: usize,
    /// The (first) IP to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// The (first) port to listen on; 0 picks free ports (with `--spread ports`, one each).
    #[arg(long, default_value_t = 2375)]
    port: u16,
    /// `ports`: one IP, consecutive ports; `ips`: consecutive loopback IPs, one port.
    #[arg(long, value_enum, default_value_t = Spread::Ports)]
    spread: Spread,
    /// Containers each engine starts with.
    #[arg(long, default_value_t = 30)]
    containers: usize,
    /// How many of those are running (the others exited).
    #[arg(long, default_value_t = 20)]
    running: usize,
    /// Milliseconds added to every answer but the events stream.
    #[arg(long, default_value_t = 0.0)]
    latency_ms: f64,
    /// An engine label `key=value` (repeat for more), the same on every engine.
    #[arg(long = "label", value_parser = key_value)]
    labels: Vec<(String, String)>,
    /// A label of the pre-populated and churned containers (repeat for more; default app=hollow).
    #[arg(long = "container-label", value_parser = key_value)]
    container_labels: Vec<(String, String)>,
    /// NCPU of every engine.
    #[arg(long, default_value_t = 2)]
    ncpu: u32,
    /// MemTotal of every engine, bytes or with a k/m/g suffix (binary).
    #[arg(long, default_value = "2g", value_parser = bytes)]
    mem_total: u64,
    /// Engines are named <prefix>-0001, <prefix>-0002, …
    #[arg(long, default_value = "hollow")]
    name_prefix: String,
    /// An image every engine has, name:tag (repeat for more; default busybox:latest).
    #[arg(long = "image")]
    images: Vec<String>,
    /// Events each engine keeps for `since` (dockerd keeps 256).
    #[arg(long, default_value_t = 256)]
    event_history: usize,
    /// Churn: synthetic container lifecycles at this many events per second in total (0: none).
    #[arg(long, default_value_t = 0.0)]
    churn_rate: f64,
    /// How many engines churn (the first ones); all by default.
    #[arg(long)]
    churn_engines: Option<usize>,
    /// Serve the control endpoint (GET /stats, POST /churn?rate=R[&engines=N], DELETE /churn) here.
    #[arg(long)]
    control: Option<SocketAddr>,
    /// Write the engines' addresses here, one per line (for `swarm manage file://PATH`).
    #[arg(long)]
    addrs_file: Option<PathBuf>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

fn bytes(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some(b'm') => (&lower[..lower.len() - 1], 1 << 20),
        Some(b'g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower.as_str(), 1),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size"))?;
    n.checked_mul(unit).ok_or_else(|| format!("{text:?} is too large"))
}

/// The soft limit on open files, from `/proc/self/limits` (no libc call needed).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn addresses(args: &Args) -> Result<Vec<SocketAddr>, String> {
    match (args.spread, args.ip) {
        (Spread::Ports, ip) if args.port == 0 => Ok(vec![SocketAddr::new(ip, 0); args.engines]),
        (Spread::Ports, ip) => {
            if usize::from(args.port) + args.engines > 65_536 {
                return Err(format!("{} ports from {} run past 65535", args.engines, args.port));
            }
            Ok(consecutive_ports(ip, args.port, args.engines))
        }
        (Spread::Ips, IpAddr::V4(first)) => {
            let last = u64::from(u32::from(first)) + args.engines.saturating_sub(1) as u64;
            if !first.is_loopback() || last > u64::from(u32::from(std::net::Ipv4Addr::new(127, 255, 255, 255))) {
                return Err(format!("{} IPs from {first} leave 127.0.0.0/8", args.engines));
            }
            Ok(swarm_hollow::loopback_ips_from(first, args.engines, args.port))
        }
        (Spread::Ips, IpAddr::V6(_)) => Err("--spread ips needs an IPv4 loopback --ip".to_string()),
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut config = FleetConfig::new(addresses(&args)?);
    config.containers_per_engine = args.containers;
    config.running_per_engine = args.running;
    config.latency = Duration::from_secs_f64(args.latency_ms.max(0.0) / 1000.0);
    config.labels = args.labels;
    if !args.container_labels.is_empty() {
        config.container_labels = args.container_labels;
    }
    config.ncpu = args.ncpu;
    config.mem_total = args.mem_total;
    config.name_prefix = args.name_prefix;
    if !args.images.is_empty() {
        config.images = args.images;
    }
    config.event_history = args.event_history;
    // Each engine holds a listener, and a manager keeps about 11
    // keep-alive connections to each after its first refresh.
    let wanted = args.engines as u64 * 16 + 64;
    if let Some(limit) = open_files_limit().filter(|l| *l < wanted) {
        eprintln!("hollow-engine: warning: open files limited to {limit}, {wanted} may be needed (ulimit -n)");
    }
    let fleet = Arc::new(Fleet::start(config).await.map_err(|e| e.to_string())?);
    if args.churn_rate > 0.0 {
        fleet.set_churn(ChurnConfig { events_per_second: args.churn_rate, engines: args.churn_engines });
    }
    if let Some(addr) = args.control {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("control on {addr}: {e}"))?;
        tokio::spawn(control::serve(listener, fleet.clone()));
    }
    if let Some(path) = &args.addrs_file {
        let list: String = fleet.addrs().iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(path, list).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    for engine in fleet.engines() {
        let _ = writeln!(out, "engine {} {}", engine.name, engine.addr);
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => Err(format!("cannot start the runtime: {e}")),
    };
    if let Err(e) = result {
        eprintln!("hollow-engine: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(bytes("1024"), Ok(1024));
        assert_eq!(bytes("2k"), Ok(2048));
        assert_eq!(bytes("3M"), Ok(3 << 20));
        assert_eq!(bytes("2g"), Ok(2 << 30));
        assert!(bytes("lots").is_err());
    }

    #[test]
    fn addresses_by_spread() {
        let args = Args::parse_from(["hollow-engine", "--engines", "3", "--spread", "ips", "--ip", "127.1.0.1"]);
        assert_eq!(addresses(&args).expect("addresses")[2].to_string(), "127.1.0.3:2375");
        let args = Args::parse_from(["hollow-engine", "--engines", "2", "--port", "65535"]);
        assert!(addresses(&args).is_err());
        let args = Args::parse_from(["hollow-engine", "--engines", "2", "--spread", "ips", "--ip", "10.0.0.1"]);
        assert!(addresses(&args).is_err());
    }
}
