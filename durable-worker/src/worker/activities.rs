//! Running activity attempts: timeouts, panics, retry decisions, and reporting results.

use super::Shared;
use super::heartbeat::Heartbeats;
use super::run::{RunHandle, RunMsg};
use crate::error::WorkerError;
use durable_core::ActivityContext;
use durable_core::clock;
use durable_core::context::activity::HeartbeatSink;
use durable_core::error::{
    ActivityError, KIND_HEARTBEAT_TIMEOUT, KIND_PANIC, KIND_TIMEOUT, StoreError,
};
use durable_core::event::ActivityOptions;
use durable_core::executor::panic_message;
use durable_core::ids::{CommandSeq, RunId, RunKey, WorkflowId};
use durable_core::payload::Payload;
use durable_core::retry;
use durable_core::store::AttemptResult;
use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// One attempt to run.
#[derive(Debug, Clone)]
pub(crate) struct AttemptSpec {
    pub(crate) key: RunKey,
    pub(crate) workflow_id: WorkflowId,
    pub(crate) run_id: RunId,
    pub(crate) seq: CommandSeq,
    pub(crate) name: String,
    pub(crate) input: Payload,
    pub(crate) options: ActivityOptions,
    pub(crate) attempt: u32,
    pub(crate) scheduled_at_ms: i64,
}

/// Where the result goes.
pub(crate) enum Reporter {
    /// To the run actor that scheduled it, to commit with the next activation.
    Local(RunHandle),
    /// Through the store, to the run's inbox.
    Remote,
}

pub(crate) fn spawn_attempt(shared: Arc<Shared>, spec: AttemptSpec, reporter: Reporter) {
    spawn_resuming(shared, spec, None, reporter);
}

/// Runs an attempt whose context returns `last_heartbeat` from `last_heartbeat()`.
pub(crate) fn spawn_resuming(
    shared: Arc<Shared>,
    spec: AttemptSpec,
    last_heartbeat: Option<Payload>,
    reporter: Reporter,
) {
    shared.hold_attempt(spec.key, spec.seq);
    let inline = matches!(reporter, Reporter::Local(_));
    let mut attempt = Box::pin(run_attempt(shared, spec, last_heartbeat, reporter));
    if inline {
        // The run actor that scheduled it calls this: a short activity (a no-op, a
        // computation, a cache hit) finishes in its first poll, and its result is then
        // in the actor's queue without a task spawned or a thread woken. Anything that
        // waits goes on as a task of its own; its first poll registered only a no-op
        // waker, and the task's own first poll registers the real one.
        let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
        if attempt.as_mut().poll(&mut cx).is_ready() {
            return;
        }
    }
    tokio::spawn(attempt);
}

async fn run_attempt(
    shared: Arc<Shared>,
    spec: AttemptSpec,
    last_heartbeat: Option<Payload>,
    reporter: Reporter,
) {
    {
        let Ok(_permit) = shared.activity_slots.clone().acquire_owned().await else {
            return;
        };
        let heartbeats = Heartbeats::new(
            shared.clone(),
            spec.key,
            spec.seq,
            spec.attempt,
            spec.options.heartbeat_timeout_ms.map(Duration::from_millis),
        );
        let result = execute(&shared, &spec, last_heartbeat, &heartbeats).await;
        // A failed attempt's last details are written before the retry is reported, so
        // the next attempt resumes from them.
        heartbeats
            .finish(matches!(result, AttemptResult::Retry { .. }))
            .await;
        if heartbeats.is_lost() {
            // The store ended this attempt (or will, its heartbeat deadline having
            // passed) and retries it by its policy; a report would be refused.
            tracing::info!(run = %spec.key, seq = spec.seq.0, attempt = spec.attempt, activity = %spec.name,
                "activity attempt lost (heartbeat timeout or superseded); its result is dropped");
            shared.drop_attempt(spec.key, spec.seq);
            return;
        }
        match (reporter, result) {
            (Reporter::Local(h), AttemptResult::Completed(p)) => {
                if !h.send(RunMsg::ActivityDone {
                    seq: spec.seq,
                    attempt: spec.attempt,
                    result: Ok(p.clone()),
                }) {
                    report(
                        &shared,
                        spec.key,
                        spec.seq,
                        spec.attempt,
                        AttemptResult::Completed(p),
                    )
                    .await;
                }
            }
            (Reporter::Local(h), AttemptResult::Failed(e)) => {
                if !h.send(RunMsg::ActivityDone {
                    seq: spec.seq,
                    attempt: spec.attempt,
                    result: Err(e.clone()),
                }) {
                    report(
                        &shared,
                        spec.key,
                        spec.seq,
                        spec.attempt,
                        AttemptResult::Failed(e),
                    )
                    .await;
                }
            }
            (_, result) => report(&shared, spec.key, spec.seq, spec.attempt, result).await,
        }
    }
}

