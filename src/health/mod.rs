//! Model health: per-model outcome tracking, circuit breaking, and fast rejection of a
//! model that is cooling down.
//!
//! * [`HealthTracker`] (cheap to clone, shared by every request and task) keeps, per model,
//!   a rolling window of outcomes and a circuit breaker ([`BreakerState`]).
//! * [`HealthLayer`] records each attempt's outcome against its model (the request's
//!   [`Attempt`](crate::Attempt) extension) and rejects an attempt of a model that is
//!   cooling down at once with [`ErrorKind::ModelCoolingDown`](crate::ErrorKind), action
//!   [`Fallback`](crate::Action::Fallback), without an upstream call.
//!
//! # The rules (defaults in [`HealthConfig`])
//!
//! * Only errors that [count for health](crate::Error::counts_for_health) count: the
//!   caller's own mistakes (400 invalid request, 401, 402, moderation, context length)
//!   and our own decisions never trip a breaker.
//! * While the window is **too thin to judge a ratio** (fewer than
//!   [`min_calls`](HealthConfig::min_calls), 20, counted calls over the last 30 s: a model
//!   seen for the first time, one back from a cooldown, or one with little traffic), a
//!   model **trips** on 5 counted failures in a row, as Envoy's `consecutive_5xx` and
//!   Polly's consecutive-failure breaker do. The price of so short a run: a model failing
//!   30% of the time at random trips by chance in about 3% of its fresh windows (a start,
//!   a return from a cooldown), then cools down like any tripped model. Raising the run
//!   for each success in the window would cut that to 0.4%, but a model that was healthy
//!   and then broke at low traffic would take up to 20 failures to bench, so it is not
//!   done; set a longer [`consecutive_failures`](HealthConfig::consecutive_failures) for a
//!   flaky primary.
//! * Once the window holds enough calls, its **ratio** decides: a model trips when at
//!   least 50% of its calls in the window failed (or, when set, when its success rate falls
//!   below [`skip_below_success_rate`](HealthConfig::skip_below_success_rate)). A run of
//!   failures still trips it, but only a run its own failure rate would produce by chance
//!   less than once in a billion calls (at least 5: 18 in a row for a model failing 30% of
//!   the time, 5 for one that was healthy), so a model that breaks all at once is benched
//!   at once, and one that fails now and then is not.
//! * So a primary failing 30% of the time at random stays in service (each failed request
//!   retries or falls back on its own) however busy it is, and a primary that fails every
//!   call is benched after 5 failures.
//! * A tripped model **cools down** for 15 s times the number of trips in a row, capped
//!   at 300 s, shortened by up to 10% of jitter (randomly seeded; fix the seed with
//!   [`jitter_seed`](HealthConfig::jitter_seed) for reproducible cooldowns). Trips in a row
//!   start again at 1 when a model trips after having been back in service for a whole
//!   window.
//! * A `Retry-After` hint (a 429's) **holds back the request that got it**, not the model
//!   for everyone: the fallback layer moves on and may wait the hint out before calling the
//!   model again. The hint cools the model only when the failure trips it (then for at
//!   least the hint, up to [`max_retry_after`](HealthConfig::max_retry_after)), or while it
//!   is cooling already (a longer hint extends the cooldown; a shorter one never shortens
//!   it).
//! * After the cooldown, exactly **one** request **probes** the model (half-open); the
//!   others are rejected while it is in flight. Its success closes the breaker and starts
//!   a fresh window; a counted failure opens it again, for longer; an error that does not
//!   count, or a cancelled probe, gives the slot back to the next request.
//! * **Panic mode.** When a request finds *every* model of its chain cooling down before
//!   it has made any upstream call, the fallback layer probes the model whose cooldown ends
//!   first, ahead of time, and exactly one such probe goes upstream per model however many
//!   callers arrive at once: the first caller leads (its attempt takes the probe slot even
//!   before the cooldown is over, is one call without same-model retries, and its outcome
//!   closes or reopens the breaker like any probe's), the others wait for its outcome
//!   within their own deadline. On success each of them makes its own call of that model;
//!   on a counted failure they fail at once with the soonest cooldown end still in the
//!   future as [`retry_after`](crate::Error::retry_after); when the probe gives no verdict
//!   (cancelled, or an error that does not count) the next of them leads. A caller whose
//!   deadline comes first gets `DeadlineExceeded`. So no request fails with neither an
//!   upstream attempt nor a `retry_after`, and 100 callers in panic cost one call, not 100.
//!   A caller that was told a `Retry-After` and waited it out is not in panic: it makes its
//!   own call. Panic mode is per replica (each replica sharing a store probes on its own
//!   in panic; a success reaches the others as any probe's does).
//!
//! # The layer
//!
//! * A request without an [`Attempt`](crate::Attempt) passes through untouched: nothing is
//!   checked or recorded.
//! * With [`ForceAttempt`](crate::ForceAttempt) in the request extensions a cooling model
//!   is tried anyway, without the probe slot (the fallback layer does this for panic mode's
//!   waiting callers once the probe answered, and after a waited-out `Retry-After`). Panic
//!   mode's probe itself carries a crate-private marker that takes the probe slot.
//! * A response (`Ok`) records a success. For a stream that is the first token; the layer
//!   inserts a [`StreamErrorHook`](crate::StreamErrorHook) into the request extensions,
//!   which the classify layer's response body calls when the stream dies later. Such a
//!   failure takes the success back: it becomes one counted failure (see
//!   [`HealthTracker::record_stream_error`]).
//! * An attempt whose future is dropped (cancelled, timed out by an outer layer) records
//!   nothing, and gives back the probe slot if it held it.
//!
//! # Sharing across a fleet
//!
//! [`HealthTracker::with_store`] shares trips, recoveries and the probe slot with other
//! replicas through a [`HealthStore`] (see [`store`'s docs](HealthStore) for what is and
//! is not shared); with the `redis` feature, `RedisHealthStore` is one on Redis. The
//! rolling window stays per replica. Checking a model never waits for the store.
//!
//! # Where things live
//!
//! The tracker is the map, the breaker is the state machine beside it (linkerd2-proxy's
//! failure accrual has the same shape):
//!
//! * `tracker.rs`, [`HealthTracker`]: the per-model map and the facade. It finds a model's
//!   state (creating it on first use, up to [`max_models`](HealthConfig::max_models)),
//!   hands each outcome to the model's window and breaker, and does what a transition
//!   entails beyond the breaker: a fresh window when a probe closes it, the store told
//!   about trips and recoveries, the transition's event. The health layer and the
//!   adaptive limit use its `pub(crate)` methods on a model's state; nothing reaches into
//!   it.
//! * `breaker.rs`: one model's breaker. Its state, cooldown end, run of failures and
//!   trips in a row, and every transition: admission ([`Admission`]), a success, a counted
//!   failure, the trip rules above, the probe slot given back, the facts another replica
//!   shares. It reads the settings and the tracker's clock and jitter, and reports what
//!   changed (a probe admitted, a breaker opened with its [`TripReason`], or closed).
//! * `window.rs`: the rolling window of outcomes. `config.rs`: [`HealthConfig`].
//!   `layer.rs`: [`HealthLayer`]. `events.rs`: the transitions as events and metrics
//!   (through [`observe`](crate::observe), as plain names and numbers).
//! * `store.rs`: the shared-store seam ([`HealthStore`]); `redis/`: a store on Redis.
//!   [`adaptive`]: the opt-in concurrency limit. `panic.rs`: panic mode's gate, one per
//!   model (an atomic word and a `Notify`, touched only in panic: checking and recording a
//!   model never read it), the leader's token and the followers' wait.
//!
//! # Performance
//!
//! Checking a model and recording an outcome take no lock: the model map is an
//! `arc_swap` snapshot (copied only when a new model is seen), the window is a ring of
//! atomic counters keyed by time slot, and the breaker's state and cooldown end share one
//! atomic word (nanoseconds since the tracker's `tokio::time` epoch, so paused-time tests
//! are exact).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_openrouter::health::{HealthConfig, HealthLayer, HealthTracker};
//! use tower_openrouter::{Action, Attempt, Error, ErrorKind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let tracker = HealthTracker::new(HealthConfig::default().consecutive_failures(2));
//! let upstream = service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Err::<http::Response<()>, _>(Error::new(ErrorKind::ProviderError))
//! });
//! let svc = HealthLayer::new(tracker.clone()).layer(upstream);
//!
//! let request = || {
//!     let mut req = http::Request::new(Full::new(Bytes::from_static(b"{}")));
//!     req.extensions_mut().insert(Attempt::new("openai/gpt-4o"));
//!     req
//! };
//! for _ in 0..2 {
//!     let err = svc.clone().oneshot(request()).await.unwrap_err();
//!     assert_eq!(err.kind(), ErrorKind::ProviderError);
//! }
//! // Tripped: the next attempt is rejected without an upstream call.
//! let err = svc.clone().oneshot(request()).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::ModelCoolingDown);
//! assert_eq!(err.action(), Action::Fallback);
//! assert!(err.retry_after().unwrap() <= Duration::from_secs(15));
//! assert!(!tracker.is_available("openai/gpt-4o"));
//! # }
//! ```

pub mod adaptive;
mod breaker;
mod config;
mod events;
mod layer;
mod panic;
#[cfg(feature = "redis")]
mod redis;
mod store;
mod tracker;
mod window;

#[cfg(feature = "redis")]
pub use self::redis::{RedisHealthStore, RedisStoreConfig};
pub use adaptive::AdaptiveConfig;
pub(crate) use breaker::Jitter;
pub use breaker::{Admission, BreakerState, TripReason};
pub use config::HealthConfig;
pub use layer::{Health, HealthLayer, ResponseFuture};
pub(crate) use panic::{PanicLead, PanicTurn, ProbeEnd, ProbeWait};
pub(crate) use store::redact_url;
pub use store::{HealthSink, HealthStore, SharedEvent, StoreStatus};
pub use tracker::{HealthTracker, ModelHealth};
