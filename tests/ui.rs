//! Compile-time messages: each `tests/ui/*.rs` must fail to compile with exactly the diagnostic
//! pinned in its `.stderr` file, reported at the user's line.
#![cfg(feature = "serde")]

#[test]
fn compile_time_messages() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
