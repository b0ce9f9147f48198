//! The default OpenRouter rules: [`OpenRouterClassifier`].

use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

use super::{
    retry_after_from_headers, BodyFailure, Classification, ClassifyOutcome, Outcome, StreamFailure,
};
use crate::error::{Action, ErrorBody, ErrorKind};

/// The default OpenRouter rules, adjustable without re-implementing [`ClassifyOutcome`].
///
/// | status | kind | action |
/// |---|---|---|
/// | 400 | `InvalidRequest`; `ContextLengthExceeded` (context length, `max_tokens`), `ContentModerated` (`content_policy_violation`), `ModelNotFound` (not a valid model id) | fatal; the three refinements fall back |
/// | 401 | `Unauthorized` | fatal |
/// | 402 | `InsufficientCredits` | fatal |
/// | 403 | `ContentModerated` (moderation, guardrail), else `Forbidden` | fallback |
/// | 404 | `ModelNotFound` | fallback (see below for health) |
/// | 408 | `UpstreamTimeout` | retry |
/// | 413 | `PayloadTooLarge` (`ContextLengthExceeded` when the message is about context) | fatal (context: fallback) |
/// | 422 | `InvalidRequest` | fatal |
/// | 429 | `RateLimited` | fallback (the fallback and retry layers decide about waiting) |
/// | 500 | `ProviderError` | retry |
/// | 502 | `ProviderError` | fallback |
/// | 503 | `ModelUnavailable` | fallback |
/// | 504, 524 | `UpstreamTimeout` | retry |
/// | 529 | `ProviderOverloaded` | fallback |
/// | other 5xx | `ProviderError` | retry |
/// | other 4xx (and 1xx/3xx) | `UnexpectedStatus` | fatal |
///
/// On 408, 429 and 5xx the body's newer `metadata.error_type` (`provider_overloaded`, ...)
/// or the `/messages` `error.type` (`overloaded_error`, ...) refines the kind, and the action
/// follows the refined kind. A 200 whose body has a top-level `error`, or a choice with
/// `finish_reason: "error"`, is classified by the error's `code` (as if it were the HTTP
/// status), else by its type, else as `ProviderError`. Transport errors are `Transport`
/// (retry); a `tower` or `tokio` timeout anywhere in the source chain is `AttemptTimeout`.
///
/// A 2xx that carries no error but is no answer ([`Outcome::Body`]):
///
/// | body | kind | action | health |
/// |---|---|---|---|
/// | not JSON (HTML, text, empty), or not an event stream for a `"stream": true` request | `InvalidResponse` | fallback | counts |
/// | JSON cut short (ended or failed to read before it was complete) | `ResponseTruncated` | fatal (tokens may be billed) | counts |
/// | over the response body limit | `ResponseTooLarge` | fatal | does not count |
///
/// A 404 whose message says the request cannot be routed because of the account's own
/// settings ("No endpoints found matching your data policy", "No allowed providers are
/// available for the selected model", guardrail restrictions) or the request's needs ("No
/// endpoints found that support tool use", "... that can handle the requested
/// parameters") falls back but never counts against the model's health: a privacy
/// setting must not cool a healthy model for every other request. Any other 404 (a model
/// id that does not exist, a removed or deprecated model) still counts: the chain names a
/// model that cannot serve anyone, and benching it saves a wasted call on every request
/// until its cooldown ends (a mistake of the settings, which the health log then shows).
///
/// The wait hint is `Retry-After` (seconds or HTTP date), else `availability.retry_after`,
/// else `X-RateLimit-Reset`, else a hint in the body only: `error.metadata.headers`
/// (`Retry-After`, then `X-RateLimit-Reset`) or `error.metadata.retry_after_seconds`. When `availability.retryable` is `false`, a `Retry` becomes
/// `Fallback` (after every override: the upstream says the same model will not succeed).
///
/// Overrides, applied in this order after the rules: per kind ([`with_action`]), per
/// status ([`with_status_action`]; for a 200 carrying an error, its code), and health
/// counting per kind ([`with_health`]).
///
/// ```
/// use http::StatusCode;
/// use tower_openrouter::classify::{ClassifyOutcome, OpenRouterClassifier, Outcome};
/// use tower_openrouter::{Action, ErrorKind};
///
/// let c = OpenRouterClassifier::new()
///     .with_action(ErrorKind::RateLimited, Action::Retry) // 429: wait, don't fall back
///     .with_status_action(StatusCode::FORBIDDEN, Action::Fatal); // 403 is fatal for me
/// let headers = http::HeaderMap::new();
/// let v = c
///     .classify(Outcome::Response { status: StatusCode::FORBIDDEN, headers: &headers, body: b"" })
///     .unwrap();
/// assert_eq!((v.kind, v.action), (ErrorKind::Forbidden, Action::Fatal));
/// ```
///
/// [`with_action`]: OpenRouterClassifier::with_action
/// [`with_status_action`]: OpenRouterClassifier::with_status_action
/// [`with_health`]: OpenRouterClassifier::with_health
#[derive(Debug, Clone, Default)]
pub struct OpenRouterClassifier {
    kind_actions: Vec<(ErrorKind, Action)>,
    status_actions: Vec<(StatusCode, Action)>,
    health: Vec<(ErrorKind, bool)>,
}

