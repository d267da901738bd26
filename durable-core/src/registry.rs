//! Workflow and activity entry tables.
//!
//! `#[workflow]` and `#[activity]` implement [`Workflow`] and [`Activity`] for a unit
//! struct named like the function; a [`Registry`] erases their types so a worker can
//! look them up by name.

use crate::context::activity::ActivityContext;
use crate::context::workflow::WorkflowContext;
use crate::error::{ActivityError, WorkflowError};
use crate::payload::{Payload, PayloadError};
use futures::FutureExt;
use futures::future::{BoxFuture, LocalBoxFuture};
use serde::{Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A workflow: deterministic code that drives activities, timers and signals.
/// Implemented by `#[workflow]`.
pub trait Workflow: 'static {
    /// The input type.
    type Input: Serialize + DeserializeOwned + 'static;
    /// The output type.
    type Output: Serialize + DeserializeOwned + 'static;
    /// The registered name (the function name unless renamed).
    const NAME: &'static str;
    /// Runs the workflow body.
    fn run(
        ctx: WorkflowContext,
        input: Self::Input,
    ) -> LocalBoxFuture<'static, Result<Self::Output, WorkflowError>>;
}

/// An activity: ordinary async code with side effects, retried by the engine.
/// Implemented by `#[activity]`.
pub trait Activity: Send + Sync + 'static {
    /// The input type.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// The output type.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The registered name (the function name unless renamed).
    const NAME: &'static str;
    /// Runs the activity body.
    fn run(
        ctx: ActivityContext,
        input: Self::Input,
    ) -> BoxFuture<'static, Result<Self::Output, ActivityError>>;
}

/// The output of a workflow body with its type erased.
pub type ErasedWorkflowFuture = LocalBoxFuture<'static, Result<Payload, WorkflowError>>;

/// A workflow with its types erased.
pub trait ErasedWorkflow: Send + Sync {
    /// The registered name.
    fn name(&self) -> &'static str;
    /// Decodes the input and starts the body.
    ///
    /// # Errors
    ///
    /// The input does not decode into the declared type.
    fn start(
        &self,
        ctx: WorkflowContext,
        input: &Payload,
    ) -> Result<ErasedWorkflowFuture, PayloadError>;
    /// Checks JSON text against the input type and encodes it.
    ///
    /// # Errors
    ///
    /// Malformed JSON or JSON of the wrong shape.
    fn input_from_json(&self, json: &str) -> Result<Payload, PayloadError>;
    /// Renders an output payload as JSON through the output type.
    ///
    /// # Errors
    ///
    /// The payload does not decode into the output type.
    fn output_to_json(&self, output: &Payload) -> Result<serde_json::Value, PayloadError>;
}

/// An activity with its types erased.
pub trait ErasedActivity: Send + Sync {
    /// The registered name.
    fn name(&self) -> &'static str;
    /// Decodes the input, runs the body and encodes the output.
    fn call(
        &self,
        ctx: ActivityContext,
        input: Payload,
    ) -> BoxFuture<'static, Result<Payload, ActivityError>>;
}

struct WorkflowEntry<W>(std::marker::PhantomData<fn() -> W>);
struct ActivityEntry<A>(std::marker::PhantomData<fn() -> A>);

impl<W: Workflow> ErasedWorkflow for WorkflowEntry<W> {
    fn name(&self) -> &'static str {
        W::NAME
    }
    fn start(
        &self,
        ctx: WorkflowContext,
        input: &Payload,
    ) -> Result<ErasedWorkflowFuture, PayloadError> {
        let input: W::Input = input.decode()?;
        let body = W::run(ctx, input);
        Ok(async move {
            let output = body.await?;
            Ok(Payload::encode(&output)?)
        }
        .boxed_local())
    }
    fn input_from_json(&self, json: &str) -> Result<Payload, PayloadError> {
        Payload::from_json_as::<W::Input>(json)
    }
    fn output_to_json(&self, output: &Payload) -> Result<serde_json::Value, PayloadError> {
        output.to_json_as::<W::Output>()
    }
}

impl<A: Activity> ErasedActivity for ActivityEntry<A> {
    fn name(&self) -> &'static str {
        A::NAME
    }
    fn call(
        &self,
        ctx: ActivityContext,
        input: Payload,
    ) -> BoxFuture<'static, Result<Payload, ActivityError>> {
        async move {
            let input: A::Input = input.decode()?;
            let output = A::run(ctx, input).await?;
            Ok(Payload::encode(&output)?)
        }
        .boxed()
    }
}

/// The workflows and activities a worker binary links, by name.
#[derive(Clone, Default)]
pub struct Registry {
    workflows: BTreeMap<&'static str, Arc<dyn ErasedWorkflow>>,
    activities: BTreeMap<&'static str, Arc<dyn ErasedActivity>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("workflows", &self.workflows.keys().collect::<Vec<_>>())
            .field("activities", &self.activities.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a workflow: `registry.workflow::<order>()`, naming the handle `#[workflow]`
    /// made.
    ///
    /// # Panics
    ///
    /// When another workflow is already registered under the same name: two bodies for
    /// one name would make histories ambiguous.
    #[must_use]
    pub fn workflow<W: Workflow>(mut self) -> Self {
        let old = self
            .workflows
            .insert(W::NAME, Arc::new(WorkflowEntry::<W>(Default::default())));
        assert!(old.is_none(), "workflow {:?} is registered twice", W::NAME);
        self
    }

    /// Adds an activity: `registry.activity::<check_inventory>()`.
    ///
    /// # Panics
    ///
    /// When another activity is already registered under the same name.
    #[must_use]
    pub fn activity<A: Activity>(mut self) -> Self {
        let old = self
            .activities
            .insert(A::NAME, Arc::new(ActivityEntry::<A>(Default::default())));
        assert!(old.is_none(), "activity {:?} is registered twice", A::NAME);
        self
    }

    /// Adds everything `other` registers (e.g. several modules' registries in one
    /// worker binary).
    ///
    /// # Panics
    ///
    /// When a name is registered in both.
    #[must_use]
    pub fn merge(mut self, other: Registry) -> Self {
        for (name, w) in other.workflows {
            assert!(
                self.workflows.insert(name, w).is_none(),
                "workflow {name:?} is registered twice"
            );
        }
        for (name, a) in other.activities {
            assert!(
                self.activities.insert(name, a).is_none(),
                "activity {name:?} is registered twice"
            );
        }
        self
    }

    /// Looks up a workflow by name.
    pub fn find_workflow(&self, name: &str) -> Option<&Arc<dyn ErasedWorkflow>> {
        self.workflows.get(name)
    }

    /// Looks up an activity by name.
    pub fn find_activity(&self, name: &str) -> Option<&Arc<dyn ErasedActivity>> {
        self.activities.get(name)
    }

    /// The registered workflow names, sorted.
    pub fn workflow_names(&self) -> Vec<&'static str> {
        self.workflows.keys().copied().collect()
    }

    /// The registered activity names, sorted.
    pub fn activity_names(&self) -> Vec<&'static str> {
        self.activities.keys().copied().collect()
    }
}
