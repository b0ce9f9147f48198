//! The request body of one call, rendered for each model from one parse.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::body::{is_messages_endpoint, Edit};
use crate::error::Error;
use crate::routing::window_body;
use crate::JsonBody;

/// The caller's body, indexed once per call (the buffering layer's index is reused), and
/// rendered per model: only the `model` value (and, in hybrid mode, `models`) changes.
///
/// Memory: when the chain's model is the one the body already names, that buffer itself is
/// sent. Otherwise (plain client-side fallback) a body of [`REBASE_AT`] bytes or more for
/// the new model becomes the template for the next one, and
/// [`BodyTemplate::take_rebased`] hands it to the call so it replaces the caller's buffer
/// in the base request: a call holds one copy of a large body, not the caller's plus the
/// current model's. A smaller body is copied from the caller's (cheaper than re-indexing,
/// and small). Hybrid windows and `/messages` fallbacks render from the caller's body.
/// Bodies from this size on replace the caller's buffer when a fallback rewrites them.
pub(crate) const REBASE_AT: usize = 64 * 1024;

pub(crate) struct BodyTemplate {
    json: Option<Result<JsonBody, Error>>,
    /// The index of a body that replaced the template, for the base request.
    rebased: Option<JsonBody>,
}

impl BodyTemplate {
    pub(crate) fn new() -> Self {
        BodyTemplate {
            json: None,
            rebased: None,
        }
    }

    /// The body (with its index) the last render made the new template, once: the caller
    /// puts it into the base request in place of the old one.
    pub(crate) fn take_rebased(&mut self) -> Option<JsonBody> {
        self.rebased.take()
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
            Some(w) => window_body(json, model, w, is_messages_endpoint(base.uri().path())),
            None if json.model_is(model) => Ok(json.bytes().clone()),
            None if json.bytes().len() < REBASE_AT => json.with_model(model),
            None => {
                // Index computed while writing: no second parse.
                let next = json.edited(&[Edit::SetString("model", model)]);
                let bytes = next.bytes().clone();
                self.rebased = Some(next.clone());
                self.json = Some(Ok(next));
                Ok(bytes)
            }
        }
    }
}
