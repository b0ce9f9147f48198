//! Adaptive concurrency per model (opt-in): a limit on the attempts of one model in
//! flight, learned from overload signals the way TCP learns a congestion window.
//!
//! OpenRouter sends no rate-limit headers on success, so a 429 is the only sign of a
//! model's capacity. Benching the model for the whole `Retry-After` wastes the capacity it
//! still has; hammering it wastes calls. The [`AdaptiveConfig`] limit does neither:
//!
//! * **Additive increase**: every success of an attempt that found the limit in use
//!   (at least half of it in flight) raises the limit by `1 / limit`, so by about one per
//!   round trip of the model.
//! * **Multiplicative decrease**: a 429 ([`RateLimited`](crate::ErrorKind::RateLimited)),
//!   an overloaded provider ([`ProviderOverloaded`](crate::ErrorKind::ProviderOverloaded),
//!   e.g. a 503 `provider_overloaded` or a 529) or an
//!   [`AttemptTimeout`](crate::ErrorKind::AttemptTimeout) multiplies it by
//!   [`backoff`](AdaptiveConfig::backoff) (0.9), never below `min`. Only one decrease per
//!   round trip: a signal from an attempt that started before the latest decrease is part
//!   of the same overload and lowers nothing.
//! * An attempt beyond the limit is rejected by the health layer with
//!   [`crate::ErrorKind::ModelAtCapacity`] (no upstream call,
//!   action fallback); the fallback layer skips such a model like a cooling one and, when
//!   every model is at its limit, waits for the first free slot within the deadline.
//!
//! With the limit on, a 429 or an overloaded provider is the limiter's business while the
//! limit is above `min`: it neither counts against the breaker nor cools the model for
//! its `Retry-After` (the lower limit already sends less). At `min` the model is
//! overloaded even at its smallest concurrency, and such signals count as usual (so a
//! model out of quota for the day still trips). Every other failure, attempt timeouts
//! included, counts for the breaker as without the limit: a model that fails outright
//! still trips.
//!
//! The limit counts an attempt from its admission to its response: for a stream, to its
//! first content token (the health layer sees no further), so a stream's tail is not
//! counted against the limit. An attempt dropped before then (its caller went away, or a
//! [hedge](crate::fallback::hedge) won) gives its slot back.
//!
//! The limit of each model is in [`HealthTracker::snapshot`] and
//! [`HealthTracker::concurrency_limit`], and (feature `metrics`) the gauge
//! `openrouter.model.concurrency_limit` (label `gen_ai.request.model`), set when the model
//! is first seen and whenever its whole-number limit changes.
//!
//! ```
//! use tower_openrouter::health::{AdaptiveConfig, HealthConfig, HealthTracker};
//!
//! let tracker = HealthTracker::new(
//!     HealthConfig::default().adaptive(AdaptiveConfig::new(8, 1, 64)),
//! );
//! // A model not seen yet is admitted; its limit shows once it has been tried.
//! assert!(tracker.has_capacity("openai/gpt-4o"));
//! assert_eq!(tracker.concurrency_limit("openai/gpt-4o"), None);
//!
//! assert!(AdaptiveConfig::new(0, 1, 64).validate().is_err());
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::tracker::HealthTracker;
use crate::error::ConfigError;
use crate::ErrorKind;

/// Settings of the adaptive concurrency limit of every model (see the
/// [module docs](self)); set with [`HealthConfig::adaptive`](super::HealthConfig::adaptive).
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `initial` | - | limit of a model when first seen |
/// | `min` | - | the limit never falls below this (at least 1) |
/// | `max` | - | the limit never rises above this |
/// | [`backoff`](Self::backoff) | 0.9 | factor applied to the limit on an overload signal |
///
/// Read a setting through its public field of the same name.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AdaptiveConfig {
    /// The limit of a model when first seen.
    pub initial: u32,
    /// The limit never falls below this (at least 1).
    pub min: u32,
    /// The limit never rises above this.
    pub max: u32,
    /// See [`backoff`](Self::backoff).
    pub backoff: f64,
}

impl AdaptiveConfig {
    /// A limit starting at `initial`, kept within `min ..= max`.
    pub fn new(initial: u32, min: u32, max: u32) -> Self {
        AdaptiveConfig {
            initial,
            min,
            max,
            backoff: 0.9,
        }
    }

