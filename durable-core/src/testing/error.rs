//! [`TestEnvError`]: why a test environment could not drive its run.

use crate::error::ReplayError;
use crate::ids::CommandSeq;
use crate::payload::PayloadError;
use std::time::Duration;

/// A [`TestEnv`](super::TestEnv) could not drive its run to where it was asked to.
///
/// A failure of the workflow itself is not this error: `run_to_completion` returns it as
/// the run's outcome, `Ok(Err(WorkflowError))`, exactly as the run would record it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestEnvError {
    /// A method that needs a run was called before [`TestEnv::start`](super::TestEnv::start).
    #[error("no run has been started in this test environment; call start::<W>(..) first")]
    NotStarted,
    /// [`TestEnv::start`](super::TestEnv::start) was called a second time.
    #[error(
        "this test environment already holds a run of workflow {workflow:?}; \
         a TestEnv drives one run, make another for the next"
    )]
    AlreadyStarted {
        /// The workflow of the run already started.
        workflow: String,
    },
    /// The result was asked for as another workflow type than the one started.
    #[error("the run is of workflow {started:?}, not {requested:?}")]
    WrongWorkflow {
        /// The workflow started.
        started: String,
        /// The workflow type the caller named.
        requested: String,
    },
    /// The code continued as new as a workflow the registry does not hold.
    #[error(
        "the run continued as new as workflow {name:?}, which is not registered; add it to \
         the registry given to TestEnv::new"
    )]
    UnknownWorkflow {
        /// The workflow name.
        name: String,
    },
    /// The run continued as new more times than the environment allows.
    #[error(
        "the run continued as new {limit} times; a workflow that continues at once every time never ends"
    )]
    TooManyRuns {
        /// The limit.
        limit: usize,
    },
    /// The code scheduled an activity that is neither registered nor mocked.
    #[error(
        "activity {name:?} (command {seq}) is neither registered nor mocked; add it to the \
         registry or replace it with mock_activity::<{name}>(..)"
    )]
    UnknownActivity {
        /// The activity name.
        name: String,
        /// The command that scheduled it.
        seq: CommandSeq,
    },
    /// A workflow input or a signal body could not be encoded.
    #[error("cannot encode {what}")]
    Encode {
        /// What was being encoded, e.g. `the body of signal "decision"`.
        what: String,
        /// Why.
        #[source]
        source: PayloadError,
    },
    /// The run's output does not decode as the workflow's output type.
    #[error("cannot decode the output of workflow {workflow:?}")]
    Decode {
        /// The workflow.
        workflow: String,
        /// Why.
        #[source]
        source: PayloadError,
    },
    /// The workflow waits for a signal that nothing is scheduled to send, and no timer,
    /// activity or retry is due: in a real deployment it would wait forever.
    #[error(
        "the run is stuck at {at} (+{}): it waits for {} and nothing is scheduled to \
         arrive; schedule it with signal_after(..) or signal(..) before running",
        humantime::format_duration(*elapsed),
        waiting.join(", ")
    )]
    Stuck {
        /// The virtual time, RFC 3339.
        at: String,
        /// Virtual time since the environment's start time.
        elapsed: Duration,
        /// What the run waits for, e.g. `signal "decision" (command 2)`.
        waiting: Vec<String>,
    },
    /// The workflow is not finished but waits on nothing durable: no activity, timer or
    /// signal. Typically a tokio timer, channel or task awaited from workflow code.
    #[error(
        "the run is stuck at {at} (+{}): the workflow waits on something that is not \
         durable (no activity, timer or signal is pending); wait with ctx.sleep(..), \
         ctx.signal(..) or ctx.activity(..), never with tokio timers, channels or tasks",
        humantime::format_duration(*elapsed)
    )]
    NotDurableWait {
        /// The virtual time, RFC 3339.
        at: String,
        /// Virtual time since the environment's start time.
        elapsed: Duration,
    },
    /// The run's history grew past the environment's limit without the run finishing.
    #[error(
        "the run recorded {limit} events without finishing; does the workflow loop \
         forever? raise the limit with TestEnv::max_events(..) if it is meant to be this long"
    )]
    TooManyEvents {
        /// The limit.
        limit: usize,
    },
    /// An earlier call failed inside the workflow code; the run cannot go on.
    #[error(
        "an earlier activation of this run failed, so it cannot go on; \
         build a new TestEnv for the next attempt"
    )]
    Broken,
    /// The workflow code panicked or diverged from the history the environment recorded.
    #[error(transparent)]
    Replay(Box<ReplayError>),
}

impl From<ReplayError> for TestEnvError {
    fn from(e: ReplayError) -> Self {
        TestEnvError::Replay(Box::new(e))
    }
}
