//! Data that crosses layers in request and response extensions.
//!
//! * [`Deadline`]: set by the deadline layer; every inner layer clamps its waits to it.
//! * [`Attempt`]: set by the fallback layer (or by you) for each attempt: which model,
//!   its position in the chain, which retry, and per-model limits.
//! * [`UpstreamInfo`]: set on responses by the classify layer: the `model` and
//!   `provider` the upstream says answered, the response `id`, finish reasons, [`Usage`].
//! * [`AttemptLog`]: every attempt of one call (deadline, fallback and retry share it).
//! * [`StreamErrorHook`]: set by the health layer, called by the classify layer's body
//!   when a stream dies after its first token.
//! * [`StreamLimits`]: set by the attempt-timeout layer, enforced by the classify layer.
//! * [`LaterAttempt`]: set by the fallback layer on an attempt after the call's first;
//!   the retry layer's budget reads it.
//! * [`ForceAttempt`]: set by the fallback layer on an attempt that must go upstream
//!   even if its model is cooling down (panic mode's followers, a call after a waited-out
//!   `Retry-After`); the health layer then admits the attempt anyway.
//! * [`JsonBody`]: the parsed request body (its top-level members' spans), set by the
//!   buffering layer and by whoever writes a new body (native routing, fallback), read by
//!   fallback, the catalog and the spans, so the body is parsed once.
//!
//! ```
//! use std::time::Duration;
//! use tower_openrouter::{Attempt, Deadline};
//!
//! let mut req = http::Request::new(());
//! req.extensions_mut().insert(Deadline::after(Duration::from_secs(30)));
//! req.extensions_mut().insert(Attempt::new("openai/gpt-4o"));
//! assert_eq!(req.extensions().get::<Attempt>().unwrap().model(), "openai/gpt-4o");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// The instant by which the whole call must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline at `at`.
    pub fn at(at: Instant) -> Self {
        Deadline { at }
    }

    /// A deadline `budget` from now (tokio time, so paused-time tests are exact).
    pub fn after(budget: Duration) -> Self {
        Deadline {
            at: Instant::now() + budget,
        }
    }

    /// The instant.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// Time left (zero when passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// `limit` clamped to the time left.
    pub fn clamp(&self, limit: Duration) -> Duration {
        limit.min(self.remaining())
    }
}

/// One attempt of a call: set in the request extensions by the fallback layer and read by
/// retry, health and attempt timeout.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The model this attempt asks for.
    pub model: Arc<str>,
    /// Position of the model in the chain (0 = primary).
    pub index: usize,
    /// 0 for the first try of this model, 1 for its first retry, and so on.
    pub retry: u32,
    /// This model's attempt timeout, overriding the layer's default.
    pub timeout: Option<Duration>,
    /// This model's maximum retries, overriding the retry policy's default.
    pub max_retries: Option<u32>,
    /// A label for logs (`"primary"`, `"budget-fallback"`).
    pub label: Option<Arc<str>>,
}

impl Attempt {
    /// The first attempt of `model`, at chain position 0, with no per-model limits.
    pub fn new(model: impl Into<Arc<str>>) -> Self {
        Attempt {
            model: model.into(),
            index: 0,
            retry: 0,
            timeout: None,
            max_retries: None,
            label: None,
        }
    }

    /// The model.
    pub fn model(&self) -> &str {
        &self.model
    }
}

/// What the upstream said about the answer: the response body's `model` (the model that
/// actually answered and is billed), `provider` and `id`, read by one borrowed probe of
/// the body; and its finish reasons and `usage`, found by byte scans beside that probe.
///
/// The finish reasons, `usage` and (of a non-streamed answer) `id` are read only while
/// somebody observes (a `tracing` subscriber takes the INFO spans of target
/// `tower_openrouter::observe`, or, feature `metrics`, a recorder is installed; see
/// [`observe`](crate::observe)): otherwise they
/// stay empty, and the happy path does not pay for them. For a stream, `model`,
/// `provider` and `id` come from its first event; its finish reasons and usage come at its
/// end, after the response was returned, so they are empty here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamInfo {
    /// The response's `model`.
    pub model: Option<Arc<str>>,
    /// The response's `provider`.
    pub provider: Option<Arc<str>>,
    /// The response's `id` (`gen-...`).
    pub id: Option<Arc<str>>,
    /// Each choice's `finish_reason` (`stop_reason` on `/messages`), in order.
    pub finish_reasons: Vec<Arc<str>>,
    /// The response's `usage`.
    pub usage: Option<Usage>,
}

