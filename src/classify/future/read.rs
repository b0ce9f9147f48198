//! The `Reading` state: a body read whole (or up to its cap) before the response goes
//! back, for the 200-with-error check of a 2xx or for the classifier of an error status.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::response::Parts;
use http::{HeaderMap, Response, StatusCode};
use http_body::Body;

use super::{Ctx, Output, RequestInfo};
use crate::body::Collected;
use crate::classify::layer::Limits;
use crate::classify::probe::upstream_info;
use crate::classify::{BodyFailure, ClassifyOutcome, Outcome, ResponseBody};
use crate::error::{BoxError, Error};

/// A response whose body is being read.
///
/// `finish` takes the parts and body out through `&mut self` (hence the `Option`s) rather
/// than moving the whole state out of the future: this runs on every request, and the
/// extra move of the state showed in instruction counts.
pub(super) struct Reading<B> {
    parts: Option<Parts>,
    body: Option<B>,
    buf: Collected,
    trailers: Option<HeaderMap>,
    // true: a 2xx read for the 200-with-error check (over the cap it passes through
    // unchecked); false: an error body read for the classifier (cut at the cap).
    success: bool,
}

/// Why a read stopped.
pub(super) enum ReadEnd {
    /// The body ended.
    Ended,
    /// The cap was reached; the rest is unread.
    Capped,
    /// The body failed to read.
    Failed(BoxError),
}

impl<B> Reading<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    #[inline]
    pub(super) fn new(parts: Parts, body: B, success: bool) -> Self {
        Reading {
            parts: Some(parts),
            body: Some(body),
            buf: Collected::default(),
            trailers: None,
            success,
        }
    }

    /// Reads until the end, a read error or the cap. A 2xx may pass its cap by a chunk
    /// (which is how a body too large to check is told apart from one that fits); an
    /// error body stops as soon as it reaches it.
    #[inline]
    pub(super) fn poll_read(&mut self, cx: &mut Context<'_>, limits: Limits) -> Poll<ReadEnd> {
        let limit = if self.success {
            limits.success
        } else {
            limits.error
        };
        let body = self.body.as_mut().expect("polled after completion");
        loop {
            if self.buf.len() > limit || (!self.success && self.buf.len() >= limit) {
                return Poll::Ready(ReadEnd::Capped);
            }
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                None => return Poll::Ready(ReadEnd::Ended),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.push(data),
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            self.trailers = Some(t);
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(ReadEnd::Failed(e.into())),
            }
        }
    }

    /// The verdict on what was read: an error, or the response with the read bytes
    /// replayed first.
    #[inline]
    pub(super) fn finish<C: ClassifyOutcome>(&mut self, end: ReadEnd, ctx: &Ctx<C>) -> Output<B> {
        let parts = self.parts.take().expect("polled after completion");
        let body = self.body.take();
        let bytes = std::mem::take(&mut self.buf).freeze();
        let trailers = self.trailers.take();
        if self.success {
            finish_success(parts, body, bytes, trailers, end, ctx)
        } else {
            finish_error(parts, body, bytes, trailers, end, ctx)
        }
    }
}

