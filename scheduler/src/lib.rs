//! Pure scheduling core of the swarm manager (Classic Docker Swarm v1.2.9
//! behaviour): given a snapshot of the cluster and the container being
//! created, rank the nodes that may host it or explain why none can.
//!
//! The crate does no I/O, spawns nothing and logs nothing; findings that
//! the original logged are returned as [`Placement::warnings`].
//!
//! ```
//! use swarm_scheduler::{ContainerRequest, NodeSnapshot, Scheduler};
//!
//! let mut body = serde_json::json!({"Image": "redis", "Env": ["constraint:storage==ssd"]});
//! let request = ContainerRequest::from_create_body(Some("cache"), &mut body).unwrap();
//! assert_eq!(body["Env"], serde_json::json!([]));
//!
//! let mut ssd = NodeSnapshot::new("id-1", "node-1", "10.0.0.1:2375");
//! ssd.labels.insert("storage".into(), "ssd".into());
//! let hdd = NodeSnapshot::new("id-2", "node-2", "10.0.0.2:2375");
//!
//! let scheduler = Scheduler::default();
//! let nodes = [hdd, ssd];
//! let placement = scheduler.select(&nodes, &request).unwrap();
//! assert_eq!(placement.node_ids(&nodes), ["id-1"]);
//! assert_eq!(scheduler.to_string(), "Strategy: spread\nFilters: health, port, \
//!     containerslots, dependency, affinity, constraint, whitelist");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod expr;
mod filter;
mod json;
mod lookup;
mod pattern;
mod request;
mod scheduler;
mod snapshot;
mod strategy;

pub use error::{ConfigError, ExprError, ExprKind, ExprProblem, RescheduleError, ScheduleError};
pub use expr::{Expr, Op};
pub use filter::FilterKind;
pub use request::{
    ContainerRequest, AFFINITIES_LABEL, CONSTRAINTS_LABEL, RESCHEDULE_POLICIES_LABEL, VALID_RESCHEDULE_POLICIES,
    WHITELISTS_LABEL,
};
pub use scheduler::{Placement, Scheduler, DEFAULT_FAILURE_RETRY, DEFAULT_OVERCOMMIT};
pub use snapshot::{
    cpus_from_nano, cpus_from_shares, shares_for_cpus, split_port, ContainerSnapshot, ImageSnapshot, NodeSnapshot,
    PortBinding, SWARM_ID_LABEL,
};
pub use strategy::{overcommitted, Strategy};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    /// The manager shares one scheduler and moves requests across tasks.
    #[test]
    fn public_types_are_thread_safe() {
        assert_send_sync::<Scheduler>();
        assert_send_sync::<ContainerRequest>();
        assert_send_sync::<NodeSnapshot>();
        assert_send_sync::<Placement>();
        assert_send_sync::<ScheduleError>();
        assert_send_sync::<ExprError>();
    }
}
