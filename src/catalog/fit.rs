//! Whether one model can serve one request: capabilities, context, price, expiry.

use std::fmt;
use std::str::FromStr;

use super::model::{Modalities, ModelInfo};
use super::needs::Requirements;

/// A price ceiling: on the estimated cost of one attempt and/or on per-token prices.
///
/// Set per layer, per chain ([`CatalogPolicy`](super::CatalogPolicy)) or per request (this
/// type as a request extension, or the policy's header). A request's ceiling only ever
/// tightens the configured one: each field is the lower of the two.
///
/// The estimated cost of an attempt is `prompt_tokens x pricing.prompt + completion x
/// pricing.completion + pricing.request + media parts x pricing.image`, where
/// `prompt_tokens` is [`Requirements::prompt_tokens`] and `completion` is the request's
/// `max_tokens`, else the model's `top_provider.max_completion_tokens`, else 0: the most
/// the attempt can cost, so set `max_tokens` for a tight estimate.
///
/// ```
/// use tower_openrouter::catalog::MaxPrice;
///
/// let ceiling: MaxPrice = "0.01".parse()?; // USD per attempt
/// assert_eq!(ceiling.per_request, Some(0.01));
/// let ceiling: MaxPrice = "request=0.05, prompt=3, completion=15".parse()?; // USD, USD/M tokens
/// assert_eq!(ceiling.completion, Some(15.0));
/// # Ok::<(), String>(())
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPrice {
    /// USD: the most one attempt may cost (estimated).
    #[serde(default, alias = "request")]
    pub per_request: Option<f64>,
    /// USD per million prompt tokens (OpenRouter's `provider.max_price` unit).
    #[serde(default)]
    pub prompt: Option<f64>,
    /// USD per million completion tokens.
    #[serde(default)]
    pub completion: Option<f64>,
}

impl MaxPrice {
    /// A ceiling on the estimated cost of one attempt, in USD.
    pub fn per_request(usd: f64) -> Self {
        MaxPrice {
            per_request: Some(usd),
            ..Self::default()
        }
    }

    /// Adds a ceiling on the prompt price, USD per million tokens.
    pub fn prompt_per_million(mut self, usd: f64) -> Self {
        self.prompt = Some(usd);
        self
    }

    /// Adds a ceiling on the completion price, USD per million tokens.
    pub fn completion_per_million(mut self, usd: f64) -> Self {
        self.completion = Some(usd);
        self
    }

    /// Whether no field is set.
    pub fn is_unlimited(&self) -> bool {
        *self == MaxPrice::default()
    }

    /// Each field the lower of the two (a missing field is no limit).
    pub fn tightest(self, other: MaxPrice) -> MaxPrice {
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        MaxPrice {
            per_request: min(self.per_request, other.per_request),
            prompt: min(self.prompt, other.prompt),
            completion: min(self.completion, other.completion),
        }
    }

