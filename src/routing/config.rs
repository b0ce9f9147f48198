//! What the native routing layer injects: [`RoutingConfig`] and the per-request
//! [`RoutingOverride`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::lists::{fallbacks_raw, raw, MAX_SERVER_MODELS};
use super::ProviderPreferences;
use crate::error::ConfigError;
use crate::{Error, ErrorKind};

/// The routing values of a config or an override, as the user gave them.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Values {
    pub(crate) models: Option<Vec<String>>,
    pub(crate) provider: Option<ProviderPreferences>,
    pub(crate) route: Option<String>,
    pub(crate) fallbacks: Option<Vec<String>>,
    pub(crate) replace: Option<bool>,
}

/// A value serialized once, ready to splice into bodies.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) models: Option<Box<RawValue>>,
    pub(crate) provider: Option<Box<RawValue>>,
    pub(crate) route: Option<Box<RawValue>>,
    pub(crate) fallbacks: Option<Box<RawValue>>,
    pub(crate) replace: bool,
}

impl Values {
    /// `self` with the fields `over` sets taking precedence.
    fn merged(&self, over: &Values) -> Values {
        Values {
            models: over.models.clone().or_else(|| self.models.clone()),
            provider: over.provider.clone().or_else(|| self.provider.clone()),
            route: over.route.clone().or_else(|| self.route.clone()),
            fallbacks: over.fallbacks.clone().or_else(|| self.fallbacks.clone()),
            replace: over.replace.or(self.replace),
        }
    }

    fn prepare(&self) -> Prepared {
        let list = |l: &Option<Vec<String>>| l.as_ref().filter(|l| !l.is_empty()).cloned();
        Prepared {
            models: list(&self.models).map(|m| raw(&m)),
            provider: self.provider.as_ref().map(raw),
            route: self.route.as_ref().map(raw),
            fallbacks: list(&self.fallbacks).map(|f| fallbacks_raw(f.iter().map(String::as_str))),
            replace: self.replace.unwrap_or(false),
        }
    }
}

/// What [`NativeRoutingLayer`](super::NativeRoutingLayer) puts into request bodies:
/// OpenRouter's server-side `models` list, `provider` preferences, `route`, and the
/// `/api/v1/messages` `fallbacks`.
///
/// Built with [`RoutingConfig::builder`], which checks OpenRouter's documented limits.
/// The values are serialized once, when built; cloning is a reference-count bump.
///
/// ```
/// use tower_openrouter::routing::{ProviderPreferences, RoutingConfig, SortBy};
///
/// let config = RoutingConfig::builder()
///     .models(["anthropic/claude-sonnet-4.5", "openai/gpt-4o"])
///     .provider(ProviderPreferences::new().sort(SortBy::Price))
///     .build()?;
/// assert_eq!(config.models(), ["anthropic/claude-sonnet-4.5", "openai/gpt-4o"]);
///
/// // OpenRouter rejects more than 3 models: caught here, not after a round trip.
/// let err = RoutingConfig::builder().models(["a/1", "a/2", "a/3", "a/4"]).build().unwrap_err();
/// assert_eq!(err.field(), "models");
/// # Ok::<(), tower_openrouter::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RoutingConfig {
    inner: Arc<Inner>,
}

struct Inner {
    values: Values,
    prepared: Prepared,
}

impl fmt::Debug for RoutingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.inner.values;
        f.debug_struct("RoutingConfig")
            .field("models", &v.models)
            .field("provider", &v.provider)
            .field("route", &v.route)
            .field("fallbacks", &v.fallbacks)
            .field("replace_caller_fields", &self.inner.prepared.replace)
            .finish()
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfigBuilder::default()
            .build()
            .expect("an empty config is valid")
    }
}

impl RoutingConfig {
    /// A builder with nothing to inject and the caller's own fields kept.
    pub fn builder() -> RoutingConfigBuilder {
        RoutingConfigBuilder::default()
    }

    /// The server-side `models` list (empty when none is injected).
    pub fn models(&self) -> &[String] {
        self.inner.values.models.as_deref().unwrap_or_default()
    }

    /// The `provider` preferences.
    pub fn provider(&self) -> Option<&ProviderPreferences> {
        self.inner.values.provider.as_ref()
    }

    /// The `route`.
    pub fn route(&self) -> Option<&str> {
        self.inner.values.route.as_deref()
    }

    /// The `/api/v1/messages` `fallbacks` models (empty when none are injected).
    pub fn fallbacks(&self) -> &[String] {
        self.inner.values.fallbacks.as_deref().unwrap_or_default()
    }

    /// Whether fields the caller set are replaced (otherwise they are kept).
    pub fn replaces_caller_fields(&self) -> bool {
        self.inner.prepared.replace
    }

