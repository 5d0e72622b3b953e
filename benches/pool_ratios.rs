//! Placeholder: replaced by the pool ratio benchmark.
fn main() {}
