//! [`FallbackLayer`] and its service [`Fallback`].

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};

use super::allow::{AllowList, AllowSettings};
use super::chain::Chains;
use super::future::{CallCtx, KeptCredentials, ResponseFuture};
use super::hedge::{HedgePolicy, Hedging};
use super::select::{
    names_chain, passthrough_model, select_chain, strip_chain_header, UnlistedModel,
};
use crate::body::is_generation_endpoint;
use crate::catalog::CatalogPolicy;
use crate::error::ConfigError;
use crate::error::{BoxError, Error};
use crate::health::HealthTracker;
use crate::routing::MAX_SERVER_MODELS;
use crate::{Attempt, AttemptLog, JsonBody};

/// In what order a chain's models are tried.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// The chain's order (after [`priority`](super::ChainModel::priority) sorting),
    /// skipping models that are cooling down.
    #[default]
    Priority,
    /// By current success rate, best first (models with no data yet count as healthy;
    /// ties keep the chain's order), skipping models that are cooling down. Needs a
    /// health tracker ([`FallbackLayer::health`]); without one it is `Priority`.
    Health,
}

/// Default of [`FallbackLayer::max_rate_limit_wait`]: the retry policy's default
/// `retry_after_cap`.
pub const DEFAULT_MAX_RATE_LIMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) chains: Chains,
    pub(crate) health: Option<HealthTracker>,
    pub(crate) order: Order,
    pub(crate) window: usize,
    pub(crate) header: Option<HeaderName>,
    pub(crate) wait_for_rate_limit: bool,
    pub(crate) max_rate_limit_wait: std::time::Duration,
    pub(crate) jitter: Arc<crate::health::Jitter>,
    pub(crate) unlisted: UnlistedModel,
    pub(crate) catalog: Option<CatalogPolicy>,
    allow_settings: AllowSettings,
    /// The allow-list in force (`None`: nothing restricted), rebuilt by every setter.
    allow: Option<AllowList>,
    /// `(endpoint, chain name)`: the chain a `POST` to a path ending in `endpoint`
    /// (`/embeddings`) walks in the default chain's place.
    endpoints: Vec<(Box<str>, Arc<str>)>,
    /// Hedging on the first content token (`None`: no chain hedges).
    pub(crate) hedging: Option<Arc<Hedging>>,
}

impl Shared {
    /// The chain configured for the request's endpoint, if any (`POST` only).
    fn endpoint_chain<T>(&self, req: &Request<T>) -> Option<&Arc<str>> {
        if self.endpoints.is_empty() || req.method() != http::Method::POST {
            return None;
        }
        let path = req.uri().path();
        let path = path.strip_suffix('/').unwrap_or(path);
        self.endpoints
            .iter()
            .find(|(e, _)| path.ends_with(&**e))
            .map(|(_, c)| c)
    }
}

/// Tries a chain of models in order until one answers. See the [module docs](super).
///
/// ```
/// use tower_openrouter::fallback::{FallbackLayer, Order};
///
/// let layer = FallbackLayer::new(["anthropic/claude-3.5-sonnet", "openai/gpt-4o"])
///     .order(Order::Priority)
///     .chain_header(http::HeaderName::from_static("x-openrouter-chain"));
/// assert_eq!(layer.chains().default_chain().unwrap().len(), 2);
/// ```
#[derive(Clone)]
pub struct FallbackLayer {
    shared: Arc<Shared>,
}

