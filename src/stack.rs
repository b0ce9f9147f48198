//! [`OpenRouterLayer`]: the whole resilience stack, assembled in the right order with
//! validated settings.
//!
//! Outer to inner: body buffering ([`BufferRequestLayer`]) -> deadline
//! ([`DeadlineLayer`]) -> native routing ([`NativeRoutingLayer`]) -> fallback
//! ([`FallbackLayer`]) -> retry ([`RetryLayer`]) -> health
//! ([`HealthLayer`]) -> attempt timeout ([`AttemptTimeoutLayer`]) -> classify
//! ([`ClassifyLayer`]) -> your client. The service accepts any `Request<B: Body>`, returns
//! `Response<classify::ResponseBody<_>>` with a [`ServedBy`](crate::fallback::ServedBy)
//! extension, and fails with [`crate::Error`].
//!
//! # Settings of [`OpenRouterLayerBuilder`]
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | [`chain`](OpenRouterLayerBuilder::chain) | required (or named chains) | the default model chain |
//! | [`named_chain`](OpenRouterLayerBuilder::named_chain) | none | a chain a request can pick by name (task, capability) |
//! | [`cost_tiers`](OpenRouterLayerBuilder::cost_tiers) | none | tiers cheapest first; `ChainName::tier("standard")` |
//! | [`providers`](OpenRouterLayerBuilder::providers) | none | providers' models; `ChainName::primary_provider("openai")` |
//! | [`chain_header`](OpenRouterLayerBuilder::chain_header) | none | request header naming the chain (for proxies) |
//! | [`unlisted_model`](OpenRouterLayerBuilder::unlisted_model) | try first | a `model` that is neither a chain's name nor a chain's first model: tried first then the default chain's fallbacks, refused, or replaced by the default chain |
//! | [`allowed_models`](OpenRouterLayerBuilder::allowed_models), [`allowed_providers`](OpenRouterLayerBuilder::allowed_providers) | any | an allow-list for a stack that lends its key: a request naming another model (`model`, `models`, `fallbacks`) or provider (`provider.only`, `provider.order`) is refused, no upstream call |
//! | [`endpoint_chain`](OpenRouterLayerBuilder::endpoint_chain) | none | a named chain for an endpoint: `embeddings` then falls back between models too |
//! | [`order`](OpenRouterLayerBuilder::order) | `Priority` | chain order, or by success rate |
//! | [`server_side_window`](OpenRouterLayerBuilder::server_side_window) | 1 | hybrid mode: models sent server-side per attempt (1 to 3) |
//! | [`native_routing`](OpenRouterLayerBuilder::native_routing) | nothing injected | OpenRouter's own `models` / `provider` / `route` / `fallbacks` (see [`crate::routing`]); the caller's are checked either way |
//! | [`deadline`](OpenRouterLayerBuilder::deadline) | 300 s | total budget of a call |
//! | [`attempt_timeout`](OpenRouterLayerBuilder::attempt_timeout) | 120 s, or the deadline when that is shorter | limit of one attempt (per model: [`ChainModel::timeout`](crate::fallback::ChainModel::timeout)) |
//! | [`first_token_timeout`](OpenRouterLayerBuilder::first_token_timeout) | off | a stream's wait for its first content (the attempt timeout holds meanwhile) |
//! | [`idle_timeout`](OpenRouterLayerBuilder::idle_timeout) | 30 s, or the deadline when that is shorter; `None` turns it off | longest gap between a stream's chunks once content flows (keep-alive comments count) |
//! | [`max_retries`](OpenRouterLayerBuilder::max_retries) | 2 | same-model retries (per model: [`ChainModel::max_retries`](crate::fallback::ChainModel::max_retries)) |
//! | [`retry_policy`](OpenRouterLayerBuilder::retry_policy) | [`RetryPolicy::default`] | backoff, Retry-After, budget |
//! | [`health_config`](OpenRouterLayerBuilder::health_config) / [`health_tracker`](OpenRouterLayerBuilder::health_tracker) | [`HealthConfig::default`] | cooldowns and skipping; share a tracker between stacks (per-model [`ChainModel::disable_duration`](crate::fallback::ChainModel::disable_duration) goes into it) |
//! | [`adaptive_concurrency`](OpenRouterLayerBuilder::adaptive_concurrency) | off | a per-model concurrency limit learned from 429s (see [`health::adaptive`](crate::health::adaptive)) |
//! | [`hedge`](OpenRouterLayerBuilder::hedge), [`chain_hedge`](OpenRouterLayerBuilder::chain_hedge) | off | hedging on the first content token, per chain (see [`fallback::hedge`](crate::fallback::hedge)) |
//! | [`classifier`](OpenRouterLayerBuilder::classifier) | [`OpenRouterClassifier`] | error rules |
//! | [`max_body_bytes`](OpenRouterLayerBuilder::max_body_bytes) | 16 MiB | request body limit |
//! | [`max_response_body_bytes`](OpenRouterLayerBuilder::max_response_body_bytes) | 16 MiB | non-streamed response body limit: past it `ResponseTooLarge`, read no further |
//! | [`truncated_response_action`](OpenRouterLayerBuilder::truncated_response_action) | `Fatal` (the classifier's) | a 2xx whose JSON was cut short (`ResponseTruncated`): tokens may be billed, so not asked again unless you say so |
//! | [`wait_for_rate_limit`](OpenRouterLayerBuilder::wait_for_rate_limit) | on | wait out a Retry-After when every model failed and time allows |
//! | [`max_rate_limit_wait`](OpenRouterLayerBuilder::max_rate_limit_wait) | 60 s (at most the policy's `retry_after_cap`) | the longest such wait; a longer hint ends the call at once with it as `retry_after` |
//!
//! [`build`](OpenRouterLayerBuilder::build) checks everything (attempt timeout and backoff
//! cap within the deadline, chains well formed, ...) and returns a
//! [`ConfigError`] naming the setting; [`validate`](OpenRouterLayerBuilder::validate)
//! runs the same checks alone. Each layer's settings are checked by that layer's own
//! `validate` (called by its `build` or constructor, or here), so a rule is written once.
//! Only settings you wrote can conflict: a default gives way (an attempt timeout or idle
//! limit you did not set follows a shorter deadline; the default retries' backoff is not
//! held against the deadline). [`OpenRouterLayer::from_json`] builds the same from
//! a JSON [`Config`](crate::config::Config).
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_openrouter::fallback::ServedBy;
//! use tower_openrouter::stack::OpenRouterLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Your HTTP client; here one that answers every request from the model it was asked.
//! let client = service_fn(|req: http::Request<Full<Bytes>>| async move {
//!     let body = req.into_body().collect().await?.to_bytes();
//!     let asked: serde_json::Value = serde_json::from_slice(&body)?;
//!     let answer = format!(r#"{{"model":{},"choices":[]}}"#, asked["model"]);
//!     let resp = http::Response::builder()
//!         .header("content-type", "application/json")
//!         .body(Full::new(Bytes::from(answer)))?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(resp)
//! });
//! let layer = OpenRouterLayer::builder()
//!     .chain(["anthropic/claude-sonnet-4.5", "openai/gpt-4o"])
//!     .attempt_timeout(Duration::from_secs(60))
//!     .deadline(Duration::from_secs(180))
//!     .build()?;
//! let health = layer.health().clone(); // snapshot it, share it
//! let svc = ServiceBuilder::new().layer(layer).service(client);
//!
//! let req = http::Request::post("http://localhost/api/v1/chat/completions")
//!     .body(String::from(r#"{"model":"anthropic/claude-sonnet-4.5","messages":[]}"#))?;
//! let resp = svc.oneshot(req).await?;
//! let served = resp.extensions().get::<ServedBy>().unwrap();
//! assert_eq!(&*served.model, "anthropic/claude-sonnet-4.5");
//! assert!(!served.fell_back);
//! assert!(health.is_available("anthropic/claude-sonnet-4.5"));
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;
use http_body_util::Full;
use tower::{Layer, Service};

