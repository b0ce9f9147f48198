//! The retry layer: what is retried, exact delays, Retry-After, the deadline, the budget,
//! byte-identical replays, readiness before every attempt, and cancellation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{hanging, ok, req, upstream, Req, Resp};
use http_body_util::Full;
use tokio::time::Instant;
use tower::util::rng::{HasherRng, Rng};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_openrouter::body::full_bytes;
use tower_openrouter::classify::ClassifyLayer;
use tower_openrouter::retry::{RetryLayer, RetryPolicy};
use tower_openrouter::timeout::{AttemptTimeoutLayer, DeadlineLayer};
use tower_openrouter::{Action, Attempt, AttemptLog, Deadline, Error, ErrorKind};

/// A random source that always gives the same number: `Fixed(u64::MAX)` makes every
/// jittered delay its ceiling, `Fixed(0)` makes it zero.
struct Fixed(u64);

impl Rng for Fixed {
    fn next_u64(&mut self) -> u64 {
        self.0
    }
}

const MAX: Fixed = Fixed(u64::MAX);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn err(kind: ErrorKind) -> Error {
    Error::new(kind)
}

/// Fails with `kinds[n]` on call `n`, answers once they run out.
fn failing(
    kinds: &'static [ErrorKind],
) -> (
    impl tower::Service<Req, Response = Resp, Error = Error, Future = impl Send> + Clone + Send,
    common::Seen,
) {
    upstream(move |n, _| async move {
        match kinds.get(n) {
            Some(k) => Err(err(*k)),
            None => Ok(ok()),
        }
    })
}

fn layer(policy: RetryPolicy) -> RetryLayer {
    RetryLayer::new(policy).unwrap()
}

#[tokio::test(start_paused = true)]
async fn two_500s_then_200_makes_three_calls_with_delays_within_the_backoff() {
    use ErrorKind::ProviderError as E500;
    // Random jitter: each delay within [0, min(cap, base * 2^n)].
    let (svc, seen) = failing(&[E500, E500]);
    let policy = RetryPolicy::new()
        .backoff_base(ms(100))
        .backoff_cap(ms(150));
    let t0 = Instant::now();
    layer(policy).layer(svc).oneshot(req("a/b")).await.unwrap();
    assert_eq!(seen.count(), 3);
    assert_eq!(seen.starts(t0)[0], 0.0);
    // Compared as Durations: 0.231 - 0.081 as floats is 0.15000000000000002.
    let g = seen.gaps();
    assert!(g[0] <= ms(100) && g[1] <= ms(150), "{g:?}");

    // The jitter at its ceiling: exactly base, then 2 * base (under the cap).
    let (svc, seen) = failing(&[E500, E500]);
    let policy = RetryPolicy::new().backoff_base(ms(100)).rng(MAX);
    let t0 = Instant::now();
    layer(policy).layer(svc).oneshot(req("a/b")).await.unwrap();
    assert_eq!(seen.starts(t0), [0.0, 0.1, 0.3]);
}

