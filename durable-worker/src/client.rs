//! [`Client`]: start runs, wait for results, send signals, read status, from any process
//! that shares the store.

use crate::error::ClientError;
use durable_core::error::WorkflowError;
use durable_core::event::{Event, EventKind};
use durable_core::ids::{EventId, WorkflowId};
use durable_core::payload::{DEFAULT_MAX_PAYLOAD_BYTES, Payload};
use durable_core::registry::Workflow;
use durable_core::store::{
    QueueInfo, QueueLimit, RunFamily, RunFilter, RunInfo, RunStatus, SharedStore, StartOutcome,
    StartRequest,
};
use serde::{Serialize, de::DeserializeOwned};
use std::time::{Duration, Instant};

/// Starts and inspects runs. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    store: SharedStore,
    max_payload: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("namespace", &self.store.namespace())
            .finish()
    }
}

/// How a run is started, beyond its workflow, id and input.
///
/// ```
/// # use durable_worker::client::StartOptions;
/// # use std::time::Duration;
/// let options = StartOptions::new().execution_timeout(Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartOptions {
    /// See [`StartOptions::execution_timeout`].
    pub execution_timeout: Option<Duration>,
    /// See [`StartOptions::task_queue`] (empty: the default queue).
    pub task_queue: String,
}

impl StartOptions {
    /// No options: the run may take as long as it takes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the run as failed (kind `ExecutionTimeout`, "execution timeout of 30s
    /// exceeded") if it is still running, or suspended, this long after it started. The
    /// store's clock decides, and any worker's sweep ends it, across restarts; its
    /// pending activities and timers are dropped, and its history records a
    /// `RunTimedOut` event, so replay agrees. The workflow gets no chance to compensate:
    /// for that, select on a timer in the workflow itself.
    #[must_use]
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.execution_timeout = Some(timeout);
        self
    }

    /// Starts the run on this workflow task queue: only workers serving it (`worker
    /// --task-queue`, [`WorkerOptions::task_queues`](crate::WorkerOptions::task_queues))
    /// claim the run. Runs it continues as, resets of it and its child runs keep the
    /// queue. The empty name and `"default"` are the default queue.
    #[must_use]
    pub fn task_queue(mut self, queue: impl Into<String>) -> Self {
        let queue = queue.into();
        self.task_queue = if queue == "default" {
            String::new()
        } else {
            queue
        };
        self
    }
}

/// How a run ended, or that it has not.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Still running.
    Running,
    /// Suspended by a failed activation, with the reason.
    Suspended(String),
    /// Completed with this output.
    Completed(Payload),
    /// Failed with this error.
    Failed(WorkflowError),
}

