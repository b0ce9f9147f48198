//! Waiting for a rate limit once every model failed (issue 9, item 1), and the settings
//! that cannot hold (item 6), through `OpenRouterLayer` over `MockOpenRouter`.
#![cfg(feature = "mock")]

use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::retry::RetryPolicy;
use tower_openrouter::stack::{OpenRouter, OpenRouterLayer, OpenRouterLayerBuilder};
use tower_openrouter::{Error, ErrorKind};

const A: &str = "anthropic/claude-3.5-sonnet";
const BODY: &str = r#"{"model":"anthropic/claude-3.5-sonnet","messages":[]}"#;

type Svc = OpenRouter<MockOpenRouter>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn one_model() -> OpenRouterLayerBuilder {
    OpenRouterLayer::builder()
        .chain([A])
        .deadline(secs(180))
        .attempt_timeout(secs(30))
}

fn stack(b: OpenRouterLayerBuilder, mock: &MockOpenRouter) -> Svc {
    ServiceBuilder::new()
        .layer(b.build().unwrap())
        .service(mock.clone())
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

#[tokio::test(start_paused = true)]
async fn a_hint_over_the_cap_is_no_wait_and_the_error_carries_it() {
    // 120 s hint, 60 s retry_after_cap, 180 s deadline: no sleep.
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(429).retry_after(120));
    let svc = stack(one_model(), &mock);
    let start = Instant::now();
    let err = send(&svc).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(err.kind(), ErrorKind::Exhausted);
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(err.retry_after(), Some(secs(120)));
    assert_eq!(err.attempts().len(), 1);
    assert_eq!(mock.calls(A), 1);

    // Told 3600 s: retry_after() is 3600 s at the top level.
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(429).retry_after(3600));
    let err = send(&stack(one_model(), &mock)).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(secs(3600)));
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));

    // The retry policy's cap bounds max_rate_limit_wait too.
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(429).retry_after(20));
    let b = one_model()
        .max_rate_limit_wait(secs(100))
        .retry_policy(RetryPolicy::new().retry_after_cap(secs(10)));
    let start = Instant::now();
    let err = send(&stack(b, &mock)).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(err.retry_after(), Some(secs(20)));
}

#[tokio::test(start_paused = true)]
async fn waits_are_jittered_within_hint_and_one_and_a_half_hint() {
    let mut waits = Vec::new();
    for _ in 0..10 {
        // Ten independent clients, each told Retry-After: 2.
        let mock = MockOpenRouter::new();
        mock.model(A)
            .respond(Reply::status(429).retry_after(2))
            .once()
            .then(Reply::ok());
        let svc = stack(one_model(), &mock);
        let start = Instant::now();
        let served = send(&svc).await.unwrap();
        assert_eq!(&*served.model, A);
        assert_eq!(mock.calls(A), 2);
        waits.push(start.elapsed());
    }
    for w in &waits {
        assert!(*w >= secs(2) && *w <= secs(3), "{waits:?}");
    }
    let first = waits[0];
    assert!(waits.iter().any(|w| *w != first), "{waits:?}");

    // Never past the deadline: a 4 s hint with a 5 s deadline waits at most 4.5 s.
    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(Reply::status(429).retry_after(4))
        .once()
        .then(Reply::ok());
    let b = OpenRouterLayer::builder()
        .chain([A])
        .deadline(secs(5))
        .attempt_timeout(secs(5))
        .retry_policy(RetryPolicy::new().backoff_cap(secs(1)));
    let start = Instant::now();
    send(&stack(b, &mock)).await.unwrap();
    let w = start.elapsed();
    assert!(w >= secs(4) && w <= Duration::from_millis(4500), "{w:?}");
}

#[tokio::test(start_paused = true)]
async fn ten_concurrent_waiters_each_make_their_own_call() {
    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(Reply::status(429).retry_after(2))
        .times(10)
        .then(Reply::ok());
    let svc = stack(one_model(), &mock);
    let start = Instant::now();
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { (send(&svc).await, Instant::now()) })
        })
        .collect();
    for h in handles {
        let (res, at) = h.await.unwrap();
        let served = res.unwrap();
        assert_eq!(&*served.model, A);
        assert!(at - start >= secs(2));
    }
    // Ten 429s, then ten calls of their own: none turned away by a probe or a cooldown.
    assert_eq!(mock.calls(A), 20);
}

