//! spanflow-relay (skeleton).

fn main() {}