impl OpenRouterClassifier {
    /// The default rules, with no overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every error of `kind` takes `action` (e.g. `ContentModerated` -> `Fatal`).
    pub fn with_action(mut self, kind: ErrorKind, action: Action) -> Self {
        set(&mut self.kind_actions, kind, action);
        self
    }

    /// Every error with HTTP `status` takes `action`; applied after
    /// [`with_action`](Self::with_action), so it wins.
    pub fn with_status_action(mut self, status: StatusCode, action: Action) -> Self {
        set(&mut self.status_actions, status, action);
        self
    }

    /// Whether errors of `kind` count against the model's health.
    pub fn with_health(mut self, kind: ErrorKind, counts: bool) -> Self {
        set(&mut self.health, kind, counts);
        self
    }

    fn finish(
        &self,
        mut c: Classification,
        availability_retryable: Option<bool>,
    ) -> Classification {
        if let Some(a) = get(&self.kind_actions, &c.kind) {
            c.action = a;
        }
        if let Some(a) = c.status.and_then(|s| get(&self.status_actions, &s)) {
            c.action = a;
        }
        if let Some(h) = get(&self.health, &c.kind) {
            c.counts_for_health = h;
        }
        if availability_retryable == Some(false) && c.action == Action::Retry {
            c.action = Action::Fallback;
        }
        c
    }

    fn response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Classification> {
        if status.is_success() {
            let (err, status) = error_in_success_body(body)?;
            let (kind, action, counts) = match status {
                Some(s) => rules_for_status(s, err.as_ref()),
                None => {
                    let kind = err
                        .as_ref()
                        .and_then(kind_from_types)
                        .unwrap_or(ErrorKind::ProviderError);
                    (kind, kind.default_action(), kind.counts_for_health())
                }
            };
            let status = status.or(Some(StatusCode::OK));
            return Some(self.build(kind, action, counts, status, headers, err));
        }
        let err = ErrorBody::parse(body);
        let (kind, action, counts) = rules_for_status(status, err.as_ref());
        Some(self.build(kind, action, counts, Some(status), headers, err))
    }

    fn build(
        &self,
        kind: ErrorKind,
        action: Action,
        counts_for_health: bool,
        status: Option<StatusCode>,
        headers: &HeaderMap,
        body: Option<ErrorBody>,
    ) -> Classification {
        let availability = body.as_ref().and_then(|b| b.availability.as_ref());
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| super::parse_retry_after(v.as_bytes()))
            .or_else(|| availability.and_then(|a| a.retry_after))
            .or_else(|| retry_after_from_headers(headers))
            .or_else(|| body.as_ref().and_then(|b| b.metadata.retry_after));
        let retryable = availability.and_then(|a| a.retryable);
        let mut c = Classification::new(kind);
        c.action = action;
        c.counts_for_health = counts_for_health;
        c.status = status;
        c.retry_after = retry_after;
        c.body = body;
        self.finish(c, retryable)
    }
}

