//! The response future of [`Classify`](super::Classify), split the tower
//! way: `poll` hands each state to its own small function ([`on_head`] for `Calling`,
//! [`read`] for `Reading`, [`hold`] for `Peeking`).

mod hold;
mod read;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use self::hold::Hold;
use self::read::Reading;
use super::layer::Limits;
use super::{ClassifyOutcome, Outcome, ResponseBody};
use crate::error::{BoxError, Error};
use crate::extensions::{Attempt, Deadline, JsonBody, StreamErrorHook, StreamLimits};

/// What the future keeps from the request.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    pub(crate) model: Option<Arc<str>>,
    hook: Option<StreamErrorHook>,
    /// When the first content of a stream must have come.
    first_token_by: Option<Instant>,
    /// Longest gap between stream chunks after content.
    idle: Option<Duration>,
    /// An `/api/v1/messages` request (its streams end with `message_stop`, not `[DONE]`).
    messages: bool,
    /// An `/api/v1/responses` request (its stream events are typed `response.*`).
    responses: bool,
    /// A `"stream": true` request (told by its [`JsonBody`]): a 2xx that is not an event
    /// stream is no answer to it.
    pub(super) stream: bool,
    /// A request whose 2xx has no body to judge (`HEAD`).
    pub(super) bodiless: bool,
    /// The `gen_ai.operation.name` of the request's path, for a stream's usage.
    op: &'static str,
}

impl RequestInfo {
    pub(crate) fn from_request<B>(req: &Request<B>) -> Self {
        let ext = req.extensions();
        let mut info = RequestInfo {
            model: ext.get::<Attempt>().map(|a| a.model.clone()),
            hook: ext.get::<StreamErrorHook>().cloned(),
            first_token_by: None,
            idle: None,
            messages: req.uri().path().ends_with("/messages"),
            responses: req.uri().path().ends_with("/responses"),
            stream: ext.get::<JsonBody>().is_some_and(JsonBody::is_stream),
            bodiless: req.method() == http::Method::HEAD,
            op: "chat",
        };
        if info.stream && !(info.messages || info.responses) {
            info.op = crate::observe::operation(req.uri().path());
        }
        if let Some(limits) = ext.get::<StreamLimits>() {
            let deadline = ext.get::<Deadline>();
            let clamp = |d: Duration| deadline.map_or(d, |dl| dl.clamp(d));
            info.first_token_by = limits.first_token.map(|d| Instant::now() + clamp(d));
            info.idle = limits.idle.map(clamp);
        }
        info
    }
}

/// Turns a client error into our error: our own errors pass through unchanged, anything
/// else goes to the classifier as a transport outcome.
pub(crate) fn client_error<C: ClassifyOutcome + ?Sized>(
    classifier: &C,
    err: BoxError,
    model: Option<&Arc<str>>,
) -> Error {
    let err = match err.downcast::<Error>() {
        Ok(ours) => return *ours,
        Err(err) => err,
    };
    let e = match classifier.classify(Outcome::Transport(&*err)) {
        Some(c) => c.into_error().with_source(err),
        // A classifier that calls a client error a success still cannot make a response.
        None => Error::from_box(err).with_detail("the classifier accepted a client error"),
    };
    match model {
        Some(m) => e.or_model(m),
        None => e,
    }
}

/// What every state reads: the classifier, the caps and what the request said.
struct Ctx<C> {
    classifier: Arc<C>,
    limits: Limits,
    info: RequestInfo,
}

impl<C: ClassifyOutcome> Ctx<C> {
    /// A client (or body read) error, as [`client_error`] makes it.
    fn client_error(&self, err: BoxError) -> Error {
        client_error(&*self.classifier, err, self.info.model.as_ref())
    }

    /// An error with the request's model, unless it names one.
    fn or_model(&self, e: Error) -> Error {
        match &self.info.model {
            Some(m) => e.or_model(m),
            None => e,
        }
    }
}

/// What the future gives back.
type Output<B> = Result<Response<ResponseBody<B>>, Error>;

pin_project! {
    /// The response future of [`Classify`](super::Classify).
    pub struct ResponseFuture<F, B, C> {
        #[pin]
        state: State<F, B>,
        ctx: Ctx<C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // The inner service's call.
        Calling { #[pin] fut: F },
        // A non-streaming body read for the classifier.
        Reading { read: Reading<B> },
        // A 2xx event stream, held until its first content event.
        Peeking {
            hold: Hold<B>,
            #[pin]
            first_token: Option<Sleep>,
        },
        Done,
    }
}

impl<F, B, C> ResponseFuture<F, B, C> {
    pub(crate) fn new(fut: F, classifier: Arc<C>, limits: Limits, info: RequestInfo) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            ctx: Ctx {
                classifier,
                limits,
                info,
            },
        }
    }
}

impl<F, B, C> std::fmt::Debug for ResponseFuture<F, B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, C, E> Future for ResponseFuture<F, B, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    C: ClassifyOutcome,
{
    type Output = Output<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let ctx = &*this.ctx;
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let out = match ready!(fut.poll(cx)) {
                        Ok(resp) => on_head(resp, ctx, this.state.as_mut()),
                        Err(e) => Some(Err(ctx.client_error(e.into()))),
                    };
                    if let Some(out) = out {
                        this.state.set(State::Done);
                        return Poll::Ready(out);
                    }
                }
                // A finished read or hold is left empty in place (a poll after it panics):
                // the output is built straight into the return value, not moved past a
                // state change.
                StateProj::Reading { read } => {
                    let end = ready!(read.poll_read(cx, ctx.limits));
                    return Poll::Ready(read.finish(end, ctx));
                }
                StateProj::Peeking { hold, first_token } => {
                    return hold.poll_hold(cx, first_token, ctx);
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// The `Calling` state's end: what the response head says to do next. A 2xx event stream
/// is held ([`Hold`]); any other body is read ([`Reading`]); a 2xx whose `Content-Length`
/// passes the cap is the output at once (`ResponseTooLarge`, unread). The next state is
/// set in place (no move of a whole state on every request).
#[inline]
fn on_head<F, B, C>(
    resp: Response<B>,
    ctx: &Ctx<C>,
    mut state: Pin<&mut State<F, B>>,
) -> Option<Output<B>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    C: ClassifyOutcome,
{
    let (parts, body) = resp.into_parts();
    let success = parts.status.is_success();
    if success && is_event_stream(&parts.headers) {
        state.set(State::Peeking {
            hold: Hold::new(parts, body, ctx),
            first_token: ctx.info.first_token_by.map(tokio::time::sleep_until),
        });
        return None;
    }
    if success
        && !ctx.info.bodiless
        && content_length(&parts.headers).is_some_and(|n| n > ctx.limits.success as u64)
    {
        // Too large to read: an error, unread, unless the classifier lets it pass
        // (then it goes back unchecked).
        return Some(
            ctx.too_large(parts.status, "its Content-Length passes")
                .map(|()| {
                    Response::from_parts(parts, ResponseBody::new(Bytes::new(), None, Some(body)))
                }),
        );
    }
    state.set(State::Reading {
        read: Reading::new(parts, body, success),
    });
    None
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
