//! Retries of the same model that never amplify an outage.
//!
//! [`RetryLayer`] retries an attempt on the same model when [`RetryPolicy`] says the error
//! may be retried (by default only errors whose [`Action`](crate::Action) is `Retry`:
//! provider errors, upstream timeouts, transport failures), and only:
//!
//! * up to the maximum retries per model (default 2; per model via
//!   [`Attempt::max_retries`](crate::Attempt::max_retries));
//! * after an exponential backoff with full jitter, `rand(0..=min(cap, base * 2^n))` for
//!   retry `n` (0-based); the random source is injectable
//!   ([`RetryPolicy::rng`], any [`tower::util::rng::Rng`]);
//! * after a `Retry-After` hint ([`Error::retry_after`](crate::Error::retry_after), parsed
//!   by the classifier from seconds or an HTTP date) plus a jitter of up to 10% of the hint,
//!   at most 500 ms ([`RETRY_AFTER_JITTER_MAX`]). A hint longer than
//!   [`retry_after_cap`](RetryPolicy::retry_after_cap) (default 60 s) or than the time left
//!   is not waited for: the error comes back at once so a fallback can move on;
//! * never past the [`Deadline`](crate::Deadline): a wait that does not fit in the time
//!   left returns the error at once. A wait cut this way (a backoff, or a hint within the
//!   cap) is noted in the call's
//!   [`AttemptLog`](crate::AttemptLog), so the fallback layer ends the call with
//!   `DeadlineExceeded` (every attempt listed) rather than `Exhausted` once no other model
//!   can be tried; on its own the layer returns the error as it came;
//! * within a retry budget (tower's [`TpsBudget`](tower::retry::budget::TpsBudget),
//!   default 20% of requests plus 10 retries a second over 10 s) shared by every clone of
//!   the service, so retries cannot multiply load.
//!
//! Before every retry the inner service is polled ready again; the request is replayed
//! byte for byte from a copy of the buffered request (the body is shared by reference
//! count, not copied) and its [`Attempt::retry`](crate::Attempt::retry) bumped so inner layers see
//! the retry number. Each retried attempt is pushed into the request's
//! [`AttemptLog`](crate::AttemptLog). Nothing runs in the background: once the caller drops
//! the future, nothing more is sent.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_openrouter::retry::{RetryLayer, RetryPolicy};
//! use tower_openrouter::{Error, ErrorKind};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An upstream that fails twice with a 500, then answers.
//! let calls = Arc::new(AtomicUsize::new(0));
//! let c = calls.clone();
//! let upstream = service_fn(move |_req: http::Request<Full<Bytes>>| {
//!     let n = c.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if n < 2 {
//!             Err(Error::new(ErrorKind::ProviderError))
//!         } else {
//!             Ok(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
//!         }
//!     }
//! });
//! let policy = RetryPolicy::new()
//!     .max_retries(2)
//!     .backoff_base(Duration::from_millis(200))
//!     .backoff_cap(Duration::from_secs(5));
//! let svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(policy)?)
//!     .service(upstream);
//!
//! let req = http::Request::new(Full::new(Bytes::from_static(b"{\"model\":\"a/b\"}")));
//! svc.oneshot(req).await?;
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//!
//! // A backoff cap longer than the deadline cannot hold.
//! let bad = RetryPolicy::new().backoff_cap(Duration::from_secs(120));
//! let err = bad.validate(Some(Duration::from_secs(60))).unwrap_err();
//! assert_eq!(err.field(), "backoff_cap");
//! # Ok(())
//! # }
//! ```

mod future;
mod layer;
mod policy;

pub use future::ResponseFuture;
pub use layer::{Retry, RetryLayer};
pub use policy::{RetryPolicy, RETRY_AFTER_JITTER_MAX};
