//! The `spanflow-relay` binary.

fn main() {}
