//! spanflow facade (skeleton).
