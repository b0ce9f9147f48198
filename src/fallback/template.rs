//! The request body of one call, rendered for each model from one parse.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::body::{Edit, JsonBody};
use crate::error::Error;

/// The caller's body, indexed once per call (the buffering layer's index is reused), and
/// rendered per model: only the `model` value (and, in hybrid mode, `models`) changes.
///
/// Memory: every rendering is made from the caller's buffer, which the call keeps anyway
/// (it shares it with the request by reference count); a rendered copy lives only as long
/// as its attempt. When the chain's model is the one the caller wrote, the caller's buffer
/// itself is sent.
pub(crate) struct BodyTemplate {
    json: Option<Result<JsonBody, Error>>,
}

impl BodyTemplate {
    pub(crate) fn new() -> Self {
        BodyTemplate { json: None }
    }

    /// The body for `model`, with `models` set to `window` in hybrid mode.
    pub(crate) fn render(
        &mut self,
        base: &Request<Full<Bytes>>,
        model: &str,
        window: Option<&[Arc<str>]>,
    ) -> Result<Bytes, Error> {
        let json = self
            .json
            .get_or_insert_with(|| JsonBody::from_request(base))
            .as_ref()
            .map_err(Clone::clone)?;
        match window {
            Some(w) if is_messages_api(base) => {
                // `/messages` takes `fallbacks: [{"model": ..}]` (the models after the
                // first), never `models`.
                if w.len() < 2 {
                    return Ok(
                        json.edit(&[Edit::SetString("model", model), Edit::Remove("fallbacks")])
                    );
                }
                let list: Vec<Fallback<'_>> =
                    w[1..].iter().map(|m| Fallback { model: m }).collect();
                let raw = serde_json::value::to_raw_value(&list)
                    .map_err(|e| Error::new(crate::ErrorKind::InvalidBody).with_source(e))?;
                Ok(json.edit(&[
                    Edit::SetString("model", model),
                    Edit::Set("fallbacks", &raw),
                ]))
            }
            Some(w) => json.with_model_and_models(model, w.iter().map(|m| &**m)),
            None if json.model().as_deref() == Some(model) => Ok(json.bytes().clone()),
            None => json.with_model(model),
        }
    }
}

#[derive(serde::Serialize)]
struct Fallback<'a> {
    model: &'a str,
}

fn is_messages_api<T>(req: &Request<T>) -> bool {
    let path = req.uri().path();
    path.strip_suffix('/')
        .unwrap_or(path)
        .ends_with("/messages")
}
