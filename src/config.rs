//! The settings file: JSON (or YAML, feature `yaml`) read into a [`Config`], and the
//! [`OpenRouterLayer`](crate::OpenRouterLayer) it describes.
//!
//! [`Config`] lists every key. Each layer checks its own settings; a bad key comes back as
//! a [`ConfigError`] whose [`field`](ConfigError::field) is the key's path.
//!
//! ```
//! use tower_openrouter::config::Config;
//! use tower_openrouter::OpenRouterLayer;
//!
//! let config = Config::from_json(r#"{
//!     "default_chain": ["anthropic/claude-3.5-sonnet", "openai/gpt-4o"],
//!     "settings": {"deadline_seconds": 120}
//! }"#).unwrap();
//! let layer = OpenRouterLayer::from_config(&config).unwrap();
//! assert_eq!(layer.chains().default_chain().unwrap().len(), 2);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::error::ConfigError;
use crate::fallback::{Chain, ChainModel, Chains, Order};

mod build;

/// Chains and settings loaded from JSON: what
/// [`OpenRouterLayer::from_json`](crate::stack::OpenRouterLayer::from_json) reads.
///
/// Every field is optional except that at least one chain must be configured. Unknown
/// fields are an error (a typo never goes unnoticed). The whole document may also be
/// wrapped in `{"fallback": { ... }}`, the shape of the settings files people keep today.
///
/// | key | meaning |
/// |---|---|
/// | `default_chain` | the chain used when the request names none |
/// | `chains`, `task_chains`, `capability_chains` | named chains (`coding`, `vision`, ...), all one namespace |
/// | `cost_tiers` | `[{"name": "budget", "models": [..]}, ..]` cheapest first; selects as `tier:<max tier>` |
/// | `providers` | `[{"name": "anthropic", "models": [..]}, ..]`; selects as `provider:<primary>` |
/// | `native_routing` | OpenRouter's server-side `models`, `provider`, `route`, `fallbacks` ([`NativeRoutingConfig`]) |
/// | `endpoint_chains` | a named chain per endpoint, `{"embeddings": "embed"}`: model fallback there too |
/// | `catalog` | the model catalog: `refresh_seconds`, `refresh`, `url`, `strict`, `snapshot` ([`CatalogSection`]) |
/// | `max_price` | price ceilings: `per_request`, `prompt`, `completion`, `chains`, `header` ([`MaxPriceSection`]) |
/// | `hedging` | hedging on the first content token: `default_chain`, `chains` ([`HedgingSection`]) |
/// | `settings` | the [`Settings`] |
///
/// A model is an id (`"openai/gpt-4o"`) or an object `{"id", "timeout_seconds",
/// "max_retries", "label", "priority", "disable_duration_seconds"}` ([`ModelConfig`]).
///
/// ```
/// use tower_openrouter::config::Config;
///
/// let config = Config::from_json(r#"{
///   "fallback": {
///     "default_chain": ["anthropic/claude-3.5-sonnet", "openai/gpt-4-turbo"],
///     "task_chains": {"coding": ["anthropic/claude-3.5-sonnet", "deepseek/deepseek-coder"]},
///     "settings": {"max_retries_per_model": 2, "disable_duration_seconds": 300,
///                  "health_window_minutes": 10, "skip_threshold": 0.3}
///   }
/// }"#).unwrap();
/// let chains = config.chains().unwrap();
/// assert_eq!(chains.get("coding").unwrap().len(), 2);
///
/// let err = Config::from_json(r#"{"default_chain": ["a/b"], "settings": {"skip_threshold": 1.5}}"#)
///     .unwrap_err();
/// assert_eq!(err.field(), "settings.skip_threshold");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The chain used when the request names none.
    #[serde(default)]
    pub default_chain: Option<Vec<ModelConfig>>,
    /// Named chains.
    #[serde(default)]
    pub chains: BTreeMap<String, Vec<ModelConfig>>,
    /// Named chains by task (`coding`, `creative`, `fast`); same namespace as `chains`.
    #[serde(default)]
    pub task_chains: BTreeMap<String, Vec<ModelConfig>>,
    /// Named chains by capability (`tool_calling`, `vision`, `long_context`, `budget`);
    /// same namespace as `chains`.
    #[serde(default)]
    pub capability_chains: BTreeMap<String, Vec<ModelConfig>>,
    /// Cost tiers, cheapest first.
    #[serde(default)]
    pub cost_tiers: Vec<NamedModels>,
    /// Providers' model lists, for cross-provider chains.
    #[serde(default)]
    pub providers: Vec<NamedModels>,
    /// OpenRouter's server-side routing parameters, injected into every request.
    #[serde(default)]
    pub native_routing: Option<NativeRoutingConfig>,
    /// A named chain per endpoint: `{"embeddings": "embed"}` (see
    /// `OpenRouterLayerBuilder::endpoint_chain`).
    #[serde(default)]
    pub endpoint_chains: BTreeMap<String, String>,
    /// Stack settings.
    #[serde(default)]
    pub settings: Settings,
    /// Health settings beyond `settings`: `{"shared": {...}}` shares model health across
    /// replicas ([`HealthSection`]).
    #[serde(default)]
    pub health: Option<HealthSection>,
    /// The model catalog: `{"refresh_seconds", "refresh", "url", "strict", "snapshot"}`
    /// ([`CatalogSection`]).
    #[serde(default)]
    pub catalog: Option<CatalogSection>,
    /// Price ceilings ([`MaxPriceSection`]); needs `catalog`.
    #[serde(default)]
    pub max_price: Option<MaxPriceSection>,
    /// Hedging on the first content token, per chain ([`HedgingSection`]).
    #[serde(default)]
    pub hedging: Option<HedgingSection>,
}

