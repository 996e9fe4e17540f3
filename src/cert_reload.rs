//! Certificate rotation without a restart: the TLS files are read again on
//! SIGHUP and whenever they change on disk.
//!
//! A reload swaps the configurations that *new* connections are made with
//! (see `swarm_proxy::TlsConfigs`); established connections keep theirs and
//! finish undisturbed. A set that does not load (a key that does not match
//! its certificate, a half-written file) is refused and the old one stays.

use std::sync::Arc;
use std::time::Duration;

use swarm_proxy::TlsConfigs;

use crate::observe::Observed;

/// How often the files are looked at. Only their metadata is read, so this
/// costs nothing; it bounds how long a replaced certificate goes unnoticed.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What made a reload happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The process got SIGHUP.
    Hangup,
    /// The files' metadata changed since the last attempt.
    FilesChanged,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Hangup => "SIGHUP",
            Trigger::FilesChanged => "certificate files changed",
        }
    }
}

/// Reloads `tls` whenever its files change, and on every value that arrives
/// on `hangups` (a SIGHUP each), until `hangups` closes and forever after
/// that on file changes alone.
pub async fn run(tls: Arc<TlsConfigs>, mut hangups: Option<tokio::sync::mpsc::Receiver<()>>) {
    // The stamp of the last set tried, loaded or not: a broken set is
    // reported once, not on every poll, and retried when it changes again.
    let mut tried = tls.files().stamp();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            hangup = async { hangups.as_mut()?.recv().await }, if hangups.is_some() => {
                if hangup.is_none() {
                    hangups = None;
                    continue;
                }
                Trigger::Hangup
            }
            _ = poll.tick() => {
                let now = tls.files().stamp();
                if now == tried {
                    continue;
                }
                tried = now;
                Trigger::FilesChanged
            }
        };
        if trigger == Trigger::Hangup {
            tried = tls.files().stamp();
        }
        match tls.reload() {
            Ok(()) => Observed::TlsReloaded { trigger: trigger.as_str() }.emit(),
            Err(e) => Observed::TlsReloadRefused { trigger: trigger.as_str(), error: &e.to_string() }.emit(),
        }
    }
}

/// A channel that gets one value per SIGHUP the process receives.
pub fn hangups() -> std::io::Result<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut signals = signal(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while signals.recv().await.is_some() {
            // A reload already pending covers this signal too.
            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                return;
            }
        }
    });
    Ok(rx)
}
