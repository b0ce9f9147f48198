//! Two attempts at once: an attempt armed to be hedged, and the race with its hedge (see
//! [`hedge`](super::hedge)).
//!
//! The earlier attempt runs alone until the hedge timer fires; then the hedge's request
//! waits for the service to be ready and goes upstream. The first of the two futures to
//! resolve `Ok` (for a stream: its first content event) wins, and the race is dropped with
//! the other one in it, which cancels it. A failure while the other still runs is an
//! ordinary failed attempt and the other carries on alone; the last one's failure hands
//! the walk back to the call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::future::{CallCtx, Current, Step};
use crate::error::{BoxError, Error};

/// The attempts of a call that may hedge.
pub(crate) struct Race<F> {
    /// The earlier attempt; the call's `cur` describes it while it runs.
    earlier: Option<Pin<Box<F>>>,
    /// The hedge, once called.
    hedge: Option<Pin<Box<F>>>,
    /// The hedge's request, until the service is ready for it.
    queued: Option<Request<Full<Bytes>>>,
    /// The hedge's attempt while the earlier one runs (after that, the call's `cur`).
    cur: Current,
    timer: Option<Pin<Box<Sleep>>>,
}

/// What a poll of one attempt decided: `Some` ends the race.
type Settled<B> = Option<Result<Response<B>, Step>>;

// `Step` is large (it holds a request) and moved once, as in the call's future: boxing it
// would add an allocation per attempt.
#[allow(clippy::result_large_err)]
impl<F> Race<F> {
    /// The attempt `fut`, hedged at `at` unless it answers first.
    pub(super) fn armed(fut: F, at: Instant) -> Self {
        Race {
            earlier: Some(Box::pin(fut)),
            hedge: None,
            queued: None,
            cur: Current::default(),
            timer: Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Polls every attempt: `Ok` is the winner's response, `Err` what the call does next.
    pub(super) fn poll<S, B>(
        &mut self,
        ctx: &mut CallCtx<S>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<B>, Step>>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>, Future = F>,
        S::Error: Into<BoxError>,
        F: Future<Output = Result<Response<B>, S::Error>>,
    {
        loop {
            if let Some(done) = self.poll_earlier(ctx, cx) {
                return Poll::Ready(done);
            }
            if let Some(done) = self.poll_hedge(ctx, cx) {
                return Poll::Ready(done);
            }
            match self.poll_queued(ctx, cx) {
                Some(Ok(())) => continue,
                Some(Err(step)) => return Poll::Ready(Err(step)),
                None => {}
            }
            if !self.fire(ctx, cx) {
                return Poll::Pending;
            }
        }
    }

    fn poll_earlier<S, B>(&mut self, ctx: &mut CallCtx<S>, cx: &mut Context<'_>) -> Settled<B>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>, Future = F>,
        S::Error: Into<BoxError>,
        F: Future<Output = Result<Response<B>, S::Error>>,
    {
        let res = poll_slot(&mut self.earlier, cx)?;
        self.timer = None;
        match res {
            Err(e) if self.hedge.is_some() || self.queued.is_some() => {
                if let Some(e) = ctx.failed(e) {
                    return Some(Err(Step::Fail(e)));
                }
                // The hedge carries on alone: the call's attempt is it now.
                ctx.swap_current(&mut self.cur);
                None
            }
            // Won (a hedge in flight is dropped with the race), or failed alone.
            res => Some(ctx.answered(res)),
        }
    }

    fn poll_hedge<S, B>(&mut self, ctx: &mut CallCtx<S>, cx: &mut Context<'_>) -> Settled<B>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>, Future = F>,
        S::Error: Into<BoxError>,
        F: Future<Output = Result<Response<B>, S::Error>>,
    {
        let res = poll_slot(&mut self.hedge, cx)?;
        if self.earlier.is_none() {
            return Some(ctx.answered(res));
        }
        ctx.swap_current(&mut self.cur);
        let out = match res {
            // Won: the earlier attempt is dropped with the race.
            Ok(resp) => Some(ctx.answered(Ok(resp))),
            Err(e) => ctx.failed(e).map(|e| Err(Step::Fail(e))),
        };
        if out.is_none() {
            // The earlier attempt carries on alone.
            ctx.swap_current(&mut self.cur);
        }
        out
    }

    /// Sends the queued hedge once the service is ready: `Some(Ok)` when something
    /// changed (poll again), `Some(Err)` when the call ends.
    fn poll_queued<S, B>(
        &mut self,
        ctx: &mut CallCtx<S>,
        cx: &mut Context<'_>,
    ) -> Option<Result<(), Step>>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>, Future = F>,
        S::Error: Into<BoxError>,
    {
        self.queued.as_ref()?;
        let Poll::Ready(ready) = ctx.service().poll_ready(cx) else {
            return None;
        };
        let req = self.queued.take()?;
        match ready {
            Ok(()) => {
                self.hedge = Some(Box::pin(ctx.service().call(req)));
                ctx.hedge_sent();
                Some(Ok(()))
            }
            Err(e) if self.earlier.is_none() => Some(Err(Step::Fail(Error::from_box(e.into())))),
            Err(e) => {
                let e = Error::from_box(e.into());
                tracing::debug!(kind = e.kind().as_str(), "the hedge could not be sent");
                Some(Ok(()))
            }
        }
    }

    /// When the timer fires: queues the hedge. `true` when one was queued.
    fn fire<S>(&mut self, ctx: &mut CallCtx<S>, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer = None;
        match ctx.hedge_request() {
            Some((req, cur)) => {
                self.queued = Some(req);
                self.cur = cur;
                true
            }
            None => false,
        }
    }
}

/// Polls the attempt in `slot`, emptying it when it resolves.
fn poll_slot<F, T, E>(
    slot: &mut Option<Pin<Box<F>>>,
    cx: &mut Context<'_>,
) -> Option<Result<T, Error>>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    let Poll::Ready(res) = slot.as_mut()?.as_mut().poll(cx) else {
        return None;
    };
    *slot = None;
    Some(res.map_err(|e| Error::from_box(e.into())))
}
