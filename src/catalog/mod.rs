//! OpenRouter's model catalog, and what a request needs from a model.
//!
//! A fallback chain is only as good as its worst model: an agent request with `tools`
//! falling through to a model without tool calling, an image sent to a text-only model, a
//! 150k-token prompt handed to a 128k model, or a fallback that costs thirty times the
//! primary. OpenRouter publishes everything needed to avoid that at `GET /api/v1/models`;
//! this module reads it and answers "can this model serve this request?" before a call is
//! spent:
//!
//! * [`ModelCatalog`]: the parsed catalog, from a JSON snapshot (file or string) or from
//!   the upstream through your own client service, refreshed in the background
//!   ([`ModelCatalog::spawn_refresh`], or the stack's
//!   [`OpenRouterLayer::spawn_catalog_refresh`](crate::stack::OpenRouterLayer::spawn_catalog_refresh)
//!   with the settings file's `catalog` key; default every hour), read lock-free. A failed or
//!   malformed refresh keeps the last good catalog and logs a `WARN`. A model missing
//!   from the catalog is treated as capable unless [strict](ModelCatalog::strict).
//! * [`Requirements`]: what the request needs, read from the buffered body's top-level
//!   index ([`JsonBody`]) without a `Value` round trip: `tools` /
//!   `tool_choice`, a `json_schema` response format, image / audio / file content parts,
//!   `reasoning`, an estimate of the prompt's tokens, and `max_tokens`.
//! * [`MaxPrice`]: a ceiling on the estimated cost of one attempt and/or on per-token
//!   prices, per layer, per chain, or per request (extension or header).
//! * [`CatalogPolicy`]: the three together, for the [`FallbackLayer`](crate::FallbackLayer)
//!   ([`FallbackLayer::catalog`](crate::FallbackLayer::catalog)): an incapable, too dear or
//!   retired model is skipped without an upstream call and recorded in the attempts as
//!   [`crate::ErrorKind::Incapable`] with the reason
//!   (`"no tools"`, `"context 128000 < estimated 151000"`, `"price $0.0312 > ceiling
//!   $0.0100"`), so [`ServedBy`](crate::ServedBy) and `Exhausted` show it. Server-side
//!   windows (hybrid mode) are built from capable models only, and the `models` (and
//!   `/messages` `fallbacks`) list of
//!   [`NativeRoutingLayer::catalog`](crate::NativeRoutingLayer::catalog) drops incapable
//!   ones and, in the fallback layer, those over the chain's or the request's price
//!   ceiling, so OpenRouter is never handed a model that cannot serve the request. When
//!   no model of the chain can serve, the call fails with
//!   [`crate::ErrorKind::NoCapableModel`] (action `Fatal`),
//!   listing each model and its reason, with zero upstream calls.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_openrouter::catalog::{CatalogPolicy, ModelCatalog};
//! use tower_openrouter::{Attempt, Error, ErrorKind, FallbackLayer, ServedBy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let catalog = ModelCatalog::from_json(r#"{"data":[
//!   {"id":"small/model","context_length":8192,"supported_parameters":["max_tokens"]},
//!   {"id":"big/model","context_length":200000,"supported_parameters":["tools","max_tokens"]}]}"#)?;
//! let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
//!     let model = req.extensions().get::<Attempt>().unwrap().model.clone();
//!     Ok::<_, Error>(Response::new(Full::new(Bytes::from(format!("{{\"model\":\"{model}\"}}")))))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(["small/model", "big/model"]).catalog(CatalogPolicy::new(catalog)))
//!     .service(upstream);
//! let req = Request::post("http://localhost/api/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"small/model","tools":[{"type":"function","function":{"name":"f"}}],"messages":[]}"#)))
//!     .unwrap();
//! let resp = svc.oneshot(req).await?;
//! let served = resp.extensions().get::<ServedBy>().unwrap();
//! assert_eq!(&*served.requested, "big/model");
//! assert_eq!(served.attempts[0].kind(), ErrorKind::Incapable);
//! assert_eq!(served.attempts[0].error.detail(), Some("no tools"));
//! # Ok(()) }
//! ```

mod fit;
mod model;
mod needs;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderName;
use http::Request;
use http_body_util::Full;

pub use fit::{check, MaxPrice, Unfit};
pub use model::{Modalities, ModelInfo, Pricing};
pub use needs::{Requirements, MEDIA_PART_TOKENS};
pub use store::{ModelCatalog, RefreshHandle, DEFAULT_REFRESH, OPENROUTER_MODELS_URL};

