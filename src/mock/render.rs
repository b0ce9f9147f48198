//! Turning a resolved [`Leaf`] into bytes, exactly as OpenRouter shapes them.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::{MockBody, Step};
use super::reply::{Cut, Flavor, Kind, Leaf, StreamOpts};

/// The `created` timestamp of every body (fixed, so bodies are byte-exact in tests).
pub(crate) const CREATED: u64 = 1_700_000_000;
const KEEP_ALIVE: &[u8] = b": OPENROUTER PROCESSING\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";
const CONTEXT_LENGTH: &str = "This endpoint's maximum context length is 131072 tokens. However, you requested about 141607 tokens (10535 of text input, 131072 in the output). Please reduce the length of either one, or use the \"middle-out\" transform to compress your prompt automatically.";

/// Which endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Messages,
    /// The Responses API (its successes have their own shape; errors are chat's).
    Responses,
}

/// What one call turns into.
pub(crate) enum Outcome {
    Respond(Response<MockBody>),
    Hang,
    Disconnect,
}

/// The request facts a reply is rendered for.
pub(crate) struct Ctx<'a> {
    pub(crate) api: Api,
    pub(crate) model: &'a str,
    pub(crate) stream: bool,
    pub(crate) call: u64,
}

/// A JSON string literal.
pub(crate) fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// OpenRouter's wording for an error status.
pub(crate) fn status_message(status: u16, model: &str) -> String {
    match status {
        400 => "Invalid request".into(),
        401 => "No auth credentials found".into(),
        402 => "Insufficient credits. Add more using https://openrouter.ai/settings/credits".into(),
        403 => "Forbidden".into(),
        404 => format!("No endpoints found for {model}."),
        405 => "Method Not Allowed".into(),
        408 => "Request timed out".into(),
        413 => "Payload too large".into(),
        422 => "Unprocessable entity".into(),
        429 => "Rate limit exceeded".into(),
        500 => "Internal Server Error".into(),
        502 => "Provider returned error".into(),
        503 => "Service unavailable".into(),
        504 => "Gateway timeout".into(),
        524 => "Provider timed out".into(),
        529 => "Provider overloaded".into(),
        _ => StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .into(),
    }
}

/// Whether OpenRouter names the provider in `metadata` for this status.
fn names_provider(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504 | 524 | 529)
}

/// The Anthropic error `type` for a status (`/api/v1/messages`).
pub(crate) fn messages_error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        408 | 504 | 524 => "timeout_error",
        _ => "api_error",
    }
}

/// `{"error":{"code":..,"message":..[,"metadata":{"provider_name":..}]}}` without the
/// outer braces' owner: the `error` object itself.
fn error_object(code: u16, message: &str, provider: Option<&str>) -> String {
    match provider {
        Some(p) => format!(
            r#"{{"code":{code},"message":{},"metadata":{{"provider_name":{}}}}}"#,
            q(message),
            q(p)
        ),
        None => format!(r#"{{"code":{code},"message":{}}}"#, q(message)),
    }
}

/// The `/api/v1/messages` error envelope.
pub(crate) fn messages_envelope(status: u16, message: &str) -> String {
    format!(
        r#"{{"type":"error","error":{{"type":{},"message":{}}}}}"#,
        q(messages_error_type(status)),
        q(message)
    )
}

/// An error response with a JSON body.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A plain OpenRouter error for `api` (used for requests the script never sees).
pub(crate) fn plain_error(api: Api, status: StatusCode, message: &str) -> Response<MockBody> {
    let body = match api {
        Api::Chat | Api::Responses => format!(
            r#"{{"error":{}}}"#,
            error_object(status.as_u16(), message, None)
        ),
        Api::Messages => messages_envelope(status.as_u16(), message),
    };
    json_response(status, body)
}

fn usage_json(leaf: &Leaf) -> String {
    let u = leaf.usage;
    format!(
        r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"cost":{}}}"#,
        u.prompt,
        u.completion,
        u.prompt + u.completion,
        u.cost
    )
}

impl Leaf {
    pub(crate) fn provider_label(&self) -> &str {
        self.provider_name()
    }

