//! [`ClassifyLayer`] and [`Classify`].

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::{Layer, Service};

use super::future::{RequestInfo, ResponseFuture};
use super::{ClassifyOutcome, OpenRouterClassifier, ResponseBody};
use crate::body::DEFAULT_BODY_LIMIT;
use crate::error::{Action, BoxError, Error};

/// Default cap on an error body read for classification: 64 KiB (see
/// [`ClassifyLayer::error_body_limit`]). A 2xx body's cap defaults to
/// [`DEFAULT_BODY_LIMIT`], the same as a request body's.
pub const DEFAULT_ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The caps on bodies read, and what a 2xx body cut short asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) success: usize,
    pub(crate) error: usize,
    /// Replaces the classifier's action on a truncated 2xx body.
    pub(crate) truncated: Option<Action>,
}

/// Applies a [`ClassifyOutcome`] to every outcome of an HTTP client service: success passes
/// through, every failure becomes a typed [`Error`](crate::Error).
///
/// * A non-streaming 2xx body is read (up to [`success_body_limit`], 16 MiB by default)
///   and checked for a 200 that carries an error, then judged ([`Outcome::Body`]): a body
///   that is not JSON, or no event stream for a `"stream": true` request, is
///   `InvalidResponse` (fallback); JSON cut short (ended early or failed to read) is
///   `ResponseTruncated` (fatal: tokens may be billed; see [`truncated_action`]); a
///   larger body is `ResponseTooLarge` (fatal), its reading stopped at the first chunk
///   past the limit (or not begun, when `Content-Length` says so). On success
///   [`UpstreamInfo`](crate::UpstreamInfo) is inserted into the response extensions and
///   the body is returned byte for byte. The judgement is one pass of the probe that
///   reads `UpstreamInfo`: the happy path parses the body once.
/// * A 2xx `text/event-stream` is held until its first content event, then returned with
///   the held bytes replayed and the rest watched (see [`crate::stream`]).
/// * An error status's body is read up to [`error_body_limit`] (64 KiB) for the
///   classifier; the rest is dropped.
/// * A client error becomes `Transport` (or `AttemptTimeout`); an inner error that is
///   already a [`crate::Error`] passes through unchanged.
/// * The error's model is the request's [`Attempt`](crate::Attempt) model.
///
/// The inner service's response body must be `Unpin` (hyper's `Incoming`, `Full`,
/// `BoxBody` are): it is moved into the returned [`ResponseBody`] after being read.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_openrouter::classify::ClassifyLayer;
/// use tower_openrouter::{ErrorKind, UpstreamInfo};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = service_fn(|_req: http::Request<Full<Bytes>>| async {
///     Ok::<_, std::io::Error>(http::Response::builder()
///         .status(402)
///         .body(Full::new(Bytes::from_static(br#"{"error":{"code":402,"message":"Insufficient credits"}}"#)))
///         .unwrap())
/// });
/// let svc = ServiceBuilder::new().layer(ClassifyLayer::new()).service(client);
/// let err = svc.oneshot(http::Request::new(Full::default())).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InsufficientCredits);
///
/// let client = service_fn(|_req: http::Request<Full<Bytes>>| async {
///     Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from_static(
///         br#"{"model":"openai/gpt-4o","provider":"OpenAI","choices":[]}"#))))
/// });
/// let resp = ClassifyLayer::new().layer(client).oneshot(http::Request::new(Full::default())).await.unwrap();
/// let info = resp.extensions().get::<UpstreamInfo>().unwrap();
/// assert_eq!(info.provider.as_deref(), Some("OpenAI"));
/// let body = resp.into_body().collect().await.unwrap().to_bytes();
/// assert!(body.starts_with(b"{\"model\""));
/// # }
/// # use tower::Layer;
/// ```
///
/// [`success_body_limit`]: ClassifyLayer::success_body_limit
/// [`error_body_limit`]: ClassifyLayer::error_body_limit
/// [`truncated_action`]: ClassifyLayer::truncated_action
/// [`Outcome::Body`]: super::Outcome::Body
#[derive(Debug)]
pub struct ClassifyLayer<C = OpenRouterClassifier> {
    classifier: Arc<C>,
    limits: Limits,
}

