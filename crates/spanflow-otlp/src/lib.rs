//! spanflow-otlp (skeleton; see the crate's issue).
