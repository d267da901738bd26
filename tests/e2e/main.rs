//! End-to-end tests: real SQLite files, real worker processes, the example binaries.

mod cli;
mod replay;
mod crash;
mod support;
mod workflows;
