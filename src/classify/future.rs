//! The response future of [`ClassifyService`](super::ClassifyService).

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

use super::layer::Limits;
use super::probe::upstream_info;
use super::watch::{Failure, Watcher};
use super::{Classify, Outcome, ResponseBody};
use crate::body::Collected;
use crate::error::{BoxError, Error};
use crate::extensions::{Attempt, Deadline, StreamErrorHook, StreamLimits};

/// What the future keeps from the request.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    pub(crate) model: Option<Arc<str>>,
    hook: Option<StreamErrorHook>,
    /// When the first content of a stream must have come.
    first_token_by: Option<Instant>,
    /// Longest gap between stream chunks after content.
    idle: Option<Duration>,
    /// An `/api/v1/messages` request (its streams end without `[DONE]`).
    messages: bool,
    /// An `/api/v1/responses` request (its stream events are typed `response.*`).
    responses: bool,
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
        };
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
pub(crate) fn client_error<C: Classify + ?Sized>(
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

pin_project! {
    /// The response future of [`ClassifyService`](super::ClassifyService).
    pub struct ResponseFuture<F, B, C> {
        #[pin]
        state: State<F, B>,
        classifier: Arc<C>,
        limits: Limits,
        info: RequestInfo,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling { #[pin] fut: F },
        Reading {
            parts: Option<http::response::Parts>,
            body: Option<B>,
            buf: Collected,
            trailers: Option<HeaderMap>,
            // true: a 2xx read for the 200-with-error check (over the limit it passes
            // through unchecked); false: an error body read for the classifier (cut at
            // the limit).
            success: bool,
        },
        // A 2xx event stream, held until its first content event.
        Peeking {
            parts: Option<http::response::Parts>,
            body: Option<B>,
            held: Collected,
            trailers: Option<HeaderMap>,
            watch: Option<Box<Watcher>>,
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
            classifier,
            limits,
            info,
        }
    }
}

impl<F, B, C> std::fmt::Debug for ResponseFuture<F, B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
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

impl<F, B, C, E> Future for ResponseFuture<F, B, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<ResponseBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let resp = match ready!(fut.poll(cx)) {
                        Ok(resp) => resp,
                        Err(e) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(client_error(
                                &**this.classifier,
                                e.into(),
                                this.info.model.as_ref(),
                            )));
                        }
                    };
                    let (parts, body) = resp.into_parts();
                    let success = parts.status.is_success();
                    if success && is_event_stream(&parts.headers) {
                        let classifier: Arc<dyn Classify> = this.classifier.clone();
                        let watch = Watcher::new(
                            classifier,
                            this.info.messages,
                            this.info.model.clone(),
                            this.info.hook.clone(),
                        )
                        .responses_api(this.info.responses);
                        this.state.set(State::Peeking {
                            parts: Some(parts),
                            body: Some(body),
                            held: Collected::default(),
                            trailers: None,
                            watch: Some(Box::new(watch)),
                            first_token: this.info.first_token_by.map(tokio::time::sleep_until),
                        });
                        continue;
                    }
                    if success
                        && content_length(&parts.headers)
                            .is_some_and(|n| n > this.limits.success as u64)
                    {
                        // Too large to check: pass through unchecked.
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(Response::from_parts(
                            parts,
                            ResponseBody::new(Bytes::new(), None, Some(body)),
                        )));
                    }
                    this.state.set(State::Reading {
                        parts: Some(parts),
                        body: Some(body),
                        buf: Collected::default(),
                        trailers: None,
                        success,
                    });
                }
                StateProj::Reading {
                    parts,
                    body,
                    buf,
                    trailers,
                    success,
                } => {
                    let limit = if *success {
                        this.limits.success
                    } else {
                        this.limits.error
                    };
                    // Read until the end, a read error or the limit.
                    let mut ended = false;
                    let mut read_error = None;
                    if let Some(b) = body.as_mut() {
                        loop {
                            if buf.len() > limit || (!*success && buf.len() >= limit) {
                                break;
                            }
                            match ready!(Pin::new(&mut *b).poll_frame(cx)) {
                                None => {
                                    ended = true;
                                    break;
                                }
                                Some(Ok(frame)) => match frame.into_data() {
                                    Ok(data) => buf.push(data),
                                    Err(frame) => {
                                        if let Ok(t) = frame.into_trailers() {
                                            *trailers = Some(t);
                                        }
                                    }
                                },
                                Some(Err(e)) => {
                                    read_error = Some(e.into());
                                    break;
                                }
                            }
                        }
                    }
                    let parts = parts.take().expect("polled after completion");
                    let body = body.take();
                    let trailers = trailers.take();
                    let success = *success;
                    let limit = if success {
                        this.limits.success
                    } else {
                        this.limits.error
                    };
                    let bytes = std::mem::take(buf).freeze();
                    this.state.set(State::Done);
                    if success {
                        if let Some(e) = read_error {
                            return Poll::Ready(Err(client_error(
                                &**this.classifier,
                                e,
                                this.info.model.as_ref(),
                            )));
                        }
                        if !ended {
                            // Over the limit: prefix + rest, unchecked.
                            return Poll::Ready(Ok(Response::from_parts(
                                parts,
                                ResponseBody::new(bytes, None, body),
                            )));
                        }
                    }
                    // An error body is cut at the limit for the classifier (the bytes
                    // are kept whole in case it calls the outcome a success).
                    let seen = if success {
                        &bytes[..]
                    } else {
                        &bytes[..bytes.len().min(limit)]
                    };
                    let verdict = this.classifier.classify(Outcome::Response {
                        status: parts.status,
                        headers: &parts.headers,
                        body: seen,
                    });
                    if let Some(c) = verdict {
                        let mut e = c.into_error();
                        if let Some(m) = &this.info.model {
                            e = e.or_model(m);
                        }
                        return Poll::Ready(Err(e));
                    }
                    if let Some(e) = read_error {
                        return Poll::Ready(Err(client_error(
                            &**this.classifier,
                            e,
                            this.info.model.as_ref(),
                        )));
                    }
                    let mut parts = parts;
                    if success {
                        let observed = crate::observe::listening();
                        if let Some(info) = upstream_info(&bytes, observed) {
                            parts.extensions.insert(info);
                        }
                    }
                    let rest = if ended { None } else { body };
                    return Poll::Ready(Ok(Response::from_parts(
                        parts,
                        ResponseBody::new(bytes, trailers, rest),
                    )));
                }
                StateProj::Peeking {
                    parts,
                    body,
                    held,
                    trailers,
                    watch,
                    mut first_token,
                } => {
                    let w = watch.as_mut().expect("polled after completion");
                    // What ends the wait: `None` = keep reading; `Some(failure)` with or
                    // without a failure to deliver.
                    let (ended, failure) = loop {
                        let Some(b) = body.as_mut() else {
                            break (true, w.finish());
                        };
                        match Pin::new(b).poll_frame(cx) {
                            Poll::Pending => {
                                let stalled = first_token
                                    .as_mut()
                                    .as_pin_mut()
                                    .is_some_and(|t| t.poll(cx).is_ready());
                                if !stalled {
                                    return Poll::Pending;
                                }
                                first_token.set(None);
                                match w.stalled() {
                                    Some(f) => break (false, Some(f)),
                                    // The classifier lets a stall pass: wait on.
                                    None => return Poll::Pending,
                                }
                            }
                            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                                Ok(data) => {
                                    let failure = w.feed(&data);
                                    held.push(data);
                                    if failure.is_some()
                                        || w.content_seen()
                                        || held.len() > this.limits.success
                                    {
                                        break (false, failure);
                                    }
                                }
                                Err(frame) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        *trailers = Some(t);
                                    }
                                }
                            },
                            Poll::Ready(Some(Err(e))) => {
                                let err = client_error(
                                    &**this.classifier,
                                    e.into(),
                                    this.info.model.as_ref(),
                                );
                                this.state.set(State::Done);
                                return Poll::Ready(Err(err));
                            }
                            Poll::Ready(None) => break (true, w.finish()),
                        }
                    };
                    let mut parts = parts.take().expect("polled after completion");
                    let mut w = watch.take().expect("polled after completion");
                    let rest = if ended { None } else { body.take() };
                    let trailers = trailers.take();
                    let held = std::mem::take(held).freeze();
                    this.state.set(State::Done);
                    if let Some(info) = w.take_info() {
                        parts.extensions.insert(info);
                    }
                    return Poll::Ready(release(
                        parts,
                        held,
                        trailers,
                        rest,
                        w,
                        failure,
                        this.info.idle,
                    ));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// Ends the hold of a stream: an error before content, or the response whose body
/// replays the held bytes (cut before a failing event) and watches the rest.
fn release<B>(
    parts: http::response::Parts,
    held: Bytes,
    trailers: Option<HeaderMap>,
    rest: Option<B>,
    mut w: Box<Watcher>,
    failure: Option<Failure>,
    idle: Option<Duration>,
) -> Result<Response<ResponseBody<B>>, Error> {
    let body = match failure {
        Some(f) if !f.after_content => return Err(w.error(f)),
        Some(f) => {
            let cut = usize::try_from(f.at).unwrap_or(usize::MAX).min(held.len());
            ResponseBody::failed(held.slice(..cut), w.error(f))
        }
        None if rest.is_none() => ResponseBody::new(held, trailers, None),
        None => {
            // Events not complete yet are delivered with the rest of their bytes.
            let cut = usize::try_from(w.complete_up_to())
                .unwrap_or(usize::MAX)
                .min(held.len());
            let carry = held.slice(cut..);
            w.mark_delivered();
            ResponseBody::watched(held.slice(..cut), carry, trailers, rest, w, idle)
        }
    };
    Ok(Response::from_parts(parts, body))
}
