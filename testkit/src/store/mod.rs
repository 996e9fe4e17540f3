//! Real key-value store servers (etcd, Consul, ZooKeeper) behind one trait,
//! each on free ports with its data and log in its own temp dir.
//!
//! [`StoreFixture::stop`] SIGKILLs the server (a crash, not a shutdown);
//! [`StoreFixture::restart`] starts it again on the same ports. etcd and
//! ZooKeeper keep their data across a restart; a Consul `-dev` agent comes
//! back empty.

mod consul;
mod etcd;
mod zookeeper;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub use consul::ConsulServer;
pub use etcd::{EtcdServer, TestCa};
pub use zookeeper::{four_letter_word, ZkServer, TICK_MS};

use crate::process::{read_log, tail, temp_dir, OwnedChild};
use crate::INSTALL_HINT;

/// One `#[test]` per store: `per_store!(scenario: etcd_x => EtcdServer, ...)`
/// defines `fn etcd_x()` running `scenario::<EtcdServer>()`.
#[macro_export]
macro_rules! per_store {
    ($scenario:ident: $($test:ident => $store:ty),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                $scenario::<$store>();
            }
        )+
    };
}

/// The constants of a [`StoreFixture`], in one value per store.
pub struct StoreProfile {
    /// See [`StoreFixture::NAME`].
    pub name: &'static str,
    /// See [`StoreFixture::SCHEME`].
    pub scheme: &'static str,
    /// See [`StoreFixture::JOIN_TTL`].
    pub join_ttl: &'static str,
    /// See [`StoreFixture::JOIN_EXPIRY`].
    pub join_expiry: Duration,
}

/// A running (or deliberately stopped) store server.
pub trait StoreFixture: Sized {
    /// The store's name as the store clients report it (`etcd`, `consul`, `zookeeper`).
    const NAME: &'static str = Self::PROFILE.name;
    /// The discovery URL scheme (`etcd`, `consul`, `zk`).
    const SCHEME: &'static str = Self::PROFILE.scheme;
    /// The shortest `--ttl` of `swarm join` the store honours.
    const JOIN_TTL: &'static str = Self::PROFILE.join_ttl;
    /// How long a registration made with [`Self::JOIN_TTL`] may outlive a killed join.
    const JOIN_EXPIRY: Duration = Self::PROFILE.join_expiry;
    /// What the constants above are for this store.
    const PROFILE: StoreProfile;

    /// Starts a server with its client port on 127.0.0.1; returns once it serves.
    fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// Starts a server with its client port on `ip` (e.g. a testbed bridge,
    /// so that managers inside engine namespaces reach it).
    fn start_on(ip: &str) -> Self;

    /// The server process.
    fn process(&self) -> &ServerProcess;

    /// The server process, to stop it.
    fn process_mut(&mut self) -> &mut ServerProcess;

    /// Runs the server (again, on the same ports) and waits until it
    /// serves; panics if it does not.
    fn spawn(&mut self);

    /// `ip:port` of the client port.
    fn addr(&self) -> &str {
        &self.process().addr
    }

    /// Starts the server again on the same ports (stopping it first if it
    /// still runs); returns once it serves.
    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The discovery URL `scheme://addr/path`.
    fn url(&self, path: &str) -> String {
        format!("{}://{}/{path}", Self::SCHEME, self.addr())
    }

    /// Crashes the server (SIGKILL). Idempotent.
    fn stop(&mut self) {
        self.process_mut().stop()
    }

    /// PID of the running server, if any.
    fn pid(&self) -> Option<u32> {
        self.process().pid()
    }

    /// The server's log so far (all runs).
    fn log(&self) -> String {
        self.process().log()
    }
}

/// The process side of a store fixture: its temp dir, its log, and the
/// server while it runs. Prints the log tail when dropped by a panicking test.
pub struct ServerProcess {
    /// What runs (`etcd`, `consul`, `zookeeper`): names the log file and messages.
    name: &'static str,
    /// `ip:port` of the client port, for messages.
    addr: String,
    /// Holds the server's config, data and log (`<name>.log`, appended to
    /// across restarts); removed on drop.
    pub dir: tempfile::TempDir,
    /// The server; `None` while stopped.
    child: Option<OwnedChild>,
}

impl ServerProcess {
    /// A stopped server called `name` listening on `addr`, with a fresh temp dir.
    pub fn new(name: &'static str, addr: String) -> ServerProcess {
        ServerProcess { name, addr, dir: temp_dir(&format!("swarm-{name}-")), child: None }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.name))
    }

    /// The server's log so far (all runs).
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// PID of the running server, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(OwnedChild::id)
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.exited().is_none())
    }

    /// SIGKILLs the server. Idempotent.
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Runs `command` (whose command line contains `marker`) and waits up to
    /// `within` until `ready` holds. On failure the server is stopped and the
    /// error carries the log tail.
    fn launch(
        &mut self,
        command: &mut Command,
        marker: &str,
        within: Duration,
        ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let mut child = OwnedChild::spawn(command, &self.log_path(), marker)
            .map_err(|e| format!("cannot run {}: {e}. {INSTALL_HINT}", self.name))?;
        let started = child.wait_ready(within, ready);
        self.child = Some(child);
        started.inspect_err(|_| self.stop()).map_err(|what| {
            format!(
                "{} at {}: {what}. {INSTALL_HINT}\n--- log tail ---\n{}",
                self.name,
                self.addr,
                tail(&self.log(), 40)
            )
        })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{} {} log tail:\n{}", self.name, self.addr, tail(&self.log(), 40));
        }
    }
}
