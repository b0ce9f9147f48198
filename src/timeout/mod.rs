//! timeout (skeleton).
