//! The fixtures the tests and benches of every swarm crate share: real
//! store servers (etcd, Consul, ZooKeeper), a testbed of real Docker engines
//! (`scripts/testbed.sh`), `swarm` processes, test certificates (`certs`),
//! and the helpers under them.
//!
//! Every fixture runs its processes on free loopback ports (or in its own
//! testbed namespaces) with its own temp dir, kills them when dropped, and
//! leaves an owner watchdog that kills them if the test process dies without
//! unwinding; so tests may run many fixtures in parallel. Needs the system
//! packages of `scripts/install-deps.sh` (and root for the testbed).
#![forbid(unsafe_code)]

pub mod bench;
pub mod certs;
pub mod http;
pub mod manager;
pub mod metrics;
pub mod process;
pub mod store;
pub mod testbed;

/// The real Docker CLI the tests drive.
pub const DOCKER: &str = "/usr/local/bin/docker";

/// Hint printed whenever a fixture cannot start what it needs.
pub const INSTALL_HINT: &str = "Is this machine prepared? Run `sudo scripts/install-deps.sh` (as root).";
