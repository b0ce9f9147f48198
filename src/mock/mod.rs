//! A scriptable OpenRouter stand-in for tests, examples and demos (feature `mock`).
//!
//! [`MockOpenRouter`] is an in-process `Service<http::Request<Full<Bytes>>>` that answers
//! `POST /api/v1/chat/completions` and `POST /api/v1/messages` the way OpenRouter does,
//! scripted per model: successes that echo the model with `usage` and `cost`, any error
//! status with OpenRouter's error body and `Retry-After`, a `200` with an error inside,
//! delays, hangs, dropped connections, SSE streams with keep-alive comments, mid-stream
//! error chunks, missing `[DONE]`, stalls and aborts; bodies given verbatim
//! ([`Reply::raw`]: an HTML `200`, JSON cut short, megabytes in chunks); sequences ("429 twice, then
//! succeed") and seeded random failure rates. It counts requests per model and keeps the
//! requests it received (all of them by default; the last `n` with
//! [`keep_requests`](MockOpenRouter::keep_requests)). [`MockOpenRouter::serve`] puts it on a loopback port behind hyper,
//! so black-box tests and examples can use it over real HTTP.
//!
//! All waits use `tokio::time`, so under `#[tokio::test(start_paused = true)]` they are
//! exact and instant.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::ServiceExt;
//! use tower_openrouter::mock::{MockOpenRouter, Reply};
//!
//! let mock = MockOpenRouter::new();
//! // 429 twice, then succeed (the last step answers every later call).
//! mock.model("openai/gpt-4o")
//!     .respond(Reply::status(429).retry_after(2))
//!     .times(2)
//!     .then(Reply::ok_text("hi"));
//!
//! let request = || {
//!     http::Request::post("https://openrouter.ai/api/v1/chat/completions")
//!         .header("content-type", "application/json")
//!         .body(Full::new(Bytes::from_static(br#"{"model":"openai/gpt-4o","messages":[]}"#)))
//!         .unwrap()
//! };
//! for _ in 0..2 {
//!     let resp = mock.clone().oneshot(request()).await.unwrap();
//!     assert_eq!(resp.status(), 429);
//!     assert_eq!(resp.headers()["retry-after"], "2");
//! }
//! let resp = mock.clone().oneshot(request()).await.unwrap();
//! assert_eq!(resp.status(), 200);
//! let body = resp.into_body().collect().await.unwrap().to_bytes();
//! assert!(body.starts_with(br#"{"id":"gen-mock-3","object":"chat.completion","created":1700000000,"model":"openai/gpt-4o","provider":"Mock""#));
//!
//! assert_eq!(mock.calls("openai/gpt-4o"), 3);
//! assert_eq!(mock.bodies("openai/gpt-4o").len(), 3);
//! # }
//! ```
//!
//! # Scripts
//!
//! [`MockOpenRouter::model`] gives a model's [`ModelScript`]: `respond(r)` starts a new
//! script with the step `r`, `then(r)` adds a step, `times(n)` / `once()` say how many
//! calls the last added step answers. A step without `times` answers one call, except the
//! last step, which answers every remaining call. When a script runs out (its last step
//! has `times`), the model gets the default reply: [`Reply::ok()`] unless changed with
//! [`MockOpenRouter::default_reply`], which also answers every model without a script.
//!
//! # Latency per request
//!
//! [`Reply::delay`] holds the response (its headers); a stream's first content chunk comes
//! [`Reply::first_token_delay`] after them. [`Reply::random`] draws per call from a PRNG
//! seeded by the test, so a seeded distribution of times to first token is a `random`
//! over replies with different delays (nest them for more than two values): the same seed
//! gives the same time to every call, in order.
//!
//! ```
//! use std::time::Duration;
//! use tower_openrouter::mock::{MockOpenRouter, Reply};
//!
//! let ttft = |s| Reply::stream(["Hel", "lo"]).first_token_delay(Duration::from_secs(s));
//! let mock = MockOpenRouter::new();
//! // The first token after 10 s on 10% of requests, after 1 s otherwise.
//! mock.model("a/b").respond(Reply::random(0.1, ttft(10), ttft(1), 42));
//! // 5% at 30 s, 15% at 4 s, the rest at 1 s.
//! let rest = Reply::random(0.15 / 0.95, ttft(4), ttft(1), 7);
//! mock.model("c/d").respond(Reply::random(0.05, ttft(30), rest, 8));
//! ```
//!
//! # What goes over the wire
//!
//! Bodies are byte-exact and deterministic: `id` is `gen-mock-{n}` (`msg_mock_{n}` on
//! `/messages`) where `n` counts every request the mock received (from 1, since the last
//! [`reset`](MockOpenRouter::reset)); `created` is `1700000000`; `provider` is `"Mock"`
//! unless set with [`Reply::provider`]. A chat success is
//!
//! ```text
//! {"id":"gen-mock-1","object":"chat.completion","created":1700000000,"model":"a/b","provider":"Mock","choices":[{"index":0,"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","message":{"role":"assistant","content":"Hello from a/b","refusal":null}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":0.00042}}
//! ```
//!
//! and, for a request with `"stream": true`, one SSE event per frame of the body:
//!
//! ```text
//! : OPENROUTER PROCESSING                          (one per keep_alives)
//!
//! data: {"id":"gen-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"a/b","provider":"Mock","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}
//!
//! data: {..same head..,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop","native_finish_reason":"stop","logprobs":null}],"usage":{..}}
//!
//! data: [DONE]
//! ```
//!
//! A mid-stream error ([`Reply::error_after`]) is
//! `data: {..same head..,"error":{"code":502,"message":"Provider returned error"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error","native_finish_reason":"error"}]}`
//! and ends the stream. Error statuses carry `{"error":{"code":..,"message":..}}` (with
//! `metadata.provider_name` for provider-side statuses). On `/api/v1/messages` successes
//! are Anthropic-shaped messages, streams are `message_start` .. `message_stop` events,
//! and every error is the envelope `{"type":"error","error":{"type":..,"message":..}}`
//! (`event: error` in streams).
//!
//! `/api/v1/completions` and `/api/v1/embeddings` are answered by model like chat
//! completions (script their successes with [`Reply::json`] when the test needs their real
//! shape). `/api/v1/responses` is answered by model too, successes in the Responses API
//! shape (a `response` object; streamed, `response.created` .. `response.output_text.delta`
//! .. `response.completed`, a mid-stream error as `response.failed`), errors as chat's.
//!
//! # Server-side routing
//!
//! Like OpenRouter, a request with `models: [a, b, c]` (or, on `/messages`, `model: a`
//! with `fallbacks: [{"model": b}, ..]`) is answered by the first listed model whose
//! script step succeeds, in order, with that model in the response's `model`; every model
//! tried counts a call ([`calls`](MockOpenRouter::calls)) and moves its script on. When
//! all fail the answer is the last one's failure. A hang or a dropped connection ends the
//! request where it happens. OpenRouter's documented limits are its `400`s: more than 3
//! `models` or `fallbacks`, `fallbacks` together with `models`, a `fallbacks` entry with
//! anything but a string `model`, `fallbacks` outside `/messages`.
//!
//! # Other requests
//!
//! `GET /api/v1/models` answers with the stand-in's catalog (see
//! [`catalog_model`](MockOpenRouter::catalog_model)) unless its route is scripted.
//! A path with a script of its own ([`MockOpenRouter::route`], e.g. `GET /api/v1/key`)
//! gets it, whatever the method. Otherwise requests the script never sees: another path
//! gets `404`, a method other than `POST` `405`, and a body that is not JSON with a string
//! `model` gets OpenRouter's `400`. They count in
//! [`total_calls`](MockOpenRouter::total_calls) and [`requests`](MockOpenRouter::requests),
//! not per model.
//!
//! The mock never logs request bodies or headers.

