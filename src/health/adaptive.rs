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
//!   [`AttemptTimeout`](crate::ErrorKind::AttemptTimeout) sets it to
//!   [`backoff`](AdaptiveConfig::backoff) (0.9) times the attempts that were in flight
//!   when the failing one was admitted (itself included), or times the limit if that is
//!   lower; never below `min`. A provider's 429 may come a round trip late (after the
//!   model's latency), and the successes meanwhile raised the limit: starting from what
//!   was overloaded keeps the limit from overshooting twice. Only one decrease per round
//!   trip: a signal from an attempt that started before the latest decrease is part of
//!   the same overload and lowers nothing.
//! * An attempt beyond the limit is rejected by the health layer with
//!   [`crate::ErrorKind::ModelAtCapacity`] (no upstream call,
//!   action fallback); the fallback layer skips such a model like a cooling one and, when
//!   every model is at its limit, waits for the first free slot within the deadline.
//! * Optionally ([`AdaptiveConfig::queue`], off by default) a request whose first model is
//!   at its limit waits a little for that model's next free slot (a few requests at most,
//!   for a few milliseconds) before it skips it: a freed slot is used at once instead of
//!   when the next request arrives, so the model serves closer to its capacity and more
//!   requests get the model they asked for, at the price of that wait.
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
use std::time::Duration;

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
/// | [`queue`](Self::queue) | off | a request waits this long for its first model's slot, with at most this many waiting |
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
    /// How many requests may wait for a slot of one model at once (0: none, the default);
    /// see [`queue`](Self::queue).
    pub queue_waiters: u32,
    /// How long such a request waits at most; see [`queue`](Self::queue).
    pub queue_wait: Duration,
}

impl AdaptiveConfig {
    /// A limit starting at `initial`, kept within `min ..= max`.
    pub fn new(initial: u32, min: u32, max: u32) -> Self {
        AdaptiveConfig {
            initial,
            min,
            max,
            backoff: 0.9,
            queue_waiters: 0,
            queue_wait: Duration::ZERO,
        }
    }

    /// Lets a request whose first model is at its limit wait up to `wait` (and within its
    /// deadline) for a slot of that model, when fewer than `waiters` requests wait for
    /// it already; otherwise, and when the wait ends with no slot, the model is skipped
    /// as without a queue. Off by default (`waiters` 0).
    ///
    /// A slot a model frees then goes at once to a request that waits for it, instead of
    /// staying unused until the next request arrives: the model serves closer to its
    /// capacity, and more requests get the model they asked for. The price is the wait:
    /// a request that queues is later by up to `wait` (on average about the model's
    /// latency divided by its limit, per waiter ahead of it). One or two waiters and a
    /// few milliseconds are enough to keep a busy model's slots full; longer waits mostly
    /// add latency. Only the chain's first model is queued for, once per request; the
    /// models after it are skipped at their limit as before.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_openrouter::health::AdaptiveConfig;
    ///
    /// let config = AdaptiveConfig::new(8, 1, 64).queue(2, Duration::from_millis(10));
    /// assert_eq!(config.queue_waiters, 2);
    /// assert!(config.validate().is_ok());
    /// assert!(AdaptiveConfig::new(8, 1, 64).queue(2, Duration::ZERO).validate().is_err());
    /// ```
    pub fn queue(mut self, waiters: u32, wait: Duration) -> Self {
        self.queue_waiters = waiters;
        self.queue_wait = wait;
        self
    }

    /// The factor an overload signal multiplies the limit by, in (0, 1) (default 0.9: a
    /// gentle decrease keeps the model near its capacity; 0.5 is TCP's).
    pub fn backoff(mut self, factor: f64) -> Self {
        self.backoff = factor;
        self
    }

    /// Checks `1 <= min <= initial <= max <= 1,000,000`, the backoff factor, and a queue's
    /// wait (more than zero, at most 60 s, when `queue_waiters` is not 0); the error's
    /// field is `adaptive.min`, `adaptive.initial`, `adaptive.max`, `adaptive.backoff` or
    /// `adaptive.queue_wait`.
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
        if self.queue_waiters == 0 && !self.queue_wait.is_zero() {
            return Err(ConfigError::new(
                "adaptive.queue_waiters",
                "adaptive.queue_waiters must be at least 1 with a queue_wait",
            ));
        }
        if self.queue_waiters > 0 && (self.queue_wait.is_zero() || self.queue_wait > MAX_QUEUE_WAIT)
        {
            return Err(ConfigError::new(
                "adaptive.queue_wait",
                format!(
                    "adaptive.queue_wait must be more than 0 and at most 60 s with queue_waiters {}, got {:?}",
                    self.queue_waiters, self.queue_wait
                ),
            ));
        }
        Ok(())
    }
}

