//! An in-memory lock store for elections between in-process managers, with
//! TTL expiry. Runtime-agnostic (a std mutex and a watch channel), since each
//! manager runs on a runtime of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use swarm_leadership::{HolderWait, LockError, LockStore, StoreLock};
use tokio::sync::watch;

struct Held {
    holder: String,
    token: u64,
    expires: Instant,
}

struct Shared {
    lock: Mutex<Option<Held>>,
    next_token: AtomicU64,
    /// Bumped on every change of holder, to wake followers.
    changes: watch::Sender<u64>,
}

impl Shared {
    /// The holder and expiry of the lock, dropping an expired one.
    fn current(&self) -> Option<(String, Instant)> {
        let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if lock.as_ref().is_some_and(|held| Instant::now() >= held.expires) {
            *lock = None;
            drop(lock);
            self.changed();
            return None;
        }
        lock.as_ref().map(|held| (held.holder.clone(), held.expires))
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// One manager's handle on the shared store.
#[derive(Clone)]
pub struct MemoryLockStore {
    shared: Arc<Shared>,
    /// False for a manager that follows the election but never takes the
    /// lock, so a test decides which manager becomes the next primary.
    may_lead: bool,
}

impl Default for MemoryLockStore {
    fn default() -> MemoryLockStore {
        let shared = Shared { lock: Mutex::new(None), next_token: AtomicU64::new(0), changes: watch::channel(0).0 };
        MemoryLockStore { shared: Arc::new(shared), may_lead: true }
    }
}

impl MemoryLockStore {
    /// A handle on the same store for a manager that never becomes primary.
    pub fn follower(&self) -> MemoryLockStore {
        MemoryLockStore { shared: self.shared.clone(), may_lead: false }
    }

    /// Waits until someone holds the lock, as if another candidate always
    /// took it first. Returning at once while the lock is free would make
    /// the election retry in a loop that never yields.
    async fn lose_the_race(&self) {
        let mut changes = self.shared.changes.subscribe();
        while self.shared.current().is_none() {
            // The sender lives as long as `self`, so this cannot fail.
            let _ = changes.changed().await;
        }
    }

    /// Who holds the lock now.
    pub fn holder(&self) -> Option<String> {
        self.shared.current().map(|(holder, _)| holder)
    }
}

pub struct MemoryLock {
    shared: Arc<Shared>,
    token: u64,
    ttl: Duration,
}

impl StoreLock for MemoryLock {
    async fn renew(&mut self) -> Result<(), LockError> {
        let _ = self.shared.current();
        let mut lock = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        match lock.as_mut() {
            Some(held) if held.token == self.token => {
                held.expires = Instant::now() + self.ttl;
                Ok(())
            }
            _ => Err(LockError::Lost("the lock expired or was broken".into())),
        }
    }

    async fn release(self) -> Result<(), LockError> {
        let released = {
            let mut lock = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            let ours = lock.as_ref().is_some_and(|held| held.token == self.token);
            if ours {
                *lock = None;
            }
            ours
        };
        if released {
            self.shared.changed();
        }
        Ok(())
    }
}

impl LockStore for MemoryLockStore {
    type Lock = MemoryLock;

    async fn try_lock(&self, _key: &str, value: &str, ttl: Duration) -> Result<Option<MemoryLock>, LockError> {
        if !self.may_lead {
            self.lose_the_race().await;
            return Ok(None);
        }
        if self.shared.current().is_some() {
            return Ok(None);
        }
        let token = self.shared.next_token.fetch_add(1, Ordering::SeqCst);
        *self.shared.lock.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Held { holder: value.to_string(), token, expires: Instant::now() + ttl });
        self.shared.changed();
        Ok(Some(MemoryLock { shared: self.shared.clone(), token, ttl }))
    }

    async fn wait_holder(&self, wait: HolderWait<'_>) -> Result<Option<String>, LockError> {
        let deadline = Instant::now() + wait.max_wait;
        // Subscribed before reading, so no change falls between the two.
        let mut changes = self.shared.changes.subscribe();
        loop {
            let current = self.shared.current();
            let holder = current.as_ref().map(|(holder, _)| holder.clone());
            if holder.as_deref() != wait.known || Instant::now() >= deadline {
                return Ok(holder);
            }
            let wake = current.map_or(deadline, |(_, expires)| expires.min(deadline));
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(wake.saturating_duration_since(Instant::now())) => {}
            }
        }
    }

    async fn break_lock(&self, _key: &str, holder: &str) -> Result<bool, LockError> {
        let broken = {
            let mut lock = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            let theirs = lock.as_ref().is_some_and(|held| held.holder == holder);
            if theirs {
                *lock = None;
            }
            theirs
        };
        if broken {
            self.shared.changed();
        }
        Ok(broken)
    }
}
