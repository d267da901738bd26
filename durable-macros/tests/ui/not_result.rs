use durable::prelude::*;

#[activity]
pub async fn check_inventory(_ctx: ActivityContext, sku: String) -> usize {
    sku.len()
}

fn main() {}
