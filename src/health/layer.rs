//! [`HealthLayer`] / [`Health`]: record each attempt's outcome, reject a cooling model.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Request;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::adaptive::Permit;
use super::breaker::Admission;
use super::tracker::{HealthTracker, ModelState};
use crate::extensions::PanicProbe;
use crate::service::InnerOrError;
use crate::{Attempt, BoxError, Error, ErrorKind, ForceAttempt};

/// Records every attempt's outcome in a [`HealthTracker`] and rejects attempts of a model
/// that is cooling down with [`ErrorKind::ModelCoolingDown`] (action
/// [`Fallback`](crate::Action::Fallback), no upstream call).
///
/// The model of an attempt is the request's [`Attempt`] extension; a request without one
/// passes through untouched and nothing is recorded. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct HealthLayer {
    tracker: HealthTracker,
}

impl HealthLayer {
    /// A layer recording into `tracker` (share the tracker with whoever else needs it,
    /// e.g. the fallback layer).
    pub fn new(tracker: HealthTracker) -> Self {
        HealthLayer { tracker }
    }

    /// The tracker.
    pub fn tracker(&self) -> &HealthTracker {
        &self.tracker
    }
}

impl<S> Layer<S> for HealthLayer {
    type Service = Health<S>;

    fn layer(&self, inner: S) -> Health<S> {
        Health {
            inner,
            tracker: self.tracker.clone(),
        }
    }
}

/// The service of [`HealthLayer`].
#[derive(Clone, Debug)]
pub struct Health<S> {
    inner: S,
    tracker: HealthTracker,
}

impl<S> Health<S> {
    /// Wraps `inner`, recording into `tracker`.
    pub fn new(inner: S, tracker: HealthTracker) -> Self {
        Health { inner, tracker }
    }

    /// The tracker.
    pub fn tracker(&self) -> &HealthTracker {
        &self.tracker
    }

    crate::service::inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for Health<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        crate::service::poll_inner(&mut self.inner, cx)
    }

    // No clone-and-swap: the inner future owns what it needs, so `self.inner` is called
    // right here. A rejected attempt leaves the inner service's readiness unused, which
    // the next `call` after `poll_ready` uses.
    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(attempt) = req.extensions().get::<Attempt>() else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        let Some(state) = self.tracker.state(&attempt.model) else {
            // More models than `max_models`: not tracked.
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        // The slot first: a probe slot claimed for a model at capacity would be wasted.
        let permit = match &state.limiter {
            Some(l) => match l.try_acquire() {
                Some(seen) => Some(Permit::new(self.tracker.clone(), l.clone(), seen)),
                None => return ResponseFuture::rejected(at_capacity(&state.name, l.limit())),
            },
            None => None,
        };
        let probe = match self.tracker.check_tracked(&state) {
            Admission::Allowed => false,
            Admission::Probe => true,
            // Panic mode's one probe: the probe slot, even before the cooldown is over
            // (admitted without it when another probe is in flight).
            Admission::CoolingDown { .. } if req.extensions().get::<PanicProbe>().is_some() => {
                self.tracker.force_tracked_probe(&state)
            }
            Admission::CoolingDown { .. } if req.extensions().get::<ForceAttempt>().is_some() => {
                false
            }
            Admission::CoolingDown { until } => {
                return ResponseFuture::rejected(cooling_down(&state.name, until));
            }
        };
        req.extensions_mut().insert(state.hook.clone());
        let recorder = Recorder {
            tracker: self.tracker.clone(),
            state,
            probe,
            done: false,
            permit,
        };
        ResponseFuture {
            kind: Kind::Tracked {
                future: self.inner.call(req),
                recorder,
            },
        }
    }
}

fn cooling_down(model: &Arc<str>, until: Instant) -> Error {
    let left = until.saturating_duration_since(Instant::now());
    let err = Error::new(ErrorKind::ModelCoolingDown).with_model(model.clone());
    if left.is_zero() {
        err.with_detail("another request is probing it")
    } else {
        err.with_retry_after(left)
    }
}

fn at_capacity(model: &Arc<str>, limit: u32) -> Error {
    Error::new(ErrorKind::ModelAtCapacity)
        .with_model(model.clone())
        .with_detail(format!("{limit} requests in flight"))
}

/// Records the outcome of a tracked attempt; gives the probe slot back if dropped first.
/// Holds the attempt's slot of the adaptive limit, if any (released when dropped).
struct Recorder {
    tracker: HealthTracker,
    state: Arc<ModelState>,
    probe: bool,
    done: bool,
    permit: Option<Permit>,
}

impl Recorder {
    fn record(&mut self, outcome: Result<(), &Error>) {
        self.done = true;
        // The limiter answers an overload alone while its limit is above min.
        let absorbed = self
            .permit
            .take()
            .is_some_and(|p| p.finish(outcome.map_err(|e| e.kind())));
        match outcome {
            Err(e) if absorbed || !e.counts_for_health() => {
                if self.probe {
                    self.tracker.release_tracked_probe(&self.state);
                }
            }
            outcome => self.tracker.record_tracked(&self.state, outcome),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // A cancelled attempt records nothing, but must not keep the probe slot.
        if !self.done && self.probe {
            self.tracker.release_tracked_probe(&self.state);
        }
    }
}

pin_project! {
    /// The future of [`Health`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        // Not tracked (a request the layer does not judge) or rejected before any call.
        Plain { #[pin] future: InnerOrError<F> },
        Tracked { #[pin] future: F, recorder: Recorder },
    }
}

impl<F> ResponseFuture<F> {
    fn passthrough(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Plain {
                future: InnerOrError::inner(future),
            },
        }
    }

    fn rejected(error: Error) -> Self {
        ResponseFuture {
            kind: Kind::Plain {
                future: InnerOrError::error(error),
            },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("health::ResponseFuture")
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Plain { future } => future.poll(cx),
            KindProj::Tracked { future, recorder } => {
                let result = ready!(future.poll(cx));
                Poll::Ready(match result {
                    Ok(response) => {
                        recorder.record(Ok(()));
                        Ok(response)
                    }
                    Err(e) => {
                        let e = Error::from_box(e.into()).or_model(&recorder.state.name);
                        recorder.record(Err(&e));
                        Err(e)
                    }
                })
            }
        }
    }
}