impl Client {
    /// A client on `store`.
    pub fn new(store: SharedStore) -> Self {
        Client {
            store,
            max_payload: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// Sets the largest payload (input, signal) this client sends.
    #[must_use]
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// The store.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The largest payload this client sends.
    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Starts a run of `W` under `id`; starting the same id again returns the existing
    /// run and does not start another.
    ///
    /// # Errors
    ///
    /// [`ClientError::WorkflowMismatch`] when `id` names a run of another workflow; store
    /// and payload errors.
    pub async fn start<W: Workflow>(
        &self,
        id: impl Into<WorkflowId>,
        input: &W::Input,
    ) -> Result<StartOutcome, ClientError> {
        self.start_with::<W>(id, input, StartOptions::new()).await
    }

    /// [`Client::start`] with options (an execution timeout). Starting an id that
    /// exists returns the existing run, whose options stay as they were.
    ///
    /// # Errors
    ///
    /// As [`Client::start`]; a zero execution timeout is refused.
    pub async fn start_with<W: Workflow>(
        &self,
        id: impl Into<WorkflowId>,
        input: &W::Input,
        options: StartOptions,
    ) -> Result<StartOutcome, ClientError> {
        let payload = Payload::encode(input)?;
        self.start_encoded_with(W::NAME, id.into(), payload, options)
            .await
    }

    /// Starts a run of the workflow named `workflow` with an encoded input.
    ///
    /// # Errors
    ///
    /// As [`Client::start`].
    pub async fn start_encoded(
        &self,
        workflow: &str,
        id: WorkflowId,
        input: Payload,
    ) -> Result<StartOutcome, ClientError> {
        self.start_encoded_with(workflow, id, input, StartOptions::new())
            .await
    }

    /// [`Client::start_encoded`] with options.
    ///
    /// # Errors
    ///
    /// As [`Client::start_with`].
    pub async fn start_encoded_with(
        &self,
        workflow: &str,
        id: WorkflowId,
        input: Payload,
        options: StartOptions,
    ) -> Result<StartOutcome, ClientError> {
        input.check_size(self.max_payload)?;
        let outcome = self
            .store
            .start_run(StartRequest {
                workflow_id: id.clone(),
                workflow: workflow.to_owned(),
                input,
                seed: rand::random(),
                execution_timeout: options.execution_timeout,
                task_queue: options.task_queue,
            })
            .await?;
        if outcome.workflow != workflow {
            return Err(ClientError::WorkflowMismatch {
                id,
                existing: outcome.workflow,
                requested: workflow.to_owned(),
            });
        }
        Ok(outcome)
    }

    /// The latest run of `id`.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotFound`] when there is none.
    pub async fn status(&self, id: &WorkflowId) -> Result<RunInfo, ClientError> {
        self.store
            .find_run(id)
            .await?
            .ok_or_else(|| ClientError::NotFound(id.clone()))
    }

    /// What the latest run of `id` last published with `ctx.set_status(..)`, decoded as
    /// `T`; `None` when it has published nothing yet. A finished run keeps its last value.
    ///
    /// Reading it changes nothing in the run or its history.
    ///
    /// ```ignore
    /// let progress: Option<String> = client.query_status(&WorkflowId("a-1".into())).await?;
    /// ```
    ///
    /// # Errors
    ///
    /// [`ClientError::NotFound`], store errors, and a value that does not decode as `T`.
    pub async fn query_status<T: DeserializeOwned>(
        &self,
        id: &WorkflowId,
    ) -> Result<Option<T>, ClientError> {
        match self.query_status_encoded(id).await? {
            Some(payload) => Ok(Some(payload.decode()?)),
            None => Ok(None),
        }
    }

    /// [`Client::query_status`] without decoding: the payload as published (turn it into
    /// JSON with [`Payload::to_json`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::NotFound`], store errors.
    pub async fn query_status_encoded(
        &self,
        id: &WorkflowId,
    ) -> Result<Option<Payload>, ClientError> {
        let info = self.status(id).await?;
        Ok(self.store.published_status(info.key).await?)
    }

    /// How the latest run of `id` ended, without waiting.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotFound`], store errors.
    pub async fn outcome(&self, id: &WorkflowId) -> Result<RunOutcome, ClientError> {
        let info = self.status(id).await?;
        match info.status {
            // A continued run is never the latest (its successor starts in the same
            // transaction); should one be read all the same, the chain is still going.
            RunStatus::Running | RunStatus::Continued => Ok(RunOutcome::Running),
            RunStatus::Suspended => Ok(RunOutcome::Suspended(info.reason.unwrap_or_default())),
            RunStatus::Completed | RunStatus::Failed => {
                let last = self
                    .store
                    .read_history(info.key, EventId(info.last_event_id.0.saturating_sub(1)))
                    .await?;
                match last.into_iter().last().map(|e| e.kind) {
                    Some(EventKind::RunCompleted { output }) => Ok(RunOutcome::Completed(output)),
                    Some(EventKind::RunFailed { error }) => Ok(RunOutcome::Failed(error)),
                    _ => Err(ClientError::Store(durable_core::StoreError::Corrupt(
                        format!(
                            "run '{id}' is {} but its history does not end with its outcome",
                            info.status
                        ),
                    ))),
                }
            }
        }
    }

    /// Waits until the latest run of `id` finishes (or `timeout` passes) and returns its
    /// encoded output. A run that continues as new is not the end: the wait follows the
    /// chain of runs to the one that completes or fails.
    ///
    /// # Errors
    ///
    /// [`ClientError::Failed`] with the run's error, [`ClientError::Suspended`],
    /// [`ClientError::Timeout`], [`ClientError::NotFound`].
    pub async fn wait_encoded(
        &self,
        id: &WorkflowId,
        timeout: Option<Duration>,
    ) -> Result<Payload, ClientError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(2);
        loop {
            match self.outcome(id).await? {
                RunOutcome::Completed(p) => return Ok(p),
                RunOutcome::Failed(error) => {
                    return Err(ClientError::Failed {
                        id: id.clone(),
                        error,
                    });
                }
                RunOutcome::Suspended(reason) => {
                    return Err(ClientError::Suspended {
                        id: id.clone(),
                        reason,
                    });
                }
                RunOutcome::Running => {}
            }
            if let Some(t) = timeout
                && started.elapsed() >= t
            {
                return Err(ClientError::Timeout(id.clone()));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// Waits for the result of a run of `W`.
    ///
    /// # Errors
    ///
    /// As [`Client::wait_encoded`], and a payload error when the output does not decode.
    pub async fn result<W: Workflow>(
        &self,
        id: impl Into<WorkflowId>,
        timeout: Option<Duration>,
    ) -> Result<W::Output, ClientError> {
        let p = self.wait_encoded(&id.into(), timeout).await?;
        Ok(p.decode()?)
    }

    /// Sends a signal to the latest run of `id`.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotFound`], a finished run, an oversized payload.
    pub async fn signal<T: Serialize>(
        &self,
        id: &WorkflowId,
        name: &str,
        body: &T,
    ) -> Result<(), ClientError> {
        self.signal_encoded(id, name, Payload::encode(body)?).await
    }

    /// Sends an encoded signal.
    ///
    /// # Errors
    ///
    /// As [`Client::signal`].
    pub async fn signal_encoded(
        &self,
        id: &WorkflowId,
        name: &str,
        body: Payload,
    ) -> Result<(), ClientError> {
        body.check_size(self.max_payload)?;
        self.store
            .signal(id, name, body)
            .await
            .map_err(|e| match e {
                durable_core::StoreError::NotFound(id) => ClientError::NotFound(id),
                e => ClientError::Store(e),
            })
    }

    /// Asks the latest run of `id` to cancel.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotFound`], a finished run.
    pub async fn cancel(&self, id: &WorkflowId, reason: &str) -> Result<(), ClientError> {
        self.store
            .request_cancel(id, reason)
            .await
            .map_err(|e| match e {
                durable_core::StoreError::NotFound(id) => ClientError::NotFound(id),
                e => ClientError::Store(e),
            })
    }

    /// The history of the latest run of `id`.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotFound`], store errors.
    pub async fn history(&self, id: &WorkflowId) -> Result<Vec<Event>, ClientError> {
        let info = self.status(id).await?;
        Ok(self.store.read_history(info.key, EventId(0)).await?)
    }

    /// The parent of the latest run of `id` (when it is a child run) and the child runs
    /// it started, by command number, with their status and cancel policy.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotFound`], store errors.
    pub async fn family(&self, id: &WorkflowId) -> Result<RunFamily, ClientError> {
        let info = self.status(id).await?;
        Ok(self.store.run_family(info.key).await?)
    }

    /// Runs matching `filter`.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn list(&self, filter: RunFilter) -> Result<Vec<RunInfo>, ClientError> {
        Ok(self.store.list_runs(filter).await?)
    }

    /// Sets the limits of task queue `queue` for every worker sharing the store (and
    /// namespace), replacing any it had: at most `max_concurrency` attempts running at
    /// once, at most `rate` starts per period (a token bucket by the store's clock,
    /// bursts up to its `burst`). `"default"` or `""` names the default queue. Workers
    /// obey the new numbers from their next start; running attempts are not stopped.
    ///
    /// ```ignore
    /// client.set_queue_limit("payments",
    ///     QueueLimit::new().concurrency(2).rate(RateLimit::per_second(5))).await?;
    /// ```
    ///
    /// # Errors
    ///
    /// A limit [`QueueLimit::validate`] refuses (no limit at all, a zero), store errors.
    pub async fn set_queue_limit(&self, queue: &str, limit: QueueLimit) -> Result<(), ClientError> {
        Ok(self.store.set_queue_limit(queue_name(queue), limit).await?)
    }

    /// Removes the limits of task queue `queue`; false when it had none.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn clear_queue_limit(&self, queue: &str) -> Result<bool, ClientError> {
        Ok(self.store.clear_queue_limit(queue_name(queue)).await?)
    }

    /// Task queue `queue`: its limits, and its attempts running and waiting now.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn queue(&self, queue: &str) -> Result<QueueInfo, ClientError> {
        Ok(self.store.queue_info(queue_name(queue)).await?)
    }

    /// Every task queue that has limits or attempts, by name.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, ClientError> {
        Ok(self.store.list_queues().await?)
    }

    /// Decodes a typed output.
    ///
    /// # Errors
    ///
    /// The payload does not decode into `T`.
    pub fn decode<T: DeserializeOwned>(payload: &Payload) -> Result<T, ClientError> {
        Ok(payload.decode()?)
    }
}

/// The stored name of a task queue: `"default"` is the default queue, stored as `""`.
pub(crate) fn queue_name(queue: &str) -> &str {
    if queue == "default" { "" } else { queue }
}
