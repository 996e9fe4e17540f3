//! Process helpers under every fixture: free loopback ports, temp dirs,
//! children that die with their owner, log tails and polling.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free loopback port")
}

/// `n` distinct ports free for both TCP and UDP on 127.0.0.1. Every socket is
/// held until all ports are chosen, so no port is picked twice.
pub fn free_tcp_udp_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("no free loopback port");
        let port = tcp.local_addr().expect("local addr").port();
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            held.push((tcp, udp));
            ports.push(port);
        }
    }
    ports
}

/// A fresh temp dir named `<prefix>XXXX`, removed when dropped.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir")
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reads a log file, empty if it does not exist (yet).
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Calls `check` every `every` until it holds (true) or `within` has passed (false).
pub fn poll(within: Duration, every: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() >= within {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to `pid`; true if `kill` succeeded.
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().is_ok_and(|s| s.success())
}

/// A child process that is SIGKILLed when dropped, and by an owner watchdog
/// if this process dies without unwinding (even by SIGKILL).
pub struct OwnedChild {
    /// The running (or already reaped) child; reaped at the latest on drop.
    child: Child,
}

impl OwnedChild {
    /// Spawns `command` with stdin closed and stdout and stderr appended to
    /// `log`. `marker` must be part of the child's command line: the
    /// watchdog checks it before killing, so a reused PID is never hit.
    pub fn spawn(command: &mut Command, log: &Path, marker: &str) -> std::io::Result<OwnedChild> {
        let log = OpenOptions::new().create(true).append(true).open(log)?;
        let child = command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?;
        watch_owner(child.id(), marker);
        Ok(OwnedChild { child })
    }

    /// The child's PID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// How the child ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `sig` (`TERM`, `STOP`, ...) to the child.
    pub fn signal(&self, sig: &str) -> bool {
        signal(self.child.id(), sig)
    }

    /// SIGKILLs the child and reaps it. Idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the child to end.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for a child process")
    }

    /// Polls `ready` until it holds; fails early, saying so, if the child
    /// exits first, and after `within` otherwise.
    pub fn wait_ready(&mut self, within: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let mut exited = None;
        let ready = poll(within, Duration::from_millis(50), || {
            exited = self.exited();
            exited.is_some() || ready()
        });
        match (exited, ready) {
            (Some(status), _) => Err(format!("exited during start-up ({status})")),
            (None, true) => Ok(()),
            (None, false) => Err(format!("not ready after {within:?}")),
        }
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills `child` once this process is gone, even if it was SIGKILLed. Stops
/// watching when the child is gone, and checks that the PID still runs
/// `marker` before killing.
fn watch_owner(child: u32, marker: &str) {
    let owner = std::process::id();
    let script = format!(
        "while kill -0 {owner} 2>/dev/null && kill -0 {child} 2>/dev/null; do sleep 0.5; done; \
         grep -q {marker} /proc/{child}/cmdline 2>/dev/null && kill -9 {child}; exit 0"
    );
    let _ = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A `docker` command streaming its stdout line by line to a channel.
pub struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Streaming {
    pub fn spawn(mut command: Command) -> Streaming {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run the docker CLI");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Streaming { child, lines }
    }

    /// Waits for a line containing `text`; panics after `within`.
    pub fn expect(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {text:?} within {within:?} ({e})"),
            }
        }
    }

    /// Every line up to and including the first containing `text`, for a
    /// test that checks all of them; panics after `within`.
    pub fn lines_until(&self, text: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let last = line.contains(text);
                    lines.push(line);
                    if last {
                        return lines;
                    }
                }
                Err(e) => panic!("no line with {text:?} within {within:?} ({e}) after {} lines", lines.len()),
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
