use durable::prelude::*;

#[activity(name = "inventory.check", retries = 3)]
pub async fn check_inventory(_ctx: ActivityContext, sku: String) -> Result<usize, ActivityError> {
    Ok(sku.len())
}

fn main() {}
