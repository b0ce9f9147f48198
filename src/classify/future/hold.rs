//! The `Peeking` state: a 2xx event stream held until its first content event (see
//! [`crate::stream`]), then released with the held bytes replayed and the rest watched.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::response::Parts;
use http::{HeaderMap, Response};
use http_body::Body;
use tokio::time::Sleep;

use super::{Ctx, Output};
use crate::body::Collected;
use crate::classify::watch::{Failure, Watcher};
use crate::classify::{Classify, ResponseBody};
use crate::error::{BoxError, Error};

/// A stream being held.
pub(super) struct Hold<B> {
    parts: Parts,
    body: B,
    held: Collected,
    trailers: Option<HeaderMap>,
    // Boxed: it moves into the response body, which stays small for the plain case.
    watch: Box<Watcher>,
}

/// Why a hold stopped.
pub(super) struct HoldEnd {
    /// The upstream body ended (nothing is left to watch).
    ended: bool,
    /// The failure found, before or (when the hold hit its cap) after content.
    failure: Option<Failure>,
}

impl HoldEnd {
    fn stop(failure: Option<Failure>) -> Poll<Result<HoldEnd, Error>> {
        Poll::Ready(Ok(HoldEnd {
            ended: false,
            failure,
        }))
    }
}

impl<B> Hold<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub(super) fn new<C: Classify>(parts: Parts, body: B, ctx: &Ctx<C>) -> Self {
        let classifier: Arc<dyn Classify> = ctx.classifier.clone();
        let info = &ctx.info;
        let watch = Watcher::new(
            classifier,
            info.messages,
            info.model.clone(),
            info.hook.clone(),
        )
        .responses_api(info.responses);
        Hold {
            parts,
            body,
            held: Collected::default(),
            trailers: None,
            watch: Box::new(watch),
        }
    }

    /// Reads and holds chunks until content, a failure, the end, the hold's cap (the
    /// success body limit) or the first-token limit. A read error is the client's error.
    pub(super) fn poll_hold<C: Classify>(
        &mut self,
        cx: &mut Context<'_>,
        first_token: Pin<&mut Option<Sleep>>,
        ctx: &Ctx<C>,
    ) -> Poll<Result<HoldEnd, Error>> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return self.poll_first_token(cx, first_token),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let failure = self.watch.feed(&data);
                        self.held.push(data);
                        if failure.is_some()
                            || self.watch.content_seen()
                            || self.held.len() > ctx.limits.success
                        {
                            return HoldEnd::stop(failure);
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
                    return Poll::Ready(Ok(HoldEnd {
                        ended: true,
                        failure: self.watch.finish(),
                    }))
                }
            }
        }
    }

    /// The upstream has nothing yet: a stall once the first-token limit passes, unless
    /// the classifier lets it pass (then the hold waits on, without a limit).
    fn poll_first_token(
        &self,
        cx: &mut Context<'_>,
        mut first_token: Pin<&mut Option<Sleep>>,
    ) -> Poll<Result<HoldEnd, Error>> {
        let stalled = first_token
            .as_mut()
            .as_pin_mut()
            .is_some_and(|t| t.poll(cx).is_ready());
        if !stalled {
            return Poll::Pending;
        }
        first_token.set(None);
        match self.watch.stalled() {
            Some(f) => HoldEnd::stop(Some(f)),
            None => Poll::Pending,
        }
    }

    /// Ends the hold: an error before content, or the response whose body replays the
    /// held bytes (cut before a failing event) and watches the rest.
    pub(super) fn release(self, end: HoldEnd, idle: Option<Duration>) -> Output<B> {
        let Hold {
            mut parts,
            body,
            held,
            trailers,
            mut watch,
        } = self;
        let rest = if end.ended { None } else { Some(body) };
        let held = held.freeze();
        if let Some(info) = watch.take_info() {
            parts.extensions.insert(info);
        }
        let body = match end.failure {
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
