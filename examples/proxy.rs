//! An OpenAI-compatible gateway in front of OpenRouter, built on axum and
//! [`OpenRouterLayer`]: every chat completion gets the whole resilience stack (model
//! fallback chain, same-model retries, health-based skipping of a cooling model, attempt
//! timeouts, one deadline, error classification).
//!
//! ```text
//! cargo run --release --example proxy                                 # stand-in upstream on loopback
//! OPENROUTER_API_KEY=sk-or-... cargo run --release --example proxy    # the real OpenRouter
//! cargo run --release --example proxy -- --upstream http://127.0.0.1:18080/api/v1 --port 8080
//! cargo run --release --example proxy -- --config chains.json
//! ```
//!
//! Serves `POST /v1/chat/completions` and `POST /api/v1/chat/completions` on
//! `127.0.0.1:PORT` and forwards them to `UPSTREAM/chat/completions`:
//!
//! * the `model` the client sends is replaced by the models of the chain: the default
//!   chain, or the named chain the `x-openrouter-chain` header picks (`--config`);
//! * streams (`"stream": true`) pass through chunk by chunk; failover happens before the
//!   first token;
//! * a success carries `x-openrouter-served-by` (the model that answered),
//!   `x-openrouter-attempts` (upstream calls made for this request) and, when models were
//!   skipped because they were cooling down, `x-openrouter-skipped`;
//! * when every model failed the client gets OpenRouter's error shape,
//!   `{"error":{"code":429,"message":"..","metadata":{"kind":"exhausted","attempts":[..]}}}`,
//!   with the status of the last upstream answer (or one that fits the failure: 502
//!   transport, 504 timeouts, 413/400 for a bad body) and `Retry-After` when known;
//! * the caller's `Authorization` is dropped: upstream calls carry the proxy's own key, and
//!   no log line shows either.
//!
//! Settings (flag, then environment, then default):
//!
//! | flag | env | default |
//! |---|---|---|
//! | `--port N` | `PORT` | `8080` |
//! | `--upstream URL` | `UPSTREAM_URL` | `https://openrouter.ai/api/v1` when `OPENROUTER_API_KEY` is set, else the stand-in ([`MockOpenRouter`](tower_openrouter::mock::MockOpenRouter)) served on loopback (keeping only its last 1,000 received requests, so memory stays flat) |
//! | | `UPSTREAM_API_KEY`, else `OPENROUTER_API_KEY` | none (no `Authorization` upstream) |
//! | `--config FILE` | | a JSON [`Config`](tower_openrouter::config::Config) (chains and settings) |
//! | | `PRIMARY_MODEL`, `FALLBACK_MODELS` (comma-separated) | `openai/gpt-4o-mini`, `anthropic/claude-3-haiku` (when no `--config`) |
//! | `--threads N` | `THREADS` | `1`: a current-thread runtime (one core); more: a multi-thread runtime |
//! | `--mock-fail MODEL=STATUS` | | stand-in only: that model always answers STATUS (repeatable) |
//!
//! Logs go to stderr through `tracing` (`RUST_LOG`, e.g. `info` or `debug`; default
//! `info`): start-up, one line per failed request at `warn`, one per request at `debug`.
//! The benchmark harness (`OURS_CMD`) sets `PORT`, `UPSTREAM_URL`, `PRIMARY_MODEL`,
//! `FALLBACK_MODELS` and `UPSTREAM_API_KEY`, so it runs as is.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Extensions, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pin_project_lite::pin_project;
use tower::{Service, ServiceBuilder};
use tower_openrouter::classify::ResponseBody;
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::mock::{MockOpenRouter, MockServer, Reply};
use tower_openrouter::stack::OpenRouterLayer;
use tower_openrouter::{BoxError, Error, ErrorKind};

