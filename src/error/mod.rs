//! The one error type of the crate: [`Error`], its [`ErrorKind`] and the [`Action`] it asks for.
//!
//! Every layer returns [`Error`]. It says what happened ([`Error::kind`]), what to do next
//! ([`Error::action`]: retry the same model, fall back to the next one, or stop), and
//! carries what OpenRouter said ([`Error::body`]), the HTTP status, the `Retry-After` hint
//! and the model the attempt was for. [`ErrorKind::Exhausted`] and
//! [`ErrorKind::DeadlineExceeded`] keep every attempt that was made ([`Error::attempts`]).
//!
//! `Display` says what happened and what to do about it, in one line. Neither `Display` nor
//! `Debug` ever contains the API key, the request body or the flagged input OpenRouter
//! echoes back in moderation errors. An upstream message that quotes a key (`Invalid API
//! key provided: Bearer sk-or-v1-...`) is kept with the key replaced by `[redacted]`: any
//! `sk-or-` token, any other `sk-` key, and a `Bearer` credential (the whole
//! `Authorization` value), in every text of the error body, `metadata.raw` included.
//! Through [`OpenRouterLayer`](crate::OpenRouterLayer) (its fallback layer) the request's
//! own credentials are replaced too, whatever their shape (a gateway key `mykey123` quoted
//! bare): the exact `Authorization` value, the credential after its scheme and an
//! `x-api-key` value, in the body, the detail and the `source()` chain of the error that
//! leaves the stack and of every attempt it (or a success's `ServedBy`) lists.
//!
//! ```
//! use tower_openrouter::error::{Action, Error, ErrorKind};
//! use http::StatusCode;
//!
//! let err = Error::new(ErrorKind::InsufficientCredits)
//!     .with_status(StatusCode::PAYMENT_REQUIRED)
//!     .with_model("openai/gpt-4o");
//! assert_eq!(err.kind(), ErrorKind::InsufficientCredits);
//! assert_eq!(err.action(), Action::Fatal);
//! assert!(err.to_string().contains("retrying will not help"));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

pub use body::{Availability, ErrorBody, ErrorCode, ErrorMetadata};
pub use config::ConfigError;
pub(crate) use config::{not_longer, positive};
pub use retry_after::{parse_rate_limit_reset, parse_retry_after, retry_after_from_headers};

mod body;
mod config;
mod redact;
pub(crate) use redact::{Credentials, API_KEY};
mod retry_after;

/// A boxed error, as tower uses it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What to do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Try the same model again (after a backoff or the `Retry-After` hint).
    Retry,
    /// Move on to the next model of the chain.
    Fallback,
    /// Stop and return the error to the caller: no other attempt can help.
    Fatal,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Retry => "retry",
            Action::Fallback => "fallback",
            Action::Fatal => "fatal",
        })
    }
}

