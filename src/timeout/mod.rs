//! Time limits that always hold: the total deadline of a call and the limit of one attempt.
//!
//! * [`DeadlineLayer`] gives the whole call one budget (backoff and every attempt
//!   included). It puts a [`Deadline`](crate::Deadline) into the request extensions, which
//!   every inner layer clamps its own waits to; when the budget is gone the call ends with
//!   [`ErrorKind::DeadlineExceeded`](crate::ErrorKind::DeadlineExceeded) and no new attempt
//!   starts.
//! * [`AttemptTimeoutLayer`] limits one attempt (per model via
//!   [`Attempt::timeout`](crate::Attempt::timeout)), always clamped to the deadline, and
//!   carries the stream limits (time to first token, idle gap) that the classify layer
//!   enforces.
//!
//! In the standard stack the deadline sits outside fallback and retry, the attempt timeout
//! inside them (just around classify), so one slow attempt costs one attempt limit and the
//! whole call never outlives the deadline. All time is `tokio::time`.
//!
//! Settings that cannot hold (a zero limit, an attempt timeout longer than the deadline)
//! are a [`ConfigError`](crate::error::ConfigError) when the layer is built.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_openrouter::timeout::{AttemptTimeoutLayer, DeadlineLayer};
//! use tower_openrouter::{Error, ErrorKind};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An upstream that never answers.
//! let upstream = service_fn(|_req: http::Request<String>| async {
//!     std::future::pending::<Result<http::Response<String>, Error>>().await
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(10))?)
//!     .layer(
//!         AttemptTimeoutLayer::builder(Duration::from_secs(4))
//!             .first_token(Duration::from_secs(2))
//!             .deadline(Duration::from_secs(10))
//!             .build()?,
//!     )
//!     .service(upstream);
//!
//! let start = tokio::time::Instant::now();
//! let err = svc.oneshot(http::Request::new(String::new())).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::AttemptTimeout);
//! assert_eq!(start.elapsed(), Duration::from_secs(4));
//!
//! // An attempt limit longer than the deadline cannot hold.
//! let bad = AttemptTimeoutLayer::builder(Duration::from_secs(90))
//!     .deadline(Duration::from_secs(60))
//!     .build()
//!     .unwrap_err();
//! assert_eq!(bad.to_string(), "attempt_timeout (90s) is longer than deadline (60s)");
//! # Ok(())
//! # }
//! ```

mod attempt;
mod deadline;
mod future;

/// Default total budget of a call (the [`DeadlineLayer`] of
/// [`OpenRouterLayer`](crate::OpenRouterLayer)).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// Default limit of one attempt.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default longest gap between two chunks of a stream in
/// [`OpenRouterLayer`](crate::OpenRouterLayer) (at most its deadline). Keep-alive comments
/// (`: OPENROUTER PROCESSING`) are chunks, so a slow but living stream is never cut; one
/// that stalls after its first token ends with a `StreamTimeout` error frame. The
/// [`AttemptTimeoutLayer`] alone has no idle limit unless you set one.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

use std::time::Duration;

pub use attempt::{AttemptTimeout, AttemptTimeoutBuilder, AttemptTimeoutLayer};
pub use deadline::{Deadline, DeadlineLayer};
pub use future::ResponseFuture;
