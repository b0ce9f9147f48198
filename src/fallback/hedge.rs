//! Hedging on the first content token (opt-in, per chain): [`HedgePolicy`], the hedge
//! budget, and the recent times to first token of each model.
//!
//! When an attempt has produced no content after the policy's delay, the same request
//! goes to the next model of the chain (models cooling down, at their concurrency limit
//! or unfit for the request are skipped, as by a normal fallback), while the first attempt
//! goes on. The first of the two to produce content wins; the other's future is dropped,
//! which closes its connection: a dropped attempt records nothing against its model's
//! health (it was cancelled, it did not fail) and gives back its adaptive-concurrency slot
//! and probe slot. An attempt that *fails* while the other is still in flight is an
//! ordinary failure (recorded, counted for health) and the other one carries on alone.
//!
//! * **The delay** is fixed ([`HedgePolicy::after`]), or the attempt's model's recent
//!   percentile time to first token ([`HedgePolicy::percentile`], e.g. p90 over its last
//!   64 answers) once it has [`min_samples`](HedgePolicy::min_samples) (default 20);
//!   before that the [`initial_delay`](HedgePolicy::initial_delay), or no hedge. The
//!   samples are the times of attempts of hedged chains that answered without a
//!   same-model retry; an attempt dropped by a hedge gives none (its first token never
//!   came), so the percentile describes the answers that arrived.
//! * **At most one hedge per call**, and never for panic mode's probe or an attempt
//!   forced after a wait.
//! * **The budget** ([`HedgePolicy::budget`], default 5%): each call of a hedged chain
//!   deposits into the chain's [`TpsBudget`], each hedge withdraws, so over any 10 s the
//!   hedges are at most that share of the calls (a ratio `r` allows one hedge per `1/r`
//!   calls, rounded down to whole calls). A hedge the budget refuses is not sent.
//! * **What is hedged** ([`HedgeRequests`]): by default only streamed requests, where
//!   "content" is the first content event of the stream (the classify layer holds a
//!   stream's response until then). With [`HedgeRequests::All`] non-streamed requests are
//!   hedged too, on the time to the whole answer (the classify layer reads a non-stream
//!   success body before it answers), with their own samples.
//!
//! **Cost.** A dropped attempt still costs whatever the provider billed: OpenRouter stops
//! billing a cancelled stream only on some providers (OpenAI, Azure, Anthropic, Fireworks,
//! DeepInfra, Together, DeepSeek, xAI, ...), not on others (Bedrock, Groq, Google,
//! Mistral, SambaNova, ...). A request with tools may have side effects a user does not
//! want twice: [`HedgeRequests::StreamsWithoutTools`] hedges only streams without `tools`.
//!
//! [`ServedBy::hedge`](super::ServedBy::hedge) says whether a hedge was sent and whether
//! it won.
//!
//! ```
//! use std::time::Duration;
//! use tower_openrouter::fallback::{FallbackLayer, HedgePolicy, HedgeRequests};
//!
//! let layer = FallbackLayer::new(["anthropic/claude-sonnet-4.5", "openai/gpt-4o"])
//!     // After the primary's p90 time to first token (2 s until it has 20 samples), at
//!     // most 5% extra calls, streams without tools only.
//!     .hedge(
//!         HedgePolicy::percentile(0.9)
//!             .initial_delay(Duration::from_secs(2))
//!             .budget(0.05)
//!             .requests(HedgeRequests::StreamsWithoutTools),
//!     );
//! layer.validate().unwrap();
//!
//! let bad = FallbackLayer::new(["a/b", "c/d"]).hedge(HedgePolicy::percentile(1.5));
//! assert_eq!(bad.validate().unwrap_err().field(), "hedge.percentile");
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tower::retry::budget::{Budget, TpsBudget};

use crate::error::ConfigError;
use crate::JsonBody;

/// How many recent times to first token are kept per model (and kind of request).
pub const HEDGE_SAMPLES: usize = 64;
/// Models whose times are kept, at most (requests naming ever new models cannot grow it).
const MAX_MODELS: usize = 1024;
/// The window of the hedge budget.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// A hedge of a served call ([`ServedBy::hedge`](super::ServedBy::hedge)).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hedged {
    /// The model of the attempt that went without content for the delay.
    pub earlier: Arc<str>,
    /// The model the hedge went to (the next one of the chain that could be tried).
    pub hedge: Arc<str>,
    /// Whether the hedge answered (the earlier attempt was dropped, or had failed).
    pub hedge_won: bool,
}

