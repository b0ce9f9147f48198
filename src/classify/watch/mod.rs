//! The watch the classify layer keeps on a streamed response: which events carry content,
//! which carry an error, whether the stream ended properly (see [`crate::stream`] for the
//! behaviour). It lives with classification because every event goes to the classifier;
//! the SSE parser it reads with stays public in [`crate::stream`].

mod responses;
mod usage;

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use self::responses::Kind;
use self::usage::StreamUsage;
use super::{Classification, ClassifyOutcome, Outcome, StreamFailure};
use crate::error::{Action, BoxError, Error, ErrorKind};
use crate::extensions::{StreamErrorHook, UpstreamInfo};
use crate::stream::{Event, SseParser};

/// A failure found in the stream.
pub(crate) struct Failure {
    /// Stream offset of the failing event's block (the bytes before it are clean).
    pub(crate) at: u64,
    /// Whether content had been seen before it.
    pub(crate) after_content: bool,
    /// An error event (rather than an end or a stall).
    pub(crate) from_event: bool,
    /// The verdict.
    pub(crate) verdict: Classification,
}

/// Watches one streamed response.
pub(crate) struct Watcher {
    parser: SseParser,
    state: EventState,
    model: Option<Arc<str>>,
    hook: Option<StreamErrorHook>,
}

/// What the events so far said.
struct EventState {
    classifier: Arc<dyn ClassifyOutcome>,
    /// `/api/v1/messages` (Anthropic-shaped) rather than chat completions.
    messages: bool,
    /// `/api/v1/responses` (the Responses API; see [`responses`]).
    responses: bool,
    content_seen: bool,
    /// The stream's own end marker came: `data: [DONE]`, `/messages` `message_stop`, a
    /// Responses `response.completed` / `response.incomplete`.
    done: bool,
    /// The answer said it is complete: a chat `finish_reason` or a `/messages`
    /// `stop_reason` (not `null`, not `"error"`). An end without `done` after it has
    /// delivered the whole text, so it is not a failure.
    finished: bool,
    info: Option<UpstreamInfo>,
    /// The stream's token usage and cost, kept only while somebody observes.
    usage: Option<Box<StreamUsage>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("position", &self.parser.position())
            .field("content_seen", &self.state.content_seen)
            .field("done", &self.state.done)
            .field("finished", &self.state.finished)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    provider: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
    #[serde(default)]
    function_call: Option<IgnoredAny>,
}

fn non_empty(s: &Option<Cow<'_, str>>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// The part of an event that says the answer is complete: a chat choice's
/// `finish_reason`, or the `delta.stop_reason` of a `/messages` `message_delta`.
#[derive(Deserialize)]
struct Ending<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<EndingChoice<'a>>>,
    #[serde(borrow, default)]
    delta: Option<EndingDelta<'a>>,
}

#[derive(Deserialize)]
struct EndingChoice<'a> {
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EndingDelta<'a> {
    #[serde(borrow, default)]
    stop_reason: Option<&'a RawValue>,
}

/// A reason that ends an answer: present, not `null` (serde gives `None` for it), not
/// `"error"` (a failure, which the classifier reports).
fn ends(reason: Option<&RawValue>) -> bool {
    reason.is_some_and(|r| r.get() != "\"error\"")
}

/// Whether the event's data says the answer is complete (see [`Ending`]). A scan for the
/// key followed by something other than `null` comes first, so the chunks before the
/// last (`"finish_reason":null` in each) are never parsed for it.
fn says_finished(data: &[u8], messages: bool) -> bool {
    let key: &[u8] = if messages {
        b"\"stop_reason\""
    } else {
        b"\"finish_reason\""
    };
    let named = memchr::memmem::find_iter(data, key).any(|at| {
        let rest = data[at + key.len()..].trim_ascii_start();
        let value = rest
            .strip_prefix(b":")
            .map_or(rest, <[u8]>::trim_ascii_start);
        !value.starts_with(b"null")
    });
    if !named {
        return false;
    }
    let Ok(e) = serde_json::from_slice::<Ending<'_>>(data) else {
        return false;
    };
    e.choices.iter().flatten().any(|c| ends(c.finish_reason))
        || e.delta.is_some_and(|d| ends(d.stop_reason))
}

const MESSAGES_CONTENT: [&str; 4] = [
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
];

