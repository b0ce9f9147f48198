//! [`HealthConfig`]: when a model trips, how long it cools down.

use std::sync::Arc;
use std::time::Duration;

use super::adaptive::AdaptiveConfig;
use crate::error::ConfigError;

/// Settings of a [`HealthTracker`](super::HealthTracker).
///
/// Builder-style: start from [`HealthConfig::default`] (or [`HealthConfig::new`]) and
/// chain setters; [`HealthTracker::new`](super::HealthTracker::new) does not validate, call
/// [`validate`](HealthConfig::validate) on settings you did not write yourself. Read a
/// setting through its public field of the same name (`config.window`); the per-model
/// fixed cooldowns through [`disable_duration_of`](Self::disable_duration_of).
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`consecutive_failures`](Self::consecutive_failures) | 5 | trip after this many counted failures in a row, while the window is too thin to judge a ratio (see the [module docs](super)) |
/// | [`failure_ratio`](Self::failure_ratio) | 0.5 | trip when failures / calls over the window reach this ... |
/// | [`min_calls`](Self::min_calls) | 20 | ... with at least this many calls in the window (also for the skip threshold) |
/// | [`window`](Self::window) | 30 s | length of the rolling window |
/// | [`window_buckets`](Self::window_buckets) | 10 | time slots the window is cut into |
/// | [`skip_below_success_rate`](Self::skip_below_success_rate) | off | trip when the success rate over the window falls below this |
/// | [`cooldown`](Self::cooldown) | 15 s | cooldown per trip: `cooldown x trips` ... |
/// | [`max_cooldown`](Self::max_cooldown) | 300 s | ... capped at this |
/// | [`jitter`](Self::jitter) | 0.1 | a cooldown is shortened by a random fraction up to this |
/// | [`jitter_seed`](Self::jitter_seed) | random | seed of the jitter's random source |
/// | [`respect_retry_after`](Self::respect_retry_after) | on | a failure that trips the model cools it for at least its `Retry-After` hint ... |
/// | [`max_retry_after`](Self::max_retry_after) | 3600 s | ... hints longer than this are cut to it |
/// | [`max_models`](Self::max_models) | 1024 | models tracked at most; further ones are never skipped |
/// | [`adaptive`](Self::adaptive) | off | a per-model concurrency limit learned from 429s (see [`adaptive`](super::adaptive)) |
/// | [`model_disable_duration`](Self::model_disable_duration) | none | a fixed cooldown for one model |
///
/// The settings users write in their fallback config files map as follows:
/// `skip_threshold: 0.3` is [`skip_below_success_rate(0.3)`](Self::skip_below_success_rate),
/// `health_window_minutes: 10` is [`window(10 min)`](Self::window) and
/// `disable_duration_seconds: 300` is [`disable_duration(300 s)`](Self::disable_duration)
/// (a fixed cooldown).
///
/// ```
/// use std::time::Duration;
/// use tower_openrouter::health::HealthConfig;
///
/// let config = HealthConfig::default()
///     .skip_below_success_rate(0.3)
///     .window(Duration::from_secs(600))
///     .disable_duration(Duration::from_secs(300));
/// assert!(config.validate().is_ok());
/// assert_eq!(config.max_cooldown, Duration::from_secs(300));
///
/// let err = HealthConfig::default().failure_ratio(1.5).validate().unwrap_err();
/// assert_eq!(err.field(), "failure_ratio");
/// assert_eq!(err.to_string(), "health failure_ratio must be in (0, 1], got 1.5");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HealthConfig {
    /// See [`consecutive_failures`](Self::consecutive_failures).
    pub consecutive_failures: u32,
    /// See [`failure_ratio`](Self::failure_ratio); `None` when off.
    pub failure_ratio: Option<f64>,
    /// See [`min_calls`](Self::min_calls).
    pub min_calls: u32,
    /// See [`window`](Self::window).
    pub window: Duration,
    /// See [`window_buckets`](Self::window_buckets).
    pub window_buckets: u32,
    /// See [`skip_below_success_rate`](Self::skip_below_success_rate); `None` when off.
    pub skip_below_success_rate: Option<f64>,
    /// See [`cooldown`](Self::cooldown).
    pub cooldown: Duration,
    /// See [`max_cooldown`](Self::max_cooldown).
    pub max_cooldown: Duration,
    /// See [`jitter`](Self::jitter).
    pub jitter: f64,
    /// See [`jitter_seed`](Self::jitter_seed); `None` for a random seed (the default).
    pub jitter_seed: Option<u64>,
    /// See [`respect_retry_after`](Self::respect_retry_after).
    pub respect_retry_after: bool,
    /// See [`max_retry_after`](Self::max_retry_after).
    pub max_retry_after: Duration,
    /// See [`max_models`](Self::max_models).
    pub max_models: usize,
    /// Per-model fixed cooldowns (looked up once, when a model is first seen; read with
    /// [`disable_duration_of`](Self::disable_duration_of)).
    pub(crate) model_disable: Vec<(Arc<str>, Duration)>,
    /// See [`adaptive`](Self::adaptive); `None` when off (the default).
    pub adaptive: Option<AdaptiveConfig>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            consecutive_failures: 5,
            failure_ratio: Some(0.5),
            min_calls: 20,
            window: Duration::from_secs(30),
            window_buckets: 10,
            skip_below_success_rate: None,
            cooldown: Duration::from_secs(15),
            max_cooldown: Duration::from_secs(300),
            jitter: 0.1,
            jitter_seed: None,
            respect_retry_after: true,
            max_retry_after: Duration::from_secs(3600),
            max_models: 1024,
            model_disable: Vec::new(),
            adaptive: None,
        }
    }
}

