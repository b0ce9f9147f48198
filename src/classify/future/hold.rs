//! The `Peeking` state: a 2xx event stream held until its first content event (see
//! [`crate::stream`]), then released with the held bytes replayed and the rest watched.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::response::Parts;
use http::{HeaderMap, Response};
use http_body::Body;
use tokio::time::Sleep;

use super::{Ctx, Output};
use crate::body::Collected;
use crate::classify::watch::{Failure, Watcher};
use crate::classify::{ClassifyOutcome, ResponseBody};
use crate::error::BoxError;

/// A stream being held.
///
/// `release` takes the parts, body and watch out through `&mut self` (hence the
/// `Option`s) rather than moving the whole state out of the future (a move that showed in
/// instruction counts).
pub(super) struct Hold<B> {
    parts: Option<Parts>,
    body: Option<B>,
    held: Collected,
    trailers: Option<HeaderMap>,
    // Boxed: it moves into the response body, which stays small for the plain case.
    watch: Option<Box<Watcher>>,
}

impl<B> Hold<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    #[inline]
    pub(super) fn new<C: ClassifyOutcome>(parts: Parts, body: B, ctx: &Ctx<C>) -> Self {
        let classifier: Arc<dyn ClassifyOutcome> = ctx.classifier.clone();
        let info = &ctx.info;
        let watch = Watcher::new(
            classifier,
            info.messages,
            info.model.clone(),
            info.hook.clone(),
        )
        .responses_api(info.responses)
        .observe(info.op);
        Hold {
            parts: Some(parts),
            body: Some(body),
            held: Collected::default(),
            trailers: None,
            watch: Some(Box::new(watch)),
        }
    }

    /// Reads and holds chunks until content, a failure, the end, the hold's cap (the
    /// success body limit) or the first-token limit, then [`release`](Self::release)s the
    /// hold. A read error is the client's error.
    ///
    /// It releases at each stop itself, rather than returning why it stopped: a failure
    /// is large, and passing it out through `poll` cost copies on every stream.
    #[inline]
    pub(super) fn poll_hold<C: ClassifyOutcome>(
        &mut self,
        cx: &mut Context<'_>,
        first_token: Pin<&mut Option<Sleep>>,
        ctx: &Ctx<C>,
    ) -> Poll<Output<B>> {
        let (Some(body), Some(watch)) = (self.body.as_mut(), self.watch.as_mut()) else {
            panic!("polled after completion")
        };
        loop {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => {
                    let stall = ready!(poll_first_token(cx, first_token, watch));
                    return Poll::Ready(self.release(false, Some(stall), ctx.info.idle));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let failure = watch.feed(&data);
                        self.held.push(data);
                        if failure.is_some()
                            || watch.content_seen()
                            || self.held.len() > ctx.limits.success
                        {
                            return Poll::Ready(self.release(false, failure, ctx.info.idle));
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            self.trailers = Some(t);
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(ctx.client_error(e.into())));
                }
                Poll::Ready(None) => {
                    let failure = watch.finish();
                    return Poll::Ready(self.release(true, failure, ctx.info.idle));
                }
            }
        }
    }

    /// Ends the hold (`ended`: the upstream body ended, nothing is left to watch): an error
    /// for a failure before content, or the response whose body replays the held bytes
    /// (cut before a failure after content) and watches the rest.
    #[inline]
    fn release(
        &mut self,
        ended: bool,
        failure: Option<Failure>,
        idle: Option<Duration>,
    ) -> Output<B> {
        let mut parts = self.parts.take().expect("polled after completion");
        let mut watch = self.watch.take().expect("polled after completion");
        let rest = if ended { None } else { self.body.take() };
        let trailers = self.trailers.take();
        let held = std::mem::take(&mut self.held).freeze();
        if let Some(info) = watch.take_info() {
            parts.extensions.insert(info);
        }
        let body = match failure {
            Some(f) if !f.after_content => return Err(watch.error(f)),
            Some(f) => {
                let cut = usize::try_from(f.at).unwrap_or(usize::MAX).min(held.len());
                ResponseBody::failed(held.slice(..cut), watch.error(f))
            }
            None if rest.is_none() => ResponseBody::new(held, trailers, None),
            None => {
                // Events not complete yet are delivered with the rest of their bytes.
                let cut = usize::try_from(watch.complete_up_to())
                    .unwrap_or(usize::MAX)
                    .min(held.len());
                let carry = held.slice(cut..);
                watch.mark_delivered();
                ResponseBody::watched(held.slice(..cut), carry, trailers, rest, watch, idle)
            }
        };
        Ok(Response::from_parts(parts, body))
    }
}

/// The upstream has nothing yet: a stall once the first-token limit passes, unless the
/// classifier lets it pass (then the hold waits on, without a limit).
fn poll_first_token(
    cx: &mut Context<'_>,
    mut first_token: Pin<&mut Option<Sleep>>,
    watch: &Watcher,
) -> Poll<Failure> {
    let stalled = first_token
        .as_mut()
        .as_pin_mut()
        .is_some_and(|t| t.poll(cx).is_ready());
    if !stalled {
        return Poll::Pending;
    }
    first_token.set(None);
    match watch.stalled() {
        Some(f) => Poll::Ready(f),
        None => Poll::Pending,
    }
}
