//! Which chain a request uses: the named chain it asks for, else the chain its `model`
//! selects (by name or by first model), else its model first and the default chain's
//! fallbacks after it (or a refusal, when so configured).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use super::chain::{Chain, ChainModel, ChainName, Chains};
use super::layer::Shared;
use crate::error::{Error, ErrorKind};
use crate::JsonBody;

/// What the fallback layer does with a request whose `model` is neither a chain's name
/// nor a chain's first model (set with
/// [`FallbackLayer::unlisted_model`](super::FallbackLayer::unlisted_model)).
///
/// ```
/// use tower_openrouter::fallback::{FallbackLayer, UnlistedModel};
///
/// // Only the configured chains may be used: any other model is refused, no call made.
/// let layer = FallbackLayer::new(["openai/gpt-4o", "anthropic/claude-3.5-sonnet"])
///     .unlisted_model(UnlistedModel::Reject);
/// # let _ = layer;
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnlistedModel {
    /// The caller's model is tried first, then the default chain's fallbacks (its models
    /// after the first, without the caller's model). The caller's choice is never
    /// silently replaced.
    #[default]
    TryFirst,
    /// The request fails with [`ErrorKind::ModelNotAllowed`] before any upstream call.
    Reject,
    /// The default chain is used as it is: the caller's model is replaced by the chain's
    /// (a gateway that maps every request onto its own chain). [`ServedBy::caller_model`]
    /// still says what the caller asked for.
    ///
    /// [`ServedBy::caller_model`]: super::ServedBy::caller_model
    UseDefaultChain,
}

/// The chain of one call.
pub(crate) struct Selected {
    /// The chain's name, when a named chain is used.
    pub(crate) name: Option<Arc<str>>,
    pub(crate) chain: Chain,
    /// The `model` of the caller's body.
    pub(crate) caller_model: Option<Arc<str>>,
}

/// Whether the request names a chain explicitly (the [`ChainName`] extension or the
/// configured header).
pub(crate) fn names_chain<T>(shared: &Shared, req: &Request<T>) -> bool {
    req.extensions().get::<ChainName>().is_some()
        || shared
            .header
            .as_ref()
            .is_some_and(|h| req.headers().contains_key(h))
}

/// Removes the chain header (it never goes upstream).
pub(crate) fn strip_chain_header<T>(shared: &Shared, req: &mut Request<T>) {
    if let Some(h) = &shared.header {
        req.headers_mut().remove(h);
    }
}

/// Finds the request's chain: the [`ChainName`] extension, else the configured header,
/// else what the body's `model` selects ([`by_model`]), else the default chain. The header
/// is removed from the request either way.
/// `endpoint`: the chain configured for the request's endpoint
/// ([`FallbackLayer::endpoint_chain`](super::FallbackLayer::endpoint_chain)), which takes
/// the default chain's place.
pub(crate) fn select_chain(
    shared: &Shared,
    req: &mut Request<Full<Bytes>>,
    endpoint: Option<&Arc<str>>,
) -> Result<Selected, Error> {
    let header = shared
        .header
        .as_ref()
        .and_then(|h| req.headers_mut().remove(h));
    let caller_model = caller_model(req);
    let (name, chain) = if let Some(n) = req.extensions().get::<ChainName>() {
        lookup(&shared.chains, n.as_str())?
    } else if let Some(value) = header {
        let name = value.to_str().map_err(|_| {
            Error::new(ErrorKind::UnknownChain).with_detail("the chain header is not visible ASCII")
        })?;
        lookup(&shared.chains, name)?
    } else {
        let default = match endpoint {
            Some(name) => Some(lookup(&shared.chains, name)?),
            None => None,
        };
        match &caller_model {
            Some(model) => by_model(&shared.chains, model, shared.unlisted, default)?,
            None => or_default_chain(&shared.chains, default)?,
        }
    };
    Ok(Selected {
        name,
        chain,
        caller_model,
    })
}

/// The body's `model` (a non-empty string), from the buffering layer's index.
fn caller_model(req: &Request<Full<Bytes>>) -> Option<Arc<str>> {
    let json = JsonBody::from_request(req).ok()?;
    let model = json.model()?;
    (!model.is_empty()).then(|| Arc::from(&*model))
}

/// The model-only request of a non-generation endpoint (e.g. embeddings): its `model`,
/// for the [`Attempt`](crate::Attempt) of a pass-through call. `None` for a GET.
pub(crate) fn passthrough_model(req: &Request<Full<Bytes>>) -> Option<Arc<str>> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return None;
    }
    caller_model(req)
}

/// A chain and its name (`None`: the default chain).
type Found = (Option<Arc<str>>, Chain);

