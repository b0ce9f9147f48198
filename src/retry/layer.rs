//! [`RetryLayer`] and its service [`Retry`].

use crate::observe::TryObs;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service};

use super::future::{ResponseFuture, RetryState};
use super::policy::RetryPolicy;
use crate::error::ConfigError;
use crate::error::{BoxError, Error};
use crate::extensions::{Attempt, AttemptLog, Deadline, LaterAttempt};

/// The settings shared by every service of one layer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) policy: RetryPolicy,
    pub(crate) budget: Option<Arc<TpsBudget>>,
}

/// Retries the same model, with full-jitter backoff, `Retry-After`, a retry budget, and
/// never past the deadline. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    /// A layer that retries as `policy` says.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a setting of `policy` cannot hold (see
    /// [`RetryPolicy::validate`]).
    pub fn new(policy: RetryPolicy) -> Result<Self, ConfigError> {
        policy.validate(None)?;
        let budget = policy.make_budget();
        Ok(RetryLayer {
            shared: Arc::new(Shared { policy, budget }),
        })
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }

    /// The retry budget every service of this layer shares (`None` without a budget).
    pub fn budget(&self) -> Option<&Arc<TpsBudget>> {
        self.shared.budget.as_ref()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Retry<S> {
    crate::service::inner_service_accessors!();
}

impl<S, B> Service<Request<Full<Bytes>>> for Retry<S>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        crate::service::poll_inner(&mut self.inner, cx)
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let ext = req.extensions();
        // Only a call's first attempt earns retries: see `LaterAttempt`.
        if let (Some(budget), None) = (&shared.budget, ext.get::<LaterAttempt>()) {
            budget.deposit();
        }
        let attempt = ext.get::<Attempt>();
        let max_retries = attempt
            .and_then(|a| a.max_retries)
            .unwrap_or(shared.policy.max_retries);
        // Keep a copy to replay only when a retry is possible.
        let state = (max_retries > 0).then(|| RetryState {
            request: Some(crate::body::clone_request(&req)),
            deadline: ext.get::<Deadline>().copied(),
            log: ext.get::<AttemptLog>().cloned(),
            first_retry: attempt.map_or(0, |a| a.retry),
            max_retries,
            retries: 0,
            started: Instant::now(),
            shared,
        });
        let obs = TryObs::start(&req);
        let fut = {
            let _entered = obs.span().enter();
            inner.call(req)
        };
        ResponseFuture::new(fut, inner, state, obs)
    }
}
