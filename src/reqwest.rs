//! A [`reqwest::Client`] (or, with feature `reqwest-middleware`, a
//! `reqwest_middleware::ClientWithMiddleware`) as the
//! `Service<http::Request<Full<Bytes>>>` that [`OpenRouterLayer`](crate::OpenRouterLayer)
//! wraps (feature `reqwest`).
//!
//! [`ReqwestService`] turns each buffered request into a `reqwest::Request` (the body
//! bytes are shared, not copied) and each `reqwest::Response` into an
//! `http::Response<reqwest::Body>` whose body streams: a `"stream": true` response
//! reaches the stack chunk by chunk as reqwest reads it, so the first token can be
//! watched, a stalled stream cut and an error chunk classified, exactly as with hyper.
//!
//! Errors keep reqwest's own error as the source the classifier reads: a connect failure
//! or a reset is [`crate::ErrorKind::Transport`], reqwest's own
//! timeout (`ClientBuilder::timeout`) is [`ErrorKind::AttemptTimeout`]
//! (crate::ErrorKind::AttemptTimeout), and both move on to the next model. A request that
//! reqwest cannot send at all (a relative URI: reqwest needs `https://host/...`) is
//! [`crate::ErrorKind::InvalidRequest`], fatal, and never
//! counts against a model.
//!
//! Prefer the stack's timeouts ([`attempt_timeout`](crate::stack::OpenRouterLayerBuilder::attempt_timeout),
//! [`deadline`](crate::stack::OpenRouterLayerBuilder::deadline)) to reqwest's
//! `ClientBuilder::timeout`: reqwest's covers the whole body too, so it would also cut a
//! long healthy stream.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_openrouter::reqwest::ReqwestService;
//! use tower_openrouter::{OpenRouterLayer, ServedBy};
//! # use tower_openrouter::mock::{MockOpenRouter, Reply};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mock = MockOpenRouter::new();
//! # mock.model("anthropic/claude-sonnet-4.5").respond(Reply::status(429));
//! # let server = mock.serve().await?;
//! # let base = server.url();
//! # // This crate's tests build reqwest with `rustls-no-provider`: a provider is needed.
//! # let _ = rustls::crypto::ring::default_provider().install_default();
//! // `base` is "https://openrouter.ai/api/v1" in production (here: the loopback stand-in).
//! let client = ServiceBuilder::new()
//!     .layer(
//!         OpenRouterLayer::builder()
//!             .chain(["anthropic/claude-sonnet-4.5", "openai/gpt-4o"])
//!             .attempt_timeout(Duration::from_secs(60))
//!             .build()?,
//!     )
//!     .service(ReqwestService::new(reqwest::Client::new()));
//!
//! let request = http::Request::post(format!("{base}/chat/completions"))
//!     .header("authorization", "Bearer sk-or-...")
//!     .header("content-type", "application/json")
//!     .body(r#"{"model":"anthropic/claude-sonnet-4.5","messages":[{"role":"user","content":"hi"}]}"#.to_string())?;
//! let response = client.oneshot(request).await?;
//! assert_eq!(&*response.extensions().get::<ServedBy>().unwrap().model, "openai/gpt-4o");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower::Service;

use crate::error::{BoxError, Error, ErrorKind};

/// A reqwest client as a `Service<http::Request<Full<Bytes>>>` with a streaming
/// `http::Response<reqwest::Body>` (see the [module docs](self)).
///
/// `C` is [`reqwest::Client`] by default; any `Clone` service from `reqwest::Request` to
/// `reqwest::Response` whose error is a [`TransportError`] works (with feature
/// `reqwest-middleware`, `reqwest_middleware::ClientWithMiddleware` is one). Cloning is
/// cheap: reqwest's clients are handles to one connection pool.
#[derive(Debug, Clone, Default)]
pub struct ReqwestService<C = ::reqwest::Client> {
    client: C,
}

impl<C> ReqwestService<C> {
    /// Wraps `client`.
    pub fn new(client: C) -> Self {
        ReqwestService { client }
    }

    /// The wrapped client.
    pub fn get_ref(&self) -> &C {
        &self.client
    }

    /// The wrapped client, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.client
    }

    /// Gives the client back.
    pub fn into_inner(self) -> C {
        self.client
    }
}

impl From<::reqwest::Client> for ReqwestService {
    fn from(client: ::reqwest::Client) -> Self {
        ReqwestService::new(client)
    }
}

/// An adapted client's error, turned into the [`BoxError`] the classifier reads.
///
/// The classifier walks the error's `source()` chain (io errors, timeouts), so the
/// conversion must keep reqwest's own error as the outermost one, not a wrapper that
/// hides it.
pub trait TransportError {
    /// The error, boxed for the stack.
    fn into_box_error(self) -> BoxError;
}

impl TransportError for ::reqwest::Error {
    fn into_box_error(self) -> BoxError {
        Box::new(self)
    }
}

#[cfg(feature = "reqwest-middleware")]
impl TransportError for reqwest_middleware::Error {
    fn into_box_error(self) -> BoxError {
        match self {
            // `reqwest_middleware::Error` is `#[error(transparent)]`: its source() skips
            // reqwest's error, so hand that error itself to the classifier.
            reqwest_middleware::Error::Reqwest(e) => Box::new(e),
            reqwest_middleware::Error::Middleware(e) => e.into(),
        }
    }
}

impl<C> Service<http::Request<Full<Bytes>>> for ReqwestService<C>
where
    C: Service<::reqwest::Request, Response = ::reqwest::Response> + Clone,
    C::Error: TransportError,
{
    type Response = http::Response<::reqwest::Body>;
    type Error = BoxError;
    type Future = ResponseFuture<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.client
            .poll_ready(cx)
            .map_err(TransportError::into_box_error)
    }

    fn call(&mut self, req: http::Request<Full<Bytes>>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let body = crate::body::full_bytes(&body);
        let req = match ::reqwest::Request::try_from(http::Request::from_parts(parts, body)) {
            Ok(req) => req,
            Err(e) => {
                return ResponseFuture {
                    state: State::Invalid {
                        error: Some(invalid_request(e)),
                    },
                }
            }
        };
        // Clone-and-swap: call the client that was driven to readiness.
        let clone = self.client.clone();
        let mut ready = std::mem::replace(&mut self.client, clone);
        ResponseFuture {
            state: State::Calling {
                future: ready.call(req),
            },
        }
    }
}

/// reqwest refused to build the request (not an absolute `http(s)://` URI): the caller's
/// mistake, not the model's.
fn invalid_request(e: ::reqwest::Error) -> BoxError {
    Box::new(
        Error::new(ErrorKind::InvalidRequest)
            .with_detail("reqwest cannot send this request (it needs an absolute http(s) URI)")
            .with_source(e.without_url()),
    )
}

pin_project! {
    /// The future of [`ReqwestService`]: reqwest's response as an `http::Response`.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Invalid { error: Option<BoxError> },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<::reqwest::Response, E>>,
    E: TransportError,
{
    type Output = Result<http::Response<::reqwest::Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Calling { future } => match ready!(future.poll(cx)) {
                Ok(resp) => Poll::Ready(Ok(resp.into())),
                Err(e) => Poll::Ready(Err(e.into_box_error())),
            },
            StateProj::Invalid { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
