//! The breaker of one model: a small state machine beside the tracker's map (the
//! linkerd way: failure accrual is not inside the map that holds it).
//!
//! [`Breaker`] owns the state (closed, open, half-open), the cooldown end, the run of
//! counted failures and the trips in a row, and every transition between them: admission
//! ([`check`](Breaker::check)), a success, a counted failure, the trip rules
//! ([`should_trip`](Breaker::should_trip), [`trip`](Breaker::trip)), the probe slot given
//! back, and the facts another replica shares. It reads the tracker-wide settings through
//! a [`Policy`] and the model's rolling [`Window`], and tells its caller what changed
//! (a probe admitted, a breaker [`Opened`] or closed); the tracker
//! ([`tracker.rs`](super::tracker)) holds one per model, keeps the map, and does what a
//! transition entails beyond the breaker: clearing the window, telling the shared store,
//! emitting the transition's event.
//!
//! State and cooldown end share one atomic word, so every transition is a single
//! compare-and-swap and no reader ever sees a state with the cooldown of another.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::config::HealthConfig;
use super::window::Window;

/// State of a model's circuit breaker (serialized as `closed`, `open`, `half_open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed,
    /// The model tripped and is cooling down; once the cooldown is over the next request
    /// becomes the probe.
    Open,
    /// The cooldown is over and one probe request is in flight; its outcome closes the
    /// breaker or opens it again.
    HalfOpen,
}

/// Whether one attempt of a model may go upstream, as
/// [`HealthTracker::check`](super::HealthTracker::check) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: go ahead.
    Allowed,
    /// The cooldown is over and this attempt is the one probe: go ahead, and record its
    /// outcome (or drop it: see
    /// [`HealthTracker::release_probe`](super::HealthTracker::release_probe)); it closes or
    /// reopens the breaker.
    Probe,
    /// The model is cooling down: skip it.
    CoolingDown {
        /// When the model may be tried again. While another request probes the model
        /// this is the present instant: the probe's outcome decides, soon.
        until: Instant,
    },
}

const REASONS: [TripReason; 5] = [
    TripReason::ConsecutiveFailures,
    TripReason::FailureRatio,
    TripReason::LowSuccessRate,
    TripReason::ProbeFailed,
    TripReason::RetryAfter,
];

/// Why a model tripped (or cools down longer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TripReason {
    /// Too many counted failures in a row.
    ConsecutiveFailures,
    /// The failure ratio over the window reached its limit.
    FailureRatio,
    /// The success rate over the window fell below the skip threshold.
    LowSuccessRate,
    /// The half-open probe failed.
    ProbeFailed,
    /// A `Retry-After` hint (a 429) cools the model at least that long.
    RetryAfter,
}

impl TripReason {
    /// The reason's name on the wire (`"consecutive_failures"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TripReason::ConsecutiveFailures => "consecutive_failures",
            TripReason::FailureRatio => "failure_ratio",
            TripReason::LowSuccessRate => "low_success_rate",
            TripReason::ProbeFailed => "probe_failed",
            TripReason::RetryAfter => "retry_after",
        }
    }

    /// The reason named `name` (what [`as_str`](Self::as_str) returns).
    pub fn from_name(name: &str) -> Option<Self> {
        REASONS.into_iter().find(|r| r.as_str() == name)
    }

    /// A small number standing for the reason (for an atomic; see [`from_index`](Self::from_index)).
    pub(crate) fn index(self) -> u8 {
        REASONS.iter().position(|r| *r == self).unwrap_or(0) as u8
    }

    /// The reason [`index`](Self::index) gave `i`.
    pub(crate) fn from_index(i: u8) -> Self {
        REASONS[usize::from(i) % REASONS.len()]
    }
}

impl fmt::Display for TripReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const STATE_BITS: u32 = 2;
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

/// A decoded breaker word: state and cooldown end (nanos since the tracker's epoch; 0
/// when the model never cooled down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) state: BreakerState,
    pub(crate) until: u64,
}

impl Word {
    pub(crate) fn new(state: BreakerState, until: u64) -> Self {
        Word { state, until }
    }

