//! Turning a backend into a stream of engine-list changes.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::entry::Entry;
use crate::error::DiscoveryError;
use crate::kv::{engines, KvConfig, KvPair, Store};
use crate::url::Backend;

/// How long connecting to a store may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait before reconnecting to a store; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting to a store.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest single wait for a change, so a silently dead store is noticed.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// What a watch reports: a new list, or that the backend failed (the
/// previous list stays valid until a new one arrives).
pub type Update = Result<Vec<Entry>, DiscoveryError>;

impl Backend {
    /// Reports the list now and whenever it changes, polling dynamic
    /// backends every `heartbeat`. Failures are reported once per change of
    /// state, not on every poll. Ends when the receiver is dropped.
    pub fn watch(self, heartbeat: Duration) -> mpsc::Receiver<Update> {
        if let Backend::Kv(config) = self {
            return watch_kv(config, heartbeat);
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut last: Option<Update> = None;
            loop {
                let mut current = self.fetch().await;
                if let Ok(list) = &mut current {
                    list.sort();
                    list.dedup();
                }
                if last.as_ref() != Some(&current) {
                    if tx.send(current.clone()).await.is_err() {
                        return;
                    }
                    last = Some(current);
                }
                if !self.is_dynamic() {
                    tx.closed().await;
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(heartbeat) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        rx
    }
}

/// Follows a store directory with the store's own change notification.
/// A store that fails is reported once; the last list stays valid, and the
/// watch reconnects with backoff and reports the list again once it is back.
fn watch_kv(config: KvConfig, heartbeat: Duration) -> mpsc::Receiver<Update> {
    let (tx, rx) = mpsc::channel(4);
    let dir = config.nodes_dir();
    let max_wait = heartbeat.clamp(Duration::from_secs(1), MAX_WAIT);
    tokio::spawn(async move {
        let mut reporter = Reporter { tx, last: None };
        let mut backoff = FIRST_BACKOFF;
        loop {
            match Store::connect(&config, CONNECT_TIMEOUT).await {
                Ok(store) => {
                    backoff = FIRST_BACKOFF;
                    let mut known: Option<Vec<KvPair>> = None;
                    loop {
                        let waited = tokio::select! {
                            waited = store.wait_dir(&dir, known.as_deref(), max_wait) => waited,
                            _ = reporter.tx.closed() => return,
                        };
                        match waited {
                            Ok(pairs) => {
                                if !reporter.report(Ok(engines(&pairs))).await {
                                    return;
                                }
                                known = Some(pairs);
                            }
                            Err(e) => {
                                if !reporter.report(Err(DiscoveryError::Store(e))).await {
                                    return;
                                }
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    if !reporter.report(Err(DiscoveryError::Store(e))).await {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = reporter.tx.closed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    rx
}

/// Sends updates, skipping repeats: the same list twice, or a second failure
/// in a row (failures are reported once per change of state).
struct Reporter {
    tx: mpsc::Sender<Update>,
    last: Option<Update>,
}

impl Reporter {
    /// False when nobody listens any more.
    async fn report(&mut self, update: Update) -> bool {
        let repeat = match (&self.last, &update) {
            (Some(Err(_)), Err(_)) => true,
            (Some(last), current) => last == current,
            (None, _) => false,
        };
        if repeat {
            return !self.tx.is_closed();
        }
        self.last = Some(update.clone());
        self.tx.send(update).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_are_reported_once_per_state() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut r = Reporter { tx, last: None };
        let down = || Err(DiscoveryError::Unsupported("down".into()));
        assert!(r.report(Ok(vec![])).await);
        assert!(r.report(down()).await);
        assert!(r.report(Err(DiscoveryError::Unsupported("down again".into()))).await);
        assert!(r.report(Ok(vec![])).await);
        let mut seen = Vec::new();
        while let Ok(u) = rx.try_recv() {
            seen.push(u.is_ok());
        }
        assert_eq!(seen, [true, false, true]);
    }

    #[tokio::test]
    async fn file_changes_are_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster");
        std::fs::write(&path, "10.0.0.1:2375\n").unwrap();
        let backend = Backend::File(path.clone());
        let mut rx = backend.watch(Duration::from_millis(20));
        let first = rx.recv().await.unwrap().unwrap();
        assert_eq!(first.len(), 1);
        std::fs::write(&path, "10.0.0.1:2375\n10.0.0.2:2375\n").unwrap();
        let second = rx.recv().await.unwrap().unwrap();
        assert_eq!(second.len(), 2);
        std::fs::remove_file(&path).unwrap();
        assert!(rx.recv().await.unwrap().is_err());
        // The same failure is not reported again on the next polls.
        let quiet = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
        assert!(quiet.is_err());
    }
}