use crate::body::{BufferRequest, BufferRequestLayer, DEFAULT_BODY_LIMIT};
use crate::catalog::{CatalogPolicy, MaxPrice, ModelCatalog, RefreshHandle};
use crate::classify::{Classify, ClassifyLayer, ClassifyOutcome, OpenRouterClassifier};
use crate::error::{Action, BoxError, ConfigError};
use crate::fallback::{
    Chain, ChainModel, Chains, Fallback, FallbackLayer, HedgePolicy, Order, UnlistedModel,
};
use crate::health::{AdaptiveConfig, Health, HealthConfig, HealthLayer, HealthTracker};
use crate::retry::{Retry, RetryLayer, RetryPolicy};
use crate::routing::{NativeRouting, NativeRoutingLayer, RoutingConfig};
use crate::timeout::{
    AttemptTimeout, AttemptTimeoutBuilder, AttemptTimeoutLayer, Deadline, DeadlineLayer,
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_DEADLINE, DEFAULT_IDLE_TIMEOUT,
};

/// The service [`OpenRouterLayer`] builds around a client `S` with classifier `C`.
pub type OpenRouter<S, C = OpenRouterClassifier> =
    BufferRequest<Deadline<NativeRouting<Fallback<Retry<Health<AttemptTimeout<Classify<S, C>>>>>>>>;

/// The standard stack as one layer. See the [module docs](self).
///
/// # The client it wraps
///
/// `S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone`,
/// `S::Error: Into<BoxError>`, `B: http_body::Body<Data = Bytes> + Unpin`: the
/// [`client`](crate::client) module says why and how to meet them (`Buffer` for a
/// non-`Clone` client, `boxed_unsync` for a non-`Unpin` body);
/// [`assert_client`](crate::assert_client) names a missing bound at compile time.
#[derive(Clone)]
pub struct OpenRouterLayer<C = OpenRouterClassifier> {
    body: BufferRequestLayer,
    deadline: DeadlineLayer,
    routing: NativeRoutingLayer,
    fallback: FallbackLayer,
    retry: RetryLayer,
    health: HealthLayer,
    attempt_timeout: AttemptTimeoutLayer,
    classify: ClassifyLayer<C>,
}

impl OpenRouterLayer {
    /// A builder with the defaults of the [module docs](self).
    pub fn builder() -> OpenRouterLayerBuilder {
        OpenRouterLayerBuilder::new()
    }
}

impl<C> OpenRouterLayer<C> {
    /// The health tracker of the stack: snapshot it, or share it with other stacks
    /// ([`OpenRouterLayerBuilder::health_tracker`]).
    pub fn health(&self) -> &HealthTracker {
        self.health.tracker()
    }

    /// The chains of the stack.
    pub fn chains(&self) -> &Chains {
        self.fallback.chains()
    }

    /// The total budget of a call.
    pub fn deadline(&self) -> Duration {
        self.deadline.budget()
    }

