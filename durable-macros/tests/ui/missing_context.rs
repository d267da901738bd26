use durable::prelude::*;

#[activity]
pub async fn refresh_prices() -> Result<(), ActivityError> {
    Ok(())
}

fn main() {}
