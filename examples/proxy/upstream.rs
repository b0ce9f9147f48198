//! The stack, the upstream (real or the stand-in) and the hyper client that reaches it.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::Service;
use tower_openrouter::catalog::{RefreshHandle, OPENROUTER_MODELS_URL};
use tower_openrouter::config::Config;
use tower_openrouter::health::HealthStore;
use tower_openrouter::mock::{MockOpenRouter, MockServer, Reply};
use tower_openrouter::stack::{OpenRouterLayer, OpenRouterLayerBuilder};

use crate::args::{env, settings_overlay, Args};
use crate::CHAIN_HEADER;

const OPENROUTER_URL: &str = "https://openrouter.ai/api/v1";
const DEFAULT_PRIMARY: &str = "openai/gpt-4o-mini";
const DEFAULT_FALLBACKS: &str = "anthropic/claude-3-haiku";

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The stack: the JSON config (`--config`), or a chain from the environment, with every
/// `settings` key given as a flag or variable laid over it. With `store`, the tracker
/// shares model health through it (`--redis`).
pub(crate) fn layer(
    args: &Args,
    store: Option<Arc<dyn HealthStore>>,
) -> Result<OpenRouterLayer, Box<dyn std::error::Error>> {
    let builder = builder(args)?;
    Ok(match store {
        Some(store) => builder.health_store(store),
        None => builder,
    }
    .build()?)
}

fn builder(args: &Args) -> Result<OpenRouterLayerBuilder, Box<dyn std::error::Error>> {
    let (mut config, source) = match &args.config {
        Some(path) => {
            let json =
                std::fs::read_to_string(path).map_err(|e| format!("--config {path}: {e}"))?;
            let value: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| format!("--config {path}: {e}"))?;
            (value, format!("--config {path}"))
        }
        None => (env_config(), "settings".to_owned()),
    };
    let root = config
        .as_object_mut()
        .ok_or_else(|| format!("{source}: not a JSON object"))?;
    let settings = root
        .entry("settings")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| format!("{source}: settings is not an object"))?;
    settings
        .entry("chain_header")
        .or_insert_with(|| CHAIN_HEADER.into());
    // A gateway does not sit out long rate limits: unless the wait is short it hands the
    // Retry-After to its caller (a 429 with the header).
    settings
        .entry("max_rate_limit_wait_seconds")
        .or_insert_with(|| GATEWAY_MAX_RATE_LIMIT_WAIT_SECONDS.into());
    settings.extend(settings_overlay(args));
    let config = Config::from_json(&config.to_string()).map_err(|e| format!("{source}: {e}"))?;
    Ok(OpenRouterLayerBuilder::from_config(&config).map_err(|e| format!("{source}: {e}"))?)
}

/// The config of a start without `--config`: `PRIMARY_MODEL` then `FALLBACK_MODELS`, a
/// 60 s attempt timeout and a 180 s deadline (each overridable).
fn env_config() -> serde_json::Value {
    let primary = env("PRIMARY_MODEL").unwrap_or_else(|| DEFAULT_PRIMARY.to_owned());
    let fallbacks = env("FALLBACK_MODELS").unwrap_or_else(|| DEFAULT_FALLBACKS.to_owned());
    let chain: Vec<serde_json::Value> = std::iter::once(primary.as_str())
        .chain(
            fallbacks
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty()),
        )
        .map(|m| serde_json::json!({ "id": m }))
        .collect();
    serde_json::json!({
        "default_chain": chain,
        "settings": { "attempt_timeout_seconds": 60, "deadline_seconds": 180 },
    })
}

/// Starts the model catalog's background refresh when the config has a `catalog` key,
/// through the upstream client: loaded at start (in the background: requests before the
/// first answer see the `snapshot`, or no catalog, and every model passes), then every
/// `catalog.refresh_seconds` (default 3600), from the upstream's own `/models` unless
/// `catalog.url` names another. A failed or malformed refresh keeps the last good catalog
/// (a WARN); no request waits for one. `catalog.refresh: false` keeps the snapshot only.
///
/// The catalog request carries the gateway's upstream key (`auth`) when it goes to the
/// upstream's own host (an upstream that is another gateway may want it), never to another
/// host named by `catalog.url`.
pub(crate) fn refresh_catalog(
    layer: &OpenRouterLayer,
    base: &str,
    auth: Option<&HeaderValue>,
    client: SharedClient,
) -> Result<Option<RefreshHandle>, String> {
    let Some(catalog) = layer.catalog() else {
        return Ok(None);
    };
    let base = base.trim_end_matches('/');
    let base_uri: Uri = base
        .parse()
        .map_err(|e| format!("upstream URL {base:?}: {e}"))?;
    if catalog.source_uri() == OPENROUTER_MODELS_URL {
        let uri = format!("{base}/models")
            .parse()
            .map_err(|e| format!("upstream URL {base:?}: {e}"))?;
        let _ = catalog.clone().source(uri);
    }
    let source = catalog.source_uri();
    let upstream_host =
        source.scheme() == base_uri.scheme() && source.authority() == base_uri.authority();
    let auth = auth.filter(|_| upstream_host).cloned();
    let client = tower::ServiceBuilder::new()
        .map_request(move |mut req: Request<Full<Bytes>>| {
            if let Some(auth) = &auth {
                req.headers_mut()
                    .insert(http::header::AUTHORIZATION, auth.clone());
            }
            req
        })
        .service(client);
    let handle = layer.spawn_catalog_refresh(client);
    if handle.is_some() {
        tracing::info!(
            every = ?catalog.refresh_interval(),
            from = %catalog.source_uri().path(),
            "catalog refresh started"
        );
    }
    Ok(handle)
}