    /// The default limit of one attempt.
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout.limit()
    }

    /// The longest gap between a stream's chunks (`None`: turned off).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.attempt_timeout.stream_limits().idle
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        self.retry.policy()
    }

    /// The model catalog, when one is set: refresh it with
    /// [`spawn_catalog_refresh`](Self::spawn_catalog_refresh) (or
    /// [`ModelCatalog::spawn_refresh`]) through your client.
    pub fn catalog(&self) -> Option<&ModelCatalog> {
        self.fallback.catalog_policy().map(CatalogPolicy::catalog)
    }

    /// Starts the catalog's background refresh through `client`, the client service this
    /// stack wraps (its auth and transport): `GET` the catalog's
    /// [`source`](ModelCatalog::source) (settings file: `catalog.url`; default
    /// OpenRouter's `/api/v1/models`) at once, then every
    /// [`refresh_interval`](ModelCatalog::refresh_interval) (`catalog.refresh_seconds`;
    /// default one hour), as [`ModelCatalog::spawn_refresh`]: in a Tokio task, so a
    /// request never waits for it, and a failed or malformed refresh keeps the last good
    /// catalog (and logs a `WARN`). The task ends when the stack's catalog is dropped or
    /// the handle is [aborted](RefreshHandle::abort).
    ///
    /// `None`, with nothing started, when the stack has no catalog, its background refresh
    /// is off ([`ModelCatalog::background_refresh`], `catalog.refresh: false`), or no Tokio
    /// runtime is running here (a `WARN` says so).
    ///
    /// ```
    /// use tower_openrouter::mock::MockOpenRouter;
    /// use tower_openrouter::stack::OpenRouterLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let layer = OpenRouterLayer::from_json(r#"{"default_chain": ["openai/gpt-4o"],
    ///   "catalog": {"refresh_seconds": 600, "url": "http://localhost/api/v1/models"}}"#).unwrap();
    /// let client = MockOpenRouter::new(); // your client
    /// let refresh = layer.spawn_catalog_refresh(client.clone()).unwrap();
    /// # refresh.abort();
    /// # }
    /// ```
    pub fn spawn_catalog_refresh<S, B>(&self, client: S) -> Option<RefreshHandle>
    where
        S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let catalog = self.catalog()?;
        if !catalog.refreshes_in_background() {
            return None;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!(
                "no Tokio runtime here: the catalog's background refresh was not started"
            );
            return None;
        }
        Some(catalog.spawn_refresh(client, catalog.source_uri(), None))
    }
}

impl<C> std::fmt::Debug for OpenRouterLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenRouterLayer")
            .field("body", &self.body)
            .field("deadline", &self.deadline)
            .field("routing", &self.routing)
            .field("fallback", &self.fallback)
            .field("retry", &self.retry)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

impl<S, C> Layer<S> for OpenRouterLayer<C> {
    type Service = OpenRouter<S, C>;

    fn layer(&self, client: S) -> Self::Service {
        let svc = self.classify.layer(client);
        let svc = self.attempt_timeout.layer(svc);
        let svc = self.health.layer(svc);
        let svc = self.retry.layer(svc);
        let svc = self.fallback.layer(svc);
        let svc = self.routing.layer(svc);
        let svc = self.deadline.layer(svc);
        self.body.layer(svc)
    }
}

/// Builds an [`OpenRouterLayer`]; see the [module docs](self) for every setting.
#[must_use]
pub struct OpenRouterLayerBuilder<C = OpenRouterClassifier> {
    chains: Chains,
    header: Option<String>,
    order: Order,
    window: usize,
    routing: RoutingConfig,
    wait_for_rate_limit: bool,
    max_rate_limit_wait: Duration,
    unlisted: UnlistedModel,
    deadline: Duration,
    /// `None`: the default, or the deadline when that is shorter.
    attempt_timeout: Option<Duration>,
    first_token: Option<Duration>,
    /// `None`: the default (at most the deadline); `Some(None)`: turned off.
    idle: Option<Option<Duration>>,
    max_retries: Option<u32>,
    /// `None`: the default policy, never held against the deadline.
    retry: Option<RetryPolicy>,
    health: HealthSource,
    shared_health: SharedHealth,
    adaptive: Option<AdaptiveConfig>,
    classifier: Arc<C>,
    max_body_bytes: usize,
    max_response_body_bytes: usize,
    truncated_action: Option<Action>,
    catalog: CatalogSettings,
    allow: AllowSettings,
    /// Hedge policies by chain (`None`: the default chain).
    hedges: Vec<(Option<String>, HedgePolicy)>,
}

/// The allow-list and endpoint chains of the builder, applied to the fallback layer at
/// build time.
#[derive(Default, Clone)]
struct AllowSettings {
    models: Option<Vec<String>>,
    providers: Option<Vec<String>>,
    endpoints: Vec<(String, String)>,
}

/// The catalog settings of the builder, applied to the fallback layer at build time.
#[derive(Default)]
struct CatalogSettings {
    policy: Option<CatalogPolicy>,
    max_price: Option<MaxPrice>,
    chain_max_price: Vec<(String, MaxPrice)>,
    header: Option<String>,
}

impl CatalogSettings {
    /// The policy for the fallback layer, or why the settings cannot hold.
    fn policy(&self) -> Result<Option<CatalogPolicy>, ConfigError> {
        let priced =
            self.max_price.is_some() || !self.chain_max_price.is_empty() || self.header.is_some();
        let Some(mut policy) = self.policy.clone() else {
            if priced {
                return Err(ConfigError::new(
                    "max_price",
                    "max_price needs the model catalog (its prices): set catalog",
                ));
            }
            return Ok(None);
        };
        if let Some(p) = self.max_price {
            policy = policy.max_price(p);
        }
        for (chain, p) in &self.chain_max_price {
            policy = policy.chain_max_price(chain, *p);
        }
        if let Some(h) = &self.header {
            policy = policy.max_price_header(header_name("max_price_header", h)?);
        }
        Ok(Some(policy))
    }
}

