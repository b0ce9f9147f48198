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
        let route = match crate::routes::resolve(req.method(), req.uri().path()) {
            Ok(route) => route,
            Err(resp) => return GatewayFuture::answered(*resp),
        };
        if !self.shared.authorized(req.headers()) {
            return GatewayFuture::answered(crate::routes::json_error(
                http::StatusCode::UNAUTHORIZED,
                "this gateway needs one of its keys: Authorization: Bearer <key>",
            ));
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        GatewayFuture {
            state: State::Calling {
                future: inner.call(prepare(&self.shared, route, req)),
                route,
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
        Calling { #[pin] future: F, route: usize },
        Failed { error: Option<Error> },
        Answered { resp: Option<Response<Body>> },
    }
}

impl<F> GatewayFuture<F> {
    /// An answer the gateway gives itself (nothing goes upstream).
    fn answered(resp: Response<Body>) -> Self {
        GatewayFuture {
            state: State::Answered { resp: Some(resp) },
        }
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
            StateProj::Calling { future, route } => {
                Poll::Ready(respond(ready!(future.poll(cx)), *route))
            }
            StateProj::Answered { resp } => {
                Poll::Ready(Ok(resp.take().expect("polled after completion")))
            }
            StateProj::Failed { error } => Poll::Ready(Ok(error_response(
                &error.take().expect("polled after completion"),
            ))),
        }
    }
}

/// The request as it goes into the stack: the upstream URL, our own key, a few of the
/// caller's headers; nothing else of the caller's (its `Authorization` above all).
fn prepare(shared: &Shared, route: usize, req: Request<Body>) -> Request<Body> {
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
    let target = &shared.targets[route];
    parts.uri = match parts.uri.query() {
        // `GET /models?supported_parameters=tools`: the caller's query goes along.
        Some(q) => format!("{target}?{q}")
            .parse()
            .unwrap_or_else(|_| target.clone()),
        None => target.clone(),
    };
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
    route: usize,
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
                    .filter(|a| {
                        matches!(
                            a.kind(),
                            ErrorKind::ModelCoolingDown | ErrorKind::ModelAtCapacity
                        )
                    })
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
            let sse = parts
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let ending = if sse {
                crate::stream_end::Ending::for_route(route)
            } else {
                crate::stream_end::Ending::Close
            };
            Response::from_parts(
                parts,
                Body::new(crate::stream_end::Guarded::new(body, ending)),
            )
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
