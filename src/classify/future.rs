//! The response future of [`ClassifyService`](super::ClassifyService).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use tokio::time::{Instant, Sleep};

use super::layer::Limits;
use super::{Classify, Outcome, ResponseBody};
use crate::error::{BoxError, Error};
use crate::extensions::{Attempt, Deadline, StreamErrorHook, StreamLimits, UpstreamInfo};
use crate::stream::watch::{Failure, Watcher};

/// What the future keeps from the request.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    pub(crate) model: Option<Arc<str>>,
    hook: Option<StreamErrorHook>,
    /// When the first content of a stream must have come.
    first_token_by: Option<Instant>,
    /// Longest gap between stream chunks after content.
    idle: Option<Duration>,
    /// An `/api/v1/messages` request (its streams end without `[DONE]`).
    messages: bool,
    /// An `/api/v1/responses` request (its stream events are typed `response.*`).
    responses: bool,
}

impl RequestInfo {
    pub(crate) fn from_request<B>(req: &Request<B>) -> Self {
        let ext = req.extensions();
        let mut info = RequestInfo {
            model: ext.get::<Attempt>().map(|a| a.model.clone()),
            hook: ext.get::<StreamErrorHook>().cloned(),
            first_token_by: None,
            idle: None,
            messages: req.uri().path().ends_with("/messages"),
            responses: req.uri().path().ends_with("/responses"),
        };
        if let Some(limits) = ext.get::<StreamLimits>() {
            let deadline = ext.get::<Deadline>();
            let clamp = |d: Duration| deadline.map_or(d, |dl| dl.clamp(d));
            info.first_token_by = limits.first_token.map(|d| Instant::now() + clamp(d));
            info.idle = limits.idle.map(clamp);
        }
        info
    }
}

/// Turns a client error into our error: our own errors pass through unchanged, anything
/// else goes to the classifier as a transport outcome.
pub(crate) fn client_error<C: Classify + ?Sized>(
    classifier: &C,
    err: BoxError,
    model: Option<&Arc<str>>,
) -> Error {
    let err = match err.downcast::<Error>() {
        Ok(ours) => return *ours,
        Err(err) => err,
    };
    let e = match classifier.classify(Outcome::Transport(&*err)) {
        Some(c) => c.into_error().with_source(err),
        // A classifier that calls a client error a success still cannot make a response.
        None => Error::from_box(err).with_detail("the classifier accepted a client error"),
    };
    match model {
        Some(m) => e.or_model(m),
        None => e,
    }
}

/// Bytes read from a body so far: one chunk is kept as is (no copy), more are joined.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    first: Bytes,
    more: Option<BytesMut>,
}

impl Collected {
    pub(crate) fn len(&self) -> usize {
        self.more.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    pub(crate) fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match &mut self.more {
            Some(m) => m.extend_from_slice(&data),
            None if self.first.is_empty() => self.first = data,
            None => {
                let mut m = BytesMut::with_capacity((self.first.len() + data.len()) * 2);
                m.extend_from_slice(&self.first);
                m.extend_from_slice(&data);
                self.first = Bytes::new();
                self.more = Some(m);
            }
        }
    }

    pub(crate) fn freeze(self) -> Bytes {
        match self.more {
            Some(m) => m.freeze(),
            None => self.first,
        }
    }
}

pin_project! {
    /// The response future of [`ClassifyService`](super::ClassifyService).
    pub struct ResponseFuture<F, B, C> {
        #[pin]
        state: State<F, B>,
        classifier: Arc<C>,
        limits: Limits,
        info: RequestInfo,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling { #[pin] fut: F },
        Reading {
            parts: Option<http::response::Parts>,
            body: Option<B>,
            buf: Collected,
            trailers: Option<HeaderMap>,
            // true: a 2xx read for the 200-with-error check (over the limit it passes
            // through unchecked); false: an error body read for the classifier (cut at
            // the limit).
            success: bool,
        },
        // A 2xx event stream, held until its first content event.
        Peeking {
            parts: Option<http::response::Parts>,
            body: Option<B>,
            held: Collected,
            trailers: Option<HeaderMap>,
            watch: Option<Box<Watcher>>,
            #[pin]
            first_token: Option<Sleep>,
        },
        Done,
    }
}

impl<F, B, C> ResponseFuture<F, B, C> {
    pub(crate) fn new(fut: F, classifier: Arc<C>, limits: Limits, info: RequestInfo) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            classifier,
            limits,
            info,
        }
    }
}