    pub(crate) fn served_name<'a>(&'a self, ctx: &'a Ctx<'_>) -> &'a str {
        self.served(ctx)
    }

    fn provider_name(&self) -> &str {
        self.provider.as_deref().unwrap_or("Mock")
    }

    fn served<'a>(&'a self, ctx: &'a Ctx<'_>) -> &'a str {
        self.served_by.as_deref().unwrap_or(ctx.model)
    }

    /// The response (or non-response) for one call.
    pub(crate) fn render(&self, ctx: &Ctx<'_>) -> Outcome {
        let mut outcome = match &self.kind {
            Kind::Hang => return Outcome::Hang,
            Kind::Disconnect => return Outcome::Disconnect,
            Kind::Success(chunks) => {
                let default;
                let chunks: &[String] = match chunks {
                    Some(c) => c,
                    None => {
                        default = [format!("Hello from {}", self.served(ctx))];
                        &default
                    }
                };
                if ctx.api == Api::Responses {
                    if ctx.stream || self.stream.force {
                        super::responses::stream(self, ctx, chunks)
                    } else {
                        super::responses::success(self, ctx, chunks)
                    }
                } else if ctx.stream || self.stream.force {
                    Outcome::Respond(self.stream_response(ctx, chunks))
                } else {
                    self.success(ctx, chunks)
                }
            }
            Kind::Status(status, flavor) => Outcome::Respond(json_response(
                *status,
                self.error_body(ctx, *status, *flavor),
            )),
            Kind::Body(status, body) => Outcome::Respond(json_response(*status, body.clone())),
            Kind::Sse(frames) => {
                let mut out = StreamSteps::new(self.stream, 2 * frames.len());
                for f in frames {
                    out.event(Duration::ZERO, f.clone());
                }
                Outcome::Respond(out.into_response())
            }
            Kind::Raw(status, content_type, frames) => {
                Outcome::Respond(self.raw(*status, content_type.as_ref(), frames))
            }
            Kind::OkWithError(code) => Outcome::Respond(json_response(
                StatusCode::OK,
                self.ok_with_error(ctx, *code),
            )),
        };
        if let Outcome::Respond(resp) = &mut outcome {
            for (name, value) in &self.headers {
                resp.headers_mut().append(name.clone(), value.clone());
            }
        }
        outcome
    }

    /// A [`Kind::Raw`] answer: the frames as they are, cut by an abort when scripted.
    fn raw(
        &self,
        status: StatusCode,
        content_type: Option<&HeaderValue>,
        frames: &[Bytes],
    ) -> Response<MockBody> {
        let mut steps: Vec<Step> = frames.iter().cloned().map(Step::Data).collect();
        if let Some(Cut::Abort(n)) = self.stream.cut {
            steps.truncate(n);
            steps.push(Step::Abort);
        }
        let mut resp = Response::new(MockBody::from_steps(steps));
        *resp.status_mut() = status;
        if let Some(ct) = content_type {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        resp
    }

    fn error_body(&self, ctx: &Ctx<'_>, status: StatusCode, flavor: Flavor) -> String {
        let code = status.as_u16();
        let provider = self.provider_name();
        let message = match (&self.message, flavor) {
            (Some(m), _) => m.clone(),
            (None, Flavor::Plain) => status_message(code, ctx.model),
            (None, Flavor::ContextLength) => CONTEXT_LENGTH.to_owned(),
            (None, Flavor::Moderation) => format!(
                "{} requires moderation on OpenRouter. Your input was flagged for \"violence\".",
                ctx.model
            ),
            (None, Flavor::Unavailable(_)) => match ctx.api {
                Api::Chat | Api::Responses => "No endpoints available".to_owned(),
                Api::Messages => "Overloaded".to_owned(),
            },
        };
        if ctx.api == Api::Messages {
            let message = match (code, &self.message, flavor) {
                (503 | 529, None, Flavor::Plain) => "Overloaded",
                _ => &message,
            };
            return messages_envelope(code, message);
        }
        match flavor {
            Flavor::Plain => format!(
                r#"{{"error":{}}}"#,
                error_object(code, &message, names_provider(code).then_some(provider))
            ),
            Flavor::ContextLength => format!(
                r#"{{"error":{}}}"#,
                error_object(code, &message, Some(provider))
            ),
            Flavor::Moderation => format!(
                r#"{{"error":{{"code":{code},"message":{},"metadata":{{"reasons":["violence"],"flagged_input":"...","provider_name":{},"model_slug":{}}}}}}}"#,
                q(&message),
                q(provider),
                q(ctx.model)
            ),
            Flavor::Unavailable(secs) => format!(
                r#"{{"error":{{"code":{code},"message":{},"metadata":{{"error_type":"provider_overloaded","provider_code":"529"}},"availability":{{"code":"temporarily_unavailable","retryable":true,"retry_after":{secs},"requested_models":[{}]}}}}}}"#,
                q(&message),
                q(ctx.model)
            ),
        }
    }

    fn ok_with_error(&self, ctx: &Ctx<'_>, code: u16) -> String {
        let message = self
            .message
            .clone()
            .unwrap_or_else(|| status_message(code, ctx.model));
        match ctx.api {
            Api::Messages => messages_envelope(code, &message),
            Api::Chat | Api::Responses => format!(
                r#"{{"id":"gen-mock-{}","object":"chat.completion","created":{CREATED},"model":{},"provider":{},"error":{},"choices":[{{"index":0,"finish_reason":null,"message":{{"role":"assistant","content":null}}}}]}}"#,
                ctx.call,
                q(self.served(ctx)),
                q(self.provider_name()),
                error_object(code, &message, Some(self.provider_name()))
            ),
        }
    }

    fn stream_error_code(&self) -> u16 {
        self.stream.error_code.unwrap_or(502)
    }

    /// A non-stream success (or its non-stream equivalent of a cut stream).
    fn success(&self, ctx: &Ctx<'_>, chunks: &[String]) -> Outcome {
        let (content, error): (String, bool) = match self.stream.cut {
            None => (chunks.concat(), false),
            Some(Cut::Error(n)) => (chunks[..n.min(chunks.len())].concat(), true),
            Some(Cut::Stall(_)) => return Outcome::Hang,
            Some(Cut::Abort(_)) => return Outcome::Disconnect,
        };
        let model = q(self.served(ctx));
        let provider = q(self.provider_name());
        let body = match (ctx.api, error) {
            (Api::Messages, true) => {
                let code = self.stream_error_code();
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                return Outcome::Respond(json_response(
                    status,
                    messages_envelope(code, &status_message(code, ctx.model)),
                ));
            }
            (Api::Messages, false) => format!(
                r#"{{"id":"msg_mock_{}","type":"message","role":"assistant","model":{model},"provider":{provider},"content":[{{"type":"text","text":{}}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":{},"cost":{}}}}}"#,
                ctx.call,
                q(&content),
                self.usage.prompt,
                self.usage.completion,
                self.usage.cost
            ),
            (Api::Chat | Api::Responses, error) => {
                let (finish, error_field) = if error {
                    let code = self.stream_error_code();
                    (
                        "error",
                        format!(
                            r#","error":{}"#,
                            error_object(
                                code,
                                &status_message(code, ctx.model),
                                Some(self.provider_name())
                            )
                        ),
                    )
                } else {
                    ("stop", String::new())
                };
                format!(
                    r#"{{"id":"gen-mock-{}","object":"chat.completion","created":{CREATED},"model":{model},"provider":{provider},"choices":[{{"index":0,"logprobs":null,"finish_reason":"{finish}","native_finish_reason":"{finish}","message":{{"role":"assistant","content":{},"refusal":null}}{error_field}}}],"usage":{}}}"#,
                    ctx.call,
                    q(&content),
                    usage_json(self)
                )
            }
        };
        Outcome::Respond(json_response(StatusCode::OK, body))
    }

    fn stream_response(&self, ctx: &Ctx<'_>, chunks: &[String]) -> Response<MockBody> {
        let capacity = 2 * (chunks.len() + self.stream.keep_alives as usize) + 8;
        let mut out = StreamSteps::new(self.stream, capacity);
        for _ in 0..self.stream.keep_alives {
            out.event(Duration::ZERO, Bytes::from_static(KEEP_ALIVE));
        }
        let model = q(self.served(ctx));
        let provider = q(self.provider_name());
        let head = format!(
            r#""id":"gen-mock-{}","object":"chat.completion.chunk","created":{CREATED},"model":{model},"provider":{provider}"#,
            ctx.call
        );
        if ctx.api == Api::Messages {
            self.messages_start(ctx, &model, &mut out);
        }
        let finished = out.contents(
            chunks,
            |chunk| content_event(ctx.api, &head, chunk),
            || self.stream_error_event(ctx, &head),
        );
        if finished {
            self.stream_end(ctx.api, &head, &mut out);
        }
        out.into_response()
    }

    /// `/messages` streams open with `message_start` and `content_block_start`.
    fn messages_start(&self, ctx: &Ctx<'_>, model: &str, out: &mut StreamSteps) {
        let start = format!(
            r#"{{"type":"message_start","message":{{"id":"msg_mock_{}","type":"message","role":"assistant","model":{model},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":0}}}}}}"#,
            ctx.call, self.usage.prompt
        );
        out.event(Duration::ZERO, sse(Some("message_start"), start));
        let block =
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
        out.event(
            Duration::ZERO,
            sse(Some("content_block_start"), block.into()),
        );
    }

    /// The error event a stream cut by `stream_error` ends with.
    fn stream_error_event(&self, ctx: &Ctx<'_>, head: &str) -> Bytes {
        let code = self.stream_error_code();
        let message = status_message(code, ctx.model);
        match ctx.api {
            Api::Chat | Api::Responses => sse(
                None,
                format!(
                    r#"{{{head},"error":{},"choices":[{{"index":0,"delta":{{"content":""}},"finish_reason":"error","native_finish_reason":"error"}}]}}"#,
                    error_object(code, &message, None)
                ),
            ),
            Api::Messages => sse(Some("error"), messages_envelope(code, &message)),
        }
    }

    /// The end of a whole stream: the finish (with usage), then `[DONE]` / `message_stop`
    /// unless the script leaves it out.
    fn stream_end(&self, api: Api, head: &str, out: &mut StreamSteps) {
        match api {
            Api::Chat | Api::Responses => {
                let finish = format!(
                    r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":"stop","native_finish_reason":"stop","logprobs":null}}],"usage":{}}}"#,
                    usage_json(self)
                );
                out.event(Duration::ZERO, sse(None, finish));
                if !self.stream.without_done {
                    out.event(Duration::ZERO, Bytes::from_static(DONE));
                }
            }
            Api::Messages => {
                let stop = r#"{"type":"content_block_stop","index":0}"#;
                out.event(Duration::ZERO, sse(Some("content_block_stop"), stop.into()));
                let delta = format!(
                    r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{},"cost":{}}}}}"#,
                    self.usage.completion, self.usage.cost
                );
                out.event(Duration::ZERO, sse(Some("message_delta"), delta));
                if !self.stream.without_done {
                    let stop = r#"{"type":"message_stop"}"#;
                    out.event(Duration::ZERO, sse(Some("message_stop"), stop.into()));
                }
            }
        }
    }
}

