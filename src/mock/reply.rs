//! What the stand-in answers: [`Reply`] and its options.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

/// One scripted answer of [`MockOpenRouter`](super::MockOpenRouter).
///
/// Build one with a constructor (`Reply::ok()`, `Reply::status(429)`, `Reply::stream(..)`,
/// ...) and adjust it with the modifier methods. Modifiers on a wrapper
/// ([`Reply::delay`], [`Reply::fail_rate`]) apply to every reply inside it that they
/// concern.
///
/// Bodies follow OpenRouter's shapes exactly (see the [module docs](super) for the byte
/// layout): `chat.completion` objects on `/api/v1/chat/completions`, Anthropic-shaped
/// messages and `{"type":"error",..}` envelopes on `/api/v1/messages`.
///
/// ```
/// use std::time::Duration;
/// use tower_openrouter::mock::Reply;
///
/// let _rate_limited = Reply::status(429).retry_after(2);
/// let _slow = Reply::delay(Duration::from_secs(5), Reply::ok_text("late"));
/// let _flaky = Reply::fail_rate(0.1, Reply::status(503), 42);
/// let _broken_stream = Reply::stream(["Hel", "lo"]).keep_alives(2).error_after(1);
/// ```
#[derive(Debug, Clone)]
pub struct Reply {
    pub(crate) node: Node,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Leaf(Box<Leaf>),
    Delay(Duration, Box<Node>),
    Random(Box<Random>),
}

#[derive(Debug, Clone)]
pub(crate) struct Random {
    p: f64,
    hit: Node,
    miss: Node,
    rng: SplitMix64,
}

#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub(crate) kind: Kind,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) provider: Option<String>,
    pub(crate) served_by: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) usage: Usage,
    pub(crate) stream: StreamOpts,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A success; `None` is the default content `Hello from {model}` (one chunk).
    Success(Option<Vec<String>>),
    /// An error status with OpenRouter's body for it.
    Status(StatusCode, Flavor),
    /// An error status with a body given verbatim.
    Body(StatusCode, Bytes),
    /// A 200 whose body has a top-level `error` with this code.
    OkWithError(u16),
    /// A `200` event stream of exactly these events, one frame each.
    Sse(Vec<Bytes>),
    /// Any status with exactly these body frames under this content type (none when
    /// `None`); `stream.cut` `Abort(n)` fails the body after `n` frames.
    Raw(StatusCode, Option<HeaderValue>, Vec<Bytes>),
    /// Never answer.
    Hang,
    /// Fail like a dropped connection.
    Disconnect,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Flavor {
    Plain,
    ContextLength,
    Moderation,
    Unavailable(u64),
}

/// Token counts and cost reported in a success's `usage`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    pub(crate) prompt: u64,
    pub(crate) completion: u64,
    pub(crate) cost: f64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            prompt: 10,
            completion: 5,
            cost: 0.00042,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamOpts {
    pub(crate) keep_alives: u32,
    pub(crate) chunk_delay: Duration,
    pub(crate) first_token_delay: Duration,
    pub(crate) cut: Option<Cut>,
    pub(crate) error_code: Option<u16>,
    pub(crate) without_done: bool,
    pub(crate) force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    Error(usize),
    Stall(usize),
    Abort(usize),
}

impl Leaf {
    fn new(kind: Kind) -> Self {
        Leaf {
            kind,
            headers: Vec::new(),
            provider: None,
            served_by: None,
            message: None,
            usage: Usage::default(),
            stream: StreamOpts::default(),
        }
    }
}

fn status_code(status: u16) -> StatusCode {
    match StatusCode::from_u16(status) {
        Ok(s) => s,
        Err(_) => panic!("mock::Reply: {status} is not a valid HTTP status (100..=999)"),
    }
}

impl Reply {
    fn leaf(kind: Kind) -> Self {
        Reply {
            node: Node::Leaf(Box::new(Leaf::new(kind))),
        }
    }

    /// A `200` success that echoes the requested model, with the content
    /// `Hello from {model}` and `usage` (10 prompt, 5 completion tokens, cost 0.00042).
    ///
    /// Answered as an SSE stream (one content chunk) when the request has
    /// `"stream": true`.
    pub fn ok() -> Self {
        Reply::leaf(Kind::Success(None))
    }

    /// A `200` success with this content (one chunk when streamed).
    pub fn ok_text(content: impl Into<String>) -> Self {
        Reply::leaf(Kind::Success(Some(vec![content.into()])))
    }