const OPENROUTER_URL: &str = "https://openrouter.ai/api/v1";
const DEFAULT_PRIMARY: &str = "openai/gpt-4o-mini";
const DEFAULT_FALLBACKS: &str = "anthropic/claude-3-haiku";
/// The header a client names a chain with (unless the config sets another).
const CHAIN_HEADER: &str = "x-openrouter-chain";

static SERVED_BY: HeaderName = HeaderName::from_static("x-openrouter-served-by");
static ATTEMPTS: HeaderName = HeaderName::from_static("x-openrouter-attempts");
static SKIPPED: HeaderName = HeaderName::from_static("x-openrouter-skipped");
/// Request headers passed on upstream (everything else, the caller's `Authorization`
/// first of all, stays here).
static FORWARDED: [HeaderName; 5] = [
    header::ACCEPT,
    header::USER_AGENT,
    HeaderName::from_static("http-referer"),
    HeaderName::from_static("x-title"),
    HeaderName::from_static("x-openrouter-title"),
];

// A gateway allocates and frees a few dozen small objects per request; mimalloc is much
// cheaper at that than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug, Default)]
struct Args {
    port: Option<u16>,
    upstream: Option<String>,
    config: Option<String>,
    threads: Option<usize>,
    mock_fail: Vec<(String, u16)>,
}

fn usage() -> ! {
    eprintln!(
        "usage: proxy [--port N] [--upstream URL] [--config FILE] [--threads N] [--mock-fail MODEL=STATUS]..."
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (flag, None),
        };
        if name == "-h" || name == "--help" {
            usage();
        }
        let value = inline.or_else(|| it.next()).unwrap_or_else(|| usage());
        match name.as_str() {
            "--port" => args.port = Some(value.parse().unwrap_or_else(|_| usage())),
            "--upstream" => args.upstream = Some(value),
            "--config" => args.config = Some(value),
            "--threads" => args.threads = Some(value.parse().unwrap_or_else(|_| usage())),
            "--mock-fail" => {
                let (m, s) = value.rsplit_once('=').unwrap_or_else(|| usage());
                args.mock_fail
                    .push((m.to_owned(), s.parse().unwrap_or_else(|_| usage())));
            }
            _ => usage(),
        }
    }
    args
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn main() {
    // Print a bad setting as a plain sentence (not `Error: "..."`) and exit 1.
    if let Err(e) = start() {
        eprintln!("proxy: {e}");
        std::process::exit(1);
    }
}

fn start() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let filter: tracing_subscriber::filter::Targets = env("RUST_LOG")
        .as_deref()
        .unwrap_or("info")
        .parse()
        .map_err(|e| format!("RUST_LOG: {e}"))?;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();

    let threads = match args.threads {
        Some(n) => n,
        None => env("THREADS").map_or(Ok(1), |t| t.parse())?,
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

/// The stack: from the JSON config, or a chain from the environment.
fn layer(args: &Args) -> Result<OpenRouterLayer, Box<dyn std::error::Error>> {
    if let Some(path) = &args.config {
        let json = std::fs::read_to_string(path).map_err(|e| format!("--config {path}: {e}"))?;
        let mut config = tower_openrouter::config::Config::from_json(&json)
            .map_err(|e| format!("--config {path}: {e}"))?;
        if config.settings.chain_header.is_none() {
            config.settings.chain_header = Some(CHAIN_HEADER.to_owned());
        }
        return Ok(
            OpenRouterLayer::from_config(&config).map_err(|e| format!("--config {path}: {e}"))?
        );
    }
    let primary = env("PRIMARY_MODEL").unwrap_or_else(|| DEFAULT_PRIMARY.to_owned());
    let fallbacks = env("FALLBACK_MODELS").unwrap_or_else(|| DEFAULT_FALLBACKS.to_owned());
    let chain: Vec<String> = std::iter::once(primary)
        .chain(
            fallbacks
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned),
        )
        .collect();
    Ok(OpenRouterLayer::builder()
        .chain(chain)
        .chain_header(CHAIN_HEADER)
        .attempt_timeout(Duration::from_secs(60))
        .deadline(Duration::from_secs(180))
        .build()?)
}

