//! Model chains, named chain sets and the request extension that picks one.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;

/// One model of a [`Chain`], with its own optional limits.
///
/// Built from a model id (`"openai/gpt-4o".into()`) or with the setters; read the fields
/// (`None`: the layers' defaults apply):
///
/// ```
/// use std::time::Duration;
/// use tower_openrouter::fallback::ChainModel;
///
/// let m = ChainModel::new("openai/gpt-4o")
///     .timeout(Duration::from_secs(25))
///     .max_retries(1)
///     .label("secondary");
/// assert_eq!(m.model(), "openai/gpt-4o");
/// assert_eq!(m.timeout, Some(Duration::from_secs(25)));
/// assert_eq!(m.label.as_deref(), Some("secondary"));
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainModel {
    /// The model id.
    pub model: Arc<str>,
    /// This model's attempt timeout (overrides the stack's `attempt_timeout`).
    pub timeout: Option<Duration>,
    /// This model's maximum number of retries (overrides the retry policy's default).
    pub max_retries: Option<u32>,
    /// A label for logs and [`ServedBy`](super::ServedBy).
    pub label: Option<Arc<str>>,
    /// This model's priority ([`Chain::new`] sorts by it).
    pub priority: Option<i64>,
    /// How long this model is skipped after it trips (a fixed health cooldown).
    pub disable_duration: Option<Duration>,
}

impl ChainModel {
    /// A model with no limits of its own (the layers' defaults apply).
    pub fn new(model: impl Into<Arc<str>>) -> Self {
        ChainModel {
            model: model.into(),
            timeout: None,
            max_retries: None,
            label: None,
            priority: None,
            disable_duration: None,
        }
    }

    /// This model's attempt timeout (overrides the stack's `attempt_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// This model's maximum number of retries (overrides the retry policy's default).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// A label for logs and [`ServedBy`](super::ServedBy) (`"primary"`, `"budget-fallback"`).
    pub fn label(mut self, label: impl Into<Arc<str>>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// This model's priority: [`Chain::new`] sorts models by ascending priority (stable;
    /// models without one keep their place after those with one).
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = Some(priority);
        self
    }

    /// How long this model is skipped after it trips (a fixed health cooldown). The stack
    /// builder hands it to the health tracker
    /// ([`HealthConfig::model_disable_duration`](crate::health::HealthConfig::model_disable_duration)).
    pub fn disable_duration(mut self, duration: Duration) -> Self {
        self.disable_duration = Some(duration);
        self
    }

    /// The model id.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl From<&str> for ChainModel {
    fn from(model: &str) -> Self {
        ChainModel::new(model)
    }
}

impl From<String> for ChainModel {
    fn from(model: String) -> Self {
        ChainModel::new(model)
    }
}

impl From<Arc<str>> for ChainModel {
    fn from(model: Arc<str>) -> Self {
        ChainModel::new(model)
    }
}

/// A borrowed model (`&String`, `&&str`, `&ChainModel`, ...) is cloned: what a chain made
/// from a slice (`&[&str]`, `&[String]`) needs.
impl<M: Into<ChainModel> + Clone> From<&M> for ChainModel {
    fn from(model: &M) -> Self {
        model.clone().into()
    }
}

/// An ordered list of models to try, cheap to clone (one `Arc`).
///
/// ```
/// use tower_openrouter::fallback::{Chain, ChainModel};
///
/// let chain = Chain::new([
///     ChainModel::new("openai/gpt-4o").priority(2),
///     ChainModel::new("anthropic/claude-3.5-sonnet").priority(1),
///     ChainModel::new("google/gemini-2.0-flash-001"),
/// ]);
/// let ids: Vec<&str> = chain.iter().map(|m| m.model()).collect();
/// assert_eq!(ids, ["anthropic/claude-3.5-sonnet", "openai/gpt-4o", "google/gemini-2.0-flash-001"]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Chain {
    models: Arc<[ChainModel]>,
}

