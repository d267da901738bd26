use durable::prelude::*;

#[activity]
pub async fn store<T: Serialize + Send>(_ctx: ActivityContext, item: T) -> Result<(), ActivityError> {
    let _ = item;
    Ok(())
}

fn main() {}