mod body;
mod capacity;
mod catalog;
mod render;
mod reply;
mod responses;
mod server;

pub use body::MockBody;
pub use catalog::MockModel;
pub use reply::Reply;
pub use server::MockServer;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use tokio::time::Sleep;

use capacity::{Capacity, InFlight};
use render::{Api, Ctx, Outcome};
use reply::Node;

/// The scriptable OpenRouter stand-in. See the [module docs](self).
///
/// Cloning is cheap: clones share the scripts, counters and received requests.
#[derive(Clone, Default)]
pub struct MockOpenRouter {
    shared: Arc<Mutex<State>>,
}

struct State {
    scripts: HashMap<Arc<str>, Script>,
    /// Scripts of other paths (`GET /api/v1/key`, ...), by path.
    routes: HashMap<Arc<str>, Script>,
    default: Node,
    calls: BTreeMap<Arc<str>, u64>,
    total: u64,
    requests: VecDeque<ReceivedRequest>,
    /// How many received requests to keep (the newest); `None` keeps all.
    keep: Option<usize>,
    /// What `GET /api/v1/models` lists, by id.
    catalog: BTreeMap<String, serde_json::Value>,
    capacity: HashMap<Arc<str>, Capacity>,
}

impl Default for State {
    fn default() -> Self {
        State {
            scripts: HashMap::new(),
            routes: HashMap::new(),
            default: Reply::ok().node,
            calls: BTreeMap::new(),
            total: 0,
            requests: VecDeque::new(),
            keep: None,
            catalog: catalog::fixture(),
            capacity: HashMap::new(),
        }
    }
}

