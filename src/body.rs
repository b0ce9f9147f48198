//! body (skeleton).
