//! The worker binary of the reliability suite (`tests/reliability/`): the kitchen-sink
//! workflows (sequential steps, an 8-way fan-out, timers, a signal-waiting approval, a
//! retried activity, a saga with compensation, and two poison workflows) with the full
//! CLI of `durable::cli::main`.
//!
//! - `CHAOS_LEDGER=<file>`: every activity attempt is recorded in this SQLite file (see
//!   `tests/reliability/ledger.rs`).
//! - `DURABLE_FAILPOINT=<name>` (and `DURABLE_FAILPOINT_SKIP=<n>`): abort the process at
//!   a named point (see `FAILPOINTS` in `tests/reliability/kitchen_sink.rs`).
//!
//! Run it by hand with, for example:
//!
//! ```text
//! cargo run --bin chaos-worker -- --db /tmp/chaos.db worker --lease-ms 500 &
//! cargo run --bin chaos-worker -- --db /tmp/chaos.db start approval --id a1 --input '{"x":1,"votes":1}'
//! cargo run --bin chaos-worker -- --db /tmp/chaos.db signal a1 vote --payload '{"id":1,"value":5}'
//! cargo run --bin chaos-worker -- --db /tmp/chaos.db result a1 --wait
//! ```

// The reference interpreter and the workload generator in this file serve the tests.
#[allow(dead_code)]
#[path = "../reliability/kitchen_sink.rs"]
mod kitchen_sink;
// The ledger's readers serve the tests.
#[allow(dead_code)]
#[path = "../reliability/ledger.rs"]
mod ledger;

fn main() {
    if let Some(path) = std::env::var_os("CHAOS_LEDGER") {
        ledger::set_path(Some(std::path::Path::new(&path)));
    }
    std::process::exit(durable::cli::main(kitchen_sink::registry()));
}