#[derive(Default)]
struct Script {
    steps: Vec<(Node, Option<u32>)>,
    pos: usize,
    used: u32,
}

impl Script {
    /// The step answering the next call, if the script has not run out.
    fn next(&mut self) -> Option<&mut Node> {
        loop {
            let last = self.pos + 1 == self.steps.len();
            let limit = match self.steps.get(self.pos)? {
                (_, None) if last => return Some(&mut self.steps[self.pos].0),
                (_, None) => 1,
                (_, Some(n)) => *n,
            };
            if self.used < limit {
                self.used += 1;
                return Some(&mut self.steps[self.pos].0);
            }
            self.pos += 1;
            self.used = 0;
        }
    }
}

impl std::fmt::Debug for MockOpenRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MockOpenRouter")
            .field("scripted_models", &state.scripts.len())
            .field("calls", &state.calls)
            .field("total_calls", &state.total)
            .finish()
    }
}

/// One request the mock received (headers and body included, for assertions).
///
/// Its `Debug` output shows neither the `Authorization` value nor the body.
#[derive(Clone)]
pub struct ReceivedRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    model: Option<Arc<str>>,
    stream: bool,
}

impl ReceivedRequest {
    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URI as received (a path only, over loopback).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body bytes, as sent.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body's `model`, when it had one.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether the body asked for a stream (`"stream": true`).
    pub fn is_stream(&self) -> bool {
        self.stream
    }
}

impl std::fmt::Debug for ReceivedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if name == http::header::AUTHORIZATION {
                    "<redacted>"
                } else {
                    value.to_str().unwrap_or("<binary>")
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("ReceivedRequest")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .field("model", &self.model)
            .field("stream", &self.stream)
            .finish()
    }
}