/// Which requests of a chain are hedged (see the [module docs](self)).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HedgeRequests {
    /// Streamed requests (`"stream": true`), on their first content event.
    #[default]
    Streams,
    /// Streamed requests without `tools` (a non-empty `tools` array).
    StreamsWithoutTools,
    /// Every generation request; a non-streamed one on the time to its whole answer.
    All,
}

/// When and how often a chain hedges (see the [module docs](self)); set with
/// [`FallbackLayer::hedge`](super::FallbackLayer::hedge) or
/// [`chain_hedge`](super::FallbackLayer::chain_hedge).
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`after`](Self::after) / [`initial_delay`](Self::initial_delay) | - | fixed delay (with a percentile: until enough samples) |
/// | [`percentile`](Self::percentile) | - | the model's recent percentile time to first token |
/// | [`min_samples`](Self::min_samples) | 20 | samples the percentile needs (1 to [`HEDGE_SAMPLES`]) |
/// | [`budget`](Self::budget) | 0.05 | hedges per call at most, over 10 s (0 to 1) |
/// | [`requests`](Self::requests) | [`HedgeRequests::Streams`] | which requests are hedged |
#[derive(Debug, Clone, PartialEq)]
pub struct HedgePolicy {
    delay: Option<Duration>,
    percentile: Option<f64>,
    min_samples: usize,
    budget: f32,
    requests: HedgeRequests,
}

impl HedgePolicy {
    fn new(delay: Option<Duration>, percentile: Option<f64>) -> Self {
        HedgePolicy {
            delay,
            percentile,
            min_samples: 20,
            budget: 0.05,
            requests: HedgeRequests::Streams,
        }
    }

    /// Hedges an attempt that has produced no content after `delay`.
    pub fn after(delay: Duration) -> Self {
        Self::new(Some(delay), None)
    }

    /// Hedges an attempt that has produced no content after its model's recent
    /// `percentile` (in (0, 1): 0.9 is p90) time to first token, once the model has
    /// [`min_samples`](Self::min_samples); before that after the
    /// [`initial_delay`](Self::initial_delay), or not at all.
    pub fn percentile(percentile: f64) -> Self {
        Self::new(None, Some(percentile))
    }

    /// With [`percentile`](Self::percentile): the delay while the model has too few
    /// samples (default: no hedge then).
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// How many samples the percentile needs (default 20, at most [`HEDGE_SAMPLES`]).
    pub fn min_samples(mut self, n: usize) -> Self {
        self.min_samples = n;
        self
    }

    /// The most hedges per call of the chain, over any 10 s (default 0.05: at most 5%
    /// extra upstream calls). A ratio `r` allows one hedge per `floor(1 / r)` calls.
    pub fn budget(mut self, ratio: f32) -> Self {
        self.budget = ratio;
        self
    }

    /// Which requests are hedged (default [`HedgeRequests::Streams`]).
    pub fn requests(mut self, requests: HedgeRequests) -> Self {
        self.requests = requests;
        self
    }

    /// The fixed delay (with a percentile: the delay until enough samples).
    pub fn fixed_delay(&self) -> Option<Duration> {
        self.delay
    }

    /// The percentile, when the delay follows one.
    pub fn delay_percentile(&self) -> Option<f64> {
        self.percentile
    }

    /// The budget ratio.
    pub fn budget_ratio(&self) -> f32 {
        self.budget
    }

    /// Which requests are hedged.
    pub fn hedged_requests(&self) -> HedgeRequests {
        self.requests
    }

    /// Checks the settings; the error's field is `{field}.delay`, `{field}.percentile`,
    /// `{field}.min_samples` or `{field}.budget`.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.delay.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::zero(format!("{field}.delay")));
        }
        if let Some(p) = self.percentile {
            if !(p > 0.0 && p < 1.0) {
                return Err(ConfigError::new(
                    format!("{field}.percentile"),
                    format!("{field}.percentile must be in (0, 1) (0.9 is p90), got {p}"),
                ));
            }
        }
        if self.min_samples == 0 || self.min_samples > HEDGE_SAMPLES {
            return Err(ConfigError::new(
                format!("{field}.min_samples"),
                format!(
                    "{field}.min_samples must be between 1 and {HEDGE_SAMPLES}, got {}",
                    self.min_samples
                ),
            ));
        }
        if !(self.budget > 0.0 && self.budget <= 1.0) {
            return Err(ConfigError::new(
                format!("{field}.budget"),
                format!(
                    "{field}.budget must be in (0, 1] (0.05: at most 5% extra calls), got {}",
                    self.budget
                ),
            ));
        }
        Ok(())
    }

    /// Whether this request is one the policy hedges: `Some(stream)` when it is.
    fn applies_to(&self, req: &Request<Full<Bytes>>) -> Option<bool> {
        // The buffering layer's index, or (the fallback layer used on its own) a parse.
        let json = JsonBody::from_request(req).ok();
        let stream = json.as_ref().and_then(|j| j.raw("stream")) == Some("true");
        let hedged = match self.requests {
            HedgeRequests::All => true,
            HedgeRequests::Streams => stream,
            HedgeRequests::StreamsWithoutTools => stream && !has_tools(json.as_ref()),
        };
        hedged.then_some(stream)
    }
}

