//! The restart policy: whether, and when, a task that ended by itself gets
//! a successor in its slot.

use super::TaskRecord;
use crate::services::model::{RestartCondition, RestartPolicy};
use crate::services::timestamp::Timestamp;

/// The decision for a slot whose newest task ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Restart {
    Now,
    /// When the restart delay runs out.
    At(Timestamp),
    Never,
}

/// Decides for the slot's tasks (oldest first; the last one ended by
/// itself). Attempts are the slot's tasks that ended by themselves within
/// `Window` before the last one ended, so the decision does not change as
/// time passes: a slot given up stays given up, as in swarm mode.
pub(super) fn decide(policy: &RestartPolicy, tasks: &[&TaskRecord], now: Timestamp) -> Restart {
    let Some(latest) = tasks.last() else { return Restart::Never };
    let ended = latest.task.status.timestamp;
    match policy.condition() {
        RestartCondition::None => return Restart::Never,
        RestartCondition::OnFailure if !latest.task.status.state.is_failure() => return Restart::Never,
        RestartCondition::OnFailure | RestartCondition::Any => {}
    }
    let max = policy.max_attempts();
    if max > 0 {
        let since = policy.window().map(|w| ended - w);
        let attempts = tasks
            .iter()
            .filter(|t| t.task.status.state.ended_by_itself())
            .filter(|t| since.is_none_or(|s| t.task.status.timestamp >= s))
            .count();
        if u64::try_from(attempts).unwrap_or(u64::MAX) > max {
            return Restart::Never;
        }
    }
    let at = ended + policy.delay();
    if now >= at {
        Restart::Now
    } else {
        Restart::At(at)
    }
}