impl EventState {
    /// A Responses API event: `true` when it was one (handled), `false` to read it as a
    /// chat chunk.
    fn responses_event(&mut self, ev: &Event<'_>, failure: &mut Option<Failure>) -> bool {
        if let Some(verdict) = responses::failure(&*self.classifier, ev.data) {
            *failure = Some(Failure {
                at: ev.start,
                after_content: self.content_seen,
                from_event: true,
                verdict,
            });
            return true;
        }
        let kind = responses::kind(ev.name, ev.data);
        if kind == Kind::Other {
            return false;
        }
        if self.info.is_none() {
            if let Some(model) = responses::served_model(ev.data) {
                self.info = Some(UpstreamInfo {
                    model: Some(Arc::from(model)),
                    ..UpstreamInfo::default()
                });
            }
        }
        match kind {
            Kind::Opening | Kind::Other => {}
            Kind::Content => self.content_seen = true,
            Kind::End => {
                self.content_seen = true;
                self.done = true;
            }
        }
        true
    }

    /// Looks at one event; sets `failure` at the first failing one.
    fn event(&mut self, ev: Event<'_>, failure: &mut Option<Failure>) {
        if failure.is_some() {
            return;
        }
        if ev.data == b"[DONE]" {
            self.done = true;
            return;
        }
        if let Some(verdict) = self.classifier.classify(Outcome::Response {
            status: StatusCode::OK,
            headers: &HeaderMap::new(),
            body: ev.data,
        }) {
            *failure = Some(Failure {
                at: ev.start,
                after_content: self.content_seen,
                from_event: true,
                verdict,
            });
            return;
        }
        if let Some(u) = self.usage.as_deref_mut() {
            u.read(ev.data);
        }
        if !self.finished && says_finished(ev.data, self.messages) {
            self.finished = true;
        }
        if self.responses && self.responses_event(&ev, failure) {
            return;
        }
        if self.content_seen {
            if self.messages && ev.name == b"message_stop" {
                self.done = true;
            }
            return;
        }
        // Before content: parse the event to learn what it is.
        let name = std::str::from_utf8(ev.name).unwrap_or("");
        let Ok(c) = serde_json::from_slice::<Chunk<'_>>(ev.data) else {
            // Not JSON: we cannot tell, so we do not hold the stream for it.
            self.content_seen = true;
            return;
        };
        if self.info.is_none() {
            let model = c
                .model
                .as_deref()
                .or(c.message.as_ref().and_then(|m| m.model.as_deref()));
            if model.is_some() || c.provider.is_some() {
                self.info = Some(UpstreamInfo {
                    model: model.map(Arc::from),
                    provider: c.provider.as_deref().map(Arc::from),
                    id: c.id.as_deref().map(Arc::from),
                    ..UpstreamInfo::default()
                });
            }
        }
        let kind = c.kind.as_deref().unwrap_or(name);
        let is_content = MESSAGES_CONTENT.contains(&kind)
            || MESSAGES_CONTENT.contains(&name)
            || c.choices.iter().flatten().any(|ch| {
                ch.finish_reason.is_some()
                    || non_empty(&ch.text)
                    || ch.delta.as_ref().is_some_and(|d| {
                        non_empty(&d.content)
                            || non_empty(&d.reasoning)
                            || non_empty(&d.refusal)
                            || d.tool_calls.is_some()
                            || d.function_call.is_some()
                    })
            });
        if is_content {
            self.content_seen = true;
            if self.messages && (kind == "message_stop" || name == "message_stop") {
                self.done = true;
            }
        }
    }
}

impl Watcher {
    pub(crate) fn new(
        classifier: Arc<dyn ClassifyOutcome>,
        messages: bool,
        model: Option<Arc<str>>,
        hook: Option<StreamErrorHook>,
    ) -> Self {
        Watcher {
            parser: SseParser::new(),
            state: EventState {
                classifier,
                messages,
                responses: false,
                content_seen: false,
                done: false,
                finished: false,
                info: None,
                usage: None,
            },
            model,
            hook,
        }
    }

    /// Watches a Responses API stream (`/api/v1/responses`): its own content, end and
    /// failure events.
    pub(crate) fn responses_api(mut self, responses: bool) -> Self {
        self.state.responses = responses;
        self
    }

    /// Stream offset of the next chunk.
    pub(crate) fn position(&self) -> u64 {
        self.parser.position()
    }

