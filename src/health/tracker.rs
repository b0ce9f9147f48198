//! [`HealthTracker`]: per-model rolling windows and breakers, shared by every request.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::adaptive::{Limiter, Slots};
use super::breaker::{self, Breaker, BreakerState, Jitter, Word};
use super::config::HealthConfig;
use super::store::{self as shared, HealthSink, HealthStore, SharedEvent, SharedSlot, TripReason};
use super::window::{Update, Window};
use crate::observe;
use crate::{Error, StreamErrorHook};

/// Whether one attempt of a model may go upstream, as [`HealthTracker::check`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: go ahead.
    Allowed,
    /// The cooldown is over and this attempt is the one probe: go ahead, and record its
    /// outcome (or drop it: see [`HealthTracker::release_probe`]); it closes or reopens
    /// the breaker.
    Probe,
    /// The model is cooling down: skip it.
    CoolingDown {
        /// When the model may be tried again. While another request probes the model
        /// this is the present instant: the probe's outcome decides, soon.
        until: Instant,
    },
}

/// The health of one model, as [`HealthTracker::snapshot`] reports it.
///
/// Serializes (for a status page) to
/// `{"model":"openai/gpt-4o","state":"open","success_rate":0.25,"calls":4,"failures":3,
/// "consecutive_failures":3,"trips":1,"cooldown_remaining":14.7}`: `state` is `closed`,
/// `open` or `half_open`, `cooldown_remaining` is in seconds (`null` while the model is
/// available); `cooldown_until`, an instant of this process, is left out.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ModelHealth {
    /// The model id.
    #[serde(serialize_with = "ser::string")]
    pub model: Arc<str>,
    /// The breaker's state.
    pub state: BreakerState,
    /// Successes / calls over the window; `None` with no calls.
    pub success_rate: Option<f64>,
    /// Counted calls (successes and counted failures) over the window.
    pub calls: u64,
    /// Counted failures over the window.
    pub failures: u64,
    /// Counted failures in a row, up to now.
    pub consecutive_failures: u32,
    /// Trips in a row: the number the cooldown is multiplied by. It starts again at 1 when
    /// a model trips after having been back in service for at least one window.
    pub trips: u32,
    /// When the cooldown ends, while the model is not available (see
    /// [`HealthTracker::cooldown_until`]).
    #[serde(skip)]
    pub cooldown_until: Option<Instant>,
    /// How long until then, at the time of the snapshot.
    #[serde(serialize_with = "ser::seconds")]
    pub cooldown_remaining: Option<Duration>,
    /// The adaptive concurrency limit ([`HealthConfig::adaptive`]); `None` when off (and
    /// then left out of the serialized form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
    /// Attempts in flight under that limit; `None` when it is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u32>,
}

mod ser {
    use std::time::Duration;

    pub(super) fn string<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub(super) fn seconds<S: serde::Serializer>(
        v: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

/// Per-model outcome tracking and circuit breaking, shared by every request and task.
///
/// Cheap to clone (one `Arc`). See the [module docs](super) for the rules. The hot path,
/// [`check`](Self::check) and [`record`](Self::record) of a known model, takes no lock:
/// the model map is read through an `arc_swap` snapshot, the window and breaker are
/// atomics. Only the first outcome of a new model takes a lock, to copy the map.
///
/// Times are `tokio::time` instants, so `#[tokio::test(start_paused = true)]` tests are
/// exact.
#[derive(Clone)]
pub struct HealthTracker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: HealthConfig,
    epoch: Instant,
    window_nanos: u64,
    pub(crate) models: ArcSwap<HashMap<Arc<str>, Arc<ModelState>>>,
    insert: Mutex<()>,
    jitter: Jitter,
    /// Where trips and recoveries are shared with other replicas (none: local only).
    store: Option<Arc<dyn HealthStore>>,
    /// Requests waiting for a free slot of an adaptive limit.
    pub(crate) slots: Slots,
}

pub(crate) struct ModelState {
    pub(crate) name: Arc<str>,
    window: Window,
    breaker: Breaker,
    consecutive: AtomicU32,
    /// The consecutive failures the latest success reset (0 when it reset none), so a
    /// stream failure can take that success back.
    reset_by_success: AtomicU32,
    trips: AtomicU32,
    /// This model's fixed cooldown ([`HealthConfig::model_disable_duration`]).
    fixed_cooldown: Option<Duration>,
    /// Reports a mid-stream failure of this model (holds weak references only).
    pub(crate) hook: StreamErrorHook,
    /// The fleet's cooldown end and probe slot (used with a store only).
    shared: SharedSlot,
    /// The adaptive concurrency limit, when [`HealthConfig::adaptive`] is set.
    pub(crate) limiter: Option<Arc<Limiter>>,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self::new(HealthConfig::default())
    }
}