    /// Checks every field is a finite number >= 0.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](crate::error::ConfigError) on `max_price` naming the ceiling.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        for (name, v) in [
            ("per_request", self.per_request),
            ("prompt", self.prompt),
            ("completion", self.completion),
        ] {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 {
                    return Err(crate::error::ConfigError::new(
                        "max_price",
                        format!("max_price.{name} must be a number >= 0, got {v}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl FromStr for MaxPrice {
    type Err = String;

    /// `"0.01"` (USD per attempt) or `key=value` pairs separated by commas: `request`
    /// (USD per attempt), `prompt`, `completion` (USD per million tokens).
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |v: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("not a price: {:?}", crate::error::truncate(v, 32).0))
        };
        let mut out = MaxPrice::default();
        if !s.contains('=') {
            out.per_request = Some(num(s)?);
        } else {
            for pair in s.split(',') {
                let (k, v) = pair.split_once('=').ok_or("expected key=value")?;
                let slot = match k.trim() {
                    "request" | "per_request" => &mut out.per_request,
                    "prompt" => &mut out.prompt,
                    "completion" => &mut out.completion,
                    other => {
                        return Err(format!(
                            "unknown price key {:?} (request, prompt, completion)",
                            crate::error::truncate(other, 32).0
                        ))
                    }
                };
                *slot = Some(num(v)?);
            }
        }
        out.validate().map_err(|e| e.message().to_owned())?;
        Ok(out)
    }
}

/// Why a model cannot serve a request. Its `Display` is the reason recorded in the
/// skipped attempt (`"no tools"`, `"context 128000 < estimated 151000"`, ...).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Unfit {
    /// The catalog lists the model with an `expiration_date` on or before today.
    Expired(Box<str>),
    /// `supported_parameters` lacks `tools`.
    NoTools,
    /// `supported_parameters` lacks `structured_outputs` (a `json_schema` response format).
    NoStructuredOutputs,
    /// `supported_parameters` lacks `reasoning`.
    NoReasoning,
    /// `architecture.input_modalities` lacks these.
    Modalities(Modalities),
    /// Prompt estimate plus `max_tokens` is more than `context_length`.
    Context {
        /// The model's context length.
        context: u64,
        /// Estimated prompt tokens plus `max_tokens`.
        estimated: u64,
    },
    /// `max_tokens` is more than `top_provider.max_completion_tokens`.
    MaxTokens {
        /// The request's `max_tokens`.
        requested: u64,
        /// The model's limit.
        limit: u64,
    },
    /// Over the estimated cost ceiling of one attempt (USD).
    Price {
        /// Estimated cost of the attempt.
        estimated: f64,
        /// The ceiling.
        ceiling: f64,
    },
    /// A per-token price over its ceiling (USD per million tokens).
    TokenPrice {
        /// `"prompt"` or `"completion"`.
        which: &'static str,
        /// The model's price.
        price: f64,
        /// The ceiling.
        ceiling: f64,
    },
    /// Strict mode, and the catalog does not list the model.
    NotInCatalog,
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::Expired(date) => write!(f, "expired {date}"),
            Unfit::NoTools => f.write_str("no tools"),
            Unfit::NoStructuredOutputs => f.write_str("no structured outputs"),
            Unfit::NoReasoning => f.write_str("no reasoning"),
            Unfit::Modalities(m) => {
                let names: Vec<_> = m.names().collect();
                write!(f, "no {} input", names.join("/"))
            }
            Unfit::Context { context, estimated } => {
                write!(f, "context {context} < estimated {estimated}")
            }
            Unfit::MaxTokens { requested, limit } => {
                write!(f, "max_tokens {requested} > max completion {limit}")
            }
            Unfit::Price { estimated, ceiling } => {
                write!(f, "price ${estimated:.4} > ceiling ${ceiling:.4}")
            }
            Unfit::TokenPrice {
                which,
                price,
                ceiling,
            } => write!(f, "price {which} ${price:.2}/M > ceiling ${ceiling:.2}/M"),
            Unfit::NotInCatalog => f.write_str("not in the catalog (strict mode)"),
        }
    }
}

/// The first reason `model` cannot serve `needs` under `ceiling`, checked in this order:
/// expiry, tools, structured outputs, reasoning, modalities, context, max tokens, price.
pub fn check(
    model: &ModelInfo,
    needs: &Requirements,
    ceiling: &MaxPrice,
    today: i64,
) -> Option<Unfit> {
    if model.expired_on(today) {
        return Some(Unfit::Expired(
            model.expiration_date().unwrap_or_default().into(),
        ));
    }
    if needs.tools && !model.supports("tools") {
        return Some(Unfit::NoTools);
    }
    if needs.structured_outputs && !model.supports("structured_outputs") {
        return Some(Unfit::NoStructuredOutputs);
    }
    if needs.reasoning && !model.supports("reasoning") {
        return Some(Unfit::NoReasoning);
    }
    let missing = needs.input.difference(model.input_modalities());
    if !missing.is_empty() {
        return Some(Unfit::Modalities(missing));
    }
    let completion = needs.max_tokens.unwrap_or(0);
    if let Some(context) = model.context_length() {
        let estimated = needs.prompt_tokens + completion;
        if estimated > context {
            return Some(Unfit::Context { context, estimated });
        }
    }
    if let (Some(requested), Some(limit)) = (needs.max_tokens, model.max_completion_tokens()) {
        if requested > limit {
            return Some(Unfit::MaxTokens { requested, limit });
        }
    }
    price(model, needs, ceiling)
}

fn price(model: &ModelInfo, needs: &Requirements, ceiling: &MaxPrice) -> Option<Unfit> {
    let p = model.pricing();
    let per_million = |v: Option<f64>| v.map(|v| v * 1e6);
    for (which, price, max) in [
        ("prompt", per_million(p.prompt), ceiling.prompt),
        ("completion", per_million(p.completion), ceiling.completion),
    ] {
        if let (Some(price), Some(ceiling)) = (price, max) {
            if price > ceiling {
                return Some(Unfit::TokenPrice {
                    which,
                    price,
                    ceiling,
                });
            }
        }
    }
    let ceiling = ceiling.per_request?;
    let completion = needs
        .max_tokens
        .or(model.max_completion_tokens())
        .unwrap_or(0);
    let estimated = needs.prompt_tokens as f64 * p.prompt.unwrap_or(0.0)
        + completion as f64 * p.completion.unwrap_or(0.0)
        + p.request.unwrap_or(0.0)
        + f64::from(needs.media_parts) * p.image.unwrap_or(0.0);
    (estimated > ceiling).then_some(Unfit::Price { estimated, ceiling })
}
