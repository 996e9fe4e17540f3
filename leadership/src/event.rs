//! What an election reports as it runs. The crate writes no log lines
//! itself: the caller turns these events into its own.

use crate::store::LockError;

/// One fact about the election, reported in the order it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionEvent {
    /// The candidate started, as a replica that knows no primary.
    Started,
    /// This manager took the lock: it is primary.
    Acquired,
    /// This manager is no longer primary.
    Lost { reason: LossReason },
    /// At shutdown, the primary gave the lock up for another manager to take.
    Released,
    /// At shutdown, giving the lock up failed: the store frees it after the TTL.
    ReleaseFailed { error: LockError },
    /// A renewal could not reach the store; it is tried again until the step-down deadline.
    RenewalFailed { error: LockError },
    /// Another manager, at `primary`, holds the lock.
    NewLeader { primary: String },
    /// The primary at `primary` refused connections, and its lock was ended.
    DeadPrimaryLockEnded { primary: String },
    /// The primary at `primary` refused connections, but ending its lock failed.
    DeadPrimaryLockNotEnded { primary: String, error: LockError },
    /// A store call failed; only the first failure of an outage is reported.
    StoreFailed { error: LockError },
}

/// Why a primary stopped being primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// No renewal succeeded before the step-down deadline.
    NotRenewedInTime,
    /// The store said the lock is gone (the store's words).
    LockGone(String),
}
