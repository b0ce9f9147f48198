//! From a [`Config`] to the stack: the builder calls for every key of the settings file.

use super::{CatalogSection, Config, Settings, SharedHealthConfig};
use crate::catalog::ModelCatalog;
use crate::error::ConfigError;
use crate::health::HealthConfig;
use crate::stack::{OpenRouterLayer, OpenRouterLayerBuilder};

impl OpenRouterLayer {
    /// The stack a JSON [`Config`] describes (see [`Config`] for the keys).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad key.
    ///
    /// ```
    /// use tower_openrouter::stack::OpenRouterLayer;
    ///
    /// let layer = OpenRouterLayer::from_json(r#"{
    ///     "default_chain": ["anthropic/claude-3.5-sonnet", "openai/gpt-4o"],
    ///     "settings": {"deadline_seconds": 120, "attempt_timeout_seconds": 30}
    /// }"#).unwrap();
    /// assert_eq!(layer.chains().default_chain().unwrap().len(), 2);
    ///
    /// let err = OpenRouterLayer::from_json(r#"{"default_chain": []}"#).unwrap_err();
    /// assert_eq!(err.field(), "default_chain");
    /// ```
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        OpenRouterLayerBuilder::from_config(&Config::from_json(json)?)?.build()
    }

    /// The stack a YAML settings document describes: the same keys as
    /// [`from_json`](OpenRouterLayer::from_json), read by
    /// [`Config::from_yaml`](crate::config::Config::from_yaml). Feature `yaml`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad key (or the line of a YAML syntax error).
    #[cfg(feature = "yaml")]
    pub fn from_yaml(yaml: &str) -> Result<Self, ConfigError> {
        OpenRouterLayerBuilder::from_config(&Config::from_yaml(yaml)?)?.build()
    }

    /// The stack a parsed [`Config`] describes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad key.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        OpenRouterLayerBuilder::from_config(config)?.build()
    }
}

impl OpenRouterLayerBuilder {
    /// A builder with everything a [`Config`] sets; adjust further before
    /// [`build`](Self::build).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad key.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        config.validate()?;
        builder(config, Snapshot::Load)
    }
}

/// Whether [`builder`] reads the catalog's snapshot file (building) or not (checking).
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Snapshot {
    Load,
    Skip,
}

/// The builder calls for every key of `config`: only conversions (seconds to durations,
/// names to types), whose errors name the key; the settings themselves are checked by the
/// builder and the layers.
pub(super) fn builder(
    config: &Config,
    snapshot: Snapshot,
) -> Result<OpenRouterLayerBuilder, ConfigError> {
    let s = &config.settings;
    let mut b = OpenRouterLayerBuilder::new().chains(config.chains()?);
    let secs = super::seconds;
    if let Some(v) = s.deadline_seconds {
        b = b.deadline(secs("settings.deadline_seconds", v)?);
    }
    if let Some(v) = s.attempt_timeout_seconds {
        b = b.attempt_timeout(secs("settings.attempt_timeout_seconds", v)?);
    }
    if let Some(v) = s.first_token_timeout_seconds {
        b = b.first_token_timeout(secs("settings.first_token_timeout_seconds", v)?);
    }
    match s.idle_timeout_seconds {
        Some(super::SecondsOrOff::Seconds(v)) => {
            b = b.idle_timeout(secs("settings.idle_timeout_seconds", v)?);
        }
        Some(super::SecondsOrOff::Off) => b = b.idle_timeout(None),
        None => {}
    }
    if let Some(n) = s.max_retries_per_model {
        b = b.max_retries(n);
    }
    b = b.health_config(health(s)?);
    if let Some(shared) = config.health.as_ref().and_then(|h| h.shared.as_ref()) {
        b = shared_health(b, shared)?;
    }
    if let Some(o) = s.order {
        b = b.order(o.into());
    }
    if let Some(h) = &s.chain_header {
        b = b.chain_header(h);
    }
    if let Some(u) = s.unlisted_model {
        b = b.unlisted_model(u.into());
    }
    if let Some(m) = &s.allowed_models {
        b = b.allowed_models(m);
    }
    if let Some(p) = &s.allowed_providers {
        b = b.allowed_providers(p);
    }
    for (endpoint, chain) in &config.endpoint_chains {
        b = b.endpoint_chain(endpoint, chain);
    }
    if let Some(w) = s.server_side_window {
        b = b.server_side_window(w);
    }
    if let Some(v) = s.max_rate_limit_wait_seconds {
        b = b.max_rate_limit_wait(secs("settings.max_rate_limit_wait_seconds", v)?);
    }
    if let Some(n) = s.max_body_bytes {
        b = b.max_body_bytes(n);
    }
    if let Some(n) = s.max_response_body_bytes {
        b = b.max_response_body_bytes(n);
    }
    if let Some(a) = s.truncated_response_action {
        b = b.truncated_response_action(a.into());
    }
    if let Some(r) = &config.native_routing {
        b = b.native_routing(r.to_routing()?);
    }
    if let Some(c) = &config.catalog {
        b = b.catalog(catalog_from_config(c, snapshot)?);
    }
    if let Some(p) = &config.max_price {
        b = b.max_price(p.ceiling());
        for (chain, c) in &p.chains {
            b = b.chain_max_price(chain, *c);
        }
        if let Some(h) = &p.header {
            b = b.max_price_header(h);
        }
    }
    if let Some(h) = &config.hedging {
        if let Some(d) = &h.default_chain {
            b = b.hedge(d.to_policy("hedging.default_chain")?);
        }
        for (chain, c) in &h.chains {
            b = b.chain_hedge(chain, c.to_policy(&format!("hedging.chains.{chain}"))?);
        }
    }
    Ok(b)
}

