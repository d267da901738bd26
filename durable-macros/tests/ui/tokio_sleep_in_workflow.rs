use durable::prelude::*;
use std::time::Duration;

#[workflow]
pub async fn remind(_ctx: WorkflowContext, message: String) -> Result<String, WorkflowError> {
    tokio::time::sleep(Duration::from_secs(24 * 60 * 60)).await;
    Ok(message)
}

fn main() {}
