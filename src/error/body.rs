//! OpenRouter's error body, parsed leniently.
//!
//! Every shape in OpenRouter's docs parses: the OpenAI-shaped
//! `{"error":{"code":..,"message":..,"metadata":{..}}}` with the older metadata
//! (`provider_name`, `raw` as text or as a JSON string) and the newer
//! (`error_type`, `provider_code`, `availability`), and the `/api/v1/messages`
//! envelope `{"type":"error","error":{"type":..,"message":..}}`. Unknown fields are
//! ignored and fields of an unexpected type are skipped, never an error.
//!
//! ```
//! use tower_openrouter::error::ErrorBody;
//!
//! let body = ErrorBody::parse(br#"{"error":{"code":429,"message":"Rate limit exceeded",
//!     "metadata":{"provider_name":"BaseTen","raw":"temporarily rate-limited upstream"}}}"#)
//!     .unwrap();
//! assert_eq!(body.code_number(), Some(429));
//! assert_eq!(body.provider_name(), Some("BaseTen"));
//! ```

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

/// `error.code`: OpenRouter sends a number; some providers send a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// A numeric code (usually the HTTP status).
    Number(i64),
    /// A textual code (`"rate_limit_exceeded"`).
    Text(String),
}

/// `error.metadata`.
#[derive(Clone, Default, PartialEq)]
pub struct ErrorMetadata {
    /// The provider that failed (`"OpenAI"`, `"BaseTen"`).
    pub provider_name: Option<String>,
    /// The provider's own error, as text (a JSON string is kept as text; see
    /// [`ErrorMetadata::raw_json`]). A provider may quote the caller's input in it, so
    /// `Debug` shows only its length.
    pub raw: Option<String>,
    /// Moderation reasons (`["violence"]`).
    pub reasons: Vec<String>,
    /// The input that was flagged. It is the caller's own content: it is never shown by
    /// `Debug` or `Display`.
    pub flagged_input: Option<String>,
    /// The newer error type (`"provider_overloaded"`).
    pub error_type: Option<String>,
    /// The provider's own status or code (`"529"`).
    pub provider_code: Option<String>,
    /// The model slug the error is about.
    pub model_slug: Option<String>,
    /// A rate-limit hint sent in the body only: `metadata.headers` (`Retry-After`, else
    /// `X-RateLimit-Reset`, as OpenRouter's own platform 429s carry them), else
    /// `metadata.retry_after_seconds`. Read like the response headers.
    pub retry_after: Option<Duration>,
}

impl ErrorMetadata {
    /// `raw` parsed as JSON, when it is JSON.
    pub fn raw_json(&self) -> Option<Value> {
        self.raw
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
    }
}

impl fmt::Debug for ErrorMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorMetadata")
            .field("provider_name", &self.provider_name)
            .field(
                "raw",
                &self
                    .raw
                    .as_ref()
                    .map(|r| format!("<{} bytes, redacted>", r.len())),
            )
            .field("reasons", &self.reasons)
            .field(
                "flagged_input",
                &self.flagged_input.as_ref().map(|_| "<redacted>"),
            )
            .field("error_type", &self.error_type)
            .field("provider_code", &self.provider_code)
            .field("model_slug", &self.model_slug)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

/// `error.availability` (newer shape): whether and when to retry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Availability {
    /// `"temporarily_unavailable"` and the like.
    pub code: Option<String>,
    /// The documented switch: when present, whether a retry can help.
    pub retryable: Option<bool>,
    /// The retry hint, repeated from the header.
    pub retry_after: Option<Duration>,
    /// The models the request asked for.
    pub requested_models: Vec<String>,
}

/// A parsed OpenRouter (or `/messages`) error body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErrorBody {
    /// `error.code`.
    pub code: Option<ErrorCode>,
    /// `error.message` (may be empty).
    pub message: String,
    /// `error.type` (the `/messages` envelope, or an OpenAI-style `type`).
    pub error_type: Option<String>,
    /// `error.metadata`.
    pub metadata: ErrorMetadata,
    /// `error.availability`.
    pub availability: Option<Availability>,
}

