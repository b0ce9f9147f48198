//! Panic mode (issue 9, item 2): a request that finds every model of its chain cooling
//! down before any upstream call gets one forced probe, shared by every caller in the same
//! spot: exactly one call upstream, to the model whose cooldown ends first; the others wait
//! for its outcome within their own deadline. Through `OpenRouterLayer` over
//! `MockOpenRouter`, paused time.
#![cfg(feature = "mock")]

use std::time::Duration;

use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::health::{BreakerState, HealthConfig, HealthTracker};
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::stack::{OpenRouter, OpenRouterLayer};
use tower_openrouter::{AttemptRecord, Deadline, Error, ErrorKind};

const A: &str = "anthropic/claude-3.5-sonnet";
const B: &str = "openai/gpt-4o";
const BODY: &str = r#"{"model":"anthropic/claude-3.5-sonnet","messages":[]}"#;

type Svc = OpenRouter<MockOpenRouter>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn request() -> http::Request<String> {
    http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(BODY.to_owned())
        .unwrap()
}

async fn send_req(svc: &Svc, req: http::Request<String>) -> Result<ServedBy, Error> {
    let resp = svc.clone().oneshot(req).await?;
    Ok(resp.extensions().get::<ServedBy>().cloned().unwrap())
}

/// A stack over `mock` with A and B both tripped by one request: A cools for 60 s, B for
/// 30 s (their `Retry-After`s; one failure trips a model, no jitter), so B's cooldown ends
/// first. Upstream calls so far: one each.
async fn both_cooling(mock: &MockOpenRouter) -> (Svc, HealthTracker) {
    mock.model(A).respond(Reply::status(429).retry_after(60));
    mock.model(B).respond(Reply::status(429).retry_after(30));
    let layer = OpenRouterLayer::builder()
        .chain([A, B])
        .wait_for_rate_limit(false)
        .health_config(HealthConfig::default().jitter(0.0).consecutive_failures(1))
        .build()
        .unwrap();
    let health = layer.health().clone();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    let err = send_req(&svc, request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted);
    assert_eq!((mock.calls(A), mock.calls(B)), (1, 1));
    let now = Instant::now();
    assert_eq!(health.cooldown_until(A), Some(now + secs(60)));
    assert_eq!(health.cooldown_until(B), Some(now + secs(30)));
    (svc, health)
}

fn kinds(attempts: &[AttemptRecord]) -> Vec<(&str, ErrorKind)> {
    attempts.iter().map(|a| (&*a.model, a.kind())).collect()
}

const SKIPPED: [(&str, ErrorKind); 2] = [
    (A, ErrorKind::ModelCoolingDown),
    (B, ErrorKind::ModelCoolingDown),
];

