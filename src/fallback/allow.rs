//! Which models and providers a request may name: the allow-list of a stack that lends
//! its key to callers (a gateway), set with
//! [`FallbackLayer::allowed_models`](super::FallbackLayer::allowed_models) and
//! [`FallbackLayer::allowed_providers`](super::FallbackLayer::allowed_providers).
//!
//! With a model list, the caller's `model` (unless the request names a chain), every
//! entry of its `models` and of `/messages` `fallbacks` must be a model of a configured
//! chain, a chain's name, or on the list; with a provider list, every entry of
//! `provider.only` and `provider.order` must be on it. Anything else is
//! [`ErrorKind::ModelNotAllowed`] before any upstream call. A duplicated key is checked in
//! each of its values.

use std::collections::HashSet;

use serde::Deserialize;

use super::chain::Chains;
use super::select::UnlistedModel;
use crate::error::{truncate, Error, ErrorKind};
use crate::extensions::decode_str;
use crate::JsonBody;

/// A set of ids: exact ones, and prefixes (an entry ending in `*`, such as `openai/*`).
#[derive(Debug, Clone, Default)]
pub(crate) struct IdSet {
    exact: HashSet<Box<str>>,
    prefixes: Vec<Box<str>>,
    /// Compared without regard to ASCII case (provider names: `OpenAI`, `openai`).
    fold_case: bool,
}

impl IdSet {
    fn new(fold_case: bool) -> Self {
        IdSet {
            fold_case,
            ..IdSet::default()
        }
    }

    fn insert(&mut self, id: &str) {
        let id = if self.fold_case {
            id.to_ascii_lowercase()
        } else {
            id.to_owned()
        };
        match id.strip_suffix('*') {
            Some(prefix) => self.prefixes.push(prefix.into()),
            None => {
                self.exact.insert(id.into());
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        let folded;
        let id = if self.fold_case {
            folded = id.to_ascii_lowercase();
            &folded
        } else {
            id
        };
        self.exact.contains(id) || self.prefixes.iter().any(|p| id.starts_with(&**p))
    }
}

/// What the allow-list was configured with (kept so the effective list can be rebuilt when
/// another setting of the layer changes).
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowSettings {
    /// `None`: no model list of its own.
    pub(crate) models: Option<Vec<Box<str>>>,
    /// `None`: any provider.
    pub(crate) providers: Option<Vec<Box<str>>>,
    /// Models and providers the stack's own configuration sends (native routing): allowed
    /// whenever a list is in force, without turning one on.
    pub(crate) configured_models: Vec<Box<str>>,
    pub(crate) configured_providers: Vec<Box<str>>,
}

/// The allow-list in force.
#[derive(Debug, Clone)]
pub(crate) struct AllowList {
    models: Option<IdSet>,
    providers: Option<IdSet>,
}

impl AllowList {
    /// The list `settings` and `chains` give, or `None` when nothing is restricted. A
    /// stack that refuses unlisted models ([`UnlistedModel::Reject`]) restricts the model
    /// lists to its chains even without a list of its own.
    pub(crate) fn build(
        settings: &AllowSettings,
        chains: &Chains,
        unlisted: UnlistedModel,
    ) -> Option<Self> {
        let models = (settings.models.is_some() || unlisted == UnlistedModel::Reject).then(|| {
            let mut set = IdSet::new(false);
            for (_, chain) in chains.all() {
                chain.iter().for_each(|m| set.insert(m.model()));
            }
            chains.names().into_iter().for_each(|n| set.insert(n));
            let own = settings.models.iter().flatten();
            own.chain(&settings.configured_models)
                .for_each(|m| set.insert(m));
            set
        });
        let providers = settings.providers.as_ref().map(|own| {
            let mut set = IdSet::new(true);
            own.iter()
                .chain(&settings.configured_providers)
                .for_each(|p| set.insert(p));
            set
        });
        (models.is_some() || providers.is_some()).then_some(AllowList { models, providers })
    }

    /// Checks a request's body: `model` too when `check_model` (the request does not name
    /// a chain). A body that is not a JSON object names nothing.
    pub(crate) fn check(&self, json: Option<&JsonBody>, check_model: bool) -> Result<(), Error> {
        let Some(json) = json else {
            return Ok(());
        };
        if let Some(models) = &self.models {
            if check_model {
                for m in json.raw_all("model").filter_map(decode_str) {
                    allowed(models, &m, "model")?;
                }
            }
            for raw in json.raw_all("models") {
                for m in list::<String>(raw, "models")? {
                    allowed(models, &m, "models")?;
                }
            }
            for raw in json.raw_all("fallbacks") {
                for f in list::<FallbackEntry>(raw, "fallbacks")? {
                    allowed(models, &f.model, "fallbacks")?;
                }
            }
        }
        if let Some(providers) = &self.providers {
            for raw in json.raw_all("provider") {
                let p: ProviderLists = serde_json::from_slice(raw).map_err(|_| {
                    invalid("`provider` must be an object whose `only` and `order` are lists of provider names")
                })?;
                for name in p.only.iter().chain(&p.order).flatten() {
                    if !providers.contains(name) {
                        return Err(not_allowed(format!(
                            "provider {:?} (in `provider`) is not on this stack's allow-list",
                            truncate(name, 64).0
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct FallbackEntry {
    model: String,
}

#[derive(Deserialize)]
struct ProviderLists {
    #[serde(default)]
    only: Option<Vec<String>>,
    #[serde(default)]
    order: Option<Vec<String>>,
}

fn list<'a, T: Deserialize<'a>>(raw: &'a [u8], key: &str) -> Result<Vec<T>, Error> {
    serde_json::from_slice(raw).map_err(|_| {
        invalid(format!(
            "`{key}` must be a list of model ids (`fallbacks`: of {{\"model\": \"<id>\"}})"
        ))
    })
}

fn allowed(models: &IdSet, model: &str, key: &str) -> Result<(), Error> {
    if models.contains(model) {
        return Ok(());
    }
    Err(not_allowed(format!(
        "model {:?} (in `{key}`) is neither a model of the configured chains nor on this stack's allow-list",
        truncate(model, 96).0
    )))
}

fn not_allowed(detail: String) -> Error {
    Error::new(ErrorKind::ModelNotAllowed).with_detail(detail)
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidRouting).with_detail(detail)
}