/// A model's script, from [`MockOpenRouter::model`]. See the [module docs](self#scripts).
///
/// ```
/// use tower_openrouter::mock::{MockOpenRouter, Reply};
///
/// let mock = MockOpenRouter::new();
/// mock.model("a/b").respond(Reply::status(503)); // always 503
/// mock.model("c/d")
///     .respond(Reply::status(429))
///     .times(2)
///     .then(Reply::status(500))
///     .then(Reply::ok()); // 429, 429, 500, then success forever
/// mock.model("e/f").respond(Reply::hang()).once(); // hangs once, then the default
/// ```
#[derive(Clone)]
pub struct ModelScript {
    mock: MockOpenRouter,
    model: Arc<str>,
    /// A path's script ([`MockOpenRouter::route`]), not a model's.
    route: bool,
}

impl std::fmt::Debug for ModelScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelScript")
            .field("model", &self.model)
            .finish()
    }
}

impl ModelScript {
    fn with(&self, f: impl FnOnce(&mut Script)) {
        let mut state = self.mock.lock();
        let scripts = if self.route {
            &mut state.routes
        } else {
            &mut state.scripts
        };
        f(scripts.entry(self.model.clone()).or_default())
    }

    /// Starts the model's script anew with this step.
    pub fn respond(self, reply: Reply) -> Self {
        self.with(|s| {
            *s = Script {
                steps: vec![(reply.node, None)],
                pos: 0,
                used: 0,
            }
        });
        self
    }

    /// Adds a step after the current last one.
    pub fn then(self, reply: Reply) -> Self {
        self.with(|s| s.steps.push((reply.node, None)));
        self
    }

    /// The last added step answers `n` calls (then the next step, or the default reply).
    ///
    /// # Panics
    ///
    /// If the script has no step yet.
    pub fn times(self, n: u32) -> Self {
        self.with(|s| match s.steps.last_mut() {
            Some(step) => step.1 = Some(n),
            None => panic!("mock: times() must follow respond() or then()"),
        });
        self
    }

    /// Same as `times(1)`.
    pub fn once(self) -> Self {
        self.times(1)
    }

    fn with_capacity(&self, f: impl FnOnce(&mut Capacity)) {
        let mut state = self.mock.lock();
        f(state.capacity.entry(self.model.clone()).or_default())
    }

    /// The model's capacity: a request that arrives while `n` of its requests are in
    /// flight (from arrival until the response body is done or dropped) is answered `429`
    /// with `Retry-After` ([`capacity_retry_after`](Self::capacity_retry_after), 1 s by
    /// default) at once, without consuming a script step. The rejection counts in
    /// [`calls`](MockOpenRouter::calls) and [`capacity_rejections`](MockOpenRouter::capacity_rejections).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use tower::ServiceExt;
    /// use tower_openrouter::mock::{MockOpenRouter, Reply};
    ///
    /// let mock = MockOpenRouter::new();
    /// mock.model("a/b")
    ///     .respond(Reply::delay(Duration::from_millis(20), Reply::ok()))
    ///     .max_in_flight(1);
    /// let req = || {
    ///     http::Request::post("/api/v1/chat/completions")
    ///         .body(http_body_util::Full::from(r#"{"model":"a/b"}"#))
    ///         .unwrap()
    /// };
    /// let first = mock.clone().oneshot(req()); // in flight while not done
    /// let second = mock.clone().oneshot(req());
    /// let (first, second) = tokio::join!(first, second);
    /// assert_eq!(first.unwrap().status(), 200);
    /// let second = second.unwrap();
    /// assert_eq!(second.status(), 429);
    /// assert_eq!(second.headers()["retry-after"], "1");
    /// assert_eq!(mock.capacity_rejections("a/b"), 1);
    /// # }
    /// ```
    pub fn max_in_flight(self, n: u32) -> Self {
        self.with_capacity(|c| c.max_in_flight = Some(n));
        self
    }

    /// The model's rate: above `n` requests admitted in one second (slots of one second
    /// from the first request of each), the rest of the second is answered `429` like
    /// [`max_in_flight`](Self::max_in_flight).
    pub fn max_per_second(self, n: u32) -> Self {
        self.with_capacity(|c| c.max_per_second = Some(n));
        self
    }

