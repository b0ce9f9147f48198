//! config (skeleton).