impl fmt::Debug for HealthTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthTracker")
            .field("config", &self.inner.config)
            .field("models", &self.inner.models.load().len())
            .finish()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl HealthTracker {
    /// A tracker with these settings. They are not validated here (see
    /// [`HealthConfig::validate`]); out-of-range values never panic but act at their
    /// edge, e.g. `consecutive_failures(0)` trips on every counted failure.
    pub fn new(config: HealthConfig) -> Self {
        Self::build(config, None)
    }

    /// A tracker that shares trips, recoveries and the probe slot with other replicas
    /// through `store` (see [`HealthStore`]; the `redis` feature has one). Checking a
    /// model stays local and lock-free; the store is told about trips and recoveries
    /// without waiting for it.
    pub fn with_store(config: HealthConfig, store: Arc<dyn HealthStore>) -> Self {
        let tracker = Self::build(config, Some(store.clone()));
        store.attach(HealthSink {
            inner: Arc::downgrade(&tracker.inner),
        });
        tracker
    }

    fn build(config: HealthConfig, store: Option<Arc<dyn HealthStore>>) -> Self {
        let window_nanos = nanos(config.window).max(1);
        let jitter = Jitter::new(config.jitter_seed);
        HealthTracker {
            inner: Arc::new(Inner {
                window_nanos,
                config,
                epoch: Instant::now(),
                models: ArcSwap::from_pointee(HashMap::new()),
                insert: Mutex::new(()),
                jitter,
                store,
                slots: Slots::default(),
            }),
        }
    }

    /// The store this tracker shares health through, if any.
    pub fn store(&self) -> Option<&Arc<dyn HealthStore>> {
        self.inner.store.as_ref()
    }

    /// The settings.
    pub fn config(&self) -> &HealthConfig {
        &self.inner.config
    }

    /// Admission for one attempt of `model`.
    ///
    /// [`Admission::Allowed`] while the breaker is closed (and for a model never seen).
    /// When the cooldown is over, the first caller gets [`Admission::Probe`] and holds the
    /// probe slot until it records the attempt's outcome (or calls
    /// [`release_probe`](Self::release_probe)); everybody else gets
    /// [`Admission::CoolingDown`] meanwhile.
    pub fn check(&self, model: &str) -> Admission {
        match self.inner.models.load().get(model) {
            Some(state) => self.inner.check(state),
            None => Admission::Allowed,
        }
    }

    /// Whether `model` would be admitted now, without claiming anything: its breaker is
    /// closed, or its cooldown is over and nobody is probing it yet.
    pub fn is_available(&self, model: &str) -> bool {
        match self.inner.models.load().get(model) {
            Some(state) => self.inner.cooling_until(state).is_none(),
            None => true,
        }
    }

    /// When `model` may be tried again; `None` when it is available now (see
    /// [`is_available`](Self::is_available)). While a probe is in flight this is the
    /// present instant.
    pub fn cooldown_until(&self, model: &str) -> Option<Instant> {
        let models = self.inner.models.load();
        let until = self.inner.cooling_until(models.get(model)?)?;
        Some(self.inner.instant(until))
    }

    /// Successes / calls of `model` over the window; `None` with no counted calls.
    pub fn success_rate(&self, model: &str) -> Option<f64> {
        let models = self.inner.models.load();
        let state = models.get(model)?;
        state.window.totals(self.inner.now()).success_rate()
    }

    /// Records the outcome of one attempt of `model`.
    ///
    /// * `Ok(())`: a success. It resets the consecutive failures; if the model was being
    ///   probed it closes the breaker and starts a fresh window.
    /// * `Err(e)` with [`e.counts_for_health()`](Error::counts_for_health): a failure. It
    ///   may trip the breaker (consecutive failures, failure ratio, skip threshold); if the
    ///   model was being probed it opens the breaker again, for longer; a
    ///   [`retry_after`](Error::retry_after) hint cools the model for at least that long
    ///   (never shortening a cooldown).
    /// * `Err(e)` that does not count: nothing is counted; if the model was being probed,
    ///   the probe slot is released (the breaker stays open, the next request probes).
    ///
    /// While a model is probed, the first outcome recorded for it decides, whichever
    /// request it comes from.
    pub fn record(&self, model: &str, outcome: Result<(), &Error>) {
        match outcome {
            Err(e) if !e.counts_for_health() => {
                if let Some(state) = self.inner.models.load().get(model) {
                    self.inner.release_probe(state);
                }
            }
            _ => {
                // Fast path: a known model, no lock, no refcount traffic.
                if let Some(state) = self.inner.models.load().get(model) {
                    self.inner.record(state, outcome, false);
                    return;
                }
                if let Some(state) = self.state(model) {
                    self.inner.record(&state, outcome, false);
                }
            }
        }
    }

    /// Records a counted failure of a streamed response of `model` after its first token
    /// (what the [`StreamErrorHook`] the health layer inserts does).
    ///
    /// The attempt's success, recorded when its response arrived, is taken back and
    /// becomes this failure: the window's success count of the current time slot goes
    /// down by one (when the slot has one; otherwise the window keeps the success and adds
    /// the failure) and its failure count up by one. When no other outcome of the model
    /// came in between, the consecutive failures continue from the count that success
    /// reset (so five streams in a row that die after their first token trip the model
    /// like five failed requests); otherwise they go up by one. An error that does not
    /// count for health is ignored.
    pub fn record_stream_error(&self, model: &str, error: &Error) {
        if !error.counts_for_health() {
            return;
        }
        if let Some(state) = self.inner.models.load().get(model) {
            self.inner.record(state, Err(error), true);
        }
    }

    /// Gives back the probe slot [`check`](Self::check) handed out with
    /// [`Admission::Probe`], without an outcome (the attempt was cancelled): the breaker
    /// stays open with its cooldown over, so the next request probes. Does nothing when
    /// the model is not being probed.
    pub fn release_probe(&self, model: &str) {
        if let Some(state) = self.inner.models.load().get(model) {
            self.inner.release_probe(state);
        }
    }

    /// The health of every model seen so far, sorted by model id.
    pub fn snapshot(&self) -> Vec<ModelHealth> {
        let now = self.inner.now();
        let models = self.inner.models.load();
        let mut out: Vec<ModelHealth> = models
            .values()
            .map(|s| {
                let w = s.breaker.load();
                let totals = s.window.totals(now);
                let until = Inner::cooling_until_at(w, now);
                ModelHealth {
                    model: s.name.clone(),
                    state: w.state,
                    success_rate: totals.success_rate(),
                    calls: totals.calls(),
                    failures: totals.failures,
                    consecutive_failures: s.consecutive.load(Ordering::Relaxed),
                    trips: s.trips.load(Ordering::Relaxed),
                    cooldown_until: until.map(|u| self.inner.instant(u)),
                    cooldown_remaining: until.map(|u| Duration::from_nanos(u.saturating_sub(now))),
                    concurrency_limit: s.limiter.as_ref().map(|l| l.limit()),
                    in_flight: s.limiter.as_ref().map(|l| l.in_flight()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        out
    }

    /// The state of `model`, created on first use; `None` when `max_models` models are
    /// tracked already.
    pub(crate) fn state(&self, model: &str) -> Option<Arc<ModelState>> {
        if let Some(state) = self.inner.models.load().get(model) {
            return Some(state.clone());
        }
        // Slow path, once per model: copy the map with the new model in.
        Inner::insert(&self.inner, model)
    }
}

impl Inner {
    /// The slow path of [`HealthTracker::state`]: copy the map with the new model in.
    fn insert(this: &Arc<Inner>, model: &str) -> Option<Arc<ModelState>> {
        let _guard = this.insert.lock().unwrap_or_else(|p| p.into_inner());
        let current = this.models.load_full();
        if let Some(state) = current.get(model) {
            return Some(state.clone());
        }
        if current.len() >= this.config.max_models {
            return None;
        }
        let name: Arc<str> = Arc::from(model);
        let weak_inner = Arc::downgrade(this);
        let buckets = this.config.window_buckets;
        let window_nanos = this.window_nanos;
        let limiter = this.config.adaptive.map(|a| Arc::new(Limiter::new(a)));
        let state = Arc::new_cyclic(|weak_state: &Weak<ModelState>| {
            let weak_state = weak_state.clone();
            ModelState {
                name: name.clone(),
                window: Window::new(buckets, window_nanos),
                breaker: Breaker::new(),
                consecutive: AtomicU32::new(0),
                reset_by_success: AtomicU32::new(0),
                trips: AtomicU32::new(0),
                fixed_cooldown: this.config.get_model_disable_duration(model),
                hook: StreamErrorHook::new(move |e: &Error| {
                    if !e.counts_for_health() {
                        return;
                    }
                    if let (Some(inner), Some(state)) = (weak_inner.upgrade(), weak_state.upgrade())
                    {
                        inner.record(&state, Err(e), true);
                    }
                }),
                shared: SharedSlot::default(),
                limiter,
            }
        });
        let mut map = HashMap::clone(&current);
        map.insert(name, state.clone());
        this.models.store(Arc::new(map));
        Some(state)
    }
}

/// How likely a run of failures may be, by chance alone, before it trips a model whose
/// window is judged by its ratio.
const CHANCE_RUN_ODDS: f64 = 1e-9;

/// The shortest run of failures in a row that a model failing at `failure_rate` at random
/// produces by chance less than once in a billion calls (never below `floor`): a run that
/// long says the model broke just now, before the ratio can show it.
fn chance_run(failure_rate: f64, floor: u32) -> u32 {
    if !(failure_rate > 0.0 && failure_rate < 1.0) {
        return floor;
    }
    let run = (CHANCE_RUN_ODDS.ln() / failure_rate.ln()).ceil();
    floor.max(run.min(f64::from(u32::MAX)) as u32)
}

impl Inner {
    pub(crate) fn now_nanos(&self) -> u64 {
        self.now()
    }

    /// Nanoseconds since the epoch, kept below 2^62 (the breaker word's range).
    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch)).min(u64::MAX >> 2)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    pub(crate) fn check(&self, state: &ModelState) -> Admission {
        let mut w = state.breaker.load();
        loop {
            match w.state {
                BreakerState::Closed => return Admission::Allowed,
                BreakerState::Open => {
                    let now = self.now();
                    if now < w.until {
                        return Admission::CoolingDown {
                            until: self.instant(w.until),
                        };
                    }
                    if !self.may_probe(state) {
                        // Another replica holds the fleet's probe slot: its outcome decides.
                        return Admission::CoolingDown {
                            until: self.instant(now),
                        };
                    }
                    match state
                        .breaker
                        .transition(w, Word::new(BreakerState::HalfOpen, w.until))
                    {
                        Ok(()) => {
                            observe::breaker_half_open(&state.name);
                            return Admission::Probe;
                        }
                        Err(found) => w = found,
                    }
                }
                BreakerState::HalfOpen => {
                    return Admission::CoolingDown {
                        until: self.instant(w.until.max(self.now())),
                    }
                }
            }
        }
    }

    /// `Some(until)` while the model is not available (nanos since the epoch).
    fn cooling_until(&self, state: &ModelState) -> Option<u64> {
        let w = state.breaker.load();
        if w.state == BreakerState::Closed {
            return None;
        }
        let now = self.now();
        match Self::cooling_until_at(w, now) {
            None if !self.may_probe(state) => Some(now),
            until => until,
        }
    }

    fn cooling_until_at(w: Word, now: u64) -> Option<u64> {
        match w.state {
            BreakerState::Closed => None,
            BreakerState::Open => (now < w.until).then_some(w.until),
            BreakerState::HalfOpen => Some(w.until.max(now)),
        }
    }

    pub(crate) fn release_probe(&self, state: &ModelState) {
        let w = state.breaker.load();
        if w.state == BreakerState::HalfOpen {
            // If this fails, another outcome decided in the meantime.
            if state
                .breaker
                .transition(w, Word::new(BreakerState::Open, w.until))
                .is_ok()
            {
                observe::probe_released(&state.name);
            }
        }
    }

    /// Records a success or a failure. `Err` must count for health (callers check).
    /// `stream` marks a mid-stream failure that takes back the attempt's success.
    pub(crate) fn record(&self, state: &ModelState, outcome: Result<(), &Error>, stream: bool) {
        let now = self.now();
        match outcome {
            Ok(()) => self.record_success(state, now),
            Err(e) => {
                let update = if stream {
                    Update::SuccessBecameFailure
                } else {
                    Update::Failure
                };
                self.record_failure(state, now, update, e.retry_after());
            }
        }
    }

    fn record_success(&self, state: &ModelState, now: u64) {
        // Loads first: on the common path (no failure before) nothing is written.
        let mut reset = state.consecutive.load(Ordering::Relaxed);
        if reset != 0 {
            reset = state.consecutive.swap(0, Ordering::Relaxed);
        }
        if state.reset_by_success.load(Ordering::Relaxed) != reset {
            state.reset_by_success.store(reset, Ordering::Relaxed);
        }
        let w = state.breaker.load();
        if w.state == BreakerState::HalfOpen
            && state
                .breaker
                .transition(w, Word::new(BreakerState::Closed, w.until))
                .is_ok()
        {
            // The model is back: outcomes from before the trip no longer speak for it.
            state.window.clear();
            self.share_recovery(state);
            observe::breaker_closed(&state.name);
        }
        state.window.record(now, Update::Success);
    }

    fn record_failure(&self, state: &ModelState, now: u64, update: Update, hint: Option<Duration>) {
        state.window.record(now, update);
        let consecutive = match update {
            // Taking back the latest success: continue the count it reset.
            Update::SuccessBecameFailure => {
                let restored = state
                    .reset_by_success
                    .swap(0, Ordering::Relaxed)
                    .saturating_add(1);
                match state.consecutive.compare_exchange(
                    0,
                    restored,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => restored,
                    Err(_) => state
                        .consecutive
                        .fetch_add(1, Ordering::Relaxed)
                        .saturating_add(1),
                }
            }
            _ => state
                .consecutive
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1),
        };
        let hint_until = hint
            .filter(|_| self.config.respect_retry_after)
            .map(|h| now.saturating_add(nanos(h.min(self.config.max_retry_after))));
        let mut w = state.breaker.load();
        loop {
            // The new word, and the trip count to store when it is a trip.
            let next: Option<(Word, Option<u32>)> = match w.state {
                BreakerState::Closed if self.should_trip(state, consecutive, now) => {
                    Some(self.trip(state, w, now, hint_until))
                }
                // A hint alone holds back the request that got it (the fallback and retry
                // layers wait for it), not the model for everyone: see the module docs.
                BreakerState::Closed => None,
                // The probe failed: open again, for longer.
                BreakerState::HalfOpen => Some(self.trip(state, w, now, hint_until)),
                // Already open: only a longer hint changes anything.
                BreakerState::Open => hint_until
                    .filter(|&h| h > w.until)
                    .map(|h| (Word::new(BreakerState::Open, h), None)),
            };
            let Some((next, trips)) = next else { return };
            match state.breaker.transition(w, next) {
                Ok(()) => {
                    if let Some(t) = trips {
                        state.trips.store(t, Ordering::Relaxed);
                    }
                    self.share_trip(state, w.state, next, trips.is_some(), consecutive);
                    if w.state != BreakerState::Open {
                        let reason = self.trip_reason(w.state, trips.is_some(), consecutive);
                        self.report_open(state, reason, next.until, now);
                    }
                    return;
                }
                Err(found) => w = found,
            }
        }
    }

    /// Reports a breaker that just opened (an event, and metrics).
    fn report_open(&self, state: &ModelState, reason: TripReason, until: u64, now: u64) {
        let trips = state.trips.load(Ordering::Relaxed);
        let cooldown = Duration::from_nanos(until.saturating_sub(now));
        observe::breaker_opened(&state.name, reason.as_str(), trips, cooldown);
    }

    /// Why the breaker opened from `from` (`tripped`: by the trip rules, not a hint).
    fn trip_reason(&self, from: BreakerState, tripped: bool, consecutive: u32) -> TripReason {
        match from {
            BreakerState::HalfOpen => TripReason::ProbeFailed,
            _ if !tripped => TripReason::RetryAfter,
            _ if consecutive >= self.config.consecutive_failures => TripReason::ConsecutiveFailures,
            _ if self.config.failure_ratio.is_some() => TripReason::FailureRatio,
            _ => TripReason::LowSuccessRate,
        }
    }

    /// Whether a counted failure trips a closed breaker (the policy of the module docs).
    fn should_trip(&self, state: &ModelState, consecutive: u32, now: u64) -> bool {
        let c = &self.config;
        let totals = state.window.totals(now);
        let judged = c.failure_ratio.is_some() || c.skip_below_success_rate.is_some();
        if !judged || totals.calls() < u64::from(c.min_calls.max(1)) {
            // Too few calls to judge a ratio: a run of failures decides.
            return consecutive >= c.consecutive_failures;
        }
        let calls = totals.calls() as f64;
        let failure_rate = totals.failures as f64 / calls;
        let by_ratio = c.failure_ratio.is_some_and(|r| failure_rate >= r)
            || c.skip_below_success_rate
                .is_some_and(|r| (totals.successes as f64 / calls) < r);
        by_ratio || consecutive >= chance_run(failure_rate, c.consecutive_failures)
    }

    /// The open word of a trip from `w` at `now`, and the new trip count.
    fn trip(
        &self,
        state: &ModelState,
        w: Word,
        now: u64,
        hint_until: Option<u64>,
    ) -> (Word, Option<u32>) {
        let c = &self.config;
        // A model back in service for a whole window starts a new streak of trips.
        let fresh =
            w.state == BreakerState::Closed && w.until.saturating_add(self.window_nanos) <= now;
        let trips = if fresh {
            1
        } else {
            state.trips.load(Ordering::Relaxed).saturating_add(1)
        };
        let unit = if c.jitter > 0.0 {
            self.jitter.unit()
        } else {
            0.0
        };
        let (base, max) = match state.fixed_cooldown {
            Some(d) => (d, d),
            None => (c.cooldown, c.max_cooldown),
        };
        let d = breaker::cooldown(base, max, trips, c.jitter, unit);
        let mut until = now.saturating_add(nanos(d)).max(w.until);
        if let Some(h) = hint_until {
            until = until.max(h);
        }
        (Word::new(BreakerState::Open, until), Some(trips))
    }
}

// ---------------------------------------------------------------------------------------
// The shared-store seam (see `store.rs`): what this tracker tells its store, and what the
// store applies from other replicas. Without a store every function here returns at once.
// ---------------------------------------------------------------------------------------

impl Inner {
    /// Whether this replica may probe a model whose cooldown is over: always without a
    /// store (or while it does not coordinate); with one, only with the fleet's slot.
    fn may_probe(&self, state: &ModelState) -> bool {
        self.store
            .as_ref()
            .is_none_or(|s| state.shared.granted() || !s.coordinates_probes())
    }

    /// Wall-clock ms of a cooldown end in nanos since the epoch (rounded up, so a shared
    /// cooldown never ends before the local one).
    fn until_wall_ms(&self, until: u64) -> u64 {
        let left = until.saturating_sub(self.now());
        shared::now_ms().saturating_add(left.div_ceil(1_000_000))
    }

    /// Nanos since the epoch of a wall-clock ms cooldown end (0 left: now).
    fn until_local(&self, until_ms: u64) -> u64 {
        let left_ms = until_ms.saturating_sub(shared::now_ms());
        self.now().saturating_add(left_ms.saturating_mul(1_000_000))
    }

    /// Tells the store about a transition to open (a trip, or a longer `Retry-After`).
    fn share_trip(
        &self,
        state: &ModelState,
        from: BreakerState,
        next: Word,
        tripped: bool,
        consecutive: u32,
    ) {
        let Some(store) = &self.store else { return };
        let until_ms = self.until_wall_ms(next.until);
        state.shared.raise(until_ms);
        let reason = self.trip_reason(from, tripped, consecutive);
        state.shared.set_reason(reason);
        store.publish(SharedEvent::Tripped {
            model: state.name.clone(),
            until: shared::from_wall_ms(until_ms),
            trips: state.trips.load(Ordering::Relaxed),
            reason,
        });
    }

    /// Tells the store that this replica's probe closed the breaker.
    fn share_recovery(&self, state: &ModelState) {
        let Some(store) = &self.store else { return };
        store.publish(SharedEvent::Recovered {
            model: state.name.clone(),
            until: shared::from_wall_ms(state.shared.until_ms()),
        });
    }

    /// The state of `model`, created when new (the store's path to [`Inner::insert`]).
    fn shared_state(self: &Arc<Self>, model: &str) -> Option<Arc<ModelState>> {
        if let Some(state) = self.models.load().get(model) {
            return Some(state.clone());
        }
        Inner::insert(self, model)
    }

    /// Another replica's trip: cool down until `until_ms` unless already longer.
    pub(super) fn apply_trip(
        self: &Arc<Self>,
        model: &str,
        until_ms: u64,
        trips: u32,
        reason: TripReason,
    ) -> bool {
        if until_ms <= shared::now_ms() {
            return false;
        }
        let Some(state) = self.shared_state(model) else {
            return false;
        };
        if !state.shared.raise(until_ms) {
            return false;
        }
        state.shared.set_reason(reason);
        state.trips.fetch_max(trips, Ordering::Relaxed);
        let until = self.until_local(until_ms);
        let mut w = state.breaker.load();
        loop {
            if w.state == BreakerState::Open && w.until >= until {
                return true;
            }
            let next = Word::new(BreakerState::Open, w.until.max(until));
            match state.breaker.transition(w, next) {
                Ok(()) => return true,
                Err(found) => w = found,
            }
        }
    }

    /// Another replica's successful probe: close, unless the model tripped again since.
    pub(super) fn apply_recovery(&self, model: &str, until_ms: u64) -> bool {
        let models = self.models.load();
        let Some(state) = models.get(model) else {
            return false;
        };
        if state.shared.until_ms() > until_ms {
            return false;
        }
        let mut w = state.breaker.load();
        while w.state != BreakerState::Closed {
            match state
                .breaker
                .transition(w, Word::new(BreakerState::Closed, w.until))
            {
                Ok(()) => {
                    // As after a local probe: outcomes from before the trip no longer count.
                    state.window.clear();
                    state.consecutive.store(0, Ordering::Relaxed);
                    return true;
                }
                Err(found) => w = found,
            }
        }
        false
    }

    /// The store gave this replica the probe slot of the cooldown ending at `until_ms`.
    pub(super) fn grant_probe(self: &Arc<Self>, model: &str, until_ms: u64) {
        if let Some(state) = self.shared_state(model) {
            state.shared.grant(until_ms);
        }
    }

    /// Every cooldown in force, as trips to share.
    pub(super) fn active_trips(&self) -> Vec<SharedEvent> {
        let now = self.now();
        let models = self.models.load();
        models
            .values()
            .filter_map(|s| {
                let w = s.breaker.load();
                if w.state != BreakerState::Open || w.until <= now {
                    return None;
                }
                // The slot holds the max of every trip shared; 0 only without a store.
                let until_ms = match s.shared.until_ms() {
                    0 => self.until_wall_ms(w.until),
                    ms => ms,
                };
                Some(SharedEvent::Tripped {
                    model: s.name.clone(),
                    until: shared::from_wall_ms(until_ms),
                    trips: s.trips.load(Ordering::Relaxed),
                    reason: s.shared.reason(),
                })
            })
            .collect()
    }
}
