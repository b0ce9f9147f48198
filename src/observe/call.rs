//! The span of one call (the fallback layer's walk over the chain).

use std::sync::Arc;

use http::Request;
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Span;

use crate::error::Error;
use crate::extensions::JsonBody;

/// One call: its span, and the model the walk just left (the `from` of a fallback).
pub(crate) struct CallObs {
    span: Span,
    /// Set when the span is enabled (nothing else needs the time).
    started: Option<Instant>,
    left: Option<Arc<str>>,
}

impl CallObs {
    pub(crate) fn new<B>(req: &Request<B>, chain: Option<&str>) -> Self {
        let span = tracing::info_span!(
            target: super::TARGET,
            "openrouter.call",
            otel.kind = "client",
            otel.status_code = Empty,
            gen_ai.operation.name = super::operation(req.uri().path()),
            gen_ai.provider.name = "openrouter",
            server.address = req.uri().host(),
            openrouter.chain = chain.unwrap_or("default"),
            openrouter.requested_model = Empty,
            gen_ai.request.stream = Empty,
            gen_ai.response.model = Empty,
            openrouter.attempts = Empty,
            openrouter.fell_back = Empty,
            error.type = Empty,
            openrouter.elapsed_ms = Empty,
        );
        let mut started = None;
        if !span.is_disabled() {
            started = Some(Instant::now());
            if let Some(json) = req.extensions().get::<JsonBody>() {
                if let Some(model) = json.model() {
                    span.record("openrouter.requested_model", &*model);
                }
                if let Some(stream) = json.raw("stream") {
                    span.record("gen_ai.request.stream", stream == "true");
                }
            }
        }
        CallObs {
            span,
            started,
            left: None,
        }
    }

    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// An attempt of `model` is sent: a fallback when the walk left another model before.
    pub(crate) fn sending(&mut self, model: &Arc<str>) {
        if let Some(from) = self.left.take() {
            if from != *model {
                tracing::debug!(target: super::TARGET, from = &*from, to = &**model, "falling back");
                #[cfg(feature = "metrics")]
                super::metrics::fallback(from, model.clone());
            }
        }
    }

    /// The attempt of `model` failed: the walk moves on.
    pub(crate) fn left(&mut self, model: &Arc<str>) {
        self.left = Some(model.clone());
    }

    /// `model` was skipped, cooling down, without an upstream call.
    pub(crate) fn skipped(&mut self, model: &Arc<str>) {
        #[cfg(feature = "metrics")]
        super::metrics::cooldown_skip(model.clone());
        self.left(model);
    }

    fn elapsed(&self) {
        if let Some(s) = self.started {
            self.span
                .record("openrouter.elapsed_ms", s.elapsed().as_millis() as u64);
        }
    }

    /// The call was answered by `model`, after `attempts` failed or skipped attempts;
    /// `fell_back`: a model after the chain's first answered.
    pub(crate) fn served(&self, model: &str, attempts: usize, fell_back: bool) {
        if self.span.is_disabled() {
            return;
        }
        self.span.record("gen_ai.response.model", model);
        self.span.record("openrouter.attempts", attempts as u64);
        self.span.record("openrouter.fell_back", fell_back);
        self.elapsed();
    }

    pub(crate) fn failed(&self, err: &Error) {
        if self.span.is_disabled() {
            return;
        }
        self.span.record("otel.status_code", "ERROR");
        self.span.record("error.type", err.kind().as_str());
        self.span
            .record("openrouter.attempts", err.attempts().len() as u64);
        self.elapsed();
    }
}
