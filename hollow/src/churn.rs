//! Churn: synthetic container lifecycles (create, start, stop, destroy)
//! on some engines of a fleet at a steady total rate of events. Each step
//! is a real change of an engine's state with the events dockerd would
//! emit for it, so a manager's refreshes agree with what the events said.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::engine::Engine;
use crate::model::Spec;

/// What churn to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChurnConfig {
    /// Events per second over all churning engines (8 per lifecycle: create;
    /// connect, start; kill, die, disconnect, stop; destroy). Must be > 0.
    pub events_per_second: f64,
    /// How many engines churn, the fleet's first ones; `None` for all.
    pub engines: Option<usize>,
}

impl ChurnConfig {
    /// `events_per_second` over every engine of the fleet.
    pub fn all(events_per_second: f64) -> ChurnConfig {
        ChurnConfig { events_per_second, engines: None }
    }
}

/// How often the driver wakes up: small enough for a smooth rate, large
/// enough to stay cheap at low rates.
const TICK: Duration = Duration::from_millis(10);
/// Steps between yields, so a high rate does not hog a worker thread.
const STEPS_PER_YIELD: u32 = 256;

/// Runs lifecycles on `engines`, round-robin, at `rate` events per second,
/// until aborted. A token bucket holds at most one second of events, so a
/// process that was starved for a while does not burst to catch up.
pub async fn run(engines: Vec<Arc<Engine>>, spec: Arc<Spec>, rate: f64) {
    if engines.is_empty() || rate.is_nan() || rate <= 0.0 {
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut credit = 0.0f64;
    let mut next = 0usize;
    loop {
        tick.tick().await;
        let now = Instant::now();
        credit = (credit + rate * (now - last).as_secs_f64()).min(rate.max(8.0));
        last = now;
        let mut steps = 0u32;
        // A step emits 1 to 4 events; the overshoot is paid back next tick.
        // One that emitted none (its create refused) still costs one, so
        // the loop always ends.
        while credit >= 1.0 {
            credit -= engines[next].churn_step(&spec).max(1) as f64;
            next = (next + 1) % engines.len();
            steps += 1;
            if steps % STEPS_PER_YIELD == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
}
