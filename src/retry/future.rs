//! The response future of [`Retry`](super::Retry): call, back off, poll ready, call again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::retry::budget::Budget;
use tower::Service;

use super::layer::Shared;
use crate::error::{AttemptRecord, BoxError, Credentials, Error};
use crate::extensions::{Attempt, AttemptLog, Deadline};
use crate::observe::TryObs;

/// What a call needs to retry: kept only when a retry is possible.
pub(crate) struct RetryState {
    /// The request to replay (taken for the last retry).
    pub(crate) request: Option<Request<Full<Bytes>>>,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) log: Option<AttemptLog>,
    /// `Attempt::retry` of the request as it came in.
    pub(crate) first_retry: u32,
    pub(crate) max_retries: u32,
    /// Retries started so far.
    pub(crate) retries: u32,
    /// When the current attempt started.
    pub(crate) started: Instant,
    pub(crate) shared: Arc<Shared>,
}

impl RetryState {
    /// How long to wait before retrying after `err`, or `None` to return it.
    fn decide(&mut self, err: &Error) -> Option<Duration> {
        let policy = &self.shared.policy;
        if self.retries >= self.max_retries || !policy.is_retryable(err) {
            return None;
        }
        let remaining = self.deadline.map(|d| d.remaining());
        let fits = |d: Duration| remaining.is_none_or(|r| d < r);
        let delay = match err.retry_after() {
            Some(hint) => {
                // A hint too long to wait for goes back at once, so a fallback can move on.
                if !fits(hint) {
                    // Within the cap it was a wait the retry needed: time ran out, as below.
                    if policy.retry_after_delay(hint).is_some() {
                        self.note_cut_short();
                    }
                    return None;
                }
                let wait = policy.retry_after_delay(hint)?;
                Some(wait).filter(|d| fits(*d)).unwrap_or(hint)
            }
            None => {
                let backoff = policy.backoff(self.retries);
                if !fits(backoff) {
                    self.note_cut_short();
                    return None;
                }
                backoff
            }
        };
        if let Some(budget) = &self.shared.budget {
            if !budget.withdraw() {
                let model = self
                    .request
                    .as_ref()
                    .and_then(|r| r.extensions().get::<Attempt>());
                crate::observe::budget_refused(model.map_or("unknown", |a| a.model()), err.kind());
                return None;
            }
        }
        let attempt = self
            .request
            .as_ref()
            .and_then(|r| r.extensions().get::<Attempt>());
        let retry = self.first_retry + self.retries;
        let model = attempt
            .map(|a| a.model.clone())
            .or_else(|| err.model().map(Arc::from))
            .unwrap_or_else(|| Arc::from("unknown"));
        tracing::debug!(
            model = &*model,
            retry = retry + 1,
            kind = err.kind().as_str(),
            delay_ms = delay.as_millis() as u64,
            "retrying the same model"
        );
        crate::observe::retrying(&model, err.kind());
        if let Some(log) = &self.log {
            // The call's log ends up in errors and `ServedBy`: the request's own
            // credentials are taken out of what the upstream said first.
            let mut error = err.clone();
            if let Some(r) = &self.request {
                error.scrub_credentials(&Credentials::of(r.headers()));
            }
            log.push(AttemptRecord {
                index: attempt.map_or(0, |a| a.index),
                model,
                retry,
                elapsed: self.started.elapsed(),
                error,
            });
        }
        self.retries += 1;
        Some(delay)
    }

    /// A retry was due but the deadline leaves no room for its wait: the error goes back
    /// (a fallback may still try another model), and the call's log says that time, not
    /// the models, ran out.
    fn note_cut_short(&self) {
        if let Some(log) = &self.log {
            log.note_cut_short();
        }
    }

    /// The request of the next retry, with its retry number in `Attempt`.
    fn next_request(&mut self) -> Request<Full<Bytes>> {
        let mut req = if self.retries >= self.max_retries {
            self.request.take()
        } else {
            self.request.as_ref().map(crate::body::clone_request)
        }
        .expect("a retry is only started while the request is kept");
        if let Some(a) = req.extensions_mut().get_mut::<Attempt>() {
            a.retry = self.first_retry + self.retries;
        }
        self.started = Instant::now();
        req
    }
}

pin_project! {
    #[project = PhaseProj]
    enum Phase<F> {
        Calling {
            #[pin]
            fut: F,
        },
        Sleeping {
            #[pin]
            sleep: Sleep,
        },
        Readying,
    }
}

pin_project! {
    /// Response future of [`Retry`](super::Retry).
    pub struct ResponseFuture<S>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        phase: Phase<S::Future>,
        service: S,
        state: Option<RetryState>,
        last_error: Option<Error>,
        // The span and metrics of the try in flight.
        obs: TryObs,
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<Request<Full<Bytes>>>,
{
    pub(crate) fn new(fut: S::Future, service: S, state: Option<RetryState>, obs: TryObs) -> Self {
        ResponseFuture {
            phase: Phase::Calling { fut },
            service,
            state,
            last_error: None,
            obs,
        }
    }
}

impl<S, B> Future for ResponseFuture<S>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.phase.as_mut().project() {
                PhaseProj::Calling { fut } => {
                    let res = {
                        let _entered = this.obs.span().enter();
                        ready!(fut.poll(cx))
                    };
                    let err = match res {
                        Ok(resp) => {
                            this.obs.finish_ok(&resp);
                            return Poll::Ready(Ok(resp));
                        }
                        Err(e) => Error::from_box(e.into()),
                    };
                    this.obs.finish_err(&err);
                    let delay = this.state.as_mut().and_then(|s| s.decide(&err));
                    let Some(delay) = delay else {
                        return Poll::Ready(Err(err));
                    };
                    *this.last_error = Some(err);
                    this.phase.set(Phase::Sleeping {
                        sleep: tokio::time::sleep(delay),
                    });
                }
                PhaseProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.phase.set(Phase::Readying);
                }
                PhaseProj::Readying => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        return Poll::Ready(Err(Error::from_box(e.into())));
                    }
                    let state = this.state.as_mut().expect("only a kept state retries");
                    if state.deadline.is_some_and(|d| d.is_expired()) {
                        let err = this.last_error.take().expect("a retry follows an error");
                        return Poll::Ready(Err(err));
                    }
                    this.last_error.take();
                    let req = state.next_request();
                    *this.obs = TryObs::start(&req);
                    let _entered = this.obs.span().enter();
                    let fut = this.service.call(req);
                    this.phase.set(Phase::Calling { fut });
                }
            }
        }
    }
}
