//! [`ContinueAsNew`]: ending a run so that a fresh run of the same workflow id goes on.

use crate::error::WorkflowError;
use crate::executor::state::RunState;
use crate::payload::{Payload, PayloadError};
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// The end of a run that continues as a new run; see
/// [`WorkflowContext::continue_as_new`](crate::WorkflowContext::continue_as_new).
///
/// Awaiting it never returns `Ok`: the engine stops the code after the poll that
/// reached it. It returns `Err` only when the input could not be encoded. `T` is the
/// output of the workflow continued as, so `return ctx.continue_as_new::<W>(next).await;`
/// type-checks in `W`.
#[must_use = "the run continues as new only when this is awaited"]
pub struct ContinueAsNew<T> {
    state: Rc<RefCell<RunState>>,
    workflow: &'static str,
    input: Option<Result<Payload, PayloadError>>,
    _output: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ContinueAsNew<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinueAsNew")
            .field("workflow", &self.workflow)
            .finish()
    }
}

impl<T> ContinueAsNew<T> {
    pub(crate) fn new(
        state: Rc<RefCell<RunState>>,
        workflow: &'static str,
        input: Result<Payload, PayloadError>,
    ) -> Self {
        ContinueAsNew {
            state,
            workflow,
            input: Some(input),
            _output: PhantomData,
        }
    }
}

impl<T> Future for ContinueAsNew<T> {
    type Output = Result<T, WorkflowError>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.input.take() {
            Some(Ok(input)) => {
                let mut state = this.state.borrow_mut();
                // The first request of the run wins; the machine ends the run after
                // this poll, so there is no second one to weigh.
                if state.continue_as_new.is_none() {
                    state.continue_as_new = Some((this.workflow.to_owned(), input));
                }
                Poll::Pending
            }
            Some(Err(e)) => Poll::Ready(Err(WorkflowError::new(
                crate::error::KIND_PAYLOAD,
                format!("the input to continue as new ({}): {e}", this.workflow),
            ))),
            // Asked for already: the run ends; nothing more happens here.
            None => Poll::Pending,
        }
    }
}
