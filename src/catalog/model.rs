//! One model of OpenRouter's catalog, parsed from the `GET /api/v1/models` shape.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

/// Input or output modalities of a model, as a small bit set.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Modalities(u8);

impl Modalities {
    /// Text.
    pub const TEXT: Modalities = Modalities(1);
    /// Images (`image_url` / `input_image` / Anthropic `image` content parts).
    pub const IMAGE: Modalities = Modalities(2);
    /// Audio (`input_audio` content parts).
    pub const AUDIO: Modalities = Modalities(4);
    /// Files, e.g. PDFs (`file` / `input_file` / Anthropic `document` parts).
    pub const FILE: Modalities = Modalities(8);
    /// Video (`video_url` parts).
    pub const VIDEO: Modalities = Modalities(16);

    const NAMES: [(Modalities, &'static str); 5] = [
        (Self::TEXT, "text"),
        (Self::IMAGE, "image"),
        (Self::AUDIO, "audio"),
        (Self::FILE, "file"),
        (Self::VIDEO, "video"),
    ];

    /// No modality.
    pub const fn empty() -> Self {
        Modalities(0)
    }

    /// Whether every modality of `other` is in `self`.
    pub const fn contains(self, other: Modalities) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Both sets.
    pub const fn union(self, other: Modalities) -> Self {
        Modalities(self.0 | other.0)
    }

    /// The modalities of `self` that `other` lacks.
    pub const fn difference(self, other: Modalities) -> Self {
        Modalities(self.0 & !other.0)
    }

    /// The modality OpenRouter names `name` (`"text"`, `"image"`, `"audio"`, `"file"`,
    /// `"video"`), if it is one of those.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(m, _)| *m)
    }

    /// The names of the modalities in the set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(m, _)| self.contains(*m))
            .map(|(_, n)| n)
    }

    fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names
            .into_iter()
            .filter_map(Self::from_name)
            .fold(Self::empty(), Self::union)
    }
}

impl fmt::Debug for Modalities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// USD prices of a model, per token (as OpenRouter publishes them); `None` where the
/// catalog gives no price or a variable one (`"-1"`, as for `openrouter/auto`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pricing {
    /// Per prompt token.
    pub prompt: Option<f64>,
    /// Per completion token.
    pub completion: Option<f64>,
    /// Per request.
    pub request: Option<f64>,
    /// Per input image.
    pub image: Option<f64>,
}

/// What the catalog says about one model. Cheap to share (`Arc`).
///
/// Built from one entry of `GET /api/v1/models` (`data[i]`); unknown fields are ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    id: Arc<str>,
    context_length: Option<u64>,
    max_completion_tokens: Option<u64>,
    supported_parameters: Box<[Box<str>]>,
    input: Modalities,
    output: Modalities,
    pricing: Pricing,
    /// `expiration_date` as days since 1970-01-01.
    expires: Option<i64>,
    expiration_date: Option<Box<str>>,
}

