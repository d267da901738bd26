//! [`Saga`]: a compensation recorded for each step that took effect, run in reverse
//! order when the run fails or is cancelled.

use crate::context::workflow::{ActivityCall, WorkflowContext};
use crate::error::WorkflowError;
use futures::future::{Either, LocalBoxFuture};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::fmt;
use std::future::Future;

/// The key under which [`SagaError::attach_to`] puts the compensation failures in the
/// returned error's details.
const DETAILS_KEY: &str = "compensation";
/// The key under which the cause's own details are kept.
const CAUSE_DETAILS_KEY: &str = "cause_details";

type CompensationFuture = LocalBoxFuture<'static, Result<(), WorkflowError>>;

struct Compensation {
    name: String,
    run: Box<dyn FnOnce() -> CompensationFuture>,
}

/// Undoes the steps of a workflow that took effect, in reverse order, when a later step
/// fails or the run is cancelled.
///
/// After each step that took effect, record what undoes it with [`Saga::add`] (an
/// activity call, set up but not awaited) or [`Saga::add_with`] (any workflow code).
/// [`Saga::run`] runs a block of steps and, when the block fails or somebody cancels the
/// run, runs the recorded compensations, last first, and returns the failure.
///
/// ```ignore
/// let saga = Saga::new(&ctx);
/// let shipped = saga
///     .run(async {
///         let reservation = ctx.activity::<reserve_stock>(order.clone()).await?;
///         saga.add(ctx.activity::<release_stock>(reservation));
///         let charge = ctx.activity::<charge_card>(order.clone()).await?;
///         saga.add(ctx.activity::<refund>(charge));
///         Ok(ctx.activity::<ship>(order.clone()).await?)
///     })
///     .await;   // a failed `ship`: refund, then release_stock, then its error
/// ```
///
/// # Failing compensations
///
/// A compensation is an ordinary activity call, retried by its own retry policy (set it
/// on the call you add). When one fails for good, the saga stops there by default and
/// leaves the earlier ones unrun; [`Saga::continue_on_error`] runs every compensation
/// instead. Either way, the failures (and the compensations not run) are attached to the
/// error [`Saga::run`] returns: it keeps the kind of the failure that started the
/// compensation, its message says what failed, and [`SagaError::from_error`] reads the
/// details back.
///
/// # Determinism
///
/// Nothing here is recorded beyond the commands of the compensations themselves: an
/// added activity call issues its command only when the compensation runs, so replay
/// sees the same commands in the same order.
pub struct Saga {
    ctx: WorkflowContext,
    continue_on_error: bool,
    steps: RefCell<Vec<Compensation>>,
}

impl fmt::Debug for Saga {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps = self.steps.borrow();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Saga")
            .field("continue_on_error", &self.continue_on_error)
            .field("compensations", &names)
            .finish()
    }
}

impl Saga {
    /// A saga of the run `ctx` belongs to, with no compensations yet; it stops at the
    /// first compensation that fails.
    pub fn new(ctx: &WorkflowContext) -> Self {
        Saga {
            ctx: ctx.clone(),
            continue_on_error: false,
            steps: RefCell::new(Vec::new()),
        }
    }

    /// When `yes`, a compensation that fails does not stop the others: every one runs,
    /// and all failures are reported. The default is to stop at the first failure, since
    /// a later compensation may depend on an earlier one having worked.
    #[must_use]
    pub fn continue_on_error(mut self, yes: bool) -> Self {
        self.continue_on_error = yes;
        self
    }