impl ClassifyOutcome for OpenRouterClassifier {
    fn classify(&self, outcome: Outcome<'_>) -> Option<Classification> {
        match outcome {
            Outcome::Response {
                status,
                headers,
                body,
            } => self.response(status, headers, body),
            Outcome::Transport(err) => {
                let kind = if is_timeout(err) {
                    ErrorKind::AttemptTimeout
                } else {
                    ErrorKind::Transport
                };
                Some(self.finish(Classification::new(kind), None))
            }
            Outcome::Stream {
                failure,
                after_content,
            } => {
                let mut c = match failure {
                    StreamFailure::Ended => Classification::new(ErrorKind::StreamTruncated),
                    StreamFailure::Stalled => Classification::new(ErrorKind::StreamTimeout),
                };
                if !after_content && failure == StreamFailure::Ended {
                    // Nothing was delivered yet: the same model may well succeed.
                    c.action = Action::Retry;
                }
                Some(self.finish(c, None))
            }
            Outcome::Body { status, failure } => {
                let mut c = Classification::new(match failure {
                    BodyFailure::NotJson | BodyFailure::NotEventStream => {
                        ErrorKind::InvalidResponse
                    }
                    BodyFailure::Truncated => ErrorKind::ResponseTruncated,
                    BodyFailure::TooLarge => ErrorKind::ResponseTooLarge,
                });
                c.status = Some(status);
                Some(self.finish(c, None))
            }
        }
    }
}

fn set<K: PartialEq, V>(list: &mut Vec<(K, V)>, k: K, v: V) {
    match list.iter_mut().find(|(x, _)| *x == k) {
        Some(slot) => slot.1 = v,
        None => list.push((k, v)),
    }
}

fn get<K: PartialEq, V: Copy>(list: &[(K, V)], k: &K) -> Option<V> {
    list.iter().find(|(x, _)| x == k).map(|(_, v)| *v)
}

/// Whether a tower, tokio (or, with feature `reqwest`, reqwest) timeout is anywhere in the
/// source chain.
fn is_timeout(err: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        // reqwest's own `ClientBuilder::timeout`: its timer error is private, the flag not.
        #[cfg(feature = "reqwest")]
        if e.downcast_ref::<::reqwest::Error>()
            .is_some_and(::reqwest::Error::is_timeout)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The `std::io::Error` in the source chain (connection refused, reset, ...), if any.
/// Every transport error is `Transport` either way; tests use this to check the walk.
#[cfg(test)]
fn io_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = e.source();
    }
    None
}

#[derive(Deserialize)]
struct ErrorProbe<'a> {
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    // Raw, then each choice on its own: one malformed choice (`"finish_reason": 1`) must
    // not hide the error of another (found by the `classify` fuzz target).
    #[serde(borrow, default)]
    choices: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceProbe<'a> {
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// Finds an error in a success body: a top-level `error`, or a choice with
/// `finish_reason: "error"` (and its `error`). Returns the parsed error (when it parses)
/// and its code as a status (when it is one). A quick byte scan keeps the common success
/// path free of any parse.
fn error_in_success_body(body: &[u8]) -> Option<(Option<ErrorBody>, Option<StatusCode>)> {
    static ERROR_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"error\""));
    ERROR_KEY.find(body)?;
    // Objects only: serde reads a struct from an array too (`["error", ..]` would be an
    // error by position; found by the `classify` fuzz target).
    let is_object = |json: &[u8]| json.trim_ascii_start().starts_with(b"{");
    if !is_object(body) {
        return None;
    }
    let probe: ErrorProbe<'_> = serde_json::from_slice(body).ok()?;
    let raw = match probe.error {
        Some(raw) => Some(raw),
        None => {
            let choices: Vec<&RawValue> = serde_json::from_str(probe.choices?.get()).ok()?;
            let choice = choices
                .into_iter()
                .filter(|c| is_object(c.get().as_bytes()))
                .filter_map(|c| serde_json::from_str::<ChoiceProbe<'_>>(c.get()).ok())
                .find(|c| c.finish_reason.as_deref() == Some("error"))?;
            choice.error
        }
    };
    let err = raw.and_then(error_object);
    let status = err
        .as_ref()
        .and_then(ErrorBody::code_number)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| (400..=599).contains(n))
        .and_then(|n| StatusCode::from_u16(n).ok());
    Some((err, status))
}