/// How many received requests the stand-in keeps (its counters stay exact regardless).
const MOCK_KEPT_REQUESTS: usize = 1_000;

/// Where requests go, with which key; keeps the stand-in alive when one is used.
struct Upstream {
    base: String,
    key: Option<String>,
    _mock: Option<MockServer>,
}

async fn upstream(args: &Args) -> Result<Upstream, Box<dyn std::error::Error>> {
    let key = env("UPSTREAM_API_KEY").or_else(|| env("OPENROUTER_API_KEY"));
    if let Some(base) = args.upstream.clone().or_else(|| env("UPSTREAM_URL")) {
        return Ok(Upstream {
            base,
            key,
            _mock: None,
        });
    }
    if env("OPENROUTER_API_KEY").is_some() {
        return Ok(Upstream {
            base: OPENROUTER_URL.to_owned(),
            key,
            _mock: None,
        });
    }
    let mock = MockOpenRouter::new();
    // The stand-in keeps received requests for inspection; a long-running proxy only needs
    // the counters, so bound the history (memory stays flat however long it serves).
    mock.keep_requests(MOCK_KEPT_REQUESTS);
    for (model, status) in &args.mock_fail {
        mock.model(model).respond(Reply::status(*status));
    }
    let server = mock.serve().await?;
    tracing::info!(url = %server.url(), "no upstream given: serving the OpenRouter stand-in on loopback");
    Ok(Upstream {
        base: server.url(),
        key: Some("sk-or-stand-in".to_owned()),
        _mock: Some(server),
    })
}

/// What every request needs, built once.
struct Shared {
    /// `UPSTREAM/chat/completions`.
    target: Uri,
    /// `Bearer <key>`, marked sensitive (hyper and `Debug` never show it).
    auth: Option<HeaderValue>,
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let layer = layer(&args)?;
    let upstream = upstream(&args).await?;
    let port = match args.port {
        Some(p) => p,
        None => env("PORT").map_or(Ok(8080), |p| p.parse())?,
    };
    let target: Uri = format!("{}/chat/completions", upstream.base.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("upstream URL {:?}: {e}", upstream.base))?;
    let auth = match &upstream.key {
        Some(key) => {
            let mut v = HeaderValue::try_from(format!("Bearer {key}"))
                .map_err(|_| "the upstream API key is not a valid header value")?;
            v.set_sensitive(true);
            Some(v)
        }
        None => None,
    };
    let shared = Arc::new(Shared { target, auth });

    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(https);

    let chains = layer.chains().clone();
    let stack = ServiceBuilder::new()
        .layer(layer)
        .service(SharedClient(Arc::new(client)));
    let gateway = Gateway {
        inner: stack,
        shared: shared.clone(),
        not_ready: None,
    };
    let app = Router::new()
        .route_service("/v1/chat/completions", gateway.clone())
        .route_service("/api/v1/chat/completions", gateway);

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        %addr,
        upstream = %shared.target,
        key = if shared.auth.is_some() { "set" } else { "none" },
        default_chain = ?chains.default_chain().map(|c| c.iter().map(|m| m.model().to_owned()).collect::<Vec<_>>()),
        named_chains = ?chains.names(),
        "gateway listening (POST /v1/chat/completions, /api/v1/chat/completions)"
    );
    serve(listener, app).await
}

/// Accepts connections and serves `app` on each with hyper's HTTP/1 server.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let (sock, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        let _ = sock.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: Request<Incoming>| app.clone().call(req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// The hyper client behind one `Arc`: the stack clones its inner service for every call
/// (tower's clone-and-swap), and one reference count is cheaper than the client's own
/// clone (a handful of them).
#[derive(Clone)]
struct SharedClient(Arc<HttpClient>);

