//! [`ResponseBody`]: what the classify layer returns.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::watch::Watcher;
use crate::error::{BoxError, Error};

pin_project! {
    #[project = Proj]
    /// The response body of [`Classify`](super::Classify): the bytes the
    /// layer already read (a buffered prefix), then the rest of the upstream body. The
    /// bytes are exactly the upstream's.
    ///
    /// For a stream (see [`crate::stream`]) the rest is watched: an error event, an end
    /// without `[DONE]` nor a finish reason, or an idle gap over the limit ends the body
    /// with one error frame
    /// (the bytes before the failing event are delivered first). A read error of the
    /// upstream body is an error frame too (`StreamInterrupted` for a stream, `Transport`
    /// otherwise).
    pub struct ResponseBody<B> {
        prefix: Bytes,
        pending: Option<Error>,
        trailers: Option<HeaderMap>,
        #[pin]
        rest: Option<B>,
        watch: Option<Box<Watcher>>,
        // Bytes of a stream event whose blank line has not come yet: delivered with it,
        // so an error event is never delivered in part.
        carry: Bytes,
        // Boxed (only for streams with an idle limit) so the body stays `Unpin`.
        idle: Option<Pin<Box<Sleep>>>,
        idle_limit: Duration,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(prefix: Bytes, trailers: Option<HeaderMap>, rest: Option<B>) -> Self {
        ResponseBody {
            prefix,
            pending: None,
            trailers,
            rest,
            watch: None,
            carry: Bytes::new(),
            idle: None,
            idle_limit: Duration::ZERO,
        }
    }

    /// The prefix, then one error frame.
    pub(crate) fn failed(prefix: Bytes, error: Error) -> Self {
        ResponseBody {
            pending: Some(error),
            ..Self::new(prefix, None, None)
        }
    }

    /// The prefix, then the rest under watch (and the idle limit, when one is set).
    pub(crate) fn watched(
        prefix: Bytes,
        carry: Bytes,
        trailers: Option<HeaderMap>,
        rest: Option<B>,
        watch: Box<Watcher>,
        idle: Option<Duration>,
    ) -> Self {
        let (idle, idle_limit) = match (idle, rest.is_some()) {
            (Some(limit), true) => (Some(Box::pin(tokio::time::sleep(limit))), limit),
            _ => (None, Duration::ZERO),
        };
        ResponseBody {
            prefix,
            pending: None,
            trailers,
            rest,
            watch: Some(watch),
            carry,
            idle,
            idle_limit,
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("prefix_len", &self.prefix.len())
            .field("rest", &self.rest.is_some())
            .field("watch", &self.watch)
            .finish()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let mut this = self.project();
        if !this.prefix.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(this.prefix)))));
        }
        if let Some(e) = this.pending.take() {
            this.rest.set(None);
            *this.idle = None;
            *this.watch = None;
            return Poll::Ready(Some(Err(e)));
        }
        while let Some(rest) = this.rest.as_mut().as_pin_mut() {
            let out = match rest.poll_frame(cx) {
                Poll::Pending => return poll_idle(&mut this, cx),
                Poll::Ready(Some(Ok(frame))) => on_frame(&mut this, frame),
                Poll::Ready(Some(Err(e))) => Some(Err(on_read_error(&mut this, e.into()))),
                Poll::Ready(None) => on_end(&mut this),
            };
            if out.is_some() {
                return Poll::Ready(out);
            }
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty()
            && self.pending.is_none()
            && self.carry.is_empty()
            && self.trailers.is_none()
            && match &self.rest {
                None => true,
                Some(r) => self.watch.is_none() && r.is_end_stream(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or(SizeHint::with_exact(0), |r| r.size_hint());
        let n = (self.prefix.len() + self.carry.len()) as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(n));
        if let Some(u) = rest.upper() {
            if self.watch.is_none() && self.pending.is_none() {
                hint.set_upper(u.saturating_add(n));
            }
        }
        hint
    }
}

/// What one step of the rest gives: a frame or an error to return, or `None` to read on.
type Step = Option<Result<Frame<Bytes>, Error>>;

