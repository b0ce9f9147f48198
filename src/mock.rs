//! Scriptable OpenRouter stand-in (skeleton).
