//! The end of a response body that fails midway: one WARN line, and for an event stream a
//! final error event in the shape the endpoint's SDK reads, so the caller gets the
//! message rather than a bare "connection error".

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_openrouter::{BoxError, Error};

/// How a failing body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Not a stream: the error closes the connection.
    Close,
    /// Chat / completions: `data: {"error": {"code": .., "message": ..}}`.
    Chat,
    /// Responses API: `event: error` with `{"type": "error", "code": .., "message": ..}`.
    Responses,
    /// Anthropic-shaped `/messages`: `event: error` with its error envelope.
    Messages,
}

impl Ending {
    pub(crate) fn for_route(route: usize) -> Self {
        match crate::routes::ROUTES[route].0 {
            "/messages" => Ending::Messages,
            "/responses" => Ending::Responses,
            _ => Ending::Chat,
        }
    }

    /// The final event for `e`, or `None` when the error should close the body.
    fn event(self, e: &Error) -> Option<Bytes> {
        let code = e.status().map_or(502, |s| s.as_u16());
        let message = e.to_string();
        let text = match self {
            Ending::Close => return None,
            Ending::Chat => format!(
                "data: {}\n\n",
                serde_json::json!({ "error": { "code": code, "message": message, "metadata": { "kind": e.kind().as_str() } } })
            ),
            Ending::Responses => format!(
                "event: error\ndata: {}\n\n",
                serde_json::json!({ "type": "error", "code": e.kind().as_str(), "message": message, "param": null })
            ),
            Ending::Messages => format!(
                "event: error\ndata: {}\n\n",
                serde_json::json!({ "type": "error", "error": { "type": messages_type(code), "message": message } })
            ),
        };
        Some(Bytes::from(text))
    }
}

/// The Anthropic error `type` for a status.
fn messages_type(code: u16) -> &'static str {
    match code {
        400 | 408 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

/// The WARN line of a body that failed after its first token.
pub(crate) fn log_failure(e: &Error) {
    tracing::warn!(
        model = e.model().unwrap_or("-"),
        kind = e.kind().as_str(),
        status = e.status().map(|s| s.as_u16()),
        "stream failed after its first token: {e}"
    );
}

pin_project! {
    /// A response body whose mid-body failure is logged once and, for a stream, ends
    /// with an error event instead of a reset.
    pub(crate) struct Guarded<B> {
        #[pin]
        inner: B,
        ending: Ending,
        done: bool,
    }
}

impl<B> Guarded<B> {
    pub(crate) fn new(inner: B, ending: Ending) -> Self {
        Guarded {
            inner,
            ending,
            done: false,
        }
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes, Error = Error>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match std::task::ready!(this.inner.poll_frame(cx)) {
            Some(Err(e)) => {
                log_failure(&e);
                *this.done = true;
                match this.ending.event(&e) {
                    Some(event) => Poll::Ready(Some(Ok(Frame::data(event)))),
                    None => Poll::Ready(Some(Err(e.into()))),
                }
            }
            other => Poll::Ready(other.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // An error event may be added: no exact length.
        let mut hint = SizeHint::new();
        hint.set_lower(self.inner.size_hint().lower());
        hint
    }
}