    /// Records an activity call that undoes the step just taken. The call is not made
    /// now: it is made (with the options set on it) if the saga compensates.
    ///
    /// ```ignore
    /// saga.add(ctx.activity::<refund>(charge.clone()).retry(RetryPolicy::exponential(Duration::from_secs(1))));
    /// ```
    pub fn add<O: DeserializeOwned + 'static>(&self, call: ActivityCall<O>) {
        let name = call.activity_name().to_owned();
        self.push(name, move || {
            Box::pin(async move { call.await.map(drop).map_err(WorkflowError::from) })
        });
    }

    /// Records any workflow code as the compensation of the step just taken (several
    /// activities, a signal to another system, a timer before retrying); `name` names it
    /// in errors.
    pub fn add_with<F, Fut>(&self, name: impl Into<String>, compensation: F)
    where
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = Result<(), WorkflowError>> + 'static,
    {
        self.push(name.into(), move || Box::pin(compensation()));
    }

    fn push(&self, name: String, run: impl FnOnce() -> CompensationFuture + 'static) {
        self.steps.borrow_mut().push(Compensation {
            name,
            run: Box::new(run),
        });
    }

    /// The number of compensations recorded and not run yet.
    pub fn len(&self) -> usize {
        self.steps.borrow().len()
    }

    /// True when no compensation is recorded (or all have run).
    pub fn is_empty(&self) -> bool {
        self.steps.borrow().is_empty()
    }

    /// Runs the recorded compensations, last recorded first, and forgets them.
    ///
    /// # Errors
    ///
    /// A [`SagaError`] naming each compensation that failed for good and, when the saga
    /// stopped at a failure, those it did not run.
    pub async fn compensate(&self) -> Result<(), SagaError> {
        let steps = std::mem::take(&mut *self.steps.borrow_mut());
        let mut failures = Vec::new();
        let mut not_run = Vec::new();
        let mut steps = steps.into_iter().rev();
        while let Some(step) = steps.next() {
            if let Err(error) = (step.run)().await {
                failures.push(FailedCompensation {
                    compensation: step.name,
                    error,
                });
                if !self.continue_on_error {
                    not_run.extend(steps.by_ref().map(|s| s.name));
                    break;
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(SagaError { failures, not_run })
        }
    }

    /// Runs `steps`; when they fail, or when somebody cancels the run while they are
    /// running, runs the compensations recorded so far (see [`Saga::compensate`]) and
    /// returns the failure.
    ///
    /// A cancel stops the steps where they wait (their pending activity results are
    /// discarded) and the run ends with the kind `Cancelled`, after the compensations.
    ///
    /// # Errors
    ///
    /// The error `steps` returned, or a `Cancelled` error, with the failures of the
    /// compensations attached when any failed ([`SagaError::attach_to`]).
    ///
    /// # Cancellation
    ///
    /// Calling this makes the workflow cancel-aware (see
    /// [`WorkflowContext::is_cancel_requested`]): from here on a cancel request does not
    /// end the run at once, it is handled here.
    pub async fn run<T, Fut>(&self, steps: Fut) -> Result<T, WorkflowError>
    where
        Fut: Future<Output = Result<T, WorkflowError>>,
    {
        // The cancel is polled first, so steps issue no new command once it arrived.
        let cancelled = self.ctx.cancelled();
        let cause = match futures::future::select(cancelled, Box::pin(steps)).await {
            Either::Right((Ok(value), _)) => return Ok(value),
            Either::Right((Err(error), _)) => error,
            Either::Left((reason, steps)) => {
                // Drop the steps before compensating: a signal wait among them must
                // hand back what it was given.
                drop(steps);
                WorkflowError::cancelled(format!("the run was cancelled: {reason}"))
            }
        };
        match self.compensate().await {
            Ok(()) => Err(cause),
            Err(failed) => Err(failed.attach_to(cause)),
        }
    }
}

/// A compensation that failed for good.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedCompensation {
    /// The activity name, or the name given to [`Saga::add_with`].
    pub compensation: String,
    /// Its error.
    pub error: WorkflowError,
}

/// Compensations of a [`Saga`] failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub struct SagaError {
    failures: Vec<FailedCompensation>,
    not_run: Vec<String>,
}

impl fmt::Display for SagaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("compensation failed: ")?;
        for (i, failed) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} ({})", failed.compensation, failed.error)?;
        }
        if !self.not_run.is_empty() {
            write!(f, "; not run: {}", self.not_run.join(", "))?;
        }
        Ok(())
    }
}

impl SagaError {
    /// The compensations that failed, in the order they ran.
    pub fn failures(&self) -> &[FailedCompensation] {
        &self.failures
    }

    /// The compensations left unrun after a failure, in the order they would have run
    /// (empty with [`Saga::continue_on_error`]).
    pub fn not_run(&self) -> &[String] {
        &self.not_run
    }

    /// The error `cause` with these failures attached: the same kind, the message
    /// extended with what failed, and the details
    /// `{"compensation": <this error>, "cause_details": <cause's details>}`.
    pub fn attach_to(self, cause: WorkflowError) -> WorkflowError {
        let message = format!("{}; {self}", cause.message());
        let details = serde_json::json!({
            DETAILS_KEY: self,
            CAUSE_DETAILS_KEY: cause.details(),
        });
        WorkflowError::new(cause.kind(), message).with_details(details)
    }

    /// The compensation failures attached to `error` by [`SagaError::attach_to`], if any
    /// (for a caller reading a failed run's error).
    pub fn from_error(error: &WorkflowError) -> Option<SagaError> {
        let value = error.details()?.get(DETAILS_KEY)?;
        serde_json::from_value(value.clone()).ok()
    }
}
