//! The time limit of one attempt, and the stream limits handed to the classify layer.

use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tower::{Layer, Service};

use super::future::{Expiry, ResponseFuture};
use crate::error::{self, ConfigError};
use crate::error::{Action, BoxError, Error};
use crate::extensions::{Attempt, Deadline, StreamLimits};

/// Limits one attempt.
///
/// The limit is the layer's default, or [`Attempt::timeout`] when the request's [`Attempt`]
/// extension sets one, always clamped to [`Deadline::remaining`]. When the limit runs out
/// the attempt ends with [`ErrorKind::AttemptTimeout`](crate::ErrorKind::AttemptTimeout),
/// whose action is [`Action::Fallback`] unless [`on_timeout`](AttemptTimeoutBuilder::on_timeout)
/// says otherwise, and which counts against the model's health. When the deadline, not the
/// attempt limit, is what cut the attempt, the error is
/// [`ErrorKind::DeadlineExceeded`](crate::ErrorKind::DeadlineExceeded) instead, so no new
/// attempt starts. With no time left at all the inner service is not called.
///
/// The layer also carries the stream limits ([`first_token`](AttemptTimeoutBuilder::first_token),
/// [`idle`](AttemptTimeoutBuilder::idle)): it inserts them as [`StreamLimits`] into the
/// request extensions (fields the request already sets are kept) and the classify layer
/// enforces them.
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutLayer {
    limit: Duration,
    action: Action,
    stream: StreamLimits,
}

/// Builds an [`AttemptTimeoutLayer`]; settings are checked by [`build`](Self::build).
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct AttemptTimeoutBuilder {
    layer: AttemptTimeoutLayer,
    deadline: Option<Duration>,
}

impl AttemptTimeoutLayer {
    /// A layer that limits every attempt to `limit` (unless [`Attempt::timeout`] says
    /// otherwise), with the default settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] (field `attempt_timeout`) when `limit` is zero.
    pub fn new(limit: Duration) -> Result<Self, ConfigError> {
        Self::builder(limit).build()
    }

    /// A builder with `limit` as the default attempt limit.
    pub fn builder(limit: Duration) -> AttemptTimeoutBuilder {
        AttemptTimeoutBuilder {
            layer: AttemptTimeoutLayer {
                limit,
                action: Action::Fallback,
                stream: StreamLimits::default(),
            },
            deadline: None,
        }
    }

    /// The default limit of one attempt.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The action of an attempt-timeout error.
    pub fn timeout_action(&self) -> Action {
        self.action
    }

    /// The stream limits the layer inserts.
    pub fn stream_limits(&self) -> StreamLimits {
        self.stream
    }
}

impl AttemptTimeoutBuilder {
    /// The action of an attempt-timeout error (default [`Action::Fallback`]; `Retry` tries
    /// the same model again, `Fatal` ends the call).
    pub fn on_timeout(mut self, action: Action) -> Self {
        self.layer.action = action;
        self
    }

    /// Longest wait for the first content event of a streamed response.
    pub fn first_token(mut self, limit: Duration) -> Self {
        self.layer.stream.first_token = Some(limit);
        self
    }

    /// Longest gap between two chunks of a streamed response.
    pub fn idle(mut self, limit: Duration) -> Self {
        self.layer.stream.idle = Some(limit);
        self
    }

    /// The total deadline the layer runs under, only to check the limits against it.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate).
    pub fn build(self) -> Result<AttemptTimeoutLayer, ConfigError> {
        self.validate()?;
        Ok(self.layer)
    }

    /// Checks the settings (what [`build`](Self::build) checks).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a limit is zero (`attempt_timeout`, `first_token_timeout`,
    /// `idle_timeout`) or longer than the [`deadline`](Self::deadline).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.layer;
        let limits = [
            ("attempt_timeout", Some(l.limit)),
            ("first_token_timeout", l.stream.first_token),
            ("idle_timeout", l.stream.idle),
        ];
        for (field, value) in limits {
            let Some(value) = value else { continue };
            error::positive(field, value)?;
            if let Some(deadline) = self.deadline {
                error::not_longer(field, value, "deadline", deadline)?;
            }
        }
        Ok(())
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout {
            inner,
            layer: *self,
        }
    }
}

/// The service of [`AttemptTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    layer: AttemptTimeoutLayer,
}

impl<S> AttemptTimeout<S> {
    crate::service::inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for AttemptTimeout<S>
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
        let attempt = ext.get::<Attempt>();
        let limit = attempt.and_then(|a| a.timeout).unwrap_or(self.layer.limit);
        let model = attempt.map(|a| a.model.clone());
        let remaining = ext.get::<Deadline>().map(Deadline::remaining);
        let by_deadline = remaining.is_some_and(|r| r < limit);
        let limit = remaining.map_or(limit, |r| r.min(limit));
        let expiry = Expiry::Attempt {
            limit,
            action: self.layer.action,
            model,
            by_deadline,
        };
        if limit.is_zero() && by_deadline {
            return ResponseFuture::expired(expiry);
        }
        let stream = self.layer.stream;
        if stream != StreamLimits::default() {
            let clamp = |d: Option<Duration>| d.map(|d| remaining.map_or(d, |r| r.min(d)));
            let limits = ext.get_or_insert_default::<StreamLimits>();
            limits.first_token = limits.first_token.or(clamp(stream.first_token));
            limits.idle = limits.idle.or(clamp(stream.idle));
        }
        let sleep = tokio::time::sleep(limit);
        ResponseFuture::running(self.inner.call(req), sleep, expiry)
    }
}
