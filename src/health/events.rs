//! Breaker transitions as events (and, feature `metrics`, as metrics): the facts the
//! tracker knows, handed to [`observe`](crate::observe) as plain names and numbers.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::breaker::{BreakerState, TripReason};
use crate::observe::TARGET;

/// Where a transition was decided: on this replica, or by another one through the shared
/// [`HealthStore`](super::HealthStore) (the events' `source` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// This replica's own outcomes.
    Local,
    /// Another replica's trip or probe, applied from the store.
    Fleet,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Fleet => "fleet",
        }
    }
}

/// `model` opened for `cooldown` (`trips` in a row).
pub(super) fn breaker_opened(
    model: &Arc<str>,
    reason: TripReason,
    trips: u32,
    cooldown: Duration,
    source: Source,
) {
    tracing::warn!(
        target: TARGET,
        model = &**model,
        reason = reason.as_str(),
        trips,
        cooldown_ms = cooldown.as_millis() as u64,
        cooldown_until = %httpdate::fmt_http_date(SystemTime::now() + cooldown),
        source = source.as_str(),
        "breaker opened"
    );
    transition(model, BreakerState::Open);
}

/// `model`, open already, cools down longer (a longer `Retry-After`, or another replica's
/// longer cooldown): no transition, so no metric.
pub(super) fn cooldown_lengthened(
    model: &Arc<str>,
    reason: TripReason,
    cooldown: Duration,
    source: Source,
) {
    tracing::debug!(
        target: TARGET,
        model = &**model,
        reason = reason.as_str(),
        cooldown_ms = cooldown.as_millis() as u64,
        source = source.as_str(),
        "breaker cooldown lengthened"
    );
}

/// `model`'s cooldown is over: the next request is its probe.
pub(super) fn breaker_half_open(model: &Arc<str>) {
    tracing::info!(target: TARGET, model = &**model, "breaker half-open");
    transition(model, BreakerState::HalfOpen);
}

/// `model`'s probe (this replica's, or another's through the store) succeeded: back in
/// service.
pub(super) fn breaker_closed(model: &Arc<str>, source: Source) {
    tracing::info!(target: TARGET, model = &**model, source = source.as_str(), "breaker closed");
    transition(model, BreakerState::Closed);
}

/// `model`'s probe was dropped without an outcome: open again, cooldown over, so the next
/// request probes (not a trip: the gauge alone moves).
pub(super) fn probe_released(model: &Arc<str>) {
    tracing::debug!(target: TARGET, model = &**model, "breaker probe released without an outcome");
    #[cfg(feature = "metrics")]
    {
        let (_, value) = label(BreakerState::Open);
        crate::observe::metrics::breaker_state(model, value);
    }
}

fn transition(model: &Arc<str>, state: BreakerState) {
    #[cfg(feature = "metrics")]
    {
        let (name, value) = label(state);
        crate::observe::metrics::breaker_transition(model, name, value);
    }
    let _ = (model, state);
}

/// The `state` label of `openrouter.breaker.transitions` and the value of
/// `openrouter.breaker.state`.
#[cfg(feature = "metrics")]
fn label(state: BreakerState) -> (&'static str, f64) {
    match state {
        BreakerState::Closed => ("closed", 0.0),
        BreakerState::HalfOpen => ("half_open", 1.0),
        BreakerState::Open => ("open", 2.0),
    }
}