impl FallbackLayer {
    /// A layer over `chains` (a [`Chains`] set, a [`Chain`](super::Chain), or an array of model ids for a
    /// default chain alone). Validate with [`FallbackLayer::validate`] (the stack builder
    /// does).
    pub fn new(chains: impl Into<Chains>) -> Self {
        FallbackLayer {
            shared: Arc::new(Shared {
                chains: chains.into(),
                health: None,
                order: Order::Priority,
                window: 1,
                header: None,
                wait_for_rate_limit: true,
                max_rate_limit_wait: DEFAULT_MAX_RATE_LIMIT_WAIT,
                jitter: Arc::new(crate::health::Jitter::new(None)),
                unlisted: UnlistedModel::TryFirst,
                catalog: None,
                allow_settings: AllowSettings::default(),
                allow: None,
                endpoints: Vec::new(),
                hedging: None,
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        // Copy-on-write: a layer whose settings are shared with clones gets its own copy.
        let s = Arc::make_mut(&mut self.shared);
        f(s);
        s.allow = AllowList::build(&s.allow_settings, &s.chains, s.unlisted);
        self
    }

    /// An allow-list of models, for a stack that lends its key (a gateway): the caller's
    /// `model` (unless the request names a chain), every entry of its `models` and of
    /// `/messages` `fallbacks` must then be a model of a configured chain, a chain's name,
    /// or one of `models` (an entry ending in `*` is a prefix: `"openai/*"`); anything
    /// else is [`ModelNotAllowed`](crate::ErrorKind::ModelNotAllowed) before any upstream
    /// call, on every endpoint that carries a body. An empty list allows the chains alone.
    /// [`UnlistedModel::Reject`] restricts `models` and `fallbacks` to the chains the same
    /// way (and, as ever, `model` to a chain's name or first model).
    ///
    /// ```
    /// use tower_openrouter::fallback::FallbackLayer;
    ///
    /// let layer = FallbackLayer::new(["openai/gpt-4o", "anthropic/claude-3.5-sonnet"])
    ///     .allowed_models(["meta-llama/*"])
    ///     .allowed_providers(["OpenAI", "Anthropic"]);
    /// # let _ = layer;
    /// ```
    pub fn allowed_models<I>(self, models: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let list = models.into_iter().map(|m| m.as_ref().into()).collect();
        self.edit(|s| s.allow_settings.models = Some(list))
    }

    /// An allow-list of providers: every entry of a request's `provider.only` and
    /// `provider.order` must be one of `providers` (compared without regard to ASCII case;
    /// an entry ending in `*` is a prefix), else
    /// [`ModelNotAllowed`](crate::ErrorKind::ModelNotAllowed) before any upstream call.
    /// It restricts what a caller may name; to send requests only to these providers, set
    /// `provider.only` in the [native routing](crate::routing) config as well.
    pub fn allowed_providers<I>(self, providers: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let list = providers.into_iter().map(|p| p.as_ref().into()).collect();
        self.edit(|s| s.allow_settings.providers = Some(list))
    }

    /// Models and providers the stack itself sends (the native routing config): allowed
    /// whenever an allow-list is in force.
    pub(crate) fn configured_routing(
        self,
        models: Vec<Box<str>>,
        providers: Vec<Box<str>>,
    ) -> Self {
        self.edit(|s| {
            s.allow_settings.configured_models = models;
            s.allow_settings.configured_providers = providers;
        })
    }

    /// The chain that `POST` requests to `endpoint` walk (`"embeddings"`, `"/embeddings"`
    /// and `"/api/v1/embeddings"` say the same): on an endpoint without model fallback it
    /// turns fallback on, and on a generation endpoint it takes the default chain's place.
    /// The caller's `model` still picks a chain by name or first model; any other model is
    /// tried first, then this chain's fallbacks (or as [`UnlistedModel`] says). `chain`
    /// must be a named chain ([`validate`](Self::validate) checks).
    ///
    /// ```
    /// use tower_openrouter::fallback::{Chains, FallbackLayer};
    ///
    /// let chains = Chains::new(["openai/gpt-4o"])
    ///     .with_chain("embed", ["openai/text-embedding-3-small", "mistralai/mistral-embed"]);
    /// let layer = FallbackLayer::new(chains).endpoint_chain("embeddings", "embed");
    /// layer.validate().unwrap();
    /// ```
    pub fn endpoint_chain(self, endpoint: &str, chain: &str) -> Self {
        let endpoint = normalize_endpoint(endpoint);
        let chain: Arc<str> = chain.into();
        self.edit(|s| {
            s.endpoints.retain(|(e, _)| *e != endpoint);
            s.endpoints.push((endpoint, chain));
        })
    }

    /// The order models are tried in (default [`Order::Priority`]).
    pub fn order(self, order: Order) -> Self {
        self.edit(|s| s.order = order)
    }

    /// The health tracker to consult: models it reports unavailable are skipped without
    /// an upstream call (a `ModelCoolingDown` attempt is recorded), and when every model
    /// is cooling down one forced probe goes to the model whose cooldown ends first.
    /// Use the same tracker as the [`HealthLayer`](crate::health::HealthLayer) below.
    pub fn health(self, tracker: HealthTracker) -> Self {
        self.edit(|s| s.health = Some(tracker))
    }

    /// A request header that names the chain (for proxies); the request extension
    /// [`ChainName`](super::ChainName) wins over it. The header is removed before the request goes upstream.
    pub fn chain_header(self, header: HeaderName) -> Self {
        self.edit(|s| s.header = Some(header))
    }

    /// Hybrid mode: each attempt sends a window of up to `window` models server-side
    /// (`model: a, models: [a, b, c]`), the next attempt the next window. `1` (the
    /// default) is plain client-side fallback; at most
    /// [`MAX_SERVER_MODELS`](crate::routing::MAX_SERVER_MODELS), OpenRouter's limit on
    /// `models`.
    pub fn server_side_window(self, window: usize) -> Self {
        self.edit(|s| s.window = window)
    }

    /// Whether, once every model failed and one of them was rate limited with a
    /// `Retry-After` that ends before the [`Deadline`](crate::Deadline), the layer waits
    /// for it and tries that model once more (default `true`; never without a deadline,
    /// never for a hint longer than [`max_rate_limit_wait`](Self::max_rate_limit_wait)).
    /// OpenRouter advises exactly this for a 429 when no other model is healthy.
    ///
    /// After its wait the call makes its own attempt of that model (forced: a breaker the
    /// rate limits tripped, or another request's probe, does not turn it away).
    pub fn wait_for_rate_limit(self, wait: bool) -> Self {
        self.edit(|s| s.wait_for_rate_limit = wait)
    }

    /// What a request whose `model` is neither a chain's name nor a chain's first model
    /// gets (default [`UnlistedModel::TryFirst`]: its model first, then the default
    /// chain's fallbacks).
    pub fn unlisted_model(self, unlisted: UnlistedModel) -> Self {
        self.edit(|s| s.unlisted = unlisted)
    }

    /// The model catalog and price ceilings to apply: a model that cannot serve the
    /// request (a feature it lacks, too small a context, over the price ceiling, retired)
    /// is skipped without an upstream call, recorded as an
    /// [`Incapable`](crate::ErrorKind::Incapable) attempt with the reason; when no model
    /// can serve, the call fails with [`NoCapableModel`](crate::ErrorKind::NoCapableModel).
    /// See [`catalog`](crate::catalog).
    pub fn catalog(self, policy: CatalogPolicy) -> Self {
        self.edit(|s| s.catalog = Some(policy))
    }

    /// Hedging on the first content token for the default chain (and the chain a request
    /// naming an unlisted model gets): see [`hedge`](super::hedge). Off by default.
    pub fn hedge(self, policy: HedgePolicy) -> Self {
        self.edit(|s| Arc::make_mut(s.hedging.get_or_insert_default()).set(None, policy))
    }

    /// Hedging on the first content token for the chain named `chain` (see
    /// [`hedge`](super::hedge)). Off by default.
    pub fn chain_hedge(self, chain: &str, policy: HedgePolicy) -> Self {
        self.edit(|s| Arc::make_mut(s.hedging.get_or_insert_default()).set(Some(chain), policy))
    }

    /// The catalog policy, when one is set.
    pub fn catalog_policy(&self) -> Option<&CatalogPolicy> {
        self.shared.catalog.as_ref()
    }

    /// The longest `Retry-After` worth waiting out (see
    /// [`wait_for_rate_limit`](Self::wait_for_rate_limit)); a longer hint ends the call at
    /// once, with the hint as its [`retry_after`](crate::Error::retry_after), so a gateway
    /// can hand it to its own caller instead of holding the connection. Default 60 s (the
    /// stack builder also caps it at the retry policy's `retry_after_cap`).
    ///
    /// The wait itself lies in `[hint, 1.5 x hint]` (jittered, so callers told the same
    /// hint do not all call again at once), never longer than this, and ends before the
    /// [`Deadline`](crate::Deadline). When the hint is short enough but ends past the
    /// deadline, the call ends with `DeadlineExceeded`.
    pub fn max_rate_limit_wait(self, max: std::time::Duration) -> Self {
        self.edit(|s| s.max_rate_limit_wait = max)
    }

    /// The chains.
    pub fn chains(&self) -> &Chains {
        &self.shared.chains
    }

    /// The health tracker, when one is set.
    pub fn health_tracker(&self) -> Option<&HealthTracker> {
        self.shared.health.as_ref()
    }

    /// Checks the settings: every chain (see [`Chains::validate`]), the window, the
    /// catalog policy and the hedge policies.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.shared.chains.validate()?;
        if let Some(policy) = &self.shared.catalog {
            policy.validate()?;
        }
        let a = &self.shared.allow_settings;
        for (field, list) in [
            ("allowed_models", &a.models),
            ("allowed_providers", &a.providers),
        ] {
            if list.iter().flatten().any(|e| e.trim().is_empty()) {
                return Err(ConfigError::new(
                    field,
                    format!("{field}: an entry is empty"),
                ));
            }
        }
        for (endpoint, chain) in &self.shared.endpoints {
            let field = format!("endpoint_chains.{}", endpoint.trim_start_matches('/'));
            if endpoint.len() < 2 {
                return Err(ConfigError::new(
                    field,
                    "endpoint_chains: an endpoint is empty",
                ));
            }
            if self.shared.chains.get(chain).is_none() {
                return Err(ConfigError::new(
                    field.clone(),
                    format!(
                        "{field}: no chain named {chain:?}; configured: {}",
                        self.shared.chains.names().join(", ")
                    ),
                ));
            }
        }
        if let Some(h) = &self.shared.hedging {
            h.validate(&self.shared.chains)?;
        }
        let w = self.shared.window;
        if w == 0 || w > MAX_SERVER_MODELS {
            return Err(ConfigError::new(
                "server_side_window",
                format!(
                    "server_side_window must be between 1 and {MAX_SERVER_MODELS} (OpenRouter rejects longer `models` lists), got {w}"
                ),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for FallbackLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.shared;
        f.debug_struct("FallbackLayer")
            .field("chains", &s.chains)
            .field("order", &s.order)
            .field("window", &s.window)
            .field("header", &s.header)
            .field("health", &s.health.is_some())
            .field("catalog", &s.catalog)
            .field("allow_list", &s.allow.is_some())
            .field("endpoints", &s.endpoints)
            .field("hedging", &s.hedging.is_some())
            .finish()
    }
}

impl<S> Layer<S> for FallbackLayer {
    type Service = Fallback<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`FallbackLayer`].
#[derive(Clone)]
pub struct Fallback<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Fallback<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, layer: &FallbackLayer) -> Self {
        layer.layer(inner)
    }

    crate::service::inner_service_accessors!();
}

impl<S: std::fmt::Debug> std::fmt::Debug for Fallback<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<Full<Bytes>>> for Fallback<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<B>;
    type Error = Error;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        crate::service::poll_inner(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: Request<Full<Bytes>>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let named = names_chain(&self.shared, &req);
        if let Some(allow) = &self.shared.allow {
            if let Err(e) = check_allowed(allow, &req, named) {
                return ResponseFuture::failed(e);
            }
        }
        let endpoint = self.shared.endpoint_chain(&req).cloned();
        if endpoint.is_none() && !named && !is_generation_endpoint(req.method(), req.uri().path()) {
            let kept = KeptCredentials::of(&req);
            return ResponseFuture::passthrough(passthrough(inner, &self.shared, req), kept);
        }
        let selected = match select_chain(&self.shared, &mut req, endpoint.as_ref()) {
            Ok(found) => found,
            Err(e) => return ResponseFuture::failed(e),
        };
        let filter = match self.shared.catalog.as_ref() {
            Some(policy) => match policy.prepare(&mut req, selected.name.as_deref()) {
                Ok(f) => Some(f),
                Err(e) => return ResponseFuture::failed(e),
            },
            None => None,
        };
        if let Some(f) = &filter {
            // Native routing's lists, filtered with this chain's ceiling too.
            crate::routing::retain_injected(&mut req, |m| f.unfit(m).is_none());
        }
        let hedge = self
            .shared
            .hedging
            .as_ref()
            .and_then(|h| h.for_call(selected.name.as_deref(), &req));
        let log = match req.extensions().get::<AttemptLog>() {
            Some(log) => log.clone(),
            None => {
                let log = AttemptLog::new();
                req.extensions_mut().insert(log.clone());
                log
            }
        };
        ResponseFuture::start(Box::new(
            CallCtx::new(inner, self.shared.clone(), selected, req, log)
                .with_filter(filter)
                .with_hedge(hedge),
        ))
    }
}

/// Checks a request with a body against the allow-list (its `model` too unless it names
/// a chain).
fn check_allowed(allow: &AllowList, req: &Request<Full<Bytes>>, named: bool) -> Result<(), Error> {
    if req.method() == http::Method::GET || req.method() == http::Method::HEAD {
        return Ok(());
    }
    allow.check(JsonBody::from_request(req).ok().as_ref(), !named)
}

/// `embeddings`, `/embeddings/`, `/api/v1/embeddings`: `/embeddings`.
fn normalize_endpoint(endpoint: &str) -> Box<str> {
    let e = endpoint.trim().trim_end_matches('/');
    let e = e
        .strip_prefix("/api/v1")
        .or_else(|| e.strip_prefix("/v1"))
        .unwrap_or(e);
    format!("/{}", e.trim_start_matches('/')).into()
}

/// A request to an endpoint without model fallback (`GET /models`, `/key`, `POST
/// /embeddings`, ...): sent once with its body untouched; the layers below still time it
/// out, retry it on the same model (a GET, or a POST with a `model`) and classify it.
fn passthrough<S, B>(mut inner: S, shared: &Shared, mut req: Request<Full<Bytes>>) -> S::Future
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
{
    strip_chain_header(shared, &mut req);
    if let Some(model) = passthrough_model(&req) {
        req.extensions_mut().insert(Attempt::new(model));
    }
    inner.call(req)
}
