use durable::prelude::*;

mod errors {
    pub type Result<T> = std::result::Result<T, durable::prelude::ActivityError>;
}

#[activity]
pub async fn check_inventory(_ctx: ActivityContext, sku: String) -> errors::Result<usize> {
    Ok(sku.len())
}

fn main() {}
