//! Primary election among replicated managers.
//!
//! Every manager runs an [`Election`]: it tries to take a lock in the
//! key-value store whose value is its advertise address. The holder is the
//! primary; the others follow the lock's value to know where the primary is.
//!
//! The store is reached through [`LockStore`], so the logic here is the
//! same for Consul, etcd and ZooKeeper and can be tested with a fake store
//! and paused time. The crate writes no log lines: it reports
//! [`ElectionEvent`]s to an observer the caller passes in.
//!
//! Safety against two primaries rests on a local deadline: a primary counts
//! as primary only until `renew_started + STEP_DOWN_PART_OF_TTL × ttl` (two
//! thirds of the TTL), pushed forward by each successful renewal. The store
//! cannot expire the lock before `ttl` has passed since the store saw that
//! renewal, which came after `renew_started`, so the old primary has stopped
//! acting before anyone else can win, also when its process was frozen and
//! resumes.
#![forbid(unsafe_code)]

mod election;
mod event;
mod store;

pub use election::{Election, ElectionConfig, Leadership, Role};
pub use event::{ElectionEvent, LossReason};
pub use store::{HolderWait, LockError, LockStore, StoreLock};
