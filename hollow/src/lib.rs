//! Hollow Docker engines, kubemark-style: one process serving many fake
//! engines, for measuring a `swarm manage` over far more engines than a
//! machine can run dockerd's. **A bench tool only**: nothing runs, no
//! image exists, no byte of a container is stored.
//!
//! Each engine listens on its own address and answers the Engine API
//! subset the manager uses (`_ping`, `version`, `info`, containers: list,
//! inspect, create, start, stop, kill, restart, pause, unpause, remove;
//! `images/json`; networks: list, inspect, create, connect, disconnect,
//! remove; volumes: list, inspect, create, remove; and a streaming
//! `events` with `since`, `until` and `filters`), under any API version
//! prefix up to 1.41. Its answers are rendered from the answers of a real
//! dockerd 20.10 (`hollow/fixtures/`), so they have every field, the field
//! types and the size of real ones; its operations change its state as
//! dockerd's do and emit the same events in the same order (a `docker
//! stop` is `kill`, `die`, network `disconnect`, `stop`: a hollow process
//! always honours SIGTERM). Engines store compact records and render JSON
//! on demand: 1,000 engines of 30 containers take about 14 MB, plus about
//! 15 KB for each open connection (a manager keeps ~11 per engine).
//!
//! Churn ([`Fleet::set_churn`]) runs synthetic container lifecycles
//! (create, start, stop, destroy) at a total rate of events, and
//! [`Fleet::event_counts`] counts every event emitted, so a bench can
//! check that a client of the manager received all of them.
//!
//! ```no_run
//! use std::time::Duration;
//! use swarm_hollow::{loopback_ips, ChurnConfig, Fleet, FleetConfig};
//!
//! # async fn bench() -> std::io::Result<()> {
//! let mut config = FleetConfig::new(loopback_ips(1000, 2375));
//! config.containers_per_engine = 30;
//! config.latency = Duration::from_millis(1);
//! config.labels = vec![("storage".into(), "ssd".into())];
//! let fleet = Fleet::start(config).await?;
//! let discovery: Vec<String> = fleet.addrs().iter().map(|a| a.to_string()).collect();
//! // … start `swarm manage nodes://<discovery joined by ,>` and `docker events` through it …
//! let before = fleet.event_counts();
//! fleet.set_churn(ChurnConfig::all(2000.0));
//! tokio::time::sleep(Duration::from_secs(60)).await;
//! fleet.stop_churn();
//! let emitted = fleet.event_counts().since(&before);
//! // … compare with the events the client received …
//! # let _ = (discovery, emitted);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod api;
mod churn;
mod clock;
pub mod control;
mod create;
mod engine;
mod error;
mod events;
mod fixtures;
mod fleet;
mod ids;
mod model;
mod ops;
mod render;
mod server;

pub use churn::ChurnConfig;
pub use fleet::{consecutive_ports, loopback_ips, loopback_ips_from, EngineIdentity, EventCounts, Fleet, FleetConfig};