    fn encode(self) -> u64 {
        let s = match self.state {
            BreakerState::Closed => CLOSED,
            BreakerState::Open => OPEN,
            BreakerState::HalfOpen => HALF_OPEN,
        };
        (self.until.min(u64::MAX >> STATE_BITS) << STATE_BITS) | s
    }

    fn decode(w: u64) -> Self {
        let state = match w & ((1 << STATE_BITS) - 1) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        };
        Word {
            state,
            until: w >> STATE_BITS,
        }
    }

    /// `Some(until)` while this word keeps the model from being tried at `now`, leaving
    /// the probe slot aside (see [`Breaker::cooling_until`]).
    pub(crate) fn cooling_until(self, now: u64) -> Option<u64> {
        match self.state {
            BreakerState::Closed => None,
            BreakerState::Open => (now < self.until).then_some(self.until),
            BreakerState::HalfOpen => Some(self.until.max(now)),
        }
    }
}

/// What every breaker of a tracker reads: the settings, the tracker's clock (nanoseconds
/// since its `tokio::time` epoch, so paused-time tests are exact) and its jitter source.
pub(crate) struct Policy {
    pub(crate) config: HealthConfig,
    epoch: Instant,
    window_nanos: u64,
    jitter: Jitter,
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Policy {
    pub(crate) fn new(config: HealthConfig) -> Self {
        Policy {
            window_nanos: nanos(config.window).max(1),
            jitter: Jitter::new(config.jitter_seed),
            epoch: Instant::now(),
            config,
        }
    }

    /// The window's length in nanoseconds (at least 1).
    pub(crate) fn window_nanos(&self) -> u64 {
        self.window_nanos
    }

    /// Nanoseconds since the epoch, kept below 2^62 (the breaker word's range).
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch)).min(u64::MAX >> STATE_BITS)
    }

    /// The instant `nanos` after the epoch.
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    /// Why the breaker opened from `from` (`tripped`: by the trip rules, not a hint).
    fn trip_reason(&self, from: BreakerState, tripped: bool, consecutive: u32) -> TripReason {
        let c = &self.config;
        match from {
            BreakerState::HalfOpen => TripReason::ProbeFailed,
            _ if !tripped => TripReason::RetryAfter,
            _ if consecutive >= c.consecutive_failures => TripReason::ConsecutiveFailures,
            _ if c.failure_ratio.is_some() => TripReason::FailureRatio,
            _ => TripReason::LowSuccessRate,
        }
    }
}

/// A breaker that just moved to open (from closed, half-open, or open with a longer
/// `Retry-After`), as [`Breaker::record_failure`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    /// The state it left.
    pub(crate) from: BreakerState,
    /// The cooldown end now in force (nanos since the epoch).
    pub(crate) until: u64,
    /// Trips in a row, after this transition.
    pub(crate) trips: u32,
    pub(crate) reason: TripReason,
}

/// The breaker of one model (see the [module docs](self)).
pub(crate) struct Breaker {
    word: AtomicU64,
    /// Counted failures in a row, up to now.
    consecutive: AtomicU32,
    /// The consecutive failures the latest success reset (0 when it reset none), so a
    /// stream failure can take that success back.
    reset_by_success: AtomicU32,
    /// Trips in a row: what the cooldown is multiplied by.
    trips: AtomicU32,
    /// This model's fixed cooldown ([`HealthConfig::model_disable_duration`]).
    fixed_cooldown: Option<Duration>,
}

impl Breaker {
    pub(crate) fn new(fixed_cooldown: Option<Duration>) -> Self {
        Breaker {
            word: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            reset_by_success: AtomicU32::new(0),
            trips: AtomicU32::new(0),
            fixed_cooldown,
        }
    }

    pub(crate) fn load(&self) -> Word {
        Word::decode(self.word.load(Ordering::Acquire))
    }

