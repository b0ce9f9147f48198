//! Classification: every upstream outcome becomes `Ok(response)` or a typed [`Error`] with
//! an [`Action`].
//!
//! * [`ClassifyOutcome`] is the trait; [`OpenRouterClassifier`] the default rules (the OpenRouter
//!   status table, every error-body shape, `Retry-After`, `availability`,
//!   `X-RateLimit-Reset`), adjustable without re-implementing the trait.
//! * [`ClassifyLayer`] applies a classifier to any HTTP client service.
//! * [`ErrorBody`] (in [`error`](crate::error)) is OpenRouter's error body, parsed leniently.
//! * [`parse_retry_after`], [`retry_after_from_headers`]: the wait hints.
//!
//! The classifier is a pure function of the outcome; the layer only reads bodies, calls it
//! and builds the [`Error`] (adding the model of the request's
//! [`Attempt`](crate::Attempt)).
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use std::time::Duration;
//! use tower_openrouter::classify::{ClassifyOutcome, OpenRouterClassifier, Outcome};
//! use tower_openrouter::{Action, ErrorKind};
//!
//! let classifier = OpenRouterClassifier::new();
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", "3".parse().unwrap());
//! let body = br#"{"error":{"code":503,"message":"No endpoints available",
//!     "metadata":{"error_type":"provider_overloaded","provider_code":"529"},
//!     "availability":{"code":"temporarily_unavailable","retryable":true,"retry_after":3}}}"#;
//! let verdict = classifier
//!     .classify(Outcome::Response { status: StatusCode::SERVICE_UNAVAILABLE, headers: &headers, body })
//!     .unwrap();
//! assert_eq!(verdict.kind, ErrorKind::ProviderOverloaded);
//! assert_eq!(verdict.action, Action::Fallback);
//! assert_eq!(verdict.retry_after, Some(Duration::from_secs(3)));
//! assert!(verdict.counts_for_health);
//!
//! // A success is `None`.
//! let ok = br#"{"model":"openai/gpt-4o","choices":[{"finish_reason":"stop"}]}"#;
//! assert!(classifier
//!     .classify(Outcome::Response { status: StatusCode::OK, headers: &HeaderMap::new(), body: ok })
//!     .is_none());
//! ```
//!
//! [`Error`]: crate::Error
//! [`Action`]: crate::Action

mod facts;
mod future;
mod layer;
mod probe;
mod response_body;

mod rules;
mod watch;

pub use future::ResponseFuture;
pub use layer::{Classify, ClassifyLayer, DEFAULT_ERROR_BODY_LIMIT};
pub use response_body::ResponseBody;
// The wait-hint parsers live with the error body (which carries hints too); they are
// re-exported here, where a classifier looks for them.
pub use crate::error::{parse_rate_limit_reset, parse_retry_after, retry_after_from_headers};
pub use rules::OpenRouterClassifier;

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::error::{Action, Error, ErrorBody, ErrorKind};

/// An upstream outcome, as the classifier sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Outcome<'a> {
    /// The upstream answered. `body` is the whole body for a non-streaming 200, the first
    /// bytes (up to the error-body cap) for an error status, or the `data` of an SSE event
    /// for a stream.
    Response {
        /// The HTTP status.
        status: StatusCode,
        /// The response headers (empty for an SSE event: the stream's head was a 200).
        headers: &'a HeaderMap,
        /// The body bytes (see above).
        body: &'a [u8],
    },
    /// The HTTP client failed before an answer came.
    Transport(&'a (dyn std::error::Error + Send + Sync + 'static)),
    /// A streamed (`text/event-stream`) 200 failed without an error event of its own.
    Stream {
        /// How it failed.
        failure: StreamFailure,
        /// Whether content had already been delivered to the caller (then nothing can be
        /// retried: the layer turns the verdict into an error frame in the body).
        after_content: bool,
    },
    /// A 2xx whose body is not a valid answer, though it carries no error of its own (the
    /// classifier already saw it as [`Outcome::Response`] and called it a success).
    Body {
        /// The HTTP status (a 2xx).
        status: StatusCode,
        /// What is wrong with the body.
        failure: BodyFailure,
    },
}

/// What is wrong with a 2xx body that carries no error (see [`Outcome::Body`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyFailure {
    /// Not JSON: an HTML page, plain text, an empty body.
    NotJson,
    /// A `"stream": true` request answered with something other than `text/event-stream`
    /// (e.g. a whole JSON completion).
    NotEventStream,
    /// JSON cut short: the body ended, or failed to read, before its JSON was complete.
    Truncated,
    /// Larger than the layer's limit ([`ClassifyLayer::success_body_limit`]); the rest
    /// is unread.
    TooLarge,
}

/// How a stream failed when it carried no error event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamFailure {
    /// The stream ended without its end marker (`data: [DONE]`; `message_stop` on
    /// `/messages`; `response.completed` / `response.incomplete` on `/responses`) and
    /// without a finish reason (a chat `finish_reason`, a `/messages` `stop_reason`): the
    /// answer was cut short. An end after a finish reason is not a failure (the whole
    /// text came) and is never classified.
    Ended,
    /// No chunk came within the time-to-first-token or idle limit.
    Stalled,
}

/// The classifier's verdict on a failed outcome.
#[derive(Debug, Clone)]
pub struct Classification {
    /// What went wrong.
    pub kind: ErrorKind,
    /// What to do next.
    pub action: Action,
    /// How long the upstream asked us to wait.
    pub retry_after: Option<Duration>,
    /// Whether the failure counts against the model's health.
    pub counts_for_health: bool,
    /// The HTTP status, when there was an answer (for a 200 whose body carries an error,
    /// the error's `code` when it is an HTTP error status).
    pub status: Option<StatusCode>,
    /// The parsed error body, when there was one.
    pub body: Option<ErrorBody>,
}

impl Classification {
    /// A classification with the kind's default action and health counting.
    pub fn new(kind: ErrorKind) -> Self {
        Classification {
            kind,
            action: kind.default_action(),
            retry_after: None,
            counts_for_health: kind.counts_for_health(),
            status: None,
            body: None,
        }
    }

    /// Turns the verdict into an [`Error`].
    pub fn into_error(self) -> Error {
        let mut e = Error::new(self.kind)
            .with_action(self.action)
            .with_counts_for_health(self.counts_for_health);
        if let Some(s) = self.status {
            e = e.with_status(s);
        }
        if let Some(r) = self.retry_after {
            e = e.with_retry_after(r);
        }
        if let Some(b) = self.body {
            e = e.with_body(b);
        }
        e
    }
}

/// Turns an upstream outcome into a verdict: `None` means success.
///
/// Implement it to replace the rules wholesale; to adjust a few, configure
/// [`OpenRouterClassifier`] instead.
pub trait ClassifyOutcome: Send + Sync + 'static {
    /// Classifies one outcome. `None` means the outcome is a success.
    fn classify(&self, outcome: Outcome<'_>) -> Option<Classification>;
}

impl<C: ClassifyOutcome + ?Sized> ClassifyOutcome for std::sync::Arc<C> {
    fn classify(&self, outcome: Outcome<'_>) -> Option<Classification> {
        (**self).classify(outcome)
    }
}
