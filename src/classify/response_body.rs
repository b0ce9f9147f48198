//! [`ResponseBody`]: what the classify layer returns.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::error::{BoxError, Error};

pin_project! {
    /// The response body of [`ClassifyService`](super::ClassifyService): the bytes the
    /// layer already read (a buffered prefix), then the rest of the upstream body. The
    /// bytes are exactly the upstream's. A read error of the upstream body is a
    /// [`crate::Error`] of kind `Transport`.
    pub struct ResponseBody<B> {
        prefix: Bytes,
        trailers: Option<HeaderMap>,
        #[pin]
        rest: Option<B>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(prefix: Bytes, trailers: Option<HeaderMap>, rest: Option<B>) -> Self {
        ResponseBody {
            prefix,
            trailers,
            rest,
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("prefix_len", &self.prefix.len())
            .field("rest", &self.rest.is_some())
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
        if let Some(rest) = this.rest.as_mut().as_pin_mut() {
            match rest.poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(e))) => {
                    this.rest.set(None);
                    return Poll::Ready(Some(Err(Error::from_box(e.into()))));
                }
                Poll::Ready(None) => this.rest.set(None),
            }
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or(SizeHint::with_exact(0), |r| r.size_hint());
        let n = self.prefix.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(n));
        if let Some(u) = rest.upper() {
            hint.set_upper(u.saturating_add(n));
        }
        hint
    }
}