/// What went wrong.
///
/// The kind decides the default [`Action`] (see [`ErrorKind::default_action`]) and
/// whether the failure counts against the model's health
/// ([`ErrorKind::counts_for_health`]); a classifier may override both.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// 429: OpenRouter's own rate limit or the provider's.
    RateLimited,
    /// 400/413: the prompt plus `max_tokens` does not fit the model's context window.
    ContextLengthExceeded,
    /// 403 (or 400 `content_policy_violation`): the input was flagged by moderation or a
    /// guardrail.
    ContentModerated,
    /// 403 for another reason (region restriction, key not allowed for this model).
    Forbidden,
    /// 402: the account is out of credits.
    InsufficientCredits,
    /// 401: the API key is missing, wrong or disabled.
    Unauthorized,
    /// 400/422: the request itself is wrong.
    InvalidRequest,
    /// 413: the request is too large for the upstream.
    PayloadTooLarge,
    /// 404, or 400 with an unknown model id: the model does not exist, has no endpoints or
    /// was deprecated.
    ModelNotFound,
    /// 503: no provider meets the routing requirements, or the model is unavailable.
    ModelUnavailable,
    /// 529 (or `provider_overloaded`): the provider is overloaded.
    ProviderOverloaded,
    /// 500/502 or a 200 whose body carries an error: the provider failed.
    ProviderError,
    /// 408/504/524: the upstream timed out.
    UpstreamTimeout,
    /// Our own limit on one attempt ran out.
    AttemptTimeout,
    /// Our own limit on the first token or on the gap between stream chunks ran out.
    StreamTimeout,
    /// The total deadline of the call ran out.
    DeadlineExceeded,
    /// The HTTP client failed: connection refused, reset, DNS, TLS.
    Transport,
    /// The request body is larger than the configured limit (no upstream call was made).
    /// A response body over its limit is [`ResponseTooLarge`](ErrorKind::ResponseTooLarge).
    BodyTooLarge,
    /// The request body is not a JSON object with a string `model`, or could not be read
    /// (no upstream call was made).
    InvalidBody,
    /// A stream failed after its first token: an error chunk arrived.
    StreamInterrupted,
    /// A stream ended without its end marker (`data: [DONE]`, `message_stop`, ...) and
    /// without a finish reason: the answer was cut short.
    StreamTruncated,
    /// A 2xx whose body is not what the API sends: not JSON (an HTML page from a proxy or
    /// a captive portal, an empty body), or, for a `"stream": true` request, not an event
    /// stream (and no error inside). [`Error::status`] is the upstream's 2xx.
    InvalidResponse,
    /// A non-streamed 2xx whose JSON body ended, or failed to read, before it was
    /// complete. Tokens may have been billed, so by default it is not tried again
    /// ([`Action::Fatal`]).
    ResponseTruncated,
    /// A non-streamed 2xx body larger than the response body limit (reading stopped
    /// there; see `max_response_body_bytes`). Tokens may have been billed.
    ResponseTooLarge,
    /// The model is cooling down after failures; it was skipped without an upstream call.
    ModelCoolingDown,
    /// The model is at its adaptive concurrency limit; it was skipped without an upstream
    /// call (see [`health::adaptive`](crate::health::adaptive)).
    ModelAtCapacity,
    /// The request asked for a chain that is not configured.
    UnknownChain,
    /// The request's `model` is outside the configured chains and the stack is set to
    /// refuse such models, or the request names a model (`models`, `fallbacks`) or a
    /// provider (`provider.only`, `provider.order`) outside the stack's allow-list (no
    /// upstream call was made).
    ModelNotAllowed,
    /// The model catalog says the model cannot serve this request (a feature it lacks, a
    /// context too small, over the price ceiling, retired); it was skipped without an
    /// upstream call. [`Error::detail`] is the reason (`"no tools"`).
    Incapable,
    /// No model of the chain can serve the request according to the model catalog; no
    /// upstream call was made. [`Error::attempts`] lists each model and its reason.
    NoCapableModel,
    /// The request's routing parameters break one of OpenRouter's documented limits (no
    /// upstream call was made).
    InvalidRouting,
    /// Every model of the chain failed; [`Error::attempts`] has each attempt.
    Exhausted,
    /// An upstream status the OpenRouter table does not list.
    UnexpectedStatus,
}

impl ErrorKind {
    /// The action the default rules take for this kind.
    pub fn default_action(self) -> Action {
        use ErrorKind::*;
        match self {
            InsufficientCredits | Unauthorized | InvalidRequest | PayloadTooLarge
            | BodyTooLarge | InvalidBody | UnknownChain | ModelNotAllowed | InvalidRouting
            | Exhausted | NoCapableModel | DeadlineExceeded | StreamInterrupted
            | StreamTruncated | ResponseTruncated | ResponseTooLarge | UnexpectedStatus => {
                Action::Fatal
            }
            ContextLengthExceeded
            | ContentModerated
            | Forbidden
            | ModelNotFound
            | ModelUnavailable
            | ProviderOverloaded
            | AttemptTimeout
            | StreamTimeout
            | ModelCoolingDown
            | Incapable
            | ModelAtCapacity
            | RateLimited
            | InvalidResponse => Action::Fallback,
            ProviderError | UpstreamTimeout | Transport => Action::Retry,
        }
    }