    /// A success whose content comes in these chunks when streamed (one SSE event each).
    ///
    /// Streams are sent when the request has `"stream": true` or the reply is
    /// [forced](Reply::force_stream); a non-stream request gets one `chat.completion`
    /// whose content is the chunks joined (with [`error_after`](Reply::error_after): the
    /// chunks before the error and `finish_reason: "error"`; with
    /// [`stall_after`](Reply::stall_after): no answer; with
    /// [`abort_after`](Reply::abort_after): a dropped connection).
    pub fn stream<I, S>(chunks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Reply::leaf(Kind::Success(Some(
            chunks.into_iter().map(Into::into).collect(),
        )))
    }

    /// This status with OpenRouter's error body for it:
    /// `{"error":{"code":S,"message":M}}`, with `"metadata":{"provider_name":P}` for the
    /// provider-side statuses (408, 429, 502, 503, 504, 524, 529). On `/api/v1/messages`
    /// the body is the Anthropic envelope `{"type":"error","error":{"type":T,"message":M}}`.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code.
    pub fn status(status: u16) -> Self {
        Reply::leaf(Kind::Status(status_code(status), Flavor::Plain))
    }

    /// This status with exactly this body (`content-type: application/json`), on every
    /// endpoint.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code.
    pub fn error_body(status: u16, body: impl Into<Bytes>) -> Self {
        Reply::leaf(Kind::Body(status_code(status), body.into()))
    }

