use durable::prelude::*;

#[activity]
pub fn check_inventory(_ctx: ActivityContext, sku: String) -> Result<usize, ActivityError> {
    Ok(sku.len())
}

fn main() {}