impl<F, B, C> std::fmt::Debug for ResponseFuture<F, B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The facts of a success body ([`UpstreamInfo`]), from a borrowed probe (no `Value`).
///
/// The probe reads the top-level members in order and stops as soon as it has both
/// `model` and `provider` (`id`, which comes first, is read on the way): OpenRouter puts
/// them before `choices` and `usage`, so a long answer is not parsed at all. The finish
/// reasons and `usage` are found by byte scans (`facts::read`), when someone observes. When the probe does not stop
/// early the whole body must be valid JSON (as before); a `model` or `provider` that is
/// not a string (or `null`) gives `None`.
///
/// What only observers need (`id`, finish reasons, `usage`) is filled only when
/// `observed`: off the happy path otherwise.
pub(crate) fn upstream_info(body: &[u8], observed: bool) -> Option<UpstreamInfo> {
    let mut found = Found::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde::Deserializer::deserialize_map(&mut de, Probe(&mut found));
    // An early stop leaves the rest unread, which the deserializer reports as an error.
    if !found.both && (parsed.is_err() || de.end().is_err()) {
        return None;
    }
    if found.model.is_none() && found.provider.is_none() {
        return None;
    }
    let mut info = UpstreamInfo {
        model: found.model.map(|m| Arc::from(&*m)),
        provider: found.provider.map(|m| Arc::from(&*m)),
        ..UpstreamInfo::default()
    };
    if observed {
        info.id = found.id.map(|m| Arc::from(&*m));
        super::facts::read(body, &mut info);
    }
    Some(info)
}

#[derive(Default)]
struct Found<'de> {
    id: Option<Cow<'de, str>>,
    model: Option<Cow<'de, str>>,
    provider: Option<Cow<'de, str>>,
    /// Both were found, and the probe stopped there.
    both: bool,
}

/// Visits the top-level object, filling [`Found`].
struct Probe<'a, 'de>(&'a mut Found<'de>);

