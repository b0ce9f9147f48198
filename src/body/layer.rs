//! The request buffering layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::request::Parts;
use http::{Method, Request};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::collect::Collected;
use crate::JsonBody;
use crate::{BoxError, Error, ErrorKind};

/// The default body limit: 16 MiB. It is also the default cap on a 2xx response body the
/// classify layer reads for its 200-with-error check
/// ([`ClassifyLayer::success_body_limit`](crate::classify::ClassifyLayer::success_body_limit)).
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Buffers a request body once into a cheaply cloneable `Request<Full<Bytes>>`, bounded,
/// and checks chat-completion, messages and Responses API bodies before any upstream call.
///
/// * A body larger than the limit ([`DEFAULT_BODY_LIMIT`] unless set with
///   [`BufferRequestLayer::limit`]) is [`ErrorKind::BodyTooLarge`]. A `Content-Length`
///   (or body size hint) over the limit is refused without reading; otherwise reading
///   stops at the first chunk that passes the limit.
/// * A `POST` to a path ending in `/chat/completions`, `/completions`, `/messages` or
///   `/responses` (the OpenAI Responses API shape OpenRouter serves at
///   `/api/v1/responses`) whose body is not a JSON object with exactly one top-level
///   `model`, a string that decodes, and a boolean `stream` if any, is
///   [`ErrorKind::InvalidBody`]; the detail says which (not valid JSON, not an object, no
///   `model`, `model` not a string or not valid Unicode such as a lone `"\udc00"`, a
///   second `model` key, `stream` not a boolean) and never echoes the body. For a valid
///   one the parsed [`JsonBody`] index is put in the request extensions, so inner layers
///   edit the body without parsing it again.
/// * A body that fails to read is [`ErrorKind::InvalidBody`] with the read error as its
///   source.
/// * Other requests (e.g. `GET /api/v1/models`) are buffered and passed on untouched.
///
/// The body's bytes are never changed (a body that arrives in one chunk is not even
/// copied); trailers are dropped. In every error case the inner service is not called.
#[derive(Clone, Copy, Debug)]
pub struct BufferRequestLayer {
    limit: usize,
}

impl Default for BufferRequestLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl BufferRequestLayer {
    /// A layer with the default limit of 16 MiB.
    pub fn new() -> Self {
        BufferRequestLayer {
            limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// Sets the largest body accepted, in bytes.
    pub fn limit(mut self, bytes: usize) -> Self {
        self.limit = bytes;
        self
    }

    /// The largest body accepted, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.limit
    }
}

impl<S> Layer<S> for BufferRequestLayer {
    type Service = BufferRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferRequest {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`BufferRequestLayer`].
#[derive(Clone, Debug)]
pub struct BufferRequest<S> {
    inner: S,
    limit: usize,
}

impl<S> BufferRequest<S> {
    /// Wraps `inner` with the default limit.
    pub fn new(inner: S) -> Self {
        BufferRequestLayer::new().layer(inner)
    }

