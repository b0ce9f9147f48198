//! The native routing layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pin_project_lite::pin_project;
use serde_json::value::RawValue;
use tower::{Layer, Service};

use super::config::{invalid_routing, Prepared};
use super::lists::{retain_fallbacks, retain_models, MAX_SERVER_MODELS};
use super::{RoutingConfig, RoutingOverride};
use crate::body::{is_generation_endpoint, is_messages_endpoint, replace_body, Edit};
use crate::catalog::CatalogPolicy;
use crate::extensions::InjectedModels;
use crate::service::InnerOrError;
use crate::JsonBody;
use crate::{BoxError, Error};

/// Injects OpenRouter's server-side routing parameters into chat-completion and
/// messages bodies, and checks OpenRouter's documented limits before any upstream call.
///
/// For a `POST` to a path ending in `/chat/completions`, `/completions` or `/messages`:
///
/// * `models`, `provider` and `route` from the [`RoutingConfig`] (or the request's
///   [`RoutingOverride`]) are set; `fallbacks` only on `/messages`;
/// * a field the caller already set is kept, unless the config says to replace it;
/// * the final body (the caller's fields plus the injected ones) must have at most 3
///   `models`; on `/messages`, at most 3 `fallbacks`, each `{"model": "<id>"}` and
///   nothing else, and not together with `models`. Anything else is
///   [`ErrorKind::InvalidRouting`](crate::ErrorKind::InvalidRouting) and the inner
///   service is not called;
/// * only the injected members change: every other byte of the body is kept
///   ([`JsonBody::edit`]), `Content-Length` is updated, and the new [`JsonBody`] index is
///   stored in the request extensions for the layers inside.
///
/// Other requests pass through untouched.
#[derive(Clone, Debug, Default)]
pub struct NativeRoutingLayer {
    config: RoutingConfig,
    catalog: Option<CatalogPolicy>,
}

impl NativeRoutingLayer {
    /// A layer that injects `config`.
    pub fn new(config: RoutingConfig) -> Self {
        NativeRoutingLayer {
            config,
            catalog: None,
        }
    }

    /// Drops from the injected `models` (and `/messages` `fallbacks`) every model the
    /// catalog says cannot serve the request (see [`crate::catalog`]): one the request
    /// needs a feature of, too small a context, retired, or above the layer-wide or the
    /// request's price ceiling; when none is left, the list is not injected. This layer
    /// sits outside the chain selection, so the chain's own ceiling
    /// ([`CatalogPolicy::chain_max_price`]) is applied by the
    /// [`FallbackLayer`](crate::FallbackLayer) inside it, when that layer has a catalog
    /// policy: it drops from the lists this layer injected (never the caller's own) every
    /// model too dear for the chain the call uses. Either way OpenRouter is never handed a
    /// model that cannot serve the request.
    pub fn catalog(mut self, policy: CatalogPolicy) -> Self {
        self.catalog = Some(policy);
        self
    }
}

impl<S> Layer<S> for NativeRoutingLayer {
    type Service = NativeRouting<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NativeRouting {
            inner,
            config: self.config.clone(),
            catalog: self.catalog.clone(),
        }
    }
}

/// The service of [`NativeRoutingLayer`].
#[derive(Clone, Debug)]
pub struct NativeRouting<S> {
    inner: S,
    config: RoutingConfig,
    catalog: Option<CatalogPolicy>,
}

impl<S> NativeRouting<S> {
    /// Wraps `inner`, injecting `config`.
    pub fn new(inner: S, config: RoutingConfig) -> Self {
        NativeRouting {
            inner,
            config,
            catalog: None,
        }
    }

    /// The config.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    crate::service::inner_service_accessors!();
}

impl<S> Service<Request<Full<Bytes>>> for NativeRouting<S>
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        crate::service::poll_inner(&mut self.inner, cx)
    }

    // The inner service is called here and now (its future needs no service of its own),
    // so it is not cloned: the one `poll_ready` made ready answers this call.
    fn call(&mut self, mut req: Request<Full<Bytes>>) -> Self::Future {
        if is_generation_endpoint(req.method(), req.uri().path()) {
            if let Err(error) = route_request(&self.config, self.catalog.as_ref(), &mut req) {
                return ResponseFuture::failed(error);
            }
        }
        ResponseFuture {
            state: InnerOrError::inner(self.inner.call(req)),
        }
    }
}

