//! The metrics (feature `metrics`), through the `metrics` facade.

use std::sync::Arc;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

use super::names::*;
use crate::error::ErrorKind;
use crate::extensions::{UpstreamInfo, Usage};

const PROVIDER: &str = "openrouter";

/// Whether a recorder is installed (globally, or locally for this thread).
///
/// The facade cannot say, but its stand-in for "none" is the zero-sized `NoopRecorder`,
/// and every real recorder holds state: so a zero-sized recorder is taken for none, and
/// the labels (allocations, hashing) are not even built. This keeps the hot path free
/// when the feature is on but nobody records.
pub(crate) fn recording() -> bool {
    metrics::with_recorder(|r| std::mem::size_of_val(r) != 0)
}

/// Gives every metric's unit and help text to the installed recorder (the Prometheus
/// exporter prints them as `# HELP`). Call it once, after installing the recorder.
///
/// ```
/// # #[cfg(feature = "metrics")]
/// tower_openrouter::observe::describe_metrics();
/// ```
pub fn describe_metrics() {
    describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "GenAI operation duration: one upstream try (a stream: until its first content event)."
    );
    describe_histogram!(
        TOKEN_USAGE,
        "Tokens used per answer, by gen_ai.token.type (input, output)."
    );
    describe_histogram!(
        TIME_TO_FIRST_CHUNK,
        Unit::Seconds,
        "Streams: time to the first content event."
    );
    describe_counter!(
        ATTEMPTS,
        "Upstream tries by model and outcome (success or the error kind)."
    );
    describe_counter!(FALLBACKS, "Moves down the model chain, from the model that failed or was skipped to the model tried next.");
    describe_counter!(RETRIES, "Same-model retries.");
    describe_counter!(RETRY_BUDGET_REFUSALS, "Retries the retry budget refused.");
    describe_counter!(
        COOLDOWN_SKIPS,
        "Attempts skipped because the model was cooling down (upstream calls saved)."
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        "Breaker transitions by model and state (open, half_open, closed)."
    );
    describe_gauge!(
        BREAKER_STATE,
        "Breaker state per model: 0 closed, 1 half-open, 2 open."
    );
    describe_gauge!(
        CONCURRENCY_LIMIT,
        "Adaptive concurrency limit per model (attempts in flight it admits)."
    );
    describe_counter!(HEDGES, "Hedges sent: an attempt without content after the hedge delay, raced against the next model.");
    describe_counter!(
        HEDGE_WINS,
        "Hedges that produced content first (the earlier attempt was dropped)."
    );
    describe_counter!(HEDGE_BUDGET_REFUSALS, "Hedges the hedge budget refused.");
    describe_histogram!(
        COST,
        "usage.cost of each answer, in US dollars (its sum is the spend)."
    );
}

pub(crate) fn attempt_ok(
    op: &'static str,
    model: &Arc<str>,
    info: Option<&UpstreamInfo>,
    elapsed: Duration,
    stream: bool,
) {
    if !recording() {
        return;
    }
    counter!(ATTEMPTS, "gen_ai.request.model" => model.clone(), "outcome" => "success")
        .increment(1);
    let answered = info
        .and_then(|i| i.model.clone())
        .unwrap_or_else(|| model.clone());
    let labels = [
        ("gen_ai.operation.name", metrics::SharedString::from(op)),
        ("gen_ai.provider.name", PROVIDER.into()),
        ("gen_ai.request.model", model.clone().into()),
        ("gen_ai.response.model", answered.clone().into()),
    ];
    histogram!(OPERATION_DURATION, &labels).record(elapsed.as_secs_f64());
    if stream {
        histogram!(TIME_TO_FIRST_CHUNK, &labels).record(elapsed.as_secs_f64());
    }
    if let Some(usage) = info.and_then(|i| i.usage) {
        record_usage(labels, model, answered, &usage);
    }
}

