//! [`ModelCatalog`]: the parsed catalog behind an `ArcSwap`, and its refresh.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tower::{Service, ServiceExt};

use super::fit::{check, MaxPrice, Unfit};
use super::model::{parse_listing, today, ModelInfo};
use super::needs::Requirements;
use crate::error::{BoxError, Error, ErrorKind};

/// How often [`ModelCatalog::spawn_refresh`] refreshes by default: OpenRouter's catalog
/// changes a few times a day.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// Where [`OpenRouterLayer::spawn_catalog_refresh`](crate::stack::OpenRouterLayer::spawn_catalog_refresh)
/// fetches the catalog unless [`ModelCatalog::source`] says otherwise.
pub const OPENROUTER_MODELS_URL: &str = "https://openrouter.ai/api/v1/models";

/// The largest catalog body read (OpenRouter's is about 1-2 MB).
const MAX_CATALOG_BYTES: usize = 32 << 20;

/// Routing variants that are not catalog entries of their own: `a/b:nitro` is `a/b`.
const ROUTING_SUFFIXES: [&str; 3] = [":nitro", ":floor", ":online"];

/// One parsed catalog; swapped whole on refresh.
#[derive(Default)]
pub(crate) struct Snapshot {
    models: HashMap<Arc<str>, Arc<ModelInfo>>,
    loaded: bool,
}

impl Snapshot {
    fn get(&self, id: &str) -> Option<&Arc<ModelInfo>> {
        self.models.get(id).or_else(|| {
            let base = ROUTING_SUFFIXES.iter().find_map(|s| id.strip_suffix(s))?;
            self.models.get(base)
        })
    }
}

struct Inner {
    current: ArcSwap<Snapshot>,
    strict: AtomicBool,
    /// Milliseconds between background refreshes.
    refresh_ms: AtomicU64,
    /// Where the background refresh of the stack fetches (`None`: OpenRouter's).
    source: arc_swap::ArcSwapOption<http::Uri>,
    /// Whether the stack's background refresh may run (off: the snapshot only).
    background: AtomicBool,
}

/// OpenRouter's model catalog (`GET /api/v1/models`): what each model supports, its
/// context window, prices and retirement date. See the [module docs](super).
///
/// Cheap to clone (clones share one catalog). Reads are lock-free (an `ArcSwap` load);
/// a refresh parses the new catalog off to the side and swaps it in whole, so a request
/// never waits for one, and a refresh that fails (an error status, a transport error,
/// a body that is not `{"data": [...]}`) keeps the last good catalog and logs a `WARN`.
///
/// A model the catalog does not list is treated as capable (it may be new, or a private
/// alias), unless [`strict`](Self::strict) is set. Before the first successful load the
/// catalog is empty and every model passes, strict or not: a request is never blocked
/// waiting for the catalog.
///
/// ```
/// use tower_openrouter::catalog::ModelCatalog;
///
/// let catalog = ModelCatalog::from_json(r#"{"data":[
///   {"id":"openai/gpt-4o","context_length":128000,"supported_parameters":["tools"],
///    "architecture":{"input_modalities":["text","image"]},
///    "pricing":{"prompt":"0.0000025","completion":"0.00001"}}]}"#)?;
/// let gpt = catalog.get("openai/gpt-4o").unwrap();
/// assert_eq!(gpt.context_length(), Some(128_000));
/// assert!(catalog.get("openai/gpt-4o:nitro").is_some()); // a routing variant
/// assert!(catalog.get("unknown/model").is_none());
/// # Ok::<(), tower_openrouter::Error>(())
/// ```
#[derive(Clone)]
pub struct ModelCatalog {
    inner: Arc<Inner>,
}

impl Default for ModelCatalog {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ModelCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = self.inner.current.load();
        f.debug_struct("ModelCatalog")
            .field("models", &snap.models.len())
            .field("loaded", &snap.loaded)
            .field("strict", &self.is_strict())
            .finish()
    }
}