    /// The factor an overload signal multiplies the limit by, in (0, 1) (default 0.9: a
    /// gentle decrease keeps the model near its capacity; 0.5 is TCP's).
    pub fn backoff(mut self, factor: f64) -> Self {
        self.backoff = factor;
        self
    }

    /// Checks `1 <= min <= initial <= max <= 1,000,000` and the backoff factor; the
    /// error's field is `adaptive.min`, `adaptive.initial`, `adaptive.max` or
    /// `adaptive.backoff`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min == 0 {
            return Err(ConfigError::zero("adaptive.min"));
        }
        if self.initial < self.min || self.initial > self.max {
            return Err(ConfigError::new(
                "adaptive.initial",
                format!(
                    "adaptive.initial ({}) must be between adaptive.min ({}) and adaptive.max ({})",
                    self.initial, self.min, self.max
                ),
            ));
        }
        if self.max > MAX_LIMIT {
            return Err(ConfigError::new(
                "adaptive.max",
                format!("adaptive.max must be at most {MAX_LIMIT}, got {}", self.max),
            ));
        }
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return Err(ConfigError::new(
                "adaptive.backoff",
                format!("adaptive.backoff must be in (0, 1), got {}", self.backoff),
            ));
        }
        Ok(())
    }
}

const MAX_LIMIT: u32 = 1_000_000;

/// The whole-number limit (at least 1) of a fixed-point one.
fn whole(limit: u64) -> u32 {
    u32::try_from(limit / SCALE).unwrap_or(u32::MAX).max(1)
}
/// The limit is kept in fixed point (1/1024ths) so `+1 / limit` steps add up exactly.
const SCALE: u64 = 1024;

/// Whether an error kind tells the limiter the model is overloaded.
pub(crate) fn is_overload(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::RateLimited | ErrorKind::ProviderOverloaded | ErrorKind::AttemptTimeout
    )
}

/// Whether the limiter, not the breaker, answers this overload signal (while the limit
/// is above `min`). Timeouts always count for the breaker too: a hanging model must trip.
fn absorbable(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::RateLimited | ErrorKind::ProviderOverloaded)
}

/// The limit of one model and its attempts in flight.
pub(crate) struct Limiter {
    config: AdaptiveConfig,
    /// The model, for the limit's gauge.
    model: Arc<str>,
    /// The limit, times [`SCALE`].
    limit: AtomicU64,
    in_flight: AtomicU32,
    /// When the latest decrease happened (nanos since the tracker's epoch; 0: never).
    last_decrease: AtomicU64,
}

impl Limiter {
    pub(crate) fn new(config: AdaptiveConfig, model: Arc<str>) -> Self {
        let limiter = Limiter {
            config,
            model,
            limit: AtomicU64::new(u64::from(config.initial.max(1)) * SCALE),
            in_flight: AtomicU32::new(0),
            last_decrease: AtomicU64::new(0),
        };
        crate::observe::concurrency_limit(&limiter.model, limiter.limit());
        limiter
    }

    /// The whole-number limit (at least 1).
    pub(crate) fn limit(&self) -> u32 {
        whole(self.limit.load(Ordering::Relaxed))
    }

    /// After the limit moved from `before` to `after` (fixed point): its gauge, when the
    /// whole number changed.
    fn moved(&self, before: u64, after: u64) {
        if whole(before) != whole(after) {
            crate::observe::concurrency_limit(&self.model, whole(after));
        }
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn has_capacity(&self) -> bool {
        self.in_flight() < self.limit()
    }

    /// Claims a slot; `false` when the model is at its limit.
    pub(crate) fn try_acquire(&self) -> bool {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// A success: `+1 / limit` when the limit was in use.
    fn on_success(&self) {
        let limit = self.limit();
        if self.in_flight().saturating_mul(2) < limit {
            return;
        }
        let max = u64::from(self.config.max) * SCALE;
        let step = |l: u64| (l + (SCALE * SCALE / l.max(1)).max(1)).min(max);
        let raised = self
            .limit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                (l < max).then(|| step(l))
            });
        if let Ok(before) = raised {
            self.moved(before, step(before));
        }
    }