#[tokio::test(start_paused = true)]
async fn a_short_max_rate_limit_wait_answers_at_once_from_json_too() {
    let json = r#"{"default_chain": ["anthropic/claude-3.5-sonnet", "openai/gpt-4o"],
                   "settings": {"max_rate_limit_wait_seconds": 1}}"#;
    let mock = MockOpenRouter::new();
    mock.default_reply(Reply::status(429).retry_after(10));
    let svc = ServiceBuilder::new()
        .layer(OpenRouterLayer::from_json(json).unwrap())
        .service(mock.clone());
    let start = Instant::now();
    let err = send(&svc).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(err.kind(), ErrorKind::Exhausted);
    assert_eq!(err.retry_after(), Some(secs(10)));
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    // No third upstream call.
    assert_eq!(mock.total_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_needed_wait_past_the_deadline_is_deadline_exceeded_with_every_attempt() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(429).retry_after(5));
    let b = OpenRouterLayer::builder()
        .chain([A])
        .deadline(secs(3))
        .attempt_timeout(secs(3))
        .retry_policy(RetryPolicy::new().backoff_cap(secs(1)));
    let start = Instant::now();
    let err = send(&stack(b, &mock)).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(err.attempts().len(), 1);
    assert_eq!(err.attempts()[0].kind(), ErrorKind::RateLimited);
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(err.retry_after(), Some(secs(5)));
}

/// A random source at its ceiling: every jittered backoff is its full length.
struct Ceiling;

impl tower::util::rng::Rng for Ceiling {
    fn next_u64(&mut self) -> u64 {
        u64::MAX
    }
}

#[tokio::test(start_paused = true)]
async fn a_needed_backoff_past_the_deadline_is_deadline_exceeded_with_every_attempt() {
    const B: &str = "openai/gpt-4o";
    // A 500 after 4 s of a 5 s deadline: its retry is due after a 2 s backoff, 1 s is left.
    let b = |chain: &[&str]| {
        OpenRouterLayer::builder()
            .chain(chain.to_vec())
            .deadline(secs(5))
            .attempt_timeout(secs(5))
            .retry_policy(
                RetryPolicy::new()
                    .max_retries(1)
                    .backoff_base(secs(2))
                    .backoff_cap(secs(2))
                    .rng(Ceiling),
            )
    };
    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(Reply::delay(secs(4), Reply::status(500)));
    let start = Instant::now();
    let err = send(&stack(b(&[A]), &mock)).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(4));
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    let attempts: Vec<_> = err
        .attempts()
        .iter()
        .map(|a| (&*a.model, a.retry, a.kind(), a.elapsed))
        .collect();
    assert_eq!(attempts, [(A, 0, ErrorKind::ProviderError, secs(4))]);
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(mock.calls(A), 1);

    // Another model can still be tried: it is, and it answers.
    mock.model(B).respond(Reply::ok());
    let served = send(&stack(b(&[A, B]), &mock)).await.unwrap();
    assert_eq!(&*served.model, B);
    assert_eq!((mock.calls(A), mock.calls(B)), (2, 1));

    // It fails too (a 503: not retried, nothing else to try): DeadlineExceeded, every
    // attempt.
    mock.model(B).respond(Reply::status(503));
    let err = send(&stack(b(&[A, B]), &mock)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    let attempts: Vec<_> = err
        .attempts()
        .iter()
        .map(|a| (&*a.model, a.kind()))
        .collect();
    assert_eq!(
        attempts,
        [
            (A, ErrorKind::ProviderError),
            (B, ErrorKind::ModelUnavailable)
        ]
    );

    // The same with a retry due after its own Retry-After (3 s, 1 s left).
    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(Reply::delay(secs(4), Reply::status(500).retry_after(3)));
    let err = send(&stack(b(&[A]), &mock)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    let attempts: Vec<_> = err
        .attempts()
        .iter()
        .map(|a| (&*a.model, a.kind()))
        .collect();
    assert_eq!(attempts, [(A, ErrorKind::ProviderError)]);
    assert_eq!(err.retry_after(), Some(secs(3)));
    assert_eq!(mock.calls(A), 1);
}

#[test]
fn backoffs_that_cannot_fit_in_the_deadline_are_rejected_naming_the_setting() {
    // Retries 3, base 2 s, cap 4 s: up to 2 + 4 + 4 = 10 s of backoff, 5 s deadline.
    let b = || {
        OpenRouterLayer::builder()
            .chain([A])
            .deadline(secs(5))
            .attempt_timeout(secs(5))
    };
    let policy = RetryPolicy::new()
        .max_retries(3)
        .backoff_base(secs(2))
        .backoff_cap(secs(4));
    let err = b().retry_policy(policy.clone()).build().unwrap_err();
    assert_eq!(err.field(), "max_retries");
    assert!(err.to_string().contains("deadline"), "{err}");
    // A per-model max_retries counts too.
    let err = b()
        .chain([tower_openrouter::fallback::ChainModel::new(A).max_retries(3)])
        .retry_policy(policy.clone().max_retries(0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_retries");
    // With the default 500 ms base the same retries back off 0.5 + 1 + 2 = 3.5 s: fits.
    b().retry_policy(RetryPolicy::new().max_retries(3).backoff_cap(secs(4)))
        .build()
        .unwrap();
    assert_eq!(
        RetryPolicy::new()
            .max_retries(3)
            .backoff_cap(secs(4))
            .largest_backoffs(3),
        Duration::from_millis(3500)
    );
}
