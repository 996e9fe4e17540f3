//! Measuring helpers of the benches: latency sampling on keep-alive
//! connections, quantiles, memory and CPU of a process, `wrk`, and bulk
//! container creation on testbed engines.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::Conn;
use crate::manager::Manager;
use crate::process::tail;
use crate::testbed::Testbed;

/// True when cargo runs the bench `name` to measure (`cargo bench` passes
/// `--bench`); otherwise (`cargo test --benches`) says how to run it.
pub fn requested(name: &str) -> bool {
    let requested = std::env::args().any(|a| a == "--bench");
    if !requested {
        println!("{name} bench: run with `cargo bench --bench {name}`; nothing to do");
    }
    requested
}

/// Latency sampling on keep-alive connections.
pub struct Sampler;

impl Sampler {
    /// Samples `requests` sequential GETs on each of two connections, in
    /// `blocks` alternating blocks (A, B, A, B, ...), after `warmup` requests
    /// on each. Returns the latencies in milliseconds, sorted.
    pub fn pair(
        a: (&mut Conn, &str),
        b: (&mut Conn, &str),
        warmup: usize,
        requests: usize,
        blocks: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let (conn_a, path_a) = a;
        let (conn_b, path_b) = b;
        for _ in 0..warmup {
            conn_a.get_ok(path_a);
            conn_b.get_ok(path_b);
        }
        let mut sa = Vec::with_capacity(requests);
        let mut sb = Vec::with_capacity(requests);
        let per_block = requests.div_ceil(blocks);
        while sa.len() < requests {
            let n = per_block.min(requests - sa.len());
            sample(conn_a, path_a, n, &mut sa);
            sample(conn_b, path_b, n, &mut sb);
        }
        sa.sort_by(f64::total_cmp);
        sb.sort_by(f64::total_cmp);
        (sa, sb)
    }
}

fn sample(conn: &mut Conn, path: &str, n: usize, out: &mut Vec<f64>) {
    for _ in 0..n {
        let t = Instant::now();
        conn.get_ok(path);
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
}

/// The `q` quantile (0..=1) of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// VmRSS of a process, in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// What one or more wrk runs did.
pub struct WrkResult {
    /// Requests completed.
    pub requests: u64,
    /// Wall-clock seconds the runs took.
    pub seconds: f64,
    /// Socket errors plus non-2xx/3xx answers.
    pub errors: u64,
    /// CPU seconds [user, system] each watched process used meanwhile.
    pub cpu: Vec<[f64; 2]>,
    /// TCP connections opened from this network namespace meanwhile
    /// (wrk's own included).
    pub connects: u64,
}

impl WrkResult {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// CPU microseconds [user, system] per request of watched process `i`.
    pub fn cpu_us_per_request(&self, i: usize) -> [f64; 2] {
        let per = |seconds: f64| seconds * 1e6 / self.requests.max(1) as f64;
        self.cpu.get(i).map_or([f64::NAN; 2], |c| [per(c[0]), per(c[1])])
    }

    /// The sum of several runs.
    pub fn combine<'a>(runs: impl Iterator<Item = &'a WrkResult>) -> WrkResult {
        let mut total = WrkResult { requests: 0, seconds: 0.0, errors: 0, cpu: Vec::new(), connects: 0 };
        for r in runs {
            total.requests += r.requests;
            total.seconds += r.seconds;
            total.errors += r.errors;
            total.connects += r.connects;
            total.cpu.resize(total.cpu.len().max(r.cpu.len()), [0.0; 2]);
            for (sum, c) in total.cpu.iter_mut().zip(&r.cpu) {
                sum[0] += c[0];
                sum[1] += c[1];
            }
        }
        total
    }
}

/// CPU seconds [user, system] process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> [f64; 2] {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |n: usize| -> f64 { fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN) };
    [field(14) / ticks, field(15) / ticks]
}

/// `wrk -t1 -c4 -d{secs}s url`.
/// Also notes the CPU time the `watch` processes use meanwhile.
pub fn wrk(url: &str, secs: usize, watch: &[u32]) -> WrkResult {
    wrk_on(None, url, secs, watch)
}

/// [`wrk`], run on CPU `cpu` only when given (`taskset -c`).
pub fn wrk_on(cpu: Option<usize>, url: &str, secs: usize, watch: &[u32]) -> WrkResult {
    wrk_with(cpu, 4, url, secs, watch)
}

/// [`wrk_on`] with `connections` connections (`-c`).
pub fn wrk_with(cpu: Option<usize>, connections: usize, url: &str, secs: usize, watch: &[u32]) -> WrkResult {
    let before: Vec<[f64; 2]> = watch.iter().map(|p| cpu_seconds(*p)).collect();
    let opens_before = tcp_active_opens();
    let mut command = match cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &cpu.to_string(), "wrk"]);
            taskset
        }
        None => Command::new("wrk"),
    };
    let out = command
        .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s"), url])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk (apt-get install wrk): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk {url} failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    // "  12345 requests in 5.00s, 1.23MB read"
    let (requests, seconds) = text
        .lines()
        .find_map(|l| {
            let l = l.trim();
            let (n, rest) = l.split_once(" requests in ")?;
            let secs = rest.split(',').next()?;
            Some((n.trim().parse::<u64>().ok()?, parse_wrk_duration(secs)?))
        })
        .unwrap_or_else(|| panic!("unexpected wrk output:\n{text}"));
    let mut errors = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += rest.split(',').filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok()).sum::<u64>();
        }
    }
    let cpu = watch
        .iter()
        .zip(before)
        .map(|(p, b)| {
            let a = cpu_seconds(*p);
            [a[0] - b[0], a[1] - b[1]]
        })
        .collect();
    let connects = tcp_active_opens().saturating_sub(opens_before);
    WrkResult { requests, seconds, errors, cpu, connects }
}

