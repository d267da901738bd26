//! Compile-time behaviour of `#[workflow]` and `#[activity]`: each `ui/*.rs` makes one mistake
//! and must fail with the message in its `.stderr`; each `ui/pass/*.rs` must compile and run.
//!
//! After a deliberate change to a message, regenerate the expectations and read the diff:
//! `TRYBUILD=overwrite cargo test -p durable-macros --test ui`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