/// The chain a caller's `model` selects: a chain of that name (an alias, as LiteLLM users
/// write `"model": "primary"`), else the default chain (or `endpoint`'s chain, which takes
/// its place) or a named one (sorted by name) whose first model it is, else what
/// [`UnlistedModel`] says.
pub(crate) fn by_model(
    chains: &Chains,
    model: &str,
    unlisted: UnlistedModel,
    endpoint: Option<Found>,
) -> Result<Found, Error> {
    if let Some((k, c)) = chains.named_entry(model) {
        return Ok((Some(k.clone()), c.clone()));
    }
    let default = match &endpoint {
        Some((_, c)) => Some(c),
        None => chains.default_chain(),
    };
    if default.is_some_and(|d| head_is(d, model)) {
        return or_default_chain(chains, endpoint);
    }
    for name in chains.names() {
        if let Some((k, c)) = chains.named_entry(name).filter(|(_, c)| head_is(c, model)) {
            return Ok((Some(k.clone()), c.clone()));
        }
    }
    match unlisted {
        UnlistedModel::TryFirst => {
            let name = endpoint.as_ref().and_then(|(n, _)| n.clone());
            Ok((name, model_first(model, default)))
        }
        UnlistedModel::UseDefaultChain => or_default_chain(chains, endpoint),
        UnlistedModel::Reject => Err(Error::new(ErrorKind::ModelNotAllowed).with_detail(format!(
            "{:?} is neither a configured chain nor a chain's first model",
            crate::error::truncate(model, 96).0
        ))),
    }
}

fn head_is(chain: &Chain, model: &str) -> bool {
    chain.models().first().is_some_and(|m| m.model() == model)
}

/// `model`, then the default chain's fallbacks (its models after the first), without
/// `model` repeated.
fn model_first(model: &str, default: Option<&Chain>) -> Chain {
    let rest = default
        .into_iter()
        .flat_map(|d| d.models().iter().skip(1))
        .filter(|m| m.model() != model)
        .cloned();
    Chain::new(std::iter::once(ChainModel::new(model)).chain(rest))
}

/// `endpoint`'s chain when there is one, else the default chain.
fn or_default_chain(chains: &Chains, endpoint: Option<Found>) -> Result<Found, Error> {
    if let Some(found) = endpoint {
        return Ok(found);
    }
    match chains.default_chain() {
        Some(c) => Ok((None, c.clone())),
        None => Err(Error::new(ErrorKind::UnknownChain)
            .with_detail("the request names no chain and there is no default chain")),
    }
}

fn lookup(chains: &Chains, name: &str) -> Result<Found, Error> {
    match chains.named_entry(name) {
        Some((k, c)) => Ok((Some(k.clone()), c.clone())),
        None => Err(Error::new(ErrorKind::UnknownChain).with_detail(format!(
            "no chain named {:?}; configured: {}",
            crate::error::truncate(name, 64).0,
            chains.names().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains() -> Chains {
        Chains::new(["a/head", "b/second", "c/third"])
            .with_chain("coding", ["d/coder", "b/second"])
            .with_chain("vision", ["e/eyes"])
    }

    fn ids(c: &Chain) -> Vec<&str> {
        c.iter().map(|m| m.model()).collect()
    }

    #[test]
    fn an_alias_or_a_head_selects_its_chain() {
        let c = chains();
        let (name, chain) = by_model(&c, "coding", UnlistedModel::Reject, None).unwrap();
        assert_eq!(name.as_deref(), Some("coding"));
        assert_eq!(ids(&chain), ["d/coder", "b/second"]);
        let (name, chain) = by_model(&c, "a/head", UnlistedModel::Reject, None).unwrap();
        assert_eq!(name, None);
        assert_eq!(ids(&chain), ["a/head", "b/second", "c/third"]);
        let (name, chain) = by_model(&c, "e/eyes", UnlistedModel::Reject, None).unwrap();
        assert_eq!(name.as_deref(), Some("vision"));
        assert_eq!(ids(&chain), ["e/eyes"]);
    }

    #[test]
    fn another_model_goes_first_then_the_default_fallbacks() {
        let c = chains();
        let (name, chain) = by_model(&c, "z/other", UnlistedModel::TryFirst, None).unwrap();
        assert_eq!(name, None);
        assert_eq!(ids(&chain), ["z/other", "b/second", "c/third"]);
        // A model from the middle of the chain is not repeated.
        let (_, chain) = by_model(&c, "c/third", UnlistedModel::TryFirst, None).unwrap();
        assert_eq!(ids(&chain), ["c/third", "b/second"]);
        let (_, chain) = by_model(&c, "z/other", UnlistedModel::UseDefaultChain, None).unwrap();
        assert_eq!(ids(&chain), ["a/head", "b/second", "c/third"]);
    }

    #[test]
    fn a_refused_model_is_typed() {
        let e = by_model(&chains(), "evil/model", UnlistedModel::Reject, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelNotAllowed);
        assert!(e.to_string().contains("evil/model"));
    }
}
