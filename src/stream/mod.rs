//! stream (skeleton).
