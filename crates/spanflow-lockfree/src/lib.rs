//! spanflow-lockfree (skeleton; see the crate's issue).
