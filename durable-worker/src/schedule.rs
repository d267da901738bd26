//! Schedules through the [`Client`]: start a workflow on a cron expression or an
//! interval, durably, from any process that shares the store.
//!
//! ```no_run
//! # use durable_worker::{Client, schedule::ScheduleOptions};
//! # use durable_core::schedule::{CatchUpPolicy, ScheduleSpec};
//! # async fn demo(client: Client) -> Result<(), Box<dyn std::error::Error>> {
//! let options = ScheduleOptions::new(ScheduleSpec::cron("0 2 * * *")?)   // 02:00 UTC
//!     .catch_up(CatchUpPolicy::One);
//! client.create_schedule_encoded("report", "nightly-report", durable_core::Payload::encode(&"eu")?, options).await?;
//! for tick in client.schedule_runs("nightly-report", 10).await? {
//!     println!("{} {}", tick.workflow_id, tick.outcome.as_str());
//! }
//! # Ok(()) }
//! ```

use crate::client::Client;
use crate::error::ClientError;
use durable_core::payload::Payload;
use durable_core::registry::Workflow;
use durable_core::schedule::{
    CatchUpPolicy, NewSchedule, OverlapPolicy, ScheduleFire, ScheduleInfo, ScheduleSpec,
};
use std::time::Duration;

/// How a schedule is created, beyond its id, workflow and input.
///
/// ```
/// # use durable_worker::schedule::ScheduleOptions;
/// # use durable_core::schedule::{CatchUpPolicy, OverlapPolicy, ScheduleSpec};
/// # use std::time::Duration;
/// let options = ScheduleOptions::new(ScheduleSpec::every(Duration::from_secs(60))?)
///     .catch_up(CatchUpPolicy::All { max: 10 })
///     .overlap(OverlapPolicy::Allow)
///     .execution_timeout(Duration::from_secs(50));
/// # Ok::<(), durable_core::schedule::ScheduleError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleOptions {
    /// When it fires.
    pub spec: ScheduleSpec,
    /// What to do with ticks missed while no worker ran (default: one run for them all).
    pub catch_up: CatchUpPolicy,
    /// What to do when a tick comes while the previous run still runs (default: skip).
    pub overlap: OverlapPolicy,
    /// The execution timeout of each run it starts.
    pub execution_timeout: Option<Duration>,
    /// Create it paused.
    pub paused: bool,
    /// Replace a schedule of the same id instead of failing.
    pub replace: bool,
}

impl ScheduleOptions {
    /// A schedule firing on `spec`, with the default policies.
    pub fn new(spec: ScheduleSpec) -> Self {
        ScheduleOptions {
            spec,
            catch_up: CatchUpPolicy::default(),
            overlap: OverlapPolicy::default(),
            execution_timeout: None,
            paused: false,
            replace: false,
        }
    }

    /// Sets the catch-up policy: what a worker does with ticks that came due while no
    /// worker ran (see [`CatchUpPolicy`]).
    #[must_use]
    pub fn catch_up(mut self, policy: CatchUpPolicy) -> Self {
        self.catch_up = policy;
        self
    }

    /// Sets the overlap policy (see [`OverlapPolicy`]).
    #[must_use]
    pub fn overlap(mut self, policy: OverlapPolicy) -> Self {
        self.overlap = policy;
        self
    }

    /// Ends each run it starts as failed if it is still running this long after it
    /// started (see [`StartOptions::execution_timeout`](crate::client::StartOptions::execution_timeout)).
    #[must_use]
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.execution_timeout = Some(timeout);
        self
    }

    /// Creates the schedule paused: it starts nothing until resumed.
    #[must_use]
    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }

    /// Replaces a schedule of the same id (its definition, its next tick; the record
    /// of its ticks stays) instead of failing with
    /// [`StoreError::ScheduleExists`](durable_core::StoreError::ScheduleExists).
    #[must_use]
    pub fn replace(mut self) -> Self {
        self.replace = true;
        self
    }
}