fn string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(|x| string(Some(x))).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A non-negative, finite number of seconds (as a number or a numeric string).
pub(crate) fn seconds(v: Option<&Value>) -> Option<Duration> {
    let secs = match v? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if (0.0..1.0e9).contains(&secs) {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

/// The hint in `metadata.headers` (names compared case-insensitively; values as text or
/// numbers), else `metadata.retry_after_seconds`.
fn body_retry_after(m: &Map<String, Value>) -> Option<Duration> {
    let header = |name: &str| {
        let headers = m.get("headers")?.as_object()?;
        let (_, v) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?;
        string(Some(v))
    };
    header("retry-after")
        .and_then(|v| super::parse_retry_after(v.as_bytes()))
        .or_else(|| {
            header("x-ratelimit-reset").and_then(|v| super::parse_rate_limit_reset(v.as_bytes()))
        })
        .or_else(|| seconds(m.get("retry_after_seconds")))
}

impl ErrorBody {
    /// Parses an error body; `None` when the bytes hold no recognisable error object.
    pub fn parse(bytes: &[u8]) -> Option<ErrorBody> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        Self::from_value(&value)
    }

    /// Reads an error from a parsed JSON document: its top-level `error` (an object or a
    /// string).
    pub fn from_value(value: &Value) -> Option<ErrorBody> {
        Self::from_error_value(value.as_object()?.get("error")?)
    }

    /// Reads the value of an `error` key: an object, or a string (the message).
    pub fn from_error_value(err: &Value) -> Option<ErrorBody> {
        match err {
            Value::Object(err) => Some(Self::from_error_object(err)),
            Value::String(s) => {
                let mut body = ErrorBody {
                    message: s.clone(),
                    ..ErrorBody::default()
                };
                body.scrub();
                Some(body)
            }
            _ => None,
        }
    }

    /// Reads the inside of an `error` object. Secrets the upstream echoes (an API key in
    /// the message or `metadata.raw`) are replaced with `[redacted]` (see
    /// [`Error`](super::Error)'s docs).
    pub fn from_error_object(err: &Map<String, Value>) -> ErrorBody {
        let mut body = Self::read_error_object(err);
        body.scrub();
        body
    }

    /// Replaces every secret an upstream may have echoed in any of the body's texts.
    pub(crate) fn scrub(&mut self) {
        self.each_text(super::redact::scrub);
    }

    /// Calls `f` on every text of the body (where an upstream may echo a secret).
    pub(crate) fn each_text(&mut self, mut f: impl FnMut(&mut String)) {
        if let Some(ErrorCode::Text(t)) = &mut self.code {
            f(t);
        }
        f(&mut self.message);
        let m = &mut self.metadata;
        let texts = [
            &mut self.error_type,
            &mut m.provider_name,
            &mut m.raw,
            &mut m.flagged_input,
            &mut m.error_type,
            &mut m.provider_code,
            &mut m.model_slug,
        ];
        for t in texts.into_iter().flatten() {
            f(t);
        }
        m.reasons.iter_mut().for_each(&mut f);
        if let Some(a) = &mut self.availability {
            a.code.iter_mut().for_each(&mut f);
            a.requested_models.iter_mut().for_each(&mut f);
        }
    }

    fn read_error_object(err: &Map<String, Value>) -> ErrorBody {
        let code = match err.get("code") {
            Some(Value::Number(n)) => n.as_i64().map(ErrorCode::Number),
            Some(Value::String(s)) => Some(match s.trim().parse::<i64>() {
                Ok(n) => ErrorCode::Number(n),
                Err(_) => ErrorCode::Text(s.clone()),
            }),
            _ => None,
        };
        let metadata = match err.get("metadata") {
            Some(Value::Object(m)) => ErrorMetadata {
                provider_name: string(m.get("provider_name")),
                raw: match m.get("raw") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                },
                reasons: strings(m.get("reasons")),
                flagged_input: string(m.get("flagged_input")),
                error_type: string(m.get("error_type")),
                provider_code: string(m.get("provider_code")),
                model_slug: string(m.get("model_slug")),
                retry_after: body_retry_after(m),
            },
            _ => ErrorMetadata::default(),
        };
        let availability = match err.get("availability") {
            Some(Value::Object(a)) => Some(Availability {
                code: string(a.get("code")),
                retryable: a.get("retryable").and_then(Value::as_bool),
                retry_after: seconds(a.get("retry_after")),
                requested_models: strings(a.get("requested_models")),
            }),
            _ => None,
        };
        ErrorBody {
            code,
            message: string(err.get("message")).unwrap_or_default(),
            error_type: string(err.get("type")),
            metadata,
            availability,
        }
    }

    /// `error.code` as a number, when it is one.
    pub fn code_number(&self) -> Option<i64> {
        match self.code {
            Some(ErrorCode::Number(n)) => Some(n),
            _ => None,
        }
    }

    /// `error.metadata.provider_name`.
    pub fn provider_name(&self) -> Option<&str> {
        self.metadata.provider_name.as_deref()
    }
}
