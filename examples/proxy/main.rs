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
//! | `--redis URL` | `REDIS_URL` (and `REDIS_PREFIX`) | off: share model health with the other gateways on this Redis (`redis://`, `rediss://`; feature `redis`); `GET /health` shows it |
//!
//! Logs go to stderr through `tracing` (`RUST_LOG`, e.g. `info` or `debug`; default
//! `info`): start-up, one line per failed request at `warn`, one per request at `debug`.
//! The benchmark harness (`OURS_CMD`) sets `PORT`, `UPSTREAM_URL`, `PRIMARY_MODEL`,
//! `FALLBACK_MODELS` and `UPSTREAM_API_KEY`, so it runs as is.

mod args;
mod error;
mod fleet;
mod gateway;
#[cfg(test)]
mod tests;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use http::{HeaderValue, Request, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::{Service, ServiceBuilder};

use args::{env, parse_args, Args};
use gateway::Gateway;
use upstream::{http_client, layer, upstream, Shared, SharedClient};

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

    let client = http_client()?;

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
        .route_service("/api/v1/chat/completions", gateway)
        .route(
            "/health",
            axum::routing::get(move || {
                let tracker = tracker.clone();
                async move { fleet::health_response(&tracker) }
            }),
        );

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        %addr,
        upstream = %shared.target,
        key = if shared.auth.is_some() { "set" } else { "none" },
        default_chain = ?chains.default_chain().map(|c| c.iter().map(|m| m.model().to_owned()).collect::<Vec<_>>()),
        named_chains = ?chains.names(),
        shared_health = ?sharing.as_ref().map(|s| (s.target.clone(), s.connected)),
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
