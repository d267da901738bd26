use durable::prelude::*;

pub struct Inventory;

impl Inventory {
    #[activity]
    pub async fn check(&self, _ctx: ActivityContext, sku: String) -> Result<usize, ActivityError> {
        Ok(sku.len())
    }
}

fn main() {}