/// The `usage` of a response: tokens and OpenRouter's `cost`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// `prompt_tokens` (`input_tokens` on `/messages` and `/responses`).
    pub input_tokens: Option<u64>,
    /// `completion_tokens` (`output_tokens` on `/messages` and `/responses`).
    pub output_tokens: Option<u64>,
    /// `cost`: what OpenRouter billed for the request, in credits (US dollars).
    pub cost: Option<f64>,
}

/// Every attempt of one call, shared by the layers of that call.
///
/// The outermost layer that needs it (deadline or fallback) inserts one per call when the
/// request has none; the retry layer pushes each attempt it retries, the fallback layer each
/// model's final failure. [`Error::attempts`](crate::Error::attempts) of an `Exhausted` or
/// `DeadlineExceeded` error and `ServedBy` are built from it. It is only touched on
/// failures.
#[derive(Clone, Default)]
pub struct AttemptLog {
    inner: Arc<std::sync::Mutex<LogInner>>,
}

#[derive(Default)]
struct LogInner {
    records: Vec<crate::AttemptRecord>,
    /// A wait the call needed (a same-model retry's backoff) did not fit in the time left.
    cut_short: bool,
}

impl AttemptLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an attempt.
    pub fn push(&self, record: crate::AttemptRecord) {
        self.lock().records.push(record);
    }

    /// The attempts so far, in order.
    pub fn snapshot(&self) -> Vec<crate::AttemptRecord> {
        self.lock().records.clone()
    }

    /// How many attempts were logged.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// How many attempts logged from position `from` on were of chain position `index`.
    pub(crate) fn count_since(&self, from: usize, index: usize) -> usize {
        self.lock()
            .records
            .get(from..)
            .map_or(0, |r| r.iter().filter(|a| a.index == index).count())
    }

    /// Whether no attempt was logged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notes that the deadline left no room for a wait the call needed (the retry layer
    /// does, for a backoff): the call then ends with `DeadlineExceeded` rather than
    /// `Exhausted` once no other model can be tried.
    pub(crate) fn note_cut_short(&self) {
        self.lock().cut_short = true;
    }

    /// Whether [`note_cut_short`](Self::note_cut_short) was called.
    pub(crate) fn cut_short(&self) -> bool {
        self.lock().cut_short
    }
}

impl std::fmt::Debug for AttemptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

/// A callback for errors that happen after a streamed response was already returned
/// (an error chunk or a missing `[DONE]` after the first token).
///
/// The health layer inserts one into the request extensions so such failures count against
/// the model; the classify layer hands it to the response body, which calls it once.
#[derive(Clone)]
pub struct StreamErrorHook {
    callback: Arc<dyn Fn(&crate::Error) + Send + Sync>,
}

impl StreamErrorHook {
    /// A hook that calls `f`.
    pub fn new(f: impl Fn(&crate::Error) + Send + Sync + 'static) -> Self {
        StreamErrorHook {
            callback: Arc::new(f),
        }
    }

    /// Reports a mid-stream error.
    pub fn report(&self, error: &crate::Error) {
        (self.callback)(error)
    }
}

impl std::fmt::Debug for StreamErrorHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamErrorHook")
    }
}

/// Limits for a streamed (`text/event-stream`) response of one attempt.
///
/// Inserted into the request extensions by the attempt-timeout layer; the classify layer
/// enforces `first_token` while it waits for the first content event (an ordinary,
/// classified `StreamTimeout` error, so retry and fallback apply) and `idle` between chunks
/// of the body it returns (a `StreamTimeout` error frame in the body). Both are clamped to
/// the [`Deadline`] when one is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamLimits {
    /// Longest wait for the first event that carries content.
    pub first_token: Option<Duration>,
    /// Longest gap between two chunks once content flows.
    pub idle: Option<Duration>,
}

/// Request extension: this attempt is not the first upstream attempt of its call (a
/// fallback model after another one failed, or a call again after waiting out a
/// `Retry-After`).
///
/// The fallback layer inserts it; the retry layer deposits nothing into its retry budget
/// for such an attempt, so the budget grows with the calls made, not with the failures
/// that make a call fall back (which would let retries grow with an outage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaterAttempt;

