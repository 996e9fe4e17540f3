//! The candidate/follower loop and the shared view of who is primary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::event::{ElectionEvent, LossReason};
use crate::store::{HolderWait, LockError, LockStore, StoreLock};

/// A fraction, in whole numbers so that durations scale exactly.
#[derive(Debug, Clone, Copy)]
struct Fraction {
    numerator: u32,
    denominator: u32,
}

impl Fraction {
    fn of(self, duration: Duration) -> Duration {
        duration * self.numerator / self.denominator
    }
}

/// Part of the TTL after the start of the last successful renewal during
/// which a primary may act as primary. Must stay below 1 (see the crate docs);
/// the rest covers clock-rate differences and the renewal's round trip.
const STEP_DOWN_PART_OF_TTL: Fraction = Fraction { numerator: 2, denominator: 3 };
const _: () = assert!(STEP_DOWN_PART_OF_TTL.numerator < STEP_DOWN_PART_OF_TTL.denominator);
/// Renewals per TTL: several tries before the step-down deadline.
const RENEWALS_PER_TTL: u32 = 6;
/// First wait after a store failure; doubles up to the TTL.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Where this manager stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Holds the lock: serves requests itself.
    Primary,
    /// Relays requests to `primary`, when one is known.
    Replica { primary: Option<String> },
}

/// The election's settings.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// The lock's key, e.g. `<prefix>/docker/swarm/leader`.
    pub key: String,
    /// This manager's `--advertise` address: the lock's value when it wins.
    pub advertise: String,
    /// `--replication-ttl`: how long the store keeps the lock without renewal.
    pub ttl: Duration,
}

impl ElectionConfig {
    fn step_down_after(&self) -> Duration {
        STEP_DOWN_PART_OF_TTL.of(self.ttl)
    }

    fn renew_every(&self) -> Duration {
        (self.ttl / RENEWALS_PER_TTL).max(Duration::from_millis(20))
    }
}

#[derive(Debug)]
struct State {
    role: Role,
    /// While primary: the instant after which this manager must no longer
    /// act as primary unless a renewal succeeded meanwhile. `None` otherwise.
    deadline: Option<Instant>,
    /// How many times this manager has taken the lock: another manager may
    /// have changed the cluster between two terms, never within one.
    term: u64,
}

/// The shared, always-current answer to "who is primary?", read by every request.
#[derive(Debug)]
pub struct Leadership {
    /// This manager's address: the lock's value while it is primary.
    advertise: String,
    /// The role and its deadline, changed together.
    state: Mutex<State>,
    /// Role changes, for requests waiting out a failover.
    changes: watch::Sender<Role>,
    /// Primary addresses that refused connections, reported by the relay.
    refused: mpsc::UnboundedSender<String>,
}

impl Leadership {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True only while the lock is held and its deadline has not passed, so
    /// a primary that was frozen past its TTL is not primary when it resumes,
    /// even before its renewal loop notices.
    pub fn is_primary(&self) -> bool {
        self.lock().deadline.is_some_and(|d| Instant::now() < d)
    }

    /// While primary, the current term (see [`State::term`]).
    pub fn primary_term(&self) -> Option<u64> {
        let state = self.lock();
        state.deadline.is_some_and(|d| Instant::now() < d).then_some(state.term)
    }

    /// The current role (a primary past its deadline is a replica).
    pub fn role(&self) -> Role {
        let state = self.lock();
        match (&state.role, state.deadline) {
            (Role::Primary, Some(d)) if Instant::now() < d => Role::Primary,
            (Role::Primary, _) => Role::Replica { primary: None },
            (role, _) => role.clone(),
        }
    }