    /// Offset up to which every event is complete (see [`SseParser::complete_up_to`]).
    pub(crate) fn complete_up_to(&self) -> u64 {
        self.parser.complete_up_to()
    }

    /// Whether an event with content was seen.
    pub(crate) fn content_seen(&self) -> bool {
        self.state.content_seen
    }

    /// The held bytes go to the caller now (content came, or the hold hit its cap): every
    /// later failure is a mid-stream one.
    pub(crate) fn mark_delivered(&mut self) {
        self.state.content_seen = true;
    }

    /// Keeps the stream's token usage and cost for observers (operation `op`), when
    /// somebody observes; they are recorded when the watcher goes.
    pub(crate) fn observe(mut self, op: &'static str) -> Self {
        self.state.usage = StreamUsage::start(op, self.model.clone());
        self
    }

    /// The `model`/`provider` of the first chunk that named them.
    pub(crate) fn take_info(&mut self) -> Option<UpstreamInfo> {
        let info = self.state.info.take();
        if let (Some(u), Some(i)) = (self.state.usage.as_deref_mut(), &info) {
            u.answered_by(i.model.as_ref());
        }
        info
    }

    /// Reads one chunk; returns the first failure it holds.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Option<Failure> {
        let mut failure = None;
        let state = &mut self.state;
        self.parser.feed(chunk, |ev| state.event(ev, &mut failure));
        failure
    }

    /// The stream ended: the failure this makes (an unfinished last event with an error,
    /// or an end without the stream's end marker and without a finish reason, see
    /// [`EventState::finished`]).
    pub(crate) fn finish(&mut self) -> Option<Failure> {
        let mut failure = None;
        let state = &mut self.state;
        self.parser.finish(|ev| state.event(ev, &mut failure));
        if failure.is_some() || self.state.done {
            return failure;
        }
        if self.state.finished {
            tracing::debug!(
                model = self.model.as_deref(),
                "the stream ended after its finish reason without its end marker ([DONE], message_stop); the answer is complete"
            );
            return None;
        }
        self.verdict(StreamFailure::Ended)
    }

    fn verdict(&self, failure: StreamFailure) -> Option<Failure> {
        let after_content = self.state.content_seen;
        self.state
            .classifier
            .classify(Outcome::Stream {
                failure,
                after_content,
            })
            .map(|verdict| Failure {
                at: self.parser.position(),
                after_content,
                from_event: false,
                verdict,
            })
    }

    /// No chunk came in time.
    pub(crate) fn stalled(&self) -> Option<Failure> {
        self.verdict(StreamFailure::Stalled)
    }

    /// A failure before content: an ordinary error for retry and fallback.
    fn error_before_content(&self, verdict: Classification) -> Error {
        let e = verdict.into_error();
        match &self.model {
            Some(m) => e.or_model(m),
            None => e,
        }
    }

    /// A failure before content: an ordinary error; after content: a `Fatal` error frame
    /// (kind `StreamInterrupted` for an error event), reported to the hook.
    pub(crate) fn error(&self, f: Failure) -> Error {
        if f.after_content {
            self.error_after_content(f.verdict, f.from_event)
        } else {
            self.error_before_content(f.verdict)
        }
    }

    /// A read error of the upstream body after content.
    pub(crate) fn interrupted(&self, source: BoxError) -> Error {
        let mut e = Error::new(ErrorKind::StreamInterrupted)
            .with_action(Action::Fatal)
            .with_detail("the connection failed mid-stream")
            .with_source(source);
        if let Some(m) = &self.model {
            e = e.with_model(m.clone());
        }
        self.report(&e);
        e
    }

    fn error_after_content(&self, verdict: Classification, event: bool) -> Error {
        let mut e = if event {
            let mut e = Error::new(ErrorKind::StreamInterrupted)
                .with_counts_for_health(verdict.counts_for_health);
            if let Some(s) = verdict.status {
                e = e.with_status(s);
            }
            if let Some(b) = verdict.body {
                e = e.with_body(b);
            }
            e
        } else {
            verdict.into_error()
        };
        e = e.with_action(Action::Fatal);
        if let Some(m) = &self.model {
            e = e.or_model(m);
        }
        self.report(&e);
        e
    }

    /// Reports a mid-stream error to the hook.
    pub(crate) fn report(&self, e: &Error) {
        if let Some(h) = &self.hook {
            h.report(e);
        }
    }
}