/// A 2xx: checked for an embedded error when it was read whole, then judged (is it whole
/// JSON, or the event stream a stream request needs?); on success its facts go into the
/// response extensions. A body cut short, over the cap or no answer at all is the error
/// the classifier makes of it ([`Outcome::Body`]), or, when the classifier accepts it, goes
/// back as it came.
#[inline]
fn finish_success<B, C: ClassifyOutcome>(
    mut parts: Parts,
    body: Option<B>,
    bytes: Bytes,
    trailers: Option<HeaderMap>,
    end: ReadEnd,
    ctx: &Ctx<C>,
) -> Output<B> {
    match end {
        ReadEnd::Failed(e) => return Err(ctx.read_failure(parts.status, e)),
        // Over the cap: prefix + rest, unchecked, if the classifier lets it pass.
        ReadEnd::Capped => {
            ctx.too_large(parts.status, "the body passed")?;
            return Ok(Response::from_parts(
                parts,
                ResponseBody::new(bytes, None, body),
            ));
        }
        ReadEnd::Ended => {}
    }
    ctx.classify(&parts, &bytes)?;
    if ctx.info.stream {
        ctx.body_failure(parts.status, BodyFailure::NotEventStream)?;
    } else if has_body(parts.status, &ctx.info) {
        match upstream_info(&bytes, crate::observe::listening()) {
            Ok(Some(info)) => {
                parts.extensions.insert(info);
            }
            Ok(None) => {}
            Err(failure) => ctx.body_failure(parts.status, failure)?,
        }
    }
    Ok(Response::from_parts(
        parts,
        ResponseBody::new(bytes, trailers, None),
    ))
}

/// Whether a 2xx has a body to judge (not the answer to `HEAD`, not a 204 or 205).
fn has_body(status: StatusCode, info: &RequestInfo) -> bool {
    !info.bodiless && !matches!(status.as_u16(), 204 | 205)
}

/// An error status: the classifier sees the body cut at the cap (the bytes are kept whole
/// in case it calls the outcome a success, and the response goes back as it came).
fn finish_error<B, C: ClassifyOutcome>(
    parts: Parts,
    body: Option<B>,
    bytes: Bytes,
    trailers: Option<HeaderMap>,
    end: ReadEnd,
    ctx: &Ctx<C>,
) -> Output<B> {
    ctx.classify(&parts, &bytes[..bytes.len().min(ctx.limits.error)])?;
    let rest = match end {
        ReadEnd::Ended => None,
        ReadEnd::Capped => body,
        ReadEnd::Failed(e) => return Err(ctx.client_error(e)),
    };
    Ok(Response::from_parts(
        parts,
        ResponseBody::new(bytes, trailers, rest),
    ))
}
impl<C: ClassifyOutcome> Ctx<C> {
    /// The classifier's verdict on a response read: `Err` with the request's model, or
    /// `Ok` for a success.
    fn classify(&self, parts: &Parts, body: &[u8]) -> Result<(), Error> {
        self.verdict(Outcome::Response {
            status: parts.status,
            headers: &parts.headers,
            body,
        })
    }

    /// The classifier's verdict on a 2xx body that is no answer (`Ok`: it lets it pass).
    fn body_failure(&self, status: StatusCode, failure: BodyFailure) -> Result<(), Error> {
        self.verdict(Outcome::Body { status, failure })
            .map_err(|e| match self.limits.truncated {
                Some(action) if failure == BodyFailure::Truncated => e.with_action(action),
                _ => e,
            })
    }

    /// A 2xx body over the cap (`what` says how it was found out): the classifier's
    /// error, with the cap in its detail.
    pub(super) fn too_large(&self, status: StatusCode, what: &str) -> Result<(), Error> {
        self.body_failure(status, BodyFailure::TooLarge)
            .map_err(|e| {
                e.with_detail(format!(
                    "{what} the response body limit of {} bytes",
                    self.limits.success
                ))
            })
    }

    /// A 2xx body that failed to read: cut short, whatever had come (the upstream had
    /// answered, so tokens may be billed). A classifier that lets that pass still cannot
    /// make a response of it: then it is the client's error.
    fn read_failure(&self, status: StatusCode, err: BoxError) -> Error {
        let err = match err.downcast::<Error>() {
            Ok(ours) => return *ours,
            Err(err) => err,
        };
        match self.body_failure(status, BodyFailure::Truncated) {
            Err(e) => e.with_source(err),
            Ok(()) => self.client_error(err),
        }
    }

    fn verdict(&self, outcome: Outcome<'_>) -> Result<(), Error> {
        match self.classifier.classify(outcome) {
            Some(c) => Err(self.or_model(c.into_error())),
            None => Ok(()),
        }
    }
}