    /// Whether an error of this kind says something about the model's health by default.
    ///
    /// The caller's own mistakes (bad key, no credits, invalid request, a prompt too long,
    /// moderation) and our own decisions (cooling down, deadline, a response larger than
    /// our limit) never count.
    pub fn counts_for_health(self) -> bool {
        use ErrorKind::*;
        matches!(
            self,
            RateLimited
                | ModelNotFound
                | ModelUnavailable
                | ProviderOverloaded
                | ProviderError
                | UpstreamTimeout
                | AttemptTimeout
                | StreamTimeout
                | Transport
                | StreamInterrupted
                | StreamTruncated
                | InvalidResponse
                | ResponseTruncated
        )
    }

    /// A short, stable, lowercase name (`"rate_limited"`), for logs and metrics.
    pub fn as_str(self) -> &'static str {
        use ErrorKind::*;
        match self {
            RateLimited => "rate_limited",
            ContextLengthExceeded => "context_length_exceeded",
            ContentModerated => "content_moderated",
            Forbidden => "forbidden",
            InsufficientCredits => "insufficient_credits",
            Unauthorized => "unauthorized",
            InvalidRequest => "invalid_request",
            PayloadTooLarge => "payload_too_large",
            ModelNotFound => "model_not_found",
            ModelUnavailable => "model_unavailable",
            ProviderOverloaded => "provider_overloaded",
            ProviderError => "provider_error",
            UpstreamTimeout => "upstream_timeout",
            AttemptTimeout => "attempt_timeout",
            StreamTimeout => "stream_timeout",
            DeadlineExceeded => "deadline_exceeded",
            Transport => "transport",
            BodyTooLarge => "body_too_large",
            InvalidBody => "invalid_body",
            StreamInterrupted => "stream_interrupted",
            StreamTruncated => "stream_truncated",
            InvalidResponse => "invalid_response",
            ResponseTruncated => "response_truncated",
            ResponseTooLarge => "response_too_large",
            ModelCoolingDown => "model_cooling_down",
            ModelAtCapacity => "model_at_capacity",
            UnknownChain => "unknown_chain",
            ModelNotAllowed => "model_not_allowed",
            Incapable => "incapable",
            NoCapableModel => "no_capable_model",
            InvalidRouting => "invalid_routing",
            Exhausted => "exhausted",
            UnexpectedStatus => "unexpected_status",
        }
    }

    /// What happened, in a few words.
    fn what(self) -> &'static str {
        use ErrorKind::*;
        match self {
            RateLimited => "rate limited",
            ContextLengthExceeded => "context length exceeded",
            ContentModerated => "content flagged by moderation",
            Forbidden => "forbidden",
            InsufficientCredits => "out of credits",
            Unauthorized => "unauthorized",
            InvalidRequest => "invalid request",
            PayloadTooLarge => "payload too large",
            ModelNotFound => "model not found",
            ModelUnavailable => "model unavailable",
            ProviderOverloaded => "provider overloaded",
            ProviderError => "provider error",
            UpstreamTimeout => "upstream timed out",
            AttemptTimeout => "attempt timed out",
            StreamTimeout => "stream timed out",
            DeadlineExceeded => "deadline exceeded",
            Transport => "transport error",
            BodyTooLarge => "request body too large",
            InvalidBody => "invalid request body",
            StreamInterrupted => "stream interrupted",
            StreamTruncated => "stream truncated",
            InvalidResponse => "invalid upstream response",
            ResponseTruncated => "response truncated",
            ResponseTooLarge => "response body too large",
            ModelCoolingDown => "model cooling down",
            ModelAtCapacity => "model at its concurrency limit",
            UnknownChain => "unknown chain",
            ModelNotAllowed => "model not allowed",
            Incapable => "model cannot serve this request",
            NoCapableModel => "no model of the chain can serve this request",
            InvalidRouting => "invalid routing parameters",
            Exhausted => "all fallbacks exhausted",
            UnexpectedStatus => "unexpected upstream status",
        }
    }

    /// What to do about it, in a few words.
    fn advice(self) -> &'static str {
        use ErrorKind::*;
        match self {
            RateLimited => "wait for the Retry-After hint or use another model",
            ContextLengthExceeded => {
                "shorten the prompt or max_tokens, use a larger-context model or the \"middle-out\" transform"
            }
            ContentModerated => "another model or provider may accept it; retrying the same one will not help",
            Forbidden => "this key or region may not use this model; try another model",
            InsufficientCredits => {
                "top up at https://openrouter.ai/settings/credits; retrying will not help"
            }
            Unauthorized => {
                "check the API key (https://openrouter.ai/settings/keys); retrying will not help"
            }
            InvalidRequest => "fix the request; retrying will not help",
            PayloadTooLarge => "send a smaller request",
            ModelNotFound => "check the model id at https://openrouter.ai/models or use another model",
            ModelUnavailable => "use another model, or relax the provider preferences",
            ProviderOverloaded => "use another model or try again shortly",
            ProviderError => "retry, or use another model",
            UpstreamTimeout => "retry, or use another model",
            AttemptTimeout => "use another model, or allow a longer attempt timeout",
            StreamTimeout => "the model stopped sending; use another model or allow a longer limit",
            DeadlineExceeded => "allow a longer deadline, or use faster models",
            Transport => "check the network and the upstream URL; retrying may help",
            BodyTooLarge => "send a smaller request or raise the body limit; no upstream call was made",
            InvalidBody => {
                "send a JSON object with a string \"model\"; no upstream call was made"
            }
            StreamInterrupted => {
                "the tokens already received stand; send a new request to continue"
            }
            StreamTruncated => {
                "the stream ended without [DONE] or a finish_reason; send a new request to continue"
            }
            InvalidResponse => {
                "the 200 was not the API's JSON or event stream (a proxy or portal in the way?); use another model or check the upstream URL"
            }
            ResponseTruncated => {
                "the body ended before its JSON was complete; tokens may have been billed; send a new request"
            }
            ResponseTooLarge => {
                "raise max_response_body_bytes or ask for a shorter answer; tokens may have been billed"
            }
            ModelCoolingDown => "it failed recently and is skipped until its cooldown ends",
            ModelAtCapacity => "it is skipped until one of its requests in flight finishes",
            UnknownChain => "use one of the configured chain names",
            ModelNotAllowed => {
                "use a configured chain's name or model; no upstream call was made"
            }
            Incapable => "it was skipped without an upstream call",
            NoCapableModel => {
                "add a model that supports what the request uses, or raise the price ceiling; no upstream call was made"
            }
            InvalidRouting => "fix the routing parameters; no upstream call was made",
            // The summary and the last attempt say it all; no advice to add.
            Exhausted | UnexpectedStatus => "",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt of a call: which model, how it ended, how long it took.
///
/// [`Error::attempts`] lists them for [`ErrorKind::Exhausted`] and
/// [`ErrorKind::DeadlineExceeded`]; the fallback layer's `ServedBy` lists them on success.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    /// The model this attempt asked for.
    pub model: Arc<str>,
    /// Position of the model in the chain (0 = primary).
    pub index: usize,
    /// 0 for the first try of this model, 1 for its first retry, and so on.
    pub retry: u32,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// How it ended.
    pub error: Error,
}

