//! Tower middleware that makes any HTTP client `Service` calling
//! [OpenRouter](https://openrouter.ai) survive what LLM APIs do every day: 429s,
//! provider outages, slow models, moderation refusals, context-length errors and streams
//! that die halfway.
//!
//! Wrap your client (hyper-util, reqwest through `ReqwestService`, anything that is a
//! `Service<http::Request<Full<Bytes>>>`) in [`OpenRouterLayer`] and every call gets a
//! total deadline, per-attempt timeouts, same-model retries with backoff and
//! `Retry-After`, a retry budget, health-based skipping of failing models, a model
//! fallback chain, streaming failover before the first token, and one typed [`Error`]
//! that says what happened and what to do.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_openrouter::mock::{MockOpenRouter, Reply};
//! use tower_openrouter::{OpenRouterLayer, ServedBy};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A scripted OpenRouter stand-in (feature `mock`); use your HTTP client in production.
//! let openrouter = MockOpenRouter::new();
//! openrouter
//!     .model("anthropic/claude-sonnet-4.5")
//!     .respond(Reply::status(429).retry_after(30));
//!
//! let client = ServiceBuilder::new()
//!     .layer(
//!         OpenRouterLayer::builder()
//!             .chain(["anthropic/claude-sonnet-4.5", "openai/gpt-4o", "google/gemini-2.5-flash"])
//!             .attempt_timeout(Duration::from_secs(60))
//!             .deadline(Duration::from_secs(180))
//!             .build()?,
//!     )
//!     .service(openrouter.clone());
//!
//! let request = http::Request::post("https://openrouter.ai/api/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(r#"{"model":"anthropic/claude-sonnet-4.5","messages":[{"role":"user","content":"hi"}]}"#.to_string())?;
//! let response = client.oneshot(request).await?;
//! let served = response.extensions().get::<ServedBy>().unwrap();
//! assert_eq!(&*served.model, "openai/gpt-4o"); // the primary was rate limited
//! assert!(served.fell_back);
//! assert_eq!(served.attempts[0].kind(), tower_openrouter::ErrorKind::RateLimited);
//! # Ok(()) }
//! ```
//!
//! # The stack
//!
//! Outer to inner; every layer is usable alone with `ServiceBuilder`, and
//! [`OpenRouterLayer`] assembles them in this order with validated settings:
//!
//! | layer | owns |
//! |---|---|
//! | [`BufferRequestLayer`] | buffer the body once (bounded), check it is JSON with a `model` |
//! | [`DeadlineLayer`] | one time budget for the whole call ([`Deadline`]) |
//! | [`NativeRoutingLayer`] (optional) | OpenRouter's server-side `models` / `provider` / `fallbacks` |
//! | [`FallbackLayer`] | walk the model chain, rewrite only `model`, record [`ServedBy`]; (opt-in) [hedge](fallback::hedge) a slow first token |
//! | [`RetryLayer`] | same-model retries: full-jitter backoff, `Retry-After`, retry budget |
//! | [`HealthLayer`] | per-model breaker: rolling window, cooldown, one half-open probe |
//! | [`AttemptTimeoutLayer`] | limit of one attempt; first-token and idle limits of streams |
//! | [`ClassifyLayer`] | turn every upstream outcome into a response or a typed [`Error`] |
//!
//! Layers talk through request extensions ([`Deadline`], [`Attempt`], [`AttemptLog`],
//! [`StreamLimits`], [`StreamErrorHook`], [`ForceAttempt`], [`LaterAttempt`], the parsed
//! body [`JsonBody`]; all declared in [`extensions`]) and response extensions
//! ([`UpstreamInfo`], [`ServedBy`]); shared state (the [`HealthTracker`], the retry budget) is an `Arc`
//! handed to the layers that need it.
//!
//! # Errors
//!
//! [`Error::kind`] says what happened ([`ErrorKind`]), [`Error::action`] what to do
//! ([`Action::Retry`] the same model, [`Action::Fallback`] to the next, or
//! [`Action::Fatal`]); [`Error::body`] is OpenRouter's parsed error body, and
//! [`Error::attempts`] lists every attempt of a call that ran out of models or time. The
//! rules are OpenRouter's status table and error bodies
//! ([`OpenRouterClassifier`]), adjustable without re-implementing [`ClassifyOutcome`]. No
//! `Display`, `Debug` or log line ever contains the API key or the request body.
//!
//! # Streaming
//!
//! A `"stream": true` response is held until its first content event, so an error before
//! the first token is an ordinary error that retry and fallback handle; after it, the body
//! passes through byte for byte, watched: an error chunk, an end without `[DONE]` nor a
//! finish reason, or a silence longer than the idle limit (30 s by default) becomes a
//! typed error frame ([`ErrorKind::StreamInterrupted`], [`ErrorKind::StreamTruncated`],
//! [`ErrorKind::StreamTimeout`]) that counts against the model's health and is never
//! replayed.
//!
//! # Layout
//!
//! One folder per middleware (`layer.rs`, `future.rs`, one small function per future state),
//! on floors: a module imports only from floors below its own.
//!
//! | floor | modules |
//! |---|---|
//! | ground | [`error`] (with OpenRouter's error body and [`ConfigError`]), [`extensions`] (every type that crosses layers), [`observe`] (spans and metrics, fed plain facts), [`client`] (the bounds), a private `service` (accessors, `poll_ready` mapping) |
//! | 1 | [`body`], [`stream`] (the SSE parser) |
//! | 2 | [`classify`] (rules, the layer, its future, the stream watcher) |
//! | 3 | [`timeout`], [`retry`], [`health`], [`catalog`] |
//! | 4 | [`routing`] (the one writer of OpenRouter's `models` / `fallbacks`) |
//! | 5 | [`fallback`] |
//! | 6 | [`stack`] ([`OpenRouterLayer`]) |
//! | 7 | [`config`] (the settings file; it builds the stack, so it sits above it) |
//!
//! Where this differs from the design map the project started from: `config` sits above
//! `stack` (turning a file into the builder is `config`'s job, so `stack` does not import
//! it), `observe` is on the ground floor (every layer reports to it), and the Retry-After
//! parsers live in `error` beside the error body that carries hints too (re-exported from
//! `classify`).
//!
//! # Features
//!
//! * `mock`: `mock::MockOpenRouter`, a scriptable OpenRouter stand-in (in process, or
//!   served on loopback) for your own tests. Off by default.
//! * `reqwest`: `reqwest::ReqwestService`, a `reqwest::Client` as the client the stack
//!   wraps, with a streaming response body. `reqwest-middleware` adds
//!   `reqwest_middleware::ClientWithMiddleware`.
//! * `yaml`: `Config::from_yaml`, the JSON settings file's keys read from YAML.
//! * `metrics`: metrics through the [`metrics`](https://docs.rs/metrics) facade (GenAI
//!   operation duration and token usage, attempts, fallbacks, breaker state; see
//!   [`observe`]). Off by default. Spans and events ([`observe`]) are always on.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod catalog;
pub mod classify;
pub mod client;
pub mod config;
pub mod error;
pub mod extensions;
pub mod fallback;
pub mod health;
#[cfg(feature = "mock")]
pub mod mock;
pub mod observe;
#[cfg(feature = "reqwest")]
pub mod reqwest;
pub mod retry;
pub mod routing;
mod service;
pub mod stack;
pub mod stream;
pub mod timeout;

