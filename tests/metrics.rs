//! Metrics (feature `metrics`) of a scripted outage, with `metrics-util`'s debugging
//! recorder: exact counts per model and outcome, fallbacks, retries, skips, breaker
//! transitions and state, token usage and cost.
#![cfg(all(feature = "mock", feature = "metrics"))]

use std::collections::BTreeMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Layer, ServiceExt};
use tower_openrouter::fallback::HedgePolicy;
use tower_openrouter::health::{AdaptiveConfig, HealthConfig};
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::{observe, OpenRouterLayer, RetryPolicy};

const A: &str = "anthropic/claude-sonnet-4.5";
const B: &str = "openai/gpt-4o";

/// `name{k=v,...}` (labels sorted) -> value, histograms as their values.
#[derive(Debug, Default)]
struct Seen {
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
    histograms: BTreeMap<String, Vec<f64>>,
}

fn seen(snapshotter: &Snapshotter) -> Seen {
    let mut out = Seen::default();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        match value {
            DebugValue::Counter(n) => {
                out.counters.insert(name, n);
            }
            DebugValue::Gauge(g) => {
                out.gauges.insert(name, g.into_inner());
            }
            DebugValue::Histogram(h) => {
                out.histograms
                    .insert(name, h.into_iter().map(|v| v.into_inner()).collect());
            }
        }
    }
    out
}

fn request() -> http::Request<String> {
    http::Request::post("https://openrouter.ai/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"{A}","messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_outage_trip_fallback_and_recovery_counted_exactly() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let openrouter = MockOpenRouter::new();
    openrouter.model(A).respond(Reply::status(500));
    openrouter.model(B).respond(Reply::delay(
        Duration::from_millis(200),
        Reply::ok().usage(10, 5, 0.001),
    ));
    let layer = OpenRouterLayer::builder()
        .chain([A, B])
        .max_retries(1)
        .retry_policy(RetryPolicy::new().max_retries(1).no_budget())
        .health_config(
            HealthConfig::default()
                .consecutive_failures(2)
                .without_failure_ratio()
                .cooldown(Duration::from_secs(10))
                .jitter(0.0),
        )
        .build()
        .unwrap();
    let svc = layer.layer(openrouter.clone());

    // 1: A fails, is retried, fails again and trips; B answers.
    // 2: A is cooling down: skipped; B answers.
    svc.clone().oneshot(request()).await.unwrap();
    svc.clone().oneshot(request()).await.unwrap();
    // 3: A's cooldown is over and it recovered: the probe closes its breaker.
    tokio::time::advance(Duration::from_secs(10)).await;
    openrouter.model(A).respond(Reply::ok());
    svc.clone().oneshot(request()).await.unwrap();

    let m = seen(&snapshotter);
    let counters: Vec<(&str, u64)> = m.counters.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        counters,
        [
            (
                "openrouter.attempts{gen_ai.request.model=anthropic/claude-sonnet-4.5,outcome=provider_error}",
                2
            ),
            (
                "openrouter.attempts{gen_ai.request.model=anthropic/claude-sonnet-4.5,outcome=success}",
                1
            ),
            (
                "openrouter.attempts{gen_ai.request.model=openai/gpt-4o,outcome=success}",
                2
            ),
            (
                "openrouter.breaker.transitions{gen_ai.request.model=anthropic/claude-sonnet-4.5,state=closed}",
                1
            ),
            (
                "openrouter.breaker.transitions{gen_ai.request.model=anthropic/claude-sonnet-4.5,state=half_open}",
                1
            ),
            (
                "openrouter.breaker.transitions{gen_ai.request.model=anthropic/claude-sonnet-4.5,state=open}",
                1
            ),
            (
                "openrouter.cooldown.skips{gen_ai.request.model=anthropic/claude-sonnet-4.5}",
                1
            ),
            (
                "openrouter.fallbacks{from=anthropic/claude-sonnet-4.5,to=openai/gpt-4o}",
                2
            ),
            (
                "openrouter.retries{error.type=provider_error,gen_ai.request.model=anthropic/claude-sonnet-4.5}",
                1
            ),
        ]
    );
    assert_eq!(
        m.gauges
            .get("openrouter.breaker.state{gen_ai.request.model=anthropic/claude-sonnet-4.5}"),
        Some(&0.0)
    );

    let common = |model: &str| {
        format!("gen_ai.operation.name=chat,gen_ai.provider.name=openrouter,gen_ai.request.model={model},gen_ai.response.model={model}")
    };
    let h = |name: &str, labels: String| m.histograms.get(&format!("{name}{{{labels}}}")).cloned();
    // B's answers take 200 ms (the stand-in's delay), A's probe none.
    assert_eq!(
        h(observe::OPERATION_DURATION, common(B)),
        Some(vec![0.2, 0.2])
    );
    assert_eq!(h(observe::OPERATION_DURATION, common(A)), Some(vec![0.0]));
    assert_eq!(
        h(
            observe::OPERATION_DURATION,
            format!("error.type=provider_error,gen_ai.operation.name=chat,gen_ai.provider.name=openrouter,gen_ai.request.model={A}")
        )
        .map(|v| v.len()),
        Some(2)
    );
    let tokens = |model: &str, kind: &str| {
        h(
            observe::TOKEN_USAGE,
            format!("{},gen_ai.token.type={kind}", common(model)),
        )
    };
    assert_eq!(tokens(B, "input"), Some(vec![10.0, 10.0]));
    assert_eq!(tokens(B, "output"), Some(vec![5.0, 5.0]));
    assert_eq!(tokens(A, "input"), Some(vec![10.0]));
    assert_eq!(
        h(
            observe::COST,
            format!("gen_ai.request.model={B},gen_ai.response.model={B}")
        ),
        Some(vec![0.001, 0.001])
    );
    // No stream, no time to first chunk; no budget, no refusal.
    assert!(m
        .histograms
        .keys()
        .all(|k| !k.starts_with(observe::TIME_TO_FIRST_CHUNK)));
    assert!(m
        .counters
        .keys()
        .all(|k| !k.starts_with(observe::RETRY_BUDGET_REFUSALS)));
}