/// The `hedging` key: which chains hedge on the first content token, and how (see
/// [`fallback::hedge`](crate::fallback::hedge)).
///
/// ```
/// use tower_openrouter::config::Config;
/// use tower_openrouter::OpenRouterLayer;
///
/// let config = Config::from_json(r#"{
///   "default_chain": ["anthropic/claude-sonnet-4.5", "openai/gpt-4o"],
///   "chains": {"fast": ["openai/gpt-4o-mini", "google/gemini-2.5-flash"]},
///   "hedging": {
///     "default_chain": {"percentile": 0.9, "delay_seconds": 2, "budget_percent": 5,
///                       "requests": "streams_without_tools"},
///     "chains": {"fast": {"delay_seconds": 0.8}}
///   }
/// }"#).unwrap();
/// OpenRouterLayer::from_config(&config).unwrap();
///
/// let err = Config::from_json(r#"{"default_chain": ["a/b", "c/d"],
///   "hedging": {"default_chain": {"percentile": 90}}}"#).unwrap_err();
/// assert_eq!(err.field(), "hedging.default_chain.percentile");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HedgingSection {
    /// The default chain's hedging (also of a request naming a model outside the chains).
    #[serde(default)]
    pub default_chain: Option<HedgeSettings>,
    /// Named chains' hedging, by chain name.
    #[serde(default)]
    pub chains: BTreeMap<String, HedgeSettings>,
}

/// One chain's hedging: `delay_seconds` (a fixed delay; with `percentile`, the delay
/// until the model has `min_samples`), `percentile` (in (0, 1): 0.9 hedges after the
/// model's recent p90 time to first token), `min_samples` (default 20), `budget_percent`
/// (extra upstream calls at most, default 5), `requests` (`"streams"`, the default,
/// `"streams_without_tools"` or `"all"`). See [`HedgePolicy`](crate::fallback::HedgePolicy).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HedgeSettings {
    /// Seconds without content before the hedge (with `percentile`: until enough samples).
    #[serde(default)]
    pub delay_seconds: Option<f64>,
    /// The percentile of the model's recent times to first token, in (0, 1).
    #[serde(default)]
    pub percentile: Option<f64>,
    /// Samples the percentile needs.
    #[serde(default)]
    pub min_samples: Option<usize>,
    /// Extra upstream calls at most, in percent of the chain's calls (0 to 100].
    #[serde(default)]
    pub budget_percent: Option<f64>,
    /// Which requests are hedged.
    #[serde(default)]
    pub requests: Option<HedgeRequestsConfig>,
}

/// The `requests` of a chain's hedging.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgeRequestsConfig {
    /// [`HedgeRequests::Streams`](crate::fallback::HedgeRequests::Streams).
    Streams,
    /// [`HedgeRequests::StreamsWithoutTools`](crate::fallback::HedgeRequests::StreamsWithoutTools).
    StreamsWithoutTools,
    /// [`HedgeRequests::All`](crate::fallback::HedgeRequests::All).
    All,
}

impl HedgeSettings {
    /// The policy these settings describe; `field` (e.g. `hedging.default_chain`) names
    /// the key in errors. The policy's own checks run when the stack is built.
    ///
    /// # Errors
    ///
    /// Neither `delay_seconds` nor `percentile`, a delay that is not a positive number of
    /// seconds, a `budget_percent` outside (0, 100].
    pub fn to_policy(&self, field: &str) -> Result<crate::fallback::HedgePolicy, ConfigError> {
        use crate::fallback::{HedgePolicy, HedgeRequests};
        let delay = match self.delay_seconds {
            Some(v) => Some(seconds(&format!("{field}.delay_seconds"), v)?),
            None => None,
        };
        let mut policy = match (self.percentile, delay) {
            (Some(p), Some(d)) => HedgePolicy::percentile(p).initial_delay(d),
            (Some(p), None) => HedgePolicy::percentile(p),
            (None, Some(d)) => HedgePolicy::after(d),
            (None, None) => {
                return Err(ConfigError::new(
                    field.to_owned(),
                    format!("{field}: set delay_seconds, percentile, or both"),
                ))
            }
        };
        if let Some(n) = self.min_samples {
            policy = policy.min_samples(n);
        }
        if let Some(pct) = self.budget_percent {
            if !(pct > 0.0 && pct <= 100.0) {
                let at = format!("{field}.budget_percent");
                return Err(ConfigError::new(
                    at.clone(),
                    format!("{at} must be in (0, 100], got {pct}"),
                ));
            }
            policy = policy.budget((pct / 100.0) as f32);
        }
        if let Some(r) = self.requests {
            policy = policy.requests(match r {
                HedgeRequestsConfig::Streams => HedgeRequests::Streams,
                HedgeRequestsConfig::StreamsWithoutTools => HedgeRequests::StreamsWithoutTools,
                HedgeRequestsConfig::All => HedgeRequests::All,
            });
        }
        Ok(policy)
    }
}