enum HealthSource {
    Config(HealthConfig),
    Tracker(HealthTracker),
}

/// Where the stack's tracker shares health with other replicas (none by default).
#[derive(Default)]
enum SharedHealth {
    #[default]
    Local,
    Store(Arc<dyn crate::health::HealthStore>),
    #[cfg(feature = "redis")]
    Redis(crate::health::RedisStoreConfig),
}

impl Default for OpenRouterLayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenRouterLayerBuilder {
    /// A builder with the defaults of the [module docs](self) and no chain yet.
    pub fn new() -> Self {
        OpenRouterLayerBuilder {
            chains: Chains::empty(),
            header: None,
            order: Order::Priority,
            window: 1,
            routing: RoutingConfig::default(),
            wait_for_rate_limit: true,
            max_rate_limit_wait: crate::fallback::DEFAULT_MAX_RATE_LIMIT_WAIT,
            unlisted: UnlistedModel::TryFirst,
            deadline: DEFAULT_DEADLINE,
            attempt_timeout: None,
            first_token: None,
            idle: None,
            max_retries: None,
            retry: None,
            health: HealthSource::Config(HealthConfig::default()),
            shared_health: SharedHealth::Local,
            adaptive: None,
            classifier: Arc::new(OpenRouterClassifier::default()),
            max_body_bytes: DEFAULT_BODY_LIMIT,
            max_response_body_bytes: DEFAULT_BODY_LIMIT,
            truncated_action: None,
            catalog: CatalogSettings::default(),
            allow: AllowSettings::default(),
            hedges: Vec::new(),
        }
    }
}

