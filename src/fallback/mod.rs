//! Model fallback: try a chain of models in order until one answers.
//!
//! [`FallbackLayer`] walks a [`Chain`] of models for each request. For each model it
//! rewrites only the `model` value of the JSON body (every other byte stays as the caller
//! wrote it), sets the [`Attempt`](crate::Attempt) extension (model, chain position,
//! per-model timeout, retries and label) and calls the inner stack (retry, health,
//! attempt timeout, classify, your client):
//!
//! * an error whose [`Action`](crate::Action) is `Fallback`, or `Retry` (the retry layer
//!   below gave up), moves on to the next model; `Fatal` returns at once;
//! * a model the health tracker reports cooling down is skipped without an upstream call
//!   (a `ModelCoolingDown` attempt is recorded);
//! * **panic mode**: when every model is cooling down and the request has made no upstream
//!   call yet, one probe goes to the model whose cooldown ends first, however many
//!   requests are in that spot at once (see [`health`'s rules](crate::health)). The first
//!   leads: its attempt takes the model's probe slot, with no same-model retries. The
//!   others wait for its outcome within their deadline: on success each makes its own
//!   call of that model ([`ForceAttempt`](crate::ForceAttempt)); on a failure that counts
//!   for health they end at once with `Exhausted` and the soonest cooldown end still in the
//!   future as [`retry_after`](crate::Error::retry_after); with no verdict (the probe was
//!   cancelled, or failed with an error that does not count) the next one leads; at their
//!   deadline, `DeadlineExceeded`. So a request never fails with neither an upstream
//!   attempt nor a `retry_after`;
//! * a model at its adaptive concurrency limit
//!   ([`HealthConfig::adaptive`](crate::health::HealthConfig::adaptive)) is skipped the
//!   same way (a `ModelAtCapacity` attempt is recorded); when the chain is used up and
//!   such a model was skipped, the request waits for the first slot one of them frees
//!   (within the deadline) and tries that model, before any forced probe;
//! * **hedging** (opt-in, per chain: [`FallbackLayer::hedge`],
//!   [`FallbackLayer::chain_hedge`], a [`HedgePolicy`]): when an attempt has produced no
//!   content after the policy's delay (fixed, or its model's recent percentile time to
//!   first token), the next model of the chain (found as a fallback finds it) is tried
//!   beside it; the first to produce content wins, the other is dropped (cancelled: its
//!   connection closes, its model's health records nothing, its concurrency slot is
//!   freed). At most one hedge per call, within the chain's hedge budget of extra calls;
//!   [`ServedBy::hedge`] says what happened. A dropped stream is still billed on some
//!   providers: see [`hedge`] for that, and for which requests are hedged;
//! * once the [`Deadline`](crate::Deadline) has passed the call ends with
//!   `DeadlineExceeded`;
//! * when every model failed and one was rate limited with a `Retry-After` no longer than
//!   [`max_rate_limit_wait`](FallbackLayer::max_rate_limit_wait), the layer waits for it
//!   (jittered in `[hint, 1.5 x hint]`, before the deadline) and makes one more attempt of
//!   that model of its own (see [`FallbackLayer::wait_for_rate_limit`]); when the hint ends
//!   past the deadline, or a same-model retry was due but its backoff did not fit in the
//!   time left (the retry layer says so in the call's log), the call ends with
//!   `DeadlineExceeded`, otherwise with `Exhausted`.
//!   Both carry the last upstream status ([`Error::status`](crate::Error::status)) and the
//!   soonest hint still in the future ([`Error::retry_after`](crate::Error::retry_after)).
//!
//! `Exhausted` and `DeadlineExceeded` list every attempt, in order
//! ([`Error::attempts`](crate::Error::attempts)); a successful response carries
//! [`ServedBy`]. Every attempt shares the call's [`AttemptLog`](crate::AttemptLog) (one is
//! inserted when the request has none): the retry layer logs each try it retried, this
//! layer each model's final failure and each skipped model (elapsed zero). The elapsed
//! time of a model's final failure counts from that model's first try, so after retries
//! it includes them and their backoff.
//!
//! **Endpoints.** Only generation endpoints (`POST` `/chat/completions`, `/completions`,
//! `/messages`, `/responses`) walk a chain. Every other request (`GET /models`, `/key`,
//! `/credits`, `/generation`, `POST /embeddings`, ...) is passed on once with its body
//! untouched (a POST's `model` goes into the [`Attempt`](crate::Attempt), so the retry,
//! health and timeout layers below still apply to it); it never moves to another model
//! unless the request names a chain ([`ChainName`] or the chain header) or a chain is
//! configured for its endpoint ([`FallbackLayer::endpoint_chain`]: `embeddings` walks the
//! `embed` chain, which takes the default chain's place; only `model` is rewritten, never
//! a server-side window added).
//!
//! **Allow-list** ([`FallbackLayer::allowed_models`],
//! [`FallbackLayer::allowed_providers`]): for a stack that lends its key, a request that
//! names a model (`model`, `models`, `/messages` `fallbacks`) outside the chains and the
//! list, or a provider (`provider.only`, `provider.order`) outside the provider list, is
//! refused with `ModelNotAllowed` before any upstream call, on every endpoint with a body.
//!
//! **Which chain.** A request picks a named chain with the [`ChainName`] extension or a
//! configurable header; an unknown name fails with `UnknownChain` before any upstream
//! call. Otherwise its `model` decides: a chain of that name (an alias, `"model":
//! "coding"`) or a chain whose first model it is is used; any other model is tried first,
//! followed by the default chain's fallbacks ([`UnlistedModel::TryFirst`]), or refused
//! with `ModelNotAllowed` ([`UnlistedModel::Reject`]), or replaced by the default chain
//! ([`UnlistedModel::UseDefaultChain`]). [`ServedBy::caller_model`] says what the caller
//! asked for, [`ServedBy::model`] what served it.
//!
//! **Hybrid mode** ([`FallbackLayer::server_side_window`]): each attempt also sends the
//! next models server-side, `model: a, models: [a, b, c]`; when it fails the next attempt
//! sends `[d, e, f]` (on `/api/v1/messages`, which takes no `models`, the window's other
//! models go into `fallbacks: [{"model": b}, {"model": c}]`). [`ServedBy::model`] is the
//! model the response body names. Health is recorded against each window's first model
//! (the attempt's model).
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_openrouter::fallback::{FallbackLayer, ServedBy};
//! use tower_openrouter::{Attempt, Error, ErrorKind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! // An upstream where the primary is rate limited.
//! let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
//!     let model = req.extensions().get::<Attempt>().unwrap().model.clone();
//!     if &*model == "anthropic/claude-3.5-sonnet" {
//!         return Err(Error::new(ErrorKind::RateLimited).with_status(StatusCode::TOO_MANY_REQUESTS));
//!     }
//!     Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(["anthropic/claude-3.5-sonnet", "openai/gpt-4o"]))
//!     .service(upstream);
//! let req = Request::post("http://localhost/api/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"anthropic/claude-3.5-sonnet","messages":[]}"#)))
//!     .unwrap();
//! let resp = svc.oneshot(req).await?;
//! let served = resp.extensions().get::<ServedBy>().unwrap();
//! assert_eq!(&*served.model, "openai/gpt-4o");
//! assert!(served.fell_back);
//! assert_eq!(served.attempts[0].kind(), ErrorKind::RateLimited);
//! # Ok(()) }
//! ```