#[tokio::test(start_paused = true)]
async fn budget_refusals_and_time_to_first_chunk() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let openrouter = MockOpenRouter::new();
    openrouter.model(A).respond(Reply::status(500));
    openrouter.model(B).respond(Reply::delay(
        Duration::from_millis(300),
        Reply::stream(["a", "b"]),
    ));
    // A budget that allows no retry at all.
    let layer = OpenRouterLayer::builder()
        .chain([A, B])
        .retry_policy(
            RetryPolicy::new()
                .max_retries(2)
                .budget(Duration::from_secs(1), 0, 0.0),
        )
        .build()
        .unwrap();
    let req = http::Request::post("https://openrouter.ai/api/v1/chat/completions")
        .body(format!(r#"{{"model":"{A}","messages":[],"stream":true}}"#))
        .unwrap();
    layer.layer(openrouter.clone()).oneshot(req).await.unwrap();

    let m = seen(&snapshotter);
    assert_eq!(
        m.counters.get(&format!(
            "openrouter.retry_budget.refusals{{gen_ai.request.model={A}}}"
        )),
        Some(&1)
    );
    assert!(m.counters.keys().all(|k| !k.starts_with(observe::RETRIES)));
    let ttfc = format!(
        "{}{{gen_ai.operation.name=chat,gen_ai.provider.name=openrouter,gen_ai.request.model={B},gen_ai.response.model={B}}}",
        observe::TIME_TO_FIRST_CHUNK
    );
    assert_eq!(m.histograms.get(&ttfc), Some(&vec![0.3]));
}

#[test]
fn nothing_is_recorded_without_a_recorder_and_descriptions_reach_one() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, observe::describe_metrics);
    // Described only: no values yet, so nothing in the snapshot.
    assert!(snapshotter.snapshot().into_vec().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_is_a_gauge_per_model() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let openrouter = MockOpenRouter::new();
    // A is over capacity once (a 429 the limiter answers, met with one request in flight:
    // min(4, 1) x 0.9, so the limit is at min, 1), then answers.
    openrouter
        .model(A)
        .respond(Reply::status(429))
        .once()
        .then(Reply::delay(Duration::from_millis(100), Reply::ok()));
    let layer = OpenRouterLayer::builder()
        .chain([A, B])
        .retry_policy(RetryPolicy::new().max_retries(0))
        .adaptive_concurrency(AdaptiveConfig::new(4, 1, 8))
        .build()
        .unwrap();
    let health = layer.health().clone();
    let svc = layer.layer(openrouter.clone());
    // (A snapshot of the debugging recorder takes the values: one per check.)
    let gauge = |m: &Seen, model: &str| {
        m.gauges
            .get(&format!(
                "{}{{gen_ai.request.model={model}}}",
                observe::CONCURRENCY_LIMIT
            ))
            .copied()
    };

    svc.clone().oneshot(request()).await.unwrap();
    // Each model's limit from when it was first seen; A's lowered by its 429.
    let m = seen(&snapshotter);
    assert_eq!(gauge(&m, A), Some(1.0));
    assert_eq!(gauge(&m, B), Some(4.0));
    assert_eq!(health.concurrency_limit(A), Some(1));

    // Twelve calls at once (A takes 100 ms; the others skip it at its limit) raise A's
    // limit: each success of a model with its limit in use adds 1/limit (1 -> 2).
    let calls: Vec<_> = (0..12)
        .map(|_| tokio::spawn(svc.clone().oneshot(request())))
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(health.concurrency_limit(A), Some(2));
    assert_eq!(gauge(&seen(&snapshotter), A), Some(2.0));
}

