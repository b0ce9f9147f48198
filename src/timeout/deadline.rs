//! The total deadline of a call.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tower::{Layer, Service};

use super::future::{Expiry, ResponseFuture};
use crate::error::{self, ConfigError};
use crate::error::{BoxError, Error};
// The service is `Deadline<S>`, as tower names its middleware; the extension it sets is the
// crate root's `Deadline`, here `CallDeadline`.
use crate::extensions::{Attempt, AttemptLog, Deadline as CallDeadline};

/// Gives every call one time budget, backoff and every attempt included.
///
/// The layer puts a [`Deadline`](crate::extensions::Deadline) into the request extensions (keeping an earlier one the
/// request already has), and an [`AttemptLog`] when there is none. Inner layers clamp their
/// waits to [`Deadline::remaining`](crate::extensions::Deadline::remaining). When the budget is gone the call ends with
/// [`ErrorKind::DeadlineExceeded`](crate::ErrorKind::DeadlineExceeded), which carries every
/// logged attempt ([`Error::last_attempt_error`]) and the model of the last one; no new
/// attempt starts.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    budget: Duration,
}

impl DeadlineLayer {
    /// A layer that gives every call `budget`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] (field `deadline`) when `budget` is zero.
    pub fn new(budget: Duration) -> Result<Self, ConfigError> {
        error::positive("deadline", budget)?;
        Ok(DeadlineLayer { budget })
    }

    /// The time budget of every call.
    pub fn budget(&self) -> Duration {
        self.budget
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            budget: self.budget,
        }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    budget: Duration,
}

impl<S> Deadline<S> {
    /// Wraps `inner`; see [`DeadlineLayer`].
    ///
    /// # Errors
    ///
    /// [`ConfigError`] (field `deadline`) when `budget` is zero.
    pub fn new(inner: S, budget: Duration) -> Result<Self, ConfigError> {
        Ok(DeadlineLayer::new(budget)?.layer(inner))
    }

    crate::service::inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        crate::service::poll_inner(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ext = req.extensions_mut();
        let mine = CallDeadline::after(self.budget);
        let deadline = match ext.get::<CallDeadline>() {
            Some(earlier) if *earlier <= mine => *earlier,
            _ => {
                ext.insert(mine);
                mine
            }
        };
        let log = match ext.get::<AttemptLog>() {
            Some(log) => log.clone(),
            None => {
                let log = AttemptLog::new();
                ext.insert(log.clone());
                log
            }
        };
        let model: Option<Arc<str>> = ext.get::<Attempt>().map(|a| a.model.clone());
        let expiry = Expiry::Deadline { log, model };
        if deadline.is_expired() {
            return ResponseFuture::expired(expiry);
        }
        let sleep = tokio::time::sleep_until(deadline.instant());
        ResponseFuture::running(self.inner.call(req), sleep, expiry)
    }
}