/// The rest has nothing yet: past the idle limit the watch decides (a stall error frame,
/// or, when the classifier lets a stall pass, a wait without a limit).
fn poll_idle<B>(this: &mut Proj<'_, B>, cx: &mut Context<'_>) -> Poll<Step> {
    let stalled = this
        .idle
        .as_mut()
        .is_some_and(|s| s.as_mut().poll(cx).is_ready());
    if !stalled {
        return Poll::Pending;
    }
    *this.idle = None;
    let failure = this.watch.as_ref().and_then(|w| w.stalled());
    match (failure, this.watch.take()) {
        (Some(f), Some(w)) => {
            this.rest.set(None);
            *this.carry = Bytes::new();
            Poll::Ready(Some(Err(w.error(f))))
        }
        (_, w) => {
            *this.watch = w;
            Poll::Pending
        }
    }
}

/// A frame of the rest. Unwatched it passes as is; watched, its data is fed to the watch
/// and delivered up to the last complete event (the rest is carried), or up to a failing
/// event, which ends the body with an error frame.
fn on_frame<B>(this: &mut Proj<'_, B>, frame: Frame<Bytes>) -> Step {
    let Some(watch) = this.watch.as_mut() else {
        return Some(Ok(frame));
    };
    let data = match frame.into_data() {
        Ok(data) => data,
        Err(frame) => return Some(Ok(frame)),
    };
    if let Some(sleep) = this.idle.as_mut() {
        sleep.as_mut().reset(Instant::now() + *this.idle_limit);
    }
    let carry_start = watch.position() - this.carry.len() as u64;
    let failure = watch.feed(&data);
    let joined = join(std::mem::take(this.carry), data);
    let up_to = failure
        .as_ref()
        .map_or_else(|| watch.complete_up_to(), |f| f.at);
    let clean = joined.slice(..offset_in(up_to, carry_start, joined.len()));
    match failure {
        None => *this.carry = joined.slice(clean.len()..),
        Some(f) => {
            *this.pending = Some(watch.error(f));
            *this.watch = None;
            this.rest.set(None);
            *this.idle = None;
        }
    }
    deliver(this, clean)
}

/// A read error of the rest: `StreamInterrupted` under watch, `Transport` otherwise.
fn on_read_error<B>(this: &mut Proj<'_, B>, e: BoxError) -> Error {
    this.rest.set(None);
    *this.idle = None;
    *this.carry = Bytes::new();
    match this.watch.take() {
        Some(w) => w.interrupted(e),
        None => Error::from_box(e),
    }
}

/// The rest ended: under watch the carried bytes go out (cut before a failing last event)
/// and an end the watch calls a failure becomes the error frame after them.
fn on_end<B>(this: &mut Proj<'_, B>) -> Step {
    this.rest.set(None);
    *this.idle = None;
    let mut w = this.watch.take()?;
    let carry = std::mem::take(this.carry);
    let carry_start = w.position() - carry.len() as u64;
    let clean = match w.finish() {
        Some(f) => {
            let cut = offset_in(f.at, carry_start, carry.len());
            *this.pending = Some(w.error(f));
            carry.slice(..cut)
        }
        None => carry,
    };
    deliver(this, clean)
}

/// Clean bytes first, then a pending error; `None` when there is neither.
fn deliver<B>(this: &mut Proj<'_, B>, clean: Bytes) -> Step {
    if !clean.is_empty() {
        return Some(Ok(Frame::data(clean)));
    }
    this.pending.take().map(Err)
}

/// `a` then `b`, copying only when both hold bytes.
fn join(a: Bytes, b: Bytes) -> Bytes {
    if a.is_empty() {
        return b;
    }
    let mut m = bytes::BytesMut::with_capacity(a.len() + b.len());
    m.extend_from_slice(&a);
    m.extend_from_slice(&b);
    m.freeze()
}

/// Stream offset `at` as an index into a buffer that starts at `start`, clamped to `len`.
fn offset_in(at: u64, start: u64, len: usize) -> usize {
    usize::try_from(at.saturating_sub(start))
        .unwrap_or(usize::MAX)
        .min(len)
}