impl<C> Clone for ClassifyLayer<C> {
    fn clone(&self) -> Self {
        ClassifyLayer {
            classifier: self.classifier.clone(),
            limits: self.limits,
        }
    }
}

impl ClassifyLayer<OpenRouterClassifier> {
    /// A layer with the default [`OpenRouterClassifier`] and default caps.
    pub fn new() -> Self {
        Self::with_classifier(OpenRouterClassifier::new())
    }
}

impl Default for ClassifyLayer<OpenRouterClassifier> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: ClassifyOutcome> ClassifyLayer<C> {
    /// A layer with your classifier.
    pub fn with_classifier(classifier: C) -> Self {
        Self::with_shared_classifier(Arc::new(classifier))
    }

    /// A layer with a classifier shared with other code.
    pub fn with_shared_classifier(classifier: Arc<C>) -> Self {
        ClassifyLayer {
            classifier,
            limits: Limits {
                success: DEFAULT_BODY_LIMIT,
                error: DEFAULT_ERROR_BODY_LIMIT,
                truncated: None,
            },
        }
    }
}

impl<C> ClassifyLayer<C> {
    /// Largest non-streaming 2xx body (default 16 MiB): a larger one is
    /// [`ErrorKind::ResponseTooLarge`], read no further than the first chunk past the
    /// limit (not at all when its `Content-Length` is larger). A classifier that lets
    /// such a body pass gets it back unchecked, without [`UpstreamInfo`]. Also the most
    /// of a stream held before its first content event (then it is released).
    ///
    /// [`UpstreamInfo`]: crate::UpstreamInfo
    /// [`ErrorKind::ResponseTooLarge`]: crate::ErrorKind::ResponseTooLarge
    pub fn success_body_limit(mut self, bytes: usize) -> Self {
        self.limits.success = bytes;
        self
    }

    /// The action of a non-streaming 2xx whose JSON was cut short
    /// ([`ErrorKind::ResponseTruncated`]), whatever the classifier says (default: the
    /// classifier's, [`Action::Fatal`] for [`OpenRouterClassifier`], since tokens may have
    /// been billed; [`Action::Fallback`] asks the next model instead).
    ///
    /// [`ErrorKind::ResponseTruncated`]: crate::ErrorKind::ResponseTruncated
    pub fn truncated_action(mut self, action: Action) -> Self {
        self.limits.truncated = Some(action);
        self
    }

    /// Largest part of an error body read for the classifier (default 64 KiB).
    pub fn error_body_limit(mut self, bytes: usize) -> Self {
        self.limits.error = bytes;
        self
    }
}

impl<S, C> Layer<S> for ClassifyLayer<C> {
    type Service = Classify<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Classify {
            inner,
            classifier: self.classifier.clone(),
            limits: self.limits,
        }
    }
}

/// The service of [`ClassifyLayer`].
#[derive(Debug)]
pub struct Classify<S, C = OpenRouterClassifier> {
    inner: S,
    classifier: Arc<C>,
    limits: Limits,
}

impl<S: Clone, C> Clone for Classify<S, C> {
    fn clone(&self) -> Self {
        Classify {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            limits: self.limits,
        }
    }
}

impl<S, C> Classify<S, C> {
    crate::service::inner_service_accessors!();
}

impl<S, C, ReqB, B> Service<Request<ReqB>> for Classify<S, C>
where
    S: Service<Request<ReqB>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    C: ClassifyOutcome,
{
    type Response = Response<ResponseBody<B>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| super::future::client_error(&*self.classifier, e.into(), None))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let info = RequestInfo::from_request(&req);
        ResponseFuture::new(
            self.inner.call(req),
            self.classifier.clone(),
            self.limits,
            info,
        )
    }
}
