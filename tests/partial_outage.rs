//! The default health policy under partial outages (issue 9, items 3 and 6), through
//! `OpenRouterLayer` over `MockOpenRouter`, at high concurrency under paused time.
#![cfg(feature = "mock")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::health::{BreakerState, HealthConfig, HealthTracker};
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::retry::RetryPolicy;
use tower_openrouter::stack::{OpenRouter, OpenRouterLayer, OpenRouterLayerBuilder};
use tower_openrouter::{Error, ErrorKind};

const A: &str = "anthropic/claude-3.5-sonnet";
const B: &str = "openai/gpt-4o";
const N: usize = 10_000;
const BODY: &str =
    r#"{"model":"anthropic/claude-3.5-sonnet","messages":[{"role":"user","content":"hi"}]}"#;
/// Upstream think time: with 200 callers in flight, about 4,000 requests a second.
const LATENCY: Duration = Duration::from_millis(50);

type Svc = OpenRouter<MockOpenRouter>;

/// A seeded random source for the retry backoff, so every run is the same.
struct SplitMix(u64);

impl tower::util::rng::Rng for SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The defaults, with seeded jitter (health and backoff) so the figures are exact.
fn builder(health: HealthConfig) -> OpenRouterLayerBuilder {
    OpenRouterLayer::builder()
        .chain([A, B])
        .health_config(health.jitter_seed(9))
        .retry_policy(RetryPolicy::new().rng(SplitMix(9)))
}

fn request() -> http::Request<String> {
    http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(BODY.to_owned())
        .unwrap()
}

async fn send(svc: &Svc) -> Result<ServedBy, Error> {
    let resp = svc.clone().oneshot(request()).await?;
    Ok(resp.extensions().get::<ServedBy>().cloned().unwrap())
}

#[derive(Debug, Default)]
struct Tally {
    ok: AtomicUsize,
    by_primary: AtomicUsize,
}