    /// The `Retry-After` seconds of capacity 429s (default 1).
    pub fn capacity_retry_after(self, secs: u64) -> Self {
        self.with_capacity(|c| c.retry_after = secs);
        self
    }

    /// How long a capacity 429 takes to come (default: at once), as a provider that
    /// takes as long to refuse a request as to answer it. A request refused so does not
    /// count as in flight while it waits.
    pub fn capacity_delay(self, delay: std::time::Duration) -> Self {
        self.with_capacity(|c| c.reject_delay = delay);
        self
    }
}

impl MockOpenRouter {
    /// A mock that answers every model with [`Reply::ok()`].
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The script of `model` (the exact string of the request's `model`).
    pub fn model(&self, model: &str) -> ModelScript {
        ModelScript {
            mock: self.clone(),
            model: model.into(),
            route: false,
        }
    }

    /// The reply for models without a script and after a script runs out (initially
    /// [`Reply::ok()`]).
    pub fn default_reply(&self, reply: Reply) -> &Self {
        self.lock().default = reply.node;
        self
    }

    /// Keeps only the last `n` received requests for [`requests`](Self::requests) and
    /// [`bodies`](Self::bodies), dropping older ones as new ones arrive (and at once, if
    /// more are kept already). `0` keeps none.
    ///
    /// By default the mock keeps every request, which suits tests (they assert on the whole
    /// history) but grows without bound in a long-running process: a server or demo that
    /// uses the mock should set a bound. The counters ([`calls`](Self::calls),
    /// [`total_calls`](Self::total_calls), [`calls_by_model`](Self::calls_by_model)) and
    /// the `gen-mock-{n}` numbering stay exact either way.
    ///
    /// ```
    /// use tower_openrouter::mock::MockOpenRouter;
    ///
    /// let mock = MockOpenRouter::new();
    /// mock.keep_requests(1_000);
    /// ```
    pub fn keep_requests(&self, n: usize) -> &Self {
        let mut state = self.lock();
        state.keep = Some(n);
        let excess = state.requests.len().saturating_sub(n);
        state.requests.drain(..excess);
        self
    }

    /// How many requests of `model` were answered 429 by its capacity
    /// ([`ModelScript::max_in_flight`], [`ModelScript::max_per_second`]).
    pub fn capacity_rejections(&self, model: &str) -> u64 {
        self.lock().capacity.get(model).map_or(0, |c| c.rejected)
    }

    /// The most requests of `model` in flight at once so far (counted only once a
    /// capacity is set for it).
    pub fn peak_in_flight(&self, model: &str) -> u32 {
        self.lock()
            .capacity
            .get(model)
            .map_or(0, |c| c.peak_in_flight)
    }

    /// How many requests named `model`.
    pub fn calls(&self, model: &str) -> u64 {
        self.lock().calls.get(model).copied().unwrap_or(0)
    }

    /// How many requests the mock received (including ones without a usable model).
    pub fn total_calls(&self) -> u64 {
        self.lock().total
    }

    /// Requests per model, in model order.
    pub fn calls_by_model(&self) -> BTreeMap<String, u64> {
        self.lock()
            .calls
            .iter()
            .map(|(m, n)| (m.to_string(), *n))
            .collect()
    }

    /// Every request received, in order (only the last `n` with
    /// [`keep_requests`](Self::keep_requests)).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    /// The bodies of the requests that named `model`, in order (among the kept requests:
    /// see [`keep_requests`](Self::keep_requests)).
    pub fn bodies(&self, model: &str) -> Vec<Bytes> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.model.as_deref() == Some(model))
            .map(|r| r.body.clone())
            .collect()
    }

    /// The script of `path` (e.g. `/api/v1/key`, `/api/v1/models`): every request to that
    /// path whatever its method or body, unless the path is one the stand-in answers by
    /// model. Such requests count in [`total_calls`](Self::total_calls), not per model.
    ///
    /// ```
    /// use tower_openrouter::mock::{MockOpenRouter, Reply};
    ///
    /// let mock = MockOpenRouter::new();
    /// mock.route("/api/v1/key")
    ///     .respond(Reply::status(500))
    ///     .once()
    ///     .then(Reply::json(200, r#"{"data":{"limit_remaining":12.5}}"#));
    /// ```
    pub fn route(&self, path: &str) -> ModelScript {
        ModelScript {
            mock: self.clone(),
            model: path.into(),
            route: true,
        }
    }

    /// Adds `model` to what `GET /api/v1/models` lists, or replaces the entry with its
    /// id. The catalog starts with nine real models in OpenRouter's shape
    /// (`anthropic/claude-sonnet-4.5`, `openai/gpt-4o`, `openai/gpt-4o-mini`,
    /// `google/gemini-2.5-flash`, `meta-llama/llama-3.1-8b-instruct` (no tools, text only),
    /// `mistralai/mistral-7b-instruct` (32k context, no tools), `deepseek/deepseek-r1`,
    /// `anthropic/claude-3-opus` (retired 2026-01-05), `openrouter/auto`).
    pub fn catalog_model(&self, model: MockModel) -> &Self {
        self.lock().catalog.insert(model.id(), model.into_value());
        self
    }

    /// Removes `id` from the catalog.
    pub fn remove_catalog_model(&self, id: &str) -> &Self {
        self.lock().catalog.remove(id);
        self
    }

    /// The body `GET /api/v1/models` answers with now (`{"data": [...]}`).
    pub fn catalog_json(&self) -> String {
        catalog::render(&self.lock().catalog)
    }

    /// The script of `GET /api/v1/models`: while it has steps they answer (a
    /// `Reply::status(500)`, a `Reply::error_body(200, "not json")`, a delay); when it runs
    /// out the catalog is served. Script it like a model, e.g.
    /// `mock.catalog_script().respond(Reply::status(500)).once()`.
    pub fn catalog_script(&self) -> ModelScript {
        self.route(catalog::PATH)
    }

    /// Forgets counts and received requests (the `gen-mock-{n}` numbering restarts).
    /// Scripts, their progress, the default reply and the
    /// [`keep_requests`](Self::keep_requests) bound stay as they are.
    pub fn reset(&self) {
        let mut state = self.lock();
        state.calls.clear();
        state.total = 0;
        state.requests.clear();
    }

    fn handle(&self, req: Request<Full<Bytes>>) -> ResponseFuture {
        let (parts, body) = req.into_parts();
        let bytes = crate::body::full_bytes(&body);
        let api = match parts.uri.path() {
            "/api/v1/chat/completions" | "/api/v1/completions" | "/api/v1/embeddings" => {
                Some(Api::Chat)
            }
            "/api/v1/responses" => Some(Api::Responses),
            "/api/v1/messages" => Some(Api::Messages),
            _ => None,
        };
        let peek = serde_json::from_slice::<Peek<'_>>(&bytes).ok();
        let model: Option<Arc<str>> = peek
            .as_ref()
            .and_then(|p| p.model.as_deref())
            .filter(|m| !m.is_empty())
            .map(Into::into);
        let stream = peek.as_ref().and_then(|p| p.stream).unwrap_or(false);

        let mut state = self.lock();
        state.total += 1;
        let call = state.total;
        let keep = state.keep.unwrap_or(usize::MAX);
        if keep > 0 {
            if state.requests.len() >= keep {
                state.requests.pop_front();
            }
            state.requests.push_back(ReceivedRequest {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers,
                body: bytes.clone(),
                model: model.clone(),
                stream,
            });
        }
        let outcome = match (api, model) {
            (None, _) => {
                let get = parts.method == Method::GET;
                return route_reply(&mut state, parts.uri.path(), get, call);
            }
            (Some(api), _) if parts.method != Method::POST => Outcome::Respond(
                render::plain_error(api, StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
            ),
            (Some(api), None) => {
                let message = if peek.is_some() {
                    "Missing required parameter: 'model'"
                } else {
                    "Invalid JSON body"
                };
                Outcome::Respond(render::plain_error(api, StatusCode::BAD_REQUEST, message))
            }
            (Some(api), Some(model)) => {
                let peek = peek.expect("a model was read from it");
                match candidates(api, &model, &peek) {
                    Ok(models) => return serve_models(&mut state, api, &models, stream, call),
                    Err(message) => {
                        Outcome::Respond(render::plain_error(api, StatusCode::BAD_REQUEST, message))
                    }
                }
            }
        };
        drop(state);
        ResponseFuture::new(std::time::Duration::ZERO, outcome)
    }
}

