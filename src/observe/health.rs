//! Breaker transitions as events (and, feature `metrics`, as metrics).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// `model` opened for `cooldown` (`trips` in a row).
pub(crate) fn breaker_opened(
    model: &Arc<str>,
    reason: &'static str,
    trips: u32,
    cooldown: Duration,
) {
    tracing::warn!(
        target: super::TARGET,
        model = &**model,
        reason,
        trips,
        cooldown_ms = cooldown.as_millis() as u64,
        cooldown_until = %httpdate::fmt_http_date(SystemTime::now() + cooldown),
        "breaker opened"
    );
    #[cfg(feature = "metrics")]
    super::metrics::breaker(model, crate::health::BreakerState::Open);
}

/// `model`'s cooldown is over: the next request is its probe.
pub(crate) fn breaker_half_open(model: &Arc<str>) {
    tracing::info!(target: super::TARGET, model = &**model, "breaker half-open");
    #[cfg(feature = "metrics")]
    super::metrics::breaker(model, crate::health::BreakerState::HalfOpen);
}

/// `model`'s probe succeeded: back in service.
pub(crate) fn breaker_closed(model: &Arc<str>) {
    tracing::info!(target: super::TARGET, model = &**model, "breaker closed");
    #[cfg(feature = "metrics")]
    super::metrics::breaker(model, crate::health::BreakerState::Closed);
}

/// `model`'s probe was dropped without an outcome: open again, cooldown over, so the next
/// request probes (not a trip).
pub(crate) fn probe_released(model: &Arc<str>) {
    tracing::debug!(target: super::TARGET, model = &**model, "breaker probe released without an outcome");
    #[cfg(feature = "metrics")]
    super::metrics::breaker_state(model, crate::health::BreakerState::Open);
}