    /// This manager's advertise address.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// Waits until there is a primary other than `not` (or this manager is
    /// primary), up to `within`; returns the role then, or `None` on timeout.
    pub async fn wait_for_primary(&self, not: Option<&str>, within: Duration) -> Option<Role> {
        let mut changes = self.changes.subscribe();
        let deadline = Instant::now() + within;
        loop {
            let role = self.role();
            match &role {
                Role::Primary => return Some(role),
                Role::Replica { primary: Some(p) } if Some(p.as_str()) != not => return Some(role),
                _ => {}
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Reports that `addr`, believed primary, refused a connection: its
    /// process is gone, so its lock may be ended without waiting for the TTL.
    pub fn report_refused(&self, addr: &str) {
        // No receiver means the election has ended; nothing to do then.
        let _ = self.refused.send(addr.to_string());
    }

    fn set(&self, role: Role, deadline: Option<Instant>) {
        {
            let mut state = self.lock();
            if role == Role::Primary {
                state.term += 1;
            }
            state.role = role.clone();
            state.deadline = deadline;
        }
        self.changes.send_replace(role);
    }

    fn extend(&self, deadline: Instant) {
        self.lock().deadline = Some(deadline);
    }
}

/// True once shutdown was asked for, or nobody can ask any more.
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Resolves when [`stopping`] becomes true.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which is a stop too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Where the election stands with a failing store.
struct Backoff {
    /// A failure was reported and no store call has succeeded since, so
    /// further failures of the same outage are not reported again.
    reported: bool,
    /// The pause after the next failure: doubles up to the TTL, and is back
    /// to [`FIRST_BACKOFF`] after a success.
    pause: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { reported: false, pause: FIRST_BACKOFF }
    }

    fn succeeded(&mut self) {
        *self = Backoff::new();
    }
}

/// One manager's candidacy.
pub struct Election<S: LockStore> {
    /// Where the lock lives.
    store: Arc<S>,
    /// Fixed for the election's life.
    config: ElectionConfig,
    /// The shared view of the role, which this election alone changes.
    leadership: Arc<Leadership>,
    /// Primary addresses that refused connections (see [`Leadership::report_refused`]).
    refused: mpsc::UnboundedReceiver<String>,
    /// Told every event, in order, as it happens.
    observer: Box<dyn Fn(ElectionEvent) + Send + Sync>,
}

impl<S: LockStore> Election<S> {
    /// A new candidate and the shared view of its role (initially a replica
    /// that knows no primary). `observer` is told what the election does.
    pub fn new(
        store: Arc<S>,
        config: ElectionConfig,
        observer: impl Fn(ElectionEvent) + Send + Sync + 'static,
    ) -> (Election<S>, Arc<Leadership>) {
        let (refused_tx, refused) = mpsc::unbounded_channel();
        let initial = Role::Replica { primary: None };
        let leadership = Arc::new(Leadership {
            advertise: config.advertise.clone(),
            state: Mutex::new(State { role: initial.clone(), deadline: None, term: 0 }),
            changes: watch::channel(initial).0,
            refused: refused_tx,
        });
        let election =
            Election { store, config, leadership: leadership.clone(), refused, observer: Box::new(observer) };
        (election, leadership)
    }

    /// Competes for the lock until `shutdown` turns true (or its sender is
    /// dropped); a primary then releases the lock before returning, so
    /// another manager takes over at once.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.report(ElectionEvent::Started);
        let mut known: Option<String> = None;
        let mut backoff = Backoff::new();
        while !stopping(&shutdown) {
            let attempt = Instant::now();
            let taken = tokio::select! {
                taken = self.store.try_lock(&self.config.key, &self.config.advertise, self.config.ttl) => taken,
                _ = stopped(&mut shutdown) => continue,
            };
            match taken {
                Ok(Some(lock)) => {
                    backoff.succeeded();
                    known = None;
                    self.lead(lock, attempt, &mut shutdown).await;
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    self.store_failed(&mut backoff, error, &mut shutdown).await;
                    continue;
                }
            }
            // Someone holds the lock: follow it until it is free.
            loop {
                let wait = self.store.wait_holder(HolderWait {
                    key: &self.config.key,
                    known: known.as_deref(),
                    max_wait: self.config.ttl,
                });
                let holder = tokio::select! {
                    holder = wait => holder,
                    Some(addr) = self.refused.recv() => {
                        self.end_dead_lock(known.as_deref(), &addr).await;
                        continue;
                    }
                    _ = stopped(&mut shutdown) => break,
                };
                match holder {
                    Ok(None) => break,
                    Ok(Some(holder)) if holder == self.config.advertise => {
                        // A lock of an earlier run of this manager: it can
                        // never be renewed, so end it rather than wait for it.
                        if let Err(error) = self.store.break_lock(&self.config.key, &holder).await {
                            self.store_failed(&mut backoff, error, &mut shutdown).await;
                        }
                        known = None;
                        break;
                    }
                    Ok(Some(holder)) => {
                        backoff.succeeded();
                        if known.as_deref() != Some(holder.as_str()) {
                            self.report(ElectionEvent::NewLeader { primary: holder.clone() });
                            self.leadership.set(Role::Replica { primary: Some(holder.clone()) }, None);
                            known = Some(holder);
                        }
                    }
                    Err(error) => self.store_failed(&mut backoff, error, &mut shutdown).await,
                }
            }
        }
    }

    /// Holds the lock, renewing it, until it is lost or `shutdown`.
    async fn lead(&mut self, mut lock: S::Lock, taken_at: Instant, shutdown: &mut watch::Receiver<bool>) {
        let step_down_after = self.config.step_down_after();
        let mut deadline = taken_at + step_down_after;
        self.leadership.set(Role::Primary, Some(deadline));
        self.report(ElectionEvent::Acquired);
        let reason = loop {
            let next = Instant::now() + self.config.renew_every();
            tokio::select! {
                _ = tokio::time::sleep_until(next.min(deadline)) => {}
                _ = stopped(shutdown) => {
                    self.leadership.set(Role::Replica { primary: None }, None);
                    if let Err(error) = lock.release().await {
                        self.report(ElectionEvent::ReleaseFailed { error });
                    }
                    self.report(ElectionEvent::Released);
                    return;
                }
            }
            if Instant::now() >= deadline {
                break LossReason::NotRenewedInTime;
            }
            let started = Instant::now();
            match tokio::time::timeout_at(deadline, lock.renew()).await {
                Ok(Ok(())) => {
                    deadline = started + step_down_after;
                    self.leadership.extend(deadline);
                }
                Ok(Err(LockError::Lost(why))) => break LossReason::LockGone(why),
                Ok(Err(error @ LockError::Store(_))) => self.report(ElectionEvent::RenewalFailed { error }),
                Err(_) => break LossReason::NotRenewedInTime,
            }
        };
        self.leadership.set(Role::Replica { primary: None }, None);
        self.report(ElectionEvent::Lost { reason });
        // Best effort: if the store still has our lock, free it for the others.
        let _ = tokio::time::timeout(self.config.renew_every(), lock.release()).await;
    }

    /// The primary at `addr` refused a connection: end its lock if it still
    /// holds it, so the election completes without waiting for the TTL.
    async fn end_dead_lock(&self, known: Option<&str>, addr: &str) {
        if known != Some(addr) {
            return;
        }
        match self.store.break_lock(&self.config.key, addr).await {
            Ok(true) => self.report(ElectionEvent::DeadPrimaryLockEnded { primary: addr.to_string() }),
            Ok(false) => {}
            Err(error) => self.report(ElectionEvent::DeadPrimaryLockNotEnded { primary: addr.to_string(), error }),
        }
    }

    /// After a failed store call: reports the first failure of an outage,
    /// then pauses before the next call.
    async fn store_failed(&self, backoff: &mut Backoff, error: LockError, shutdown: &mut watch::Receiver<bool>) {
        if !backoff.reported {
            self.report(ElectionEvent::StoreFailed { error });
            backoff.reported = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.pause) => {}
            _ = stopped(shutdown) => {}
        }
        backoff.pause = (backoff.pause * 2).min(self.config.ttl);
    }

