//! Benchmarks of spanflow-process (filled in below as the crate grows).
fn main() {}
