//! The attempt timeout: exact limits, per-model overrides, the deadline clamp, stream limits.

mod common;

use std::time::Duration;

use common::{hanging, ok, req, upstream};
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_openrouter::timeout::{AttemptTimeoutLayer, DeadlineLayer};
use tower_openrouter::{Action, Attempt, Deadline, ErrorKind, StreamLimits};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn attempt(model: &str, timeout: Option<Duration>) -> Attempt {
    let mut a = Attempt::new(model);
    a.timeout = timeout;
    a
}

#[tokio::test(start_paused = true)]
async fn a_hanging_attempt_ends_exactly_at_the_limit() {
    let (svc, seen) = hanging();
    let svc = AttemptTimeoutLayer::new(secs(4)).unwrap().layer(svc);
    let mut r = req("a/b");
    r.extensions_mut().insert(attempt("a/b", None));
    let t0 = Instant::now();
    let err = svc.oneshot(r).await.unwrap_err();
    assert_eq!(t0.elapsed(), secs(4));
    assert_eq!(err.kind(), ErrorKind::AttemptTimeout);
    assert_eq!(err.action(), Action::Fallback);
    assert!(err.counts_for_health());
    assert_eq!(err.model(), Some("a/b"));
    assert_eq!(err.detail(), Some("no answer within 4s"));
    assert_eq!(seen.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_per_model_limit_overrides_the_default() {
    let (svc, _) = hanging();
    let svc = AttemptTimeoutLayer::new(secs(30)).unwrap().layer(svc);
    let mut r = req("openai/gpt-4o-mini");
    r.extensions_mut().insert(attempt(
        "openai/gpt-4o-mini",
        Some(Duration::from_millis(1500)),
    ));
    let t0 = Instant::now();
    let err = svc.oneshot(r).await.unwrap_err();
    assert_eq!(t0.elapsed(), Duration::from_millis(1500));
    assert_eq!(err.kind(), ErrorKind::AttemptTimeout);
}

#[tokio::test(start_paused = true)]
async fn the_timeout_action_is_configurable() {
    let (svc, _) = hanging();
    let layer = AttemptTimeoutLayer::builder(secs(1))
        .on_timeout(Action::Retry)
        .build()
        .unwrap();
    assert_eq!(layer.timeout_action(), Action::Retry);
    let err = layer.layer(svc).oneshot(req("a/b")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AttemptTimeout);
    assert_eq!(err.action(), Action::Retry);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_clamps_the_attempt_and_ends_the_call() {
    let (svc, _) = hanging();
    let svc = AttemptTimeoutLayer::new(secs(4)).unwrap().layer(svc);
    let mut r = req("a/b");
    r.extensions_mut().insert(Deadline::after(secs(3)));
    r.extensions_mut().insert(attempt("a/b", None));
    let t0 = Instant::now();
    let err = svc.oneshot(r).await.unwrap_err();
    assert_eq!(t0.elapsed(), secs(3));
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(err.action(), Action::Fatal);
    assert_eq!(err.model(), Some("a/b"));
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_when_no_time_is_left() {
    let (svc, seen) = hanging();
    let svc = AttemptTimeoutLayer::new(secs(4)).unwrap().layer(svc);
    let mut r = req("a/b");
    r.extensions_mut().insert(Deadline::after(Duration::ZERO));
    let err = svc.oneshot(r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(seen.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn inside_a_deadline_the_limit_holds_and_the_deadline_wins_the_rest() {
    let (svc, _) = hanging();
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(10)).unwrap())
        .layer(AttemptTimeoutLayer::new(secs(4)).unwrap())
        .service(svc);
    let t0 = Instant::now();
    let err = svc.clone().oneshot(req("a/b")).await.unwrap_err();
    assert_eq!(
        (err.kind(), t0.elapsed()),
        (ErrorKind::AttemptTimeout, secs(4))
    );
    // A request that arrives with 2 s left is cut at 2 s, as a deadline error.
    let mut r = req("a/b");
    r.extensions_mut().insert(Deadline::after(secs(2)));
    let t1 = Instant::now();
    let err = svc.oneshot(r).await.unwrap_err();
    assert_eq!(
        (err.kind(), t1.elapsed()),
        (ErrorKind::DeadlineExceeded, secs(2))
    );
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_passes_through() {
    let (svc, _) = upstream(|_, _| async {
        tokio::time::sleep(secs(3)).await;
        Ok(ok())
    });
    let svc = AttemptTimeoutLayer::new(secs(4)).unwrap().layer(svc);
    let t0 = Instant::now();
    assert!(svc.oneshot(req("a/b")).await.is_ok());
    assert_eq!(t0.elapsed(), secs(3));
}

#[tokio::test(start_paused = true)]
async fn stream_limits_are_inserted_clamped_and_never_override_the_request() {
    let (svc, seen) = upstream(|_, _| async { Ok(ok()) });
    let svc = AttemptTimeoutLayer::builder(secs(30))
        .first_token(secs(10))
        .idle(secs(5))
        .build()
        .unwrap()
        .layer(svc);
    // No limits on the request: the layer's, the first token clamped to the deadline.
    let mut r = req("a/b");
    r.extensions_mut().insert(Deadline::after(secs(8)));
    svc.clone().oneshot(r).await.unwrap();
    // The request sets its own idle limit: kept.
    let mut r = req("a/b");
    r.extensions_mut().insert(StreamLimits {
        first_token: None,
        idle: Some(secs(1)),
    });
    svc.oneshot(r).await.unwrap();
    let got: Vec<_> = seen
        .requests()
        .iter()
        .map(|r| *r.extensions().get::<StreamLimits>().unwrap())
        .collect();
    assert_eq!(
        got,
        [
            StreamLimits {
                first_token: Some(secs(8)),
                idle: Some(secs(5))
            },
            StreamLimits {
                first_token: Some(secs(10)),
                idle: Some(secs(1))
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn without_stream_limits_nothing_is_inserted() {
    let (svc, seen) = upstream(|_, _| async { Ok(ok()) });
    let svc = AttemptTimeoutLayer::new(secs(30)).unwrap().layer(svc);
    svc.oneshot(req("a/b")).await.unwrap();
    assert!(seen.requests()[0]
        .extensions()
        .get::<StreamLimits>()
        .is_none());
}

#[test]
fn settings_that_cannot_hold_are_config_errors() {
    let cases = [
        (
            AttemptTimeoutLayer::builder(Duration::ZERO),
            "attempt_timeout",
            "attempt_timeout must be greater than zero",
        ),
        (
            AttemptTimeoutLayer::builder(secs(90)).deadline(secs(60)),
            "attempt_timeout",
            "attempt_timeout (90s) is longer than deadline (60s)",
        ),
        (
            AttemptTimeoutLayer::builder(secs(9)).first_token(Duration::ZERO),
            "first_token_timeout",
            "first_token_timeout must be greater than zero",
        ),
        (
            AttemptTimeoutLayer::builder(secs(9))
                .idle(Duration::from_millis(61_500))
                .deadline(secs(60)),
            "idle_timeout",
            "idle_timeout (61.5s) is longer than deadline (60s)",
        ),
    ];
    for (builder, field, message) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!((err.field(), err.to_string().as_str()), (field, message));
    }
    let ok = AttemptTimeoutLayer::builder(secs(60))
        .first_token(secs(20))
        .idle(secs(10))
        .deadline(secs(60))
        .build()
        .unwrap();
    assert_eq!(ok.limit(), secs(60));
    assert_eq!(ok.stream_limits().first_token, Some(secs(20)));
}
