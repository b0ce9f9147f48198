//! What the stack does, as `tracing` spans and events and (feature `metrics`) metrics.
//!
//! Names follow the [OpenTelemetry GenAI semantic conventions] where one exists; the
//! gateway-level facts that have none are the crate's own, under `openrouter.`.
//! No field or label ever holds the API key, a prompt or a completion: models, ids,
//! finish reasons, token counts, cost, statuses and error kinds only.
//!
//! A ground-floor module, beside [`error`](crate::error) and
//! [`extensions`](crate::extensions): it imports nothing else of the crate. The layers
//! that know the facts (retry: each try; fallback: the call; health: breaker transitions,
//! in `health/events.rs`) call it with those facts as plain values: model names, error
//! kinds, counts, durations.
//!
//! # Spans (always on; INFO, target `tower_openrouter::observe`)
//!
//! `openrouter.call`, one per call (the fallback layer), parent of one
//! `openrouter.attempt` per upstream try (the retry layer: first tries and retries):
//!
//! | field | span | value |
//! |---|---|---|
//! | `otel.name` | attempt | `chat openai/gpt-4o` (the GenAI span name: operation and model) |
//! | `otel.kind` | both | `client` |
//! | `otel.status_code` | both | `ERROR` when it failed |
//! | `gen_ai.operation.name` | both | `chat` (`/chat/completions`, `/messages`, `/responses`), `text_completion` (`/completions`) |
//! | `gen_ai.provider.name` | both | `openrouter` |
//! | `server.address` | both | the request URI's host |
//! | `gen_ai.request.model` | attempt | this attempt's model (the chain entry) |
//! | `gen_ai.request.stream` | both | the body's `stream` |
//! | `gen_ai.response.model` | both | the model OpenRouter says answered |
//! | `gen_ai.response.id` | attempt | the response `id` (`gen-...`) |
//! | `gen_ai.response.finish_reasons` | attempt | `stop`, `length`, ... (comma-separated) |
//! | `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` | attempt | `usage` of the response |
//! | `error.type` | both | the [`ErrorKind`] (`rate_limited`, `upstream_unavailable`, ...) |
//! | `http.response.status_code` | attempt | the upstream status |
//! | `openrouter.chain` | call | the chain's name (`default` when the request named none) |
//! | `openrouter.requested_model` | call | the `model` the caller's body asked for |
//! | `openrouter.attempts` | call | failed or skipped attempts before the answer |
//! | `openrouter.fell_back` | call | whether a model after the first answered |
//! | `openrouter.attempt.index` | attempt | position of the model in the chain (0 = primary) |
//! | `openrouter.attempt.retry` | attempt | 0 for a model's first try, 1 for its first retry, ... |
//! | `openrouter.provider` | attempt | the upstream provider OpenRouter picked (`OpenAI`) |
//! | `openrouter.retry_after_ms` | attempt | the `Retry-After` hint of a failure |
//! | `openrouter.cost` | attempt | `usage.cost`: credits (US dollars) billed |
//! | `openrouter.elapsed_ms` | both | time until the answer or the failure |
//! | `openrouter.time_to_first_chunk_ms` | attempt | streams: time until the first content event |
//!
//! For a stream the attempt's timings end when its first content event arrives; its usage
//! and cost come at the end of the stream (the last chat chunk's `usage`, `/messages`'
//! `message_start` and `message_delta`, Responses' `response.completed`). While somebody
//! observes, the stream keeps the attempt's span open until it ends (or the caller drops
//! it) and records them on it then, and in the token and cost histograms below; a stream
//! dropped before its usage came records none.
//!
//! # Events
//!
//! Breaker transitions, from the health tracker (target `tower_openrouter::observe`):
//! WARN `breaker opened` (fields `model`, `reason`: `consecutive_failures`,
//! `failure_ratio`, `low_success_rate`, `probe_failed` or `retry_after`, as
//! [`TripReason`](crate::health::TripReason) names them; `trips`,
//! `cooldown_ms`, `cooldown_until` as an HTTP date), INFO `breaker half-open` (the next
//! request is the probe) and INFO `breaker closed` (the probe succeeded). `breaker opened`
//! and `breaker closed` carry `source`: `local` for this replica's own outcomes, `fleet`
//! for another replica's trip or probe applied from a shared
//! [`HealthStore`](crate::health::HealthStore) (and they move the breaker metrics alike); a
//! cooldown lengthened while open (a longer `Retry-After` or another replica's longer
//! cooldown) is DEBUG `breaker cooldown lengthened`. The layers' own
//! DEBUG/WARN events (an attempt failed, a retry, a skip) stay as they are.
//!
//! # Metrics (feature `metrics`)
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade, to whatever recorder the
//! application installed (nothing is recorded without one); `describe_metrics` gives
//! their units and help texts to the recorder.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `gen_ai.client.operation.duration` | histogram, s | `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model` or `error.type` | one upstream try (a stream: until its first content event) |
//! | `gen_ai.client.token.usage` | histogram, tokens | the same, `gen_ai.token.type` (`input`, `output`) | `usage` of each answer |
//! | `gen_ai.client.operation.time_to_first_chunk` | histogram, s | the same as duration | streams: time to the first content event |
//! | `openrouter.attempts` | counter | `gen_ai.request.model`, `outcome` (`success` or the error kind) | upstream tries |
//! | `openrouter.fallbacks` | counter | `from`, `to` | moves down the chain to a model that is then tried (`from`: the model that failed or was skipped just before) |
//! | `openrouter.retries` | counter | `gen_ai.request.model`, `error.type` | same-model retries |
//! | `openrouter.retry_budget.refusals` | counter | `gen_ai.request.model` | retries the retry budget refused |
//! | `openrouter.cooldown.skips` | counter | `gen_ai.request.model` | attempts skipped because the model was cooling down: upstream calls saved |
//! | `openrouter.breaker.transitions` | counter | `gen_ai.request.model`, `state` (`open`, `half_open`, `closed`) | breaker changes |
//! | `openrouter.breaker.state` | gauge | `gen_ai.request.model` | 0 closed, 1 half-open, 2 open |
//! | `openrouter.model.concurrency_limit` | gauge | `gen_ai.request.model` | the adaptive concurrency limit ([`health::adaptive`](crate::health::adaptive)), set when the model is first seen and at each change |
//! | `openrouter.hedges` | counter | `from`, `to` | hedges sent ([`fallback::hedge`](crate::fallback::hedge)) |
//! | `openrouter.hedge.wins` | counter | `from`, `to` | hedges that produced content first |
//! | `openrouter.hedge_budget.refusals` | counter | `gen_ai.request.model` | hedges the hedge budget refused |
//! | `openrouter.cost` | histogram, USD | `gen_ai.request.model`, `gen_ai.response.model` | `usage.cost` of each answer (its sum is the spend) |
//!
//! ```
//! use tower_openrouter::observe;
//!
//! // The names, for dashboards and alerts.
//! assert_eq!(observe::OPERATION_DURATION, "gen_ai.client.operation.duration");
//! assert_eq!(observe::BREAKER_STATE, "openrouter.breaker.state");
//! ```
//!
//! [OpenTelemetry GenAI semantic conventions]: https://opentelemetry.io/docs/specs/semconv/gen-ai/
//! [`ErrorKind`]: crate::ErrorKind

