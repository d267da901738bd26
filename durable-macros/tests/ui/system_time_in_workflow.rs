use durable::prelude::*;
use std::time::{Duration, SystemTime};

#[workflow]
pub async fn deadline(_ctx: WorkflowContext) -> Result<SystemTime, WorkflowError> {
    Ok(SystemTime::now() + Duration::from_secs(60 * 60))
}

fn main() {}
