//! spanflow-batch (skeleton; see the crate's issue).