// By hand: the classifier `C` need not be `Debug`, and the settings worth showing are these.
impl<C> std::fmt::Debug for OpenRouterLayerBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenRouterLayerBuilder")
            .field("chains", &self.chains)
            .field("order", &self.order)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl<C> OpenRouterLayerBuilder<C> {
    /// What a request whose `model` is neither a chain's name nor a chain's first model
    /// gets (default [`UnlistedModel::TryFirst`]; see [`FallbackLayer::unlisted_model`]).
    pub fn unlisted_model(mut self, unlisted: UnlistedModel) -> Self {
        self.unlisted = unlisted;
        self
    }

    /// An allow-list of models for a stack that lends its key: besides the chains' models
    /// and names, only these (an entry ending in `*` is a prefix, `"openai/*"`) may be a
    /// request's `model` or appear in its `models` or `/messages` `fallbacks`; anything
    /// else is `ModelNotAllowed`, no upstream call. See
    /// [`FallbackLayer::allowed_models`]; the native routing config's models are allowed
    /// too.
    pub fn allowed_models<I>(mut self, models: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.allow.models = Some(models.into_iter().map(|m| m.as_ref().to_owned()).collect());
        self
    }

    /// An allow-list of providers: only these may appear in a request's `provider.only`
    /// or `provider.order` (see [`FallbackLayer::allowed_providers`]); the native routing
    /// config's are allowed too.
    pub fn allowed_providers<I>(mut self, providers: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.allow.providers = Some(
            providers
                .into_iter()
                .map(|p| p.as_ref().to_owned())
                .collect(),
        );
        self
    }

    /// The named chain that `POST` requests to `endpoint` (`"embeddings"`) walk: model
    /// fallback for an endpoint that otherwise passes through on the caller's model alone
    /// (see [`FallbackLayer::endpoint_chain`]).
    pub fn endpoint_chain(mut self, endpoint: &str, chain: &str) -> Self {
        self.allow
            .endpoints
            .push((endpoint.to_owned(), chain.to_owned()));
        self
    }

    /// The default chain (used when the request names none).
    pub fn chain(mut self, chain: impl Into<Chain>) -> Self {
        self.chains = self.chains.with_default(chain);
        self
    }

    /// Replaces every chain with `chains`.
    pub fn chains(mut self, chains: Chains) -> Self {
        self.chains = chains;
        self
    }

    /// Adds a chain a request can pick by name ([`ChainName`](crate::fallback::ChainName)
    /// or the [`chain_header`](Self::chain_header)).
    pub fn named_chain(mut self, name: &str, chain: impl Into<Chain>) -> Self {
        self.chains = self.chains.with_chain(name, chain);
        self
    }

    /// Adds cost tiers, cheapest first (see [`Chains::with_cost_tiers`]).
    pub fn cost_tiers<N: Into<Arc<str>>>(
        mut self,
        tiers: impl IntoIterator<Item = (N, Chain)>,
    ) -> Self {
        self.chains = self.chains.with_cost_tiers(tiers);
        self
    }

    /// Adds providers' model lists (see [`Chains::with_providers`]).
    pub fn providers<N: Into<Arc<str>>>(
        mut self,
        providers: impl IntoIterator<Item = (N, Chain)>,
    ) -> Self {
        self.chains = self.chains.with_providers(providers);
        self
    }

    /// The request header that names the chain (removed before the request goes
    /// upstream).
    pub fn chain_header(mut self, header: &str) -> Self {
        self.header = Some(header.to_owned());
        self
    }

    /// The order models are tried in.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Hybrid mode: models sent server-side per attempt (1 to 3).
    pub fn server_side_window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// OpenRouter's native routing parameters to inject into every request (server-side
    /// `models`, `provider` preferences, `route`, `/messages` `fallbacks`); a request may
    /// adjust them with a [`RoutingOverride`](crate::routing::RoutingOverride). With a
    /// client-side chain, the chain's model replaces `model` per attempt and the injected
    /// `models` stay as configured. Cannot be combined with a
    /// [`server_side_window`](Self::server_side_window) above 1 that would replace them.
    pub fn native_routing(mut self, config: RoutingConfig) -> Self {
        self.routing = config;
        self
    }

    /// The longest `Retry-After` worth waiting out once every model failed (default 60 s,
    /// and never more than the retry policy's `retry_after_cap`). A longer hint ends the
    /// call at once, with the hint as its [`retry_after`](crate::Error::retry_after): a
    /// gateway sets a short one and hands the hint to its own caller instead of holding
    /// the connection. See [`FallbackLayer::max_rate_limit_wait`].
    pub fn max_rate_limit_wait(mut self, max: Duration) -> Self {
        self.max_rate_limit_wait = max;
        self
    }

    /// Whether to wait out a `Retry-After` once every model failed, when the hint is no
    /// longer than [`max_rate_limit_wait`](Self::max_rate_limit_wait) and the deadline allows
    /// (see [`FallbackLayer::wait_for_rate_limit`]).
    pub fn wait_for_rate_limit(mut self, wait: bool) -> Self {
        self.wait_for_rate_limit = wait;
        self
    }

    /// The total budget of a call.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The default limit of one attempt (models may set their own).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The limit to a stream's first token.
    pub fn first_token_timeout(mut self, timeout: Duration) -> Self {
        self.first_token = Some(timeout);
        self
    }

    /// The longest gap between a stream's chunks once content flows (default
    /// [`DEFAULT_IDLE_TIMEOUT`], 30 s, or the deadline when that is shorter); `None` turns
    /// it off. Any chunk resets it, keep-alive comments included; past it the body ends
    /// with a `StreamTimeout` error frame. A limit you set may not be longer than the
    /// deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_openrouter::OpenRouterLayer;
    ///
    /// let b = || OpenRouterLayer::builder().chain(["a/b"]);
    /// assert_eq!(b().build()?.idle_timeout(), Some(Duration::from_secs(30)));
    /// let short = b().deadline(Duration::from_secs(20)).build()?;
    /// assert_eq!(short.idle_timeout(), Some(Duration::from_secs(20)));
    /// assert_eq!(b().idle_timeout(None).build()?.idle_timeout(), None);
    /// let err = b().deadline(Duration::from_secs(20)).idle_timeout(Duration::from_secs(30)).build();
    /// assert_eq!(err.unwrap_err().field(), "idle_timeout");
    /// # Ok::<(), tower_openrouter::error::ConfigError>(())
    /// ```
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle = Some(timeout.into());
        self
    }

    /// The default number of same-model retries (overrides the retry policy's).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// The retry policy (backoff, Retry-After, budget).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The health settings (a new tracker is made from them).
    pub fn health_config(mut self, config: HealthConfig) -> Self {
        self.health = HealthSource::Config(config);
        self
    }

    /// An existing health tracker, e.g. shared with other stacks.
    pub fn health_tracker(mut self, tracker: HealthTracker) -> Self {
        self.health = HealthSource::Tracker(tracker);
        self
    }

    /// Shares the tracker's trips, recoveries and probe slot with other replicas through
    /// `store` ([`HealthTracker::with_store`]). Not with
    /// [`health_tracker`](Self::health_tracker): such a tracker brings its own store.
    pub fn health_store(mut self, store: Arc<dyn crate::health::HealthStore>) -> Self {
        self.shared_health = SharedHealth::Store(store);
        self
    }

    /// Shares model health across replicas through Redis: [`build`](Self::build) starts a
    /// [`RedisHealthStore`](crate::health::RedisHealthStore) (so it must run inside a
    /// Tokio runtime). The trips in force arrive in the background; to know them before
    /// the first request, [`connect`](crate::health::RedisHealthStore::connect) yourself
    /// and pass the store to [`health_store`](Self::health_store).
    #[cfg(feature = "redis")]
    pub fn redis_health(mut self, config: crate::health::RedisStoreConfig) -> Self {
        self.shared_health = SharedHealth::Redis(config);
        self
    }

    /// Turns on the adaptive concurrency limit per model (off by default): a model's
    /// attempts in flight are limited, the limit lowered on 429s, overloaded providers and
    /// attempt timeouts and raised on successes; a request beyond it skips the model
    /// (`ModelAtCapacity`, no upstream call) or waits for a free slot when every model is
    /// at its limit. See [`health::adaptive`](crate::health::adaptive). With a shared
    /// [`health_tracker`](Self::health_tracker), its `HealthConfig` must say the same.
    pub fn adaptive_concurrency(mut self, config: AdaptiveConfig) -> Self {
        self.adaptive = Some(config);
        self
    }

    /// Hedging on the first content token for the default chain (off by default): an
    /// attempt that has produced no content after the policy's delay is raced against
    /// the next model of the chain, within a budget of extra calls. See
    /// [`fallback::hedge`](crate::fallback::hedge), and
    /// [`FallbackLayer::hedge`].
    pub fn hedge(mut self, policy: HedgePolicy) -> Self {
        self.hedges.push((None, policy));
        self
    }

    /// Hedging on the first content token for the chain named `chain` (see
    /// [`hedge`](Self::hedge)).
    pub fn chain_hedge(mut self, chain: &str, policy: HedgePolicy) -> Self {
        self.hedges.push((Some(chain.to_owned()), policy));
        self
    }

    /// The largest request body accepted, in bytes.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// The largest non-streamed response body, in bytes (default 16 MiB): a larger one is
    /// [`ErrorKind::ResponseTooLarge`](crate::ErrorKind::ResponseTooLarge) (fatal, not
    /// counted against the model), its reading stopped at the first chunk past the limit
    /// (see [`ClassifyLayer::success_body_limit`]).
    pub fn max_response_body_bytes(mut self, bytes: usize) -> Self {
        self.max_response_body_bytes = bytes;
        self
    }

    /// What a non-streamed 2xx whose JSON was cut short asks for
    /// ([`ErrorKind::ResponseTruncated`](crate::ErrorKind::ResponseTruncated); default
    /// [`Action::Fatal`]: the upstream answered, so tokens may have been billed).
    /// [`Action::Fallback`] asks the next model, [`Action::Retry`] the same one again.
    /// Applied after the classifier (see [`ClassifyLayer::truncated_action`]).
    pub fn truncated_response_action(mut self, action: Action) -> Self {
        self.truncated_action = Some(action);
        self
    }

    /// The classifier (error rules).
    pub fn classifier<C2: ClassifyOutcome>(self, classifier: C2) -> OpenRouterLayerBuilder<C2> {
        OpenRouterLayerBuilder {
            chains: self.chains,
            header: self.header,
            order: self.order,
            window: self.window,
            routing: self.routing,
            wait_for_rate_limit: self.wait_for_rate_limit,
            max_rate_limit_wait: self.max_rate_limit_wait,
            unlisted: self.unlisted,
            deadline: self.deadline,
            attempt_timeout: self.attempt_timeout,
            first_token: self.first_token,
            idle: self.idle,
            max_retries: self.max_retries,
            retry: self.retry,
            health: self.health,
            shared_health: self.shared_health,
            adaptive: self.adaptive,
            classifier: Arc::new(classifier),
            max_body_bytes: self.max_body_bytes,
            max_response_body_bytes: self.max_response_body_bytes,
            truncated_action: self.truncated_action,
            catalog: self.catalog,
            allow: self.allow,
            hedges: self.hedges,
        }
    }

    /// The model catalog: models that cannot serve a request (a feature it lacks, too
    /// small a context, over the price ceiling, retired) are skipped without an upstream
    /// call. Refresh it with [`ModelCatalog::spawn_refresh`]. See [`crate::catalog`].
    pub fn catalog(mut self, catalog: ModelCatalog) -> Self {
        self.catalog.policy = Some(CatalogPolicy::new(catalog));
        self
    }

    /// A whole [`CatalogPolicy`] (catalog and ceilings); the builder's own
    /// [`max_price`](Self::max_price) settings are added to it.
    pub fn catalog_policy(mut self, policy: CatalogPolicy) -> Self {
        self.catalog.policy = Some(policy);
        self
    }

    /// A price ceiling for every chain (needs [`catalog`](Self::catalog)).
    pub fn max_price(mut self, ceiling: MaxPrice) -> Self {
        self.catalog.max_price = Some(ceiling);
        self
    }

    /// A price ceiling for the chain named `chain` (needs [`catalog`](Self::catalog)).
    pub fn chain_max_price(mut self, chain: &str, ceiling: MaxPrice) -> Self {
        self.catalog
            .chain_max_price
            .push((chain.to_owned(), ceiling));
        self
    }

    /// A request header carrying the request's own price ceiling (it can only lower the
    /// configured one; see [`CatalogPolicy::max_price_header`]).
    pub fn max_price_header(mut self, header: &str) -> Self {
        self.catalog.header = Some(header.to_owned());
        self
    }

    /// Checks every setting, as [`build`](Self::build) does, without building anything
    /// (no tracker, no Redis connection).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.checked().map(drop)
    }

    /// Checks every setting and builds the layer.
    ///
    /// Each layer's settings are checked by that layer's own validation (the timeouts'
    /// builder, [`RetryPolicy::validate`], [`HealthConfig::validate`],
    /// [`FallbackLayer::validate`], ...); this adds the checks across layers. Only settings
    /// you wrote can conflict: an attempt timeout you did not set follows a shorter
    /// deadline, and the retries' backoff is held against the deadline only when you set
    /// a retry setting (`max_retries`, `retry_policy`, a model's `max_retries`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting: no chain or a malformed one, a zero or
    /// too-long limit (`attempt_timeout`, per-model timeouts, stream limits, backoff cap
    /// longer than the `deadline`), a bad header name, a window outside 1 to 3, bad health
    /// settings.
    pub fn build(self) -> Result<OpenRouterLayer<C>, ConfigError>
    where
        C: ClassifyOutcome,
    {
        let checked = self.checked()?;
        let classify = self.classify_layer();
        let tracker = match (checked.health, self.health) {
            (Some(c), _) => match self.shared_health.store()? {
                Some(store) => HealthTracker::with_store(c, store),
                None => HealthTracker::new(c),
            },
            (None, HealthSource::Tracker(t)) => t,
            // Not reached: `checked` gives settings for every tracker it is to make.
            (None, HealthSource::Config(c)) => HealthTracker::new(c),
        };
        Ok(OpenRouterLayer {
            body: BufferRequestLayer::new().limit(self.max_body_bytes),
            deadline: checked.deadline,
            routing: checked.routing,
            fallback: checked.fallback.health(tracker.clone()),
            retry: RetryLayer::new(checked.retry)?,
            health: HealthLayer::new(tracker),
            attempt_timeout: checked.attempt_timeout,
            classify,
        })
    }

    /// Every check of [`build`](Self::build), and what it builds from (the layers'
    /// settings, merged), with no side effect.
    fn checked(&self) -> Result<Checked, ConfigError> {
        let deadline = DeadlineLayer::new(self.deadline)?;
        let attempt_timeout = self.timeouts().build()?;
        let disable = check_chain_models(self.chains.all(), self.deadline)?;
        let retry = self.checked_retry()?;
        let health = self.health_settings(&disable)?;
        let (fallback, routing) = self.fallback_and_routing(retry.retry_after_cap)?;
        if self.max_body_bytes == 0 {
            return Err(ConfigError::zero("max_body_bytes"));
        }
        if self.max_response_body_bytes == 0 {
            return Err(ConfigError::zero("max_response_body_bytes"));
        }
        Ok(Checked {
            deadline,
            attempt_timeout,
            retry,
            health,
            fallback,
            routing,
        })
    }

    /// The classify layer: the classifier, the response body limit, the truncation action.
    fn classify_layer(&self) -> ClassifyLayer<C>
    where
        C: ClassifyOutcome,
    {
        let layer = ClassifyLayer::with_shared_classifier(self.classifier.clone())
            .success_body_limit(self.max_response_body_bytes);
        match self.truncated_action {
            Some(action) => layer.truncated_action(action),
            None => layer,
        }
    }

    /// The attempt and stream limits, checked against the deadline by their builder. An
    /// attempt timeout or idle limit not set follows the deadline when that is shorter
    /// than its default.
    fn timeouts(&self) -> AttemptTimeoutBuilder {
        let limit = self
            .attempt_timeout
            .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT.min(self.deadline));
        let mut timeout = AttemptTimeoutLayer::builder(limit).deadline(self.deadline);
        if let Some(t) = self.first_token {
            timeout = timeout.first_token(t);
        }
        let idle = self
            .idle
            .unwrap_or(Some(DEFAULT_IDLE_TIMEOUT.min(self.deadline)));
        if let Some(t) = idle {
            timeout = timeout.idle(t);
        }
        timeout
    }

    /// The retry policy with `max_retries` applied, checked; against the deadline only
    /// when a retry setting was written (the default backoff may be longer than a short
    /// deadline: the deadline then ends the retries, which is what was asked for).
    fn checked_retry(&self) -> Result<RetryPolicy, ConfigError> {
        let mut retry = self.retry.clone().unwrap_or_default();
        if let Some(n) = self.max_retries {
            retry = retry.max_retries(n);
        }
        let per_model = self
            .chains
            .all()
            .any(|(_, c)| c.iter().any(|m| m.max_retries.is_some()));
        if self.retry.is_some() {
            retry.validate(Some(self.deadline))?;
        } else {
            retry.validate(None)?;
        }
        if self.retry.is_some() || self.max_retries.is_some() || per_model {
            check_backoff_sum(&retry, &self.chains, self.deadline)?;
        }
        Ok(retry)
    }

    /// The health settings of a new tracker (the models' disable durations and the
    /// adaptive limit merged in), checked; `None` for a shared tracker, which must already
    /// say the same.
    fn health_settings(
        &self,
        disable: &[(&str, Duration, String)],
    ) -> Result<Option<HealthConfig>, ConfigError> {
        let t = match &self.health {
            HealthSource::Config(c) => {
                let mut c = c.clone();
                for (model, d, _) in disable {
                    c = c.model_disable_duration(*model, *d);
                }
                if let Some(a) = self.adaptive {
                    c = c.adaptive(a);
                }
                c.validate()?;
                self.shared_health.validate()?;
                return Ok(Some(c));
            }
            HealthSource::Tracker(t) => t,
        };
        if !matches!(self.shared_health, SharedHealth::Local) {
            return Err(ConfigError::new(
                "health_store",
                "a shared health_tracker brings its own store: make it with HealthTracker::with_store instead of setting health_store or redis_health",
            ));
        }
        for (model, d, at) in disable {
            if t.config().disable_duration_of(model) != Some(*d) {
                return Err(ConfigError::new(
                    at.clone(),
                    format!(
                        "{at}: a shared health_tracker is used, so set model_disable_duration({model:?}, {d:?}) in its HealthConfig"
                    ),
                ));
            }
        }
        if self.adaptive.is_some() && t.config().adaptive != self.adaptive {
            return Err(ConfigError::new(
                "adaptive",
                "adaptive: a shared health_tracker is used, so set HealthConfig::adaptive in its HealthConfig",
            ));
        }
        Ok(None)
    }

    /// The fallback layer (without its tracker) and the native routing layer, checked:
    /// [`FallbackLayer::validate`], and the window against the routing config.
    fn fallback_and_routing(
        &self,
        retry_after_cap: Duration,
    ) -> Result<(FallbackLayer, NativeRoutingLayer), ConfigError> {
        let mut fallback = FallbackLayer::new(self.chains.clone())
            .order(self.order)
            .server_side_window(self.window)
            .wait_for_rate_limit(self.wait_for_rate_limit)
            .max_rate_limit_wait(self.max_rate_limit_wait.min(retry_after_cap))
            .unlisted_model(self.unlisted);
        fallback = self.allow_list(fallback);
        if let Some(h) = &self.header {
            fallback = fallback.chain_header(header_name("chain_header", h)?);
        }
        for (chain, policy) in &self.hedges {
            fallback = match chain {
                None => fallback.hedge(policy.clone()),
                Some(name) => fallback.chain_hedge(name, policy.clone()),
            };
        }
        let mut routing = NativeRoutingLayer::new(self.routing.clone());
        if let Some(policy) = self.catalog.policy()? {
            routing = routing.catalog(policy.clone());
            fallback = fallback.catalog(policy);
        }
        fallback.validate()?;
        if self.window > 1
            && (!self.routing.models().is_empty() || !self.routing.fallbacks().is_empty())
        {
            return Err(ConfigError::new(
                "server_side_window",
                "server_side_window above 1 sets `models` per attempt, which would replace the native_routing models/fallbacks: use one or the other",
            ));
        }
        Ok((fallback, routing))
    }
}