    /// This status with exactly this JSON body: a success of an endpoint the stand-in does
    /// not shape itself (`/embeddings`, `GET /key`, ...), or any verbatim answer. The same
    /// as [`Reply::error_body`]; the name says what the test means.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Reply::error_body(status, body)
    }

    /// A `200` `text/event-stream` of exactly these events, one body frame each (a blank
    /// line is added after each): the shape of an endpoint the stand-in does not render
    /// itself, such as a Responses API stream, or a stream cut in a way no other option
    /// scripts. [`chunk_delay`](Reply::chunk_delay) paces it.
    ///
    /// ```
    /// use tower_openrouter::mock::Reply;
    ///
    /// let reply = Reply::sse([
    ///     r#"event: response.created
    /// data: {"type":"response.created","response":{"model":"a/b"}}"#,
    ///     r#"event: response.output_text.delta
    /// data: {"type":"response.output_text.delta","delta":"Hi"}"#,
    /// ]);
    /// # let _ = reply;
    /// ```
    pub fn sse<I, S>(events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let frames = events
            .into_iter()
            .map(|e| {
                let mut e: String = e.into();
                e.push_str("\n\n");
                Bytes::from(e)
            })
            .collect();
        Reply::leaf(Kind::Sse(frames))
    }

    /// This status with exactly this body, sent in these frames (one body frame each), under
    /// this `content-type` (none when `""`), whatever the request asked for (a stream
    /// included): what a proxy, a captive portal or a broken upstream sends. A `200` HTML
    /// page, a JSON content type over a body that is not JSON, a JSON completion for a
    /// `"stream": true` request, a JSON body cut short, a body of many megabytes in
    /// chunks. With [`abort_after`](Reply::abort_after)`(n)` the body fails after `n`
    /// frames, as a dropped connection would.
    ///
    /// ```
    /// use tower_openrouter::mock::Reply;
    ///
    /// let _portal = Reply::raw(200, "text/html", ["<html><body>Log in to the Wi-Fi</body></html>"]);
    /// let _cut = Reply::raw(200, "application/json", [r#"{"id":"gen-1","choices":[{"mess"#]);
    /// let _reset = Reply::raw(200, "application/json", [r#"{"id":"gen-1","#]).abort_after(1);
    /// ```
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code or `content_type` not a valid header
    /// value.
    pub fn raw<I, B>(status: u16, content_type: &str, frames: I) -> Self
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let content_type = (!content_type.is_empty()).then(|| {
            HeaderValue::from_str(content_type).unwrap_or_else(|_| {
                panic!("mock::Reply::raw: invalid content type {content_type:?}")
            })
        });
        let frames = frames.into_iter().map(Into::into).collect();
        Reply::leaf(Kind::Raw(status_code(status), content_type, frames))
    }

    /// A `400` context-length error, as OpenRouter words it (the "maximum context length
    /// is 131072 tokens" message, provider in `metadata`).
    pub fn context_length() -> Self {
        Reply::leaf(Kind::Status(StatusCode::BAD_REQUEST, Flavor::ContextLength))
    }

    /// A `403` moderation refusal: `metadata.reasons` `["violence"]`, `flagged_input`,
    /// `provider_name` and `model_slug` (the requested model).
    pub fn moderation() -> Self {
        Reply::leaf(Kind::Status(StatusCode::FORBIDDEN, Flavor::Moderation))
    }

    /// A `503` "No endpoints available" with the newer metadata (`error_type`,
    /// `provider_code`) and `availability` (`temporarily_unavailable`, retryable, this
    /// `retry_after`, the requested model), plus a `Retry-After` header with the same
    /// seconds.
    pub fn unavailable(retry_after_secs: u64) -> Self {
        Reply::leaf(Kind::Status(
            StatusCode::SERVICE_UNAVAILABLE,
            Flavor::Unavailable(retry_after_secs),
        ))
        .retry_after(retry_after_secs)
    }

    /// A `200` whose body has a top-level `error` with this code (and a choice with
    /// `content: null`), as OpenRouter sometimes sends.
    pub fn ok_with_error(code: u16) -> Self {
        Reply::leaf(Kind::OkWithError(code))
    }

    /// A `200` whose only choice has `finish_reason: "error"` and an `error` (code 502).
    /// Streamed, it is an error chunk before any content.
    pub fn finish_reason_error() -> Self {
        Reply::stream(Vec::<String>::new()).error_after(0)
    }

    /// `inner`, after waiting `delay` (tokio time: exact under paused time). Delays nest
    /// and add up.
    pub fn delay(delay: Duration, inner: Reply) -> Self {
        Reply {
            node: Node::Delay(delay, Box::new(inner.node)),
        }
    }

    /// A request that is never answered (the response future stays pending).
    pub fn hang() -> Self {
        Reply::leaf(Kind::Hang)
    }

    /// A transport failure: in process the service returns an `io::Error` of kind
    /// `ConnectionReset`; over loopback the server closes the connection without
    /// answering.
    pub fn disconnect() -> Self {
        Reply::leaf(Kind::Disconnect)
    }

    /// `failure` with probability `p`, otherwise [`Reply::ok()`], drawn from a PRNG seeded
    /// with `seed`: the same seed gives the same sequence of draws. Each call of a script
    /// step draws once; a clone continues from the clone's state independently.
    ///
    /// # Panics
    ///
    /// If `p` is not within `0.0..=1.0`.
    pub fn fail_rate(p: f64, failure: Reply, seed: u64) -> Self {
        Reply::random(p, failure, Reply::ok(), seed)
    }

    /// `hit` with probability `p`, otherwise `miss`, seeded like [`Reply::fail_rate`].
    ///
    /// # Panics
    ///
    /// If `p` is not within `0.0..=1.0`.
    pub fn random(p: f64, hit: Reply, miss: Reply, seed: u64) -> Self {
        assert!(
            (0.0..=1.0).contains(&p),
            "mock::Reply::random: probability {p} is not within 0.0..=1.0"
        );
        Reply {
            node: Node::Random(Box::new(Random {
                p,
                hit: hit.node,
                miss: miss.node,
                rng: SplitMix64(seed),
            })),
        }
    }

    fn each_leaf(mut self, mut f: impl FnMut(&mut Leaf)) -> Self {
        fn walk(node: &mut Node, f: &mut dyn FnMut(&mut Leaf)) {
            match node {
                Node::Leaf(leaf) => f(leaf),
                Node::Delay(_, inner) => walk(inner, f),
                Node::Random(r) => {
                    walk(&mut r.hit, f);
                    walk(&mut r.miss, f);
                }
            }
        }
        walk(&mut self.node, &mut f);
        self
    }

    fn each_success(self, mut f: impl FnMut(&mut StreamOpts)) -> Self {
        self.each_leaf(|leaf| {
            if matches!(leaf.kind, Kind::Success(_)) {
                f(&mut leaf.stream)
            }
        })
    }

    /// Adds a response header.
    ///
    /// # Panics
    ///
    /// If the name or value is not a valid header name or value.
    pub fn header(self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("mock::Reply::header: invalid header name {name:?}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|_| panic!("mock::Reply::header: invalid value for {name}"));
        self.each_leaf(|leaf| leaf.headers.push((name.clone(), value.clone())))
    }

    /// Adds a `Retry-After: {secs}` header.
    pub fn retry_after(self, secs: u64) -> Self {
        self.header("retry-after", &secs.to_string())
    }

    /// The provider named in bodies (`provider`, `metadata.provider_name`); default
    /// `"Mock"`.
    pub fn provider(self, provider: &str) -> Self {
        self.each_leaf(|leaf| leaf.provider = Some(provider.to_owned()))
    }

    /// The `model` a success reports (default: the requested model), as when
    /// OpenRouter's own routing served another model.
    pub fn served_by(self, model: &str) -> Self {
        self.each_leaf(|leaf| leaf.served_by = Some(model.to_owned()))
    }

    /// The error `message` of a [`Reply::status`] body (default: OpenRouter's wording for
    /// the status).
    pub fn message(self, message: &str) -> Self {
        self.each_leaf(|leaf| leaf.message = Some(message.to_owned()))
    }

    /// The `usage` of a success: prompt and completion tokens (total is their sum) and
    /// cost in credits.
    pub fn usage(self, prompt_tokens: u64, completion_tokens: u64, cost: f64) -> Self {
        self.each_leaf(|leaf| {
            leaf.usage = Usage {
                prompt: prompt_tokens,
                completion: completion_tokens,
                cost,
            }
        })
    }

    /// Stream option: this many `: OPENROUTER PROCESSING` keep-alive comments before the
    /// first chunk.
    pub fn keep_alives(self, n: u32) -> Self {
        self.each_success(|s| s.keep_alives = n)
    }

    /// Stream option: wait this long before every event of the stream (keep-alives,
    /// chunks, the final chunk, `[DONE]`; each event of a [`Reply::sse`]).
    pub fn chunk_delay(self, delay: Duration) -> Self {
        self.each_leaf(|leaf| {
            if matches!(leaf.kind, Kind::Success(_) | Kind::Sse(_)) {
                leaf.stream.chunk_delay = delay;
            }
        })
    }

    /// Stream option: wait this long (in addition to the chunk delay) before the first
    /// content chunk, after the keep-alives.
    pub fn first_token_delay(self, delay: Duration) -> Self {
        self.each_success(|s| s.first_token_delay = delay)
    }

    /// Stream option: after `n` content chunks send OpenRouter's mid-stream error chunk
    /// (`"error":{"code":502,..}`, `finish_reason: "error"`; `event: error` on
    /// `/api/v1/messages`) and end the stream without `[DONE]`.
    pub fn error_after(self, n: usize) -> Self {
        self.each_success(|s| s.cut = Some(Cut::Error(n)))
    }

    /// Stream option: the code of the [`error_after`](Reply::error_after) chunk
    /// (default 502).
    pub fn error_code(self, code: u16) -> Self {
        self.each_success(|s| s.error_code = Some(code))
    }

    /// Stream option: after `n` content chunks, send nothing more and never end.
    pub fn stall_after(self, n: usize) -> Self {
        self.each_success(|s| s.cut = Some(Cut::Stall(n)))
    }

    /// Stream option: after `n` content chunks (of a [`Reply::raw`]: `n` frames), fail the
    /// body with an `io::Error` (`ConnectionReset`), as a dropped connection would.
    pub fn abort_after(self, n: usize) -> Self {
        self.each_leaf(|leaf| {
            if matches!(leaf.kind, Kind::Success(_) | Kind::Raw(..)) {
                leaf.stream.cut = Some(Cut::Abort(n));
            }
        })
    }

    /// Stream option: end the stream after the final chunk without `data: [DONE]`
    /// (`message_stop` on `/api/v1/messages`).
    pub fn without_done(self) -> Self {
        self.each_success(|s| s.without_done = true)
    }

    /// Stream option: answer with a stream even when the request did not ask for one.
    pub fn force_stream(self) -> Self {
        self.each_success(|s| s.force = true)
    }
}

