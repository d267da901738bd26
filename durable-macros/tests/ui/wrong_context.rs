use durable::prelude::*;

#[activity]
pub async fn check_inventory(_ctx: WorkflowContext, sku: String) -> Result<usize, ActivityError> {
    Ok(sku.len())
}

fn main() {}
