//! Hardening: bad input through the library and the CLI, a corpus of non-deterministic
//! code changes, the security checks S1-S6 of the reliability plan, and property tests
//! of the history decoder and the replayer.
//!
//! ```text
//! cargo test --test hardening
//! DURABLE_TEST_SEED=42 cargo test --test hardening     # rerun a seeded test
//! ```
//!
//! The figures in RELIABILITY.md (sections Bad input, Non-determinism, Security and
//! Fuzzing) come from this binary.

mod bad_input;
mod finish_batch;
mod flows;
mod fuzz;
mod nondeterminism;
mod security;
mod support;

/// Not a test: the CLI of a worker binary that links the workflows of [`flows`], run
/// in a child process by [`support::host_cli`]. Without `HARDENING_CLI_ARGS` it does
/// nothing.
#[test]
fn cli_host() {
    let Ok(args) = std::env::var("HARDENING_CLI_ARGS") else {
        return;
    };
    let args: Vec<String> =
        serde_json::from_str(&args).expect("HARDENING_CLI_ARGS is a JSON array of strings");
    let registry = flows::registry_named(&std::env::var("HARDENING_REGISTRY").unwrap_or_default());
    let code = durable::cli::main_from(
        registry,
        std::iter::once("hardening".to_owned()).chain(args),
    );
    if let Ok(path) = std::env::var("HARDENING_PEAK_RSS_OUT") {
        let _ = std::fs::write(path, support::peak_rss_kib().to_string());
    }
    std::process::exit(code);
}