fn error_object(raw: &RawValue) -> Option<ErrorBody> {
    ErrorBody::from_error_value(&serde_json::from_str(raw.get()).ok()?)
}

/// The status table, refined by the body: kind, action, and whether it counts for health.
fn rules_for_status(status: StatusCode, body: Option<&ErrorBody>) -> (ErrorKind, Action, bool) {
    let (kind, action) = kind_and_action(status, body);
    // The caller's own mistakes never count, whatever the body refined them to.
    let counts =
        !matches!(status.as_u16(), 400 | 401 | 402 | 413 | 422) && kind.counts_for_health();
    // A 404 the account's settings or the request's needs caused is no fault of the model.
    let counts = counts && !(status == StatusCode::NOT_FOUND && body.is_some_and(is_unroutable));
    (kind, action, counts)
}

fn kind_and_action(status: StatusCode, body: Option<&ErrorBody>) -> (ErrorKind, Action) {
    use ErrorKind::*;
    let kind = match status.as_u16() {
        400 => {
            if body.is_some_and(is_context_length) {
                ContextLengthExceeded
            } else if body.is_some_and(is_content_policy) {
                ContentModerated
            } else if body.is_some_and(is_unknown_model) {
                ModelNotFound
            } else {
                InvalidRequest
            }
        }
        401 => Unauthorized,
        402 => InsufficientCredits,
        403 => {
            if body.is_some_and(is_moderation) {
                ContentModerated
            } else {
                Forbidden
            }
        }
        404 => ModelNotFound,
        413 => {
            if body.is_some_and(is_context_length) {
                ContextLengthExceeded
            } else {
                PayloadTooLarge
            }
        }
        422 => InvalidRequest,
        408 | 429 | 500..=599 => {
            let base = match status.as_u16() {
                408 | 504 | 524 => UpstreamTimeout,
                429 => RateLimited,
                503 => ModelUnavailable,
                529 => ProviderOverloaded,
                _ => ProviderError,
            };
            match body
                .and_then(kind_from_types)
                .filter(|k| is_upstream_kind(*k))
            {
                // A 429 stays a rate limit whatever the body's type says.
                Some(refined) if refined != base && base != RateLimited => {
                    return (refined, refined.default_action())
                }
                _ => base,
            }
        }
        _ => {
            // Unknown statuses: a recognised body type may still say what happened.
            if let Some(k) = body.and_then(kind_from_types) {
                return (k, k.default_action());
            }
            if status.is_server_error() {
                ProviderError
            } else {
                UnexpectedStatus
            }
        }
    };
    let action = match status.as_u16() {
        502 => Action::Fallback,
        _ => kind.default_action(),
    };
    (kind, action)
}

fn is_upstream_kind(k: ErrorKind) -> bool {
    use ErrorKind::*;
    matches!(
        k,
        RateLimited | ModelUnavailable | ProviderOverloaded | ProviderError | UpstreamTimeout
    )
}

/// The kind named by the body's types: the `/messages` `error.type`, the newer
/// `metadata.error_type`, or a textual `error.code`.
fn kind_from_types(b: &ErrorBody) -> Option<ErrorKind> {
    let code_text = match &b.code {
        Some(crate::error::ErrorCode::Text(t)) => Some(t.as_str()),
        _ => None,
    };
    [
        b.metadata.error_type.as_deref(),
        b.error_type.as_deref(),
        code_text,
    ]
    .into_iter()
    .flatten()
    .find_map(|t| kind_from_type(t, b))
}