/// Whether the body has a non-empty `tools` array.
fn has_tools(json: Option<&JsonBody>) -> bool {
    let Some(tools) = json.and_then(|j| j.raw("tools")) else {
        return false;
    };
    let inner = tools
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'));
    !matches!(inner, Some(i) if i.trim().is_empty()) && tools.trim() != "null"
}

/// One chain's policy and budget.
#[derive(Debug)]
pub(crate) struct ChainHedge {
    policy: HedgePolicy,
    budget: TpsBudget,
}

impl ChainHedge {
    fn new(policy: HedgePolicy) -> Self {
        // Out of range (refused by `validate`): a budget that never allows a hedge, never
        // `TpsBudget`'s panic.
        let ratio = if (0.0..=1.0).contains(&policy.budget) {
            policy.budget
        } else {
            0.0
        };
        ChainHedge {
            budget: TpsBudget::new(BUDGET_WINDOW, 0, ratio),
            policy,
        }
    }
}

/// Every chain's hedging and the models' recent times to first token: one per layer,
/// shared by all its services.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hedging {
    default: Option<Arc<ChainHedge>>,
    named: HashMap<Arc<str>, Arc<ChainHedge>>,
    book: Arc<LatencyBook>,
}

impl Hedging {
    pub(crate) fn set(&mut self, chain: Option<&str>, policy: HedgePolicy) {
        let hedge = Arc::new(ChainHedge::new(policy));
        match chain {
            None => self.default = Some(hedge),
            Some(name) => {
                self.named.insert(name.into(), hedge);
            }
        }
    }

    /// Checks every policy, and that each named one has a chain.
    pub(crate) fn validate(&self, chains: &super::Chains) -> Result<(), ConfigError> {
        if let Some(d) = &self.default {
            d.policy.validate("hedge")?;
        }
        let mut names: Vec<&Arc<str>> = self.named.keys().collect();
        names.sort();
        for name in names {
            let field = format!("chain_hedge.{name}");
            if chains.get(name).is_none() {
                return Err(ConfigError::new(
                    field.clone(),
                    format!("{field}: no chain is named {name:?}"),
                ));
            }
            self.named[name].policy.validate(&field)?;
        }
        Ok(())
    }

    /// The hedging of one call of the chain `name` (`None`: the default chain), when its
    /// policy hedges this request; the call is deposited into the chain's budget.
    pub(crate) fn for_call(
        &self,
        name: Option<&str>,
        req: &Request<Full<Bytes>>,
    ) -> Option<HedgeCall> {
        let chain = match name {
            None => self.default.as_ref(),
            Some(n) => self.named.get(n),
        }?;
        let stream = chain.policy.applies_to(req)?;
        chain.budget.deposit();
        Some(HedgeCall {
            chain: chain.clone(),
            book: self.book.clone(),
            stream,
        })
    }
}

/// The hedging of one call.
pub(crate) struct HedgeCall {
    chain: Arc<ChainHedge>,
    book: Arc<LatencyBook>,
    stream: bool,
}

impl HedgeCall {
    /// How long an attempt of `model` may go without content before it is hedged.
    pub(crate) fn delay(&self, model: &str) -> Option<Duration> {
        let p = &self.chain.policy;
        let Some(q) = p.percentile else {
            return p.delay;
        };
        self.book
            .percentile(model, self.stream, q, p.min_samples)
            .or(p.delay)
    }

    /// Takes a hedge from the budget; `false`: no hedge now.
    pub(crate) fn withdraw(&self) -> bool {
        self.chain.budget.withdraw()
    }

    /// An attempt of `model` produced its first content after `elapsed`.
    pub(crate) fn record(&self, model: &Arc<str>, elapsed: Duration) {
        self.book.record(model, self.stream, elapsed);
    }
}

/// Recent times to first token per model: a copy-on-write map (copied only when a new
/// model is seen), each model's samples a ring of atomics.
#[derive(Debug, Default)]
struct LatencyBook {
    models: ArcSwap<HashMap<Arc<str>, Arc<ModelSamples>>>,
    insert: Mutex<()>,
}

