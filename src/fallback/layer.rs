//! [`FallbackLayer`] and its service [`Fallback`].

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};

use super::chain::Chains;
use super::future::{CallCtx, ResponseFuture};
use super::select::{
    names_chain, passthrough_model, select_chain, strip_chain_header, UnlistedModel,
};
use crate::body::is_generation_endpoint;
use crate::catalog::CatalogPolicy;
use crate::error::ConfigError;
use crate::error::{BoxError, Error};
use crate::health::HealthTracker;
use crate::routing::MAX_SERVER_MODELS;
use crate::{Attempt, AttemptLog};

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
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        // Copy-on-write: a layer whose settings are shared with clones gets its own copy.
        f(Arc::make_mut(&mut self.shared));
        self
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

    /// Checks the settings: every chain (see [`Chains::validate`]) and the window.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.shared.chains.validate()?;
        if let Some(policy) = &self.shared.catalog {
            policy.validate()?;
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
        if !is_generation_endpoint(req.method(), req.uri().path())
            && !names_chain(&self.shared, &req)
        {
            return ResponseFuture::passthrough(passthrough(inner, &self.shared, req));
        }
        let selected = match select_chain(&self.shared, &mut req) {
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
        let log = match req.extensions().get::<AttemptLog>() {
            Some(log) => log.clone(),
            None => {
                let log = AttemptLog::new();
                req.extensions_mut().insert(log.clone());
                log
            }
        };
        ResponseFuture::start(Box::new(
            CallCtx::new(inner, self.shared.clone(), selected, req, log).with_filter(filter),
        ))
    }
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
