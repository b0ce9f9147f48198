//! The total deadline: one budget, always held, the earlier deadline kept, attempts kept.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{hanging, ok, req, upstream};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_openrouter::timeout::DeadlineLayer;
use tower_openrouter::{Action, Attempt, AttemptLog, AttemptRecord, Deadline, Error, ErrorKind};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn a_hanging_upstream_ends_exactly_at_the_deadline() {
    let (svc, seen) = hanging();
    let svc = DeadlineLayer::new(secs(10)).unwrap().layer(svc);
    let t0 = Instant::now();
    let err = svc.oneshot(req("a/b")).await.unwrap_err();
    assert_eq!(t0.elapsed(), secs(10));
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(err.action(), Action::Fatal);
    assert!(err.attempts().is_empty());
    assert_eq!(seen.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_on_the_request_is_kept() {
    let (svc, _) = hanging();
    let svc = DeadlineLayer::new(secs(10)).unwrap().layer(svc);
    let mut r = req("a/b");
    r.extensions_mut().insert(Deadline::after(secs(3)));
    let t0 = Instant::now();
    let err = svc.oneshot(r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(t0.elapsed(), secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_later_deadline_on_the_request_is_replaced() {
    let (svc, seen) = upstream(|_, _| async { Ok(ok()) });
    let svc = DeadlineLayer::new(secs(10)).unwrap().layer(svc);
    let mut r = req("a/b");
    r.extensions_mut().insert(Deadline::after(secs(30)));
    let t0 = Instant::now();
    svc.oneshot(r).await.unwrap();
    let seen_req = &seen.requests()[0];
    let d = seen_req.extensions().get::<Deadline>().unwrap();
    assert_eq!(d.instant(), t0 + secs(10));
    assert!(seen_req.extensions().get::<AttemptLog>().is_some());
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_starts_no_attempt() {
    let (svc, seen) = upstream(|_, _| async { Ok(ok()) });
    let svc = DeadlineLayer::new(secs(10)).unwrap().layer(svc);
    let mut r = req("a/b");
    r.extensions_mut().insert(Deadline::after(Duration::ZERO));
    let err = svc.oneshot(r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(seen.count(), 0);
}

/// An upstream that logs one failed attempt (as the retry layer would), then hangs.
#[tokio::test(start_paused = true)]
async fn the_error_carries_the_last_attempt_and_its_model() {
    let (svc, _) = upstream(|_, req| async move {
        let log = req.extensions().get::<AttemptLog>().unwrap().clone();
        log.push(AttemptRecord {
            model: Arc::from("openai/gpt-4o"),
            index: 1,
            retry: 0,
            elapsed: secs(1),
            error: Error::new(ErrorKind::ProviderError).with_model("openai/gpt-4o"),
        });
        std::future::pending().await
    });
    let svc = DeadlineLayer::new(secs(5)).unwrap().layer(svc);
    let mut r = req("anthropic/claude-sonnet-4.5");
    r.extensions_mut()
        .insert(Attempt::new("anthropic/claude-sonnet-4.5"));
    let err = svc.oneshot(r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(err.model(), Some("openai/gpt-4o"));
    assert_eq!(err.attempts().len(), 1);
    assert_eq!(
        err.last_attempt_error().map(Error::kind),
        Some(ErrorKind::ProviderError)
    );
    assert!(err
        .to_string()
        .starts_with("deadline exceeded (openai/gpt-4o)"));
}

#[tokio::test(start_paused = true)]
async fn an_existing_log_is_used_and_inner_deadline_errors_get_it() {
    let log = AttemptLog::new();
    log.push(AttemptRecord {
        model: Arc::from("a/b"),
        index: 0,
        retry: 0,
        elapsed: secs(2),
        error: Error::new(ErrorKind::Transport),
    });
    let (svc, _) = upstream(|_, _| async { Err(Error::new(ErrorKind::DeadlineExceeded)) });
    let svc = DeadlineLayer::new(secs(5)).unwrap().layer(svc);
    let mut r = req("a/b");
    r.extensions_mut().insert(log.clone());
    let err = svc.oneshot(r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(
        err.last_attempt_error().map(Error::kind),
        Some(ErrorKind::Transport)
    );
}

#[tokio::test(start_paused = true)]
async fn answers_and_other_errors_pass_through() {
    let (svc, _) = upstream(|n, _| async move {
        if n == 0 {
            Ok(ok())
        } else {
            Err(Error::new(ErrorKind::Unauthorized))
        }
    });
    let svc = DeadlineLayer::new(secs(5)).unwrap().layer(svc);
    assert!(svc.clone().oneshot(req("a/b")).await.is_ok());
    let err = svc.oneshot(req("a/b")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(err.attempts().is_empty());
}

#[test]
fn a_zero_deadline_is_a_config_error() {
    let err = DeadlineLayer::new(Duration::ZERO).unwrap_err();
    assert_eq!(err.field(), "deadline");
    assert_eq!(err.to_string(), "deadline must be greater than zero");
    assert_eq!(DeadlineLayer::new(secs(60)).unwrap().budget(), secs(60));
}