impl AttemptRecord {
    /// The kind of the attempt's error.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// The HTTP status of the attempt, when the upstream answered.
    pub fn status(&self) -> Option<StatusCode> {
        self.error.status()
    }
}

/// The crate's error.
///
/// Cheap to clone (one `Box`, shared source). See the [module docs](self).
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    action: Action,
    counts_for_health: bool,
    status: Option<StatusCode>,
    retry_after: Option<Duration>,
    model: Option<Arc<str>>,
    body: Option<ErrorBody>,
    detail: Option<String>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    attempts: Vec<AttemptRecord>,
}

/// Longest upstream message `Display` shows, in bytes.
const MAX_DISPLAY_MESSAGE: usize = 200;

impl Error {
    /// A new error of this kind with the kind's default action and health counting.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                action: kind.default_action(),
                counts_for_health: kind.counts_for_health(),
                status: None,
                retry_after: None,
                model: None,
                body: None,
                detail: None,
                source: None,
                attempts: Vec::new(),
            }),
        }
    }

    /// Sets the action.
    pub fn with_action(mut self, action: Action) -> Self {
        self.inner.action = action;
        self
    }

    /// Sets whether the error counts against the model's health.
    pub fn with_counts_for_health(mut self, counts: bool) -> Self {
        self.inner.counts_for_health = counts;
        self
    }

    /// Sets the upstream HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.inner.status = Some(status);
        self
    }

    /// Sets the retry hint.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.inner.retry_after = Some(retry_after);
        self
    }

    /// Sets (or clears) the retry hint.
    pub fn set_retry_after(&mut self, retry_after: Option<Duration>) {
        self.inner.retry_after = retry_after;
    }

    /// Sets the model the attempt was for.
    pub fn with_model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.inner.model = Some(model.into());
        self
    }

    /// Sets the model when none is set yet.
    pub fn or_model(mut self, model: &Arc<str>) -> Self {
        if self.inner.model.is_none() {
            self.inner.model = Some(model.clone());
        }
        self
    }

    /// Attaches the parsed OpenRouter error body, with any secret the upstream echoed in
    /// it (an API key) replaced by `[redacted]`.
    pub fn with_body(mut self, mut body: ErrorBody) -> Self {
        body.scrub();
        self.inner.body = Some(body);
        self
    }

    /// Adds a short explanation of our own (never request content or secrets).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.inner.detail = Some(detail.into());
        self
    }

    /// Keeps the underlying error as [`std::error::Error::source`].
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(Arc::from(source.into()));
        self
    }

    /// Sets the list of attempts (for [`ErrorKind::Exhausted`] and
    /// [`ErrorKind::DeadlineExceeded`]).
    pub fn with_attempts(mut self, attempts: Vec<AttemptRecord>) -> Self {
        self.inner.attempts = attempts;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// What to do next.
    pub fn action(&self) -> Action {
        self.inner.action
    }

    /// Whether this error counts against the model's health.
    pub fn counts_for_health(&self) -> bool {
        self.inner.counts_for_health
    }

    /// The upstream HTTP status, when the upstream answered.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// How long the upstream asked us to wait (`Retry-After`, `availability.retry_after`
    /// or `X-RateLimit-Reset`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The model the failed attempt was for.
    pub fn model(&self) -> Option<&str> {
        self.inner.model.as_deref()
    }

    /// The parsed OpenRouter error body, when there was one.
    pub fn body(&self) -> Option<&ErrorBody> {
        self.inner.body.as_ref()
    }

    /// Our own short explanation, when there is one.
    pub fn detail(&self) -> Option<&str> {
        self.inner.detail.as_deref()
    }

    /// Every attempt made, in order (empty unless the error ends a whole call).
    pub fn attempts(&self) -> &[AttemptRecord] {
        &self.inner.attempts
    }

    /// The error of the last attempt, for [`ErrorKind::Exhausted`] and
    /// [`ErrorKind::DeadlineExceeded`].
    pub fn last_attempt_error(&self) -> Option<&Error> {
        self.inner.attempts.last().map(|a| &a.error)
    }

    /// Turns any boxed error into an [`Error`]: our own errors come back as they were, a
    /// tower timeout becomes [`ErrorKind::AttemptTimeout`], anything else is
    /// [`ErrorKind::Transport`].
    pub fn from_box(err: BoxError) -> Self {
        match err.downcast::<Error>() {
            Ok(e) => *e,
            Err(err) => {
                if err.is::<tower::timeout::error::Elapsed>() {
                    Error::new(ErrorKind::AttemptTimeout).with_source(err)
                } else {
                    Error::new(ErrorKind::Transport).with_source(err)
                }
            }
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.write_str(i.kind.what())?;
        match (&i.model, i.status) {
            (Some(m), Some(s)) => write!(f, " ({m}, HTTP {})", s.as_u16())?,
            (Some(m), None) => write!(f, " ({m})")?,
            (None, Some(s)) => write!(f, " (HTTP {})", s.as_u16())?,
            (None, None) => {}
        }
        if let Some(body) = &i.body {
            if let Some(p) = body.provider_name() {
                write!(f, " from {p}")?;
            }
            if !body.message.is_empty() {
                let (msg, cut) = truncate(&body.message, MAX_DISPLAY_MESSAGE);
                write!(f, ": {msg}{}", if cut { "..." } else { "" })?;
            }
        }
        if let Some(d) = &i.detail {
            write!(f, ": {d}")?;
        }
        if !i.attempts.is_empty() {
            write!(f, " after {} attempt(s)", i.attempts.len())?;
            if let Some(last) = self.other_last_attempt() {
                write!(f, "; last: {} ({})", last.error.kind(), last.model)?;
            }
        }
        if let Some(ra) = i.retry_after {
            write!(f, "; retry after {:.1}s", ra.as_secs_f64())?;
        }
        // OpenRouter's 402 message already says where to top up: do not repeat the URL.
        let advice = match (i.kind, &i.body) {
            (ErrorKind::InsufficientCredits, Some(b)) if b.message.contains("settings/credits") => {
                "retrying will not help"
            }
            _ => i.kind.advice(),
        };
        if advice.is_empty() {
            Ok(())
        } else {
            write!(f, "; {advice}")
        }
    }
}

impl Error {
    /// The last attempt's error when it is another error than this one: an error that
    /// stopped the call (a fatal 402, say) is its own last attempt, and neither `Display`
    /// nor [`source`](std::error::Error::source) repeats it.
    fn other_last_attempt(&self) -> Option<&AttemptRecord> {
        let last = self.inner.attempts.last()?;
        let e = &last.error;
        let same = e.kind() == self.kind()
            && e.status() == self.status()
            && e.model() == self.model()
            && e.body().map(|b| &b.message) == self.body().map(|b| &b.message);
        (!same).then_some(last)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let mut d = f.debug_struct("Error");
        d.field("kind", &i.kind).field("action", &i.action);
        if let Some(s) = i.status {
            d.field("status", &s.as_u16());
        }
        if let Some(m) = &i.model {
            d.field("model", m);
        }
        if let Some(r) = i.retry_after {
            d.field("retry_after", &r);
        }
        if let Some(b) = &i.body {
            d.field("body", b);
        }
        if let Some(x) = &i.detail {
            d.field("detail", x);
        }
        if let Some(s) = &i.source {
            d.field("source", &format_args!("{s}"));
        }
        if !i.attempts.is_empty() {
            d.field("attempts", &i.attempts);
        }
        d.field("counts_for_health", &i.counts_for_health);
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if let Some(s) = &self.inner.source {
            return Some(&**s as &(dyn std::error::Error + 'static));
        }
        self.other_last_attempt()
            .map(|a| &a.error as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_traits<T: std::error::Error + Send + Sync + Clone + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_traits::<Error>();
        assert!(std::mem::size_of::<Error>() <= std::mem::size_of::<usize>());
    }

    #[test]
    fn from_box_keeps_our_errors() {
        let e: BoxError = Box::new(Error::new(ErrorKind::RateLimited).with_model("a/b"));
        let e = Error::from_box(e);
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.model(), Some("a/b"));
        let t: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(Error::from_box(t).kind(), ErrorKind::AttemptTimeout);
        let io: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let e = Error::from_box(io);
        assert_eq!(e.kind(), ErrorKind::Transport);
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn display_says_what_and_what_to_do() {
        let e = Error::new(ErrorKind::Unauthorized).with_status(StatusCode::UNAUTHORIZED);
        assert_eq!(
            e.to_string(),
            "unauthorized (HTTP 401); check the API key (https://openrouter.ai/settings/keys); retrying will not help"
        );
        let e = Error::new(ErrorKind::RateLimited)
            .with_model("openai/gpt-4o")
            .with_retry_after(Duration::from_secs(2));
        assert_eq!(
            e.to_string(),
            "rate limited (openai/gpt-4o); retry after 2.0s; wait for the Retry-After hint or use another model"
        );
    }

    #[test]
    fn credits_advice_does_not_repeat_openrouters_url() {
        let body = ErrorBody {
            message: "Insufficient credits. Add more using https://openrouter.ai/settings/credits"
                .into(),
            ..ErrorBody::default()
        };
        let e = Error::new(ErrorKind::InsufficientCredits)
            .with_status(StatusCode::PAYMENT_REQUIRED)
            .with_body(body);
        assert_eq!(
            e.to_string(),
            "out of credits (HTTP 402): Insufficient credits. Add more using https://openrouter.ai/settings/credits; retrying will not help"
        );
        // Without OpenRouter's own pointer, the advice names the page.
        let e = Error::new(ErrorKind::InsufficientCredits);
        assert!(e
            .to_string()
            .contains("top up at https://openrouter.ai/settings/credits"));
    }

    fn record(model: &str, error: Error) -> AttemptRecord {
        AttemptRecord {
            model: model.into(),
            index: 0,
            retry: 0,
            elapsed: Duration::from_millis(5),
            error,
        }
    }

    /// anyhow prints `Display` and then every `source()`: a fatal 402 that is its own last
    /// attempt must show once, and an `Exhausted` shows its summary, then the last attempt.
    #[test]
    fn source_never_repeats_the_error() {
        let body = ErrorBody::parse(br#"{"error":{"code":402,"message":"Insufficient credits"}}"#)
            .unwrap();
        let credits = Error::new(ErrorKind::InsufficientCredits)
            .with_status(StatusCode::PAYMENT_REQUIRED)
            .with_model("a/b")
            .with_body(body);
        let top = credits.clone().with_attempts(vec![record("a/b", credits)]);
        assert!(std::error::Error::source(&top).is_none());
        let shown = top.to_string();
        assert_eq!(shown.matches("Insufficient credits").count(), 1, "{shown}");
        assert!(!shown.contains("last:"), "{shown}");

        let limited = Error::new(ErrorKind::RateLimited)
            .with_status(StatusCode::TOO_MANY_REQUESTS)
            .with_model("c/d");
        let exhausted =
            Error::new(ErrorKind::Exhausted).with_attempts(vec![record("c/d", limited)]);
        let source = std::error::Error::source(&exhausted).unwrap();
        assert_eq!(
            source.to_string(),
            exhausted.last_attempt_error().unwrap().to_string()
        );
        let shown = exhausted.to_string();
        assert_eq!(
            shown,
            "all fallbacks exhausted after 1 attempt(s); last: rate_limited (c/d)"
        );
        assert!(!shown.contains("see the"), "no developer advice: {shown}");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), ("h", true));
        assert_eq!(truncate("abc", 5), ("abc", false));
    }
}
