//! routing (skeleton).