/// The `catalog` key: OpenRouter's model catalog, so models that cannot serve a request
/// are skipped (see [`crate::catalog`]).
///
/// ```
/// use tower_openrouter::config::Config;
///
/// let c = Config::from_json(r#"{"default_chain": ["a/b"],
///   "catalog": {"refresh_seconds": 600, "strict": false},
///   "max_price": {"per_request": 0.05, "completion": 15, "header": "x-max-price",
///                 "chains": {"budget": {"per_request": 0.01}}}}"#).unwrap();
/// assert_eq!(c.catalog.unwrap().refresh_seconds, Some(600.0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CatalogSection {
    /// Seconds between background refreshes (default 3600), which
    /// [`OpenRouterLayer::spawn_catalog_refresh`](crate::stack::OpenRouterLayer::spawn_catalog_refresh)
    /// starts through your client.
    #[serde(default)]
    pub refresh_seconds: Option<f64>,
    /// Whether the background refresh runs (default true; false keeps the `snapshot`, for
    /// offline use).
    #[serde(default)]
    pub refresh: Option<bool>,
    /// The absolute URL the refresh fetches (default
    /// [`OPENROUTER_MODELS_URL`](crate::catalog::OPENROUTER_MODELS_URL)): e.g. your
    /// upstream's `/api/v1/models`.
    #[serde(default)]
    pub url: Option<String>,
    /// A model the catalog does not list is not capable (default false).
    #[serde(default)]
    pub strict: Option<bool>,
    /// A `GET /api/v1/models` body saved to a file, loaded at build time.
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// The `max_price` key: ceilings for every chain (`per_request` USD per attempt,
/// `prompt` / `completion` USD per million tokens), per chain (`chains`), and the header a
/// request may lower them with (`header`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MaxPriceSection {
    /// USD: the most one attempt may cost (estimated).
    #[serde(default)]
    pub per_request: Option<f64>,
    /// USD per million prompt tokens.
    #[serde(default)]
    pub prompt: Option<f64>,
    /// USD per million completion tokens.
    #[serde(default)]
    pub completion: Option<f64>,
    /// Ceilings of named chains.
    #[serde(default)]
    pub chains: BTreeMap<String, crate::catalog::MaxPrice>,
    /// The request header carrying a request's own ceiling.
    #[serde(default)]
    pub header: Option<String>,
}

impl MaxPriceSection {
    /// The ceiling for every chain.
    pub fn ceiling(&self) -> crate::catalog::MaxPrice {
        crate::catalog::MaxPrice {
            per_request: self.per_request,
            prompt: self.prompt,
            completion: self.completion,
        }
    }
}

/// The `health` key: `{"shared": {"redis_url", "prefix", "reconcile_ms"}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthSection {
    /// Model health shared across replicas through Redis (needs the `redis` feature).
    #[serde(default)]
    pub shared: Option<SharedHealthConfig>,
}

/// The `health.shared` key: where replicas share model health (see
/// [`RedisHealthStore`](crate::health) with the `redis` feature). Its `Debug` output
/// hides the URL's password.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SharedHealthConfig {
    /// `redis://[user][:password@]host[:port][/db]`, or `rediss://` for TLS.
    pub redis_url: String,
    /// Namespace of the keys (default `tower-openrouter:`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// How often the trips in force are read back, in milliseconds (default 1000).
    #[serde(default)]
    pub reconcile_ms: Option<u64>,
}

impl std::fmt::Debug for SharedHealthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHealthConfig")
            .field("redis_url", &crate::health::redact_url(&self.redis_url))
            .field("prefix", &self.prefix)
            .field("reconcile_ms", &self.reconcile_ms)
            .finish()
    }
}

/// The `native_routing` key: what [`RoutingConfig`](crate::routing::RoutingConfig) injects
/// (OpenRouter's own fallback and provider routing, done server-side).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NativeRoutingConfig {
    /// Server-side `models` list (at most 3).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// `provider` preferences (`order`, `allow_fallbacks`, `sort`, ...).
    #[serde(default)]
    pub provider: Option<crate::routing::ProviderPreferences>,
    /// `route` (`"fallback"`).
    #[serde(default)]
    pub route: Option<String>,
    /// `/api/v1/messages` `fallbacks` (at most 3 model ids).
    #[serde(default)]
    pub fallbacks: Option<Vec<String>>,
    /// Whether fields the caller set are replaced (default: kept).
    #[serde(default)]
    pub replace_caller_fields: Option<bool>,
}

impl NativeRoutingConfig {
    /// The [`RoutingConfig`](crate::routing::RoutingConfig) this describes.
    ///
    /// # Errors
    ///
    /// OpenRouter's limits, as a [`ConfigError`] whose field starts with `native_routing.`.
    pub fn to_routing(&self) -> Result<crate::routing::RoutingConfig, ConfigError> {
        let mut b = crate::routing::RoutingConfig::builder();
        if let Some(m) = &self.models {
            b = b.models(m.iter().cloned());
        }
        if let Some(p) = &self.provider {
            b = b.provider(p.clone());
        }
        if let Some(r) = &self.route {
            b = b.route(r.clone());
        }
        if let Some(f) = &self.fallbacks {
            b = b.fallbacks(f.iter().cloned());
        }
        if let Some(r) = self.replace_caller_fields {
            b = b.replace_caller_fields(r);
        }
        b.build().map_err(|e| {
            ConfigError::new(
                format!("native_routing.{}", e.field()),
                format!("native_routing.{}", e.message()),
            )
        })
    }
}

