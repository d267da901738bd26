use durable::__private::Workflow;
use durable::prelude::*;

#[derive(Serialize, Deserialize)]
pub struct Order {
    pub id: String,
}

/// The argument `order` binds a value: the handle `order` is a type, which doesn't shadow it.
#[workflow]
pub async fn order(_ctx: WorkflowContext, order: Order) -> Result<String, WorkflowError> {
    Ok(order.id)
}

fn main() {
    assert_eq!(<order as Workflow>::NAME, "order");
}
