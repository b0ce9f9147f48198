//! A failed call in OpenRouter's error shape.

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tower_openrouter::{Error, ErrorKind};

use crate::conn::BodyReadTimeout;

/// Tells the OpenAI and Anthropic SDKs whether retrying can help: every failure the
/// gateway answers already went through the chain's own retries and fallbacks.
pub(crate) static SHOULD_RETRY: http::HeaderName = http::HeaderName::from_static("x-should-retry");

/// The status a failure is answered with. A failure of the caller's own request (a bad
/// body, a refused model, no model able to serve it) is a 4xx whatever the attempts say;
/// otherwise what the upstream said last, or one that fits. An upstream 2xx that still
/// failed (an error inside, a body that is no answer, cut short or too large) is never
/// passed on as a success status: its kind decides (502).
pub(crate) fn status_of(e: &Error) -> StatusCode {
    if body_timeout(e).is_some() {
        return StatusCode::REQUEST_TIMEOUT;
    }
    if let Some(s) = callers_status(e.kind()) {
        return s;
    }
    if e.kind() == ErrorKind::Unauthorized {
        // The gateway's own upstream key was refused: nothing the caller can fix.
        return StatusCode::BAD_GATEWAY;
    }
    let failed = |s: StatusCode| s.is_client_error() || s.is_server_error();
    if let Some(s) = e.status().filter(|s| failed(*s)) {
        return s;
    }
    // The last attempt that reached the upstream (not one skipped without a call).
    let reached = || e.attempts().iter().rev().filter(|a| !skipped(a.kind()));
    if let Some(s) = reached().find_map(|a| a.status().filter(|s| failed(*s))) {
        return s;
    }
    // None reached it: a model only cooling down or busy says more than one unable.
    let kind = reached()
        .next()
        .or_else(|| {
            let mut rev = e.attempts().iter().rev();
            rev.find(|a| a.kind() != ErrorKind::Incapable)
        })
        .or_else(|| e.attempts().last())
        .map_or(e.kind(), |a| a.kind());
    status_of_kind(kind)
}

/// Attempts skipped without an upstream call.
fn skipped(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ModelCoolingDown | ErrorKind::ModelAtCapacity | ErrorKind::Incapable
    )
}

/// The status of a failure of the caller's own request: no upstream call was made, and
/// the same request will fail the same way.
fn callers_status(kind: ErrorKind) -> Option<StatusCode> {
    use ErrorKind::*;
    Some(match kind {
        BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        InvalidBody | InvalidRouting | UnknownChain | ModelNotAllowed => StatusCode::BAD_REQUEST,
        // The request is well formed, but no model of the chain can serve it (tools,
        // context, price ceiling): the attempts list each model's reason.
        NoCapableModel | Incapable => StatusCode::UNPROCESSABLE_ENTITY,
        _ => return None,
    })
}

/// The status for a kind without an upstream status.
fn status_of_kind(kind: ErrorKind) -> StatusCode {
    use ErrorKind::*;
    if let Some(s) = callers_status(kind) {
        return s;
    }
    match kind {
        PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        InvalidRequest | ContextLengthExceeded => StatusCode::BAD_REQUEST,
        // The upstream's 200 was no answer: a bad gateway, whatever our own limit was.
        InvalidResponse | ResponseTruncated | ResponseTooLarge => StatusCode::BAD_GATEWAY,
        InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
        ContentModerated | Forbidden => StatusCode::FORBIDDEN,
        ModelNotFound => StatusCode::NOT_FOUND,
        RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ModelCoolingDown | ModelAtCapacity | ModelUnavailable | ProviderOverloaded => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        AttemptTimeout | StreamTimeout | UpstreamTimeout | DeadlineExceeded => {
            StatusCode::GATEWAY_TIMEOUT
        }
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// The body-read timeout the call failed of, when the caller's body did not arrive in
/// time ([`BodyReadTimeout`] among the failure's sources).
fn body_timeout(e: &Error) -> Option<&BodyReadTimeout> {
    if e.kind() != ErrorKind::InvalidBody {
        return None;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<BodyReadTimeout>() {
            return Some(t);
        }
        source = s.source();
    }
    None
}

/// OpenRouter's error shape, for a call that failed as a whole.
pub(crate) fn error_response(e: &Error) -> Response<Body> {
    let status = status_of(e);
    let retry_after = e.retry_after().or_else(|| {
        e.attempts()
            .iter()
            .rev()
            .find_map(|a| a.error.retry_after())
    });
    let attempts: Vec<serde_json::Value> = e
        .attempts()
        .iter()
        .map(|a| {
            let mut v = serde_json::json!({
                "model": &*a.model,
                "retry": a.retry,
                "kind": a.kind().as_str(),
                "status": a.status().map(|s| s.as_u16()),
            });
            // Why the catalog says the model cannot serve this request ("no tools").
            if let (ErrorKind::Incapable, Some(reason)) = (a.kind(), a.error.detail()) {
                v["reason"] = reason.into();
            }
            v
        })
        .collect();
    let mut metadata = serde_json::json!({ "kind": e.kind().as_str(), "attempts": attempts });
    if let Some(p) = e
        .body()
        .or_else(|| e.last_attempt_error().and_then(Error::body))
        .and_then(|b| b.provider_name())
    {
        metadata["provider_name"] = p.into();
    }
    let message = match body_timeout(e) {
        Some(t) => format!("{e}: {t}"),
        None => e.to_string(),
    };
    let body = serde_json::json!({
        "error": { "code": status.as_u16(), "message": message, "metadata": metadata }
    });
    tracing::warn!(
        status = status.as_u16(),
        kind = e.kind().as_str(),
        model = e
            .model()
            .or_else(|| e.attempts().last().map(|a| &*a.model))
            .unwrap_or("-"),
        attempts = e.attempts().len(),
        "request failed: {message}"
    );
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    if status == StatusCode::REQUEST_TIMEOUT {
        // The rest of a stalled body is not waited for: the connection ends here.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A hint says when coming back may help; without one, a client retry would only
    // repeat what the chain already did (or a fatal kind, which cannot change).
    match retry_after {
        Some(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        None => {
            resp.headers_mut()
                .insert(SHOULD_RETRY.clone(), HeaderValue::from_static("false"));
        }
    }
    resp
}