impl ModelInfo {
    /// A model with no limits, every modality and no prices: a start for
    /// [`ModelCatalog::from_models`](super::ModelCatalog::from_models) in tests.
    ///
    /// ```
    /// use tower_openrouter::catalog::{Modalities, ModelInfo};
    ///
    /// let m = ModelInfo::new("a/b")
    ///     .with_context_length(128_000)
    ///     .with_supported_parameters(["tools", "tool_choice"])
    ///     .with_input_modalities(Modalities::TEXT);
    /// assert!(m.supports("tools"));
    /// assert!(!m.input_modalities().contains(Modalities::IMAGE));
    /// ```
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        ModelInfo {
            id: id.into(),
            context_length: None,
            max_completion_tokens: None,
            supported_parameters: Box::default(),
            input: Modalities::TEXT,
            output: Modalities::TEXT,
            pricing: Pricing::default(),
            expires: None,
            expiration_date: None,
        }
    }

    /// Sets `context_length`.
    pub fn with_context_length(mut self, tokens: u64) -> Self {
        self.context_length = Some(tokens);
        self
    }

    /// Sets `top_provider.max_completion_tokens`.
    pub fn with_max_completion_tokens(mut self, tokens: u64) -> Self {
        self.max_completion_tokens = Some(tokens);
        self
    }

    /// Sets `supported_parameters`.
    pub fn with_supported_parameters<'a>(
        mut self,
        params: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        self.supported_parameters = params.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `architecture.input_modalities`.
    pub fn with_input_modalities(mut self, input: Modalities) -> Self {
        self.input = input;
        self
    }

    /// Sets the prices (USD per token).
    pub fn with_pricing(mut self, pricing: Pricing) -> Self {
        self.pricing = pricing;
        self
    }

    /// Sets `expiration_date` (`YYYY-MM-DD`); a date that does not parse is ignored.
    pub fn with_expiration_date(mut self, date: &str) -> Self {
        self.expires = parse_date(date);
        self.expiration_date = self.expires.map(|_| date.into());
        self
    }

    /// The model id (`"openai/gpt-4o"`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The context window in tokens (prompt plus completion), when known.
    pub fn context_length(&self) -> Option<u64> {
        self.context_length
    }

    /// The most completion tokens the top provider allows, when known.
    pub fn max_completion_tokens(&self) -> Option<u64> {
        self.max_completion_tokens
    }

    /// Whether `supported_parameters` lists `param` (`"tools"`, `"reasoning"`, ...).
    pub fn supports(&self, param: &str) -> bool {
        self.supported_parameters.iter().any(|p| &**p == param)
    }

    /// `supported_parameters`, as listed.
    pub fn supported_parameters(&self) -> impl Iterator<Item = &str> {
        self.supported_parameters.iter().map(|p| &**p)
    }

    /// `architecture.input_modalities`.
    pub fn input_modalities(&self) -> Modalities {
        self.input
    }

    /// `architecture.output_modalities`.
    pub fn output_modalities(&self) -> Modalities {
        self.output
    }

    /// The prices.
    pub fn pricing(&self) -> Pricing {
        self.pricing
    }

    /// `expiration_date` as written (`YYYY-MM-DD`), when the model is to be retired.
    pub fn expiration_date(&self) -> Option<&str> {
        self.expiration_date.as_deref()
    }

    /// Whether the model is retired on or before `today` (days since 1970-01-01).
    pub(crate) fn expired_on(&self, today: i64) -> bool {
        self.expires.is_some_and(|d| d <= today)
    }
}

/// `GET /api/v1/models` as OpenRouter sends it: `{"data": [Model, ...]}`.
#[derive(Deserialize)]
struct Listing<'a> {
    #[serde(borrow)]
    data: Vec<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct RawModel {
    id: String,
    #[serde(default)]
    context_length: Option<f64>,
    #[serde(default)]
    top_provider: Option<RawTopProvider>,
    #[serde(default)]
    supported_parameters: Option<Vec<String>>,
    #[serde(default)]
    architecture: Option<RawArchitecture>,
    #[serde(default)]
    pricing: Option<HashMap<String, serde_json::Value>>,
    #[serde(default)]
    expiration_date: Option<String>,
}

#[derive(Deserialize)]
struct RawTopProvider {
    #[serde(default)]
    context_length: Option<f64>,
    #[serde(default)]
    max_completion_tokens: Option<f64>,
}

#[derive(Deserialize)]
struct RawArchitecture {
    #[serde(default)]
    input_modalities: Option<Vec<String>>,
    #[serde(default)]
    output_modalities: Option<Vec<String>>,
}

/// The models of a `GET /api/v1/models` body, and how many entries were skipped because
/// they did not parse (an entry without a string `id`, say). A body that is not
/// `{"data": [...]}` is an error: the caller keeps its last good catalog.
pub(crate) fn parse_listing(json: &[u8]) -> Result<(Vec<ModelInfo>, usize), String> {
    let listing: Listing<'_> = serde_json::from_slice(json)
        .map_err(|e| format!("the catalog is not {{\"data\": [...]}}: {e}"))?;
    let mut skipped = 0;
    let models = listing
        .data
        .into_iter()
        .filter_map(|raw| match serde_json::from_str::<RawModel>(raw.get()) {
            Ok(m) => Some(ModelInfo::from_raw(m)),
            Err(_) => {
                skipped += 1;
                None
            }
        })
        .collect();
    Ok((models, skipped))
}