impl Node {
    /// Picks the concrete reply for one call: total delay and the leaf.
    pub(crate) fn resolve(&mut self) -> (Duration, &Leaf) {
        let mut delay = Duration::ZERO;
        let mut node = self;
        loop {
            match node {
                Node::Leaf(leaf) => return (delay, leaf),
                Node::Delay(d, inner) => {
                    delay = delay.saturating_add(*d);
                    node = inner;
                }
                Node::Random(r) => {
                    let hit = r.rng.next_f64() < r.p;
                    node = if hit { &mut r.hit } else { &mut r.miss };
                }
            }
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for test randomness.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // Reference output of SplitMix64 seeded with 0.
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn p_zero_and_one_are_exact() {
        let mut never = Reply::fail_rate(0.0, Reply::hang(), 1).node;
        let mut always = Reply::fail_rate(1.0, Reply::hang(), 1).node;
        for _ in 0..1000 {
            assert!(matches!(never.resolve().1.kind, Kind::Success(None)));
            assert!(matches!(always.resolve().1.kind, Kind::Hang));
        }
    }

    #[test]
    fn delays_add_up() {
        let mut n = Reply::delay(
            Duration::from_secs(1),
            Reply::delay(Duration::from_millis(500), Reply::ok()),
        )
        .node;
        assert_eq!(n.resolve().0, Duration::from_millis(1500));
    }
}