    /// An overload signal of an attempt that started at `started` (nanos), seen at `now`.
    /// Returns whether the limiter answers it alone (the breaker does not count it).
    fn on_overload(&self, kind: ErrorKind, started: u64, now: u64) -> bool {
        let min = u64::from(self.config.min) * SCALE;
        let current = self.limit.load(Ordering::Relaxed);
        let absorbed = absorbable(kind) && current > min;
        if started < self.last_decrease.load(Ordering::Relaxed) {
            // The same overload as the latest decrease.
            return absorbed;
        }
        self.last_decrease.store(now.max(1), Ordering::Relaxed);
        let lower = |l: u64| (((l as f64) * self.config.backoff) as u64).max(min);
        if let Ok(before) = self
            .limit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some(lower(l)))
        {
            self.moved(before, lower(before));
        }
        absorbed
    }
}

/// A claimed slot of a model's limit, handed back when dropped (the outcome, if any, was
/// given to [`finish`](Self::finish) first).
pub(crate) struct Permit {
    tracker: HealthTracker,
    limiter: Arc<Limiter>,
    started: u64,
}

impl Permit {
    pub(crate) fn new(tracker: HealthTracker, limiter: Arc<Limiter>) -> Self {
        let started = tracker.now_nanos();
        Permit {
            tracker,
            limiter,
            started,
        }
    }

    /// Feeds the outcome to the limit. Returns whether the limiter answers a failure alone
    /// (see the [module docs](self)): the caller then does not record it for the breaker.
    pub(crate) fn finish(&self, outcome: Result<(), ErrorKind>) -> bool {
        match outcome {
            Ok(()) => {
                self.limiter.on_success();
                false
            }
            Err(kind) if is_overload(kind) => {
                let now = self.tracker.now_nanos();
                self.limiter.on_overload(kind, self.started, now)
            }
            Err(_) => false,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release();
        self.tracker.slots().freed();
    }
}

/// Wakes requests waiting for a free slot; costs one atomic load per release while
/// nobody waits.
#[derive(Default)]
pub(crate) struct Slots {
    waiters: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Slots {
    fn freed(&self) {
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.notify.notify_waiters();
        }
    }
}

struct Waiting<'a>(&'a Slots);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HealthTracker {
    /// Whether `model` has a free slot under its adaptive concurrency limit (always
    /// `true` without [`HealthConfig::adaptive`](super::HealthConfig::adaptive), and for a
    /// model not seen yet). Claims nothing.
    pub fn has_capacity(&self, model: &str) -> bool {
        // Off (the default): no model has a limiter, so skip the map lookup on the hot path.
        if self.config().adaptive.is_none() {
            return true;
        }
        self.with_state(model, |s| {
            s.limiter.as_ref().is_none_or(|l| l.has_capacity())
        })
        .unwrap_or(true)
    }

    /// The adaptive concurrency limit of `model`; `None` without
    /// [`HealthConfig::adaptive`](super::HealthConfig::adaptive) or for a model not seen
    /// yet.
    pub fn concurrency_limit(&self, model: &str) -> Option<u32> {
        self.with_state(model, |s| s.limiter.as_ref().map(|l| l.limit()))?
    }

    /// Resolves when one of `models` has a free slot (at once if one has), or returns
    /// `false` at `deadline`.
    pub(crate) fn wait_for_slot(
        &self,
        models: Vec<Arc<str>>,
        deadline: Option<Instant>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        let tracker = self.clone();
        let wait = async move {
            let slots = tracker.slots();
            slots.waiters.fetch_add(1, Ordering::AcqRel);
            let _waiting = Waiting(slots);
            loop {
                let notified = slots.notify.notified();
                tokio::pin!(notified);
                // Registered before the check: a slot freed after it wakes us.
                notified.as_mut().enable();
                if models.iter().any(|m| tracker.has_capacity(m)) {
                    return;
                }
                notified.await;
            }
        };
        Box::pin(async move {
            match deadline {
                Some(at) => tokio::time::timeout_at(at, wait).await.is_ok(),
                None => {
                    wait.await;
                    true
                }
            }
        })
    }
}
