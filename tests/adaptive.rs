//! Adaptive concurrency per model, through the whole stack against `MockOpenRouter` with a
//! capacity-limited primary (paused time: every figure is exact and repeatable).
#![cfg(feature = "mock")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::health::{AdaptiveConfig, HealthConfig, HealthTracker};
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::stack::{OpenRouter, OpenRouterLayer, OpenRouterLayerBuilder};
use tower_openrouter::ErrorKind;

const PRIMARY: &str = "openai/gpt-4o-mini";
const FALLBACK: &str = "anthropic/claude-3-haiku";
const LATENCY: Duration = Duration::from_millis(20);
const BODY: &str = r#"{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

type Svc = OpenRouter<MockOpenRouter>;

/// A success as small as a chat completion gets: these runs send tens of thousands of
/// requests, and what they measure is capacity, not bodies.
const OK: &str = r#"{"object":"chat.completion","choices":[]}"#;

fn mock(capacity: u32) -> MockOpenRouter {
    let mock = MockOpenRouter::new();
    mock.keep_requests(0);
    let ok = || Reply::delay(LATENCY, Reply::json(200, OK));
    mock.model(PRIMARY).respond(ok()).max_in_flight(capacity);
    mock.model(FALLBACK).respond(ok());
    mock
}

fn builder() -> OpenRouterLayerBuilder {
    OpenRouterLayer::builder()
        .chain([PRIMARY, FALLBACK])
        .deadline(Duration::from_secs(30))
        .attempt_timeout(Duration::from_secs(10))
        .health_config(HealthConfig::default().jitter(0.0))
}

fn stack(b: OpenRouterLayerBuilder, mock: &MockOpenRouter) -> (Svc, HealthTracker) {
    let layer = b.build().unwrap();
    let health = layer.health().clone();
    (
        ServiceBuilder::new().layer(layer).service(mock.clone()),
        health,
    )
}

fn request() -> http::Request<String> {
    http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(BODY.to_owned())
        .unwrap()
}

#[derive(Debug, Default)]
struct Figures {
    requests: u64,
    ok: u64,
    by_primary: u64,
    upstream_429: u64,
    skipped_at_capacity: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    by_primary: AtomicU64,
    skipped: AtomicU64,
}