/// Request extension: admit this attempt even if its model is cooling down.
///
/// The fallback layer inserts it on an attempt it owes the caller an upstream call for:
/// in panic mode (every model of the chain cooling down, see
/// [`fallback`'s docs](crate::fallback)), the call each waiting caller makes once the one
/// probe answered; and the call after a waited-out `Retry-After`. The
/// [health layer](crate::health::HealthLayer) reads it. A forced attempt does not claim
/// the probe slot; its outcome is recorded like any other (a success does not close an
/// open breaker, a failure counts). Panic mode's probe itself is marked apart (it does
/// hold the probe slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForceAttempt;

/// Request extension (crate-private): panic mode's one probe of a model, which the health
/// layer admits with the breaker's probe slot even before the cooldown is over (see
/// `health/panic.rs`). Set by the fallback layer on its leader's attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PanicProbe;

/// Request extension (crate-private): which server-side lists the native routing layer
/// injected from its config (not the caller's own). The fallback layer, which knows the
/// call's chain, drops from them the models its catalog policy rules out for that chain
/// (see `routing::retain_injected`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct InjectedModels {
    /// `models` was injected.
    pub(crate) models: bool,
    /// `/messages` `fallbacks` was injected.
    pub(crate) fallbacks: bool,
}

/// One top-level member: byte offsets into the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JsonEntry {
    /// The key's opening quote.
    pub(crate) key_start: usize,
    /// One past the key's closing quote.
    pub(crate) key_end: usize,
    /// First byte of the value.
    pub(crate) value_start: usize,
    /// One past the value's last byte.
    pub(crate) value_end: usize,
    /// Whether the key contains a backslash escape (compare it decoded).
    pub(crate) escaped: bool,
}

/// The spans of a body's top-level members.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct JsonIndex {
    /// Offset of the opening `{`.
    pub(crate) open: usize,
    /// Offset of the closing `}`.
    pub(crate) close: usize,
    pub(crate) entries: Vec<JsonEntry>,
    /// Position in `entries` of the last `model` member.
    pub(crate) model: Option<usize>,
}

/// A request body that is a JSON object, with the byte span of every top-level member:
/// the parse of the body that travels in the request extensions.
///
/// Cheap to clone (a reference-count bump on the bytes and on the index), so it can travel
/// in request extensions: the buffering layer inserts one for every chat-completion body,
/// native routing and the fallback layer store the index of the body they write, and the
/// fallback layer, the catalog and the spans read it instead of parsing again
/// ([`JsonBody::from_request`]). `Debug` shows sizes only, never the body.
///
/// Declared here with the other types that cross layers, with its readers; the
/// [`body`](crate::body) module parses it ([`JsonBody::parse`]) and writes new bodies from
/// it ([`JsonBody::with_model`], [`JsonBody::edit`]).
#[derive(Clone)]
pub struct JsonBody {
    pub(crate) bytes: Bytes,
    pub(crate) index: Arc<JsonIndex>,
}

impl fmt::Debug for JsonBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonBody")
            .field("len", &self.bytes.len())
            .field("members", &self.index.entries.len())
            .field("has_model", &self.index.model.is_some())
            .finish()
    }
}

/// Reading the index (parsing and editing are in [`body`](crate::body)).
impl JsonBody {
    /// The body's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Whether this index describes exactly `bytes` (the same buffer, not merely equal
    /// content).
    pub fn is_for(&self, bytes: &Bytes) -> bool {
        self.bytes.as_ptr() == bytes.as_ptr() && self.bytes.len() == bytes.len()
    }

