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
//! Serves, on `LISTEN:PORT` (default `127.0.0.1:8080`), each under `/v1` and `/api/v1`:
//! `POST chat/completions`, `completions`, `responses`, `messages` (the Anthropic SDK's
//! endpoint), `embeddings` and `GET models`, forwarded to `UPSTREAM/<endpoint>` (a query
//! string goes along). Any other path is a 404, a wrong method a 405 with `Allow`, both
//! as OpenRouter-shaped error JSON, and nothing goes upstream.
//!
//! * generation endpoints get the chain: the caller's `model` picks it (a chain's name or
//!   first model), any other model is tried first with the default chain's fallbacks
//!   after it (`--unlisted-model reject` refuses it instead, `default_chain` replaces
//!   it); the `x-openrouter-chain` header names a chain explicitly. `embeddings` and
//!   `models` pass through with retries but never another model;
//! * streams (`"stream": true`) pass through chunk by chunk; failover happens before the
//!   first token. A stream that fails after it ends with a last error event in the
//!   endpoint's shape (`data: {"error":{"code":..,"message":..}}` for chat, `event: error`
//!   for `/messages` and `/responses`), so SDKs raise the message, not "connection error";
//! * a success carries `x-openrouter-served-by` (the model that answered),
//!   `x-openrouter-attempts` (upstream calls made for this request) and, when models were
//!   skipped because they were cooling down or at their adaptive concurrency limit
//!   (`settings.adaptive` in `--config`), `x-openrouter-skipped`;
//! * when every model failed the client gets OpenRouter's error shape,
//!   `{"error":{"code":429,"message":"..","metadata":{"kind":"exhausted","attempts":[..]}}}`,
//!   with the status of the last upstream answer (or one that fits the failure: 502
//!   transport, 504 timeouts, 413/400 for a bad body), and `Retry-After` when there is a
//!   hint, else `x-should-retry: false` (the OpenAI and Anthropic SDKs then do not retry
//!   on top of the chain's own retries);
//! * a failure of the caller's own request is a 4xx whatever was tried: a bad body, a
//!   refused model or an unknown chain 400, no model of the chain able to serve it
//!   (`no_capable_model`, with each model's `reason` in `metadata.attempts`) 422; the
//!   upstream refusing the gateway's own key is a 502, not the caller's 401;
//! * the caller's `Authorization` is dropped: upstream calls carry the proxy's own key, and
//!   no log line shows either. With `GATEWAY_KEYS` set, a caller must send one of them
//!   (`Authorization: Bearer <key>`) or gets a 401 with nothing sent upstream;
//! * who may spend that key: with an allow-list (`--allowed-models 'openai/*,x/y'`,
//!   `--allowed-providers OpenAI,Anthropic`, or `settings.allowed_models` /
//!   `allowed_providers` in `--config`; an entry ending in `*` is a prefix, providers
//!   compare in any case), a request whose `model`, `models`, `/messages` `fallbacks`,
//!   `provider.only` or `provider.order` names a model or provider outside it and the
//!   configured chains is a 400 (`model_not_allowed`) and nothing goes upstream.
//!   `--unlisted-model reject` holds `model`, `models` and `fallbacks` to the chains
//!   alone. The allow-list restricts what a caller may name; to send requests only to the
//!   listed providers, set `native_routing.provider.only` in `--config` too;
//! * `endpoint_chains` in `--config` (`{"embeddings": "embed"}`) gives an endpoint a
//!   chain of its own: embeddings then fall back between models too;
//! * a client that stalls is dropped: request headers must arrive within 10 s (else the
//!   connection is closed), the body within 30 s (a 408 with an error JSON, and the
//!   connection closed); a request head over 64 KiB is a 431, an unparsable one a 400,
//!   both with an error JSON (`conn.rs` puts it in place of hyper's empty answer).
//!
//! Settings (flag, then environment, then default):
//!
//! | flag | env | default |
//! |---|---|---|
//! | `--port N` | `PORT` | `8080` |
//! | `--listen ADDR` | `LISTEN` | `127.0.0.1` |
//! | `--upstream URL` | `UPSTREAM_URL` | `https://openrouter.ai/api/v1` when `OPENROUTER_API_KEY` is set, else the stand-in ([`MockOpenRouter`](tower_openrouter::mock::MockOpenRouter)) served on loopback (keeping only its last 1,000 received requests, so memory stays flat) |
//! | | `UPSTREAM_API_KEY`, else `OPENROUTER_API_KEY` | none (no `Authorization` upstream) |
//! | | `GATEWAY_KEYS` (comma-separated) | none: any caller |
//! | `--config FILE` | | a JSON [`Config`](tower_openrouter::config::Config) (chains and settings) |
//! | | `PRIMARY_MODEL`, `FALLBACK_MODELS` (comma-separated) | `openai/gpt-4o-mini`, `anthropic/claude-3-haiku` (when no `--config`) |
//! | `--SETTING VALUE` for every `settings` key of the config, `-` for `_` (`--deadline-seconds 30`, `--attempt-timeout-seconds 10`, `--max-retries-per-model 1`, `--max-rate-limit-wait-seconds 1`, `--unlisted-model reject`, `--allowed-models 'openai/*,x/y'` (a list: comma-separated), `--adaptive '{"initial":8,"min":1,"max":64}'` (JSON; with `"queue_waiters":2,"queue_wait_seconds":0.01` a request waits up to 10 ms for its first model's slot, see [`AdaptiveConfig::queue`](tower_openrouter::health::AdaptiveConfig::queue)), ...) | the key in capitals (`DEADLINE_SECONDS`, `ALLOWED_MODELS`, ...) | the config file's value; without `--config` a 60 s attempt timeout and a 180 s deadline (and a 1 s `max_rate_limit_wait_seconds` either way) |
//! | `--header-timeout-seconds S` | `HEADER_TIMEOUT_SECONDS` | `10` |
//! | `--body-timeout-seconds S` | `BODY_TIMEOUT_SECONDS` | `30` |
//! | `--threads N` | `THREADS` | `1`: a current-thread runtime (one core); more: a multi-thread runtime |
//! | `--mock-fail MODEL=STATUS` | | stand-in only: that model always answers STATUS (repeatable) |
//! | `--redis URL` | `REDIS_URL` (and `REDIS_PREFIX`) | off: share model health with the other gateways on this Redis (`redis://`, `rediss://`; feature `redis`); `GET /health` shows it |
//!
//! With a `catalog` key in `--config` (`{"refresh_seconds": 3600}`; `strict`, `snapshot`,
//! `url`, `refresh: false` as in [`Config`](tower_openrouter::config::Config)), models
//! that cannot serve a request (no tools, no image input, too small a context, over a
//! `max_price`) are skipped before any call: the catalog is loaded at start and refreshed
//! in the background through the upstream client, from `UPSTREAM/models` unless
//! `catalog.url` names another (see `refresh_catalog` in `upstream.rs`; the upstream key
//! goes with the catalog request to the upstream's own host only); a failed refresh
//! keeps the last good catalog, and no request waits for one.
//!
//! `GET /health` serves every model's health as JSON (`models`: the tracker's snapshot,
//! see `fleet.rs`) and `GET /metrics` the Prometheus text of the stack's metrics (see
//! `status.rs`).
//!
//! Logs go to stderr through `tracing` (`RUST_LOG`, e.g. `info` or `debug`; default
//! `info,tower_openrouter::observe=warn`): start-up, one line per failed request and one
//! per mid-stream failure at `warn` (with model, kind and status), one per request at
//! `debug`. The stack's per-call and per-attempt spans (target
//! `tower_openrouter::observe`, INFO) are off by default here: this subscriber only prints
//! lines, and recording two spans per request cost the gateway ~15% of its throughput in
//! the peer benchmark (scenario A: 71.7% of the null proxy with them, 85.7% without).
//! Turn them on with `RUST_LOG=info` when a subscriber that exports them is wired in.
//! The benchmark harness (`OURS_CMD`) sets `PORT`, `UPSTREAM_URL`, `PRIMARY_MODEL`,
//! `FALLBACK_MODELS` and `UPSTREAM_API_KEY`, so it runs as is.