pub(crate) use store::CallFilter;

use crate::error::{AttemptRecord, Error, ErrorKind};
use crate::JsonBody;

/// The catalog and the price ceilings a [`FallbackLayer`](crate::FallbackLayer) applies.
///
/// The ceiling of a call is the tightest of: [`max_price`](Self::max_price) (every
/// chain), the chain's own ([`chain_max_price`](Self::chain_max_price)), a [`MaxPrice`]
/// request extension, and the [`max_price_header`](Self::max_price_header) (removed
/// before the request goes upstream; a value that is not a price fails the call with
/// [`ErrorKind::InvalidRequest`] and no upstream call). A request can only lower the
/// configured ceiling, never raise it.
///
/// ```
/// use tower_openrouter::catalog::{CatalogPolicy, MaxPrice, ModelCatalog};
///
/// let policy = CatalogPolicy::new(ModelCatalog::new())
///     .max_price(MaxPrice::per_request(0.50))
///     .chain_max_price("budget", MaxPrice::per_request(0.01).completion_per_million(2.0))
///     .max_price_header(http::HeaderName::from_static("x-openrouter-max-price"));
/// assert!(policy.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct CatalogPolicy {
    catalog: ModelCatalog,
    max_price: MaxPrice,
    chain_max_price: HashMap<Arc<str>, MaxPrice>,
    header: Option<HeaderName>,
}

impl CatalogPolicy {
    /// A policy over `catalog`, with no price ceiling.
    pub fn new(catalog: ModelCatalog) -> Self {
        CatalogPolicy {
            catalog,
            max_price: MaxPrice::default(),
            chain_max_price: HashMap::new(),
            header: None,
        }
    }

    /// The ceiling for every chain.
    pub fn max_price(mut self, ceiling: MaxPrice) -> Self {
        self.max_price = ceiling;
        self
    }

    /// A ceiling for the chain named `chain` (tightened by [`max_price`](Self::max_price)
    /// when both are set). The default chain has no name: use `max_price` for it.
    pub fn chain_max_price(mut self, chain: &str, ceiling: MaxPrice) -> Self {
        self.chain_max_price.insert(chain.into(), ceiling);
        self
    }

    /// A request header that carries the request's own ceiling ([`MaxPrice`]'s `FromStr`
    /// syntax: `0.01`, or `request=0.01,completion=15`).
    pub fn max_price_header(mut self, header: HeaderName) -> Self {
        self.header = Some(header);
        self
    }

    /// The catalog.
    pub fn catalog(&self) -> &ModelCatalog {
        &self.catalog
    }

    /// Checks every ceiling holds numbers >= 0.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        self.max_price.validate()?;
        for (name, c) in &self.chain_max_price {
            c.validate().map_err(|e| {
                crate::error::ConfigError::new(
                    e.field().to_owned(),
                    format!("chain {name:?}: {}", e.message()),
                )
            })?;
        }
        Ok(())
    }

    /// The filter of a request outside the chain selection (the server-side lists the
    /// native routing layer injects): the layer-wide ceiling and the request's (the
    /// header is read, not removed; a bad one is reported by the fallback layer).
    pub(crate) fn request_filter(&self, req: &Request<Full<Bytes>>) -> CallFilter {
        let mut ceiling = self.max_price;
        if let Some(c) = req.extensions().get::<MaxPrice>() {
            ceiling = ceiling.tightest(*c);
        }
        let header = self.header.as_ref().and_then(|h| req.headers().get(h));
        if let Some(c) = header.and_then(|v| v.to_str().ok()?.parse::<MaxPrice>().ok()) {
            ceiling = ceiling.tightest(c);
        }
        self.catalog.filter(needs_of(req), ceiling)
    }

    /// The filter of one call: the request's needs and ceiling, over one catalog snapshot.
    /// Removes the ceiling header from the request.
    pub(crate) fn prepare(
        &self,
        req: &mut Request<Full<Bytes>>,
        chain: Option<&str>,
    ) -> Result<CallFilter, Error> {
        let mut ceiling = self.max_price;
        if let Some(c) = chain.and_then(|c| self.chain_max_price.get(c)) {
            ceiling = ceiling.tightest(*c);
        }
        if let Some(c) = req.extensions().get::<MaxPrice>() {
            ceiling = ceiling.tightest(*c);
        }
        if let Some(value) = self
            .header
            .as_ref()
            .and_then(|h| req.headers_mut().remove(h))
        {
            let parsed = value
                .to_str()
                .map_err(|_| "not visible ASCII".to_owned())
                .and_then(str::parse::<MaxPrice>);
            match parsed {
                Ok(c) => ceiling = ceiling.tightest(c),
                Err(why) => {
                    return Err(Error::new(ErrorKind::InvalidRequest)
                        .with_detail(format!("the max-price header: {why}")))
                }
            }
        }
        Ok(self.catalog.filter(needs_of(req), ceiling))
    }
}