    /// The values to inject for one request: the config's, or the override merged in.
    pub(crate) fn prepared_for(&self, over: Option<&RoutingOverride>) -> Cow<'_, Prepared> {
        match over {
            None => Cow::Borrowed(&self.inner.prepared),
            Some(o) if o.disabled => Cow::Owned(Prepared {
                models: None,
                provider: None,
                route: None,
                fallbacks: None,
                replace: false,
            }),
            Some(o) => Cow::Owned(self.inner.values.merged(&o.values).prepare()),
        }
    }
}

/// The setters [`RoutingConfigBuilder`] and [`RoutingOverride`] share (both hold a
/// `values: Values`).
macro_rules! setters {
    ($scope:literal) => {
        #[doc = concat!("Sets `models`", $scope, ": OpenRouter's server-side fallback list (at")]
        /// most 3), tried in order when a model fails; injected into chat-completion and
        /// messages bodies. An empty list injects none.
        pub fn models<I>(mut self, models: I) -> Self
        where
            I: IntoIterator,
            I::Item: Into<String>,
        {
            self.values.models = Some(models_list(models));
            self
        }

        #[doc = concat!("Sets the `provider` preferences", $scope, ".")]
        pub fn provider(mut self, provider: ProviderPreferences) -> Self {
            self.values.provider = Some(provider);
            self
        }

        #[doc = concat!("Sets `route`", $scope, " (`\"fallback\"` is OpenRouter's older spelling")]
        /// of server-side fallback).
        pub fn route(mut self, route: impl Into<String>) -> Self {
            self.values.route = Some(route.into());
            self
        }

        #[doc = concat!("Sets the `/api/v1/messages` `fallbacks`", $scope, " (at most 3), sent as")]
        /// `[{"model": ..}, ..]` and only into messages bodies; never together with
        /// `models`. An empty list injects none.
        pub fn fallbacks<I>(mut self, models: I) -> Self
        where
            I: IntoIterator,
            I::Item: Into<String>,
        {
            self.values.fallbacks = Some(models_list(models));
            self
        }

        #[doc = concat!("Whether a field the caller already set is replaced", $scope)]
        /// by the injected one (`true`) or kept (`false`, the default).
        pub fn replace_caller_fields(mut self, replace: bool) -> Self {
            self.values.replace = Some(replace);
            self
        }
    };
}

/// Builds a [`RoutingConfig`].
#[derive(Clone, Debug, Default)]
pub struct RoutingConfigBuilder {
    values: Values,
}

fn models_list<I>(models: I) -> Vec<String>
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    models.into_iter().map(Into::into).collect()
}

impl RoutingConfigBuilder {
    setters!("");

    /// Checks OpenRouter's documented limits and serializes the values once.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate).
    pub fn build(self) -> Result<RoutingConfig, ConfigError> {
        self.validate()?;
        let prepared = self.values.prepare();
        Ok(RoutingConfig {
            inner: Arc::new(Inner {
                values: self.values,
                prepared,
            }),
        })
    }

    /// Checks OpenRouter's documented limits (what [`build`](Self::build) checks).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for more than 3 `models` (field `models`), more than 3 `fallbacks`,
    /// `fallbacks` together with `models` (field `fallbacks`), or an empty model id.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let v = &self.values;
        for (field, list) in [("models", &v.models), ("fallbacks", &v.fallbacks)] {
            let list = list.as_deref().unwrap_or_default();
            if list.len() > MAX_SERVER_MODELS {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "{field} has {} entries; OpenRouter accepts at most {MAX_SERVER_MODELS}",
                        list.len()
                    ),
                ));
            }
            if list.iter().any(|m| m.is_empty()) {
                return Err(ConfigError::new(
                    field,
                    format!("{field} contains an empty model id"),
                ));
            }
        }
        let set = |l: &Option<Vec<String>>| l.as_ref().is_some_and(|l| !l.is_empty());
        if set(&v.models) && set(&v.fallbacks) {
            return Err(ConfigError::new(
                "fallbacks",
                "fallbacks cannot be used together with models (OpenRouter rejects both)",
            ));
        }
        Ok(())
    }
}

/// A per-request change to the routing config: insert it into the request extensions.
///
/// Each field it sets replaces the config's for that request; the others stay as
/// configured. [`RoutingOverride::disabled`] injects nothing. The final body is checked
/// against OpenRouter's limits like any other ([`ErrorKind::InvalidRouting`]).
///
/// ```
/// use tower_openrouter::routing::RoutingOverride;
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(RoutingOverride::new().models(["openai/gpt-4o-mini"]));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingOverride {
    values: Values,
    disabled: bool,
}

impl RoutingOverride {
    /// An override that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// An override that injects nothing into this request (its own fields are still
    /// checked).
    pub fn disabled() -> Self {
        RoutingOverride {
            values: Values::default(),
            disabled: true,
        }
    }

    setters!(" for this request");
}

/// An [`ErrorKind::InvalidRouting`] error.
pub(crate) fn invalid_routing(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidRouting).with_detail(detail)
}
