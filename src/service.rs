//! Plumbing every middleware of the crate shares: the inner-service accessors, the
//! `poll_ready` that turns the inner error into ours, and the future that is either the
//! inner service's or an error found before calling it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::Service;

use crate::error::{BoxError, Error};

/// `get_ref`, `get_mut` and `into_inner` of a middleware whose inner service is the field
/// `inner` (tower-http's `define_inner_service_accessors!`).
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
pub(crate) use inner_service_accessors;

/// The inner service's readiness, its error made ours ([`Error::from_box`]: our own
/// errors pass through, anything else is a transport error).
pub(crate) fn poll_inner<S, R>(inner: &mut S, cx: &mut Context<'_>) -> Poll<Result<(), Error>>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    inner.poll_ready(cx).map_err(|e| Error::from_box(e.into()))
}

pin_project! {
    /// The inner service's future (its error made ours), or the error that stopped the
    /// request before the inner service was called.
    #[project = InnerOrErrorProj]
    #[derive(Debug)]
    pub(crate) enum InnerOrError<F> {
        Inner { #[pin] future: F },
        Error { error: Option<Error> },
    }
}

impl<F> InnerOrError<F> {
    pub(crate) fn inner(future: F) -> Self {
        InnerOrError::Inner { future }
    }

    pub(crate) fn error(error: Error) -> Self {
        InnerOrError::Error { error: Some(error) }
    }
}

impl<F, T, E> Future for InnerOrError<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InnerOrErrorProj::Inner { future } => {
                future.poll(cx).map_err(|e| Error::from_box(e.into()))
            }
            InnerOrErrorProj::Error { error } => {
                Poll::Ready(Err(error.take().expect("future polled after completion")))
            }
        }
    }
}
