//! What a client must be for [`OpenRouterLayer`](crate::OpenRouterLayer) to wrap it: the
//! bounds, written once.
//!
//! The stack wraps any HTTP client `S` with
//!
//! * `S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone`: the
//!   request body is buffered once and every attempt sends a cheap clone of it; the service
//!   is cloned per attempt (clone-and-swap, as tower does);
//! * `S::Error: Into<BoxError>`: transport errors become [`ErrorKind::Transport`](crate::ErrorKind::Transport);
//! * `B: http_body::Body<Data = Bytes> + Unpin`, `B::Error: Into<BoxError>`: the response
//!   body is read (errors, the first SSE event) and then passed through.
//!
//! How to meet them: a client that is not `Clone` goes behind `tower::buffer::Buffer`
//! (`ServiceBuilder::new().buffer(64)`); a body that is not `Unpin` becomes one with
//! `http_body_util::BodyExt::boxed_unsync` (`tower::ServiceBuilder::map_response`).
//! hyper-util's `Client`, [`ReqwestService`](https://docs.rs/tower-openrouter/latest/tower_openrouter/reqwest/)
//! and the stand-in meet them as they are.
//!
//! When a bound is missing, the error at `.oneshot(..)` is a long `E0599` that never
//! names it. [`assert_client`] names it:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::service_fn;
//!
//! let client = service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
//! });
//! tower_openrouter::assert_client(&client); // compiles: every bound holds
//! ```
//!
//! A client that is not `Clone` (here a `tower::util::BoxService`) does not compile, and
//! the error says ``a `Clone` client`` and how to get one:
//!
//! ```compile_fail
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, util::BoxService};
//!
//! let client = BoxService::new(service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
//! }));
//! tower_openrouter::assert_client(&client);
//! ```

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::Service;

use crate::error::BoxError;

/// An HTTP client [`OpenRouterLayer`](crate::OpenRouterLayer) can wrap; implemented for
/// every type that meets the bounds of the [module docs](self), never by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a client OpenRouterLayer can wrap",
    label = "needs `Service<Request<Full<Bytes>>, Response = Response<B>> + Clone`, an error that is `Into<BoxError>`, and `B: Body<Data = Bytes> + Unpin`",
    note = "a `Clone` client: put a non-Clone service behind `tower::buffer::Buffer`; an `Unpin` body: `http_body_util::BodyExt::boxed_unsync` in a `map_response`"
)]
pub trait Client: Service<Request<Full<Bytes>>> + Clone + sealed::Sealed {}

impl<S, B> Client for S
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
}

mod sealed {
    pub trait Sealed {}
    impl<S> Sealed for S {}
}

/// Does nothing at run time; fails to compile, naming the missing bound, when `client`
/// cannot be wrapped by [`OpenRouterLayer`](crate::OpenRouterLayer). See the
/// [module docs](self).
pub fn assert_client<S: Client>(client: &S) {
    let _ = client;
}
