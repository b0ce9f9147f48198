//! Spans and events: one `openrouter.call` span per call with one `openrouter.attempt`
//! child per upstream try, OpenTelemetry GenAI field names, and breaker transitions as
//! events (WARN open, INFO half-open and closed), captured by a recording subscriber.
#![cfg(feature = "mock")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{Layer as _, ServiceExt};
use tower_openrouter::health::{
    Admission, HealthConfig, HealthSink, HealthStore, HealthTracker, SharedEvent, StoreStatus,
};
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::{OpenRouterLayer, RetryPolicy};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

const A: &str = "anthropic/claude-sonnet-4.5";
const B: &str = "openai/gpt-4o";
const C: &str = "google/gemini-2.5-flash";

type Fields = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct SpanRec {
    name: &'static str,
    parent: Option<usize>,
    fields: Fields,
}

#[derive(Debug, Clone)]
struct EventRec {
    level: Level,
    /// The span the event happened in (its name).
    span: Option<&'static str>,
    fields: Fields,
}

#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<SpanRec>>>,
    events: Arc<Mutex<Vec<EventRec>>>,
}

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// Position of a span in `Capture::spans`.
struct Index(usize);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        let span = ctx.span(id).unwrap();
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Index>().map(|i| i.0));
        let mut spans = self.spans.lock().unwrap();
        span.extensions_mut().insert(Index(spans.len()));
        spans.push(SpanRec {
            name: attrs.metadata().name(),
            parent,
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let i = span.extensions().get::<Index>().unwrap().0;
        values.record(&mut Visitor(&mut self.spans.lock().unwrap()[i].fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        self.events.lock().unwrap().push(EventRec {
            level: *event.metadata().level(),
            span: ctx.event_span(event).map(|s| s.name()),
            fields,
        });
    }
}

impl Capture {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    fn spans(&self, name: &str) -> Vec<SpanRec> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }

    fn messages(&self, message: &str) -> Vec<EventRec> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e.fields.get("message").map(String::as_str) == Some(message))
            .cloned()
            .collect()
    }
}

fn request(stream: bool) -> http::Request<String> {
    http::Request::post("https://openrouter.ai/api/v1/chat/completions")
        .header("authorization", "Bearer sk-or-v1-test")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"{A}","messages":[{{"role":"user","content":"hi"}}],"stream":{stream}}}"#
        ))
        .unwrap()
}

fn get<'a>(fields: &'a Fields, key: &str) -> Option<&'a str> {
    fields.get(key).map(String::as_str)
}