impl<'de> Visitor<'de> for Probe<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Id => self.0.id = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                Key::Model => self.0.model = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                Key::Provider => {
                    self.0.provider = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0)
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if self.0.model.is_some() && self.0.provider.is_some() {
                self.0.both = true;
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A top-level key, compared without allocating.
enum Key {
    Id,
    Model,
    Provider,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "id" => Key::Id,
                    "model" => Key::Model,
                    "provider" => Key::Provider,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// A string value, borrowed from the body when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<F, B, C, E> Future for ResponseFuture<F, B, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<ResponseBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let resp = match ready!(fut.poll(cx)) {
                        Ok(resp) => resp,
                        Err(e) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(client_error(
                                &**this.classifier,
                                e.into(),
                                this.info.model.as_ref(),
                            )));
                        }
                    };
                    let (parts, body) = resp.into_parts();
                    let success = parts.status.is_success();
                    if success && is_event_stream(&parts.headers) {
                        let classifier: Arc<dyn Classify> = this.classifier.clone();
                        let watch = Watcher::new(
                            classifier,
                            this.info.messages,
                            this.info.model.clone(),
                            this.info.hook.clone(),
                        )
                        .responses_api(this.info.responses);
                        this.state.set(State::Peeking {
                            parts: Some(parts),
                            body: Some(body),
                            held: Collected::default(),
                            trailers: None,
                            watch: Some(Box::new(watch)),
                            first_token: this.info.first_token_by.map(tokio::time::sleep_until),
                        });
                        continue;
                    }
                    if success
                        && content_length(&parts.headers)
                            .is_some_and(|n| n > this.limits.success as u64)
                    {
                        // Too large to check: pass through unchecked.
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(Response::from_parts(
                            parts,
                            ResponseBody::new(Bytes::new(), None, Some(body)),
                        )));
                    }
                    this.state.set(State::Reading {
                        parts: Some(parts),
                        body: Some(body),
                        buf: Collected::default(),
                        trailers: None,
                        success,
                    });
                }
                StateProj::Reading {
                    parts,
                    body,
                    buf,
                    trailers,
                    success,
                } => {
                    let limit = if *success {
                        this.limits.success
                    } else {
                        this.limits.error
                    };
                    // Read until the end, a read error or the limit.
                    let mut ended = false;
                    let mut read_error = None;
                    if let Some(b) = body.as_mut() {
                        loop {
                            if buf.len() > limit || (!*success && buf.len() >= limit) {
                                break;
                            }
                            match ready!(Pin::new(&mut *b).poll_frame(cx)) {
                                None => {
                                    ended = true;
                                    break;
                                }
                                Some(Ok(frame)) => match frame.into_data() {
                                    Ok(data) => buf.push(data),
                                    Err(frame) => {
                                        if let Ok(t) = frame.into_trailers() {
                                            *trailers = Some(t);
                                        }
                                    }
                                },
                                Some(Err(e)) => {
                                    read_error = Some(e.into());
                                    break;
                                }
                            }
                        }
                    }
                    let parts = parts.take().expect("polled after completion");
                    let body = body.take();
                    let trailers = trailers.take();
                    let success = *success;
                    let limit = if success {
                        this.limits.success
                    } else {
                        this.limits.error
                    };
                    let bytes = std::mem::take(buf).freeze();
                    this.state.set(State::Done);
                    if success {
                        if let Some(e) = read_error {
                            return Poll::Ready(Err(client_error(
                                &**this.classifier,
                                e,
                                this.info.model.as_ref(),
                            )));
                        }
                        if !ended {
                            // Over the limit: prefix + rest, unchecked.
                            return Poll::Ready(Ok(Response::from_parts(
                                parts,
                                ResponseBody::new(bytes, None, body),
                            )));
                        }
                    }
                    // An error body is cut at the limit for the classifier (the bytes
                    // are kept whole in case it calls the outcome a success).
                    let seen = if success {
                        &bytes[..]
                    } else {
                        &bytes[..bytes.len().min(limit)]
                    };
                    let verdict = this.classifier.classify(Outcome::Response {
                        status: parts.status,
                        headers: &parts.headers,
                        body: seen,
                    });
                    if let Some(c) = verdict {
                        let mut e = c.into_error();
                        if let Some(m) = &this.info.model {
                            e = e.or_model(m);
                        }
                        return Poll::Ready(Err(e));
                    }
                    if let Some(e) = read_error {
                        return Poll::Ready(Err(client_error(
                            &**this.classifier,
                            e,
                            this.info.model.as_ref(),
                        )));
                    }
                    let mut parts = parts;
                    if success {
                        let observed = crate::observe::listening();
                        if let Some(info) = upstream_info(&bytes, observed) {
                            parts.extensions.insert(info);
                        }
                    }
                    let rest = if ended { None } else { body };
                    return Poll::Ready(Ok(Response::from_parts(
                        parts,
                        ResponseBody::new(bytes, trailers, rest),
                    )));
                }
                StateProj::Peeking {
                    parts,
                    body,
                    held,
                    trailers,
                    watch,
                    mut first_token,
                } => {
                    let w = watch.as_mut().expect("polled after completion");
                    // What ends the wait: `None` = keep reading; `Some(failure)` with or
                    // without a failure to deliver.
                    let (ended, failure) = loop {
                        let Some(b) = body.as_mut() else {
                            break (true, w.finish());
                        };
                        match Pin::new(b).poll_frame(cx) {
                            Poll::Pending => {
                                let stalled = first_token
                                    .as_mut()
                                    .as_pin_mut()
                                    .is_some_and(|t| t.poll(cx).is_ready());
                                if !stalled {
                                    return Poll::Pending;
                                }
                                first_token.set(None);
                                match w.stalled() {
                                    Some(f) => break (false, Some(f)),
                                    // The classifier lets a stall pass: wait on.
                                    None => return Poll::Pending,
                                }
                            }
                            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                                Ok(data) => {
                                    let failure = w.feed(&data);
                                    held.push(data);
                                    if failure.is_some()
                                        || w.content_seen()
                                        || held.len() > this.limits.success
                                    {
                                        break (false, failure);
                                    }
                                }
                                Err(frame) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        *trailers = Some(t);
                                    }
                                }
                            },
                            Poll::Ready(Some(Err(e))) => {
                                let err = client_error(
                                    &**this.classifier,
                                    e.into(),
                                    this.info.model.as_ref(),
                                );
                                this.state.set(State::Done);
                                return Poll::Ready(Err(err));
                            }
                            Poll::Ready(None) => break (true, w.finish()),
                        }
                    };
                    let mut parts = parts.take().expect("polled after completion");
                    let mut w = watch.take().expect("polled after completion");
                    let rest = if ended { None } else { body.take() };
                    let trailers = trailers.take();
                    let held = std::mem::take(held).freeze();
                    this.state.set(State::Done);
                    if let Some(info) = w.take_info() {
                        parts.extensions.insert(info);
                    }
                    return Poll::Ready(release(
                        parts,
                        held,
                        trailers,
                        rest,
                        w,
                        failure,
                        this.info.idle,
                    ));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// Ends the hold of a stream: an error before content, or the response whose body