#[tokio::test(start_paused = true)]
async fn hedges_wins_and_budget_refusals_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let openrouter = MockOpenRouter::new();
    let ttft = |s| Reply::stream(["a", "b"]).first_token_delay(Duration::from_secs(s));
    openrouter.model(A).respond(ttft(5));
    openrouter.model(B).respond(ttft(1));
    // One hedge per two calls: the first call is refused one, the second hedges.
    let layer = OpenRouterLayer::builder()
        .chain([A, B])
        .hedge(HedgePolicy::after(Duration::from_secs(1)).budget(0.5))
        .build()
        .unwrap();
    let svc = layer.layer(openrouter.clone());
    let req = || {
        http::Request::post("https://openrouter.ai/api/v1/chat/completions")
            .body(format!(r#"{{"model":"{A}","messages":[],"stream":true}}"#))
            .unwrap()
    };
    for _ in 0..2 {
        svc.clone().oneshot(req()).await.unwrap();
    }
    let m = seen(&snapshotter);
    let count = |key: String| m.counters.get(&key).copied();
    assert_eq!(
        count(format!(
            "{}{{gen_ai.request.model={A}}}",
            observe::HEDGE_BUDGET_REFUSALS
        )),
        Some(1)
    );
    assert_eq!(
        count(format!("{}{{from={A},to={B}}}", observe::HEDGES)),
        Some(1)
    );
    assert_eq!(
        count(format!("{}{{from={A},to={B}}}", observe::HEDGE_WINS)),
        Some(1)
    );
    // A hedge is not a fallback.
    assert!(m
        .counters
        .keys()
        .all(|k| !k.starts_with(observe::FALLBACKS)));
}

#[tokio::test(start_paused = true)]
async fn a_streams_usage_and_cost_are_recorded_at_its_end() {
    use http_body_util::BodyExt;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let openrouter = MockOpenRouter::new();
    openrouter
        .model(A)
        .respond(Reply::stream(["a", "b"]).usage(12, 7, 0.0005));
    let layer = OpenRouterLayer::builder().chain([A, B]).build().unwrap();
    let svc = layer.layer(openrouter.clone());
    let labels = |kind: &str| {
        format!(
            "{}{{gen_ai.operation.name=chat,gen_ai.provider.name=openrouter,gen_ai.request.model={A},gen_ai.response.model={A},gen_ai.token.type={kind}}}",
            observe::TOKEN_USAGE
        )
    };
    let cost = format!(
        "{}{{gen_ai.request.model={A},gen_ai.response.model={A}}}",
        observe::COST
    );
    for (path, body) in [
        (
            "chat/completions",
            format!(r#"{{"model":"{A}","messages":[],"stream":true}}"#),
        ),
        (
            "messages",
            format!(r#"{{"model":"{A}","max_tokens":9,"messages":[],"stream":true}}"#),
        ),
    ] {
        let req = http::Request::post(format!("https://openrouter.ai/api/v1/{path}"))
            .body(body)
            .unwrap();
        let resp = svc.clone().oneshot(req).await.unwrap();
        // The head and the first content came; the usage has not.
        // (A snapshot takes the histograms' values: each holds this stream's only.)
        let m = seen(&snapshotter);
        let input = m.histograms.get(&labels("input"));
        assert!(input.is_none_or(Vec::is_empty), "{path}");
        resp.into_body().collect().await.unwrap();
        let m = seen(&snapshotter);
        assert_eq!(
            m.histograms.get(&labels("input")),
            Some(&vec![12.0]),
            "{path}"
        );
        assert_eq!(
            m.histograms.get(&labels("output")),
            Some(&vec![7.0]),
            "{path}"
        );
        assert_eq!(m.histograms.get(&cost), Some(&vec![0.0005]), "{path}");
    }
}