fn kind_from_type(t: &str, b: &ErrorBody) -> Option<ErrorKind> {
    use ErrorKind::*;
    let t = t.to_ascii_lowercase();
    Some(match t.as_str() {
        "overloaded_error" | "provider_overloaded" | "overloaded" => ProviderOverloaded,
        "rate_limit_error" | "rate_limit_exceeded" | "rate_limited" | "provider_rate_limited" => {
            RateLimited
        }
        "api_error" | "provider_error" | "server_error" | "internal_error" => ProviderError,
        "timeout_error" | "provider_timeout" | "timeout" => UpstreamTimeout,
        "authentication_error" | "invalid_api_key" | "unauthorized" => Unauthorized,
        "billing_error" | "insufficient_credits" | "insufficient_quota" => InsufficientCredits,
        "not_found_error" | "model_not_found" => ModelNotFound,
        "provider_unavailable" | "model_unavailable" | "no_endpoints" | "service_unavailable" => {
            ModelUnavailable
        }
        "context_length_exceeded" | "max_tokens_exceeded" => ContextLengthExceeded,
        "content_policy_violation" | "moderation" | "content_moderated" | "guardrail" => {
            ContentModerated
        }
        "permission_error" => {
            if is_moderation(b) {
                ContentModerated
            } else {
                Forbidden
            }
        }
        "request_too_large" => {
            if is_context_length(b) {
                ContextLengthExceeded
            } else {
                PayloadTooLarge
            }
        }
        "invalid_request_error" | "invalid_request" => {
            if is_context_length(b) {
                ContextLengthExceeded
            } else if is_content_policy(b) {
                ContentModerated
            } else if is_unknown_model(b) {
                ModelNotFound
            } else {
                InvalidRequest
            }
        }
        _ => return None,
    })
}

/// Case-insensitive substring search without allocating.
fn contains(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn type_is(b: &ErrorBody, names: &[&str]) -> bool {
    let code_text = match &b.code {
        Some(crate::error::ErrorCode::Text(t)) => Some(t.as_str()),
        _ => None,
    };
    [
        b.error_type.as_deref(),
        b.metadata.error_type.as_deref(),
        code_text,
    ]
    .into_iter()
    .flatten()
    .any(|t| names.iter().any(|n| t.eq_ignore_ascii_case(n)))
}

fn is_context_length(b: &ErrorBody) -> bool {
    type_is(b, &["context_length_exceeded", "max_tokens_exceeded"])
        || contains(&b.message, "context length")
        || contains(&b.message, "context window")
        || contains(&b.message, "context_length")
        || contains(&b.message, "maximum context")
        || contains(&b.message, "too many tokens")
        || (contains(&b.message, "max_tokens") && contains(&b.message, "exceed"))
}

fn is_content_policy(b: &ErrorBody) -> bool {
    type_is(
        b,
        &[
            "content_policy_violation",
            "moderation",
            "content_moderated",
        ],
    ) || contains(&b.message, "content_policy_violation")
        || contains(&b.message, "content policy")
}

fn is_moderation(b: &ErrorBody) -> bool {
    is_content_policy(b)
        || !b.metadata.reasons.is_empty()
        || b.metadata.flagged_input.is_some()
        || type_is(b, &["guardrail", "moderation_error"])
        || contains(&b.message, "flagged")
        || contains(&b.message, "moderation")
        || contains(&b.message, "guardrail")
}

/// A 404 that says no endpoint fits the account's own settings (data policy, allowed or
/// ignored providers, guardrails) or this request's needs (tools, images, parameters):
/// another model may match, but this one is healthy.
fn is_unroutable(b: &ErrorBody) -> bool {
    [
        "data policy",
        "allowed providers",
        "guardrail",
        "privacy",
        "that support",
        "that can handle",
        "requested parameters",
        "provider preferences",
        "ignored providers",
    ]
    .iter()
    .any(|n| contains(&b.message, n))
}

fn is_unknown_model(b: &ErrorBody) -> bool {
    contains(&b.message, "not a valid model")
        || contains(&b.message, "model not found")
        || contains(&b.message, "no endpoints found")
        || contains(&b.message, "does not exist")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_chain_walk() {
        #[derive(Debug)]
        struct Wrap(Box<dyn std::error::Error + Send + Sync>);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.0)
            }
        }
        let refused = Wrap(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(
            io_error(&refused).map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        let c = OpenRouterClassifier::new()
            .classify(Outcome::Transport(&refused))
            .unwrap();
        assert_eq!((c.kind, c.action), (ErrorKind::Transport, Action::Retry));
        let elapsed = Wrap(Box::new(tower::timeout::error::Elapsed::new()));
        let c = OpenRouterClassifier::new()
            .classify(Outcome::Transport(&elapsed))
            .unwrap();
        assert_eq!(c.kind, ErrorKind::AttemptTimeout);
    }
}
