//! The span of one upstream try (the retry layer: a model's first try and each retry).

use std::sync::Arc;

use http::{HeaderMap, Request, Response};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Span;

use crate::error::Error;
use crate::extensions::{Attempt, JsonBody, UpstreamInfo};

/// One try: its span, and what its metrics need.
pub(crate) struct TryObs {
    span: Span,
    started: Option<Instant>,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    model: Option<Arc<str>>,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    op: &'static str,
}

impl TryObs {
    pub(crate) fn start<B>(req: &Request<B>) -> Self {
        let attempt = req.extensions().get::<Attempt>();
        let op = super::operation(req.uri().path());
        let span = tracing::info_span!(
            target: super::TARGET,
            "openrouter.attempt",
            otel.name = Empty,
            otel.kind = "client",
            otel.status_code = Empty,
            gen_ai.operation.name = op,
            gen_ai.provider.name = "openrouter",
            server.address = req.uri().host(),
            gen_ai.request.model = attempt.map(|a| &*a.model),
            gen_ai.request.stream = Empty,
            openrouter.attempt.index = attempt.map(|a| a.index as u64),
            openrouter.attempt.retry = attempt.map(|a| a.retry),
            gen_ai.response.model = Empty,
            gen_ai.response.id = Empty,
            gen_ai.response.finish_reasons = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            openrouter.provider = Empty,
            openrouter.cost = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
            openrouter.retry_after_ms = Empty,
            openrouter.elapsed_ms = Empty,
            openrouter.time_to_first_chunk_ms = Empty,
        );
        let enabled = !span.is_disabled();
        if enabled {
            if let Some(a) = attempt {
                span.record("otel.name", format!("{op} {}", a.model));
            }
            let stream = req
                .extensions()
                .get::<JsonBody>()
                .and_then(|j| j.raw("stream"));
            if let Some(stream) = stream {
                span.record("gen_ai.request.stream", stream == "true");
            }
        }
        // Neither a span nor a recorder: nothing to time or label.
        let started = (enabled || recording()).then(Instant::now);
        TryObs {
            model: attempt
                .filter(|_| started.is_some())
                .map(|a| a.model.clone()),
            started,
            span,
            op,
        }
    }

    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records an answer.
    pub(crate) fn finish_ok<B>(&self, resp: &Response<B>) {
        // Neither a span nor a recorder: nothing to read.
        let Some(started) = self.started else { return };
        let elapsed = started.elapsed();
        let info = resp.extensions().get::<UpstreamInfo>();
        let stream = is_event_stream(resp.headers());
        if !self.span.is_disabled() {
            self.record_success(resp.status().as_u16(), info, stream, elapsed);
        }
        #[cfg(feature = "metrics")]
        if let Some(model) = &self.model {
            super::metrics::attempt_ok(self.op, model, info, elapsed, stream);
        }
    }

    /// Records a failure.
    pub(crate) fn finish_err(&self, e: &Error) {
        let elapsed = self.started.map(|s| s.elapsed()).unwrap_or_default();
        if !self.span.is_disabled() {
            self.record_failure(e, elapsed);
        }
        #[cfg(feature = "metrics")]
        if let Some(model) = &self.model {
            if e.kind() == crate::error::ErrorKind::ModelCoolingDown {
                // Rejected by the health layer: no upstream call, one saved.
                super::metrics::cooldown_skip(model.clone());
            } else {
                super::metrics::attempt_err(self.op, model, e.kind(), elapsed);
            }
        }
    }

    fn record_success(
        &self,
        status: u16,
        info: Option<&UpstreamInfo>,
        stream: bool,
        elapsed: std::time::Duration,
    ) {
        let s = &self.span;
        s.record("http.response.status_code", status);
        let ms = elapsed.as_millis() as u64;
        s.record("openrouter.elapsed_ms", ms);
        if stream {
            s.record("openrouter.time_to_first_chunk_ms", ms);
        }
        let Some(info) = info else { return };
        if let Some(m) = &info.model {
            s.record("gen_ai.response.model", &**m);
        }
        if let Some(id) = &info.id {
            s.record("gen_ai.response.id", &**id);
        }
        if let Some(p) = &info.provider {
            s.record("openrouter.provider", &**p);
        }
        if !info.finish_reasons.is_empty() {
            let reasons: Vec<&str> = info.finish_reasons.iter().map(|r| &**r).collect();
            s.record("gen_ai.response.finish_reasons", reasons.join(","));
        }
        if let Some(u) = &info.usage {
            record_usage(s, u);
        }
    }

    fn record_failure(&self, e: &Error, elapsed: std::time::Duration) {
        let s = &self.span;
        s.record("otel.status_code", "ERROR");
        s.record("error.type", e.kind().as_str());
        if let Some(status) = e.status() {
            s.record("http.response.status_code", status.as_u16());
        }
        if let Some(ra) = e.retry_after() {
            s.record("openrouter.retry_after_ms", ra.as_millis() as u64);
        }
        s.record("openrouter.elapsed_ms", elapsed.as_millis() as u64);
    }
}

/// Records an answer's `usage` on its attempt's span.
pub(crate) fn record_usage(s: &Span, u: &crate::extensions::Usage) {
    if let Some(n) = u.input_tokens {
        s.record("gen_ai.usage.input_tokens", n);
    }
    if let Some(n) = u.output_tokens {
        s.record("gen_ai.usage.output_tokens", n);
    }
    if let Some(c) = u.cost {
        s.record("openrouter.cost", c);
    }
}

fn recording() -> bool {
    #[cfg(feature = "metrics")]
    return super::metrics::recording();
    #[cfg(not(feature = "metrics"))]
    false
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}