/// The health settings of `settings`, unchecked (the builder checks them).
fn health(s: &Settings) -> Result<HealthConfig, ConfigError> {
    let mut health = HealthConfig::default();
    if let Some(v) = s.disable_duration_seconds {
        health = health.disable_duration(super::seconds("settings.disable_duration_seconds", v)?);
    }
    if let Some(m) = s.health_window_minutes {
        health = health.window(super::minutes("settings.health_window_minutes", m)?);
    }
    if let Some(t) = s.skip_threshold {
        health = health.skip_below_success_rate(t);
    }
    if let Some(n) = s.consecutive_failures {
        health = health.consecutive_failures(n);
    }
    if let Some(a) = &s.adaptive {
        health = health.adaptive(a.to_config());
    }
    Ok(health)
}

/// The `health.shared` key of a settings file, as the builder takes it.
fn shared_health(
    b: OpenRouterLayerBuilder,
    shared: &SharedHealthConfig,
) -> Result<OpenRouterLayerBuilder, ConfigError> {
    #[cfg(feature = "redis")]
    {
        let mut c = crate::health::RedisStoreConfig::new(shared.redis_url.clone());
        if let Some(p) = &shared.prefix {
            c = c.prefix(p.clone());
        }
        if let Some(ms) = shared.reconcile_ms {
            c = c.reconcile(std::time::Duration::from_millis(ms));
        }
        c.validate().map_err(|e| {
            ConfigError::new(
                format!("health.shared.{}", e.field()),
                e.message().to_owned(),
            )
        })?;
        Ok(b.redis_health(c))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (b, shared);
        Err(ConfigError::new(
            "health.shared",
            "health.shared needs tower-openrouter's `redis` feature",
        ))
    }
}

/// The catalog of the `catalog` key: its snapshot loaded (unless skipped), strict mode,
/// the background refresh (on or off, interval, URL).
fn catalog_from_config(
    c: &CatalogSection,
    snapshot: Snapshot,
) -> Result<ModelCatalog, ConfigError> {
    let catalog = match &c.snapshot {
        Some(path) if snapshot == Snapshot::Load => ModelCatalog::from_file(path)
            .map_err(|e| ConfigError::new("catalog.snapshot", format!("catalog.snapshot: {e}")))?,
        _ => ModelCatalog::new(),
    };
    let mut catalog = catalog
        .strict(c.strict.unwrap_or(false))
        .background_refresh(c.refresh.unwrap_or(true));
    if let Some(s) = c.refresh_seconds {
        catalog = catalog.refresh_every(super::seconds("catalog.refresh_seconds", s)?);
    }
    if let Some(url) = &c.url {
        // The value is not repeated: a URL may carry a password.
        let uri = url
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
            .ok_or_else(|| {
                ConfigError::new(
                    "catalog.url",
                    "catalog.url must be an absolute http or https URL with a host",
                )
            })?;
        catalog = catalog.source(uri);
    }
    Ok(catalog)
}
