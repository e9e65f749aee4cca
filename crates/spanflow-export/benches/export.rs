//! Export benchmarks (being written).
fn main() {}