/// One content chunk of a chat (or `/messages`) stream.
fn content_event(api: Api, head: &str, chunk: &str) -> Bytes {
    match api {
        Api::Chat | Api::Responses => sse(
            None,
            format!(
                r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":{}}},"finish_reason":null,"native_finish_reason":null,"logprobs":null}}]}}"#,
                q(chunk)
            ),
        ),
        Api::Messages => sse(
            Some("content_block_delta"),
            format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
                q(chunk)
            ),
        ),
    }
}

/// An SSE event, named or not.
fn sse(name: Option<&str>, data: String) -> Bytes {
    match name {
        Some(name) => format!("event: {name}\ndata: {data}\n\n").into(),
        None => format!("data: {data}\n\n").into(),
    }
}

/// The steps of a scripted stream: the waits the script asks for, then each event; the
/// content is cut where the script says. Shared by the chat, `/messages` and Responses shapes.
pub(crate) struct StreamSteps {
    opts: StreamOpts,
    steps: Vec<Step>,
}

impl StreamSteps {
    pub(crate) fn new(opts: StreamOpts, capacity: usize) -> Self {
        StreamSteps {
            opts,
            steps: Vec::with_capacity(capacity),
        }
    }

    /// One event, after the chunk delay plus `extra`.
    pub(crate) fn event(&mut self, extra: Duration, bytes: Bytes) {
        let wait = self.opts.chunk_delay.saturating_add(extra);
        if !wait.is_zero() {
            self.steps.push(Step::Wait(wait));
        }
        self.steps.push(Step::Data(bytes));
    }

