//! A failed call in OpenRouter's error shape.

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tower_openrouter::{Error, ErrorKind};

/// Tells the OpenAI and Anthropic SDKs whether retrying can help: every failure the
/// gateway answers already went through the chain's own retries and fallbacks.
pub(crate) static SHOULD_RETRY: http::HeaderName = http::HeaderName::from_static("x-should-retry");

/// The status a failure is answered with: what the upstream said last, or one that fits.
pub(crate) fn status_of(e: &Error) -> StatusCode {
    if let Some(s) = e.status() {
        return s;
    }
    // The last attempt that reached the upstream (not one skipped while cooling down).
    if let Some(s) = e
        .attempts()
        .iter()
        .rev()
        .filter(|a| {
            !matches!(
                a.kind(),
                ErrorKind::ModelCoolingDown | ErrorKind::ModelAtCapacity
            )
        })
        .find_map(|a| a.status())
    {
        return s;
    }
    let kind = match e.attempts().iter().rev().find(|a| {
        !matches!(
            a.kind(),
            ErrorKind::ModelCoolingDown | ErrorKind::ModelAtCapacity
        )
    }) {
        Some(last) => last.kind(),
        None => e.kind(),
    };
    use ErrorKind::*;
    match kind {
        BodyTooLarge | PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        InvalidBody
        | InvalidRouting
        | UnknownChain
        | ModelNotAllowed
        | InvalidRequest
        | ContextLengthExceeded => StatusCode::BAD_REQUEST,
        Unauthorized => StatusCode::UNAUTHORIZED,
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
            serde_json::json!({
                "model": &*a.model,
                "retry": a.retry,
                "kind": a.kind().as_str(),
                "status": a.status().map(|s| s.as_u16()),
            })
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
    let body = serde_json::json!({
        "error": { "code": status.as_u16(), "message": e.to_string(), "metadata": metadata }
    });
    tracing::warn!(
        status = status.as_u16(),
        kind = e.kind().as_str(),
        model = e
            .model()
            .or_else(|| e.attempts().last().map(|a| &*a.model))
            .unwrap_or("-"),
        attempts = e.attempts().len(),
        "request failed: {e}"
    );
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
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