use std::sync::Arc;

use crate::error::ErrorKind;

mod attempt;
mod call;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
mod names;

pub(crate) use attempt::{record_usage, TryObs};
pub(crate) use call::CallObs;
#[cfg(feature = "metrics")]
pub use metrics::describe_metrics;
pub use names::*;

/// The target of every span and event of this module.
pub(crate) const TARGET: &str = "tower_openrouter::observe";

/// Whether anybody observes: a subscriber takes this module's INFO spans, or (feature
/// `metrics`) a recorder is installed. What only observers need (the finish reasons and
/// `usage` of an answer) is read only then.
pub(crate) fn listening() -> bool {
    if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return true;
    }
    #[cfg(feature = "metrics")]
    return metrics::recording();
    #[cfg(not(feature = "metrics"))]
    false
}

/// The `gen_ai.operation.name` of a request path.
pub(crate) fn operation(path: &str) -> &'static str {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.ends_with("/chat/completions")
        || path.ends_with("/messages")
        || path.ends_with("/responses")
    {
        "chat"
    } else if path.ends_with("/completions") {
        "text_completion"
    } else if path.ends_with("/embeddings") {
        "embeddings"
    } else {
        "other"
    }
}

/// A retry of the same model is about to start.
pub(crate) fn retrying(model: &str, kind: ErrorKind) {
    let _ = (model, kind);
    #[cfg(feature = "metrics")]
    metrics::retry(model, kind);
}

/// A hedge from `from` to `to` went upstream (`won: false`), or answered first (`true`).
pub(crate) fn hedge(from: &Arc<str>, to: &Arc<str>, won: bool) {
    tracing::debug!(
        target: TARGET,
        from = &**from,
        to = &**to,
        won,
        "{}",
        if won { "the hedge answered first" } else { "hedge sent" }
    );
    #[cfg(feature = "metrics")]
    metrics::hedge(from, to, won);
}

/// The hedge budget refused a hedge of `model`.
pub(crate) fn hedge_refused(model: &Arc<str>) {
    tracing::debug!(target: TARGET, model = &**model, "hedge budget exhausted: not hedging");
    #[cfg(feature = "metrics")]
    metrics::hedge_refused(model);
}

/// The adaptive concurrency limit of `model` is now `limit`.
pub(crate) fn concurrency_limit(model: &Arc<str>, limit: u32) {
    let _ = (model, limit);
    #[cfg(feature = "metrics")]
    metrics::concurrency_limit(model, limit);
}

/// The retry budget refused a retry.
pub(crate) fn budget_refused(model: &str, kind: ErrorKind) {
    tracing::debug!(
        target: TARGET,
        model,
        kind = kind.as_str(),
        "retry budget exhausted: not retrying"
    );
    #[cfg(feature = "metrics")]
    metrics::budget_refused(model);
}

#[cfg(test)]
mod tests {
    #[test]
    fn operations() {
        assert_eq!(super::operation("/api/v1/chat/completions"), "chat");
        assert_eq!(super::operation("/api/v1/messages/"), "chat");
        assert_eq!(super::operation("/api/v1/responses"), "chat");
        assert_eq!(super::operation("/api/v1/completions"), "text_completion");
        assert_eq!(super::operation("/api/v1/models"), "other");
    }
}