    /// Counted failures in a row.
    pub(crate) fn consecutive(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// Trips in a row.
    pub(crate) fn trips(&self) -> u32 {
        self.trips.load(Ordering::Relaxed)
    }

    /// Moves from `current` to `new`; on failure returns the word found instead.
    fn transition(&self, current: Word, new: Word) -> Result<(), Word> {
        self.word
            .compare_exchange(
                current.encode(),
                new.encode(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(Word::decode)
    }

    /// Admission for one attempt. [`Admission::Probe`] means this call moved the breaker
    /// to half-open: the caller holds the probe slot. `may_probe` says whether this
    /// replica may probe a model whose cooldown is over (the shared store's slot); it is
    /// asked only then. A closed breaker costs one atomic load and no clock read.
    pub(crate) fn check(&self, p: &Policy, may_probe: impl Fn() -> bool) -> Admission {
        let mut w = self.load();
        loop {
            match w.state {
                BreakerState::Closed => return Admission::Allowed,
                BreakerState::Open => {
                    let now = p.now();
                    if now < w.until {
                        return Admission::CoolingDown {
                            until: p.instant(w.until),
                        };
                    }
                    if !may_probe() {
                        // Another replica holds the fleet's probe slot: its outcome decides.
                        return Admission::CoolingDown {
                            until: p.instant(now),
                        };
                    }
                    match self.transition(w, Word::new(BreakerState::HalfOpen, w.until)) {
                        Ok(()) => return Admission::Probe,
                        Err(found) => w = found,
                    }
                }
                BreakerState::HalfOpen => {
                    return Admission::CoolingDown {
                        until: p.instant(w.until.max(p.now())),
                    }
                }
            }
        }
    }

    /// `Some(until)` while the model is not available (nanos since the epoch): cooling
    /// down, being probed, or (`may_probe` false) waiting for another replica's probe.
    pub(crate) fn cooling_until(&self, p: &Policy, may_probe: impl Fn() -> bool) -> Option<u64> {
        let w = self.load();
        if w.state == BreakerState::Closed {
            return None;
        }
        let now = p.now();
        match w.cooling_until(now) {
            None if !may_probe() => Some(now),
            until => until,
        }
    }

    /// Panic mode's probe (see `panic.rs`): moves an open breaker to half-open whether or
    /// not its cooldown is over, keeping the cooldown end (so a failed or released probe
    /// leaves the model cooling as long as before, at least). Returns whether it did
    /// (false: closed, or another probe is in flight).
    pub(crate) fn force_probe(&self) -> bool {
        let mut w = self.load();
        while w.state == BreakerState::Open {
            match self.transition(w, Word::new(BreakerState::HalfOpen, w.until)) {
                Ok(()) => return true,
                Err(found) => w = found,
            }
        }
        false
    }

    /// Gives the probe slot back without an outcome: open again with the cooldown over.
    /// Returns whether it did (false: not being probed, or another outcome decided).
    pub(crate) fn release_probe(&self) -> bool {
        let w = self.load();
        w.state == BreakerState::HalfOpen
            && self
                .transition(w, Word::new(BreakerState::Open, w.until))
                .is_ok()
    }

    /// A success: resets the run of failures; a probe's success closes the breaker.
    /// Returns whether it closed (the caller then starts a fresh window).
    pub(crate) fn record_success(&self) -> bool {
        // Loads first: on the common path (no failure before) nothing is written.
        let mut reset = self.consecutive.load(Ordering::Relaxed);
        if reset != 0 {
            reset = self.consecutive.swap(0, Ordering::Relaxed);
        }
        if self.reset_by_success.load(Ordering::Relaxed) != reset {
            self.reset_by_success.store(reset, Ordering::Relaxed);
        }
        let w = self.load();
        w.state == BreakerState::HalfOpen
            && self
                .transition(w, Word::new(BreakerState::Closed, w.until))
                .is_ok()
    }

    /// A counted failure at `now`, already recorded in `window`; `stream` marks a
    /// mid-stream failure that takes back the attempt's success. May trip a closed
    /// breaker, reopens a half-open one (for longer), and lets a `hint` (`Retry-After`)
    /// extend an open one. Returns the transition to open, if any.
    pub(crate) fn record_failure(
        &self,
        p: &Policy,
        window: &Window,
        now: u64,
        stream: bool,
        hint: Option<Duration>,
    ) -> Option<Opened> {
        let consecutive = self.count_failure(stream);
        let c = &p.config;
        let hint_until = hint
            .filter(|_| c.respect_retry_after)
            .map(|h| now.saturating_add(nanos(h.min(c.max_retry_after))));
        let mut w = self.load();
        loop {
            // The new word, and the trip count to store when it is a trip.
            let next: Option<(Word, Option<u32>)> = match w.state {
                BreakerState::Closed if self.should_trip(p, window, consecutive, now) => {
                    Some(self.trip(p, w, now, hint_until))
                }
                // A hint alone holds back the request that got it (the fallback and retry
                // layers wait for it), not the model for everyone: see the module docs.
                BreakerState::Closed => None,
                // The probe failed: open again, for longer.
                BreakerState::HalfOpen => Some(self.trip(p, w, now, hint_until)),
                // Already open: only a longer hint changes anything.
                BreakerState::Open => hint_until
                    .filter(|&h| h > w.until)
                    .map(|h| (Word::new(BreakerState::Open, h), None)),
            };
            let (next, trips) = next?;
            match self.transition(w, next) {
                Ok(()) => {
                    if let Some(t) = trips {
                        self.trips.store(t, Ordering::Relaxed);
                    }
                    return Some(Opened {
                        from: w.state,
                        until: next.until,
                        trips: self.trips(),
                        reason: p.trip_reason(w.state, trips.is_some(), consecutive),
                    });
                }
                Err(found) => w = found,
            }
        }
    }

    /// Adds a failure to the run; returns the run's length.
    fn count_failure(&self, stream: bool) -> u32 {
        if !stream {
            return self
                .consecutive
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
        }
        // Taking back the latest success: continue the count it reset.
        let restored = self
            .reset_by_success
            .swap(0, Ordering::Relaxed)
            .saturating_add(1);
        match self
            .consecutive
            .compare_exchange(0, restored, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => restored,
            Err(_) => self
                .consecutive
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1),
        }
    }

    /// Whether a counted failure trips a closed breaker (the policy of the module docs).
    fn should_trip(&self, p: &Policy, window: &Window, consecutive: u32, now: u64) -> bool {
        let c = &p.config;
        let totals = window.totals(now);
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
    fn trip(&self, p: &Policy, w: Word, now: u64, hint_until: Option<u64>) -> (Word, Option<u32>) {
        let c = &p.config;
        // A model back in service for a whole window starts a new streak of trips.
        let fresh =
            w.state == BreakerState::Closed && w.until.saturating_add(p.window_nanos) <= now;
        let trips = if fresh {
            1
        } else {
            self.trips().saturating_add(1)
        };
        let unit = if c.jitter > 0.0 { p.jitter.unit() } else { 0.0 };
        let (base, max) = match self.fixed_cooldown {
            Some(d) => (d, d),
            None => (c.cooldown, c.max_cooldown),
        };
        let d = cooldown(base, max, trips, c.jitter, unit);
        let mut until = now.saturating_add(nanos(d)).max(w.until);
        if let Some(h) = hint_until {
            until = until.max(h);
        }
        (Word::new(BreakerState::Open, until), Some(trips))
    }

    /// Another replica's trip: cool down until `until` (nanos since the epoch) unless
    /// already longer; trips in a row become at least `trips`. Returns the state it left
    /// (`Open` when it only lengthened a cooldown), `None` when nothing changed.
    pub(crate) fn open_until(&self, until: u64, trips: u32) -> Option<BreakerState> {
        self.trips.fetch_max(trips, Ordering::Relaxed);
        let mut w = self.load();
        loop {
            if w.state == BreakerState::Open && w.until >= until {
                return None;
            }
            let next = Word::new(BreakerState::Open, w.until.max(until));
            match self.transition(w, next) {
                Ok(()) => return Some(w.state),
                Err(found) => w = found,
            }
        }
    }

    /// Another replica's successful probe: closes and forgets the run of failures.
    /// Returns whether it closed (false: closed already); the caller then starts a fresh
    /// window, as after a local probe.
    pub(crate) fn close(&self) -> bool {
        let mut w = self.load();
        while w.state != BreakerState::Closed {
            match self.transition(w, Word::new(BreakerState::Closed, w.until)) {
                Ok(()) => {
                    self.consecutive.store(0, Ordering::Relaxed);
                    return true;
                }
                Err(found) => w = found,
            }
        }
        false
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

/// The cooldown after the `trips`th trip in a row: `base x trips`, capped at `max`, then
/// shortened by `jitter x unit` (`unit` in `[0, 1)`).
pub(crate) fn cooldown(
    base: Duration,
    max: Duration,
    trips: u32,
    jitter: f64,
    unit: f64,
) -> Duration {
    let nominal = base.saturating_mul(trips.max(1)).min(max);
    if jitter <= 0.0 {
        return nominal;
    }
    nominal.mul_f64((1.0 - jitter * unit).clamp(0.0, 1.0))
}

/// A small, lock-free pseudo-random source for jitter (splitmix64 over an atomic
/// counter). Not for anything that needs to be unpredictable.
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    /// A source starting from `seed`, or from a random seed when `None`.
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            // RandomState is seeded randomly per process: a seed without a dependency.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        Jitter {
            state: AtomicU64::new(seed),
        }
    }

    /// A number in `[0, 1)`.
    pub(crate) fn unit(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_by_name() {
        for r in [
            TripReason::ConsecutiveFailures,
            TripReason::FailureRatio,
            TripReason::LowSuccessRate,
            TripReason::ProbeFailed,
            TripReason::RetryAfter,
        ] {
            assert_eq!(TripReason::from_name(r.as_str()), Some(r));
        }
        assert_eq!(TripReason::from_name("bored"), None);
    }

    #[test]
    fn word_round_trips() {
        for state in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            for until in [0, 1, 123_456_789_000, u64::MAX >> STATE_BITS] {
                let w = Word::new(state, until);
                assert_eq!(Word::decode(w.encode()), w);
            }
        }
    }

    #[test]
    fn transition_is_compare_and_swap() {
        let b = Breaker::new(None);
        let closed = b.load();
        assert_eq!(closed, Word::new(BreakerState::Closed, 0));
        let open = Word::new(BreakerState::Open, 42);
        assert_eq!(b.transition(closed, open), Ok(()));
        assert_eq!(b.transition(closed, closed), Err(open));
        assert_eq!(b.load(), open);
    }

    #[test]
    fn a_forced_probe_claims_an_open_breaker_before_its_cooldown_ends() {
        let b = Breaker::new(None);
        assert!(!b.force_probe(), "closed: nothing to claim");
        b.open_until(1_000, 1);
        assert!(b.force_probe());
        assert_eq!(b.load(), Word::new(BreakerState::HalfOpen, 1_000));
        assert!(!b.force_probe(), "a probe is in flight");
        // Given back: cooling as long as before.
        assert!(b.release_probe());
        assert_eq!(b.load(), Word::new(BreakerState::Open, 1_000));
    }

    #[test]
    fn cooldown_grows_per_trip_and_is_capped() {
        let s = Duration::from_secs;
        assert_eq!(cooldown(s(15), s(300), 1, 0.0, 0.5), s(15));
        assert_eq!(cooldown(s(15), s(300), 2, 0.0, 0.5), s(30));
        assert_eq!(cooldown(s(15), s(300), 20, 0.0, 0.5), s(300));
        assert_eq!(cooldown(s(15), s(300), 1000, 0.0, 0.5), s(300));
        // Jitter only shortens, by at most the fraction.
        assert_eq!(
            cooldown(s(10), s(300), 1, 0.1, 0.5),
            Duration::from_millis(9500)
        );
        assert_eq!(cooldown(s(300), s(300), 3, 0.1, 0.0), s(300));
    }

    #[test]
    fn jitter_is_in_unit_range() {
        let j = Jitter::new(None);
        for _ in 0..10_000 {
            let u = j.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn seeded_jitter_is_splitmix64() {
        // Reference outputs of splitmix64 seeded with 1234567 (Vigna's test vector), as
        // 53-bit fractions.
        let j = Jitter::new(Some(1_234_567));
        for expected in [
            6_457_827_717_110_365_317u64,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
        ] {
            assert_eq!(j.unit(), (expected >> 11) as f64 / (1u64 << 53) as f64);
        }
        // Same seed, same sequence; another seed, another one.
        let (a, b, c) = (
            Jitter::new(Some(7)),
            Jitter::new(Some(7)),
            Jitter::new(Some(8)),
        );
        let draw = |j: &Jitter| (0..8).map(|_| j.unit()).collect::<Vec<_>>();
        let first = draw(&a);
        assert_eq!(first, draw(&b));
        assert_ne!(first, draw(&c));
    }
}