impl ModelInfo {
    fn from_raw(m: RawModel) -> Self {
        let top = m.top_provider.as_ref();
        let tokens = |v: Option<f64>| v.filter(|n| n.is_finite() && *n > 0.0).map(|n| n as u64);
        let arch = m.architecture.as_ref();
        let modalities = |list: Option<&Vec<String>>| {
            list.map(|l| Modalities::from_names(l.iter().map(String::as_str)))
                .unwrap_or(Modalities::TEXT)
        };
        let price = |key: &str| m.pricing.as_ref().and_then(|p| parse_price(p.get(key)?));
        let expires = m.expiration_date.as_deref().and_then(parse_date);
        ModelInfo {
            context_length: tokens(m.context_length).or_else(|| tokens(top?.context_length)),
            max_completion_tokens: tokens(top.and_then(|t| t.max_completion_tokens)),
            supported_parameters: m
                .supported_parameters
                .unwrap_or_default()
                .into_iter()
                .map(String::into_boxed_str)
                .collect(),
            input: modalities(arch.and_then(|a| a.input_modalities.as_ref())),
            output: modalities(arch.and_then(|a| a.output_modalities.as_ref())),
            pricing: Pricing {
                prompt: price("prompt"),
                completion: price("completion"),
                request: price("request"),
                image: price("image"),
            },
            expiration_date: expires.and(m.expiration_date.map(String::into_boxed_str)),
            expires,
            id: m.id.into(),
        }
    }
}

/// A price: a decimal string (`"0.000003"`) or a number; negative (`"-1"`: variable) or
/// unparsable is no price.
fn parse_price(v: &serde_json::Value) -> Option<f64> {
    let p = match v {
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        serde_json::Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    (p.is_finite() && p >= 0.0).then_some(p)
}

/// `YYYY-MM-DD` (a longer ISO timestamp is cut to its date) as days since 1970-01-01.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let date = s.get(..10)?;
    let mut it = date.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Today as days since 1970-01-01 (UTC, wall clock: expiration dates are calendar dates).
pub(crate) fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 86_400) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(11_017));
        assert_eq!(parse_date("2025-12-01T00:00:00Z"), Some(20_423));
        assert_eq!(parse_date("2025-13-01"), None);
        assert_eq!(parse_date("soon"), None);
    }

    #[test]
    fn listing_skips_bad_entries_and_reads_strings() {
        let json = br#"{"data":[
            {"id":"a/b","context_length":128000,"top_provider":{"max_completion_tokens":16384},
             "supported_parameters":["tools","max_tokens"],
             "architecture":{"input_modalities":["text","image"],"output_modalities":["text"]},
             "pricing":{"prompt":"0.0000025","completion":"0.00001","request":"0","image":"-1"},
             "expiration_date":"2026-01-31"},
            {"name":"no id"},
            {"id":"c/d","context_length":null,"pricing":{"prompt":"x"}}
        ]}"#;
        let (models, skipped) = parse_listing(json).unwrap();
        assert_eq!(skipped, 1);
        let a = &models[0];
        assert_eq!(a.context_length(), Some(128_000));
        assert_eq!(a.max_completion_tokens(), Some(16_384));
        assert!(a.supports("tools") && !a.supports("reasoning"));
        assert_eq!(
            a.input_modalities(),
            Modalities::TEXT.union(Modalities::IMAGE)
        );
        assert_eq!(a.pricing().prompt, Some(0.0000025));
        assert_eq!(a.pricing().request, Some(0.0));
        assert_eq!(a.pricing().image, None);
        assert_eq!(a.expiration_date(), Some("2026-01-31"));
        let c = &models[1];
        assert_eq!(c.context_length(), None);
        assert_eq!(c.pricing().prompt, None);
        assert!(parse_listing(b"[]").is_err());
        assert!(parse_listing(b"{\"data\":").is_err());
    }
}
