//! [`HealthTracker`]: the per-model map and the facade, shared by every request.
//!
//! The map holds, per model, its rolling [`Window`], its [`Breaker`] (the state machine
//! of `breaker.rs`, beside the map, not inside it), its slot of the shared store and its
//! adaptive limit. The tracker finds a model's state (creating it on first use), hands
//! outcomes to the window and the breaker, and does what a breaker transition entails
//! beyond the breaker: a fresh window when the breaker closes, the store told about trips
//! and recoveries, the transition's event. The store seam (what other replicas share) is
//! at the end of this file.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::adaptive::{Limiter, Slots};
use super::breaker::{Admission, Breaker, BreakerState, Opened, Policy, TripReason};
use super::config::HealthConfig;
use super::events::{self, Source};
use super::panic::PanicGate;
use super::store::{self as shared, HealthSink, HealthStore, SharedEvent, SharedSlot};
use super::window::{Update, Window};
use crate::{Error, StreamErrorHook};

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
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// The settings, clock and jitter every breaker reads.
    policy: Policy,
    models: ArcSwap<HashMap<Arc<str>, Arc<ModelState>>>,
    insert: Mutex<()>,
    /// Where trips and recoveries are shared with other replicas (none: local only).
    store: Option<Arc<dyn HealthStore>>,
    /// Requests waiting for a free slot of an adaptive limit.
    slots: Slots,
}

/// One model's entry in the map.
pub(crate) struct ModelState {
    pub(crate) name: Arc<str>,
    window: Window,
    breaker: Breaker,
    /// Reports a mid-stream failure of this model (holds weak references only).
    pub(crate) hook: StreamErrorHook,
    /// The fleet's cooldown end and probe slot (used with a store only).
    shared: SharedSlot,
    /// The adaptive concurrency limit, when [`HealthConfig::adaptive`] is set.
    pub(crate) limiter: Option<Arc<Limiter>>,
    /// Panic mode's gate: one probe for every caller whose chain is cooling down.
    pub(crate) panic: PanicGate,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self::new(HealthConfig::default())
    }
}