async fn execute(
    shared: &Arc<Shared>,
    spec: &AttemptSpec,
    last_heartbeat: Option<Payload>,
    heartbeats: &Arc<Heartbeats>,
) -> AttemptResult {
    shared
        .stats
        .activity_attempts
        .fetch_add(1, Ordering::Relaxed);
    let Some(activity) = shared.registry.find_activity(&spec.name) else {
        return AttemptResult::Failed(ActivityError::non_retryable(
            "UnknownActivity",
            format!("activity {:?} is not registered in this worker", spec.name),
        ));
    };
    let ctx = ActivityContext::new(
        spec.workflow_id.clone(),
        spec.run_id.clone(),
        spec.name.clone(),
        spec.seq,
        spec.attempt,
    )
    .with_last_heartbeat(last_heartbeat)
    .with_heartbeat_sink(heartbeats.clone());
    let timeout = spec
        .options
        .start_to_close_ms
        .map(Duration::from_millis)
        .unwrap_or(shared.options.default_start_to_close);
    let call = AssertUnwindSafe(activity.call(ctx.clone(), spec.input.clone())).catch_unwind();
    let heartbeat_timeout = spec.options.heartbeat_timeout_ms.map(Duration::from_millis);
    let missed = async {
        match heartbeat_timeout {
            Some(t) => heartbeats.missed(t).await,
            None => std::future::pending().await,
        }
    };
    let ran = tokio::select! {
        biased;
        ran = tokio::time::timeout(timeout, call) => Some(ran),
        () = missed => None,
    };
    let outcome = match ran {
        None => {
            // Stop running it and report the timeout at once, like start-to-close; the
            // store's sweep is the backstop for a worker too stalled to do this (its
            // report is then refused).
            ctx.cancel();
            Err(ActivityError::retryable(
                KIND_HEARTBEAT_TIMEOUT,
                format!(
                    "attempt {} sent no heartbeat for {} ms, its heartbeat timeout",
                    spec.attempt,
                    heartbeat_timeout.unwrap_or_default().as_millis()
                ),
            ))
        }
        Some(Err(_)) => {
            ctx.cancel();
            Err(ActivityError::retryable(
                KIND_TIMEOUT,
                format!(
                    "attempt {} ran past its start-to-close timeout of {} ms",
                    spec.attempt,
                    timeout.as_millis()
                ),
            ))
        }
        Some(Ok(Err(panic))) => Err(ActivityError::retryable(
            KIND_PANIC,
            format!(
                "activity {} panicked: {}",
                spec.name,
                panic_message(panic.as_ref())
            ),
        )),
        Some(Ok(Ok(result))) => result,
    };
    let outcome = match outcome {
        Ok(p) if p.len() > shared.options.max_payload_bytes => Err(ActivityError::non_retryable(
            "PayloadTooLarge",
            format!(
                "the output of activity {} is {} bytes, over the limit of {} bytes",
                spec.name,
                p.len(),
                shared.options.max_payload_bytes
            ),
        )),
        other => other,
    };
    match outcome {
        Ok(p) => AttemptResult::Completed(p),
        Err(error) => {
            let next = retry::next_attempt_at(
                &spec.options,
                &error,
                spec.attempt,
                spec.scheduled_at_ms,
                clock::now_ms(),
                rand::random::<f64>(),
            );
            match next {
                Some(at) => {
                    tracing::info!(workflow_id = %spec.workflow_id, seq = spec.seq.0, activity = %spec.name,
                        attempt = spec.attempt, error = %error, "activity attempt failed; will retry");
                    AttemptResult::Retry {
                        error,
                        next_attempt_at_ms: at,
                    }
                }
                None => AttemptResult::Failed(error.with_attempts(spec.attempt)),
            }
        }
    }
}