/// What a request's body needs, scanned once per body: the native routing layer and the
/// fallback layer both filter by it, and the routing layer's edits (`models`,
/// `provider`, `route`, `fallbacks`) change nothing it reads, so it passes its scan on
/// (see [`ScannedNeeds::keep_for`]). Keyed to the body's buffer: a body replaced by any
/// other layer is scanned again.
#[derive(Clone, Debug)]
pub(crate) struct ScannedNeeds {
    /// The body scanned (a reference to its buffer, which it keeps alive: an equal
    /// address and length is the same bytes).
    body: Bytes,
    needs: Requirements,
}

impl ScannedNeeds {
    /// Records `needs` as those of the request's current body.
    pub(crate) fn keep_for(req: &mut Request<Full<Bytes>>, needs: Requirements) {
        let body = crate::body::full_bytes(req.body());
        req.extensions_mut().insert(ScannedNeeds { body, needs });
    }
}

/// The request's needs: the recorded scan of this very body, else a scan. A body that
/// is not a JSON object (not a generation request) needs nothing.
fn needs_of(req: &Request<Full<Bytes>>) -> Requirements {
    let bytes = crate::body::full_bytes(req.body());
    if let Some(s) = req.extensions().get::<ScannedNeeds>() {
        if s.body.as_ptr() == bytes.as_ptr() && s.body.len() == bytes.len() {
            return s.needs;
        }
    }
    JsonBody::from_request(req)
        .map(|json| Requirements::scan(&json))
        .unwrap_or_default()
}

/// The skipped attempt for a model the catalog rules out.
pub(crate) fn skipped(model: &Arc<str>, index: usize, why: &Unfit) -> AttemptRecord {
    tracing::debug!(model = &**model, reason = %why, "model cannot serve this request; skipped");
    AttemptRecord {
        model: model.clone(),
        index,
        retry: 0,
        elapsed: std::time::Duration::ZERO,
        error: Error::new(ErrorKind::Incapable)
            .with_model(model.clone())
            .with_detail(why.to_string()),
    }
}

/// `NoCapableModel` when every attempt of a call was an [`ErrorKind::Incapable`] skip.
pub(crate) fn no_capable_model(attempts: &[AttemptRecord]) -> Option<Error> {
    if attempts.is_empty() || attempts.iter().any(|a| a.kind() != ErrorKind::Incapable) {
        return None;
    }
    let list: Vec<String> = attempts
        .iter()
        .map(|a| format!("{}: {}", a.model, a.error.detail().unwrap_or("incapable")))
        .collect();
    Some(
        Error::new(ErrorKind::NoCapableModel)
            .with_detail(list.join("; "))
            .with_attempts(attempts.to_vec()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &'static [u8]) -> Request<Full<Bytes>> {
        Request::post("/api/v1/chat/completions")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    }

    #[test]
    fn a_recorded_scan_serves_that_very_body_only() {
        const BODY: &[u8] = br#"{"model":"a/b","messages":[{"role":"user","content":"hi"}]}"#;
        let mut req = request(BODY);
        let scanned = needs_of(&req);
        assert!(!scanned.tools);
        assert_eq!(
            scanned.prompt_tokens,
            Requirements::scan(&JsonBody::parse(Bytes::from_static(BODY)).unwrap()).prompt_tokens
        );
        // A recorded scan (here a made-up one) is what the same buffer needs.
        let recorded = Requirements {
            tools: true,
            ..scanned
        };
        ScannedNeeds::keep_for(&mut req, recorded);
        assert_eq!(needs_of(&req), recorded);
        // The same bytes in another buffer are scanned again.
        *req.body_mut() = Full::new(Bytes::copy_from_slice(BODY));
        assert_eq!(needs_of(&req), scanned);
    }
}
