//! fallback (skeleton).