pub use body::BufferRequestLayer;
pub use classify::{ClassifyLayer, ClassifyOutcome, OpenRouterClassifier};
pub use client::{assert_client, Client};
pub use config::Config;
pub use error::ConfigError;
pub use error::{Action, AttemptRecord, BoxError, Error, ErrorKind};
pub use extensions::{
    Attempt, AttemptLog, Deadline, ForceAttempt, JsonBody, LaterAttempt, StreamErrorHook,
    StreamLimits, UpstreamInfo, Usage,
};
pub use fallback::{Chain, ChainModel, ChainName, Chains, FallbackLayer, ServedBy};
pub use health::{HealthConfig, HealthLayer, HealthTracker};
pub use retry::{RetryLayer, RetryPolicy};
pub use routing::{NativeRoutingLayer, RoutingConfig};
pub use stack::{OpenRouter, OpenRouterLayer};
pub use timeout::{AttemptTimeoutLayer, DeadlineLayer};

// Every Rust snippet of the README is a doc test, so none can stop compiling unnoticed.
// (The snippets use the stand-in, reqwest and redis: the README's test command,
// `cargo test --all-features`, turns them all on.)
#[cfg(all(doctest, feature = "mock", feature = "reqwest", feature = "redis"))]
#[doc = include_str!("../README.md")]
mod readme {}