/// Records an attempt's result through the store, retrying a busy store briefly.
pub(crate) async fn report(
    shared: &Arc<Shared>,
    key: RunKey,
    seq: CommandSeq,
    attempt: u32,
    result: AttemptResult,
) {
    record(shared, key, seq, attempt, result).await;
    // Recorded, refused or given up on: either way its lease is no longer this
    // worker's to keep.
    shared.drop_attempt(key, seq);
}

async fn record(
    shared: &Arc<Shared>,
    key: RunKey,
    seq: CommandSeq,
    attempt: u32,
    result: AttemptResult,
) {
    let mut delay = Duration::from_millis(20);
    for _ in 0..8 {
        match shared
            .store
            .report_attempt(&shared.id, key, seq, attempt, result.clone())
            .await
        {
            Ok(()) => return,
            Err(StoreError::Conflict(reason)) => {
                tracing::info!(run = %key, seq = seq.0, attempt, reason, "activity result discarded: the attempt was superseded");
                return;
            }
            Err(e) => {
                tracing::warn!(run = %key, seq = seq.0, error = %e, "recording an activity result failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::error!(run = %key, seq = seq.0, "could not record an activity result; its lease will expire and the attempt will run again");
}

/// The task queues a worker with `task_queues` claims from, as the store names them:
/// the default queue is the empty string (also spelled `default`), and no queues at all
/// means the default one.
pub(crate) fn served_queues(task_queues: &[String]) -> Vec<String> {
    let mut queues: Vec<String> = task_queues.to_vec();
    if queues.is_empty() || queues.iter().any(|q| q.is_empty() || q == "default") {
        queues.extend([String::new(), "default".to_owned()]);
    }
    queues.sort();
    queues.dedup();
    queues
}

/// Claims activity attempts other workers (or this one, before a crash) scheduled.
pub(crate) async fn claim_loop(shared: Arc<Shared>) -> Result<(), WorkerError> {
    let notify = shared.store.work_notifier();
    let queues = served_queues(&shared.options.task_queues);
    loop {
        if shared.is_shutting_down() {
            return Ok(());
        }
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let free = shared.activity_slots.available_permits().min(128);
        if free > 0 {
            match shared
                .store
                .claim_activities(
                    &shared.id,
                    &shared.activity_names,
                    &queues,
                    free,
                    shared.options.lease,
                )
                .await
            {
                Ok(tasks) => {
                    let n = tasks.len();
                    for t in tasks {
                        spawn_resuming(
                            shared.clone(),
                            AttemptSpec {
                                key: t.key,
                                workflow_id: t.workflow_id,
                                run_id: t.run_id,
                                seq: t.seq,
                                name: t.name,
                                input: t.input,
                                options: t.options,
                                attempt: t.attempt,
                                scheduled_at_ms: t.scheduled_at_ms,
                            },
                            t.last_heartbeat,
                            Reporter::Remote,
                        );
                    }
                    if n == free {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming activities failed"),
            }
        }
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(shared.options.poll_interval) => {}
            _ = &mut notified => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::served_queues;

    #[test]
    fn served_queues_name_the_default_queue_as_the_store_does() {
        let q = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(served_queues(&[]), q(&["", "default"]));
        assert_eq!(served_queues(&q(&["payments"])), q(&["payments"]));
        assert_eq!(
            served_queues(&q(&["payments", "default"])),
            q(&["", "default", "payments"])
        );
    }
}