#[derive(Debug, Default)]
struct ModelSamples {
    /// Streams: to the first content event.
    stream: Samples,
    /// Non-streamed requests: to the whole answer.
    whole: Samples,
}

impl LatencyBook {
    fn percentile(&self, model: &str, stream: bool, q: f64, min: usize) -> Option<Duration> {
        let map = self.models.load();
        map.get(model)?.of(stream).percentile(q, min)
    }

    fn record(&self, model: &Arc<str>, stream: bool, elapsed: Duration) {
        let found = self.models.load().get(model).cloned();
        let samples = match found {
            Some(s) => s,
            None => match self.insert(model) {
                Some(s) => s,
                None => return,
            },
        };
        samples.of(stream).push(elapsed);
    }

    /// The model's entry, made on first use (`None` beyond [`MAX_MODELS`]).
    fn insert(&self, model: &Arc<str>) -> Option<Arc<ModelSamples>> {
        let _guard = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        let map = self.models.load();
        if let Some(s) = map.get(model) {
            return Some(s.clone());
        }
        if map.len() >= MAX_MODELS {
            return None;
        }
        let mut next = HashMap::clone(&map);
        let s = Arc::new(ModelSamples::default());
        next.insert(model.clone(), s.clone());
        self.models.store(Arc::new(next));
        Some(s)
    }
}

impl ModelSamples {
    fn of(&self, stream: bool) -> &Samples {
        if stream {
            &self.stream
        } else {
            &self.whole
        }
    }
}

/// The last [`HEDGE_SAMPLES`] times, in microseconds.
#[derive(Debug)]
struct Samples {
    ring: [AtomicU64; HEDGE_SAMPLES],
    /// Samples ever pushed (the next slot is this modulo the ring's length).
    pushed: AtomicUsize,
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            ring: std::array::from_fn(|_| AtomicU64::new(0)),
            pushed: AtomicUsize::new(0),
        }
    }
}

impl Samples {
    fn push(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = self.pushed.fetch_add(1, Ordering::AcqRel) % HEDGE_SAMPLES;
        self.ring[i].store(micros, Ordering::Relaxed);
    }

    /// The `q` quantile (nearest rank) of the samples, with at least `min` of them.
    fn percentile(&self, q: f64, min: usize) -> Option<Duration> {
        let n = self.pushed.load(Ordering::Acquire).min(HEDGE_SAMPLES);
        if n < min.max(1) {
            return None;
        }
        let mut v = [0u64; HEDGE_SAMPLES];
        for (slot, sample) in v.iter_mut().zip(&self.ring).take(n) {
            *slot = sample.load(Ordering::Relaxed);
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        let (_, nth, _) = v[..n].select_nth_unstable(rank - 1);
        Some(Duration::from_micros(*nth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentile() {
        let s = Samples::default();
        for ms in 1..=10u64 {
            s.push(Duration::from_millis(ms * 100));
        }
        assert_eq!(s.percentile(0.9, 20), None);
        assert_eq!(s.percentile(0.9, 10), Some(Duration::from_millis(900)));
        assert_eq!(s.percentile(0.5, 1), Some(Duration::from_millis(500)));
        assert_eq!(s.percentile(0.99, 1), Some(Duration::from_secs(1)));
        // The ring keeps the last HEDGE_SAMPLES.
        for _ in 0..HEDGE_SAMPLES {
            s.push(Duration::from_secs(3));
        }
        assert_eq!(s.percentile(0.1, 1), Some(Duration::from_secs(3)));
    }

    #[test]
    fn tools_are_a_non_empty_array() {
        let json = |b: &'static str| JsonBody::parse(Bytes::from_static(b.as_bytes())).unwrap();
        assert!(!has_tools(None));
        assert!(!has_tools(Some(&json(r#"{"model":"a"}"#))));
        assert!(!has_tools(Some(&json(r#"{"tools": [ ]}"#))));
        assert!(!has_tools(Some(&json(r#"{"tools":null}"#))));
        assert!(has_tools(Some(&json(r#"{"tools":[{"type":"function"}]}"#))));
    }

    #[test]
    fn an_out_of_range_budget_never_panics_and_never_hedges() {
        let hedge = ChainHedge::new(HedgePolicy::after(Duration::from_secs(1)).budget(-1.0));
        for _ in 0..100 {
            hedge.budget.deposit();
        }
        assert!(!hedge.budget.withdraw());
    }
}
