//! spanflow-process (skeleton; see the crate's issue).
