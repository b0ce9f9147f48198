//! OpenRouter's server-side model lists, `models` and the `/api/v1/messages` `fallbacks`:
//! their limit and the one place that writes them, for both native routing (a configured
//! list) and the fallback layer's hybrid windows (a list per attempt).

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::value::{to_raw_value, RawValue};

use crate::body::{replace_body, Edit};
use crate::extensions::InjectedModels;
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
#[derive(Serialize, Deserialize)]
struct FallbackEntry<'a> {
    #[serde(borrow)]
    model: std::borrow::Cow<'a, str>,
}

/// `fallbacks` for `models`: `[{"model": a}, {"model": b}, ..]`.
pub(crate) fn fallbacks_raw<'a>(models: impl IntoIterator<Item = &'a str>) -> Box<RawValue> {
    raw(&models
        .into_iter()
        .map(|model| FallbackEntry {
            model: model.into(),
        })
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

/// `models` (`["a", "b"]`) with only the models `keep` accepts; `None` when all are kept
/// (or it is not a list of ids), `Some(None)` when none is left.
pub(crate) fn retain_models(
    models: &[u8],
    keep: impl Fn(&str) -> bool,
) -> Option<Option<Box<RawValue>>> {
    let ids: Vec<std::borrow::Cow<'_, str>> = serde_json::from_slice(models).ok()?;
    let kept: Vec<&str> = ids.iter().map(|m| &**m).filter(|m| keep(m)).collect();
    (kept.len() != ids.len()).then(|| (!kept.is_empty()).then(|| raw(&kept)))
}

/// `/messages` `fallbacks` (`[{"model": "a"}]`) with only the models `keep` accepts, as
/// [`retain_models`].
pub(crate) fn retain_fallbacks(
    fallbacks: &[u8],
    keep: impl Fn(&str) -> bool,
) -> Option<Option<Box<RawValue>>> {
    let entries: Vec<FallbackEntry<'_>> = serde_json::from_slice(fallbacks).ok()?;
    let kept: Vec<&str> = entries
        .iter()
        .map(|e| &*e.model)
        .filter(|m| keep(m))
        .collect();
    (kept.len() != entries.len()).then(|| (!kept.is_empty()).then(|| fallbacks_raw(kept)))
}

/// Drops from the lists the native routing layer injected ([`InjectedModels`]: `models`,
/// `/messages` `fallbacks`; never the caller's own) every model `keep` refuses; a list
/// left empty is removed. Only those members change (every other byte is kept), and the
/// new index goes into the request extensions. Called by the fallback layer with its
/// chain's catalog filter: native routing sits outside the chain selection.
pub(crate) fn retain_injected(req: &mut Request<Full<Bytes>>, keep: impl Fn(&str) -> bool) {
    let Some(injected) = req.extensions().get::<InjectedModels>().copied() else {
        return;
    };
    let Ok(json) = JsonBody::from_request(req) else {
        return;
    };
    let models = injected
        .models
        .then(|| retain_models(json.raw_bytes("models")?, &keep))
        .flatten();
    let fallbacks = injected
        .fallbacks
        .then(|| retain_fallbacks(json.raw_bytes("fallbacks")?, &keep))
        .flatten();
    let mut edits = Vec::with_capacity(2);
    for (key, list) in [("models", &models), ("fallbacks", &fallbacks)] {
        match list {
            Some(Some(v)) => edits.push(Edit::Set(key, v)),
            Some(None) => edits.push(Edit::Remove(key)),
            None => {}
        }
    }
    if edits.is_empty() {
        return;
    }
    tracing::debug!("injected server-side models the catalog rules out for this chain dropped");
    let edited = json.edited(&edits);
    replace_body(req, edited.bytes().clone());
    req.extensions_mut().insert(edited);
}
