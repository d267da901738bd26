use durable::__private::Workflow;
use durable::prelude::*;
use futures::future;

/// Polls its branches in order, which replay reproduces.
#[workflow]
async fn first(_ctx: WorkflowContext) -> Result<u8, WorkflowError> {
    let mut a = future::ready(1);
    let mut b = future::ready(2);
    let winner = futures::select_biased! {
        x = a => x,
        y = b => y,
    };
    Ok(winner)
}

fn main() {
    assert_eq!(<first as Workflow>::NAME, "first");
}