/// `n` requests from `callers` concurrent callers, each sending its next request when the
/// last one is answered.
async fn load(svc: &Svc, callers: usize, n: usize) -> Arc<Tally> {
    let left = Arc::new(AtomicUsize::new(n));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            let (svc, left, tally) = (svc.clone(), left.clone(), tally.clone());
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                    .is_ok()
                {
                    if let Ok(served) = send(&svc).await {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                        if &*served.model == A {
                            tally.by_primary.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    tally
}

struct Figures {
    primary_share: f64,
    success: f64,
    calls_per_request: f64,
}

async fn thirty_percent(failure: Reply, seed: u64) -> Figures {
    let mock = MockOpenRouter::new();
    mock.keep_requests(0);
    mock.model(A)
        .respond(Reply::delay(LATENCY, Reply::fail_rate(0.3, failure, seed)));
    mock.model(B).respond(Reply::delay(LATENCY, Reply::ok()));
    let layer = builder(HealthConfig::default()).build().unwrap();
    let health = layer.health().clone();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    let tally = load(&svc, 200, N).await;
    let f = Figures {
        primary_share: tally.by_primary.load(Ordering::SeqCst) as f64 / N as f64,
        success: tally.ok.load(Ordering::SeqCst) as f64 / N as f64,
        calls_per_request: mock.total_calls() as f64 / N as f64,
    };
    eprintln!(
        "primary served {:.2}%, success {:.2}%, {:.3} calls/request, by model {:?}, primary trips {}",
        100.0 * f.primary_share,
        100.0 * f.success,
        f.calls_per_request,
        mock.calls_by_model(),
        trips(&health),
    );
    f
}

fn trips(health: &HealthTracker) -> u32 {
    health
        .snapshot()
        .iter()
        .find(|m| &*m.model == A)
        .map_or(0, |m| m.trips)
}

#[tokio::test(start_paused = true)]
async fn a_primary_failing_30_percent_with_500_stays_in_service() {
    let f = thirty_percent(Reply::status(500), 0x5eed).await;
    assert!(
        f.primary_share >= 0.65,
        "primary served {}",
        f.primary_share
    );
    assert!(f.success >= 0.999, "success {}", f.success);
    assert!(
        f.calls_per_request <= 1.4,
        "{} calls/request",
        f.calls_per_request
    );
}

#[tokio::test(start_paused = true)]
async fn a_primary_failing_30_percent_with_429_stays_in_service() {
    let f = thirty_percent(Reply::status(429).retry_after(1), 0x5eed).await;
    assert!(
        f.primary_share >= 0.65,
        "primary served {}",
        f.primary_share
    );
    assert!(f.success >= 0.999, "success {}", f.success);
    assert!(
        f.calls_per_request <= 1.4,
        "{} calls/request",
        f.calls_per_request
    );
}

#[tokio::test(start_paused = true)]
async fn a_primary_failing_every_call_is_benched_after_five_failures_and_probed_once_per_cooldown()
{
    let mock = MockOpenRouter::new();
    mock.keep_requests(0);
    mock.model(A)
        .respond(Reply::delay(LATENCY, Reply::status(500)));
    mock.model(B).respond(Reply::delay(LATENCY, Reply::ok()));
    let layer = builder(HealthConfig::default()).build().unwrap();
    let health = layer.health().clone();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());

    // Alone: the first request fails 3 times on the primary (two retries), the second
    // twice: the 5th failure in a row benches it.
    for _ in 0..2 {
        assert_eq!(&*send(&svc).await.unwrap().model, B);
    }
    assert_eq!(mock.calls(A), 5);
    assert!(!health.is_available(A));

    // Then 10,000 more from 5 concurrent callers (100 s: several cooldowns end).
    let tally = load(&svc, 5, N).await;
    assert_eq!(tally.ok.load(Ordering::SeqCst), N);
    let state = health
        .snapshot()
        .into_iter()
        .find(|m| &*m.model == A)
        .unwrap();
    // Each cooldown that ended let exactly one probe through, and each failed probe
    // opened the breaker again for longer (trip 2, 3, ...).
    assert_eq!(state.state, BreakerState::Open);
    assert!(state.trips >= 2, "{state:?}");
    assert_eq!(mock.calls(A), 5 + u64::from(state.trips - 1));
    let calls = mock.total_calls() as f64 / (N + 2) as f64;
    eprintln!(
        "{calls:.4} calls/request, trips {}, by model {:?}",
        state.trips,
        mock.calls_by_model()
    );
    assert!(calls <= 1.05, "{calls} calls/request");
}

#[tokio::test(start_paused = true)]
async fn one_request_a_second_with_four_failures_then_a_success_never_trips() {
    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(Reply::status(500))
        .times(4)
        .then(Reply::ok());
    let layer = builder(HealthConfig::default())
        .max_retries(0)
        .build()
        .unwrap();
    let health = layer.health().clone();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    let mut served = Vec::new();
    for _ in 0..60 {
        served.push(send(&svc).await.unwrap().model);
        assert!(health.is_available(A));
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert!(served[..4].iter().all(|m| &**m == B));
    assert!(served[4..].iter().all(|m| &**m == A));
    assert_eq!((mock.calls(A), mock.calls(B)), (60, 4));
    assert_eq!(trips(&health), 0);
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_grows_with_first_attempts_only() {
    // Breaker off: every request's first attempt goes to the primary, failing 30%.
    let mock = MockOpenRouter::new();
    mock.keep_requests(0);
    mock.model(A).respond(Reply::delay(
        LATENCY,
        Reply::fail_rate(0.3, Reply::status(500), 0x5eed),
    ));
    mock.model(B).respond(Reply::delay(LATENCY, Reply::ok()));
    let off = HealthConfig::default()
        .consecutive_failures(u32::MAX)
        .without_failure_ratio();
    let svc = ServiceBuilder::new()
        .layer(builder(off).build().unwrap())
        .service(mock.clone());
    let start = tokio::time::Instant::now();
    let tally = load(&svc, 200, N).await;
    // Within one budget window (10 s): the reserve is 10 a second over 10 s.
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(tally.ok.load(Ordering::SeqCst) >= N - 10);
    let retries = mock.calls(A) - N as u64;
    eprintln!(
        "same-model retries: {retries} for {N} requests, by model {:?}",
        mock.calls_by_model()
    );
    assert!(retries <= (N as u64) / 5 + 100, "{retries} retries");
    // Fallback attempts went to B and were never retried (B never fails).
    assert!(mock.calls(B) > 0);
}

#[test]
fn thirty_percent_failures_need_a_long_run_to_trip_a_busy_model() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let err = Error::new(ErrorKind::ProviderError);
        // A window of 700 successes and 300 failures, then a run of failures.
        let busy = |run: usize| {
            let tracker = HealthTracker::new(HealthConfig::default().jitter(0.0));
            for i in 0..1000 {
                let outcome = if i % 10 < 3 { Err(&err) } else { Ok(()) };
                tracker.record(A, outcome);
            }
            tracker.record(A, Ok(()));
            for _ in 0..run {
                tracker.record(A, Err(&err));
            }
            tracker.is_available(A)
        };
        // 30% failing: a run of 18 in a row is less likely than 1 in a billion by chance.
        assert!(busy(17));
        assert!(!busy(18));
        // A healthy busy model that breaks all at once: 5 in a row.
        let tracker = HealthTracker::new(HealthConfig::default().jitter(0.0));
        for _ in 0..1000 {
            tracker.record(A, Ok(()));
        }
        for i in 0..5 {
            assert!(tracker.is_available(A), "failure {i}");
            tracker.record(A, Err(&err));
        }
        assert!(!tracker.is_available(A));
    });
}
