//! Intake benchmarks (filled in next).
fn main() {}
