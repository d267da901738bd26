use durable::__private::Activity;
use durable::prelude::*;

#[derive(Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: u32,
}

/// Reserves stock; the arguments after the context become a tuple input.
#[activity]
pub async fn reserve(
    _ctx: ActivityContext,
    items: Vec<Item>,
    mut attempts: u32,
    _: bool,
) -> Result<u32, ActivityError> {
    attempts += 1;
    Ok(items.iter().map(|item| item.quantity).sum::<u32>() + attempts)
}

/// Calls the activity with its tuple input, type-checked against the arguments.
#[workflow]
pub async fn restock(ctx: WorkflowContext, items: Vec<Item>) -> Result<u32, WorkflowError> {
    Ok(ctx.activity::<reserve>((items, 0, true)).await?)
}

fn main() {
    let input: <reserve as Activity>::Input = (Vec::new(), 0, true);
    let output: <reserve as Activity>::Output = 0_u32;
    let _ = (input, output);
    assert_eq!(<reserve as Activity>::NAME, "reserve");
    let _registry = Registry::new().activity::<reserve>().workflow::<restock>();
}
