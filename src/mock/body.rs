//! [`MockBody`]: the stand-in's response body, with scripted waits, stalls and aborts.

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// The response body of [`MockOpenRouter`](super::MockOpenRouter).
///
/// A JSON answer is one data frame; an SSE stream is one data frame per event (each
/// keep-alive comment, each `data:` event, `data: [DONE]`), with the scripted waits
/// between them done with `tokio::time` (exact under paused time). A stalled stream stays
/// pending forever; an aborted one yields an `io::Error` of kind `ConnectionReset`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use http_body_util::BodyExt;
/// use tower::ServiceExt;
/// use tower_openrouter::mock::MockOpenRouter;
///
/// let mock = MockOpenRouter::new();
/// let req = http::Request::post("/api/v1/chat/completions")
///     .body(http_body_util::Full::from(r#"{"model":"a/b"}"#))
///     .unwrap();
/// let resp = mock.oneshot(req).await.unwrap();
/// let bytes = resp.into_body().collect().await.unwrap().to_bytes();
/// assert!(bytes.starts_with(br#"{"id":"gen-mock-1","object":"chat.completion""#));
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MockBody {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// An SSE stream: its length is never announced (sent chunked, like OpenRouter's).
    streaming: bool,
    /// Whether an abort has yielded once (so what came before it is flushed first).
    abort_yielded: bool,
    /// Holds the request's slot of its model's capacity until the body is dropped.
    pub(crate) in_flight: Option<super::capacity::InFlight>,
}

#[derive(Debug)]
pub(crate) enum Step {
    Wait(Duration),
    Data(Bytes),
    Stall,
    Abort,
}

impl MockBody {
    /// An empty body.
    pub fn empty() -> Self {
        MockBody::default()
    }

    /// A body of one data frame.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        MockBody::from_steps(vec![Step::Data(bytes.into())])
    }

    pub(crate) fn from_steps(steps: Vec<Step>) -> Self {
        MockBody {
            steps: steps.into(),
            ..MockBody::default()
        }
    }

    pub(crate) fn stream(steps: Vec<Step>) -> Self {
        MockBody {
            streaming: true,
            ..MockBody::from_steps(steps)
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                std::task::ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            match this.steps.pop_front() {
                None => {
                    this.in_flight = None;
                    return Poll::Ready(None);
                }
                Some(Step::Wait(d)) => {
                    if !d.is_zero() {
                        this.sleep = Some(Box::pin(tokio::time::sleep(d)));
                    }
                }
                Some(Step::Data(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Some(Step::Stall) => {
                    // Never woken: the stream is stuck for good.
                    this.steps.push_front(Step::Stall);
                    return Poll::Pending;
                }
                Some(Step::Abort) if !this.abort_yielded => {
                    // Give a server the chance to send what came before, as a
                    // connection that breaks mid-stream would have.
                    this.abort_yielded = true;
                    this.steps.push_front(Step::Abort);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(Step::Abort) => {
                    this.steps.clear();
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "mock: stream aborted by the script",
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty() && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let mut len = 0u64;
        let mut exact = true;
        for step in &self.steps {
            match step {
                Step::Data(b) => len += b.len() as u64,
                Step::Wait(_) => {}
                Step::Stall | Step::Abort => exact = false,
            }
        }
        if exact && !self.streaming {
            SizeHint::with_exact(len)
        } else {
            let mut hint = SizeHint::new();
            hint.set_lower(len);
            hint
        }
    }
}
