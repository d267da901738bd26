//! The `#[workflow]` and `#[activity]` attribute macros of durable.
//!
//! Use them through the `durable` crate, which re-exports both in `durable::prelude`; the code
//! they generate refers to items under `::durable::__private`.
//!
//! Each macro keeps the `async fn` as written and adds, under the same name, its *handle*: an
//! uninhabited enum that implements durable's `Workflow` or `Activity` trait. Code names the
//! handle as a type, `ctx.activity::<check_inventory>(items)` or
//! `Registry::new().workflow::<order>()`, so the compiler checks input and output types and no
//! string name appears in user code. The enum lives in the type namespace only: the function
//! stays callable by its name, and a binding such as `order: Order` is not shadowed.
//!
//! Both macros report every problem they find at once, each on the offending tokens, and keep
//! the function beside the errors so that the rest of the crate still type-checks.

mod activity;
mod attr;
mod check;
mod handle;
mod workflow;

use proc_macro::TokenStream;

/// Makes an `async fn` an activity: a step with side effects, whose result is recorded in the
/// history and never recomputed on replay.
///
/// ```
/// use durable::prelude::*;
///
/// #[derive(Clone, Serialize, Deserialize)]
/// pub struct Item {
///     pub sku: String,
///     pub quantity: u32,
/// }
///
/// /// Reserves stock for the items, returning how many units were reserved.
/// #[activity]
/// pub async fn reserve_items(
///     _ctx: ActivityContext,
///     items: Vec<Item>,
/// ) -> Result<u32, ActivityError> {
///     Ok(items.iter().map(|item| item.quantity).sum())
/// }
///
/// /// Several arguments make the input a tuple; `name` sets the name in the history.
/// #[activity(name = "email.send")]
/// pub async fn send_email(
///     _ctx: ActivityContext,
///     to: String,
///     body: String,
/// ) -> Result<(), ActivityError> {
///     let _ = (to, body);
///     Ok(())
/// }
///
/// /// A workflow calls activities through their handles.
/// #[workflow]
/// pub async fn order(ctx: WorkflowContext, items: Vec<Item>) -> Result<u32, WorkflowError> {
///     let reserved = ctx.activity::<reserve_items>(items).await?;
///     let body = format!("{reserved} units reserved");
///     ctx.activity::<send_email>(("shop@example.com".into(), body)).await?;
///     Ok(reserved)
/// }
/// ```
///
/// # Requirements
///
/// The function is a free `async fn`, not generic; its first argument is the
/// `ActivityContext`; the remaining arguments are owned values (the future outlives the call),
/// serializable, and form the activity's input; it returns `Result<T, E>` where `T` is the
/// output and `E: Into<ActivityError>`. Write both arguments of the `Result`: a one-argument
/// alias such as `anyhow::Result<T>` hides the error type from the macro.
///
/// # What it generates
///
/// For `pub async fn reserve_items(ctx: ActivityContext, items: Vec<Item>) -> Result<u32, E>`:
///
/// - the function, unchanged, so unit tests can call it directly;
/// - `pub enum reserve_items {}`, the handle, with the function's docs;
/// - `impl Activity for reserve_items` with `Input = Vec<Item>`, `Output = u32` and
///   `NAME = "reserve_items"`, whose `run` awaits the function and converts its error with
///   `Into`.
///
/// No arguments make the input `()`; several make it a tuple, `(String, String)` for
/// `send_email` above.
///
/// # Arguments
///
/// `name = "..."` sets the name recorded in the history and looked up by the worker (the
/// function's name by default), so the function can be renamed without breaking existing runs.
#[proc_macro_attribute]
pub fn activity(args: TokenStream, item: TokenStream) -> TokenStream {
    activity::expand(args.into(), item.into()).into()
}

/// Makes an `async fn` a workflow: code that is replayed from its history after every
/// restart, so it must issue the same commands each time it runs.
///
/// ```
/// use durable::prelude::*;
/// use std::time::Duration;
///
/// /// Waits a day, then greets someone by name.
/// #[workflow]
/// pub async fn greet_tomorrow(
///     ctx: WorkflowContext,
///     name: String,
/// ) -> Result<String, WorkflowError> {
///     ctx.sleep(Duration::from_secs(24 * 60 * 60)).await;
///     Ok(format!("hello, {name}"))
/// }
///
/// /// No arguments after the context make the input `()`.
/// #[workflow(name = "reports.nightly")]
/// pub async fn nightly_report(_ctx: WorkflowContext) -> Result<(), WorkflowError> {
///     Ok(())
/// }
///
/// let registry = Registry::new()
///     .workflow::<greet_tomorrow>()
///     .workflow::<nightly_report>();
/// # let _ = registry;
/// ```
///
/// # Requirements
///
/// The same as [`macro@activity`]'s, with `WorkflowContext` as the first argument and
/// `E: Into<WorkflowError>`. The generated handle implements `Workflow`, whose future is not
/// required to be `Send`: workflows run on durable's single-threaded deterministic executor.
///
/// # Determinism
///
/// The macro scans the body, closures, async blocks and macro arguments included, and rejects
/// what would answer differently on replay, naming the context method to use instead:
///
/// | Rejected | Use instead |
/// |---|---|
/// | `tokio::spawn`, `tokio::task::spawn*`, `std::thread::spawn` | `futures::join!`, `futures::future::join_all` |
/// | `tokio::time::*`, `std::thread::sleep` | `ctx.sleep(duration)` |
/// | `SystemTime::now`, `Instant::now`, `chrono::Utc::now`, `Local::now` | `ctx.now()` |
/// | `rand::random`, `rand::thread_rng`, `rand::rng`, `OsRng`, `getrandom`, `Uuid::new_v4` | `ctx.random()`, `ctx.uuid()` |
/// | `select!` without a leading `biased;` | `futures::select_biased!`, `futures::future::select` |
///
/// ```compile_fail
/// use durable::prelude::*;
///
/// #[workflow]
/// pub async fn remind(_ctx: WorkflowContext) -> Result<(), WorkflowError> {
///     // error: `tokio::time::sleep` is not allowed in a workflow: ... use `ctx.sleep(duration)`
///     tokio::time::sleep(std::time::Duration::from_secs(60)).await;
///     Ok(())
/// }
/// ```
///
/// The scan is syntactic: it sees paths as written in the function, not what a helper function
/// it calls does, so it catches the usual mistakes rather than proving determinism.
///
/// # Arguments
///
/// `name = "..."`, as for [`macro@activity`].
#[proc_macro_attribute]
pub fn workflow(args: TokenStream, item: TokenStream) -> TokenStream {
    workflow::expand(args.into(), item.into()).into()
}