    /// Whether the object has a top-level member `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find_last(key).is_some()
    }

    /// The raw JSON text of the top-level member `key` (its last occurrence).
    pub fn raw(&self, key: &str) -> Option<&str> {
        let e = self.index.entries[self.find_last(key)?];
        // The index only holds spans of valid UTF-8 JSON values.
        std::str::from_utf8(&self.bytes[e.value_start..e.value_end]).ok()
    }

    /// The raw JSON bytes of the top-level member `key` (its last occurrence), without
    /// the UTF-8 check of [`raw`](Self::raw): for scans that read bytes anyway.
    pub fn raw_bytes(&self, key: &str) -> Option<&[u8]> {
        let e = self.index.entries[self.find_last(key)?];
        Some(&self.bytes[e.value_start..e.value_end])
    }

    /// Whether the body asks for a stream (a top-level `"stream": true`).
    pub fn is_stream(&self) -> bool {
        // Every request asks this (the classify layer): keys of another length are passed
        // over without a comparison (`"stream"` is 8 bytes with its quotes).
        let last = self
            .index
            .entries
            .iter()
            .rev()
            .find(|e| (e.escaped || e.key_end - e.key_start == 8) && self.key_eq(e, "stream"));
        last.is_some_and(|e| &self.bytes[e.value_start..e.value_end] == b"true")
    }

    /// The top-level `model`, unescaped, when it is a string.
    pub fn model(&self) -> Option<Cow<'_, str>> {
        let e = self.index.entries[self.index.model?];
        decode_str(&self.bytes[e.value_start..e.value_end])
    }

    /// Whether the top-level `model` is the string `name` (compared unescaped), without
    /// decoding it when it has no escape.
    pub(crate) fn model_is(&self, name: &str) -> bool {
        let Some(i) = self.index.model else {
            return false;
        };
        let e = self.index.entries[i];
        let raw = &self.bytes[e.value_start..e.value_end];
        if raw.first() != Some(&b'"') || has_escape(raw) {
            return self.model().as_deref() == Some(name);
        }
        &raw[1..raw.len() - 1] == name.as_bytes()
    }

    /// The byte range of the top-level `model` value (quotes included).
    pub fn model_span(&self) -> Option<Range<usize>> {
        let e = self.index.entries[self.index.model?];
        Some(e.value_start..e.value_end)
    }

    /// The top-level keys in body order (unescaped; duplicates repeated).
    pub fn keys(&self) -> impl Iterator<Item = Cow<'_, str>> + '_ {
        self.index
            .entries
            .iter()
            .filter_map(move |e| decode_str(&self.bytes[e.key_start..e.key_end]))
    }

    pub(crate) fn key_eq(&self, e: &JsonEntry, name: &str) -> bool {
        let raw = &self.bytes[e.key_start..e.key_end];
        if e.escaped {
            decode_str(raw).is_some_and(|k| k == name)
        } else {
            &raw[1..raw.len() - 1] == name.as_bytes()
        }
    }

    /// Every top-level member in order: its key (unescaped; an escaped key that does not
    /// decode is empty) and its value's raw bytes. One pass for readers of many keys.
    pub(crate) fn members(&self) -> impl Iterator<Item = (Cow<'_, [u8]>, &[u8])> + '_ {
        self.index.entries.iter().map(|e| {
            let raw = &self.bytes[e.key_start..e.key_end];
            let key = if e.escaped {
                match decode_str(raw) {
                    Some(Cow::Owned(k)) => Cow::Owned(k.into_bytes()),
                    Some(Cow::Borrowed(k)) => Cow::Borrowed(k.as_bytes()),
                    None => Cow::Borrowed(&b""[..]),
                }
            } else {
                Cow::Borrowed(&raw[1..raw.len() - 1])
            };
            (key, &self.bytes[e.value_start..e.value_end])
        })
    }

    pub(crate) fn find_last(&self, key: &str) -> Option<usize> {
        self.index.entries.iter().rposition(|e| self.key_eq(e, key))
    }

    /// The raw JSON bytes of every top-level member `key`, in body order (a duplicated key
    /// gives each of its values: a check must hold for whichever one the upstream reads).
    pub(crate) fn raw_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.index
            .entries
            .iter()
            .filter(move |e| self.key_eq(e, key))
            .map(move |e| &self.bytes[e.value_start..e.value_end])
    }
}

/// Decodes a JSON string token (quotes included); `None` if it is not a string.
pub(crate) fn decode_str(raw: &[u8]) -> Option<Cow<'_, str>> {
    if raw.first() != Some(&b'"') {
        return None;
    }
    if !has_escape(raw) {
        return std::str::from_utf8(&raw[1..raw.len() - 1])
            .ok()
            .map(Cow::Borrowed);
    }
    serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
}

/// Whether a JSON string's bytes hold a backslash escape. A plain loop: these strings are
/// short (model ids, keys), where `contains`'s memchr costs more than it saves.
pub(crate) fn has_escape(s: &[u8]) -> bool {
    for &b in s {
        if b == b'\\' {
            return true;
        }
    }
    false
}
