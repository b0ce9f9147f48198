//! retry (skeleton).