    /// The content events (`content` renders each chunk; the first waits the first-token
    /// delay too), cut where the script says: with the event `cut_error` renders, a stall or
    /// an abort. `false` when the stream was cut (nothing may follow).
    pub(crate) fn contents(
        &mut self,
        chunks: &[String],
        mut content: impl FnMut(&str) -> Bytes,
        cut_error: impl FnOnce() -> Bytes,
    ) -> bool {
        let cut_at = self.opts.cut.map(|c| match c {
            Cut::Error(n) | Cut::Stall(n) | Cut::Abort(n) => n.min(chunks.len()),
        });
        for i in 0..=chunks.len() {
            let extra = if i == 0 {
                self.opts.first_token_delay
            } else {
                Duration::ZERO
            };
            if cut_at == Some(i) {
                match self.opts.cut {
                    Some(Cut::Error(_)) => {
                        let bytes = cut_error();
                        self.event(extra, bytes);
                    }
                    Some(Cut::Stall(_)) => self.steps.push(Step::Stall),
                    _ => self.steps.push(Step::Abort),
                }
                return false;
            }
            let Some(chunk) = chunks.get(i) else { break };
            let bytes = content(chunk);
            self.event(extra, bytes);
        }
        true
    }

    pub(crate) fn into_response(self) -> Response<MockBody> {
        stream_http_response(self.steps)
    }
}

pub(crate) fn stream_http_response(steps: Vec<Step>) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::stream(steps));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
