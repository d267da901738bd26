use durable::__private::Workflow;
use durable::prelude::*;

/// Takes no input: its input type is `()`.
#[workflow]
async fn nightly_report(_ctx: WorkflowContext) -> Result<String, WorkflowError> {
    Ok(String::from("done"))
}

fn main() {
    let input: <nightly_report as Workflow>::Input = ();
    let _ = input;
    assert_eq!(<nightly_report as Workflow>::NAME, "nightly_report");
}