/// A named list of models (a cost tier or a provider's models).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedModels {
    /// The tier's or provider's name.
    pub name: String,
    /// Its models, in order.
    pub models: Vec<ModelConfig>,
}

/// One model of a chain in the JSON settings: an id (`"openai/gpt-4o"`), or an object
/// `{"id", "timeout_seconds", "max_retries", "label", "priority",
/// "disable_duration_seconds"}` (`timeout` and `disable_duration` are accepted as aliases).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ModelConfig {
    /// The model id.
    pub id: String,
    /// This model's attempt timeout, in seconds.
    pub timeout_seconds: Option<f64>,
    /// This model's maximum retries.
    pub max_retries: Option<u32>,
    /// A label for logs.
    pub label: Option<String>,
    /// Sort key: lower is tried first.
    pub priority: Option<i64>,
    /// How long this model is skipped after it trips, in seconds.
    pub disable_duration_seconds: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFields {
    id: String,
    #[serde(default, alias = "timeout")]
    timeout_seconds: Option<f64>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default, alias = "disable_duration")]
    disable_duration_seconds: Option<f64>,
}

/// Stack settings of the JSON file. Durations are in seconds (fractions allowed) unless
/// the key says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// Total time budget of a call.
    #[serde(default)]
    pub deadline_seconds: Option<f64>,
    /// Default time limit of one attempt.
    #[serde(default)]
    pub attempt_timeout_seconds: Option<f64>,
    /// Time limit to the first token of a stream.
    #[serde(default)]
    pub first_token_timeout_seconds: Option<f64>,
    /// Longest gap between stream chunks once content flows: seconds, or `"off"` (or
    /// `false`) for no limit. Absent: the default, 30 s or the deadline when that is
    /// shorter.
    #[serde(default)]
    pub idle_timeout_seconds: Option<SecondsOrOff>,
    /// Default number of same-model retries.
    #[serde(default)]
    pub max_retries_per_model: Option<u32>,
    /// The longest `Retry-After` worth waiting out once every model failed (see
    /// `OpenRouterLayerBuilder::max_rate_limit_wait`); a longer hint ends the call at once.
    #[serde(default)]
    pub max_rate_limit_wait_seconds: Option<f64>,
    /// How long a failing model is skipped.
    #[serde(default)]
    pub disable_duration_seconds: Option<f64>,
    /// Length of the window for the success rate, in minutes.
    #[serde(default)]
    pub health_window_minutes: Option<f64>,
    /// Skip a model whose success rate over the window is below this (0 to 1).
    #[serde(default)]
    pub skip_threshold: Option<f64>,
    /// Consecutive failures that cool a model down.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// `"priority"` (default) or `"health"`.
    #[serde(default)]
    pub order: Option<OrderConfig>,
    /// Request header that names the chain.
    #[serde(default)]
    pub chain_header: Option<String>,
    /// A `model` outside the chains: `"try_first"` (default), `"reject"` or
    /// `"default_chain"` (see [`UnlistedModel`](crate::fallback::UnlistedModel)).
    #[serde(default)]
    pub unlisted_model: Option<UnlistedModelConfig>,
    /// An allow-list of models (`["openai/*", "x/y"]`): besides the chains' models and
    /// names, only these may be a request's `model` or be in its `models` / `fallbacks`
    /// (see `OpenRouterLayerBuilder::allowed_models`).
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    /// An allow-list of providers for a request's `provider.only` / `provider.order`.
    #[serde(default)]
    pub allowed_providers: Option<Vec<String>>,
    /// Models sent server-side per attempt (hybrid mode), 1 to 3.
    #[serde(default)]
    pub server_side_window: Option<usize>,
    /// Largest request body accepted, in bytes.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Largest non-streamed response body, in bytes (default 16 MiB; a larger one is
    /// `ResponseTooLarge`).
    #[serde(default)]
    pub max_response_body_bytes: Option<usize>,
    /// What a 2xx whose JSON was cut short (`ResponseTruncated`) asks for: `"fatal"`
    /// (default: tokens may be billed), `"fallback"` or `"retry"`.
    #[serde(default)]
    pub truncated_response_action: Option<ActionConfig>,
    /// The adaptive concurrency limit per model (off when absent).
    #[serde(default)]
    pub adaptive: Option<AdaptiveSettings>,
}

/// A limit that can be turned off: a number of seconds (fractions allowed), or `"off"`
/// (or `false`) for none.
///
/// ```
/// use tower_openrouter::config::{Config, SecondsOrOff};
///
/// let c = Config::from_json(r#"{"default_chain": ["a/b"], "settings": {"idle_timeout_seconds": "off"}}"#)
///     .unwrap();
/// assert_eq!(c.settings.idle_timeout_seconds, Some(SecondsOrOff::Off));
/// let c = Config::from_json(r#"{"default_chain": ["a/b"], "settings": {"idle_timeout_seconds": 12.5}}"#)
///     .unwrap();
/// assert_eq!(c.settings.idle_timeout_seconds, Some(SecondsOrOff::Seconds(12.5)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SecondsOrOff {
    /// This many seconds.
    Seconds(f64),
    /// No limit.
    Off,
}