mod args;
mod conn;
mod error;
mod fleet;
mod gateway;
mod routes;
mod status;
mod stream_end;
#[cfg(test)]
mod tests;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::HeaderValue;
use tower::ServiceBuilder;

use args::{env, parse_args, Args};
use conn::{serve, ConnLimits, BODY_TIMEOUT, HEADER_TIMEOUT};
use gateway::Gateway;
use upstream::{http_client, layer, refresh_catalog, upstream, Shared, SharedClient};

/// The header a client names a chain with (unless the config sets another).
pub(crate) const CHAIN_HEADER: &str = "x-openrouter-chain";

// A gateway allocates and frees a few dozen small objects per request; mimalloc is much
// cheaper at that than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Print a bad setting as a plain sentence (not `Error: "..."`) and exit 1.
    if let Err(e) = start() {
        eprintln!("proxy: {e}");
        std::process::exit(1);
    }
}

/// The log filter without `RUST_LOG`: the stack's spans off (see the module docs).
const DEFAULT_LOG: &str = "info,tower_openrouter::observe=warn";

fn start() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let filter: tracing_subscriber::filter::Targets = env("RUST_LOG")
        .as_deref()
        .unwrap_or(DEFAULT_LOG)
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

fn seconds(flag: Option<f64>, var: &str, default: Duration) -> Result<Duration, String> {
    let value = match flag {
        Some(v) => v,
        None => match env(var) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("{var}: not a number of seconds"))?,
            None => return Ok(default),
        },
    };
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{var}: must be a positive number of seconds"))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let store = fleet::health_store(&args).await?;
    let sharing = store.as_ref().map(|s| s.status());
    let layer = layer(&args, store)?;
    let tracker = layer.health().clone();
    let upstream = upstream(&args).await?;
    let port = match args.port {
        Some(p) => p,
        None => env("PORT").map_or(Ok(8080), |p| p.parse())?,
    };
    let listen: IpAddr = match args.listen {
        Some(a) => a,
        None => env("LISTEN").map_or(Ok(IpAddr::from([127, 0, 0, 1])), |a| a.parse())?,
    };
    let limits = ConnLimits {
        header_timeout: seconds(
            args.header_timeout,
            "HEADER_TIMEOUT_SECONDS",
            HEADER_TIMEOUT,
        )?,
        body_timeout: seconds(args.body_timeout, "BODY_TIMEOUT_SECONDS", BODY_TIMEOUT)?,
    };
    let auth = match &upstream.key {
        Some(key) => {
            let mut v = HeaderValue::try_from(format!("Bearer {key}"))
                .map_err(|_| "the upstream API key is not a valid header value")?;
            v.set_sensitive(true);
            Some(v)
        }
        None => None,
    };
    let keys: Vec<String> = env("GATEWAY_KEYS")
        .map(|k| {
            k.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let shared = Arc::new(Shared::new(&upstream.base, auth, &keys)?);

    let client = SharedClient(Arc::new(http_client()?));
    // Kept for the gateway's life (the task also ends with the catalog).
    let _catalog_refresh =
        refresh_catalog(&layer, &upstream.base, shared.auth.as_ref(), client.clone())?;

    let chains = layer.chains().clone();
    #[cfg(feature = "metrics")]
    let metrics = Some(status::install_metrics()?);
    #[cfg(not(feature = "metrics"))]
    let metrics = None;
    let stack = ServiceBuilder::new().layer(layer).service(client);
    let gateway = Gateway {
        inner: stack,
        shared: shared.clone(),
        not_ready: None,
    };
    // Every other path goes to the gateway, which routes itself (404 / 405 JSON, never
    // upstream).
    let app = Router::new()
        .route(
            "/health",
            axum::routing::get(move || {
                let tracker = tracker.clone();
                async move { fleet::health_response(&tracker) }
            }),
        )
        .merge(status::routes(metrics))
        .fallback_service(gateway);

    let addr = SocketAddr::from((listen, port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        %addr,
        upstream = %upstream.base,
        key = if shared.auth.is_some() { "set" } else { "none" },
        inbound_keys = keys.len(),
        default_chain = ?chains.default_chain().map(|c| c.iter().map(|m| m.model().to_owned()).collect::<Vec<_>>()),
        named_chains = ?chains.names(),
        shared_health = ?sharing.as_ref().map(|s| (s.target.clone(), s.connected)),
        "gateway listening (/v1 and /api/v1: chat/completions, completions, responses, messages, embeddings, models; GET /health, /metrics)"
    );
    serve(listener, app, limits).await
}