impl Chain {
    /// A chain of `models`, sorted by [`priority`](ChainModel::priority) (ascending,
    /// stable; models without a priority come after those with one, in the given order).
    pub fn new<I, M>(models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<ChainModel>,
    {
        let mut models: Vec<ChainModel> = models.into_iter().map(Into::into).collect();
        if models.iter().any(|m| m.priority.is_some()) {
            models.sort_by_key(|m| (m.priority.is_none(), m.priority.unwrap_or(0)));
        }
        Chain {
            models: models.into(),
        }
    }

    /// A chain of `models` as given, not sorted by priority: for checks whose errors name
    /// the position a model was written at.
    pub(crate) fn in_order(models: Vec<ChainModel>) -> Self {
        Chain {
            models: models.into(),
        }
    }

    /// Cost tiers, cheapest first: the chain for a request that may use every tier up to
    /// and including `max_tier` (the budget models first, then the standard ones, ...).
    /// `None` when no tier has that name.
    ///
    /// ```
    /// use tower_openrouter::fallback::Chain;
    ///
    /// let tiers = [
    ///     ("budget", Chain::new(["anthropic/claude-3-haiku"])),
    ///     ("standard", Chain::new(["anthropic/claude-3.5-sonnet"])),
    ///     ("premium", Chain::new(["anthropic/claude-3-opus"])),
    /// ];
    /// let chain = Chain::up_to_tier(&tiers, "standard").unwrap();
    /// assert_eq!(chain.len(), 2);
    /// assert_eq!(chain.models()[1].model(), "anthropic/claude-3.5-sonnet");
    /// ```
    pub fn up_to_tier<N: AsRef<str>>(tiers: &[(N, Chain)], max_tier: &str) -> Option<Chain> {
        let end = tiers.iter().position(|(n, _)| n.as_ref() == max_tier)?;
        Some(Chain::concat(tiers[..=end].iter().map(|(_, c)| c)))
    }

    /// Cross-provider: `primary`'s models first, then every other provider's, in the
    /// order the providers are given. `None` when no provider has that name.
    ///
    /// ```
    /// use tower_openrouter::fallback::Chain;
    ///
    /// let providers = [
    ///     ("anthropic", Chain::new(["anthropic/claude-3.5-sonnet"])),
    ///     ("openai", Chain::new(["openai/gpt-4-turbo", "openai/gpt-3.5-turbo"])),
    /// ];
    /// let chain = Chain::primary_provider(&providers, "openai").unwrap();
    /// let ids: Vec<&str> = chain.iter().map(|m| m.model()).collect();
    /// assert_eq!(ids, ["openai/gpt-4-turbo", "openai/gpt-3.5-turbo", "anthropic/claude-3.5-sonnet"]);
    /// ```
    pub fn primary_provider<N: AsRef<str>>(
        providers: &[(N, Chain)],
        primary: &str,
    ) -> Option<Chain> {
        let first = providers.iter().position(|(n, _)| n.as_ref() == primary)?;
        let rest = providers
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != first)
            .map(|(_, (_, c))| c);
        Some(Chain::concat(
            std::iter::once(&providers[first].1).chain(rest),
        ))
    }

    fn concat<'a>(chains: impl Iterator<Item = &'a Chain>) -> Chain {
        let models: Vec<ChainModel> = chains.flat_map(|c| c.models.iter().cloned()).collect();
        Chain {
            models: models.into(),
        }
    }

    /// The models, in the order they are tried (in [`Order::Priority`](super::Order)).
    pub fn models(&self) -> &[ChainModel] {
        &self.models
    }

    /// Iterates over the models.
    pub fn iter(&self) -> std::slice::Iter<'_, ChainModel> {
        self.models.iter()
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether the chain has no model.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Checks the chain: at least one model, no empty id, no model twice, no zero
    /// timeout. `field` names the chain in the error.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.models.is_empty() {
            return Err(ConfigError::new(
                field.to_owned(),
                format!("{field} is empty: a chain needs at least one model"),
            ));
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.model.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("{field}[{i}]"),
                    format!("{field}[{i}] has an empty model id"),
                ));
            }
            if self.models[..i].iter().any(|p| p.model == m.model) {
                return Err(ConfigError::new(
                    format!("{field}[{i}]"),
                    format!("{field}[{i}]: model {} appears twice in the chain", m.model),
                ));
            }
            if m.timeout == Some(Duration::ZERO) {
                return Err(ConfigError::zero(format!("{field}[{i}].timeout")));
            }
            if m.disable_duration == Some(Duration::ZERO) {
                return Err(ConfigError::zero(format!("{field}[{i}].disable_duration")));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.models.iter()).finish()
    }
}