/// The longest `Retry-After` the gateway waits out itself (unless its settings say
/// otherwise).
pub(crate) const GATEWAY_MAX_RATE_LIMIT_WAIT_SECONDS: f64 = 1.0;

/// How many received requests the stand-in keeps (its counters stay exact regardless).
pub(crate) const MOCK_KEPT_REQUESTS: usize = 1_000;

/// Where requests go, with which key; keeps the stand-in alive when one is used.
pub(crate) struct Upstream {
    pub(crate) base: String,
    pub(crate) key: Option<String>,
    pub(crate) _mock: Option<MockServer>,
}

pub(crate) async fn upstream(args: &Args) -> Result<Upstream, Box<dyn std::error::Error>> {
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
    // `GET /v1/models` lists the stand-in's models (the default chain's).
    let listed: Vec<serde_json::Value> = [DEFAULT_PRIMARY, DEFAULT_FALLBACKS]
        .into_iter()
        .chain(env("PRIMARY_MODEL").as_deref())
        // Capable of what the stand-in serves, so a configured `catalog` loaded from it
        // skips none of them.
        .map(|id| serde_json::json!({ "id": id, "object": "model", "created": 1700000000, "owned_by": "mock",
            "context_length": 128000,
            "architecture": { "input_modalities": ["text", "image"], "output_modalities": ["text"] },
            "supported_parameters": ["tools", "tool_choice", "max_tokens", "temperature", "response_format", "structured_outputs"] }))
        .collect();
    mock.route("/api/v1/models").respond(Reply::json(
        200,
        serde_json::json!({ "object": "list", "data": listed }).to_string(),
    ));
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
pub(crate) struct Shared {
    /// `UPSTREAM/<endpoint>` for each of [`ROUTES`](crate::routes::ROUTES).
    pub(crate) targets: Vec<Uri>,
    /// `Bearer <key>`, marked sensitive (hyper and `Debug` never show it).
    pub(crate) auth: Option<HeaderValue>,
    /// The inbound keys callers may use (`GATEWAY_KEYS`), as `Bearer <key>`; empty: any
    /// caller.
    pub(crate) keys: Vec<Vec<u8>>,
}

impl Shared {
    pub(crate) fn new(
        base: &str,
        auth: Option<HeaderValue>,
        keys: &[String],
    ) -> Result<Self, String> {
        let base = base.trim_end_matches('/');
        let targets = crate::routes::ROUTES
            .iter()
            .map(|(path, _)| {
                format!("{base}{path}")
                    .parse()
                    .map_err(|e| format!("upstream URL {base:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Shared {
            targets,
            auth,
            keys: keys
                .iter()
                .map(|k| format!("Bearer {k}").into_bytes())
                .collect(),
        })
    }

    /// Whether the caller may use the gateway: no keys configured, or its
    /// `Authorization` is one of them (compared in constant time).
    pub(crate) fn authorized(&self, headers: &http::HeaderMap) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        let Some(given) = headers.get(http::header::AUTHORIZATION) else {
            return false;
        };
        let given = given.as_bytes();
        self.keys
            .iter()
            .fold(false, |ok, k| ok | constant_time_eq(k, given))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The hyper client behind one `Arc`: the stack clones its inner service for every call
/// (tower's clone-and-swap), and one reference count is cheaper than the client's own
/// clone (a handful of them).
#[derive(Clone)]
pub(crate) struct SharedClient(pub(crate) Arc<HttpClient>);

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

/// The hyper client for the upstream: http or https (rustls with webpki roots), HTTP/1,
/// `TCP_NODELAY`, a large idle pool (a gateway talks to one host).
pub(crate) fn http_client() -> Result<HttpClient, Box<dyn std::error::Error>> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(https))
}