    crate::service::inner_service_accessors!();
}

/// Whether a request goes to an endpoint whose body must carry a `model`.
pub(crate) fn is_model_endpoint(method: &Method, path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    method == Method::POST && (path.ends_with("/completions") || path.ends_with("/messages"))
}

/// Whether `BufferRequestLayer` checks a request's body (a JSON object with a string
/// `model`): the model endpoints, and `POST .../responses` (the Responses API).
///
/// The Responses API is checked and indexed only here: the routing layer's endpoints
/// ([`is_model_endpoint`]) stay as they are.
fn is_checked_endpoint(method: &Method, path: &str) -> bool {
    is_generation_endpoint(method, path)
}

/// Whether a request goes to a generation endpoint (`POST` `/chat/completions`,
/// `/completions`, `/messages`, `/responses`): the ones model fallback and native routing
/// apply to. Every other request passes through with its body untouched.
pub(crate) fn is_generation_endpoint(method: &Method, path: &str) -> bool {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    is_model_endpoint(method, path) || (method == Method::POST && trimmed.ends_with("/responses"))
}

/// Whether a path is the Anthropic-shaped `/messages` endpoint.
pub(crate) fn is_messages_endpoint(path: &str) -> bool {
    path.strip_suffix('/')
        .unwrap_or(path)
        .ends_with("/messages")
}

fn too_large(limit: usize) -> Error {
    Error::new(ErrorKind::BodyTooLarge).with_detail(format!(
        "the request body is larger than the limit of {limit} bytes"
    ))
}

impl<S, B> Service<Request<B>> for BufferRequest<S>
where
    S: Service<Request<Full<Bytes>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        crate::service::poll_inner(&mut self.inner, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (mut parts, body) = req.into_parts();
        mark_sensitive(&mut parts.headers);
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let hint = body.size_hint();
        let limit = self.limit as u64;
        if declared.is_some_and(|n| n > limit) || hint.lower() > limit {
            return ResponseFuture {
                state: State::Failed {
                    error: Some(too_large(self.limit)),
                },
            };
        }
        let expected = declared.or(hint.exact()).unwrap_or(0).min(limit) as usize;
        ResponseFuture {
            state: State::Reading {
                body,
                parts: Some(parts),
                inner: Some(inner),
                collected: Collected::with_expected(expected),
                limit: self.limit,
            },
        }
    }
}

pin_project! {
    /// The response future of [`BufferRequest`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        Reading {
            #[pin]
            body: B,
            parts: Option<Parts>,
            inner: Option<S>,
            collected: Collected,
            limit: usize,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Failed {
            error: Option<Error>,
        },
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Reading {
                    mut body,
                    parts,
                    inner,
                    collected,
                    limit,
                } => match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Ok(mut data) = frame.into_data() {
                            if collected.len() + data.remaining() > *limit {
                                State::Failed {
                                    error: Some(too_large(*limit)),
                                }
                            } else {
                                // A `Bytes` chunk moves over (no copy).
                                collected.push(data.copy_to_bytes(data.remaining()));
                                continue;
                            }
                        } else {
                            continue;
                        }
                    }
                    Some(Err(e)) => State::Failed {
                        error: Some(
                            Error::new(ErrorKind::InvalidBody)
                                .with_detail("the request body could not be read")
                                .with_source(e.into()),
                        ),
                    },
                    None => {
                        let bytes = std::mem::take(collected).freeze();
                        let mut parts = parts.take().expect("polled after completion");
                        let mut inner = inner.take().expect("polled after completion");
                        match prepare(&mut parts, &bytes) {
                            Ok(()) => State::Calling {
                                future: inner.call(Request::from_parts(parts, Full::new(bytes))),
                            },
                            Err(e) => State::Failed { error: Some(e) },
                        }
                    }
                },
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(|e| Error::from_box(e.into()));
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")));
                }
            };
            this.state.set(next);
        }
    }
}

/// Marks the credentials the request carries sensitive (`Authorization`,
/// `Proxy-Authorization`, `x-api-key`), so no `Debug` of the request (or an HTTP/2
/// encoder's header table) shows or keeps them.
fn mark_sensitive(headers: &mut http::HeaderMap) {
    // One walk over the (few) headers, repeated values included: cheaper than a lookup
    // per name, and `entry` would also reserve room in the map.
    for (name, value) in headers.iter_mut() {
        if name == http::header::AUTHORIZATION
            || name == http::header::PROXY_AUTHORIZATION
            || name == crate::error::API_KEY
        {
            value.set_sensitive(true);
        }
    }
}

/// Checks a chat-completion, messages or Responses API body and records its index in the
/// extensions.
fn prepare(parts: &mut Parts, bytes: &Bytes) -> Result<(), Error> {
    if is_checked_endpoint(&parts.method, parts.uri.path()) {
        let json = JsonBody::parse_with_model(bytes.clone())?;
        parts.extensions.insert(json);
    }
    Ok(())
}
