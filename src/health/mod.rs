//! health (skeleton).