    fn report(&self, event: ElectionEvent) {
        (self.observer)(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::sync::Notify;

    /// An in-memory lock with TTL expiry, and a switch to make it unreachable.
    #[derive(Default)]
    struct FakeStore {
        /// (holder, token, expires)
        lock: Mutex<Option<(String, u64, Instant)>>,
        next_token: AtomicU64,
        down: AtomicBool,
        changed: Notify,
        breaks: AtomicU64,
    }

    impl FakeStore {
        fn current(&self) -> Option<(String, u64, Instant)> {
            let mut lock = self.lock.lock().unwrap();
            if lock.as_ref().is_some_and(|(_, _, exp)| Instant::now() >= *exp) {
                *lock = None;
            }
            lock.clone()
        }
        fn check(&self) -> Result<(), LockError> {
            if self.down.load(Ordering::SeqCst) {
                Err(LockError::Store("unreachable".into()))
            } else {
                Ok(())
            }
        }
    }

    struct FakeLock {
        store: Arc<FakeStore>,
        token: u64,
        ttl: Duration,
    }

    impl StoreLock for FakeLock {
        async fn renew(&mut self) -> Result<(), LockError> {
            self.store.check()?;
            let _ = self.store.current();
            let mut lock = self.store.lock.lock().unwrap();
            match lock.as_mut() {
                Some((_, token, exp)) if *token == self.token => {
                    *exp = Instant::now() + self.ttl;
                    Ok(())
                }
                _ => Err(LockError::Lost("gone".into())),
            }
        }
        async fn release(self) -> Result<(), LockError> {
            self.store.check()?;
            let mut lock = self.store.lock.lock().unwrap();
            if lock.as_ref().is_some_and(|(_, t, _)| *t == self.token) {
                *lock = None;
            }
            drop(lock);
            self.store.changed.notify_waiters();
            Ok(())
        }
    }

    impl LockStore for Arc<FakeStore> {
        type Lock = FakeLock;
        async fn try_lock(&self, _key: &str, value: &str, ttl: Duration) -> Result<Option<FakeLock>, LockError> {
            self.check()?;
            if self.current().is_some() {
                return Ok(None);
            }
            let token = self.next_token.fetch_add(1, Ordering::SeqCst);
            *self.lock.lock().unwrap() = Some((value.to_string(), token, Instant::now() + ttl));
            self.changed.notify_waiters();
            Ok(Some(FakeLock { store: self.clone(), token, ttl }))
        }
        async fn wait_holder(&self, wait: HolderWait<'_>) -> Result<Option<String>, LockError> {
            let deadline = Instant::now() + wait.max_wait;
            loop {
                self.check()?;
                let current = self.current();
                let holder = current.as_ref().map(|(h, _, _)| h.clone());
                if holder.as_deref() != wait.known || Instant::now() >= deadline {
                    return Ok(holder);
                }
                // Wake for changes, and for expiry.
                let wake = current.map(|(_, _, exp)| exp).unwrap_or(deadline).min(deadline);
                tokio::select! {
                    _ = self.changed.notified() => {}
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
        }
        async fn break_lock(&self, _key: &str, holder: &str) -> Result<bool, LockError> {
            self.check()?;
            self.breaks.fetch_add(1, Ordering::SeqCst);
            let mut lock = self.lock.lock().unwrap();
            if lock.as_ref().is_some_and(|(h, _, _)| h == holder) {
                *lock = None;
                drop(lock);
                self.changed.notify_waiters();
                return Ok(true);
            }
            Ok(false)
        }
    }

    const TTL: Duration = Duration::from_secs(3);

    struct Candidate {
        leadership: Arc<Leadership>,
        /// Every event the election reported, in order.
        events: Arc<Mutex<Vec<ElectionEvent>>>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Candidate {
        fn events(&self) -> Vec<ElectionEvent> {
            self.events.lock().unwrap().clone()
        }
    }

    /// A candidate at `addr`, running, after its first moves.
    async fn candidate(store: &Arc<FakeStore>, addr: &str) -> Candidate {
        let config = ElectionConfig { key: "leader".into(), advertise: addr.into(), ttl: TTL };
        let events = Arc::new(Mutex::new(Vec::new()));
        let recorded = events.clone();
        let (election, leadership) =
            Election::new(Arc::new(store.clone()), config, move |event| recorded.lock().unwrap().push(event));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(election.run(stop_rx));
        settle().await;
        Candidate { leadership, events, stop, task }
    }

    /// "a:1", elected, and "b:1", started after it.
    async fn primary_and_replica(store: &Arc<FakeStore>) -> (Candidate, Candidate) {
        let a = candidate(store, "a:1").await;
        let b = candidate(store, "b:1").await;
        assert!(a.leadership.is_primary());
        (a, b)
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fn new_leader(addr: &str) -> ElectionEvent {
        ElectionEvent::NewLeader { primary: addr.into() }
    }

    #[tokio::test(start_paused = true)]
    async fn one_primary_and_replicas_that_know_it() {
        let store = Arc::new(FakeStore::default());
        let (a, b) = primary_and_replica(&store).await;
        assert_eq!(b.leadership.role(), Role::Replica { primary: Some("a:1".into()) });
        // Renewals keep it primary well past the TTL.
        tokio::time::sleep(TTL * 5).await;
        assert!(a.leadership.is_primary());
        assert!(!b.leadership.is_primary());
        assert_eq!(a.events(), [ElectionEvent::Started, ElectionEvent::Acquired]);
        assert_eq!(b.events(), [ElectionEvent::Started, new_leader("a:1")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_primary_that_cannot_renew_steps_down_before_the_ttl() {
        let store = Arc::new(FakeStore::default());
        let a = candidate(&store, "a:1").await;
        assert!(a.leadership.is_primary());
        store.down.store(true, Ordering::SeqCst);
        let cut = Instant::now();
        while a.leadership.is_primary() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cut.elapsed() < TTL, "stepped down after {:?}, the TTL is {TTL:?}", cut.elapsed());
        tokio::time::sleep(TTL * 3).await;
        let unreachable = LockError::Store("unreachable".into());
        let events = a.events();
        assert!(events.len() > 4, "{events:?}");
        let (first, last) = (&events[..2], &events[events.len() - 2..]);
        assert_eq!(first, [ElectionEvent::Started, ElectionEvent::Acquired]);
        let renewals = &events[2..events.len() - 2];
        assert!(renewals.iter().all(|e| *e == ElectionEvent::RenewalFailed { error: unreachable.clone() }));
        assert_eq!(
            last,
            [
                ElectionEvent::Lost { reason: LossReason::NotRenewedInTime },
                ElectionEvent::StoreFailed { error: unreachable }
            ],
            "one report for the whole outage"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_primary_whose_lock_is_gone_steps_down_at_once() {
        let store = Arc::new(FakeStore::default());
        let a = candidate(&store, "a:1").await;
        // The store ends the lock behind the primary's back; "b" takes it.
        *store.lock.lock().unwrap() = None;
        let b = candidate(&store, "b:1").await;
        assert!(b.leadership.is_primary());
        tokio::time::sleep(TTL).await;
        assert!(!a.leadership.is_primary());
        assert_eq!(
            a.events(),
            [
                ElectionEvent::Started,
                ElectionEvent::Acquired,
                ElectionEvent::Lost { reason: LossReason::LockGone("gone".into()) },
                new_leader("b:1"),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_two_primaries_when_the_store_fails_then_returns() {
        let store = Arc::new(FakeStore::default());
        let (a, b) = primary_and_replica(&store).await;
        let both = || a.leadership.is_primary() && b.leadership.is_primary();
        store.down.store(true, Ordering::SeqCst);
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!both());
        }
        store.down.store(false, Ordering::SeqCst);
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!both());
        }
        assert!(a.leadership.is_primary() || b.leadership.is_primary(), "an election completes once the store is back");
    }

    #[tokio::test(start_paused = true)]
    async fn each_time_the_lock_is_taken_starts_a_new_term() {
        let store = Arc::new(FakeStore::default());
        let config = ElectionConfig { key: "leader".into(), advertise: "a:1".into(), ttl: TTL };
        let (_election, leadership) = Election::new(Arc::new(store), config.clone(), |_| {});
        assert_eq!(leadership.primary_term(), None);
        let deadline = || Some(Instant::now() + config.step_down_after());
        leadership.set(Role::Primary, deadline());
        let first = leadership.primary_term().expect("primary");
        leadership.extend(Instant::now() + config.step_down_after());
        assert_eq!(leadership.primary_term(), Some(first), "a renewal keeps the term");
        leadership.set(Role::Replica { primary: Some("b:1".into()) }, None);
        assert_eq!(leadership.primary_term(), None);
        leadership.set(Role::Primary, deadline());
        assert_eq!(leadership.primary_term(), Some(first + 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_primary_is_not_primary_past_its_deadline() {
        // No election runs: like a frozen process, only the clock moves.
        let store = Arc::new(FakeStore::default());
        let config = ElectionConfig { key: "leader".into(), advertise: "a:1".into(), ttl: TTL };
        let (_election, leadership) = Election::new(Arc::new(store), config.clone(), |_| {});
        leadership.set(Role::Primary, Some(Instant::now() + config.step_down_after()));
        assert!(leadership.is_primary());
        tokio::time::advance(config.step_down_after()).await;
        assert!(!leadership.is_primary(), "past its deadline a primary is not primary, before its loop runs");
        assert_eq!(leadership.role(), Role::Replica { primary: None });
    }

    #[test]
    fn a_primary_steps_down_after_two_thirds_of_the_ttl() {
        let config = ElectionConfig { key: "leader".into(), advertise: "a:1".into(), ttl: TTL };
        assert_eq!(config.step_down_after(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_releases_the_lock_at_once() {
        let store = Arc::new(FakeStore::default());
        let (mut a, b) = primary_and_replica(&store).await;
        let stopped = Instant::now();
        a.stop.send_replace(true);
        while !b.leadership.is_primary() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(stopped.elapsed() < Duration::from_millis(100), "took over after {:?}", stopped.elapsed());
        let _ = (&mut a.task).await;
        assert!(!a.leadership.is_primary());
        assert_eq!(a.events(), [ElectionEvent::Started, ElectionEvent::Acquired, ElectionEvent::Released]);
        assert_eq!(b.events(), [ElectionEvent::Started, new_leader("a:1"), ElectionEvent::Acquired]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_shutdown_sender_stops_the_election() {
        let store = Arc::new(FakeStore::default());
        let a = candidate(&store, "a:1").await;
        drop(a.stop);
        tokio::time::timeout(Duration::from_secs(1), a.task).await.expect("the election ends").expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_primary_loses_its_lock_without_waiting_for_the_ttl() {
        let store = Arc::new(FakeStore::default());
        let (a, b) = primary_and_replica(&store).await;
        assert_eq!(b.leadership.role(), Role::Replica { primary: Some("a:1".into()) });
        // "a" crashes: nothing of it runs any more; its lock stays until the TTL.
        a.task.abort();
        let killed = Instant::now();
        b.leadership.report_refused("a:1");
        while !b.leadership.is_primary() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(killed.elapsed() < Duration::from_millis(100), "took over after {:?}", killed.elapsed());
        assert_eq!(store.breaks.load(Ordering::SeqCst), 1);
        assert_eq!(
            b.events(),
            [
                ElectionEvent::Started,
                new_leader("a:1"),
                ElectionEvent::DeadPrimaryLockEnded { primary: "a:1".into() },
                ElectionEvent::Acquired
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_from_an_old_address_breaks_nothing() {
        let store = Arc::new(FakeStore::default());
        let (_a, b) = primary_and_replica(&store).await;
        b.leadership.report_refused("z:9");
        settle().await;
        assert_eq!(store.breaks.load(Ordering::SeqCst), 0);
        assert_eq!(b.leadership.role(), Role::Replica { primary: Some("a:1".into()) });
        assert_eq!(b.events(), [ElectionEvent::Started, new_leader("a:1")]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_requests_see_the_new_primary() {
        let store = Arc::new(FakeStore::default());
        let b = candidate(&store, "b:1").await;
        assert!(b.leadership.is_primary());
        let c = candidate(&store, "c:1").await;
        let seen = c.leadership.wait_for_primary(None, Duration::from_secs(1)).await;
        assert_eq!(seen, Some(Role::Replica { primary: Some("b:1".into()) }));
        assert_eq!(c.leadership.wait_for_primary(Some("b:1"), Duration::from_millis(200)).await, None);
    }
}
