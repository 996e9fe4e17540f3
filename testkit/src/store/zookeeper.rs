//! A real standalone ZooKeeper server (Debian's `zookeeper` package, run
//! with `java ... ZooKeeperServerMain`), with its config, data and log in
//! its temp dir. Nodes and sessions survive a restart.
//!
//! `tickTime` is 500 ms, so the server grants session timeouts between
//! 1 s (2 ticks) and 10 s (20 ticks): short enough for expiry tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use super::{ServerProcess, StoreFixture, StoreProfile};
use crate::process::free_port;

/// The JVM of Debian's default JRE.
pub const JAVA: &str = "/usr/bin/java";

/// Jars of Debian's `zookeeper` package; the server jar's manifest pulls in
/// its own dependencies. Only one SLF4J binding (log4j 1.2) is listed so the
/// log goes where our `log4j.properties` says: the console, i.e. our log file.
const CLASSPATH_JARS: &[&str] =
    &["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-log4j12.jar", "/usr/share/java/log4j-1.2.jar"];

/// How long a (re)start may take (the JVM needs a couple of seconds).
const START_TIMEOUT: Duration = Duration::from_secs(40);

/// `tickTime` of the test server, in milliseconds.
pub const TICK_MS: u64 = 500;

/// A running (or stopped) ZooKeeper server.
pub struct ZkServer {
    /// `ip:PORT` of the client port.
    pub addr: String,
    /// The server; its dir holds `zoo.cfg`, `log4j.properties`, `data/` and the log.
    process: ServerProcess,
}

impl StoreFixture for ZkServer {
    const PROFILE: StoreProfile =
        StoreProfile { name: "zookeeper", scheme: "zk", join_ttl: "3s", join_expiry: Duration::from_secs(20) };

    /// Writes the config and starts the server; returns once it answers.
    fn start_on(ip: &str) -> ZkServer {
        let port = free_port();
        let addr = format!("{ip}:{port}");
        let server = ZkServer { process: ServerProcess::new("zookeeper", addr.clone()), addr };
        let d = server.process.dir.path();
        let cfg = format!(
            "tickTime={TICK_MS}\n\
             dataDir={}\n\
             clientPort={port}\n\
             clientPortAddress={ip}\n\
             maxClientCnxns=0\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=srvr,ruok,dump,cons\n",
            d.join("data").display()
        );
        std::fs::write(d.join("zoo.cfg"), cfg).expect("write zoo.cfg");
        // Everything to the console (our log file); nothing to /var/log.
        std::fs::write(
            d.join("log4j.properties"),
            "log4j.rootLogger=INFO,CONSOLE\n\
             log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n\
             log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] %m%n\n",
        )
        .expect("write log4j.properties");
        let mut server = server;
        server.spawn();
        server
    }

    fn process(&self) -> &ServerProcess {
        &self.process
    }

    fn process_mut(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    fn spawn(&mut self) {
        let d = self.process.dir.path();
        let mut classpath = vec![d.display().to_string()];
        classpath.extend(CLASSPATH_JARS.iter().map(|s| s.to_string()));
        let mut command = Command::new(JAVA);
        command
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg(format!("-Dzookeeper.log.dir={}", d.display()))
            .arg(format!("-Djava.io.tmpdir={}", d.display()))
            .arg("-Dzookeeper.jmx.log4j.disable=true")
            .arg("-cp")
            .arg(classpath.join(":"))
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(d.join("zoo.cfg"))
            .current_dir(d);
        let addr = &self.addr;
        if let Err(e) = self.process.launch(&mut command, "ZooKeeperServerMain", START_TIMEOUT, || serving(addr)) {
            panic!("{e}");
        }
    }
}

impl ZkServer {
    /// True if the server answers `srvr` with `Mode: standalone`.
    pub fn serving(&self) -> bool {
        serving(&self.addr)
    }

    /// IDs (`0x...`) of the sessions the server currently tracks, from the
    /// `dump` four-letter word.
    pub fn sessions(&self) -> Vec<String> {
        let dump = four_letter_word(&self.addr, "dump").unwrap_or_else(|e| panic!("dump on {}: {e}", self.addr));
        dump.lines()
            .skip_while(|l| !l.starts_with("SessionTracker dump"))
            .take_while(|l| !l.starts_with("ephemeral nodes dump"))
            .filter_map(|l| l.trim().strip_prefix("0x").map(|id| format!("0x{id}")))
            .collect()
    }
}

fn serving(addr: &str) -> bool {
    four_letter_word(addr, "srvr").is_ok_and(|s| s.contains("Mode: standalone"))
}

/// Sends a four-letter word (`srvr`, `ruok`) and returns the answer.
pub fn four_letter_word(addr: &str, word: &str) -> std::io::Result<String> {
    let sock = addr.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(word.as_bytes())?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}