impl<M: Into<ChainModel>> FromIterator<M> for Chain {
    fn from_iter<T: IntoIterator<Item = M>>(iter: T) -> Self {
        Chain::new(iter)
    }
}

/// A chain from anything that yields models: an array, a `Vec`, a slice (`&[&str]`,
/// `&[String]`, `&[ChainModel]`: each entry is cloned) or an iterator
/// (`models.iter().copied()`), so every method that takes `impl Into<Chain>` takes them.
///
/// ```
/// use tower_openrouter::fallback::Chain;
///
/// let models = ["anthropic/claude-sonnet-4.5", "openai/gpt-4o"];
/// assert_eq!(Chain::from(&models[..]), Chain::from(models.iter().copied()));
/// assert_eq!(Chain::from(vec![String::from("a/b")]).len(), 1);
/// ```
impl<I> From<I> for Chain
where
    I: IntoIterator,
    I::Item: Into<ChainModel>,
{
    fn from(models: I) -> Self {
        Chain::new(models)
    }
}

/// Picks a chain for one request: insert it into the request extensions.
///
/// Plain names select the chains registered with [`Chains::with_chain`] (task chains such
/// as `"coding"`, capability chains such as `"vision"`); [`ChainName::tier`] and
/// [`ChainName::primary_provider`] select the chains generated by
/// [`Chains::with_cost_tiers`] and [`Chains::with_providers`]. A name that is not
/// configured fails the request with [`ErrorKind::UnknownChain`](crate::ErrorKind) before
/// any upstream call.
///
/// ```
/// use tower_openrouter::fallback::ChainName;
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(ChainName::new("coding"));
/// assert_eq!(ChainName::tier("standard").as_str(), "tier:standard");
/// assert_eq!(ChainName::primary_provider("openai").as_str(), "provider:openai");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChainName(Arc<str>);