/// Most buckets a window may have (each check of the failure ratio reads all of them).
const MAX_BUCKETS: u32 = 1000;
/// Longest window (the window's slot tags wrap after 2^22 slots).
const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

impl HealthConfig {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trips the breaker after `n` counted failures in a row (at least 1) while the window
    /// holds fewer than [`min_calls`](Self::min_calls) calls. Default 5.
    ///
    /// Once the window holds enough calls to judge a ratio, a run trips the model only when
    /// it is at least `n` long and longer than the window's own failure rate would produce
    /// by chance (less than once in a billion calls); with both ratio rules off
    /// ([`without_failure_ratio`](Self::without_failure_ratio), no skip threshold) `n` in a
    /// row always trips.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// Trips the breaker when failures make up at least `ratio` (in `(0, 1]`) of the calls
    /// in the window, once there are [`min_calls`](Self::min_calls). Default 0.5.
    pub fn failure_ratio(mut self, ratio: f64) -> Self {
        self.failure_ratio = Some(ratio);
        self
    }

    /// Turns the failure-ratio rule off (consecutive failures and the skip threshold still
    /// apply).
    pub fn without_failure_ratio(mut self) -> Self {
        self.failure_ratio = None;
        self
    }

    /// Calls the window must hold before the failure ratio or the skip threshold can trip
    /// the breaker (at least 1). Default 20.
    pub fn min_calls(mut self, n: u32) -> Self {
        self.min_calls = n;
        self
    }

    /// Length of the rolling window of outcomes. Default 30 s.
    ///
    /// The window is cut into [`window_buckets`](Self::window_buckets) time slots; an
    /// outcome leaves it between `window - window / buckets` and `window` after it was
    /// recorded.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Number of time slots of the window (1 to 1000). Default 10.
    pub fn window_buckets(mut self, buckets: u32) -> Self {
        self.window_buckets = buckets;
        self
    }

    /// Trips the breaker when the success rate over the window falls below `rate` (in
    /// `(0, 1]`), once there are [`min_calls`](Self::min_calls). Off by default (the
    /// failure ratio covers it with the default settings). This is the `skip_threshold`
    /// of the usual fallback config files.
    pub fn skip_below_success_rate(mut self, rate: f64) -> Self {
        self.skip_below_success_rate = Some(rate);
        self
    }

    /// Cooldown per trip: after the `n`th trip in a row a model cools down for
    /// `cooldown x n`, capped at [`max_cooldown`](Self::max_cooldown). Default 15 s.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Longest cooldown a trip causes (a `Retry-After` hint may be longer). Default 300 s.
    pub fn max_cooldown(mut self, max: Duration) -> Self {
        self.max_cooldown = max;
        self
    }

    /// A fixed cooldown: sets both [`cooldown`](Self::cooldown) and
    /// [`max_cooldown`](Self::max_cooldown) to `duration`, so every trip cools the model
    /// for `duration`. This is the `disable_duration` of the usual fallback config files.
    pub fn disable_duration(mut self, duration: Duration) -> Self {
        self.cooldown = duration;
        self.max_cooldown = duration;
        self
    }

