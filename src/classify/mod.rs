//! Classification: every upstream outcome becomes `Ok(response)` or a typed [`Error`] with
//! an [`Action`].
//!
//! * [`Classify`] is the trait; [`OpenRouterClassifier`] the default rules (the OpenRouter
//!   status table, every error-body shape, `Retry-After`, `availability`,
//!   `X-RateLimit-Reset`), adjustable without re-implementing the trait.
//! * [`ClassifyLayer`] applies a classifier to any HTTP client service.
//! * [`ErrorBody`] is OpenRouter's error body, parsed leniently.
//!
//! (Module docs with a compiled example: TODO in this skeleton.)
//!
//! [`Error`]: crate::Error
//! [`Action`]: crate::Action

mod body;

pub use body::{Availability, ErrorBody, ErrorCode, ErrorMetadata};

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::error::{Action, Error, ErrorKind};

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
        /// The response headers.
        headers: &'a HeaderMap,
        /// The body bytes (see above).
        body: &'a [u8],
    },
    /// The HTTP client failed before an answer came.
    Transport(&'a (dyn std::error::Error + Send + Sync + 'static)),
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
    /// The HTTP status, when there was an answer.
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
pub trait Classify: Send + Sync + 'static {
    /// Classifies one outcome. `None` means the outcome is a success.
    fn classify(&self, outcome: Outcome<'_>) -> Option<Classification>;
}

impl<C: Classify + ?Sized> Classify for std::sync::Arc<C> {
    fn classify(&self, outcome: Outcome<'_>) -> Option<Classification> {
        (**self).classify(outcome)
    }
}

/// The default OpenRouter rules. (Skeleton: filled in by the classification work.)
#[derive(Debug, Clone, Default)]
pub struct OpenRouterClassifier {
    _priv: (),
}