impl fmt::Debug for HealthTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthTracker")
            .field("config", &self.inner.policy.config)
            .field("models", &self.inner.models.load().len())
            .finish()
    }
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
        HealthTracker {
            inner: Arc::new(Inner {
                policy: Policy::new(config),
                models: ArcSwap::from_pointee(HashMap::new()),
                insert: Mutex::new(()),
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
        &self.inner.policy.config
    }

    /// Admission for one attempt of `model`.
    ///
    /// [`Admission::Allowed`] while the breaker is closed (and for a model never seen).
    /// When the cooldown is over, the first caller gets [`Admission::Probe`] and holds the
    /// probe slot until it records the attempt's outcome (or calls
    /// [`release_probe`](Self::release_probe)); everybody else gets
    /// [`Admission::CoolingDown`] meanwhile.
    pub fn check(&self, model: &str) -> Admission {
        self.with_state(model, |state| self.inner.check(state))
            .unwrap_or(Admission::Allowed)
    }

    /// Whether `model` would be admitted now, without claiming anything: its breaker is
    /// closed, or its cooldown is over and nobody is probing it yet.
    pub fn is_available(&self, model: &str) -> bool {
        self.with_state(model, |state| self.inner.cooling_until(state).is_none())
            .unwrap_or(true)
    }

    /// When `model` may be tried again; `None` when it is available now (see
    /// [`is_available`](Self::is_available)). While a probe is in flight this is the
    /// present instant.
    pub fn cooldown_until(&self, model: &str) -> Option<Instant> {
        let until = self.with_state(model, |state| self.inner.cooling_until(state))??;
        Some(self.inner.policy.instant(until))
    }

    /// Successes / calls of `model` over the window; `None` with no counted calls.
    pub fn success_rate(&self, model: &str) -> Option<f64> {
        let now = self.inner.policy.now();
        self.with_state(model, |state| state.window.totals(now).success_rate())?
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
            Err(e) if !e.counts_for_health() => self.release_probe(model),
            _ => {
                // Fast path: a known model, no lock, no refcount traffic.
                if self
                    .with_state(model, |state| self.inner.record(state, outcome, false))
                    .is_some()
                {
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
        self.with_state(model, |state| self.inner.record(state, Err(error), true));
    }

    /// Gives back the probe slot [`check`](Self::check) handed out with
    /// [`Admission::Probe`], without an outcome (the attempt was cancelled): the breaker
    /// stays open with its cooldown over, so the next request probes. Does nothing when
    /// the model is not being probed.
    pub fn release_probe(&self, model: &str) {
        self.with_state(model, |state| self.inner.release_probe(state));
    }

    /// The health of every model seen so far, sorted by model id.
    pub fn snapshot(&self) -> Vec<ModelHealth> {
        let p = &self.inner.policy;
        let now = p.now();
        let models = self.inner.models.load();
        let mut out: Vec<ModelHealth> = models
            .values()
            .map(|s| {
                let w = s.breaker.load();
                let totals = s.window.totals(now);
                let until = w.cooling_until(now);
                ModelHealth {
                    model: s.name.clone(),
                    state: w.state,
                    success_rate: totals.success_rate(),
                    calls: totals.calls(),
                    failures: totals.failures,
                    consecutive_failures: s.breaker.consecutive(),
                    trips: s.breaker.trips(),
                    cooldown_until: until.map(|u| p.instant(u)),
                    cooldown_remaining: until.map(|u| Duration::from_nanos(u.saturating_sub(now))),
                    concurrency_limit: s.limiter.as_ref().map(|l| l.limit()),
                    in_flight: s.limiter.as_ref().map(|l| l.in_flight()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        out
    }
}

/// What the health layer and the adaptive limit use: the state of one model, looked up
/// once per attempt, and the tracker's operations on it.
impl HealthTracker {
    /// `f` of the state of `model`, when it is tracked already: no lock, no refcount
    /// traffic (the map's snapshot is held only for the call).
    pub(crate) fn with_state<R>(&self, model: &str, f: impl FnOnce(&ModelState) -> R) -> Option<R> {
        self.inner.models.load().get(model).map(|state| f(state))
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

    /// [`check`](Self::check) of a model whose state the caller holds.
    pub(crate) fn check_tracked(&self, state: &ModelState) -> Admission {
        self.inner.check(state)
    }

    /// [`record`](Self::record) of a model whose state the caller holds. `Err` must count
    /// for health (the caller checks).
    pub(crate) fn record_tracked(&self, state: &ModelState, outcome: Result<(), &Error>) {
        self.inner.record(state, outcome, false);
    }

    /// [`release_probe`](Self::release_probe) of a model whose state the caller holds.
    pub(crate) fn release_tracked_probe(&self, state: &ModelState) {
        self.inner.release_probe(state);
    }

    /// Panic mode's probe of a model whose state the caller holds (see `panic.rs`): the
    /// probe slot of an open breaker, even before its cooldown is over. `false` when the
    /// breaker is closed or another probe is in flight.
    pub(crate) fn force_tracked_probe(&self, state: &ModelState) -> bool {
        let forced = state.breaker.force_probe();
        if forced {
            events::breaker_half_open(&state.name);
        }
        forced
    }

    /// Nanoseconds since the tracker's epoch (the clock of the breakers and limits).
    pub(crate) fn now_nanos(&self) -> u64 {
        self.inner.policy.now()
    }

    /// Requests waiting for a free slot of an adaptive limit.
    pub(crate) fn slots(&self) -> &Slots {
        &self.inner.slots
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
        let config = &this.policy.config;
        if current.len() >= config.max_models {
            return None;
        }
        let name: Arc<str> = Arc::from(model);
        let weak_inner = Arc::downgrade(this);
        let state = Arc::new_cyclic(|weak_state: &Weak<ModelState>| {
            let weak_state = weak_state.clone();
            ModelState {
                name: name.clone(),
                window: Window::new(config.window_buckets, this.policy.window_nanos()),
                breaker: Breaker::new(config.disable_duration_of(model)),
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
                limiter: config
                    .adaptive
                    .map(|a| Arc::new(Limiter::new(a, name.clone()))),
                panic: PanicGate::default(),
            }
        });
        let mut map = HashMap::clone(&current);
        map.insert(name, state.clone());
        this.models.store(Arc::new(map));
        Some(state)
    }

    fn check(&self, state: &ModelState) -> Admission {
        let admission = state.breaker.check(&self.policy, || self.may_probe(state));
        if admission == Admission::Probe {
            events::breaker_half_open(&state.name);
        }
        admission
    }

    /// `Some(until)` while the model is not available (nanos since the epoch).
    fn cooling_until(&self, state: &ModelState) -> Option<u64> {
        state
            .breaker
            .cooling_until(&self.policy, || self.may_probe(state))
    }

    fn release_probe(&self, state: &ModelState) {
        // If this fails, another outcome decided in the meantime.
        if state.breaker.release_probe() {
            events::probe_released(&state.name);
        }
    }

    /// Records a success or a failure. `Err` must count for health (callers check).
    /// `stream` marks a mid-stream failure that takes back the attempt's success.
    fn record(&self, state: &ModelState, outcome: Result<(), &Error>, stream: bool) {
        let now = self.policy.now();
        match outcome {
            Ok(()) => {
                if state.breaker.record_success() {
                    // The model is back: outcomes from before the trip no longer speak for it.
                    state.window.clear();
                    self.share_recovery(state);
                    events::breaker_closed(&state.name, Source::Local);
                }
                state.window.record(now, Update::Success);
            }
            Err(e) => {
                let update = if stream {
                    Update::SuccessBecameFailure
                } else {
                    Update::Failure
                };
                state.window.record(now, update);
                let opened = state.breaker.record_failure(
                    &self.policy,
                    &state.window,
                    now,
                    stream,
                    e.retry_after(),
                );
                if let Some(opened) = opened {
                    self.share_trip(state, &opened);
                    let cooldown = Duration::from_nanos(opened.until.saturating_sub(now));
                    let (model, reason) = (&state.name, opened.reason);
                    if opened.from == BreakerState::Open {
                        events::cooldown_lengthened(model, reason, cooldown, Source::Local);
                    } else {
                        events::breaker_opened(
                            model,
                            reason,
                            opened.trips,
                            cooldown,
                            Source::Local,
                        );
                    }
                }
            }
        }
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
        let left = until.saturating_sub(self.policy.now());
        shared::now_ms().saturating_add(left.div_ceil(1_000_000))
    }

    /// Nanos since the epoch of a wall-clock ms cooldown end (0 left: now).
    fn until_local(&self, until_ms: u64) -> u64 {
        let left_ms = until_ms.saturating_sub(shared::now_ms());
        self.policy
            .now()
            .saturating_add(left_ms.saturating_mul(1_000_000))
    }

    /// Tells the store about a transition to open (a trip, or a longer `Retry-After`).
    fn share_trip(&self, state: &ModelState, opened: &Opened) {
        let Some(store) = &self.store else { return };
        let until_ms = self.until_wall_ms(opened.until);
        state.shared.raise(until_ms);
        state.shared.set_reason(opened.reason);
        store.publish(SharedEvent::Tripped {
            model: state.name.clone(),
            until: shared::from_wall_ms(until_ms),
            trips: opened.trips,
            reason: opened.reason,
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
        let local = self.until_local(until_ms);
        let Some(from) = state.breaker.open_until(local, trips) else {
            return true;
        };
        let left = Duration::from_nanos(local.saturating_sub(self.policy.now()));
        if from == BreakerState::Open {
            events::cooldown_lengthened(&state.name, reason, left, Source::Fleet);
        } else {
            let trips = state.breaker.trips();
            events::breaker_opened(&state.name, reason, trips, left, Source::Fleet);
        }
        true
    }

    /// Another replica's successful probe: close, unless the model tripped again since.
    pub(super) fn apply_recovery(&self, model: &str, until_ms: u64) -> bool {
        let models = self.models.load();
        let Some(state) = models.get(model) else {
            return false;
        };
        if state.shared.until_ms() > until_ms || !state.breaker.close() {
            return false;
        }
        // As after a local probe: outcomes from before the trip no longer count.
        state.window.clear();
        events::breaker_closed(&state.name, Source::Fleet);
        true
    }

    /// The store gave this replica the probe slot of the cooldown ending at `until_ms`.
    pub(super) fn grant_probe(self: &Arc<Self>, model: &str, until_ms: u64) {
        if let Some(state) = self.shared_state(model) {
            state.shared.grant(until_ms);
        }
    }

    /// Every cooldown in force, as trips to share.
    pub(super) fn active_trips(&self) -> Vec<SharedEvent> {
        let now = self.policy.now();
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
                    trips: s.breaker.trips(),
                    reason: s.shared.reason(),
                })
            })
            .collect()
    }
}
