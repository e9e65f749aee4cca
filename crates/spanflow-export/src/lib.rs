//! spanflow-export (skeleton; see the crate's issue).
