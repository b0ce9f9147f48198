//! The gateway service: the caller's request into the stack, the outcome back out.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Extensions, Request, Response};
use pin_project_lite::pin_project;
use tower::Service;
use tower_openrouter::classify::ResponseBody;
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::{BoxError, Error, ErrorKind};

use crate::error::error_response;
use crate::upstream::Shared;
use crate::CHAIN_HEADER;

static SERVED_BY: HeaderName = HeaderName::from_static("x-openrouter-served-by");
static ATTEMPTS: HeaderName = HeaderName::from_static("x-openrouter-attempts");
static SKIPPED: HeaderName = HeaderName::from_static("x-openrouter-skipped");
/// Request headers passed on upstream (everything else, the caller's `Authorization`
/// first of all, stays here).
static FORWARDED: [HeaderName; 5] = [
    header::ACCEPT,
    header::USER_AGENT,
    HeaderName::from_static("http-referer"),
    HeaderName::from_static("x-title"),
    HeaderName::from_static("x-openrouter-title"),
];

/// The gateway service: prepares the caller's request, calls the stack, turns the outcome
/// into the caller's response.
#[derive(Clone)]
pub(crate) struct Gateway<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
    /// An error the stack reported when polled ready, answered at the next call.
    pub(crate) not_ready: Option<Error>,
}

impl<S, B> Service<Request<Body>> for Gateway<S>
where
    S: Service<Request<Body>, Response = Response<ResponseBody<B>>, Error = Error> + Clone,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = GatewayFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none() {
            if let Err(e) = ready!(self.inner.poll_ready(cx)) {
                self.not_ready = Some(e);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let Some(e) = self.not_ready.take() {
            return GatewayFuture {
                state: State::Failed { error: Some(e) },
            };
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        GatewayFuture {
            state: State::Calling {
                future: inner.call(prepare(&self.shared, req)),
            },
        }
    }
}

pin_project! {
    /// The future of [`Gateway`].
    pub(crate) struct GatewayFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    pub(crate) enum State<F> {
        Calling { #[pin] future: F },
        Failed { error: Option<Error> },
    }
}

impl<F, B> Future for GatewayFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody<B>>, Error>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Calling { future } => Poll::Ready(respond(ready!(future.poll(cx)))),
            StateProj::Failed { error } => Poll::Ready(Ok(error_response(
                &error.take().expect("polled after completion"),
            ))),
        }
    }
}

/// The request as it goes into the stack: the upstream URL, our own key, a few of the
/// caller's headers; nothing else of the caller's (its `Authorization` above all).
fn prepare(shared: &Shared, req: Request<Body>) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(auth) = &shared.auth {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    for name in &FORWARDED {
        if let Some(v) = parts.headers.get(name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    if let Some(v) = parts.headers.get(CHAIN_HEADER) {
        headers.insert(HeaderName::from_static(CHAIN_HEADER), v.clone());
    }
    parts.uri = shared.target.clone();
    parts.headers = headers;
    parts.extensions = Extensions::new();
    Request::from_parts(parts, body)
}

/// Hop-by-hop headers of the upstream answer, which are not passed on.
static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

fn respond<B>(
    result: Result<Response<ResponseBody<B>>, Error>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Ok(match result {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for name in &HOP_BY_HOP {
                parts.headers.remove(name);
            }
            if let Some(served) = parts.extensions.get::<ServedBy>() {
                let skipped = served
                    .attempts
                    .iter()
                    .filter(|a| a.kind() == ErrorKind::ModelCoolingDown)
                    .count();
                let calls = served.attempts.len() - skipped + 1;
                if let Ok(v) = HeaderValue::from_str(&served.model) {
                    parts.headers.insert(SERVED_BY.clone(), v);
                }
                parts.headers.insert(ATTEMPTS.clone(), count(calls));
                if skipped > 0 {
                    parts.headers.insert(SKIPPED.clone(), count(skipped));
                }
                tracing::debug!(
                    served_by = %served.model,
                    calls,
                    skipped,
                    status = parts.status.as_u16(),
                    "served"
                );
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => error_response(&e),
    })
}

/// A small count as a header value, without formatting for the usual ones.
fn count(n: usize) -> HeaderValue {
    static SMALL: [&str; 8] = ["0", "1", "2", "3", "4", "5", "6", "7"];
    match SMALL.get(n) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}
