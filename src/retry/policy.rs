//! [`RetryPolicy`]: which errors are retried, how often, and how long to wait.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::retry::budget::TpsBudget;
use tower::util::rng::{HasherRng, Rng};

use crate::error::{self, ConfigError};
use crate::error::{Action, Error, ErrorKind};

/// Longest jitter added to a `Retry-After` hint.
pub const RETRY_AFTER_JITTER_MAX: Duration = Duration::from_millis(500);

/// The retry budget's settings (see [`RetryPolicy::budget`]).
#[derive(Clone)]
enum BudgetSetting {
    New {
        ttl: Duration,
        min_per_sec: u32,
        retry_percent: f32,
    },
    Shared(Arc<TpsBudget>),
    Off,
}

/// Which errors the retry layer retries on the same model, how often, and how long it waits.
///
/// Defaults: errors whose [`Action`] is [`Action::Retry`]; 2 retries per model (overridden
/// per model by [`Attempt::max_retries`](crate::Attempt::max_retries)); exponential backoff
/// with full jitter, base 500 ms, cap 10 s; `Retry-After` hints up to 60 s honoured; a
/// retry budget of 20% of requests plus 10 retries a second over 10 s.
///
/// Setters never fail; [`RetryLayer::new`](super::RetryLayer::new) (or
/// [`validate`](Self::validate)) checks the settings.
#[derive(Clone)]
#[must_use]
pub struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
    pub(crate) retry_after_cap: Duration,
    actions: Vec<Action>,
    also: Vec<ErrorKind>,
    never: Vec<ErrorKind>,
    budget: BudgetSetting,
    rng: Arc<Mutex<dyn Rng + Send>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
            retry_after_cap: Duration::from_secs(60),
            actions: vec![Action::Retry],
            also: Vec::new(),
            never: Vec::new(),
            budget: BudgetSetting::New {
                ttl: Duration::from_secs(10),
                min_per_sec: 10,
                retry_percent: 0.2,
            },
            rng: Arc::new(Mutex::new(HasherRng::default())),
        }
    }
}

impl RetryPolicy {
    /// The default policy (see the type docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Retries per model after the first try (default 2; 0 turns retries off).
    pub fn max_retries(mut self, max: u32) -> Self {
        self.max_retries = max;
        self
    }