#[tokio::test(start_paused = true)]
async fn one_call_span_and_one_attempt_span_per_upstream_try() {
    let capture = Capture::default();
    let _guard = capture.install();
    let openrouter = MockOpenRouter::new();
    openrouter.model(A).respond(Reply::status(500));
    openrouter.model(B).respond(Reply::status(503));
    openrouter
        .model(C)
        .respond(Reply::ok().provider("Google").usage(12, 7, 0.0005));
    let layer = OpenRouterLayer::builder()
        .chain([A, B, C])
        .max_retries(1)
        .build()
        .unwrap();
    let resp = layer
        .layer(openrouter.clone())
        .oneshot(request(false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let calls = capture.spans("openrouter.call");
    assert_eq!(calls.len(), 1);
    let call = &calls[0].fields;
    for (key, value) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openrouter"),
        ("server.address", "openrouter.ai"),
        ("openrouter.chain", "default"),
        ("openrouter.requested_model", A),
        ("gen_ai.request.stream", "false"),
        ("gen_ai.response.model", C),
        ("openrouter.attempts", "3"),
        ("openrouter.fell_back", "true"),
        ("otel.kind", "client"),
    ] {
        assert_eq!(get(call, key), Some(value), "call span {key}: {call:?}");
    }
    assert!(get(call, "error.type").is_none());
    assert!(call.contains_key("openrouter.elapsed_ms"));

    // A: first try and one retry (500), B: 503 (no retry), C: the answer.
    let attempts = capture.spans("openrouter.attempt");
    let summary: Vec<(String, String, String, String, String)> = attempts
        .iter()
        .map(|s| {
            let f = |k: &str| get(&s.fields, k).unwrap_or("-").to_string();
            (
                f("gen_ai.request.model"),
                f("openrouter.attempt.index"),
                f("openrouter.attempt.retry"),
                f("http.response.status_code"),
                f("error.type"),
            )
        })
        .collect();
    let row = |m: &str, i: &str, r: &str, s: &str, e: &str| {
        (m.into(), i.into(), r.into(), s.into(), e.into())
    };
    assert_eq!(
        summary,
        [
            row(A, "0", "0", "500", "provider_error"),
            row(A, "0", "1", "500", "provider_error"),
            row(B, "1", "0", "503", "model_unavailable"),
            row(C, "2", "0", "200", "-"),
        ]
    );
    // Every attempt is a child of the call.
    let call_index = capture
        .spans
        .lock()
        .unwrap()
        .iter()
        .position(|s| s.name == "openrouter.call");
    assert!(attempts.iter().all(|a| a.parent == call_index));
    assert_eq!(get(&attempts[0].fields, "otel.status_code"), Some("ERROR"));
    assert_eq!(
        get(&attempts[0].fields, "otel.name"),
        Some(&*format!("chat {A}"))
    );
    let ok = &attempts[3].fields;
    for (key, value) in [
        ("otel.name", &*format!("chat {C}")),
        ("gen_ai.response.model", C),
        ("gen_ai.response.finish_reasons", "stop"),
        ("gen_ai.usage.input_tokens", "12"),
        ("gen_ai.usage.output_tokens", "7"),
        ("openrouter.cost", "0.0005"),
        ("openrouter.provider", "Google"),
        ("gen_ai.request.stream", "false"),
    ] {
        assert_eq!(get(ok, key), Some(value), "answer span {key}: {ok:?}");
    }
    assert!(get(ok, "gen_ai.response.id").is_some_and(|id| id.starts_with("gen-mock-")));
    assert!(get(ok, "otel.status_code").is_none());
    assert!(get(ok, "openrouter.time_to_first_chunk_ms").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_records_its_error_and_a_stream_its_time_to_first_chunk() {
    let capture = Capture::default();
    let _guard = capture.install();
    let openrouter = MockOpenRouter::new();
    openrouter
        .model(A)
        .respond(Reply::status(429).retry_after(3));
    let layer = OpenRouterLayer::builder()
        .chain([A])
        .max_retries(0)
        .wait_for_rate_limit(false)
        .build()
        .unwrap();
    let svc = layer.layer(openrouter.clone());
    let err = svc.clone().oneshot(request(false)).await.unwrap_err();
    assert_eq!(err.kind().as_str(), "exhausted");
    let call = &capture.spans("openrouter.call")[0].fields;
    assert_eq!(get(call, "error.type"), Some("exhausted"));
    assert_eq!(get(call, "otel.status_code"), Some("ERROR"));
    assert_eq!(get(call, "openrouter.attempts"), Some("1"));
    let attempt = &capture.spans("openrouter.attempt")[0].fields;
    assert_eq!(get(attempt, "error.type"), Some("rate_limited"));
    assert_eq!(get(attempt, "openrouter.retry_after_ms"), Some("3000"));
    assert_eq!(get(attempt, "http.response.status_code"), Some("429"));

    // A stream: the attempt ends at its first content event, 250 ms in.
    let openrouter = MockOpenRouter::new();
    openrouter.model(A).respond(Reply::delay(
        Duration::from_millis(250),
        Reply::stream(["Hel", "lo"]),
    ));
    let svc = layer.layer(openrouter.clone());
    let resp = svc.clone().oneshot(request(true)).await.unwrap();
    drop(resp);
    let attempt = &capture.spans("openrouter.attempt")[1].fields;
    assert_eq!(get(attempt, "gen_ai.request.stream"), Some("true"));
    assert_eq!(
        get(attempt, "openrouter.time_to_first_chunk_ms"),
        Some("250")
    );
    assert_eq!(get(attempt, "gen_ai.response.model"), Some(A));
    // Dropped before its end: its usage never came, so none is recorded.
    assert_eq!(get(attempt, "gen_ai.usage.input_tokens"), None);

    // Read to its end: the usage of the last chunk is on the attempt's span.
    openrouter
        .model(A)
        .respond(Reply::stream(["Hel", "lo"]).usage(12, 7, 0.0005));
    let resp = svc.oneshot(request(true)).await.unwrap();
    let attempt = || capture.spans("openrouter.attempt")[2].fields.clone();
    assert_eq!(get(&attempt(), "gen_ai.usage.input_tokens"), None);
    http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap();
    let attempt = attempt();
    assert_eq!(get(&attempt, "gen_ai.usage.input_tokens"), Some("12"));
    assert_eq!(get(&attempt, "gen_ai.usage.output_tokens"), Some("7"));
    assert_eq!(get(&attempt, "openrouter.cost"), Some("0.0005"));
}

#[tokio::test(start_paused = true)]
async fn breaker_transitions_are_events() {
    let capture = Capture::default();
    let _guard = capture.install();
    let openrouter = MockOpenRouter::new();
    openrouter.model(A).respond(Reply::status(503)).times(2);
    let layer = OpenRouterLayer::builder()
        .chain([A, B])
        .health_config(
            HealthConfig::default()
                .consecutive_failures(2)
                .without_failure_ratio()
                .cooldown(Duration::from_secs(10))
                .jitter(0.0),
        )
        .retry_policy(RetryPolicy::new().max_retries(0))
        .build()
        .unwrap();
    let svc = layer.layer(openrouter.clone());
    for _ in 0..2 {
        svc.clone().oneshot(request(false)).await.unwrap();
    }
    let opened = capture.messages("breaker opened");
    assert_eq!(opened.len(), 1);
    let e = &opened[0];
    assert_eq!(e.level, Level::WARN);
    assert_eq!(get(&e.fields, "model"), Some(A));
    assert_eq!(get(&e.fields, "reason"), Some("consecutive_failures"));
    assert_eq!(get(&e.fields, "trips"), Some("1"));
    assert_eq!(get(&e.fields, "cooldown_ms"), Some("10000"));
    assert!(get(&e.fields, "cooldown_until").is_some_and(|d| d.ends_with(" GMT")));
    // The trip happened inside the attempt that caused it.
    assert_eq!(e.span, Some("openrouter.attempt"));

    // Cooling: skipped. After the cooldown: probe (half-open), success (closed).
    svc.clone().oneshot(request(false)).await.unwrap();
    assert!(capture.messages("breaker half-open").is_empty());
    tokio::time::advance(Duration::from_secs(10)).await;
    svc.clone().oneshot(request(false)).await.unwrap();
    let half = capture.messages("breaker half-open");
    let closed = capture.messages("breaker closed");
    assert_eq!((half.len(), closed.len()), (1, 1));
    assert_eq!(half[0].level, Level::INFO);
    assert_eq!(closed[0].level, Level::INFO);
    assert_eq!(get(&half[0].fields, "model"), Some(A));
    assert_eq!(get(&closed[0].fields, "model"), Some(A));
    assert_eq!(capture.messages("breaker opened").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_again_with_its_reason() {
    let capture = Capture::default();
    let _guard = capture.install();
    let openrouter = MockOpenRouter::new();
    openrouter.model(A).respond(Reply::status(503));
    let layer = OpenRouterLayer::builder()
        .chain([A, B])
        .health_config(
            HealthConfig::default()
                .consecutive_failures(1)
                .cooldown(Duration::from_secs(10))
                .jitter(0.0),
        )
        .build()
        .unwrap();
    let svc = layer.layer(openrouter.clone());
    svc.clone().oneshot(request(false)).await.unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    svc.clone().oneshot(request(false)).await.unwrap();
    let opened = capture.messages("breaker opened");
    let reasons: Vec<(Option<&str>, Option<&str>, Option<&str>)> = opened
        .iter()
        .map(|e| {
            (
                get(&e.fields, "reason"),
                get(&e.fields, "trips"),
                get(&e.fields, "cooldown_ms"),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (Some("consecutive_failures"), Some("1"), Some("10000")),
            (Some("probe_failed"), Some("2"), Some("20000")),
        ]
    );
}

/// An in-process store that hands each published fact to every attached tracker.
#[derive(Default)]
struct Relay {
    sinks: Mutex<Vec<HealthSink>>,
}

impl HealthStore for Relay {
    fn attach(&self, sink: HealthSink) {
        self.sinks.lock().unwrap().push(sink);
    }
    fn publish(&self, event: SharedEvent) {
        for s in self.sinks.lock().unwrap().iter() {
            s.apply(&event);
        }
    }
    fn coordinates_probes(&self) -> bool {
        false
    }
    fn status(&self) -> StoreStatus {
        StoreStatus::new("relay", true)
    }
}

#[tokio::test(start_paused = true)]
async fn a_trip_and_a_recovery_applied_from_the_store_are_events_too() {
    let capture = Capture::default();
    let _guard = capture.install();
    let store = Arc::new(Relay::default());
    let config = HealthConfig::default()
        .consecutive_failures(2)
        .cooldown(Duration::from_secs(10))
        .jitter(0.0);
    let here = HealthTracker::with_store(config.clone(), store.clone());
    let there = HealthTracker::with_store(config, store.clone());
    let err = tower_openrouter::Error::new(tower_openrouter::ErrorKind::ProviderError);
    here.record(A, Err(&err));
    here.record(A, Err(&err));
    assert!(!there.is_available(A));

    let opened = capture.messages("breaker opened");
    // Each replica says it once: here as its own trip, there as the fleet's (the store
    // hears of it before this replica logs it).
    let sources: Vec<_> = opened.iter().map(|e| get(&e.fields, "source")).collect();
    assert_eq!(sources, [Some("fleet"), Some("local")]);
    let fleet = &opened[0];
    assert_eq!(fleet.level, Level::WARN);
    assert_eq!(get(&fleet.fields, "model"), Some(A));
    assert_eq!(get(&fleet.fields, "reason"), Some("consecutive_failures"));
    assert_eq!(get(&fleet.fields, "trips"), Some("1"));
    // The other replica's cooldown, seen here: 10 s, to the millisecond of the wall clock.
    let ms: u64 = get(&fleet.fields, "cooldown_ms").unwrap().parse().unwrap();
    assert!((9_990..=10_000).contains(&ms), "{ms}");

    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(here.check(A), Admission::Probe);
    here.record(A, Ok(()));
    let closed = capture.messages("breaker closed");
    let mut sources: Vec<_> = closed.iter().map(|e| get(&e.fields, "source")).collect();
    sources.sort();
    assert_eq!(sources, [Some("fleet"), Some("local")]);
    assert!(closed.iter().all(|e| e.level == Level::INFO));
    assert!(there.is_available(A));
}
