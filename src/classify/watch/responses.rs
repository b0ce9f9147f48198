//! The Responses API stream (`POST /api/v1/responses`, `"stream": true`): which events
//! carry content, which end the stream, and its failure events in OpenRouter's error
//! shape, so they classify exactly like chat's.
//!
//! The stream opens with non-content events (`response.created`, `response.in_progress`,
//! `response.queued`): they do not commit it, so a failure right after them still falls
//! over to another model. Everything else of type `response.*` is content (output items,
//! `response.output_text.delta`, reasoning and tool-call deltas). `response.completed`,
//! `response.incomplete` and `response.failed` end it. `response.failed` (its
//! `response.error`) and `error` events (`code`, `message` at the top) are failures; their
//! string codes (`rate_limit_exceeded`, `invalid_prompt`, `server_error`, ...) map to the
//! statuses OpenRouter uses for them elsewhere.

use std::borrow::Cow;

use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::classify::{Classification, ClassifyOutcome, Outcome};

/// Event types that open a response before any content.
const BEFORE_CONTENT: [&str; 3] = [
    "response.created",
    "response.in_progress",
    "response.queued",
];

/// Event types that end a response.
const END: [&str; 3] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
];

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(default)]
    response: Option<Response>,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

/// What one event of a Responses stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `response.created` and the like: the stream is not committed by it.
    Opening,
    /// Output: the stream is committed.
    Content,
    /// `response.completed` / `response.incomplete`: a proper end (content too).
    End,
    /// Not a Responses event (or not JSON).
    Other,
}

/// The event's type (`type`, else the SSE event name).
pub(crate) fn kind(name: &[u8], data: &[u8]) -> Kind {
    let parsed = serde_json::from_slice::<Event<'_>>(data).ok();
    let ty = parsed
        .as_ref()
        .and_then(|e| e.kind.as_deref())
        .or_else(|| std::str::from_utf8(name).ok())
        .unwrap_or("");
    if BEFORE_CONTENT.contains(&ty) {
        Kind::Opening
    } else if END.contains(&ty) {
        Kind::End
    } else if ty.starts_with("response.") {
        Kind::Content
    } else {
        Kind::Other
    }
}

/// The `response.model` of an event that carries the response object (the model that
/// serves it).
pub(crate) fn served_model(data: &[u8]) -> Option<String> {
    serde_json::from_slice::<Event<'_>>(data)
        .ok()?
        .response?
        .model
}

/// The status OpenRouter answers a Responses error code with.
fn status_for(code: Option<&serde_json::Value>) -> StatusCode {
    match code {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .and_then(|n| StatusCode::from_u16(n).ok())
            .unwrap_or(StatusCode::BAD_GATEWAY),
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "rate_limit_exceeded" => StatusCode::TOO_MANY_REQUESTS,
            "invalid_prompt" | "context_length_exceeded" | "invalid_request_error" => {
                StatusCode::BAD_REQUEST
            }
            "image_content_policy_violation" | "content_policy_violation" => StatusCode::FORBIDDEN,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "server_is_overloaded" | "service_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        },
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// A `response.failed` or `error` event, classified as the same failure in OpenRouter's
/// error shape would be; `None` for any other event.
pub(crate) fn failure(classifier: &dyn ClassifyOutcome, data: &[u8]) -> Option<Classification> {
    let ev = serde_json::from_slice::<Event<'_>>(data).ok()?;
    let (code, message) = match ev.kind.as_deref()? {
        "error" => (ev.code, ev.message.map(Cow::into_owned)),
        "response.failed" => {
            let err = ev.response.and_then(|r| r.error);
            match err {
                Some(e) => (e.code, e.message),
                None => (None, None),
            }
        }
        _ => return None,
    };
    let status = status_for(code.as_ref());
    let message = message.unwrap_or_else(|| "The response failed".to_owned());
    let body = serde_json::json!({ "error": { "code": status.as_u16(), "message": message } });
    let body = serde_json::to_vec(&body).ok()?;
    classifier.classify(Outcome::Response {
        status,
        headers: &HeaderMap::new(),
        body: &body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::OpenRouterClassifier;
    use crate::ErrorKind;

    #[test]
    fn opening_events_do_not_commit() {
        assert_eq!(
            kind(b"", br#"{"type":"response.created","response":{}}"#),
            Kind::Opening
        );
        assert_eq!(kind(b"response.in_progress", b"{}"), Kind::Opening);
        assert_eq!(
            kind(
                b"",
                br#"{"type":"response.output_text.delta","delta":"Hi"}"#
            ),
            Kind::Content
        );
        assert_eq!(kind(b"", br#"{"type":"response.completed"}"#), Kind::End);
        assert_eq!(kind(b"", br#"{"choices":[]}"#), Kind::Other);
    }

    #[test]
    fn failures_classify_like_chat() {
        let c = OpenRouterClassifier::default();
        let v = failure(
            &c,
            br#"{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null}"#,
        )
        .unwrap();
        assert_eq!(v.kind, ErrorKind::RateLimited);
        assert_eq!(v.status, Some(StatusCode::TOO_MANY_REQUESTS));
        let v = failure(
            &c,
            br#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"boom"}}}"#,
        )
        .unwrap();
        assert_eq!(v.status, Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(failure(&c, br#"{"type":"response.output_text.delta","delta":"x"}"#).is_none());
    }
}