const MAX_LIMIT: u32 = 1_000_000;
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(60);

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
    /// Requests waiting in its queue.
    queued: AtomicU32,
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
            queued: AtomicU32::new(0),
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

    /// Claims a slot: the attempts in flight with it (at least 1), `None` when the model
    /// is at its limit.
    pub(crate) fn try_acquire(&self) -> Option<u32> {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|n| n + 1)
    }

    /// A seat in the model's queue, `None` when `waiters` wait already.
    fn take_seat(self: &Arc<Self>, waiters: u32) -> Option<Seat> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < waiters).then_some(n + 1)
            })
            .ok()?;
        Some(Seat(self.clone()))
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

    /// An overload signal of an attempt that started at `started` (nanos) with `seen`
    /// attempts in flight (itself included), seen at `now`. Returns whether the limiter
    /// answers it alone (the breaker does not count it).
    ///
    /// The decrease starts from the concurrency the attempt met, when that is below the
    /// limit: the model's answer may come a round trip late (a 429 after the model's
    /// latency), and the successes meanwhile raised the limit past what was overloaded.
    fn on_overload(&self, kind: ErrorKind, started: u64, seen: u32, now: u64) -> bool {
        let min = u64::from(self.config.min) * SCALE;
        let current = self.limit.load(Ordering::Relaxed);
        let absorbed = absorbable(kind) && current > min;
        if started < self.last_decrease.load(Ordering::Relaxed) {
            // The same overload as the latest decrease.
            return absorbed;
        }
        self.last_decrease.store(now.max(1), Ordering::Relaxed);
        let seen = u64::from(seen) * SCALE;
        let lower = |l: u64| (((l.min(seen) as f64) * self.config.backoff) as u64).max(min);
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
    /// The attempts in flight when it was claimed, itself included.
    seen: u32,
}

impl Permit {
    /// The slot [`Limiter::try_acquire`] claimed, with the attempts in flight it returned.
    pub(crate) fn new(tracker: HealthTracker, limiter: Arc<Limiter>, seen: u32) -> Self {
        let started = tracker.now_nanos();
        Permit {
            tracker,
            limiter,
            started,
            seen,
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
                self.limiter.on_overload(kind, self.started, self.seen, now)
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

/// A request's place in a model's queue, given up when dropped.
struct Seat(Arc<Limiter>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

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

    /// A wait of the call's first `model`, at its limit, for a slot (see
    /// [`AdaptiveConfig::queue`]): resolves when the model has a free slot, or with `false`
    /// after the queue's wait or at `deadline`, whichever comes first. `None` without a
    /// queue or when it is full.
    pub(crate) fn queue_for_slot(
        &self,
        model: &str,
        deadline: Option<Instant>,
    ) -> Option<Pin<Box<dyn Future<Output = bool> + Send>>> {
        let config = self.config().adaptive?;
        if config.queue_waiters == 0 {
            return None;
        }
        let limiter = self.with_state(model, |s| s.limiter.clone())??;
        let seat = limiter.take_seat(config.queue_waiters)?;
        let end = Instant::now() + config.queue_wait;
        let end = deadline.map_or(end, |d| d.min(end));
        let wait = self.wait_for_slot(vec![limiter.model.clone()], Some(end));
        Some(Box::pin(async move {
            let _seat = seat;
            wait.await
        }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(initial: u32) -> Limiter {
        Limiter::new(AdaptiveConfig::new(initial, 1, 64), "a/b".into())
    }

    #[test]
    fn a_late_overload_lowers_from_the_concurrency_it_met() {
        let l = limiter(10);
        // A 429 of an attempt admitted with 9 in flight (itself included), answered after
        // the limit rose to 10: 9 x 0.9 = 8.1, not 10 x 0.9 = 9.
        assert!(l.on_overload(ErrorKind::RateLimited, 5, 9, 10));
        assert_eq!(l.limit(), 8);
        // The same overload (started before that decrease) lowers nothing.
        assert!(l.on_overload(ErrorKind::RateLimited, 9, 9, 11));
        assert_eq!(l.limit(), 8);
        // An attempt that met more than the limit: the limit itself is lowered
        // (8.1 x 0.9 = 7.29).
        assert!(l.on_overload(ErrorKind::RateLimited, 10, 20, 12));
        assert_eq!(l.limit(), 7);
    }

    #[test]
    fn try_acquire_returns_the_attempts_in_flight() {
        let l = limiter(2);
        assert_eq!(l.try_acquire(), Some(1));
        assert_eq!(l.try_acquire(), Some(2));
        assert_eq!(l.try_acquire(), None);
        l.release();
        assert_eq!(l.try_acquire(), Some(2));
    }

    #[test]
    fn a_queue_has_at_most_its_waiters() {
        let l = Arc::new(limiter(1));
        let first = l.take_seat(2).unwrap();
        let _second = l.take_seat(2).unwrap();
        assert!(l.take_seat(2).is_none());
        drop(first);
        assert!(l.take_seat(2).is_some());
    }

    #[test]
    fn a_queue_needs_waiters_and_a_wait() {
        let c = AdaptiveConfig::new(8, 1, 64);
        assert!(c.validate().is_ok());
        let ms = Duration::from_millis;
        assert!(c.queue(1, ms(5)).validate().is_ok());
        let field = |c: AdaptiveConfig| c.validate().unwrap_err().field().to_owned();
        assert_eq!(field(c.queue(1, Duration::ZERO)), "adaptive.queue_wait");
        assert_eq!(field(c.queue(1, ms(60_001))), "adaptive.queue_wait");
        assert_eq!(field(c.queue(0, ms(5))), "adaptive.queue_waiters");
    }
}