impl ModelCatalog {
    /// An empty catalog, to be filled by [`refresh_from`](Self::refresh_from),
    /// [`spawn_refresh`](Self::spawn_refresh) or [`replace_json`](Self::replace_json).
    pub fn new() -> Self {
        ModelCatalog {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(Snapshot::default()),
                strict: AtomicBool::new(false),
                refresh_ms: AtomicU64::new(DEFAULT_REFRESH.as_millis() as u64),
                source: arc_swap::ArcSwapOption::empty(),
                background: AtomicBool::new(true),
            }),
        }
    }

    /// A catalog from a `GET /api/v1/models` body (`{"data": [...]}`), e.g. a snapshot
    /// saved for offline use. Entries that do not parse are skipped (and counted in a
    /// `WARN`); a body that is not `{"data": [...]}` is [`ErrorKind::InvalidBody`].
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let catalog = Self::new();
        catalog.replace_json(json.as_bytes())?;
        Ok(catalog)
    }

    /// [`from_json`](Self::from_json) of a file's contents.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let json = std::fs::read(path).map_err(|e| {
            Error::new(ErrorKind::InvalidBody).with_detail(format!(
                "cannot read the catalog snapshot {}: {e}",
                path.display()
            ))
        })?;
        let catalog = Self::new();
        catalog.replace_json(&json)?;
        Ok(catalog)
    }

    /// A catalog of these models (for tests and hand-made catalogs).
    pub fn from_models(models: impl IntoIterator<Item = ModelInfo>) -> Self {
        let catalog = Self::new();
        catalog.replace(models.into_iter().collect());
        catalog
    }

    /// Strict mode: a model the loaded catalog does not list is not capable (skipped
    /// with "not in the catalog"). Off by default. Shared by every clone.
    pub fn strict(self, strict: bool) -> Self {
        self.inner.strict.store(strict, Ordering::Relaxed);
        self
    }

    /// The interval of [`spawn_refresh`](Self::spawn_refresh) when it is given none
    /// (default [`DEFAULT_REFRESH`], one hour). Shared by every clone.
    pub fn refresh_every(self, every: Duration) -> Self {
        self.inner
            .refresh_ms
            .store(every.as_millis().max(1) as u64, Ordering::Relaxed);
        self
    }

    /// The interval of [`spawn_refresh`](Self::spawn_refresh) when it is given none (see
    /// [`refresh_every`](Self::refresh_every)).
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_millis(self.inner.refresh_ms.load(Ordering::Relaxed))
    }

    /// Where the stack's background refresh
    /// ([`OpenRouterLayer::spawn_catalog_refresh`](crate::stack::OpenRouterLayer::spawn_catalog_refresh))
    /// fetches the catalog: an upstream's `/api/v1/models` (a gateway's own upstream, the
    /// stand-in). Default [`OPENROUTER_MODELS_URL`]. Shared by every clone.
    ///
    /// ```
    /// use tower_openrouter::catalog::{ModelCatalog, OPENROUTER_MODELS_URL};
    ///
    /// assert_eq!(ModelCatalog::new().source_uri(), OPENROUTER_MODELS_URL);
    /// let c = ModelCatalog::new().source("http://127.0.0.1:18080/api/v1/models".parse().unwrap());
    /// assert_eq!(c.source_uri(), "http://127.0.0.1:18080/api/v1/models");
    /// ```
    pub fn source(self, uri: http::Uri) -> Self {
        self.inner.source.store(Some(Arc::new(uri)));
        self
    }

    /// Where the stack's background refresh fetches (see [`source`](Self::source)).
    pub fn source_uri(&self) -> http::Uri {
        match &*self.inner.source.load() {
            Some(uri) => (**uri).clone(),
            None => http::Uri::from_static(OPENROUTER_MODELS_URL),
        }
    }

    /// Whether the stack's background refresh may run (default on; off keeps the
    /// snapshot, for offline use). [`spawn_refresh`](Self::spawn_refresh) itself always
    /// runs. Shared by every clone.
    pub fn background_refresh(self, on: bool) -> Self {
        self.inner.background.store(on, Ordering::Relaxed);
        self
    }

    /// Whether the stack's background refresh may run (see
    /// [`background_refresh`](Self::background_refresh)).
    pub fn refreshes_in_background(&self) -> bool {
        self.inner.background.load(Ordering::Relaxed)
    }

    /// Whether strict mode is on.
    pub fn is_strict(&self) -> bool {
        self.inner.strict.load(Ordering::Relaxed)
    }

    /// The catalog's entry for `id` (a routing variant such as `a/b:nitro` finds `a/b`).
    /// A lock-free read.
    pub fn get(&self, id: &str) -> Option<Arc<ModelInfo>> {
        self.inner.current.load().get(id).cloned()
    }

    /// How many models the catalog lists.
    pub fn len(&self) -> usize {
        self.inner.current.load().models.len()
    }

    /// Whether the catalog lists no model.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a catalog has been loaded (from a snapshot or a refresh).
    pub fn is_loaded(&self) -> bool {
        self.inner.current.load().loaded
    }

    /// Why `model` cannot serve `needs` under `ceiling`, or `None` when it can (or the
    /// catalog does not list it and strict mode is off).
    pub fn check(&self, model: &str, needs: &Requirements, ceiling: &MaxPrice) -> Option<Unfit> {
        self.filter(*needs, *ceiling).unfit(model)
    }

    /// One consistent view of the catalog for a whole call (a refresh during the call
    /// does not change the answers halfway).
    pub(crate) fn filter(&self, needs: Requirements, ceiling: MaxPrice) -> CallFilter {
        CallFilter {
            snapshot: self.inner.current.load_full(),
            strict: self.is_strict(),
            needs,
            ceiling,
            today: today(),
        }
    }

    /// Replaces the catalog with a `GET /api/v1/models` body. On error (not
    /// `{"data": [...]}`) the catalog is unchanged. Returns how many models it now lists.
    pub fn replace_json(&self, json: &[u8]) -> Result<usize, Error> {
        let (models, skipped) = parse_listing(json)
            .map_err(|detail| Error::new(ErrorKind::InvalidBody).with_detail(detail))?;
        if skipped > 0 {
            tracing::warn!(skipped, "catalog entries without a usable id skipped");
        }
        Ok(self.replace(models))
    }

    fn replace(&self, models: Vec<ModelInfo>) -> usize {
        let models: HashMap<Arc<str>, Arc<ModelInfo>> = models
            .into_iter()
            .map(|m| (Arc::from(m.id()), Arc::new(m)))
            .collect();
        let n = models.len();
        self.inner.current.store(Arc::new(Snapshot {
            models,
            loaded: true,
        }));
        n
    }

    /// Fetches `GET {uri}` through `service` (your client stack: auth and transport are
    /// yours) and replaces the catalog with the answer. Any failure (an error from the
    /// service, a status other than 2xx, a body over 32 MiB or not `{"data": [...]}`)
    /// keeps the current catalog, logs a `WARN` and is returned.
    ///
    /// `uri` is usually `https://openrouter.ai/api/v1/models`.
    pub async fn refresh_from<S, B>(&self, service: S, uri: &http::Uri) -> Result<usize, Error>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>>,
        S::Error: Into<BoxError>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        let result = fetch(service, uri)
            .await
            .and_then(|body| self.replace_json(&body));
        match &result {
            Ok(n) => tracing::debug!(models = n, "catalog refreshed"),
            Err(e) => {
                tracing::warn!(error = %e, "catalog refresh failed; keeping the last good catalog")
            }
        }
        result
    }

    /// Refreshes in the background: at once, then every `every` (`None`: the
    /// [`refresh_every`](Self::refresh_every) interval, one hour by default), each time as
    /// [`refresh_from`](Self::refresh_from). The task ends when every clone of the
    /// catalog is dropped or the handle is aborted. Needs a Tokio runtime.
    pub fn spawn_refresh<S, B>(
        &self,
        service: S,
        uri: http::Uri,
        every: Option<Duration>,
    ) -> RefreshHandle
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let every = every.unwrap_or_else(|| self.refresh_interval());
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let catalog = ModelCatalog { inner };
                // Errors are logged by refresh_from; the last good catalog stays.
                let _ = catalog.refresh_from(service.clone(), &uri).await;
            }
        });
        RefreshHandle { task }
    }
}