impl Service<Request<Full<Bytes>>> for SharedClient {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The legacy client is always ready (its pool waits inside the call).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        self.0.request(req)
    }
}

/// The gateway service: prepares the caller's request, calls the stack, turns the outcome
/// into the caller's response.
#[derive(Clone)]
struct Gateway<S> {
    inner: S,
    shared: Arc<Shared>,
    /// An error the stack reported when polled ready, answered at the next call.
    not_ready: Option<Error>,
}

impl<S, B> Service<Request<Body>> for Gateway<S>
where
    S: Service<Request<Body>, Response = Response<ResponseBody<B>>, Error = Error> + Clone,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = GatewayFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none() {
            if let Err(e) = ready!(self.inner.poll_ready(cx)) {
                self.not_ready = Some(e);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let Some(e) = self.not_ready.take() {
            return GatewayFuture {
                state: State::Failed { error: Some(e) },
            };
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        GatewayFuture {
            state: State::Calling {
                future: inner.call(prepare(&self.shared, req)),
            },
        }
    }
}

pin_project! {
    /// The future of [`Gateway`].
    struct GatewayFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Failed { error: Option<Error> },
    }
}

impl<F, B> Future for GatewayFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody<B>>, Error>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Calling { future } => Poll::Ready(respond(ready!(future.poll(cx)))),
            StateProj::Failed { error } => Poll::Ready(Ok(error_response(
                &error.take().expect("polled after completion"),
            ))),
        }
    }
}