#[tokio::test(start_paused = true)]
async fn three_500s_with_max_retries_2_return_the_third_error() {
    use ErrorKind::ProviderError as E500;
    let (svc, seen) = failing(&[E500, E500, E500, E500]);
    let e = layer(RetryPolicy::new().rng(Fixed(0)))
        .layer(svc)
        .oneshot(req("a/b"))
        .await
        .unwrap_err();
    assert_eq!((e.kind(), seen.count()), (E500, 3));
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_are_never_retried() {
    for kind in [
        ErrorKind::InvalidRequest,
        ErrorKind::Unauthorized,
        ErrorKind::InsufficientCredits,
    ] {
        // Neither with the default policy nor with one that retries fallback errors.
        for policy in [
            RetryPolicy::new(),
            RetryPolicy::new().retry_actions([Action::Retry, Action::Fallback]),
        ] {
            let kinds: &'static [ErrorKind] = Box::leak(Box::new([kind]));
            let (svc, seen) = failing(kinds);
            let e = layer(policy)
                .layer(svc)
                .oneshot(req("a/b"))
                .await
                .unwrap_err();
            assert_eq!((e.kind(), seen.count()), (kind, 1));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_2s_without_fallback_retries_between_2_and_3_seconds() {
    let (svc, seen) = upstream(|n, _| async move {
        if n == 0 {
            Err(err(ErrorKind::RateLimited)
                .with_status(http::StatusCode::TOO_MANY_REQUESTS)
                .with_retry_after(secs(2)))
        } else {
            Ok(ok())
        }
    });
    // No fallback layer: rate limits (action Fallback) are retried on the same model.
    let policy = RetryPolicy::new().retry_actions([Action::Retry, Action::Fallback]);
    let t0 = Instant::now();
    layer(policy.clone())
        .layer(svc.clone())
        .oneshot(req("a/b"))
        .await
        .unwrap();
    let s = seen.starts(t0);
    assert_eq!(s.len(), 2);
    assert!(s[1] >= 2.0 && s[1] < 3.0, "{s:?}");
    // The documented jitter: at most 10% of the hint (here 200 ms).
    assert!(s[1] <= 2.2, "{s:?}");

    // At the jitter's ceiling: exactly 2.2 s.
    let (svc, seen) = upstream(|n, _| async move {
        match n {
            0 => Err(err(ErrorKind::RateLimited).with_retry_after(secs(2))),
            _ => Ok(ok()),
        }
    });
    let t0 = Instant::now();
    layer(policy.rng(MAX))
        .layer(svc)
        .oneshot(req("a/b"))
        .await
        .unwrap();
    assert_eq!(seen.starts(t0), [0.0, 2.2]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_cap_returns_at_once() {
    let (svc, seen) =
        upstream(|_, _| async { Err(err(ErrorKind::ProviderError).with_retry_after(secs(3600))) });
    let t0 = Instant::now();
    let e = layer(RetryPolicy::new())
        .layer(svc)
        .oneshot(req("a/b"))
        .await
        .unwrap_err();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(seen.count(), 1);
    assert_eq!(e.retry_after(), Some(secs(3600)));
    assert_eq!(e.kind(), ErrorKind::ProviderError);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_time_left_returns_at_once() {
    let (svc, seen) =
        upstream(|_, _| async { Err(err(ErrorKind::ProviderError).with_retry_after(secs(20))) });
    let mut r = req("a/b");
    r.extensions_mut().insert(Deadline::after(secs(10)));
    let t0 = Instant::now();
    let e = layer(RetryPolicy::new())
        .layer(svc)
        .oneshot(r)
        .await
        .unwrap_err();
    assert_eq!((t0.elapsed(), seen.count()), (Duration::ZERO, 1));
    assert_eq!(e.retry_after(), Some(secs(20)));
}

#[tokio::test(start_paused = true)]
async fn a_backoff_longer_than_the_time_left_returns_at_once() {
    let (svc, seen) = failing(&[ErrorKind::ProviderError]);
    let mut r = req("a/b");
    r.extensions_mut().insert(Deadline::after(secs(1)));
    let policy = RetryPolicy::new().backoff_base(secs(2)).rng(MAX);
    let t0 = Instant::now();
    let e = layer(policy).layer(svc).oneshot(r).await.unwrap_err();
    assert_eq!((t0.elapsed(), seen.count()), (Duration::ZERO, 1));
    assert_eq!(e.kind(), ErrorKind::ProviderError);
}

/// Deadline 10 s, attempts of 4 s that never answer, retries on timeout.
#[tokio::test(start_paused = true)]
async fn attempts_and_backoff_never_outlive_the_deadline() {
    // Jitter at the ceiling: backoff 1 s, then 2 s. Attempts start at 0 and 5; the one
    // at 9 s + 2 s would pass the deadline, so the timeout comes back at 9 s.
    let stack = |rng: Fixed| {
        let (svc, seen) = hanging();
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(secs(10)).unwrap())
            .layer(layer(
                RetryPolicy::new()
                    .backoff_base(secs(1))
                    .backoff_cap(secs(2))
                    .rng(rng),
            ))
            .layer(
                AttemptTimeoutLayer::builder(secs(4))
                    .on_timeout(Action::Retry)
                    .build()
                    .unwrap(),
            )
            .service(svc);
        (svc, seen)
    };
    let (svc, seen) = stack(MAX);
    let t0 = Instant::now();
    let e = svc.oneshot(req("a/b")).await.unwrap_err();
    assert_eq!(t0.elapsed(), secs(9));
    assert_eq!(e.kind(), ErrorKind::AttemptTimeout);
    assert_eq!(seen.starts(t0), [0.0, 5.0]);

    // No jitter: attempts at 0, 4 and 8; the deadline cuts the third at exactly 10 s.
    let (svc, seen) = stack(Fixed(0));
    let t0 = Instant::now();
    let e = svc.oneshot(req("a/b")).await.unwrap_err();
    assert_eq!(t0.elapsed(), secs(10));
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(seen.starts(t0), [0.0, 4.0, 8.0]);
    assert!(seen.starts(t0).iter().all(|s| *s < 10.0));
    assert_eq!(e.attempts().len(), 2);
    assert_eq!(
        e.last_attempt_error().map(Error::kind),
        Some(ErrorKind::AttemptTimeout)
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_at_20_percent_plus_the_reserve() {
    let (svc, seen) = upstream(|_, _| async { Err(err(ErrorKind::ProviderError)) });
    let policy = RetryPolicy::new()
        .max_retries(3)
        .backoff_base(ms(1))
        .backoff_cap(ms(1));
    let svc = layer(policy).layer(svc);
    let calls = (0..1000).map(|_| svc.clone().oneshot(req("a/b")));
    let results = futures_util_join_all(calls).await;
    assert!(results.iter().all(|r| r.is_err()));
    let retries = seen.count() - 1000;
    // Default budget: 20% of 1,000 requests plus a reserve of 10/s over its 10 s window.
    assert!(retries <= 200 + 100, "{retries}");
    assert_eq!(retries, 300);
    // Without the budget every request would retry 3 times.
    assert!(retries < 3000);
}

/// `join_all` without a dependency: spawn each future on the test runtime.
async fn futures_util_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_retried_request_is_byte_for_byte_identical() {
    let (svc, seen) = failing(&[ErrorKind::ProviderError, ErrorKind::Transport]);
    let original = req("anthropic/claude-sonnet-4.5");
    let sent_body = full_bytes(original.body());
    layer(RetryPolicy::new().rng(Fixed(0)))
        .layer(svc)
        .oneshot(original)
        .await
        .unwrap();
    let got = seen.requests();
    assert_eq!(got.len(), 3);
    for r in &got[1..] {
        assert_eq!(r.method(), got[0].method());
        assert_eq!(r.uri(), got[0].uri());
        assert_eq!(r.version(), got[0].version());
        assert_eq!(r.headers(), got[0].headers());
        let body = full_bytes(r.body());
        assert_eq!(body, sent_body);
        // Shared, not copied.
        assert_eq!(body.as_ptr(), sent_body.as_ptr());
    }
}

#[tokio::test(start_paused = true)]
async fn retries_are_logged_and_numbered_in_the_attempt() {
    let (svc, seen) = upstream(|n, _| async move {
        tokio::time::sleep(secs(1)).await;
        if n < 2 {
            Err(err(ErrorKind::UpstreamTimeout))
        } else {
            Ok(ok())
        }
    });
    let log = AttemptLog::new();
    let mut r = req("openai/gpt-4o");
    let mut attempt = Attempt::new("openai/gpt-4o");
    attempt.index = 2;
    r.extensions_mut().insert(attempt);
    r.extensions_mut().insert(log.clone());
    layer(RetryPolicy::new().rng(Fixed(0)))
        .layer(svc)
        .oneshot(r)
        .await
        .unwrap();
    let retries: Vec<u32> = seen
        .requests()
        .iter()
        .map(|r| r.extensions().get::<Attempt>().unwrap().retry)
        .collect();
    assert_eq!(retries, [0, 1, 2]);
    let records = log.snapshot();
    let got: Vec<_> = records
        .iter()
        .map(|a| (&*a.model, a.index, a.retry, a.elapsed, a.kind()))
        .collect();
    assert_eq!(
        got,
        [
            ("openai/gpt-4o", 2, 0, secs(1), ErrorKind::UpstreamTimeout),
            ("openai/gpt-4o", 2, 1, secs(1), ErrorKind::UpstreamTimeout),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn max_retries_per_model_comes_from_the_attempt() {
    for (max, calls) in [(Some(0), 1), (Some(4), 5), (None, 3)] {
        let (svc, seen) = upstream(|_, _| async { Err(err(ErrorKind::ProviderError)) });
        let mut r = req("a/b");
        let mut attempt = Attempt::new("a/b");
        attempt.max_retries = max;
        r.extensions_mut().insert(attempt);
        let policy = RetryPolicy::new().rng(Fixed(0)).no_budget();
        let _ = layer(policy).layer(svc).oneshot(r).await;
        assert_eq!(seen.count(), calls, "max_retries {max:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retried_kinds_are_configurable() {
    // Rate limits are retried when asked; provider errors can be excluded.
    let policy = RetryPolicy::new()
        .rng(Fixed(0))
        .retry_kind(ErrorKind::RateLimited)
        .never_retry_kind(ErrorKind::ProviderError);
    let (svc, seen) = failing(&[ErrorKind::RateLimited]);
    layer(policy.clone())
        .layer(svc)
        .oneshot(req("a/b"))
        .await
        .unwrap();
    assert_eq!(seen.count(), 2);
    let (svc, seen) = failing(&[ErrorKind::ProviderError]);
    let e = layer(policy)
        .layer(svc)
        .oneshot(req("a/b"))
        .await
        .unwrap_err();
    assert_eq!((e.kind(), seen.count()), (ErrorKind::ProviderError, 1));
    // A deadline error is never retried, whatever the policy says.
    let p = RetryPolicy::new().retry_kind(ErrorKind::DeadlineExceeded);
    assert!(!p.is_retryable(&err(ErrorKind::DeadlineExceeded)));
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_called_before_every_attempt() {
    let (mock, mut handle) = tower_test::mock::pair::<Req, Resp>();
    let svc = layer(RetryPolicy::new().rng(Fixed(0))).layer(mock);
    // One permit: the first attempt may go.
    handle.allow(1);
    let call = tokio::spawn(svc.oneshot(req("a/b")));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(err(ErrorKind::ProviderError));
    // The retry waits for readiness: no request arrives while the mock is not ready
    // (the mock panics if `call` comes without a successful `poll_ready`).
    let waited = tokio::time::timeout(secs(30), handle.next_request()).await;
    assert!(waited.is_err(), "a retry was sent without readiness");
    handle.allow(1);
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(ok());
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_caller_makes_no_further_call() {
    let (svc, seen) = failing(&[ErrorKind::ProviderError]);
    let policy = RetryPolicy::new().backoff_base(secs(1)).rng(MAX);
    let svc = layer(policy).layer(svc);
    // Dropped after 500 ms, in the middle of the 1 s backoff.
    let cut = tokio::time::timeout(ms(500), svc.oneshot(req("a/b"))).await;
    assert!(cut.is_err());
    tokio::time::sleep(secs(60)).await;
    assert_eq!(seen.count(), 1);
}

#[test]
fn full_jitter_ceilings_double_up_to_the_cap() {
    let p = RetryPolicy::new()
        .backoff_base(ms(100))
        .backoff_cap(secs(1))
        .rng(MAX);
    let got: Vec<_> = [0, 1, 2, 3, 4, 40].iter().map(|n| p.backoff(*n)).collect();
    assert_eq!(got, [ms(100), ms(200), ms(400), ms(800), secs(1), secs(1)]);
    let p = p.rng(Fixed(0));
    assert_eq!(p.backoff(3), Duration::ZERO);
    // A seeded source stays within the bounds.
    let p = p.rng(HasherRng::default());
    for n in 0..8 {
        assert!(p.backoff(n) <= ms(100 * (1 << n)).min(secs(1)));
    }
    // Retry-After jitter: 10% of the hint, at most 500 ms.
    let p = RetryPolicy::new().rng(MAX);
    assert_eq!(p.retry_after_delay(secs(2)), Some(ms(2200)));
    assert_eq!(p.retry_after_delay(secs(30)), Some(ms(30_500)));
    assert_eq!(p.retry_after_delay(secs(60)), Some(secs(60)));
}

#[test]
fn a_hint_over_the_cap_is_no_wait_never_a_clamped_one() {
    // The doc says "never past retry_after_cap": a 90 s hint against the 60 s cap is not a
    // 60 s wait (calling again before the server said it may) nor a 90 s one: no wait.
    let p = RetryPolicy::new().rng(MAX);
    assert_eq!(p.retry_after_delay(secs(90)), None);
    assert_eq!(p.retry_after_delay(secs(60) + ms(1)), None);
    let p = RetryPolicy::new().retry_after_cap(secs(5)).rng(MAX);
    assert_eq!(p.retry_after_delay(secs(5)), Some(secs(5)));
    assert_eq!(p.retry_after_delay(ms(4900)), Some(secs(5)));
    assert_eq!(p.retry_after_delay(secs(6)), None);
}

#[test]
fn settings_that_cannot_hold_are_config_errors() {
    let cases = [
        (
            RetryPolicy::new().backoff_base(Duration::ZERO),
            None,
            "backoff_base must be greater than zero",
        ),
        (
            RetryPolicy::new()
                .backoff_base(secs(2))
                .backoff_cap(secs(1)),
            None,
            "backoff_cap (1s) is shorter than backoff_base (2s)",
        ),
        (
            RetryPolicy::new().backoff_cap(secs(120)),
            Some(secs(60)),
            "backoff_cap (120s) is longer than deadline (60s)",
        ),
        (
            RetryPolicy::new().retry_after_cap(Duration::ZERO),
            None,
            "retry_after_cap must be greater than zero",
        ),
        (
            RetryPolicy::new().budget(secs(0), 10, 0.2),
            None,
            "budget_ttl (0ns) must be between 1s and 60s",
        ),
        (
            RetryPolicy::new().budget(secs(10), 10, -0.5),
            None,
            "budget_retry_percent (-0.5) must be between 0 and 1000",
        ),
    ];
    for (policy, deadline, message) in cases {
        let e = policy.validate(deadline).unwrap_err();
        assert_eq!(e.to_string(), message);
        assert!(message.starts_with(e.field()));
    }
    let e = RetryLayer::new(RetryPolicy::new().backoff_cap(Duration::ZERO)).unwrap_err();
    assert_eq!(e.field(), "backoff_cap");
    assert!(RetryPolicy::new().validate(Some(secs(10))).is_ok());
    let shared = Arc::new(tower::retry::budget::TpsBudget::default());
    let l = RetryLayer::new(RetryPolicy::new().shared_budget(shared.clone())).unwrap();
    assert!(Arc::ptr_eq(l.budget().unwrap(), &shared));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Full jitter stays within `0..=min(cap, base * 2^n)` for any settings and draw.
    #[test]
    fn backoff_stays_within_its_ceiling(
        base_ms in 1u64..5_000,
        extra_ms in 0u64..60_000,
        n in 0u32..64,
        draw in proptest::num::u64::ANY,
    ) {
        let base = ms(base_ms);
        let cap = base + ms(extra_ms);
        let p = RetryPolicy::new().backoff_base(base).backoff_cap(cap).rng(Fixed(draw));
        let ceiling = base.checked_mul(1u32.checked_shl(n).unwrap_or(u32::MAX)).unwrap_or(cap).min(cap);
        proptest::prop_assert!(p.backoff(n) <= ceiling);
        // The hint's wait is within [hint, hint + min(hint / 10, 500 ms)].
        let hint = ms(extra_ms);
        let wait = p.retry_after_delay(hint).unwrap();
        proptest::prop_assert!(wait >= hint && wait <= hint + (hint / 10).min(ms(500)));
        // Never past the cap, never shorter than the hint; a hint over the cap, no wait.
        let p = p.retry_after_cap(ms(base_ms + 1));
        match p.retry_after_delay(hint) {
            Some(wait) => proptest::prop_assert!(hint <= wait && wait <= ms(base_ms + 1)),
            None => proptest::prop_assert!(hint > ms(base_ms + 1)),
        }
    }
}

#[test]
fn the_services_and_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let (svc, _) = hanging();
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(10)).unwrap())
        .layer(layer(RetryPolicy::new()))
        .layer(AttemptTimeoutLayer::new(secs(4)).unwrap())
        .service(svc);
    send(&svc);
    send(&svc.oneshot(req("a/b")));
    send_sync(&layer(RetryPolicy::new()));
    send_sync(&RetryPolicy::new());
}

/// An HTTP upstream behind the real classifier: answers call `n` with `answers[n]`
/// (status, `Retry-After`, body), then 200.
fn http_upstream(
    answers: &'static [(u16, Option<&'static str>, &'static str)],
) -> (
    impl tower::Service<
            Req,
            Response = http::Response<tower_openrouter::classify::ResponseBody<Full<Bytes>>>,
            Error = Error,
        > + Clone
        + Send,
    common::Seen,
) {
    let (svc, seen) = upstream(move |n, _| async move {
        let Some((status, retry_after, body)) = answers.get(n) else {
            return Ok(ok());
        };
        let mut resp = http::Response::builder()
            .status(*status)
            .header("content-type", "application/json");
        if let Some(ra) = retry_after {
            resp = resp.header("retry-after", *ra);
        }
        Ok(resp
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap())
    });
    (ClassifyLayer::new().layer(svc), seen)
}

const RATE_LIMITED: &str = r#"{"error":{"code":429,"message":"Rate limit exceeded"}}"#;

#[tokio::test(start_paused = true)]
async fn classified_429_with_retry_after_2_retries_between_2_and_3_seconds() {
    let (svc, seen) = http_upstream(&[(429, Some("2"), RATE_LIMITED)]);
    let policy = RetryPolicy::new().retry_actions([Action::Retry, Action::Fallback]);
    let t0 = Instant::now();
    let resp = layer(policy).layer(svc).oneshot(req("a/b")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let s = seen.starts(t0);
    assert_eq!(s.len(), 2);
    assert!(s[1] >= 2.0 && s[1] < 3.0, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn classified_429_with_retry_after_3600_comes_back_at_once() {
    let (svc, seen) = http_upstream(&[(429, Some("3600"), RATE_LIMITED)]);
    let policy = RetryPolicy::new().retry_actions([Action::Retry, Action::Fallback]);
    let t0 = Instant::now();
    let e = layer(policy)
        .layer(svc)
        .oneshot(req("a/b"))
        .await
        .unwrap_err();
    assert_eq!((t0.elapsed(), seen.count()), (Duration::ZERO, 1));
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(secs(3600)));
}

#[tokio::test(start_paused = true)]
async fn classified_400_401_402_make_exactly_one_call() {
    const ANSWERS: [(u16, &str); 3] = [
        (
            400,
            r#"{"error":{"code":400,"message":"messages is required"}}"#,
        ),
        (
            401,
            r#"{"error":{"code":401,"message":"No auth credentials found"}}"#,
        ),
        (
            402,
            r#"{"error":{"code":402,"message":"Insufficient credits"}}"#,
        ),
    ];
    for (i, (status, body)) in ANSWERS.iter().enumerate() {
        let answers: &'static [_] = Box::leak(Box::new([(*status, None, *body)]));
        let (svc, seen) = http_upstream(answers);
        let policy = RetryPolicy::new().retry_actions([Action::Retry, Action::Fallback]);
        let e = layer(policy)
            .layer(svc)
            .oneshot(req("a/b"))
            .await
            .unwrap_err();
        let want = [
            ErrorKind::InvalidRequest,
            ErrorKind::Unauthorized,
            ErrorKind::InsufficientCredits,
        ][i];
        assert_eq!(
            (e.kind(), e.action(), seen.count()),
            (want, Action::Fatal, 1)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn classified_500_twice_then_200_makes_three_calls() {
    const E500: (u16, Option<&str>, &str) = (
        500,
        None,
        r#"{"error":{"code":500,"message":"Internal Server Error"}}"#,
    );
    let (svc, seen) = http_upstream(&[E500, E500]);
    let policy = RetryPolicy::new()
        .backoff_base(ms(100))
        .backoff_cap(ms(150));
    let t0 = Instant::now();
    let resp = layer(policy).layer(svc).oneshot(req("a/b")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(seen.starts(t0)[0], 0.0);
    // Tokio's timer rounds a sleep up to the millisecond, so a jitter just under the cap
    // lands on it exactly; compared as Durations (0.199 - 0.049 > 0.150 in f64).
    let g = seen.gaps();
    assert_eq!(g.len(), 2);
    assert!(g[0] <= ms(100) && g[1] <= ms(150), "{g:?}");
}
