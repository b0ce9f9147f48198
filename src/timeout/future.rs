//! The response future shared by [`Deadline`](super::Deadline) and
//! [`AttemptTimeout`](super::AttemptTimeout).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::{Action, BoxError, Error, ErrorKind};
use crate::extensions::AttemptLog;

/// What a timed call does when its timer fires, and how it finishes errors.
#[derive(Debug)]
pub(crate) enum Expiry {
    /// The total deadline of the call.
    Deadline {
        log: AttemptLog,
        model: Option<Arc<str>>,
    },
    /// The limit of one attempt.
    Attempt {
        limit: Duration,
        action: Action,
        model: Option<Arc<str>>,
        /// The deadline, not the attempt limit, is what runs out.
        by_deadline: bool,
    },
}

impl Expiry {
    /// The error when the timer fired (or, with a zero budget, before anything started).
    pub(crate) fn error(&self) -> Error {
        match self {
            Expiry::Deadline { log, model } => deadline_exceeded(log, model.as_ref()),
            Expiry::Attempt {
                model,
                by_deadline: true,
                ..
            } => {
                let e = Error::new(ErrorKind::DeadlineExceeded);
                match model {
                    Some(m) => e.with_model(m.clone()),
                    None => e,
                }
            }
            Expiry::Attempt {
                limit,
                action,
                model,
                by_deadline: false,
            } => {
                let e = Error::new(ErrorKind::AttemptTimeout)
                    .with_action(*action)
                    .with_detail(format!("no answer within {limit:?}"));
                match model {
                    Some(m) => e.with_model(m.clone()),
                    None => e,
                }
            }
        }
    }

    /// An inner error on its way out.
    fn finish(&self, err: Error) -> Error {
        match self {
            // A deadline error from an inner layer gets the call's attempts.
            Expiry::Deadline { log, .. }
                if err.kind() == ErrorKind::DeadlineExceeded && err.attempts().is_empty() =>
            {
                let attempts = log.snapshot();
                if attempts.is_empty() {
                    err
                } else {
                    err.with_attempts(attempts)
                }
            }
            _ => err,
        }
    }
}

/// `DeadlineExceeded` with every attempt logged so far and the model of the last one.
pub(crate) fn deadline_exceeded(log: &AttemptLog, model: Option<&Arc<str>>) -> Error {
    let attempts = log.snapshot();
    let model = attempts.last().map(|a| &a.model).or(model).cloned();
    let e = Error::new(ErrorKind::DeadlineExceeded).with_attempts(attempts);
    match model {
        Some(m) => e.with_model(m),
        None => e,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running {
            #[pin]
            inner: F,
            #[pin]
            sleep: Sleep,
        },
        Expired,
    }
}

pin_project! {
    /// Response future of [`Deadline`](super::Deadline) and
    /// [`AttemptTimeout`](super::AttemptTimeout): the inner future raced against a timer.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        expiry: Expiry,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn running(inner: F, sleep: Sleep, expiry: Expiry) -> Self {
        ResponseFuture {
            state: State::Running { inner, sleep },
            expiry,
        }
    }

    /// No time was left: the inner service was not called.
    pub(crate) fn expired(expiry: Expiry) -> Self {
        ResponseFuture {
            state: State::Expired,
            expiry,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Expired => Poll::Ready(Err(this.expiry.error())),
            StateProj::Running { inner, sleep } => {
                if let Poll::Ready(res) = inner.poll(cx) {
                    return Poll::Ready(
                        res.map_err(|e| this.expiry.finish(Error::from_box(e.into()))),
                    );
                }
                ready!(sleep.poll(cx));
                Poll::Ready(Err(this.expiry.error()))
            }
        }
    }
}