    /// Backoff base: retry `n` (0-based) waits a random time in
    /// `0..=min(cap, base * 2^n)` (default 500 ms).
    pub fn backoff_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Longest backoff (default 10 s).
    pub fn backoff_cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// Longest `Retry-After` hint that is waited for (default 60 s). A longer hint, or one
    /// longer than the time left before the deadline, returns the error at once so a
    /// fallback can move on.
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.retry_after_cap = cap;
        self
    }

    /// The actions that are retried (default: only [`Action::Retry`]). Without a fallback
    /// layer, `[Action::Retry, Action::Fallback]` retries the same model on rate limits,
    /// timeouts and outages too.
    pub fn retry_actions(mut self, actions: impl IntoIterator<Item = Action>) -> Self {
        self.actions = actions.into_iter().collect();
        self
    }

    /// Also retries errors of `kind`, whatever their action.
    pub fn retry_kind(mut self, kind: ErrorKind) -> Self {
        self.never.retain(|k| *k != kind);
        self.also.push(kind);
        self
    }

    /// Never retries errors of `kind`, whatever their action.
    pub fn never_retry_kind(mut self, kind: ErrorKind) -> Self {
        self.also.retain(|k| *k != kind);
        self.never.push(kind);
        self
    }

    /// The retry budget: over a window of `ttl` (1 to 60 s), retries may be
    /// `retry_percent` (0 to 1000; `0.2` = 20%) of first tries plus `min_per_sec` a second.
    /// Every layer built from this policy gets its own budget, shared by all its services.
    pub fn budget(mut self, ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        self.budget = BudgetSetting::New {
            ttl,
            min_per_sec,
            retry_percent,
        };
        self
    }

    /// Uses an existing budget (for example one shared by several layers).
    pub fn shared_budget(mut self, budget: Arc<TpsBudget>) -> Self {
        self.budget = BudgetSetting::Shared(budget);
        self
    }

    /// No retry budget: every retryable error is retried up to the maximum.
    pub fn no_budget(mut self) -> Self {
        self.budget = BudgetSetting::Off;
        self
    }

    /// The random source of the jitter (default [`HasherRng`]); a fixed one makes delays
    /// exact in tests.
    pub fn rng(mut self, rng: impl Rng + Send + 'static) -> Self {
        self.rng = Arc::new(Mutex::new(rng));
        self
    }

    /// Checks the settings, and against the total `deadline` when there is one.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the setting: `backoff_base`, `backoff_cap` or
    /// `retry_after_cap` zero; `backoff_cap` shorter than `backoff_base` or longer than the
    /// deadline; `budget_ttl` outside 1 to 60 s; `budget_retry_percent` outside 0 to 1000.
    pub fn validate(&self, deadline: Option<Duration>) -> Result<(), ConfigError> {
        error::positive("backoff_base", self.base)?;
        error::positive("backoff_cap", self.cap)?;
        error::positive("retry_after_cap", self.retry_after_cap)?;
        if self.cap < self.base {
            return Err(ConfigError::new(
                "backoff_cap",
                format!(
                    "backoff_cap ({:?}) is shorter than backoff_base ({:?})",
                    self.cap, self.base
                ),
            ));
        }
        if let Some(deadline) = deadline {
            error::not_longer("backoff_cap", self.cap, "deadline", deadline)?;
        }
        if let BudgetSetting::New {
            ttl,
            min_per_sec,
            retry_percent,
        } = self.budget
        {
            if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
                return Err(ConfigError::new(
                    "budget_ttl",
                    format!("budget_ttl ({ttl:?}) must be between 1s and 60s"),
                ));
            }
            if !(0.0..=1000.0).contains(&retry_percent) {
                return Err(ConfigError::new(
                    "budget_retry_percent",
                    format!("budget_retry_percent ({retry_percent}) must be between 0 and 1000"),
                ));
            }
            if min_per_sec >= i32::MAX as u32 {
                return Err(ConfigError::new(
                    "budget_min_per_sec",
                    format!("budget_min_per_sec ({min_per_sec}) is too large"),
                ));
            }
        }
        Ok(())
    }

    /// The budget the layer uses (after [`validate`](Self::validate)).
    pub(crate) fn make_budget(&self) -> Option<Arc<TpsBudget>> {
        match &self.budget {
            BudgetSetting::New {
                ttl,
                min_per_sec,
                retry_percent,
            } => Some(Arc::new(TpsBudget::new(*ttl, *min_per_sec, *retry_percent))),
            BudgetSetting::Shared(b) => Some(b.clone()),
            BudgetSetting::Off => None,
        }
    }

    /// Whether `err` may be retried on the same model.
    pub fn is_retryable(&self, err: &Error) -> bool {
        let kind = err.kind();
        if kind == ErrorKind::DeadlineExceeded || self.never.contains(&kind) {
            return false;
        }
        self.also.contains(&kind) || self.actions.contains(&err.action())
    }

    /// The longest the backoffs of `retries` retries can add up to:
    /// `sum of min(cap, base * 2^n)` for `n` in `0..retries`.
    pub fn largest_backoffs(&self, retries: u32) -> Duration {
        (0..retries)
            .map(|n| {
                self.base
                    .checked_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
                    .unwrap_or(self.cap)
                    .min(self.cap)
            })
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    /// The backoff before retry `n` (0 = the first retry): full jitter,
    /// `rand(0..=min(cap, base * 2^n))`.
    pub fn backoff(&self, n: u32) -> Duration {
        let ceiling = self
            .base
            .checked_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
            .unwrap_or(self.cap)
            .min(self.cap);
        ceiling.mul_f64(self.random())
    }

    /// The wait for a `Retry-After` hint: the hint plus a jitter of up to 10% of it, at most
    /// [`RETRY_AFTER_JITTER_MAX`], never past [`retry_after_cap`](Self::retry_after_cap)
    /// and never shorter than the hint.
    ///
    /// `None` when the hint itself is longer than the cap: that is not a wait at all (the
    /// caller moves on, a fallback to the next model), because a wait cut to the cap would
    /// call again before the server said it may.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_openrouter::retry::RetryPolicy;
    ///
    /// let p = RetryPolicy::new().retry_after_cap(Duration::from_secs(60));
    /// let wait = p.retry_after_delay(Duration::from_secs(2)).unwrap();
    /// assert!(wait >= Duration::from_secs(2) && wait <= Duration::from_millis(2200));
    /// assert_eq!(p.retry_after_delay(Duration::from_secs(60)), Some(Duration::from_secs(60)));
    /// assert_eq!(p.retry_after_delay(Duration::from_secs(90)), None);
    /// ```
    pub fn retry_after_delay(&self, hint: Duration) -> Option<Duration> {
        if hint > self.retry_after_cap {
            return None;
        }
        let jitter = (hint / 10)
            .min(RETRY_AFTER_JITTER_MAX)
            .mul_f64(self.random());
        Some((hint + jitter).min(self.retry_after_cap))
    }

    /// A random number in `[0, 1]`.
    fn random(&self) -> f64 {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        // `next_f64` is in [0, 1); stretch it so that 1 (the ceiling) is reachable.
        let x = rng.next_u64() >> 11;
        x as f64 / ((1u64 << 53) - 1) as f64
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_retries", &self.max_retries)
            .field("backoff_base", &self.base)
            .field("backoff_cap", &self.cap)
            .field("retry_after_cap", &self.retry_after_cap)
            .field("retry_actions", &self.actions)
            .field("retry_kinds", &self.also)
            .field("never_retry_kinds", &self.never)
            .finish_non_exhaustive()
    }
}