/// `callers` concurrent callers, each sending one request after the other until `run`
/// has passed.
async fn load(svc: &Svc, mock: &MockOpenRouter, callers: usize, run: Duration) -> Figures {
    let end = Instant::now() + run;
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let svc = svc.clone();
        let c = counters.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                c.requests.fetch_add(1, Ordering::Relaxed);
                let Ok(resp) = svc.clone().oneshot(request()).await else {
                    continue;
                };
                assert_eq!(resp.status(), StatusCode::OK);
                c.ok.fetch_add(1, Ordering::Relaxed);
                let served = resp.extensions().get::<ServedBy>().unwrap();
                if &*served.model == PRIMARY {
                    c.by_primary.fetch_add(1, Ordering::Relaxed);
                }
                let skips = served
                    .attempts
                    .iter()
                    .filter(|a| a.kind() == ErrorKind::ModelAtCapacity)
                    .count();
                c.skipped.fetch_add(skips as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Figures {
        requests: counters.requests.load(Ordering::Relaxed),
        ok: counters.ok.load(Ordering::Relaxed),
        by_primary: counters.by_primary.load(Ordering::Relaxed),
        upstream_429: mock.capacity_rejections(PRIMARY),
        skipped_at_capacity: counters.skipped.load(Ordering::Relaxed),
    }
}

/// What the primary can serve in `run`: 8 in flight / 20 ms = 400 per second.
const CAPACITY_10S: u64 = 400 * 10;

#[tokio::test(start_paused = true)]
async fn adaptive_on_keeps_the_primary_near_its_capacity() {
    let mock = mock(8);
    let (svc, health) = stack(
        builder().adaptive_concurrency(AdaptiveConfig::new(4, 1, 64)),
        &mock,
    );
    let f = load(&svc, &mock, 64, Duration::from_secs(10)).await;
    println!(
        "adaptive on: {f:?}, primary {:.1}% of its capacity",
        100.0 * f.by_primary as f64 / CAPACITY_10S as f64
    );
    assert_eq!(f.ok, f.requests, "every request succeeds");
    assert!(f.by_primary * 100 >= CAPACITY_10S * 80, "{f:?}");
    assert!(f.upstream_429 * 10 <= f.requests, "{f:?}");
    assert!(mock.peak_in_flight(PRIMARY) <= 8);
    assert!(f.skipped_at_capacity > 0);
    // The learned limit sits at the capacity.
    let limit = health.concurrency_limit(PRIMARY).unwrap();
    assert!((7..=9).contains(&limit), "limit {limit}");
    let snap = health.snapshot();
    let primary = snap.iter().find(|m| &*m.model == PRIMARY).unwrap();
    assert_eq!(primary.concurrency_limit, Some(limit));
}

#[tokio::test(start_paused = true)]
async fn a_429_that_comes_late_does_not_push_the_limit_below_the_capacity() {
    // As the gateway bench's upstream (scenario D): the 429 takes the model's latency too,
    // so successes meanwhile raise the limit past what was overloaded.
    let mock = mock(8);
    mock.model(PRIMARY).capacity_delay(LATENCY);
    let (svc, health) = stack(
        builder().adaptive_concurrency(AdaptiveConfig::new(8, 1, 64)),
        &mock,
    );
    let f = load(&svc, &mock, 32, Duration::from_secs(5)).await;
    println!(
        "late 429s: {f:?}, primary {:.1}% of its capacity",
        100.0 * f.by_primary as f64 / (CAPACITY_10S / 2) as f64
    );
    assert_eq!(f.ok, f.requests);
    assert!(f.by_primary * 100 >= CAPACITY_10S / 2 * 95, "{f:?}");
    // At most 2% of requests on 429s (124 of 7,729); lowering the limit itself rather
    // than the concurrency the 429 met cost 2.6% (199 of 7,660).
    assert!(f.upstream_429 * 50 <= f.requests, "{f:?}");
    let limit = health.concurrency_limit(PRIMARY).unwrap();
    assert!((8..=9).contains(&limit), "limit {limit}");
}

#[tokio::test(start_paused = true)]
async fn adaptive_off_for_comparison() {
    let mock = mock(8);
    let (svc, health) = stack(builder(), &mock);
    let f = load(&svc, &mock, 64, Duration::from_secs(10)).await;
    println!(
        "adaptive off: {f:?}, primary {:.1}% of its capacity",
        100.0 * f.by_primary as f64 / CAPACITY_10S as f64
    );
    assert_eq!(f.ok, f.requests);
    assert_eq!(f.skipped_at_capacity, 0);
    assert_eq!(health.concurrency_limit(PRIMARY), None);
    // Each 429 benches the primary for its Retry-After (1 s): it serves a fraction.
    assert!(f.by_primary * 100 < CAPACITY_10S * 50, "{f:?}");
}

#[tokio::test(start_paused = true)]
async fn the_limit_follows_capacity_down_and_up() {
    let mock = mock(8);
    let (svc, health) = stack(
        builder().adaptive_concurrency(AdaptiveConfig::new(8, 1, 64)),
        &mock,
    );
    let start = Instant::now();
    let sampler = {
        let (health, mock) = (health.clone(), mock.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            for i in 0..180u64 {
                tick.tick().await;
                match i {
                    60 => drop(mock.model(PRIMARY).max_in_flight(2)),
                    120 => drop(mock.model(PRIMARY).max_in_flight(8)),
                    _ => {}
                }
                let limit = health.concurrency_limit(PRIMARY).unwrap_or(8);
                samples.push((start.elapsed(), limit));
            }
            samples
        })
    };
    let f = load(&svc, &mock, 32, Duration::from_secs(9)).await;
    let samples = sampler.await.unwrap();
    assert_eq!(f.ok, f.requests);
    let at = |from: u64, to: u64| {
        samples
            .iter()
            .filter(move |(t, _)| {
                *t >= Duration::from_millis(from) && *t < Duration::from_millis(to)
            })
            .map(|(_, l)| *l)
    };
    let fmt = |v: Vec<u32>| format!("{v:?}");
    // Capacity 8: the limit stays at it.
    assert!(
        at(1_000, 3_000).all(|l| (7..=9).contains(&l)),
        "{}",
        fmt(at(0, 3_000).collect())
    );
    // Down to 2 at 3 s: within half a second the limit is at most 3, and it stays at 2-3.
    assert!(
        at(3_500, 6_000).all(|l| (2..=3).contains(&l)),
        "{}",
        fmt(at(3_000, 6_000).collect())
    );
    // Back to 8 at 6 s: within half a second the limit is at 7-9 again.
    assert!(
        at(6_500, 9_000).all(|l| (7..=9).contains(&l)),
        "{}",
        fmt(at(6_000, 9_000).collect())
    );
    println!(
        "limit after the drop: {:?}; after the rise: {:?}",
        at(3_000, 3_500).collect::<Vec<_>>(),
        at(6_000, 6_500).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn with_every_model_at_its_limit_a_request_waits_for_the_first_free_slot() {
    let mock = mock(8);
    let (svc, _health) = stack(
        builder()
            .chain([PRIMARY])
            .adaptive_concurrency(AdaptiveConfig::new(1, 1, 1)),
        &mock,
    );
    let start = Instant::now();
    let first = tokio::spawn(svc.clone().oneshot(request()));
    tokio::task::yield_now().await;
    let second = svc.clone().oneshot(request()).await.unwrap();
    // It waited for the first to finish (20 ms), then took 20 ms itself.
    assert_eq!(start.elapsed(), 2 * LATENCY);
    let served = second.extensions().get::<ServedBy>().unwrap();
    assert_eq!(&*served.model, PRIMARY);
    let kinds: Vec<ErrorKind> = served.attempts.iter().map(|a| a.kind()).collect();
    assert_eq!(kinds, [ErrorKind::ModelAtCapacity]);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(mock.calls(PRIMARY), 2);
    assert_eq!(mock.capacity_rejections(PRIMARY), 0);
}

/// With the primary's one slot held for 5 s and a 2 s deadline, the second request's
/// wait (`adaptive`'s) ends at the deadline.
async fn a_slot_wait_ends_at_the_deadline(adaptive: AdaptiveConfig) {
    let mock = mock(8);
    mock.model(PRIMARY)
        .respond(Reply::delay(Duration::from_secs(5), Reply::ok()));
    let (svc, _health) = stack(
        builder()
            .chain([PRIMARY])
            .deadline(Duration::from_secs(2))
            .attempt_timeout(Duration::from_secs(2))
            .retry_policy(
                tower_openrouter::retry::RetryPolicy::new().backoff_cap(Duration::from_secs(1)),
            )
            .adaptive_concurrency(adaptive),
        &mock,
    );
    let start = Instant::now();
    let _first = tokio::spawn(svc.clone().oneshot(request()));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(mock.calls(PRIMARY), 1);
}

#[tokio::test(start_paused = true)]
async fn the_wait_for_a_slot_ends_at_the_deadline() {
    a_slot_wait_ends_at_the_deadline(AdaptiveConfig::new(1, 1, 1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_model_that_fails_outright_still_trips() {
    let mock = mock(8);
    mock.model(PRIMARY).respond(Reply::status(502));
    let (svc, health) = stack(
        builder().adaptive_concurrency(AdaptiveConfig::new(8, 1, 64)),
        &mock,
    );
    for _ in 0..5 {
        let resp = svc.clone().oneshot(request()).await.unwrap();
        assert_eq!(
            &*resp.extensions().get::<ServedBy>().unwrap().model,
            FALLBACK
        );
    }
    assert!(!health.is_available(PRIMARY));
    let calls = mock.calls(PRIMARY);
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(mock.calls(PRIMARY), calls, "cooling down: skipped");
    // Failures that are no overload leave the limit alone.
    assert_eq!(health.concurrency_limit(PRIMARY), Some(8));
}

#[tokio::test(start_paused = true)]
async fn a_429_at_the_minimum_limit_counts_for_the_breaker() {
    let mock = mock(8);
    mock.model(PRIMARY)
        .respond(Reply::status(429).retry_after(7));
    let (svc, health) = stack(
        builder().adaptive_concurrency(AdaptiveConfig::new(2, 1, 64)),
        &mock,
    );
    let failures = |h: &HealthTracker| {
        let snap = h.snapshot();
        snap.iter().find(|m| &*m.model == PRIMARY).unwrap().failures
    };
    // A 429 met with one request in flight: 2 -> min(2, 1) x 0.9 -> 1 (min) at once. The
    // limiter answers that 429 alone, it does not count for the breaker.
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(failures(&health), 0);
    assert_eq!(health.concurrency_limit(PRIMARY), Some(1));
    assert_eq!(mock.calls(PRIMARY), 1);
    // At min the 429 counts for the breaker like any other.
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(failures(&health), 1);
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(failures(&health), 2);
}

#[test]
fn json_settings_turn_it_on_and_bad_ones_name_their_field() {
    let json = |adaptive: &str| {
        format!(
            r#"{{"default_chain": ["{PRIMARY}", "{FALLBACK}"], "settings": {{"adaptive": {adaptive}}}}}"#
        )
    };
    let layer =
        OpenRouterLayer::from_json(&json(r#"{"initial": 8, "min": 2, "max": 32}"#)).unwrap();
    let a = layer.health().config().adaptive.unwrap();
    assert_eq!((a.initial, a.min, a.max), (8, 2, 32));
    assert_eq!(a.backoff, 0.9);

    let err =
        OpenRouterLayer::from_json(&json(r#"{"initial": 0, "min": 1, "max": 32}"#)).unwrap_err();
    assert_eq!(err.field(), "settings.adaptive.initial");
    assert_eq!(
        err.to_string(),
        "settings.adaptive.initial (0) must be between adaptive.min (1) and adaptive.max (32)"
    );
    let err = OpenRouterLayer::from_json(&json(
        r#"{"initial": 1, "min": 1, "max": 2, "backoff": 1.5}"#,
    ))
    .unwrap_err();
    assert_eq!(err.field(), "settings.adaptive.backoff");
    let err =
        OpenRouterLayer::from_json(&json(r#"{"initial": 1, "min": 0, "max": 2}"#)).unwrap_err();
    assert_eq!(err.field(), "settings.adaptive.min");
    assert!(OpenRouterLayer::from_json(&json(r#"{"initial": 1}"#)).is_err());

    // A queue for the first model's slots.
    let layer = OpenRouterLayer::from_json(&json(
        r#"{"initial": 8, "min": 1, "max": 64, "queue_waiters": 2, "queue_wait_seconds": 0.005}"#,
    ))
    .unwrap();
    let a = layer.health().config().adaptive.unwrap();
    assert_eq!(
        (a.queue_waiters, a.queue_wait),
        (2, Duration::from_millis(5))
    );
    let err = OpenRouterLayer::from_json(&json(
        r#"{"initial": 8, "min": 1, "max": 64, "queue_waiters": 2}"#,
    ))
    .unwrap_err();
    assert_eq!(err.field(), "settings.adaptive.queue_wait_seconds");
    let err = OpenRouterLayer::from_json(&json(
        r#"{"initial": 8, "min": 1, "max": 64, "queue_waiters": 1, "queue_wait_seconds": -1}"#,
    ))
    .unwrap_err();
    assert_eq!(err.field(), "settings.adaptive.queue_wait_seconds");
    let err = OpenRouterLayer::from_json(&json(
        r#"{"initial": 8, "min": 1, "max": 64, "queue_wait_seconds": 0.005}"#,
    ))
    .unwrap_err();
    assert_eq!(err.field(), "settings.adaptive.queue_waiters");
}

/// The kinds of the attempts a response's `ServedBy` lists, and the model that served it.
fn served(resp: &http::Response<impl Sized>) -> (String, Vec<ErrorKind>) {
    let served = resp.extensions().get::<ServedBy>().unwrap();
    let kinds = served.attempts.iter().map(|a| a.kind()).collect();
    (served.model.to_string(), kinds)
}

#[tokio::test(start_paused = true)]
async fn a_request_queues_for_its_first_models_slot() {
    let mock = mock(8);
    let (svc, _health) = stack(
        builder()
            .adaptive_concurrency(AdaptiveConfig::new(1, 1, 1).queue(1, Duration::from_millis(30))),
        &mock,
    );
    let start = Instant::now();
    let first = tokio::spawn(svc.clone().oneshot(request()));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.clone().oneshot(request()));
    tokio::task::yield_now().await;
    // The queue's one seat is taken: the third skips the primary, as without a queue.
    let third = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(start.elapsed(), LATENCY);
    assert_eq!(
        served(&third),
        (FALLBACK.into(), vec![ErrorKind::ModelAtCapacity])
    );
    let first = first.await.unwrap().unwrap();
    assert_eq!(served(&first), (PRIMARY.into(), vec![]));
    // The second took the slot the first freed, at 20 ms: no skip, no fallback.
    let second = second.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), 2 * LATENCY);
    assert_eq!(served(&second), (PRIMARY.into(), vec![]));
    assert_eq!((mock.calls(PRIMARY), mock.calls(FALLBACK)), (2, 1));
    assert_eq!(mock.capacity_rejections(PRIMARY), 0);
}

#[tokio::test(start_paused = true)]
async fn a_queue_wait_that_ends_without_a_slot_moves_down_the_chain() {
    let mock = mock(8);
    let (svc, _health) = stack(
        builder()
            .adaptive_concurrency(AdaptiveConfig::new(1, 1, 1).queue(1, Duration::from_millis(5))),
        &mock,
    );
    let start = Instant::now();
    let first = tokio::spawn(svc.clone().oneshot(request()));
    tokio::task::yield_now().await;
    let second = svc.clone().oneshot(request()).await.unwrap();
    // 5 ms in the queue, then 20 ms at the fallback.
    assert_eq!(start.elapsed(), Duration::from_millis(25));
    assert_eq!(
        served(&second),
        (FALLBACK.into(), vec![ErrorKind::ModelAtCapacity])
    );
    assert_eq!(served(&first.await.unwrap().unwrap()).0, PRIMARY);
    assert_eq!((mock.calls(PRIMARY), mock.calls(FALLBACK)), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_queue_wait_ends_at_the_deadline() {
    // A queue wait longer than the deadline: the deadline ends it (the chain has no other
    // model to try).
    a_slot_wait_ends_at_the_deadline(
        AdaptiveConfig::new(1, 1, 1).queue(1, Duration::from_secs(10)),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_mock_limits_requests_per_second() {
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY)
        .max_per_second(3)
        .capacity_retry_after(2);
    let statuses = |mock: MockOpenRouter| async move {
        let mut out = Vec::new();
        for _ in 0..5 {
            let resp = mock
                .clone()
                .oneshot(request().map(Into::into))
                .await
                .unwrap();
            out.push(resp.status().as_u16());
            if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(resp.headers()["retry-after"], "2");
            }
        }
        out
    };
    assert_eq!(statuses(mock.clone()).await, [200, 200, 200, 429, 429]);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(statuses(mock.clone()).await, [200, 200, 200, 429, 429]);
    assert_eq!(mock.capacity_rejections(PRIMARY), 4);
    assert_eq!(mock.calls(PRIMARY), 10);
}