/// What the stand-in reads of a request body.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    /// Server-side fallback models (chat, completions, responses).
    #[serde(default, borrow)]
    models: Option<Vec<Cow<'a, str>>>,
    /// `/messages` server-side fallbacks, `[{"model": ..}]`.
    #[serde(default)]
    fallbacks: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
}

/// OpenRouter's limit on `models` and on `/messages` `fallbacks`.
const MAX_SERVER_SIDE: usize = crate::routing::MAX_SERVER_MODELS;

/// The models OpenRouter tries for this request, in order (server-side routing: `models`,
/// or `/messages` `fallbacks` after `model`), or the message of OpenRouter's 400 for a
/// documented limit.
fn candidates(api: Api, model: &Arc<str>, peek: &Peek<'_>) -> Result<Vec<Arc<str>>, &'static str> {
    let mut out: Vec<Arc<str>> = Vec::with_capacity(MAX_SERVER_SIDE + 1);
    let mut push = |m: &str| {
        if !m.is_empty() && !out.iter().any(|o| &**o == m) {
            out.push(Arc::from(m));
        }
    };
    if let Some(fallbacks) = &peek.fallbacks {
        if api != Api::Messages {
            return Err("'fallbacks' is only supported on /api/v1/messages; use 'models'");
        }
        if peek.models.is_some() {
            return Err("'fallbacks' cannot be used together with 'models'");
        }
        if fallbacks.len() > MAX_SERVER_SIDE {
            return Err("'fallbacks' must have at most 3 entries");
        }
        push(model);
        for f in fallbacks {
            match f.get("model").and_then(|m| m.as_str()) {
                Some(m) if f.len() == 1 => push(m),
                _ => {
                    return Err(
                        "each 'fallbacks' entry must be an object with only a string 'model'",
                    )
                }
            }
        }
        return Ok(out);
    }
    match &peek.models {
        Some(models) if models.len() > MAX_SERVER_SIDE => {
            Err("'models' array must have 3 items or fewer")
        }
        Some(models) if !models.is_empty() => {
            for m in models {
                push(m);
            }
            Ok(out)
        }
        _ => Ok(vec![model.clone()]),
    }
}

/// Whether a step fails in a way OpenRouter's server-side routing moves past (an error
/// answer; a hang or a dropped connection ends the request as it is).
fn fails_over(kind: &reply::Kind) -> bool {
    use reply::Kind;
    match kind {
        Kind::Status(..) | Kind::OkWithError(_) => true,
        Kind::Body(status, _) | Kind::Raw(status, ..) => !status.is_success(),
        Kind::Success(_) | Kind::Sse(_) | Kind::Hang | Kind::Disconnect => false,
    }
}

/// Answers from the first of `models` whose script succeeds (the last one's answer when
/// none does), counting a call for every model tried; the answer names the serving model.
fn serve_models(
    state: &mut State,
    api: Api,
    models: &[Arc<str>],
    stream: bool,
    call: u64,
) -> ResponseFuture {
    let mut waited = std::time::Duration::ZERO;
    for (i, model) in models.iter().enumerate() {
        *state.calls.entry(model.clone()).or_insert(0) += 1;
        let ctx = Ctx {
            api,
            model,
            stream,
            call,
        };
        let in_flight = match state.capacity.get_mut(model) {
            Some(c) => match c.admit(tokio::time::Instant::now()) {
                Some(guard) => Some(guard),
                // Over capacity: the next model of a server-side list, else a 429.
                None if i + 1 < models.len() => continue,
                None => {
                    let mut reply = Reply::status(429).retry_after(c.retry_after);
                    let outcome = reply.node.resolve().1.render(&ctx);
                    return ResponseFuture::new(waited.saturating_add(c.reject_delay), outcome);
                }
            },
            None => None,
        };
        let State {
            scripts, default, ..
        } = &mut *state;
        let node = scripts
            .get_mut(model)
            .and_then(Script::next)
            .unwrap_or(default);
        let (delay, leaf) = node.resolve();
        waited = waited.saturating_add(delay);
        if i + 1 < models.len() && fails_over(&leaf.kind) {
            continue;
        }
        let mut fut = ResponseFuture::new(waited, leaf.render(&ctx));
        fut.in_flight = in_flight;
        return fut;
    }
    unreachable!("a request has at least one model")
}

/// The answer for a path the stand-in does not answer by model: its route script
/// ([`MockOpenRouter::route`]), else `404`.
fn route_reply(state: &mut State, path: &str, get: bool, call: u64) -> ResponseFuture {
    let Some(node) = state.routes.get_mut(path).and_then(Script::next) else {
        if get && path == catalog::PATH {
            let body = catalog::render(&state.catalog);
            return ResponseFuture::new(
                std::time::Duration::ZERO,
                Outcome::Respond(render::json_response(StatusCode::OK, body)),
            );
        }
        return ResponseFuture::new(
            std::time::Duration::ZERO,
            Outcome::Respond(render::plain_error(
                Api::Chat,
                StatusCode::NOT_FOUND,
                "Not Found",
            )),
        );
    };
    let (delay, leaf) = node.resolve();
    let ctx = Ctx {
        api: Api::Chat,
        model: "",
        stream: false,
        call,
    };
    ResponseFuture::new(delay, leaf.render(&ctx))
}

impl tower::Service<Request<Full<Bytes>>> for MockOpenRouter {
    type Response = Response<MockBody>;
    type Error = io::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> ResponseFuture {
        self.handle(req)
    }
}

/// The response future of [`MockOpenRouter`]: waits the scripted delay (tokio time), then
/// answers, fails like a dropped connection, or (for [`Reply::hang`]) never resolves.
pub struct ResponseFuture {
    sleep: Option<Pin<Box<Sleep>>>,
    outcome: Option<Outcome>,
    /// Counts the request against its model's capacity until the body is done.
    in_flight: Option<InFlight>,
}

impl ResponseFuture {
    fn new(delay: std::time::Duration, outcome: Outcome) -> Self {
        ResponseFuture {
            sleep: (!delay.is_zero()).then(|| Box::pin(tokio::time::sleep(delay))),
            outcome: Some(outcome),
            in_flight: None,
        }
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("waiting", &self.sleep.is_some())
            .finish()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<MockBody>, io::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(sleep) = this.sleep.as_mut() {
            std::task::ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        match this.outcome.take() {
            Some(Outcome::Respond(mut resp)) => {
                resp.body_mut().in_flight = this.in_flight.take();
                Poll::Ready(Ok(resp))
            }
            Some(Outcome::Disconnect) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "mock: connection dropped by the script",
            ))),
            Some(Outcome::Hang) => {
                // Never woken: the request is never answered.
                this.outcome = Some(Outcome::Hang);
                Poll::Pending
            }
            None => panic!("mock::ResponseFuture polled after completion"),
        }
    }
}