/// The background refresh task of [`ModelCatalog::spawn_refresh`]. Dropping it leaves the
/// task running (it ends with the catalog); [`abort`](Self::abort) stops it.
#[derive(Debug)]
pub struct RefreshHandle {
    task: tokio::task::JoinHandle<()>,
}

impl RefreshHandle {
    /// Stops the refresh task.
    pub fn abort(&self) {
        self.task.abort();
    }
}

async fn fetch<S, B>(service: S, uri: &http::Uri) -> Result<Bytes, Error>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let req = Request::get(uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| Error::new(ErrorKind::InvalidRequest).with_source(e))?;
    let resp = service
        .oneshot(req)
        .await
        .map_err(|e| Error::from_box(e.into()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Error::new(ErrorKind::UnexpectedStatus)
            .with_status(status)
            .with_detail("the catalog request did not succeed"));
    }
    let body = Limited::new(resp.into_body(), MAX_CATALOG_BYTES)
        .collect()
        .await
        .map_err(|e| {
            Error::new(ErrorKind::Transport)
                .with_detail("reading the catalog body failed")
                .with_source(e)
        })?;
    Ok(body.to_bytes())
}

/// The catalog as one call sees it: a snapshot, the request's needs and price ceiling.
pub(crate) struct CallFilter {
    snapshot: Arc<Snapshot>,
    strict: bool,
    needs: Requirements,
    ceiling: MaxPrice,
    today: i64,
}

impl CallFilter {
    /// What the request needs.
    pub(crate) fn needs(&self) -> Requirements {
        self.needs
    }

    /// Why `model` cannot serve this call, if it cannot.
    pub(crate) fn unfit(&self, model: &str) -> Option<Unfit> {
        match self.snapshot.get(model) {
            Some(info) => check(info, &self.needs, &self.ceiling, self.today),
            None if self.strict && self.snapshot.loaded => Some(Unfit::NotInCatalog),
            None => None,
        }
    }
}
