//! OpenRouter's server-side model lists, `models` and the `/api/v1/messages` `fallbacks`:
//! their limit and the one place that writes them, for both native routing (a configured
//! list) and the fallback layer's hybrid windows (a list per attempt).

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};

use crate::body::Edit;
use crate::Error;
use crate::JsonBody;

/// OpenRouter's limit on `models` and on `/messages` `fallbacks`: also the widest
/// server-side window of the fallback layer's hybrid mode.
pub const MAX_SERVER_MODELS: usize = 3;

/// `value` as a JSON value ready to splice into a body.
pub(crate) fn raw<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    // Strings, lists of strings, fallback entries and `ProviderPreferences` always
    // serialize (no maps with non-string keys, no failing `Serialize` impls); a
    // non-finite float becomes `null`.
    to_raw_value(value).unwrap_or_else(|_| to_raw_value(&()).expect("null serializes"))
}

/// One entry of `/messages` `fallbacks`: `{"model": "<id>"}`.
#[derive(Serialize)]
struct FallbackEntry<'a> {
    model: &'a str,
}

/// `fallbacks` for `models`: `[{"model": a}, {"model": b}, ..]`.
pub(crate) fn fallbacks_raw<'a>(models: impl IntoIterator<Item = &'a str>) -> Box<RawValue> {
    raw(&models
        .into_iter()
        .map(|model| FallbackEntry { model })
        .collect::<Vec<_>>())
}

/// The body of one hybrid-mode attempt: `model` set to `model` and the window (`model`
/// first) handed to OpenRouter. On `/messages`, which takes no `models`, the window's
/// other models go into `fallbacks` (none: any `fallbacks` of the caller's is removed);
/// elsewhere the whole window is `models`, in one pass over the body.
pub(crate) fn window_body(
    json: &JsonBody,
    model: &str,
    window: &[Arc<str>],
    messages: bool,
) -> Result<Bytes, Error> {
    if !messages {
        return json.with_model_and_models(model, window.iter().map(|m| &**m));
    }
    if window.len() < 2 {
        return Ok(json.edit(&[Edit::SetString("model", model), Edit::Remove("fallbacks")]));
    }
    let fallbacks = fallbacks_raw(window[1..].iter().map(|m| &**m));
    Ok(json.edit(&[
        Edit::SetString("model", model),
        Edit::Set("fallbacks", &fallbacks),
    ]))
}