/// A stream's `usage`, read at its end (see `classify::watch::usage`).
pub(crate) fn usage(op: &'static str, model: &Arc<str>, answered: &Arc<str>, usage: &Usage) {
    if !recording() {
        return;
    }
    let labels = [
        ("gen_ai.operation.name", metrics::SharedString::from(op)),
        ("gen_ai.provider.name", PROVIDER.into()),
        ("gen_ai.request.model", model.clone().into()),
        ("gen_ai.response.model", answered.clone().into()),
    ];
    record_usage(labels, model, answered.clone(), usage);
}

fn record_usage(
    labels: [(&'static str, metrics::SharedString); 4],
    model: &Arc<str>,
    answered: Arc<str>,
    usage: &Usage,
) {
    for (kind, n) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
    ] {
        if let Some(n) = n {
            let [a, b, c, d] = labels.clone();
            let with_type = [a, b, c, d, ("gen_ai.token.type", kind.into())];
            histogram!(TOKEN_USAGE, &with_type).record(n as f64);
        }
    }
    if let Some(cost) = usage.cost {
        histogram!(COST, "gen_ai.request.model" => model.clone(), "gen_ai.response.model" => answered)
            .record(cost);
    }
}

pub(crate) fn attempt_err(op: &'static str, model: &Arc<str>, kind: ErrorKind, elapsed: Duration) {
    if !recording() {
        return;
    }
    counter!(ATTEMPTS, "gen_ai.request.model" => model.clone(), "outcome" => kind.as_str())
        .increment(1);
    histogram!(
        OPERATION_DURATION,
        "gen_ai.operation.name" => op,
        "gen_ai.provider.name" => PROVIDER,
        "gen_ai.request.model" => model.clone(),
        "error.type" => kind.as_str()
    )
    .record(elapsed.as_secs_f64());
}

pub(crate) fn cooldown_skip(model: Arc<str>) {
    if !recording() {
        return;
    }
    counter!(COOLDOWN_SKIPS, "gen_ai.request.model" => model).increment(1);
}

pub(crate) fn fallback(from: Arc<str>, to: Arc<str>) {
    if !recording() {
        return;
    }
    counter!(FALLBACKS, "from" => from, "to" => to).increment(1);
}

pub(crate) fn retry(model: &str, kind: ErrorKind) {
    if !recording() {
        return;
    }
    counter!(RETRIES, "gen_ai.request.model" => model.to_owned(), "error.type" => kind.as_str())
        .increment(1);
}

pub(crate) fn budget_refused(model: &str) {
    if !recording() {
        return;
    }
    counter!(RETRY_BUDGET_REFUSALS, "gen_ai.request.model" => model.to_owned()).increment(1);
}

/// A breaker transition of `model` to the state named `state` (`open`, `half_open`,
/// `closed`), whose gauge value is `value`.
pub(crate) fn breaker_transition(model: &Arc<str>, state: &'static str, value: f64) {
    if !recording() {
        return;
    }
    counter!(BREAKER_TRANSITIONS, "gen_ai.request.model" => model.clone(), "state" => state)
        .increment(1);
    breaker_state(model, value);
}

/// The adaptive concurrency limit of `model`.
pub(crate) fn concurrency_limit(model: &Arc<str>, limit: u32) {
    if !recording() {
        return;
    }
    gauge!(CONCURRENCY_LIMIT, "gen_ai.request.model" => model.clone()).set(f64::from(limit));
}

/// A hedge from `from` to `to` was sent (`won`: it answered first).
pub(crate) fn hedge(from: &Arc<str>, to: &Arc<str>, won: bool) {
    if !recording() {
        return;
    }
    let name = if won { HEDGE_WINS } else { HEDGES };
    counter!(name, "from" => from.clone(), "to" => to.clone()).increment(1);
}

pub(crate) fn hedge_refused(model: &Arc<str>) {
    if !recording() {
        return;
    }
    counter!(HEDGE_BUDGET_REFUSALS, "gen_ai.request.model" => model.clone()).increment(1);
}

/// The breaker state gauge alone (0 closed, 1 half-open, 2 open).
pub(crate) fn breaker_state(model: &Arc<str>, value: f64) {
    if !recording() {
        return;
    }
    gauge!(BREAKER_STATE, "gen_ai.request.model" => model.clone()).set(value);
}