/// `ActiveOpens` of this network namespace (`/proc/net/snmp`): every TCP
/// connection opened from it so far.
pub fn tcp_active_opens() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else { return 0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ActiveOpens")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// wrk durations: `5.00s`, `1.00m`, `900.00ms`, `12us`.
fn parse_wrk_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    let unit_at = text.find(|c: char| c.is_ascii_alphabetic())?;
    let value: f64 = text[..unit_at].parse().ok()?;
    let factor = match &text[unit_at..] {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Some(value * factor)
}

/// Creates and starts `count` busybox `sleep 3600` containers spread evenly
/// over the testbed's engines, straight through each engine's TCP API (two
/// connections per engine, in parallel).
pub fn create_containers(tb: &Testbed, count: usize) {
    const WORKERS_PER_ENGINE: usize = 2;
    let engines = tb.engines.len();
    let workers = engines * WORKERS_PER_ENGINE;
    std::thread::scope(|scope| {
        for w in 0..workers {
            // Worker w serves engine w % engines; container i goes to worker i % workers.
            let n = (count + workers - 1 - w) / workers;
            let addr = tb.engines[w % engines].addr.clone();
            scope.spawn(move || {
                let mut conn = Conn::connect(&addr);
                let config = br#"{"Image":"busybox","Cmd":["sleep","3600"],"Labels":{"swarm-bench":"1"}}"#;
                for _ in 0..n {
                    let status = conn
                        .request("POST", "/v1.41/containers/create", Some(config))
                        .unwrap_or_else(|e| panic!("create on {addr}: {e}"));
                    assert_eq!(status, 201, "create on {addr}: {}", String::from_utf8_lossy(conn.body()));
                    let created: Value = serde_json::from_slice(conn.body()).expect("create JSON");
                    let id = created["Id"].as_str().expect("created Id").to_string();
                    let status = conn
                        .request("POST", &format!("/v1.41/containers/{id}/start"), None)
                        .unwrap_or_else(|e| panic!("start on {addr}: {e}"));
                    assert_eq!(status, 204, "start {id} on {addr}: {}", String::from_utf8_lossy(conn.body()));
                }
            });
        }
    });
}

/// When the manager first listed at least `n` containers, all running, after
/// the call; prints its progress every `every`, panics after `within`.
pub fn wait_running(manager: &Manager, n: usize, within: Duration, every: Duration) -> Duration {
    let start = Instant::now();
    let mut last_report = start;
    loop {
        let list = manager.containers().unwrap_or_default();
        let running = list.iter().filter(|c| c["State"].as_str() == Some("running")).count();
        if list.len() >= n && running >= n {
            return start.elapsed();
        }
        if last_report.elapsed() >= every {
            last_report = Instant::now();
            println!(
                "  ... after {:>4.1}s the manager lists {} containers, {} running",
                start.elapsed().as_secs_f64(),
                list.len(),
                running
            );
        }
        if start.elapsed() > within {
            panic!(
                "timed out after {within:?} waiting until the manager lists {n} running \
                 containers (it lists {}, {running} running)\nmanager log (tail):\n{}",
                list.len(),
                tail(&manager.log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pins every thread of process `pid` to `cpus` (a `taskset` list such as
/// `0` or `0,1`). `taskset -a` fails when a thread ends while it goes
/// through them (a [`ByteRelay`]'s, as wrk hangs up): tried a few times.
pub fn pin(pid: u32, cpus: &str) {
    for _ in 0..10 {
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run taskset: {e}"));
        if status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("taskset -a -p -c {cpus} {pid} failed ten times");
}

/// A relay that copies bytes between each client connection and its own
/// connection to an upstream, two blocking threads per connection: a read
/// and a write each way per request, and no HTTP. Run in the bench's own
/// process, whose CPU counters then measure it: a reference for the
/// manager's per-request cost on this machine (an event loop serving
/// several connections per wake-up can spend less).
pub struct ByteRelay {
    /// `127.0.0.1:port` it listens on.
    pub addr: String,
}

impl ByteRelay {
    /// Listens on a free loopback port and relays every connection to
    /// `upstream` (`ip:port`) until the process ends.
    pub fn start(upstream: &str) -> ByteRelay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port for the relay");
        let addr = listener.local_addr().expect("the relay's address").to_string();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
                let (Ok(client_in), Ok(server_in)) = (client.try_clone(), server.try_clone()) else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                std::thread::spawn(move || copy_until_closed(client_in, server));
                std::thread::spawn(move || copy_until_closed(server_in, client));
            }
        });
        ByteRelay { addr }
    }
}

/// Copies `from` into `to` until `from` ends or either fails, then shuts
/// `to` down so the other direction ends too.
fn copy_until_closed(mut from: std::net::TcpStream, mut to: std::net::TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