/// Applies the routing config (and the request's override) to a model-endpoint request.
fn route_request(
    config: &RoutingConfig,
    catalog: Option<&CatalogPolicy>,
    req: &mut Request<Full<Bytes>>,
) -> Result<(), Error> {
    let json = JsonBody::from_request(req)?;
    let messages = is_messages_endpoint(req.uri().path());
    let mut prepared = config.prepared_for(req.extensions().get::<RoutingOverride>());
    let mut needs = None;
    if let Some(policy) = catalog {
        let filter = policy.request_filter(req);
        needs = Some(filter.needs());
        let keep = |m: &str| filter.unfit(m).is_none();
        let models = prepared
            .models
            .as_deref()
            .and_then(|l| retain_models(l.get().as_bytes(), keep));
        let fallbacks = prepared
            .fallbacks
            .as_deref()
            .and_then(|l| retain_fallbacks(l.get().as_bytes(), keep));
        if let Some(kept) = models {
            prepared.to_mut().models = kept;
        }
        if let Some(kept) = fallbacks {
            prepared.to_mut().fallbacks = kept;
        }
    }
    if let Some((edited, injected)) = route_body(&json, messages, &prepared)? {
        replace_body(req, edited.bytes().clone());
        req.extensions_mut().insert(edited);
        if injected.models || injected.fallbacks {
            req.extensions_mut().insert(injected);
        }
    }
    if let Some(needs) = needs {
        // The edits above touch no member the scan reads: the fallback layer reuses it.
        crate::catalog::ScannedNeeds::keep_for(req, needs);
    }
    Ok(())
}

/// The body with the routing values in, checked against OpenRouter's limits, and which
/// server-side lists were injected; `None` when nothing changes.
pub(crate) fn route_body<'a>(
    json: &'a JsonBody,
    messages: bool,
    p: &'a Prepared,
) -> Result<Option<(JsonBody, InjectedModels)>, Error> {
    let mut edits: Vec<Edit<'a>> = Vec::with_capacity(4);
    // The value each field will have in the final body.
    // `read`: whether the caller's own value is needed (for the checks below); the
    // lookup is skipped for the others.
    let mut field = |key: &'static str, value: Option<&'a RawValue>, read: bool| match value {
        Some(v) if p.replace || !json.contains_key(key) => {
            edits.push(Edit::Set(key, v));
            (Some(v.get()), true)
        }
        _ if read => (json.raw(key), false),
        _ => (None, false),
    };
    let (models, models_set) = field("models", p.models.as_deref(), true);
    field("provider", p.provider.as_deref(), false);
    field("route", p.route.as_deref(), false);
    let (fallbacks, fallbacks_set) = if messages {
        field("fallbacks", p.fallbacks.as_deref(), true)
    } else {
        (None, false)
    };
    check(models, fallbacks)?;
    if edits.is_empty() {
        return Ok(None);
    }
    let injected = InjectedModels {
        models: models_set,
        fallbacks: fallbacks_set,
    };
    Ok(Some((json.edited(&edits), injected)))
}

/// OpenRouter's documented limits on the final `models` and `/messages` `fallbacks`.
fn check(models: Option<&str>, fallbacks: Option<&str>) -> Result<(), Error> {
    if let Some(models) = models {
        let list: Vec<&RawValue> = serde_json::from_str(models)
            .map_err(|_| invalid_routing("`models` must be an array of model ids"))?;
        if list.len() > MAX_SERVER_MODELS {
            return Err(invalid_routing(format!(
                "`models` has {} entries; OpenRouter accepts at most {MAX_SERVER_MODELS}",
                list.len()
            )));
        }
        if !list.iter().all(|m| m.get().starts_with('"')) {
            return Err(invalid_routing(
                "`models` must be an array of model id strings",
            ));
        }
    }
    if let Some(fallbacks) = fallbacks {
        let list: Vec<&RawValue> = serde_json::from_str(fallbacks).map_err(|_| {
            invalid_routing("`fallbacks` must be an array of {\"model\": \"<id>\"} objects")
        })?;
        if list.len() > MAX_SERVER_MODELS {
            return Err(invalid_routing(format!(
                "`fallbacks` has {} entries; OpenRouter accepts at most {MAX_SERVER_MODELS}",
                list.len()
            )));
        }
        for (i, entry) in list.iter().enumerate() {
            let only_model =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(entry.get())
                    .is_ok_and(|e| e.len() == 1 && e.get("model").is_some_and(|m| m.is_string()));
            if !only_model {
                return Err(invalid_routing(format!(
                    "`fallbacks` entry {i} must be {{\"model\": \"<id>\"}} with no other field"
                )));
            }
        }
        if models.is_some() {
            return Err(invalid_routing(
                "`fallbacks` cannot be used together with `models`",
            ));
        }
    }
    Ok(())
}

pin_project! {
    /// The response future of [`NativeRouting`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: InnerOrError<F>,
    }
}

impl<F> ResponseFuture<F> {
    fn failed(error: Error) -> Self {
        ResponseFuture {
            state: InnerOrError::error(error),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().state.poll(cx)
    }
}