impl ChainName {
    /// The chain registered under `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        ChainName(name.into())
    }

    /// The cost-tier chain that may use every tier up to `max_tier` (name `tier:<max_tier>`).
    pub fn tier(max_tier: &str) -> Self {
        ChainName(format!("{TIER_PREFIX}{max_tier}").into())
    }

    /// The cross-provider chain that starts with `provider`'s models (name
    /// `provider:<provider>`).
    pub fn primary_provider(provider: &str) -> Self {
        ChainName(format!("{PROVIDER_PREFIX}{provider}").into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Prefix of the names of chains generated from cost tiers.
pub const TIER_PREFIX: &str = "tier:";
/// Prefix of the names of chains generated from provider lists.
pub const PROVIDER_PREFIX: &str = "provider:";

/// A default chain and named chains: what a [`FallbackLayer`](super::FallbackLayer)
/// chooses from.
///
/// ```
/// use tower_openrouter::fallback::{Chain, Chains};
///
/// let chains = Chains::new(["anthropic/claude-3.5-sonnet", "openai/gpt-4-turbo"])
///     .with_chain("fast", ["anthropic/claude-3-haiku", "openai/gpt-3.5-turbo"])
///     .with_cost_tiers([
///         ("budget", Chain::new(["anthropic/claude-3-haiku"])),
///         ("standard", Chain::new(["anthropic/claude-3.5-sonnet"])),
///     ]);
/// assert_eq!(chains.get("fast").unwrap().len(), 2);
/// assert_eq!(chains.get("tier:standard").unwrap().len(), 2);
/// assert!(chains.get("slow").is_none());
/// chains.validate().unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct Chains {
    default: Option<Chain>,
    named: HashMap<Arc<str>, Chain>,
}

impl Chains {
    /// A set whose default chain (used when the request names none) is `default`.
    pub fn new(default: impl Into<Chain>) -> Self {
        Chains {
            default: Some(default.into()),
            named: HashMap::new(),
        }
    }

    /// A set with no default chain: every request must name one (else
    /// [`ErrorKind::UnknownChain`](crate::ErrorKind)).
    pub fn empty() -> Self {
        Chains::default()
    }

    /// Sets the default chain.
    pub fn with_default(mut self, chain: impl Into<Chain>) -> Self {
        self.default = Some(chain.into());
        self
    }

    /// Adds (or replaces) the chain called `name` (a task such as `"coding"`, a capability
    /// such as `"vision"`).
    pub fn with_chain(mut self, name: impl Into<Arc<str>>, chain: impl Into<Chain>) -> Self {
        self.named.insert(name.into(), chain.into());
        self
    }

    /// Adds cost tiers, cheapest first: for each tier `t` a chain `tier:t` with every model
    /// of the tiers up to and including `t`. Select one with [`ChainName::tier`].
    pub fn with_cost_tiers<N: Into<Arc<str>>>(
        mut self,
        tiers: impl IntoIterator<Item = (N, Chain)>,
    ) -> Self {
        let tiers: Vec<(Arc<str>, Chain)> = tiers.into_iter().map(|(n, c)| (n.into(), c)).collect();
        for (name, _) in &tiers {
            if let Some(chain) = Chain::up_to_tier(&tiers, name) {
                self.named
                    .insert(format!("{TIER_PREFIX}{name}").into(), chain);
            }
        }
        self
    }

    /// Adds providers' model lists: for each provider `p` a chain `provider:p` with `p`'s
    /// models first, then every other provider's. Select one with
    /// [`ChainName::primary_provider`].
    pub fn with_providers<N: Into<Arc<str>>>(
        mut self,
        providers: impl IntoIterator<Item = (N, Chain)>,
    ) -> Self {
        let providers: Vec<(Arc<str>, Chain)> =
            providers.into_iter().map(|(n, c)| (n.into(), c)).collect();
        for (name, _) in &providers {
            if let Some(chain) = Chain::primary_provider(&providers, name) {
                self.named
                    .insert(format!("{PROVIDER_PREFIX}{name}").into(), chain);
            }
        }
        self
    }

    /// The default chain.
    pub fn default_chain(&self) -> Option<&Chain> {
        self.default.as_ref()
    }

    /// The chain called `name`.
    pub fn get(&self, name: &str) -> Option<&Chain> {
        self.named.get(name)
    }

    /// The chain called `name`, with the name as stored (shared into `ServedBy`).
    pub(crate) fn named_entry(&self, name: &str) -> Option<(&Arc<str>, &Chain)> {
        self.named.get_key_value(name)
    }

    /// The names of the named chains, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.named.keys().map(|k| &**k).collect();
        names.sort_unstable();
        names
    }

    /// Every chain with its field name (`default_chain`, `chains.<name>`), default first.
    pub(crate) fn all(&self) -> impl Iterator<Item = (String, &Chain)> + '_ {
        let named = self
            .names()
            .into_iter()
            .map(|n| (format!("chains.{n}"), &self.named[n]));
        self.default
            .iter()
            .map(|d| ("default_chain".to_owned(), d))
            .chain(named)
    }

    /// Checks every chain (see [`Chain::validate`]) and that there is at least one chain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.default.is_none() && self.named.is_empty() {
            return Err(ConfigError::new(
                "chain",
                "chain: no chain is configured (set a default chain or a named one)",
            ));
        }
        if let Some(d) = &self.default {
            d.validate("default_chain")?;
        }
        for name in self.names() {
            if name.trim().is_empty() {
                return Err(ConfigError::new(
                    "chains",
                    "chains: a chain has an empty name",
                ));
            }
            self.named[name].validate(&format!("chains.{name}"))?;
        }
        Ok(())
    }
}

impl From<Chain> for Chains {
    fn from(chain: Chain) -> Self {
        Chains::new(chain)
    }
}

/// A set whose default chain is these models (see [`Chain`]'s `From`).
impl<I> From<I> for Chains
where
    I: IntoIterator,
    I::Item: Into<ChainModel>,
{
    fn from(models: I) -> Self {
        Chains::new(Chain::new(models))
    }
}