fn spawn_callers(
    svc: &Svc,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(Result<ServedBy, Error>, Instant)>> {
    (0..n)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { (send_req(&svc, request()).await, Instant::now()) })
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_hundred_callers_in_panic_send_one_probe_and_all_succeed_when_it_does() {
    let mock = MockOpenRouter::new();
    let (svc, health) = both_cooling(&mock).await;
    // B is back, and slow enough that every caller arrives while its probe is in flight.
    mock.model(B).respond(Reply::delay(secs(1), Reply::ok()));
    let start = Instant::now();
    let callers = spawn_callers(&svc, 100);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 100 callers in panic: one probe upstream, to B (today: 100).
    assert_eq!((mock.calls(A), mock.calls(B)), (1, 2));
    for h in callers {
        let (res, at) = h.await.unwrap();
        let served = res.unwrap();
        assert_eq!(&*served.model, B);
        assert_eq!(kinds(&served.attempts), SKIPPED);
        // The probe answered after 1 s; each follower's own call took 1 s more.
        assert!(
            at - start == secs(1) || at - start == secs(2),
            "{:?}",
            at - start
        );
    }
    // The probe and 99 calls of their own; nothing to A.
    assert_eq!((mock.calls(A), mock.calls(B)), (1, 1 + 100));
    // The probe's success closed B's breaker; A still cools.
    let b = health
        .snapshot()
        .into_iter()
        .find(|m| &*m.model == B)
        .unwrap();
    assert_eq!(b.state, BreakerState::Closed);
    assert!(!health.is_available(A));
}

#[tokio::test(start_paused = true)]
async fn when_the_probe_fails_the_others_fail_at_once_with_the_hint() {
    let mock = MockOpenRouter::new();
    let (svc, health) = both_cooling(&mock).await;
    // B still fails (a 500, which would be retried on its own: the probe is one call).
    mock.model(B)
        .respond(Reply::delay(secs(1), Reply::status(500)));
    let start = Instant::now();
    let callers = spawn_callers(&svc, 100);
    let mut probe = 0;
    for h in callers {
        let (res, at) = h.await.unwrap();
        let err = res.unwrap_err();
        // Every caller is done when the probe's answer comes, 1 s in.
        assert_eq!(at - start, secs(1));
        assert_eq!(err.kind(), ErrorKind::Exhausted);
        // The soonest cooldown end: B's, 30 s from the probe's failure (its second trip
        // in a row: 2 x 15 s), before A's (59 s left).
        assert_eq!(err.retry_after(), Some(secs(30)));
        if err.attempts().len() == 3 {
            probe += 1;
            assert_eq!(err.attempts()[2].kind(), ErrorKind::ProviderError);
            assert_eq!(&*err.attempts()[2].model, B);
        } else {
            assert_eq!(kinds(err.attempts()), SKIPPED);
        }
    }
    assert_eq!(probe, 1);
    // One probe, no retry of it, nothing else.
    assert_eq!((mock.calls(A), mock.calls(B)), (1, 1 + 1));
    assert_eq!(health.cooldown_until(B), Some(start + secs(31)));
}

#[tokio::test(start_paused = true)]
async fn a_caller_whose_deadline_ends_before_the_probe_answers_gets_deadline_exceeded() {
    let mock = MockOpenRouter::new();
    let (svc, _health) = both_cooling(&mock).await;
    mock.model(B).respond(Reply::delay(secs(5), Reply::ok()));
    let start = Instant::now();
    let leader = spawn_callers(&svc, 1);
    tokio::task::yield_now().await;
    // A caller with 2 s left arrives while the probe is in flight.
    let mut req = request();
    req.extensions_mut().insert(Deadline::after(secs(2)));
    let err = send_req(&svc, req).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(2));
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(kinds(err.attempts()), SKIPPED);
    // Still a hint: B's cooldown end, 28 s away.
    assert_eq!(err.retry_after(), Some(secs(28)));
    // The leader's probe goes on and answers.
    let (res, at) = leader.into_iter().next().unwrap().await.unwrap();
    assert_eq!(&*res.unwrap().model, B);
    assert_eq!(at - start, secs(5));
    assert_eq!(mock.calls(B), 1 + 1);
}

#[tokio::test(start_paused = true)]
async fn a_single_caller_in_panic_gets_its_forced_probe() {
    let mock = MockOpenRouter::new();
    let (svc, health) = both_cooling(&mock).await;
    // Still failing: the probe goes to B, the error has every attempt and the hint.
    let err = send_req(&svc, request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted);
    assert_eq!(
        kinds(err.attempts()),
        [
            (A, ErrorKind::ModelCoolingDown),
            (B, ErrorKind::ModelCoolingDown),
            (B, ErrorKind::RateLimited),
        ]
    );
    assert_eq!((mock.calls(A), mock.calls(B)), (1, 2));
    assert_eq!(err.retry_after(), Some(secs(30)));
    // B is back: the next caller's probe answers and closes B's breaker.
    mock.model(B).respond(Reply::ok());
    let served = send_req(&svc, request()).await.unwrap();
    assert_eq!(&*served.model, B);
    assert_eq!(kinds(&served.attempts), SKIPPED);
    assert_eq!((mock.calls(A), mock.calls(B)), (1, 3));
    assert!(health.is_available(B));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_hands_the_lead_to_one_of_the_waiting_callers() {
    let mock = MockOpenRouter::new();
    let (svc, health) = both_cooling(&mock).await;
    mock.model(B).respond(Reply::delay(secs(1), Reply::ok()));
    let start = Instant::now();
    let leader = spawn_callers(&svc, 1).pop().unwrap();
    tokio::task::yield_now().await;
    let followers = spawn_callers(&svc, 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.calls(B), 1 + 1);
    // The leader's caller gives up mid-probe: no outcome, so one follower probes anew.
    leader.abort();
    for h in followers {
        let (res, at) = h.await.unwrap();
        assert_eq!(&*res.unwrap().model, B);
        let took = at - start;
        assert!(
            took == Duration::from_millis(1500) || took == Duration::from_millis(2500),
            "{took:?}"
        );
    }
    // The cancelled probe, the new one, and nine calls of their own.
    assert_eq!(mock.calls(B), 1 + 1 + 1 + 9);
    assert!(health.is_available(B));
}