/// replays the held bytes (cut before a failing event) and watches the rest.
fn release<B>(
    parts: http::response::Parts,
    held: Bytes,
    trailers: Option<HeaderMap>,
    rest: Option<B>,
    mut w: Box<Watcher>,
    failure: Option<Failure>,
    idle: Option<Duration>,
) -> Result<Response<ResponseBody<B>>, Error> {
    let body = match failure {
        Some(f) if !f.after_content => return Err(w.error(f)),
        Some(f) => {
            let cut = usize::try_from(f.at).unwrap_or(usize::MAX).min(held.len());
            ResponseBody::failed(held.slice(..cut), w.error(f))
        }
        None if rest.is_none() => ResponseBody::new(held, trailers, None),
        None => {
            // Events not complete yet are delivered with the rest of their bytes.
            let cut = usize::try_from(w.complete_up_to())
                .unwrap_or(usize::MAX)
                .min(held.len());
            let carry = held.slice(cut..);
            w.mark_delivered();
            ResponseBody::watched(held.slice(..cut), carry, trailers, rest, w, idle)
        }
    };
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::upstream_info;

    fn info(body: &str) -> Option<(Option<String>, Option<String>)> {
        upstream_info(body.as_bytes(), true).map(|i| {
            (
                i.model.map(|m| m.to_string()),
                i.provider.map(|p| p.to_string()),
            )
        })
    }

    fn some(
        model: Option<&str>,
        provider: Option<&str>,
    ) -> Option<(Option<String>, Option<String>)> {
        Some((model.map(str::to_owned), provider.map(str::to_owned)))
    }

    #[test]
    fn reads_model_and_provider_wherever_they_are() {
        let tail = r#""choices":[{"message":{"content":"{\"model\":\"no\"}","model":"nested"}}],"usage":{"total_tokens":3}"#;
        let first =
            format!(r#"{{"id":"gen-1","provider":"OpenAI","model":"openai/gpt-4o",{tail}}}"#);
        assert_eq!(info(&first), some(Some("openai/gpt-4o"), Some("OpenAI")));
        let last = format!(r#"{{"id":"gen-1",{tail},"model":"a/b","provider":"P"}}"#);
        assert_eq!(info(&last), some(Some("a/b"), Some("P")));
        assert_eq!(
            info(&format!(r#"{{{tail},"model":"a/b"}}"#)),
            some(Some("a/b"), None)
        );
        assert_eq!(
            info(r#"{"provider":"P","model":null}"#),
            some(None, Some("P"))
        );
        assert_eq!(info(r#"{"model":"a\/b\u0021"}"#), some(Some("a/b!"), None));
    }

    #[test]
    fn stops_once_both_are_known() {
        // The rest is never read: a cut body still names its model.
        assert_eq!(
            info(r#"{"provider":"OpenAI","model":"openai/gpt-4o","choices":[{"mess"#),
            some(Some("openai/gpt-4o"), Some("OpenAI"))
        );
    }

    #[test]
    fn nothing_from_bodies_it_cannot_read() {
        assert_eq!(info(r#"{"model":"a/b","choices":[{"mess"#), None);
        assert_eq!(info(r#"{"choices":[]}"#), None);
        assert_eq!(info(r#"{"model":42,"provider":"P"}"#), None);
        assert_eq!(info(r#"["model","a/b"]"#), None);
        assert_eq!(info(r#"{"model":"a/b"} trailing"#), None);
        assert_eq!(info(""), None);
    }
}