    /// A fixed cooldown for one model, overriding [`cooldown`](Self::cooldown) and
    /// [`max_cooldown`](Self::max_cooldown) for it: the per-model `disable_duration` of the
    /// usual fallback config files. Setting it again for the same model replaces it.
    pub fn model_disable_duration(
        mut self,
        model: impl Into<Arc<str>>,
        duration: Duration,
    ) -> Self {
        let model = model.into();
        self.model_disable.retain(|(m, _)| *m != model);
        self.model_disable.push((model, duration));
        self
    }

    /// The fixed cooldown of `model`, when one is set with
    /// [`model_disable_duration`](Self::model_disable_duration).
    pub fn disable_duration_of(&self, model: &str) -> Option<Duration> {
        self.model_disable
            .iter()
            .find(|(m, _)| &**m == model)
            .map(|(_, d)| *d)
    }

    /// A cooldown is shortened by a random fraction up to `fraction` (in `[0, 1)`), so
    /// models that tripped together do not all come back at once. 0 makes cooldowns exact
    /// (useful in tests; [`jitter_seed`](Self::jitter_seed) keeps the jitter and makes it
    /// reproducible). Default 0.1.
    ///
    /// With jitter `j`, the cooldown of a trip whose nominal cooldown is `c` lies in
    /// `(c x (1 - j), c]`.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Seeds the random source of the cooldown [`jitter`](Self::jitter), so cooldowns are
    /// reproducible: two trackers built from settings with the same seed, fed the same
    /// outcomes, give identical cooldowns. Default: a random seed per tracker.
    ///
    /// Each [`HealthTracker`](super::HealthTracker) built from these settings starts its
    /// own source from the seed (a clone of the settings shares nothing). The source is
    /// shared by all models of a tracker and drawn once per trip, in the order the trips
    /// happen: the `n`th trip of the tracker (of any model) gets the `n`th number. Trips
    /// racing on several threads draw in whichever order they happen, so exact sequences
    /// need a single task (or paused time, as in tests). Nothing is drawn while
    /// [`jitter`](Self::jitter) is 0.
    ///
    /// The source is a splitmix64 generator on one atomic word: a draw is a single
    /// `fetch_add`, so a seeded source adds no lock, and checks and records of outcomes
    /// stay lock-free (a draw only happens when a model trips anyway). Not for anything
    /// that must be unpredictable.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_openrouter::health::{HealthConfig, HealthTracker};
    /// use tower_openrouter::{Error, ErrorKind};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let config = HealthConfig::default()
    ///     .consecutive_failures(1)
    ///     .jitter(0.1)
    ///     .jitter_seed(42);
    /// assert_eq!(config.jitter_seed, Some(42));
    ///
    /// // Two trackers with the same seed: the same cooldown, to the nanosecond.
    /// let (a, b) = (HealthTracker::new(config.clone()), HealthTracker::new(config));
    /// let err = Error::new(ErrorKind::ProviderError);
    /// a.record("openai/gpt-4o", Err(&err));
    /// b.record("openai/gpt-4o", Err(&err));
    /// let until = a.cooldown_until("openai/gpt-4o").unwrap();
    /// assert_eq!(b.cooldown_until("openai/gpt-4o"), Some(until));
    ///
    /// // Within the jitter's range: (15 s x 0.9, 15 s].
    /// let left = until - tokio::time::Instant::now();
    /// assert!(left > Duration::from_millis(13_500) && left <= Duration::from_secs(15));
    /// # }
    /// ```
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Whether a counted failure's [`retry_after`](crate::Error::retry_after) hint (a 429's
    /// `Retry-After`) makes the cooldown at least that long when the failure trips the model,
    /// or extends the cooldown of a model that is cooling already. Default on.
    ///
    /// A hint alone never cools a closed model: it holds back the request that got it (the
    /// fallback layer may wait it out), not the model for every request.
    pub fn respect_retry_after(mut self, respect: bool) -> Self {
        self.respect_retry_after = respect;
        self
    }

    /// Longest `Retry-After` hint taken as given; longer ones are cut to this. Default
    /// 3600 s.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Most models the tracker keeps state for (at least 1); outcomes of further models
    /// are not recorded and such models are always available. Default 1024.
    pub fn max_models(mut self, n: usize) -> Self {
        self.max_models = n;
        self
    }

    /// Turns on the adaptive concurrency limit of every model (see
    /// [`health::adaptive`](super::adaptive)); off by default.
    pub fn adaptive(mut self, config: AdaptiveConfig) -> Self {
        self.adaptive = Some(config);
        self
    }

