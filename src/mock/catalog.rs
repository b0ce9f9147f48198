//! `GET /api/v1/models`: the stand-in's model catalog, in OpenRouter's `Model` shape.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The catalog endpoint (its route script, when set, answers instead).
pub(crate) const PATH: &str = "/api/v1/models";

/// The catalog the mock starts with: nine real models in OpenRouter's shape (string
/// prices in USD per token, modalities, supported parameters, a retired model).
pub(crate) const FIXTURE: &str = include_str!("models.json");

/// The catalog's models by id.
pub(crate) fn fixture() -> BTreeMap<String, Value> {
    let doc: Value = serde_json::from_str(FIXTURE).expect("the bundled catalog is JSON");
    doc["data"]
        .as_array()
        .expect("the bundled catalog has data")
        .iter()
        .map(|m| (m["id"].as_str().expect("an id").to_owned(), m.clone()))
        .collect()
}

/// `{"data": [...]}` of `models`, in id order.
pub(crate) fn render(models: &BTreeMap<String, Value>) -> String {
    json!({ "data": models.values().collect::<Vec<_>>() }).to_string()
}

/// One catalog entry for [`MockOpenRouter::catalog_model`](super::MockOpenRouter::catalog_model),
/// rendered in OpenRouter's `Model` shape.
///
/// ```
/// use tower_openrouter::mock::{MockModel, MockOpenRouter};
///
/// let mock = MockOpenRouter::new();
/// mock.catalog_model(
///     MockModel::new("acme/tiny")
///         .context_length(8_192)
///         .supported_parameters(["max_tokens", "temperature"])
///         .input_modalities(["text"])
///         .pricing("0.0000001", "0.0000002"),
/// );
/// assert!(mock.catalog_json().contains(r#""id":"acme/tiny""#));
/// ```
#[derive(Clone, Debug)]
pub struct MockModel {
    value: Value,
}

impl MockModel {
    /// A text model with a 128k context, `max_tokens` and `temperature`, free.
    pub fn new(id: &str) -> Self {
        MockModel {
            value: json!({
                "id": id,
                "canonical_slug": id,
                "name": id,
                "created": 1_700_000_000u64,
                "description": "A model of the stand-in.",
                "context_length": 128_000,
                "architecture": {
                    "modality": "text->text",
                    "input_modalities": ["text"],
                    "output_modalities": ["text"],
                    "tokenizer": "Other",
                    "instruct_type": null
                },
                "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
                "top_provider": {"context_length": 128_000, "max_completion_tokens": 16_384, "is_moderated": false},
                "per_request_limits": null,
                "supported_parameters": ["max_tokens", "temperature"],
                "default_parameters": {},
                "expiration_date": null
            }),
        }
    }

    /// `context_length` (and `top_provider.context_length`).
    pub fn context_length(mut self, tokens: u64) -> Self {
        self.value["context_length"] = json!(tokens);
        self.value["top_provider"]["context_length"] = json!(tokens);
        self
    }

    /// `top_provider.max_completion_tokens`.
    pub fn max_completion_tokens(mut self, tokens: u64) -> Self {
        self.value["top_provider"]["max_completion_tokens"] = json!(tokens);
        self
    }

    /// `supported_parameters`.
    pub fn supported_parameters<'a>(mut self, params: impl IntoIterator<Item = &'a str>) -> Self {
        self.value["supported_parameters"] = json!(params.into_iter().collect::<Vec<_>>());
        self
    }

    /// `architecture.input_modalities` (and `modality`).
    pub fn input_modalities<'a>(mut self, modalities: impl IntoIterator<Item = &'a str>) -> Self {
        let list: Vec<&str> = modalities.into_iter().collect();
        self.value["architecture"]["modality"] = json!(format!("{}->text", list.join("+")));
        self.value["architecture"]["input_modalities"] = json!(list);
        self
    }

    /// `pricing.prompt` and `pricing.completion`, USD per token as OpenRouter writes them.
    pub fn pricing(mut self, prompt: &str, completion: &str) -> Self {
        self.value["pricing"]["prompt"] = json!(prompt);
        self.value["pricing"]["completion"] = json!(completion);
        self
    }

    /// `pricing.request`, USD per request.
    pub fn request_price(mut self, usd: &str) -> Self {
        self.value["pricing"]["request"] = json!(usd);
        self
    }

    /// `expiration_date` (`YYYY-MM-DD`).
    pub fn expiration_date(mut self, date: &str) -> Self {
        self.value["expiration_date"] = json!(date);
        self
    }

    pub(crate) fn id(&self) -> String {
        self.value["id"].as_str().unwrap_or_default().to_owned()
    }

    pub(crate) fn into_value(self) -> Value {
        self.value
    }
}
