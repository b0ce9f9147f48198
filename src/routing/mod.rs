//! Native OpenRouter routing: let OpenRouter itself fail over between models and
//! providers, by putting its routing parameters into the request body.
//!
//! [`NativeRoutingLayer`] injects, from a [`RoutingConfig`] (or a per-request
//! [`RoutingOverride`] in the request extensions):
//!
//! * `models`: OpenRouter's server-side fallback list (at most 3);
//! * `provider`: [`ProviderPreferences`] (order, allowed and ignored providers, price
//!   ceilings, data policy, sorting, preferred throughput and latency);
//! * `route` (`"fallback"`, the older spelling);
//! * on `/api/v1/messages`, `fallbacks: [{"model": ..}]` (at most 3, never with `models`).
//!
//! Fields the caller set are kept unless the config says to replace them. OpenRouter's
//! limits are checked on the final body before any upstream call
//! ([`ErrorKind::InvalidRouting`](crate::ErrorKind::InvalidRouting)); only the injected
//! members change, every other byte of the body is kept.
//!
//! This module is the one writer of `models` and `fallbacks`: a client-side chain whose
//! attempts each hand OpenRouter a window of models (the fallback layer's
//! [`server_side_window`](crate::fallback::FallbackLayer::server_side_window)) has its
//! window written here too, under the same limit, [`MAX_SERVER_MODELS`].
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_openrouter::routing::{NativeRoutingLayer, ProviderPreferences, RoutingConfig, SortBy};
//! use tower_openrouter::{Error, ErrorKind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = RoutingConfig::builder()
//!     .models(["anthropic/claude-sonnet-4.5", "openai/gpt-4o"])
//!     .provider(ProviderPreferences::new().sort(SortBy::Price).allow_fallbacks(true))
//!     .build()?;
//! let upstream = service_fn(|req: http::Request<Full<Bytes>>| async move {
//!     Ok::<_, Error>(http::Response::new(req.into_body()))
//! });
//! let svc = NativeRoutingLayer::new(config).layer(upstream);
//!
//! let body = r#"{"model": "anthropic/claude-sonnet-4.5", "messages": []}"#;
//! let req = http::Request::post("http://127.0.0.1/api/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(body.as_bytes())))?;
//! let sent = svc.clone().oneshot(req).await?.into_body().collect().await?.to_bytes();
//! assert_eq!(
//!     sent,
//!     r#"{"model": "anthropic/claude-sonnet-4.5", "messages": [], "models": ["anthropic/claude-sonnet-4.5","openai/gpt-4o"], "provider": {"allow_fallbacks":true,"sort":"price"}}"#
//! );
//!
//! // The caller's own `models` is kept, and checked: 4 is over OpenRouter's limit.
//! let body = r#"{"model":"a/1","models":["a/1","a/2","a/3","a/4"]}"#;
//! let req = http::Request::post("http://127.0.0.1/api/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(body.as_bytes())))?;
//! let err = svc.oneshot(req).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::InvalidRouting);
//! # Ok(())
//! # }
//! ```

mod config;
mod layer;
mod lists;
mod provider;

pub use config::{RoutingConfig, RoutingConfigBuilder, RoutingOverride};
pub use layer::{NativeRouting, NativeRoutingLayer, ResponseFuture};
pub use lists::MAX_SERVER_MODELS;
pub(crate) use lists::{retain_injected, window_body};
pub use provider::{
    DataCollection, MaxPrice, Percentiles, Performance, ProviderPreferences, ProviderSort, SortBy,
    SortPartition,
};