impl Client {
    /// Creates a schedule `id` that starts a run of `W` with `input` at each tick of
    /// `options.spec`. Every worker sharing the store sweeps due schedules; each tick
    /// starts one run, with workflow id
    /// [`tick_workflow_id`](durable_core::schedule::tick_workflow_id) (`{id}@{tick}`).
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleExists`](durable_core::StoreError::ScheduleExists) when
    /// the id is taken (unless [`ScheduleOptions::replace`]); an invalid definition
    /// ([`StoreError::Invalid`](durable_core::StoreError::Invalid)); an oversized input.
    pub async fn create_schedule<W: Workflow>(
        &self,
        id: &str,
        input: &W::Input,
        options: ScheduleOptions,
    ) -> Result<ScheduleInfo, ClientError> {
        let payload = Payload::encode(input)?;
        self.create_schedule_encoded(W::NAME, id, payload, options)
            .await
    }

    /// [`Client::create_schedule`] for the workflow named `workflow` with an encoded
    /// input (the name is not checked here: the CLI checks it against its registry).
    ///
    /// # Errors
    ///
    /// As [`Client::create_schedule`].
    pub async fn create_schedule_encoded(
        &self,
        workflow: &str,
        id: &str,
        input: Payload,
        options: ScheduleOptions,
    ) -> Result<ScheduleInfo, ClientError> {
        input.check_size(self.max_payload())?;
        let schedule = NewSchedule {
            id: id.to_owned(),
            workflow: workflow.to_owned(),
            input,
            spec: options.spec,
            catch_up: options.catch_up,
            overlap: options.overlap,
            execution_timeout: options.execution_timeout,
            paused: options.paused,
        };
        Ok(self
            .store()
            .create_schedule(schedule, options.replace)
            .await?)
    }

    /// The schedule `id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleNotFound`](durable_core::StoreError::ScheduleNotFound).
    pub async fn schedule(&self, id: &str) -> Result<ScheduleInfo, ClientError> {
        self.store().get_schedule(id).await?.ok_or_else(|| {
            ClientError::Store(durable_core::StoreError::ScheduleNotFound(id.to_owned()))
        })
    }

    /// Every schedule of the namespace, by id.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>, ClientError> {
        Ok(self.store().list_schedules().await?)
    }

    /// Pauses a schedule: it starts nothing until resumed (a trigger still does).
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleNotFound`](durable_core::StoreError::ScheduleNotFound).
    pub async fn pause_schedule(&self, id: &str) -> Result<ScheduleInfo, ClientError> {
        Ok(self.store().set_schedule_paused(id, true).await?)
    }

    /// Resumes a paused schedule from its next tick after now: ticks that came while it
    /// was paused are not caught up.
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleNotFound`](durable_core::StoreError::ScheduleNotFound).
    pub async fn resume_schedule(&self, id: &str) -> Result<ScheduleInfo, ClientError> {
        Ok(self.store().set_schedule_paused(id, false).await?)
    }

    /// Deletes a schedule and its record of ticks; the runs it started stay.
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleNotFound`](durable_core::StoreError::ScheduleNotFound).
    pub async fn delete_schedule(&self, id: &str) -> Result<(), ClientError> {
        Ok(self.store().delete_schedule(id).await?)
    }

    /// Starts a run of the schedule now, paused or not and whatever its overlap policy;
    /// returns the record, whose `workflow_id` names the run.
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleNotFound`](durable_core::StoreError::ScheduleNotFound).
    pub async fn trigger_schedule(&self, id: &str) -> Result<ScheduleFire, ClientError> {
        Ok(self.store().trigger_schedule(id).await?)
    }

    /// The ticks of a schedule, newest first (at most `limit`; 0 for up to 1,000): the
    /// runs it started, with their workflow ids, and the ticks its overlap policy
    /// skipped.
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleNotFound`](durable_core::StoreError::ScheduleNotFound).
    pub async fn schedule_runs(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<ScheduleFire>, ClientError> {
        Ok(self.store().schedule_fires(id, limit).await?)
    }
}
