use durable::prelude::*;
use futures::future;

#[workflow]
pub async fn first(_ctx: WorkflowContext) -> Result<u8, WorkflowError> {
    let mut a = future::ready(1);
    let mut b = future::ready(2);
    let winner = futures::select! {
        x = a => x,
        y = b => y,
    };
    Ok(winner)
}

fn main() {}
