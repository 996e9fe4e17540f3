//! What the election needs from a key-value store.

use std::future::Future;
use std::time::Duration;

use thiserror::Error;

/// A store failure, as the election sees it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LockError {
    /// The lock is no longer ours (session invalidated, lease expired, node gone).
    #[error("lock lost: {0}")]
    Lost(String),
    /// The store could not be asked (unreachable, timeout, protocol error).
    #[error("{0}")]
    Store(String),
}

/// A follower's question to the store: who holds the lock at `key`? The
/// answer waits up to `max_wait` for the holder to differ from `known`, and
/// comes at once when it already differs.
#[derive(Debug, Clone, Copy)]
pub struct HolderWait<'a> {
    pub key: &'a str,
    /// The holder the follower knows of (`None`: the lock was free).
    pub known: Option<&'a str>,
    pub max_wait: Duration,
}

/// A lock held in the store.
pub trait StoreLock: Send + 'static {
    /// Proves to the store that the holder is alive. `Err(Lost)` when the
    /// store says the lock is gone.
    fn renew(&mut self) -> impl Future<Output = Result<(), LockError>> + Send;
    /// Gives the lock up at once, so another candidate can take it.
    fn release(self) -> impl Future<Output = Result<(), LockError>> + Send;
}

/// The lock operations of a key-value store.
pub trait LockStore: Send + Sync + 'static {
    type Lock: StoreLock;

    /// Takes the lock at `key` with `value` if it is free; `None` if someone holds it.
    /// Without renewal the store frees it after `ttl`.
    fn try_lock(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Self::Lock>, LockError>> + Send;

    /// The value of the current holder, or `None` when the lock is free;
    /// see [`HolderWait`].
    fn wait_holder(&self, wait: HolderWait<'_>) -> impl Future<Output = Result<Option<String>, LockError>> + Send;

    /// Ends the lock if `holder` still holds it (destroys its session,
    /// revokes its lease, deletes its node); `false` if someone else does.
    fn break_lock(&self, key: &str, holder: &str) -> impl Future<Output = Result<bool, LockError>> + Send;
}