impl<'de> Deserialize<'de> for SecondsOrOff {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SecondsOrOff;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a number of seconds or "off""#)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SecondsOrOff, E> {
                Ok(SecondsOrOff::Seconds(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SecondsOrOff, E> {
                Ok(SecondsOrOff::Seconds(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SecondsOrOff, E> {
                Ok(SecondsOrOff::Seconds(v as f64))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<SecondsOrOff, E> {
                match v {
                    false => Ok(SecondsOrOff::Off),
                    true => Err(E::invalid_value(de::Unexpected::Bool(v), &self)),
                }
            }
            // The rejected text is not repeated (it may be a secret under the wrong key).
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecondsOrOff, E> {
                match v {
                    "off" => Ok(SecondsOrOff::Off),
                    _ => Err(E::invalid_value(de::Unexpected::Other("a string"), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The `adaptive` setting: `{"initial": 8, "min": 1, "max": 64}` (optionally
/// `"backoff": 0.9`, and a queue for the first model's slots:
/// `"queue_waiters": 2, "queue_wait_seconds": 0.01`); see
/// [`health::adaptive`](crate::health::adaptive) and
/// [`AdaptiveConfig::queue`](crate::health::AdaptiveConfig::queue).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdaptiveSettings {
    /// Limit of a model when first seen.
    pub initial: u32,
    /// Lowest limit.
    pub min: u32,
    /// Highest limit.
    pub max: u32,
    /// Factor applied on an overload signal, in (0, 1).
    #[serde(default)]
    pub backoff: Option<f64>,
    /// Requests that may wait for a slot of one model at once (0 or absent: no queue).
    #[serde(default)]
    pub queue_waiters: Option<u32>,
    /// How long such a request waits at most, in seconds.
    #[serde(default)]
    pub queue_wait_seconds: Option<f64>,
}

impl AdaptiveSettings {
    /// The [`AdaptiveConfig`](crate::health::AdaptiveConfig) these settings describe.
    pub fn to_config(&self) -> crate::health::AdaptiveConfig {
        let mut c = crate::health::AdaptiveConfig::new(self.initial, self.min, self.max);
        if let Some(b) = self.backoff {
            c = c.backoff(b);
        }
        // A wait that is no duration (negative, not finite) is refused by `validate`.
        let wait = self
            .queue_wait_seconds
            .map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX));
        c.queue(
            self.queue_waiters.unwrap_or(0),
            wait.unwrap_or(Duration::ZERO),
        )
    }
}

/// The `unlisted_model` setting.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnlistedModelConfig {
    /// The caller's model first, then the default chain's fallbacks.
    TryFirst,
    /// Refused with `ModelNotAllowed`, no upstream call.
    Reject,
    /// The default chain replaces it.
    DefaultChain,
}

impl From<UnlistedModelConfig> for crate::fallback::UnlistedModel {
    fn from(u: UnlistedModelConfig) -> Self {
        match u {
            UnlistedModelConfig::TryFirst => Self::TryFirst,
            UnlistedModelConfig::Reject => Self::Reject,
            UnlistedModelConfig::DefaultChain => Self::UseDefaultChain,
        }
    }
}

/// An [`Action`](crate::Action) in the settings file: `"retry"`, `"fallback"` or
/// `"fatal"`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionConfig {
    /// [`Action::Retry`](crate::Action::Retry).
    Retry,
    /// [`Action::Fallback`](crate::Action::Fallback).
    Fallback,
    /// [`Action::Fatal`](crate::Action::Fatal).
    Fatal,
}

impl From<ActionConfig> for crate::Action {
    fn from(a: ActionConfig) -> Self {
        match a {
            ActionConfig::Retry => Self::Retry,
            ActionConfig::Fallback => Self::Fallback,
            ActionConfig::Fatal => Self::Fatal,
        }
    }
}

/// The `order` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderConfig {
    /// [`Order::Priority`].
    Priority,
    /// [`Order::Health`].
    Health,
}

impl From<OrderConfig> for Order {
    fn from(o: OrderConfig) -> Self {
        match o {
            OrderConfig::Priority => Order::Priority,
            OrderConfig::Health => Order::Health,
        }
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a model id or an object with \"id\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ModelConfig::new(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let f = ModelFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ModelConfig {
                    id: f.id,
                    timeout_seconds: f.timeout_seconds,
                    max_retries: f.max_retries,
                    label: f.label,
                    priority: f.priority,
                    disable_duration_seconds: f.disable_duration_seconds,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl ModelConfig {
    /// A model with no limits of its own.
    pub fn new(id: impl Into<String>) -> Self {
        ModelConfig {
            id: id.into(),
            timeout_seconds: None,
            max_retries: None,
            label: None,
            priority: None,
            disable_duration_seconds: None,
        }
    }

    fn to_chain_model(&self, field: &str) -> Result<ChainModel, ConfigError> {
        let mut m = ChainModel::new(Arc::<str>::from(self.id.as_str()));
        if let Some(t) = self.timeout_seconds {
            m = m.timeout(seconds(&format!("{field}.timeout_seconds"), t)?);
        }
        if let Some(r) = self.max_retries {
            m = m.max_retries(r);
        }
        if let Some(l) = &self.label {
            m = m.label(l.as_str());
        }
        if let Some(p) = self.priority {
            m = m.priority(p);
        }
        if let Some(d) = self.disable_duration_seconds {
            m = m.disable_duration(seconds(&format!("{field}.disable_duration_seconds"), d)?);
        }
        Ok(m)
    }
}

/// A duration of `value` seconds: positive and finite, else an error naming `field`.
pub(crate) fn seconds(field: &str, value: f64) -> Result<Duration, ConfigError> {
    match Duration::try_from_secs_f64(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError::new(
            field.to_owned(),
            format!("{field} must be a positive number of seconds, got {value}"),
        )),
    }
}

/// serde's message without the value it rejected: a string written under the wrong key
/// may be a secret (an API key, a URL with a password), and errors name keys, never
/// values. `invalid type: string "…", expected u32` becomes `invalid type: a string,
/// expected u32`; `unknown variant `…`, expected …` becomes `unknown variant, expected …`.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let string = rest.find("string \"");
        let variant = rest.find("variant `");
        let (at, skip, close) = match (string, variant) {
            (Some(s), v) if v.is_none_or(|v| s < v) => (s, "string \"".len(), '"'),
            (_, Some(v)) => (v, "variant `".len(), '`'),
            _ => break,
        };
        out.push_str(&rest[..at]);
        out.push_str(if close == '"' { "a string" } else { "variant" });
        let value = &rest[at + skip..];
        let mut escaped = false;
        let end = value.char_indices().find(|&(_, c)| {
            let end = c == close && !escaped;
            escaped = c == '\\' && !escaped;
            end
        });
        rest = match end {
            Some((i, _)) => &value[i + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// `Ok` for a positive number of minutes, as a duration.
pub(crate) fn minutes(field: &str, value: f64) -> Result<Duration, ConfigError> {
    match Duration::try_from_secs_f64(value * 60.0) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError::new(
            field.to_owned(),
            format!("{field} must be a positive number of minutes, got {value}"),
        )),
    }
}

/// The settings file's key of each builder setting that is spelled differently there
/// (the builder's and the layers' errors name their own settings).
const JSON_KEYS: &[(&str, &str)] = &[
    ("deadline", "settings.deadline_seconds"),
    ("attempt_timeout", "settings.attempt_timeout_seconds"),
    (
        "first_token_timeout",
        "settings.first_token_timeout_seconds",
    ),
    ("idle_timeout", "settings.idle_timeout_seconds"),
    ("max_retries", "settings.max_retries_per_model"),
    (
        "max_rate_limit_wait",
        "settings.max_rate_limit_wait_seconds",
    ),
    ("server_side_window", "settings.server_side_window"),
    ("chain_header", "settings.chain_header"),
    ("max_body_bytes", "settings.max_body_bytes"),
    (
        "max_response_body_bytes",
        "settings.max_response_body_bytes",
    ),
    ("disable_duration", "settings.disable_duration_seconds"),
    ("window", "settings.health_window_minutes"),
    ("skip_below_success_rate", "settings.skip_threshold"),
    ("consecutive_failures", "settings.consecutive_failures"),
    (
        "adaptive.queue_wait",
        "settings.adaptive.queue_wait_seconds",
    ),
    ("adaptive", "settings.adaptive"),
    ("max_price_header", "max_price.header"),
    ("hedge", "hedging.default_chain"),
    ("chain_hedge", "hedging.chains"),
];

/// A builder's error with the settings file's key as its field, and in its message where
/// that names the field.
fn json_error(e: ConfigError) -> ConfigError {
    let field = json_key(e.field());
    if field == e.field() {
        return e;
    }
    let message = e.message().replacen(e.field(), &field, 1);
    if message.contains(&field) {
        ConfigError::new(field, message)
    } else {
        ConfigError::new(field.clone(), format!("{field}: {message}"))
    }
}

/// The settings file's key of a builder setting: [`JSON_KEYS`] (also for the parts of one,
/// `adaptive.min`), and a model's `timeout` and `disable_duration` are `_seconds` keys.
fn json_key(field: &str) -> String {
    for (from, to) in JSON_KEYS {
        if let Some(rest) = field.strip_prefix(from) {
            if rest.is_empty() || rest.starts_with('.') {
                return format!("{to}{rest}");
            }
        }
    }
    if field.ends_with("].timeout") || field.ends_with("].disable_duration") {
        return format!("{field}_seconds");
    }
    field.to_owned()
}

fn chain(field: &str, models: &[ModelConfig]) -> Result<Chain, ConfigError> {
    let models = models
        .iter()
        .enumerate()
        .map(|(i, m)| m.to_chain_model(&format!("{field}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let chain = Chain::new(models);
    chain.validate(field)?;
    Ok(chain)
}

impl Config {
    /// Parses and checks a JSON document (see the [type docs](Config)).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] whose [`field`](ConfigError::field) is the path of the bad key
    /// (`settings.skip_threshold`, `chains.coding[1].timeout_seconds`) and whose message
    /// says what is wrong with it.
    pub fn from_json(json: &str) -> Result<Config, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| ConfigError::new("", format!("the config is not valid JSON: {e}")))?;
        Config::from_value(value)
    }

    /// Like [`Config::from_json`], from an already parsed JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Config, ConfigError> {
        let (prefix, value) = match value {
            serde_json::Value::Object(mut map)
                if map.len() == 1 && map.contains_key("fallback") =>
            {
                ("fallback.", map.remove("fallback").unwrap_or_default())
            }
            other => ("", other),
        };
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                prefix.trim_end_matches('.').to_owned()
            } else {
                format!("{prefix}{path}")
            };
            let inner = without_values(&e.into_inner().to_string());
            ConfigError::new(field.clone(), format!("{field}: {inner}"))
        })?;
        config.validate().map_err(|e| {
            if prefix.is_empty() {
                e
            } else {
                let field = format!("{prefix}{}", e.field());
                let message = match e.message().strip_prefix(e.field()) {
                    Some(rest) => format!("{field}{rest}"),
                    None if !e.field().is_empty() && e.message().contains(e.field()) => {
                        e.message().replacen(e.field(), &field, 1)
                    }
                    None => format!("{prefix}{}", e.message()),
                };
                ConfigError::new(field, message)
            }
        })?;
        Ok(config)
    }

    /// Reads and parses a settings file: YAML when its name ends in `.yaml` or `.yml`
    /// (feature `yaml`; without it such a file is an error that says so), JSON otherwise.
    ///
    /// # Errors
    ///
    /// As [`Config::from_json`] (or `from_yaml`); an unreadable file is an error with an
    /// empty field.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if !yaml {
            return Config::from_json(&text);
        }
        #[cfg(feature = "yaml")]
        return Config::from_yaml(&text);
        #[cfg(not(feature = "yaml"))]
        Err(ConfigError::new(
            "",
            format!(
                "{} is YAML: enable tower-openrouter's `yaml` feature, or write it as JSON",
                path.display()
            ),
        ))
    }

    /// Checks every setting; the error names the key.
    ///
    /// The checks are the stack's own ([`OpenRouterLayerBuilder::validate`], which runs
    /// each layer's validation): this converts the keys to builder settings and names the
    /// key in the error (`settings.attempt_timeout_seconds` for the builder's
    /// `attempt_timeout`). A model's limits are checked on its own list, so the error
    /// names that list (`cost_tiers[0].models[1].timeout_seconds`).
    ///
    /// [`OpenRouterLayerBuilder::validate`]: crate::stack::OpenRouterLayerBuilder::validate
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.chains()?;
        let builder = build::builder(self, build::Snapshot::Skip)?;
        let deadline = match self.settings.deadline_seconds {
            Some(v) => seconds("settings.deadline_seconds", v)?,
            None => crate::timeout::DEFAULT_DEADLINE,
        };
        let lists = self
            .model_lists()
            .into_iter()
            .map(|(field, models)| {
                let models = models
                    .iter()
                    .enumerate()
                    .map(|(i, m)| m.to_chain_model(&format!("{field}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((field, Chain::in_order(models)))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let named = lists.iter().map(|(field, chain)| (field.clone(), chain));
        crate::stack::check_chain_models(named, deadline).map_err(json_error)?;
        builder.validate().map_err(json_error)
    }

    /// Every model list with its path.
    fn model_lists(&self) -> Vec<(String, &[ModelConfig])> {
        let mut out: Vec<(String, &[ModelConfig])> = Vec::new();
        if let Some(d) = &self.default_chain {
            out.push(("default_chain".into(), d));
        }
        for (group, map) in [
            ("chains", &self.chains),
            ("task_chains", &self.task_chains),
            ("capability_chains", &self.capability_chains),
        ] {
            for (name, models) in map {
                out.push((format!("{group}.{name}"), models));
            }
        }
        for (group, lists) in [
            ("cost_tiers", &self.cost_tiers),
            ("providers", &self.providers),
        ] {
            for (i, n) in lists.iter().enumerate() {
                out.push((format!("{group}[{i}].models"), &n.models));
            }
        }
        out
    }

    /// The chains this config describes (named chains from `chains`, `task_chains` and
    /// `capability_chains`, `tier:<name>` from `cost_tiers`, `provider:<name>` from
    /// `providers`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the chain (an empty chain, a model twice, a name used by
    /// two groups, no chain at all).
    pub fn chains(&self) -> Result<Chains, ConfigError> {
        let mut chains = Chains::empty();
        if let Some(d) = &self.default_chain {
            chains = chains.with_default(chain("default_chain", d)?);
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (group, map) in [
            ("chains", &self.chains),
            ("task_chains", &self.task_chains),
            ("capability_chains", &self.capability_chains),
        ] {
            for (name, models) in map {
                let field = format!("{group}.{name}");
                if name.trim().is_empty() {
                    return Err(ConfigError::new(
                        group,
                        format!("{group}: a chain has an empty name"),
                    ));
                }
                if let Some(other) = seen.insert(name, group) {
                    return Err(ConfigError::new(
                        field.clone(),
                        format!("{field}: the name {name:?} is also used in {other}"),
                    ));
                }
                chains = chains.with_chain(name.as_str(), chain(&field, models)?);
            }
        }
        chains = chains.with_cost_tiers(named("cost_tiers", &self.cost_tiers)?);
        chains = chains.with_providers(named("providers", &self.providers)?);
        chains.validate()?;
        Ok(chains)
    }
}

fn named(group: &str, lists: &[NamedModels]) -> Result<Vec<(Arc<str>, Chain)>, ConfigError> {
    let mut out: Vec<(Arc<str>, Chain)> = Vec::with_capacity(lists.len());
    for (i, n) in lists.iter().enumerate() {
        let field = format!("{group}[{i}]");
        if n.name.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("{field}.name is empty"),
            ));
        }
        if out.iter().any(|(o, _)| **o == *n.name) {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("{field}.name: {:?} appears twice", n.name),
            ));
        }
        out.push((
            n.name.as_str().into(),
            chain(&format!("{field}.models"), &n.models)?,
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The same settings file in YAML (feature `yaml`).
// ---------------------------------------------------------------------------------------

#[cfg(feature = "yaml")]
impl Config {
    /// Parses and checks a YAML document: the same keys, shapes and checks as
    /// [`Config::from_json`] (the seeds' `fallback-config.yaml`, wrapped in `fallback:`,
    /// loads as it is). Feature `yaml`.
    ///
    /// Anchors and aliases are resolved; mapping keys must be scalars (a number or boolean
    /// key is read as its text); the document must be exactly one. Merge keys (`<<`) are
    /// not part of YAML 1.2 and are rejected like any unknown key.
    ///
    /// ```
    /// use tower_openrouter::config::Config;
    ///
    /// let config = Config::from_yaml("
    /// fallback:
    ///   default_chain:
    ///     - anthropic/claude-3.5-sonnet
    ///     - openai/gpt-4-turbo
    ///   task_chains:
    ///     coding: [anthropic/claude-3.5-sonnet, deepseek/deepseek-coder]
    ///   settings:
    ///     max_retries_per_model: 2
    ///     disable_duration_seconds: 300
    ///     skip_threshold: 0.3
    /// ").unwrap();
    /// assert_eq!(config.chains().unwrap().get("coding").unwrap().len(), 2);
    ///
    /// let err = Config::from_yaml("default_chain: [a/b]\nsettings: {skip_threshold: 1.5}").unwrap_err();
    /// assert_eq!(err.field(), "settings.skip_threshold");
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`]: for YAML syntax, an empty field and the line and column; for
    /// everything else exactly what [`Config::from_json`] says, with the key's path.
    pub fn from_yaml(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_value(yaml::to_json(yaml)?)
    }
}

#[cfg(feature = "yaml")]
mod yaml {
    //! A YAML document as the JSON value [`Config::from_value`](super::Config::from_value)
    //! reads, so YAML and JSON share one set of checks and error paths.

    use serde_json::{Map, Number, Value};
    use yaml_rust2::{Yaml, YamlLoader};

    use super::ConfigError;

    pub(super) fn to_json(text: &str) -> Result<Value, ConfigError> {
        let mut docs = YamlLoader::load_from_str(text)
            .map_err(|e| ConfigError::new("", format!("the config is not valid YAML: {e}")))?;
        match docs.len() {
            1 => convert(docs.remove(0), ""),
            0 => Err(ConfigError::new("", "the YAML config is empty")),
            n => Err(ConfigError::new(
                "",
                format!("the YAML config holds {n} documents; it must be one"),
            )),
        }
    }

    fn convert(node: Yaml, path: &str) -> Result<Value, ConfigError> {
        Ok(match node {
            Yaml::Null => Value::Null,
            Yaml::Boolean(b) => Value::Bool(b),
            Yaml::Integer(i) => Value::Number(i.into()),
            Yaml::String(s) => Value::String(s),
            Yaml::Real(text) => {
                let n = Yaml::Real(text).as_f64().and_then(Number::from_f64);
                Value::Number(n.ok_or_else(|| bad(path, "is not a finite number"))?)
            }
            Yaml::Array(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| convert(v, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Yaml::Hash(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    let key = key(k, path)?;
                    let at = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    let v = convert(v, &at)?;
                    if map.insert(key, v).is_some() {
                        return Err(bad(&at, "appears twice"));
                    }
                }
                Value::Object(map)
            }
            // An alias to an anchor the document never defined.
            Yaml::Alias(_) | Yaml::BadValue => return Err(bad(path, "is not a valid YAML value")),
        })
    }

    fn key(k: Yaml, path: &str) -> Result<String, ConfigError> {
        match k {
            Yaml::String(s) | Yaml::Real(s) => Ok(s),
            Yaml::Integer(i) => Ok(i.to_string()),
            Yaml::Boolean(b) => Ok(b.to_string()),
            _ => Err(bad(path, "has a key that is not a plain name")),
        }
    }

    fn bad(path: &str, what: &str) -> ConfigError {
        let field = if path.is_empty() {
            "(the document)"
        } else {
            path
        };
        ConfigError::new(path.to_owned(), format!("{field} {what}"))
    }
}
