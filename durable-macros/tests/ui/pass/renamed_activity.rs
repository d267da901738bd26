use durable::__private::Activity;
use durable::prelude::*;

/// Keeps its recorded name however the function is renamed.
#[activity(name = "inventory.check")]
pub async fn check_inventory_v2(_ctx: ActivityContext, sku: String) -> Result<usize, ActivityError> {
    Ok(sku.len())
}

fn main() {
    assert_eq!(<check_inventory_v2 as Activity>::NAME, "inventory.check");
}