/// The request as it goes into the stack: the upstream URL, our own key, a few of the
/// caller's headers; nothing else of the caller's (its `Authorization` above all).
fn prepare(shared: &Shared, req: Request<Body>) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(auth) = &shared.auth {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    for name in &FORWARDED {
        if let Some(v) = parts.headers.get(name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    if let Some(v) = parts.headers.get(CHAIN_HEADER) {
        headers.insert(HeaderName::from_static(CHAIN_HEADER), v.clone());
    }
    parts.uri = shared.target.clone();
    parts.headers = headers;
    parts.extensions = Extensions::new();
    Request::from_parts(parts, body)
}

/// Hop-by-hop headers of the upstream answer, which are not passed on.
static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

fn respond<B>(
    result: Result<Response<ResponseBody<B>>, Error>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Ok(match result {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for name in &HOP_BY_HOP {
                parts.headers.remove(name);
            }
            if let Some(served) = parts.extensions.get::<ServedBy>() {
                let skipped = served
                    .attempts
                    .iter()
                    .filter(|a| a.kind() == ErrorKind::ModelCoolingDown)
                    .count();
                let calls = served.attempts.len() - skipped + 1;
                if let Ok(v) = HeaderValue::from_str(&served.model) {
                    parts.headers.insert(SERVED_BY.clone(), v);
                }
                parts.headers.insert(ATTEMPTS.clone(), count(calls));
                if skipped > 0 {
                    parts.headers.insert(SKIPPED.clone(), count(skipped));
                }
                tracing::debug!(
                    served_by = %served.model,
                    calls,
                    skipped,
                    status = parts.status.as_u16(),
                    "served"
                );
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => error_response(&e),
    })
}

/// A small count as a header value, without formatting for the usual ones.
fn count(n: usize) -> HeaderValue {
    static SMALL: [&str; 8] = ["0", "1", "2", "3", "4", "5", "6", "7"];
    match SMALL.get(n) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// The status a failure is answered with: what the upstream said last, or one that fits.
fn status_of(e: &Error) -> StatusCode {
    if let Some(s) = e.status() {
        return s;
    }
    // The last attempt that reached the upstream (not one skipped while cooling down).
    if let Some(s) = e
        .attempts()
        .iter()
        .rev()
        .filter(|a| a.kind() != ErrorKind::ModelCoolingDown)
        .find_map(|a| a.status())
    {
        return s;
    }
    let kind = match e
        .attempts()
        .iter()
        .rev()
        .find(|a| a.kind() != ErrorKind::ModelCoolingDown)
    {
        Some(last) => last.kind(),
        None => e.kind(),
    };
    use ErrorKind::*;
    match kind {
        BodyTooLarge | PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        InvalidBody | InvalidRouting | UnknownChain | InvalidRequest | ContextLengthExceeded => {
            StatusCode::BAD_REQUEST
        }
        Unauthorized => StatusCode::UNAUTHORIZED,
        InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
        ContentModerated | Forbidden => StatusCode::FORBIDDEN,
        ModelNotFound => StatusCode::NOT_FOUND,
        RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ModelCoolingDown | ModelUnavailable | ProviderOverloaded => StatusCode::SERVICE_UNAVAILABLE,
        AttemptTimeout | StreamTimeout | UpstreamTimeout | DeadlineExceeded => {
            StatusCode::GATEWAY_TIMEOUT
        }
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// OpenRouter's error shape, for a call that failed as a whole.
fn error_response(e: &Error) -> Response<Body> {
    let status = status_of(e);
    let retry_after = e.retry_after().or_else(|| {
        e.attempts()
            .iter()
            .rev()
            .find_map(|a| a.error.retry_after())
    });
    let attempts: Vec<serde_json::Value> = e
        .attempts()
        .iter()
        .map(|a| {
            serde_json::json!({
                "model": &*a.model,
                "retry": a.retry,
                "kind": a.kind().as_str(),
                "status": a.status().map(|s| s.as_u16()),
            })
        })
        .collect();
    let mut metadata = serde_json::json!({ "kind": e.kind().as_str(), "attempts": attempts });
    if let Some(p) = e
        .body()
        .or_else(|| e.last_attempt_error().and_then(Error::body))
        .and_then(|b| b.provider_name())
    {
        metadata["provider_name"] = p.into();
    }
    let body = serde_json::json!({
        "error": { "code": status.as_u16(), "message": e.to_string(), "metadata": metadata }
    });
    tracing::warn!(
        status = status.as_u16(),
        kind = e.kind().as_str(),
        attempts = e.attempts().len(),
        "request failed: {e}"
    );
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(wait) = retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    resp
}

#[cfg(test)]
mod tests {
    //! The gateway over the whole stack over the in-process stand-in (no network).

    use super::*;
    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};

    const PROXY_KEY: &str = "sk-or-proxy-own-key";
    const CALLER_KEY: &str = "sk-caller-key";

    fn gateway(
        mock: &MockOpenRouter,
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
        let layer = OpenRouterLayer::builder()
            .chain(["a/primary", "b/secondary"])
            .chain_header(CHAIN_HEADER)
            .build()
            .unwrap();
        let mut auth = HeaderValue::try_from(format!("Bearer {PROXY_KEY}")).unwrap();
        auth.set_sensitive(true);
        Gateway {
            inner: layer.layer(mock.clone()),
            shared: Arc::new(Shared {
                target: "http://127.0.0.1:9/api/v1/chat/completions"
                    .parse()
                    .unwrap(),
                auth: Some(auth),
            }),
            not_ready: None,
        }
    }

    fn request(body: &'static str) -> Request<Body> {
        Request::post("/v1/chat/completions")
            .header("authorization", format!("Bearer {CALLER_KEY}"))
            .header("content-type", "application/json")
            .header("x-title", "gateway test")
            .header("x-stainless-lang", "python")
            .body(Body::from(body))
            .unwrap()
    }

    const CHAT: &str = r#"{"model":"anything","messages":[{"role":"user","content":"hi"}]}"#;

    async fn json(resp: Response<Body>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn fails_over_with_its_own_key_and_says_who_served() {
        let mock = MockOpenRouter::new();
        mock.model("a/primary").respond(Reply::status(429));
        let resp = gateway(&mock).oneshot(request(CHAT)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-openrouter-served-by"], "b/secondary");
        assert_eq!(resp.headers()["x-openrouter-attempts"], "2");
        assert!(resp.headers().get("x-openrouter-skipped").is_none());
        assert_eq!(json(resp).await["model"], "b/secondary");

        let seen = mock.requests();
        assert_eq!(seen.len(), 2);
        for r in &seen {
            let h = r.headers();
            assert_eq!(h["authorization"], format!("Bearer {PROXY_KEY}").as_str());
            assert_eq!(h["x-title"], "gateway test");
            // Only the listed caller headers go upstream.
            assert!(h.get("x-stainless-lang").is_none());
            assert!(h.values().all(|v| !v
                .as_bytes()
                .windows(CALLER_KEY.len())
                .any(|w| w == CALLER_KEY.as_bytes())));
        }
        assert_eq!(seen[0].model(), Some("a/primary"));
        assert_eq!(seen[1].model(), Some("b/secondary"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooled_primary_costs_no_upstream_call() {
        let mock = MockOpenRouter::new();
        mock.model("a/primary")
            .respond(Reply::status(429).retry_after(30));
        let svc = gateway(&mock);
        let first = svc.clone().oneshot(request(CHAT)).await.unwrap();
        assert_eq!(first.headers()["x-openrouter-attempts"], "2");
        for _ in 0..10 {
            let resp = svc.clone().oneshot(request(CHAT)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["x-openrouter-served-by"], "b/secondary");
            assert_eq!(resp.headers()["x-openrouter-attempts"], "1");
            assert_eq!(resp.headers()["x-openrouter-skipped"], "1");
        }
        assert_eq!(mock.calls("a/primary"), 1);
        assert_eq!(mock.calls("b/secondary"), 11);
    }

    #[tokio::test(start_paused = true)]
    async fn every_model_failing_is_an_openrouter_error_with_the_last_status() {
        let mock = MockOpenRouter::new();
        mock.model("a/primary").respond(Reply::status(429));
        mock.model("b/secondary").respond(Reply::status(503));
        let resp = gateway(&mock).oneshot(request(CHAT)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v = json(resp).await;
        let err = &v["error"];
        assert_eq!(err["code"], 503);
        assert!(err["message"]
            .as_str()
            .unwrap()
            .starts_with("all fallbacks exhausted"));
        assert_eq!(err["metadata"]["kind"], "exhausted");
        let attempts = err["metadata"]["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0]["model"], "a/primary");
        assert_eq!(attempts[0]["kind"], "rate_limited");
        assert_eq!(attempts[0]["status"], 429);
        assert_eq!(attempts[1]["model"], "b/secondary");
        assert_eq!(attempts[1]["status"], 503);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_body_is_a_400_without_an_upstream_call() {
        let mock = MockOpenRouter::new();
        let resp = gateway(&mock).oneshot(request("not json")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let v = json(resp).await;
        assert_eq!(v["error"]["code"], 400);
        assert_eq!(v["error"]["metadata"]["kind"], "invalid_body");
        assert_eq!(mock.total_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_pass_through() {
        let mock = MockOpenRouter::new();
        mock.model("a/primary").respond(Reply::status(502));
        let resp = gateway(&mock)
            .oneshot(request(r#"{"model":"x","stream":true,"messages":[]}"#))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-openrouter-served-by"], "b/secondary");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains(r#""model":"b/secondary""#));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn statuses_for_failures_without_an_upstream_answer() {
        assert_eq!(
            status_of(&Error::new(ErrorKind::BodyTooLarge)),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status_of(&Error::new(ErrorKind::Transport)),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status_of(&Error::new(ErrorKind::DeadlineExceeded)),
            StatusCode::GATEWAY_TIMEOUT
        );
        let resp = error_response(
            &Error::new(ErrorKind::ModelCoolingDown).with_retry_after(Duration::from_millis(2500)),
        );
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "3");
    }
}
