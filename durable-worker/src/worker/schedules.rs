//! The schedule sweep: every worker starts the runs of due schedule ticks.

use super::Shared;
use crate::error::WorkerError;
use std::sync::Arc;

/// Schedules handled per store call.
const BATCH: usize = 64;

/// Fires due schedules by the store's clock, every poll interval. Any number of
/// workers may sweep the same store: the store starts each tick's run once and moves
/// the schedule on in the same transaction, so a worker that dies mid-sweep leaves
/// either nothing or the whole tick behind, and the next sweep (of any worker, after a
/// restart too) applies the schedule's catch-up policy to the ticks missed meanwhile.
pub(super) async fn schedule_loop(shared: Arc<Shared>) -> Result<(), WorkerError> {
    let mut shutdown = shared.shutdown.clone();
    loop {
        if shared.is_shutting_down() {
            return Ok(());
        }
        match shared.store.fire_due_schedules(BATCH).await {
            Ok(n) if n == BATCH => continue,
            Ok(_) => {}
            Err(e) if !e.is_retryable() && !matches!(e, durable_core::StoreError::Conflict(_)) => {
                tracing::warn!(error = %e, "firing schedules failed");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.options.poll_interval) => {}
            _ = shutdown.changed() => {}
        }
    }
}
