//! xtask (skeleton).

fn main() {}