    /// Checks every setting; the error's [`field`](ConfigError::field) is the setter's name
    /// (`"window"`, `"failure_ratio"`, ...) and its message names it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn unit_ratio(field: &'static str, v: Option<f64>) -> Result<(), ConfigError> {
            match v {
                Some(v) if !(v > 0.0 && v <= 1.0) => Err(ConfigError::new(
                    field,
                    format!("health {field} must be in (0, 1], got {v}"),
                )),
                _ => Ok(()),
            }
        }
        if self.consecutive_failures == 0 {
            return Err(ConfigError::zero("consecutive_failures"));
        }
        unit_ratio("failure_ratio", self.failure_ratio)?;
        unit_ratio("skip_below_success_rate", self.skip_below_success_rate)?;
        if self.min_calls == 0 {
            return Err(ConfigError::zero("min_calls"));
        }
        if !(1..=MAX_BUCKETS).contains(&self.window_buckets) {
            return Err(ConfigError::new(
                "window_buckets",
                format!(
                    "health window_buckets must be 1 to {MAX_BUCKETS}, got {}",
                    self.window_buckets
                ),
            ));
        }
        if self.window.as_nanos() < u128::from(self.window_buckets) {
            return Err(ConfigError::new(
                "window",
                format!(
                    "health window ({:?}) must be at least 1 ns per bucket",
                    self.window
                ),
            ));
        }
        if self.window > MAX_WINDOW {
            return Err(ConfigError::longer_than(
                "window",
                self.window,
                "7 days",
                MAX_WINDOW,
            ));
        }
        if self.cooldown.is_zero() {
            return Err(ConfigError::zero("cooldown"));
        }
        if self.cooldown > self.max_cooldown {
            return Err(ConfigError::longer_than(
                "cooldown",
                self.cooldown,
                "max_cooldown",
                self.max_cooldown,
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(ConfigError::new(
                "jitter",
                format!("health jitter must be in [0, 1), got {}", self.jitter),
            ));
        }
        if self.max_models == 0 {
            return Err(ConfigError::zero("max_models"));
        }
        if self.model_disable.iter().any(|(_, d)| d.is_zero()) {
            return Err(ConfigError::zero("model_disable_duration"));
        }
        if let Some(a) = &self.adaptive {
            a.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = HealthConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.consecutive_failures, 5);
        assert_eq!(c.failure_ratio, Some(0.5));
        assert_eq!(c.min_calls, 20);
        assert_eq!(c.window, Duration::from_secs(30));
        assert_eq!(c.cooldown, Duration::from_secs(15));
        assert_eq!(c.max_cooldown, Duration::from_secs(300));
        assert_eq!(c.skip_below_success_rate, None);
        assert_eq!(c.jitter, 0.1);
        assert_eq!(c.jitter_seed, None);
    }

    #[test]
    fn each_bad_setting_is_named() {
        let d = HealthConfig::default;
        let cases: Vec<(HealthConfig, &str)> = vec![
            (d().consecutive_failures(0), "consecutive_failures"),
            (d().failure_ratio(0.0), "failure_ratio"),
            (d().failure_ratio(f64::NAN), "failure_ratio"),
            (d().skip_below_success_rate(1.2), "skip_below_success_rate"),
            (d().min_calls(0), "min_calls"),
            (d().window_buckets(0), "window_buckets"),
            (d().window_buckets(1001), "window_buckets"),
            (d().window(Duration::ZERO), "window"),
            (d().window(Duration::from_secs(8 * 86400)), "window"),
            (d().cooldown(Duration::ZERO), "cooldown"),
            (d().max_cooldown(Duration::from_secs(1)), "cooldown"),
            (d().jitter(1.0), "jitter"),
            (d().jitter(-0.1), "jitter"),
            (d().max_models(0), "max_models"),
            (
                d().model_disable_duration("a/b", Duration::ZERO),
                "model_disable_duration",
            ),
        ];
        for (c, field) in cases {
            assert_eq!(c.validate().unwrap_err().field(), field, "{c:?}");
        }
    }

    #[test]
    fn disable_duration_is_a_fixed_cooldown() {
        let c = HealthConfig::default().disable_duration(Duration::from_secs(300));
        assert_eq!(c.cooldown, Duration::from_secs(300));
        assert_eq!(c.max_cooldown, Duration::from_secs(300));
        assert!(c.validate().is_ok());
    }
}
