//! End-to-end tests: real SQLite files, real worker processes, the example binaries.

mod children;
mod cli;
mod continue_as_new;
mod crash;
mod debugging;
mod finish_batch;
mod heartbeat;
mod queries;
mod queues;
mod replay;
mod routing;
mod saga;
mod schedules;
mod support;
mod timeouts;
mod workflows;

// The examples are binaries; their workflows are included once here for the in-process
// tests (their `main` functions come along unused).
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/approval.rs"]
mod approval_example;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/fan_out.rs"]
mod fan_out_example;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/order.rs"]
mod order_example;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/queues.rs"]
mod queues_example;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/routing.rs"]
mod routing_example;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/schedule.rs"]
mod schedule_example;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/subscription.rs"]
mod subscription_example;
