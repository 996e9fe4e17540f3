//! Rolling updates and rollbacks: out-of-date tasks are replaced at most
//! `Parallelism` at a time (0: all at once), the next batch starting `Delay`
//! after the previous one is running; failed tasks of the update beyond
//! `MaxFailureRatio` of the slots trigger `FailureAction`; the update
//! completes `Monitor` after its last task started running.
//!
//! The update's progress is the service's `UpdateStatus` (`StartedAt` marks
//! which tasks belong to it: the current-spec tasks created since), so the
//! planner keeps no state between passes. A failure counts while the update
//! is in progress, not only within `Monitor` of its task starting.

use super::{Action, Planner, StopReason, TaskRecord};
use crate::services::model::{FailureAction, Service, SlotKey, TaskState, UpdateState, UpdateStatus};
use crate::services::timestamp::Timestamp;

/// Plans the update of `service`: `tasks` are its unreleased tasks, `dirty`
/// its live out-of-date tasks with their slots, `total` its slot count;
/// `starting` tells that this pass already starts tasks of the service.
pub(super) fn plan_update(
    p: &mut Planner<'_>,
    service: &Service,
    tasks: &[&TaskRecord],
    mut dirty: Vec<(SlotKey, &TaskRecord)>,
    total: usize,
    starting: bool,
) {
    dirty.sort_by(|a, b| a.0.cmp(&b.0));
    let status = match &service.update_status {
        Some(s) if s.state.is_paused() => return,
        Some(s) if s.state.in_progress() => s,
        // No update under way: out-of-date tasks start one.
        _ => {
            if !dirty.is_empty() {
                set_status(p, service, UpdateState::Updating, Some(p.now), None, "update in progress".into());
                replace_batch(p, service, &dirty, false);
            }
            return;
        }
    };
    let rolling_back = status.state.is_rollback();
    let settings = service.spec.update_settings(rolling_back);
    let started = status.started_at.unwrap_or(Timestamp::EPOCH);
    let updated: Vec<&TaskRecord> =
        tasks.iter().copied().filter(|t| t.task.created_at >= started && t.is_current(&service.spec)).collect();

    let failed: Vec<&TaskRecord> = updated.iter().copied().filter(|t| t.task.status.state.is_failure()).collect();
    if let Some(first) = failed.first() {
        if failed.len() as f64 > settings.max_failure_ratio() * total as f64 {
            let why = format!("due to failure or early termination of task {}", first.task.id);
            match settings.failure_action() {
                FailureAction::Continue => {}
                FailureAction::Rollback if !rolling_back && service.previous_spec.is_some() => {
                    p.out.actions.push(Action::Rollback { service_id: service.id.clone() });
                    let message = format!("rollback started {why}");
                    set_status(p, service, UpdateState::RollbackStarted, Some(p.now), None, message);
                    return;
                }
                // Nothing to roll back to (or a rollback failing): pause.
                FailureAction::Pause | FailureAction::Rollback => {
                    let (state, what) = if rolling_back {
                        (UpdateState::RollbackPaused, "rollback")
                    } else {
                        (UpdateState::Paused, "update")
                    };
                    set_status(p, service, state, status.started_at, None, format!("{what} paused {why}"));
                    return;
                }
            }
        }
    }

    // The current batch is finished once all its tasks run.
    if starting || updated.iter().any(|t| t.live() && t.task.status.state < TaskState::Running) {
        return;
    }
    let last_running = updated
        .iter()
        .filter(|t| t.live() && t.task.status.state == TaskState::Running)
        .map(|t| t.task.status.timestamp)
        .max();
    if dirty.is_empty() {
        let done_at = last_running.map_or(p.now, |t| t + settings.monitor());
        if p.now >= done_at {
            let (state, message) = if rolling_back {
                (UpdateState::RollbackCompleted, "rollback completed")
            } else {
                (UpdateState::Completed, "update completed")
            };
            set_status(p, service, state, status.started_at, Some(p.now), message.into());
        } else {
            p.wake(done_at);
        }
        return;
    }
    if let Some(next) = last_running.map(|t| t + settings.delay()) {
        if p.now < next {
            p.wake(next);
            return;
        }
    }
    replace_batch(p, service, &dirty, rolling_back);
}

/// Replaces the first `Parallelism` out-of-date tasks, stop first.
fn replace_batch(p: &mut Planner<'_>, service: &Service, dirty: &[(SlotKey, &TaskRecord)], rolling_back: bool) {
    let parallelism = service.spec.update_settings(rolling_back).parallelism();
    let batch = usize::try_from(parallelism).ok().filter(|n| *n > 0).unwrap_or(dirty.len()).min(dirty.len());
    let reason = if rolling_back { StopReason::RolledBack } else { StopReason::Updated };
    for (key, task) in &dirty[..batch] {
        p.replace(service, key, task, reason);
    }
}

fn set_status(
    p: &mut Planner<'_>,
    service: &Service,
    state: UpdateState,
    started_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
    message: String,
) {
    let status = UpdateStatus { state, started_at, completed_at, message };
    p.out.actions.push(Action::SetUpdateStatus { service_id: service.id.clone(), status });
}