impl<C> OpenRouterLayerBuilder<C> {
    /// `fallback` with the allow-list (the native routing config's models and providers
    /// allowed too) and the endpoint chains.
    fn allow_list(&self, mut fallback: FallbackLayer) -> FallbackLayer {
        let a = &self.allow;
        if let Some(m) = &a.models {
            fallback = fallback.allowed_models(m);
        }
        if let Some(p) = &a.providers {
            fallback = fallback.allowed_providers(p);
        }
        for (endpoint, chain) in &a.endpoints {
            fallback = fallback.endpoint_chain(endpoint, chain);
        }
        let r = &self.routing;
        let models = r.models().iter().chain(r.fallbacks());
        let provider = r.provider();
        let providers = provider
            .into_iter()
            .flat_map(|p| p.only.iter().chain(&p.order).flatten());
        fallback.configured_routing(
            models.map(|m| m.as_str().into()).collect(),
            providers.map(|p| p.as_str().into()).collect(),
        )
    }
}

/// What [`OpenRouterLayerBuilder::build`] builds from, every setting checked.
struct Checked {
    deadline: DeadlineLayer,
    attempt_timeout: AttemptTimeoutLayer,
    retry: RetryPolicy,
    /// The settings of a new tracker (`None`: a shared tracker is used).
    health: Option<HealthConfig>,
    fallback: FallbackLayer,
    routing: NativeRoutingLayer,
}

