//! stack (skeleton).