mod allow;
mod capacity;
mod chain;
mod future;
pub mod hedge;
mod layer;
mod race;
mod select;
mod template;

use std::sync::Arc;

pub use chain::{Chain, ChainModel, ChainName, Chains, PROVIDER_PREFIX, TIER_PREFIX};
pub use future::ResponseFuture;
pub use hedge::{HedgePolicy, HedgeRequests, Hedged, HEDGE_SAMPLES};
pub use layer::{Fallback, FallbackLayer, Order, DEFAULT_MAX_RATE_LIMIT_WAIT};
pub use select::UnlistedModel;

use crate::AttemptRecord;

/// Which model served a response, and how: inserted into the response extensions by
/// [`FallbackLayer`].
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct ServedBy {
    /// The model that answered: the response body's `model` when the classify layer
    /// reported it ([`UpstreamInfo`](crate::UpstreamInfo)), else the model requested.
    pub model: Arc<str>,
    /// The model this attempt asked for (the chain entry).
    pub requested: Arc<str>,
    /// The `model` the caller's request named (`None` when its body had no string
    /// `model`): compare with [`ServedBy::model`] to see whether the caller got what it
    /// asked for.
    pub caller_model: Option<Arc<str>>,
    /// Position of the requested model in the chain (0 = primary).
    pub index: usize,
    /// The requested model's label, if it has one.
    pub label: Option<Arc<str>>,
    /// The name of the chain used, when the request named one (`None`: the default).
    pub chain: Option<Arc<str>>,
    /// Every failed or skipped attempt before the answer, in order (empty when the first
    /// try answered).
    pub attempts: Vec<AttemptRecord>,
    /// Whether an earlier model was skipped or failed, a hedge won, or (hybrid mode) a
    /// later model of the server-side window answered.
    pub fell_back: bool,
    /// The call's hedge, when one was sent ([`hedge`]): the two models and which one
    /// answered. The attempt that lost was dropped (it is in `attempts` only if it had
    /// failed before the other answered).
    pub hedge: Option<Hedged>,
}
