use durable::prelude::*;

#[workflow]
pub async fn crunch(_ctx: WorkflowContext, numbers: Vec<u64>) -> Result<u64, WorkflowError> {
    let sum = std::thread::spawn(move || numbers.iter().sum::<u64>());
    Ok(sum.join().unwrap_or_default())
}

fn main() {}