/// A header name of the settings, or an error naming `field`. The rejected text is not
/// repeated: a config error never echoes a value (a key pasted into the wrong setting).
fn header_name(field: &'static str, h: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
        ConfigError::new(
            field,
            format!(
                "{field} is not a valid header name (visible ASCII without spaces or separators)"
            ),
        )
    })
}

impl SharedHealth {
    /// Checks the settings of a store to be made (a Redis URL), without connecting.
    fn validate(&self) -> Result<(), ConfigError> {
        match self {
            #[cfg(feature = "redis")]
            SharedHealth::Redis(c) => c.validate(),
            _ => Ok(()),
        }
    }

    fn store(self) -> Result<Option<Arc<dyn crate::health::HealthStore>>, ConfigError> {
        match self {
            SharedHealth::Local => Ok(None),
            SharedHealth::Store(s) => Ok(Some(s)),
            #[cfg(feature = "redis")]
            SharedHealth::Redis(c) => Ok(Some(
                crate::health::RedisHealthStore::spawn(c)?.into_store(),
            )),
        }
    }
}

/// The retries' largest backoffs, added up, must fit in the deadline: with more, the last
/// retries could never happen (the deadline ends the call first), which is a setting that
/// cannot hold. Per-model retries count too.
fn check_backoff_sum(
    retry: &RetryPolicy,
    chains: &Chains,
    deadline: Duration,
) -> Result<(), ConfigError> {
    let most = chains
        .all()
        .flat_map(|(_, c)| c.iter().filter_map(|m| m.max_retries).collect::<Vec<_>>())
        .fold(retry.max_retries, u32::max);
    let sum = retry.largest_backoffs(most);
    if sum > deadline {
        return Err(ConfigError::new(
            "max_retries",
            format!(
                "max_retries ({most}) with backoff_base ({:?}) and backoff_cap ({:?}) can back off for {sum:?} in all, longer than the deadline ({deadline:?})",
                retry.base, retry.cap
            ),
        ));
    }
    Ok(())
}

