//! OpenRouter's `provider` preferences object.

use serde::{Deserialize, Serialize};

/// OpenRouter's `provider` object: which providers may serve a model, in which order, and
/// under which price, data and performance constraints.
///
/// Every field is optional; `None` fields are left out of the JSON, so OpenRouter's own
/// defaults apply. Fields OpenRouter adds later can be passed through [`extra`](Self::extra).
///
/// ```
/// use tower_openrouter::routing::{DataCollection, ProviderPreferences, SortBy};
///
/// let p = ProviderPreferences::new()
///     .order(["Anthropic", "AWS Bedrock"])
///     .allow_fallbacks(false)
///     .data_collection(DataCollection::Deny)
///     .sort(SortBy::Throughput);
/// assert_eq!(
///     serde_json::to_string(&p).unwrap(),
///     r#"{"order":["Anthropic","AWS Bedrock"],"allow_fallbacks":false,"data_collection":"deny","sort":"throughput"}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderPreferences {
    /// Provider slugs to try in this order (`["anthropic", "openai"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<String>>,
    /// Whether backup providers may serve when the preferred ones are unavailable
    /// (OpenRouter's default: `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_fallbacks: Option<bool>,
    /// Only use providers that support every parameter of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_parameters: Option<bool>,
    /// Whether providers that may store data are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_collection: Option<DataCollection>,
    /// Only Zero Data Retention endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zdr: Option<bool>,
    /// Only these provider slugs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    /// Never these provider slugs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
    /// Only these quantization levels (`"int4"`, `"int8"`, `"fp8"`, `"bf16"`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantizations: Option<Vec<String>>,
    /// Sort providers by price, throughput or latency (disables load balancing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<ProviderSort>,
    /// The most this request may cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<MaxPrice>,
    /// Preferred minimum throughput, tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_min_throughput: Option<Performance>,
    /// Preferred maximum latency, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_max_latency: Option<Performance>,
    /// Any other field, passed on as it is (for fields newer than this crate).
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Whether providers that may store prompts are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataCollection {
    /// Allowed (OpenRouter's default).
    Allow,
    /// Only providers that do not store data.
    Deny,
}

/// What providers are sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    /// Cheapest first.
    Price,
    /// Highest throughput first.
    Throughput,
    /// Lowest latency first.
    Latency,
}

/// How sorting treats the models of a `models` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortPartition {
    /// Endpoints are grouped by model before sorting: fallback models stay fallbacks
    /// (OpenRouter's default).
    Model,
    /// All endpoints of all models are sorted together.
    None,
}

/// `provider.sort`: a plain strategy (`"price"`) or `{ "by": .., "partition": .. }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProviderSort {
    /// `"price"`, `"throughput"` or `"latency"`.
    By(SortBy),
    /// `{ "by": .., "partition": .. }`.
    Detailed {
        /// The strategy.
        by: SortBy,
        /// How models of a `models` list are treated.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<SortPartition>,
    },
}

impl From<SortBy> for ProviderSort {
    fn from(by: SortBy) -> Self {
        ProviderSort::By(by)
    }
}

/// `provider.max_price`: the most to pay, in USD per million tokens (prompt, completion)
/// or per request / image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MaxPrice {
    /// Per million prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<f64>,
    /// Per million completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<f64>,
    /// Per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<f64>,
    /// Per image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<f64>,
}

/// A preferred throughput or latency: one number, or cut-offs per percentile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Performance {
    /// One value.
    Value(f64),
    /// Per-percentile values.
    Percentiles(Percentiles),
}

impl From<f64> for Performance {
    fn from(v: f64) -> Self {
        Performance::Value(v)
    }
}

/// Per-percentile cut-offs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    /// 75th percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p75: Option<f64>,
    /// 90th percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    /// 99th percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
}

fn strings<I>(items: I) -> Option<Vec<String>>
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    Some(items.into_iter().map(Into::into).collect())
}

impl ProviderPreferences {
    /// No preferences (OpenRouter's defaults).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `order`.
    pub fn order<I>(mut self, providers: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.order = strings(providers);
        self
    }

    /// Sets `allow_fallbacks`.
    pub fn allow_fallbacks(mut self, allow: bool) -> Self {
        self.allow_fallbacks = Some(allow);
        self
    }

    /// Sets `require_parameters`.
    pub fn require_parameters(mut self, require: bool) -> Self {
        self.require_parameters = Some(require);
        self
    }

    /// Sets `data_collection`.
    pub fn data_collection(mut self, policy: DataCollection) -> Self {
        self.data_collection = Some(policy);
        self
    }

    /// Sets `zdr`.
    pub fn zdr(mut self, zdr: bool) -> Self {
        self.zdr = Some(zdr);
        self
    }

    /// Sets `only`.
    pub fn only<I>(mut self, providers: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.only = strings(providers);
        self
    }

    /// Sets `ignore`.
    pub fn ignore<I>(mut self, providers: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.ignore = strings(providers);
        self
    }

    /// Sets `quantizations`.
    pub fn quantizations<I>(mut self, levels: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.quantizations = strings(levels);
        self
    }

    /// Sets `sort` (a [`SortBy`] or a [`ProviderSort::Detailed`]).
    pub fn sort(mut self, sort: impl Into<ProviderSort>) -> Self {
        self.sort = Some(sort.into());
        self
    }

    /// Sets `max_price`.
    pub fn max_price(mut self, max_price: MaxPrice) -> Self {
        self.max_price = Some(max_price);
        self
    }

    /// Sets `preferred_min_throughput`.
    pub fn preferred_min_throughput(mut self, v: impl Into<Performance>) -> Self {
        self.preferred_min_throughput = Some(v.into());
        self
    }

    /// Sets `preferred_max_latency`.
    pub fn preferred_max_latency(mut self, v: impl Into<Performance>) -> Self {
        self.preferred_max_latency = Some(v.into());
        self
    }
}