/// The models' own limits across every chain (`(field, chain)`, field names as in the
/// errors): each timeout within the deadline, and one disable duration per model. Returns
/// each model's disable duration with the field that set it first.
pub(crate) fn check_chain_models<'a>(
    chains: impl IntoIterator<Item = (String, &'a Chain)>,
    deadline: Duration,
) -> Result<Vec<(&'a str, Duration, String)>, ConfigError> {
    let mut disable: Vec<(&str, Duration, String)> = Vec::new();
    for (field, chain) in chains {
        for (i, m) in chain.iter().enumerate() {
            check_model_timeout(&format!("{field}[{i}].timeout"), m, deadline)?;
            let Some(d) = m.disable_duration else {
                continue;
            };
            let at = format!("{field}[{i}].disable_duration");
            match disable.iter().find(|(id, _, _)| *id == m.model()) {
                Some((_, other, first)) if *other != d => {
                    return Err(ConfigError::new(
                        at.clone(),
                        format!(
                            "{at} ({d:?}) differs from {first} ({other:?}) for the same model {}",
                            m.model()
                        ),
                    ))
                }
                Some(_) => {}
                None => disable.push((m.model(), d, at)),
            }
        }
    }
    Ok(disable)
}

fn check_model_timeout(field: &str, m: &ChainModel, deadline: Duration) -> Result<(), ConfigError> {
    let Some(t) = m.timeout else {
        return Ok(());
    };
    if t.is_zero() {
        return Err(ConfigError::zero(field.to_owned()));
    }
    if t > deadline {
        return Err(ConfigError::longer_than(
            field.to_owned(),
            t,
            "deadline",
            deadline,
        ));
    }
    Ok(())
}
