//! Health tracker and layer: tripping, cooldowns, probing, Retry-After, what counts.
//!
//! Paused tokio time throughout (except the many-thread tests), so every delay is exact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::{advance, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_openrouter::health::{Admission, BreakerState, HealthConfig, HealthLayer, HealthTracker};
use tower_openrouter::{Action, Attempt, Error, ErrorKind, ForceAttempt, StreamErrorHook};

type Req = Request<Full<Bytes>>;
type Resp = Response<()>;

const MODEL: &str = "openai/gpt-4o";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Defaults without jitter, so cooldowns are exact.
fn config() -> HealthConfig {
    HealthConfig::default().jitter(0.0)
}

fn req(model: &str) -> Req {
    let mut req = Request::new(Full::new(Bytes::from_static(b"{\"model\":\"x\"}")));
    req.extensions_mut().insert(Attempt::new(model));
    req
}

fn provider_error() -> Error {
    Error::new(ErrorKind::ProviderError)
}

/// A scriptable upstream: counts calls, answers with the current outcome after the
/// current delay, keeps the `StreamErrorHook` of each request it saw.
#[derive(Clone, Default)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    outcome: Arc<Mutex<Option<Error>>>,
    delay: Arc<Mutex<Duration>>,
    hooks: Arc<Mutex<Vec<Option<StreamErrorHook>>>>,
}

impl Upstream {
    fn new() -> Self {
        Self::default()
    }

    fn fail_with(&self, error: Option<Error>) {
        *self.outcome.lock().unwrap() = error;
    }

    fn delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn layered(
        &self,
        tracker: &HealthTracker,
    ) -> impl Service<Req, Response = Resp, Error = Error, Future: Send> + Clone + Send + 'static
    {
        let up = self.clone();
        HealthLayer::new(tracker.clone()).layer(service_fn(move |req: Req| {
            up.calls.fetch_add(1, Ordering::SeqCst);
            up.hooks
                .lock()
                .unwrap()
                .push(req.extensions().get::<StreamErrorHook>().cloned());
            let outcome = up.outcome.lock().unwrap().clone();
            let delay = *up.delay.lock().unwrap();
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                match outcome {
                    None => Ok(Response::new(())),
                    Some(e) => Err(e),
                }
            }
        }))
    }
}

fn state(tracker: &HealthTracker, model: &str) -> tower_openrouter::health::ModelHealth {
    tracker
        .snapshot()
        .into_iter()
        .find(|m| &*m.model == model)
        .expect("model tracked")
}

/// Trips `MODEL` with 5 failures through the layer.
async fn trip<S>(svc: &S, up: &Upstream)
where
    S: Service<Req, Response = Resp, Error = Error> + Clone,
{
    up.fail_with(Some(provider_error()));
    for _ in 0..5 {
        let err = svc.clone().oneshot(req(MODEL)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProviderError);
        assert_eq!(err.model(), Some(MODEL));
    }
}

/// A tracker with `MODEL` tripped through the layer, `after` ago.
async fn tripped(
    after: Duration,
) -> (
    HealthTracker,
    Upstream,
    impl Service<Req, Response = Resp, Error = Error, Future: Send> + Clone + Send + 'static,
) {
    let tracker = HealthTracker::new(config());
    let up = Upstream::new();
    let svc = up.layered(&tracker);
    trip(&svc, &up).await;
    if !after.is_zero() {
        advance(after).await;
    }
    (tracker, up, svc)
}

#[tokio::test(start_paused = true)]
async fn five_failures_trip_then_reject_then_one_probe_closes() {
    let tracker = HealthTracker::new(config());
    let up = Upstream::new();
    let svc = up.layered(&tracker);
    let start = Instant::now();

    // Four failures: still closed.
    up.fail_with(Some(provider_error()));
    for _ in 0..4 {
        svc.clone().oneshot(req(MODEL)).await.unwrap_err();
    }
    assert!(tracker.is_available(MODEL));
    assert_eq!(state(&tracker, MODEL).consecutive_failures, 4);
    svc.clone().oneshot(req(MODEL)).await.unwrap_err();
    assert_eq!(up.calls(), 5);
    let s = state(&tracker, MODEL);
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!(s.trips, 1);
    assert_eq!(s.cooldown_until, Some(start + secs(15)));
    assert!(!tracker.is_available(MODEL));

    // 100 attempts during the cooldown: no upstream call, ModelCoolingDown, time left.
    advance(secs(1)).await;
    for _ in 0..100 {
        let err = svc.clone().oneshot(req(MODEL)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelCoolingDown);
        assert_eq!(err.action(), Action::Fallback);
        assert_eq!(err.retry_after(), Some(secs(14)));
        assert_eq!(err.model(), Some(MODEL));
        assert!(!err.counts_for_health());
    }
    assert_eq!(up.calls(), 5);
    // Rejections are not outcomes.
    assert_eq!(state(&tracker, MODEL).calls, 5);

    // Cooldown over: 100 concurrent attempts, exactly one probe goes upstream.
    advance(secs(14)).await;
    assert!(tracker.is_available(MODEL));
    up.fail_with(None);
    up.delay(secs(1));
    let handles: Vec<_> = (0..100)
        .map(|_| tokio::spawn(svc.clone().oneshot(req(MODEL))))
        .collect();
    let mut ok = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ModelCoolingDown);
                assert_eq!(e.action(), Action::Fallback);
                // The probe is in flight: no time to wait for, it decides soon.
                assert_eq!(e.retry_after(), None);
            }
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(up.calls(), 6);

    // The probe succeeded: closed, fresh window.
    let s = state(&tracker, MODEL);
    assert_eq!(s.state, BreakerState::Closed);
    assert_eq!(s.cooldown_until, None);
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!((s.calls, s.failures), (1, 0));
    assert_eq!(tracker.check(MODEL), Admission::Allowed);
    up.delay(Duration::ZERO);
    svc.clone().oneshot(req(MODEL)).await.unwrap();
    assert_eq!(up.calls(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
    let (tracker, up, svc) = tripped(Duration::ZERO).await;
    assert_eq!(state(&tracker, MODEL).trips, 1);

    // Cooldowns: 15 s x trips, capped at 300 s.
    let mut expected = vec![];
    for trips in 2..=22u64 {
        expected.push(secs((15 * trips).min(300)));
    }
    let mut cooldown = secs(15);
    for (i, next) in expected.into_iter().enumerate() {
        advance(cooldown - Duration::from_millis(1)).await;
        let err = svc.clone().oneshot(req(MODEL)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelCoolingDown);
        assert_eq!(err.retry_after(), Some(Duration::from_millis(1)));
        advance(Duration::from_millis(1)).await;
        let calls = up.calls();
        // The probe fails: open again.
        let err = svc.clone().oneshot(req(MODEL)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProviderError);
        assert_eq!(up.calls(), calls + 1);
        let s = state(&tracker, MODEL);
        assert_eq!(s.state, BreakerState::Open);
        assert_eq!(s.trips, i as u32 + 2);
        assert_eq!(
            s.cooldown_until,
            Some(Instant::now() + next),
            "trip {}",
            i + 2
        );
        cooldown = next;
    }
    assert_eq!(cooldown, secs(300));
}

#[tokio::test(start_paused = true)]
async fn second_trip_right_after_recovery_cools_for_30s_but_a_healthy_window_resets() {
    let (tracker, up, svc) = tripped(secs(15)).await;
    up.fail_with(None);
    svc.clone().oneshot(req(MODEL)).await.unwrap(); // probe succeeds
    assert_eq!(state(&tracker, MODEL).state, BreakerState::Closed);

    // Failing again within a window of the last cooldown: the streak goes on.
    trip(&svc, &up).await;
    let s = state(&tracker, MODEL);
    assert_eq!(s.trips, 2);
    assert_eq!(s.cooldown_until, Some(Instant::now() + secs(30)));

    advance(secs(30)).await;
    up.fail_with(None);
    svc.clone().oneshot(req(MODEL)).await.unwrap();
    // In service for a whole window (30 s): the next trip starts a new streak.
    advance(secs(30)).await;
    trip(&svc, &up).await;
    let s = state(&tracker, MODEL);
    assert_eq!(s.trips, 1);
    assert_eq!(s.cooldown_until, Some(Instant::now() + secs(15)));
}

#[tokio::test(start_paused = true)]
async fn failure_ratio_trips_at_half_of_twenty_calls() {
    let tracker = HealthTracker::new(config().consecutive_failures(1000));
    let err = provider_error();
    // success, failure, ... : after 19 calls 10 successes, 9 failures.
    for i in 0..19 {
        let outcome = if i % 2 == 0 { Ok(()) } else { Err(&err) };
        tracker.record(MODEL, outcome);
        assert!(tracker.is_available(MODEL), "call {i}");
    }
    assert_eq!(state(&tracker, MODEL).calls, 19);
    // The 20th call, a failure: 10 of 20 failed.
    tracker.record(MODEL, Err(&err));
    let s = state(&tracker, MODEL);
    assert_eq!((s.calls, s.failures), (20, 10));
    assert_eq!(s.success_rate, Some(0.5));
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!(s.trips, 1);
    assert_eq!(
        tracker.cooldown_until(MODEL),
        Some(Instant::now() + secs(15))
    );

    // Failures first: after the 20th call (a success) 10 of 20 failed, but only a
    // failure trips; the 21st call, a failure, makes 11 of 21.
    let tracker = HealthTracker::new(config().consecutive_failures(1000));
    for i in 0..21 {
        assert!(tracker.is_available(MODEL), "call {i}");
        let outcome = if i % 2 == 0 { Err(&err) } else { Ok(()) };
        tracker.record(MODEL, outcome);
    }
    assert!(!tracker.is_available(MODEL));
    let s = state(&tracker, MODEL);
    assert_eq!((s.calls, s.failures), (21, 11));
}

#[tokio::test(start_paused = true)]
async fn old_outcomes_leave_the_window() {
    let err = provider_error();
    let fill = |tracker: &HealthTracker| {
        // 10 failures, 9 successes: no trip yet (19 calls).
        for i in 0..19 {
            let outcome = if i % 2 == 0 { Err(&err) } else { Ok(()) };
            tracker.record(MODEL, outcome);
        }
        assert!(tracker.is_available(MODEL));
    };

    // 27 s later (the last of the ten 3 s slots) they still count: a failure trips it.
    let tracker = HealthTracker::new(config().consecutive_failures(1000));
    fill(&tracker);
    advance(secs(27)).await;
    assert_eq!(state(&tracker, MODEL).calls, 19);
    tracker.record(MODEL, Err(&err));
    assert!(!tracker.is_available(MODEL));

    // 30 s later they are gone: the failure is 1 of 1 call, no trip.
    let tracker = HealthTracker::new(config().consecutive_failures(1000));
    fill(&tracker);
    advance(secs(30)).await;
    assert_eq!(state(&tracker, MODEL).calls, 0);
    assert_eq!(tracker.success_rate(MODEL), None);
    tracker.record(MODEL, Err(&err));
    assert!(tracker.is_available(MODEL));
    let s = state(&tracker, MODEL);
    assert_eq!((s.calls, s.failures, s.state), (1, 1, BreakerState::Closed));
    assert_eq!(tracker.success_rate(MODEL), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn retry_after_cools_at_least_that_long_and_is_never_shortened() {
    let tracker = HealthTracker::new(config());
    let up = Upstream::new();
    let svc = up.layered(&tracker);
    let start = Instant::now();
    let limited = |s| {
        Error::new(ErrorKind::RateLimited)
            .with_status(http::StatusCode::TOO_MANY_REQUESTS)
            .with_retry_after(secs(s))
    };

    // One 429 with Retry-After: 60 s holds back that request only: the model stays in
    // service (the fallback layer moves on, and may wait the hint out itself).
    up.fail_with(Some(limited(60)));
    svc.clone().oneshot(req(MODEL)).await.unwrap_err();
    let s = state(&tracker, MODEL);
    assert_eq!(
        (s.state, s.trips, s.cooldown_until),
        (BreakerState::Closed, 0, None)
    );
    assert!(tracker.is_available(MODEL));
    // Four more in a row (5 while the window is thin) trip it: the cooldown is the
    // hint, longer than the trip's 15 s.
    for _ in 0..4 {
        let err = svc.clone().oneshot(req(MODEL)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
    }
    let s = state(&tracker, MODEL);
    assert_eq!((s.state, s.trips), (BreakerState::Open, 1));
    assert_eq!(s.cooldown_until, Some(start + secs(60)));
    let err = svc.clone().oneshot(req(MODEL)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelCoolingDown);
    assert_eq!(err.retry_after(), Some(secs(60)));
    assert_eq!(up.calls(), 5);

    // A later, shorter hint (from an attempt still in flight) does not shorten it.
    advance(secs(10)).await;
    tracker.record(MODEL, Err(&limited(5)));
    assert_eq!(tracker.cooldown_until(MODEL), Some(start + secs(60)));
    // A longer one extends it.
    tracker.record(MODEL, Err(&limited(100)));
    assert_eq!(tracker.cooldown_until(MODEL), Some(start + secs(110)));

    // A hint longer than the trip's cooldown wins over it.
    let tracker = HealthTracker::new(config());
    let err = provider_error();
    for _ in 0..4 {
        tracker.record("m", Err(&err));
    }
    tracker.record("m", Err(&limited(120)));
    let s = state(&tracker, "m");
    assert_eq!(s.trips, 1);
    assert_eq!(s.cooldown_until, Some(Instant::now() + secs(120)));
    // A shorter hint leaves the trip's cooldown.
    let tracker = HealthTracker::new(config());
    for _ in 0..4 {
        tracker.record("m", Err(&err));
    }
    tracker.record("m", Err(&limited(3)));
    assert_eq!(tracker.cooldown_until("m"), Some(Instant::now() + secs(15)));

    // Hints can be ignored, and are capped.
    let tracker = HealthTracker::new(config().consecutive_failures(1).respect_retry_after(false));
    tracker.record("m", Err(&limited(60)));
    assert_eq!(tracker.cooldown_until("m"), Some(Instant::now() + secs(15)));
    let tracker = HealthTracker::new(
        config()
            .consecutive_failures(1)
            .cooldown(secs(1))
            .max_retry_after(secs(20)),
    );
    tracker.record("m", Err(&limited(3600)));
    assert_eq!(tracker.cooldown_until("m"), Some(Instant::now() + secs(20)));
}

#[tokio::test(start_paused = true)]
async fn errors_that_do_not_count_never_trip() {
    let tracker = HealthTracker::new(config().min_calls(1).consecutive_failures(1));
    let up = Upstream::new();
    let svc = up.layered(&tracker);
    let kinds = [
        (ErrorKind::InvalidRequest, 400),
        (ErrorKind::Unauthorized, 401),
        (ErrorKind::InsufficientCredits, 402),
        (ErrorKind::ContentModerated, 403),
        (ErrorKind::ContextLengthExceeded, 400),
    ];
    for (kind, status) in kinds {
        up.fail_with(Some(
            Error::new(kind)
                .with_status(http::StatusCode::from_u16(status).unwrap())
                .with_retry_after(secs(60)),
        ));
        for _ in 0..50 {
            let err = svc.clone().oneshot(req(MODEL)).await.unwrap_err();
            assert_eq!(err.kind(), kind);
        }
    }
    assert_eq!(up.calls(), 250);
    assert!(tracker.is_available(MODEL));
    let s = state(&tracker, MODEL);
    assert_eq!((s.calls, s.consecutive_failures, s.trips), (0, 0, 0));
    assert_eq!(s.state, BreakerState::Closed);

    // A counting kind can be made not to count (a custom classifier's decision).
    let quiet = provider_error().with_counts_for_health(false);
    tracker.record(MODEL, Err(&quiet));
    assert!(tracker.is_available(MODEL));
    // ... and a single counted one trips this tracker.
    tracker.record(MODEL, Err(&provider_error()));
    assert!(!tracker.is_available(MODEL));
}

#[tokio::test(start_paused = true)]
async fn a_probe_ending_in_an_error_that_does_not_count_frees_the_slot() {
    let (tracker, up, svc) = tripped(secs(15)).await;

    up.fail_with(Some(Error::new(ErrorKind::ContextLengthExceeded)));
    svc.clone().oneshot(req(MODEL)).await.unwrap_err();
    // Neither closed nor reopened: the next request probes.
    let s = state(&tracker, MODEL);
    assert_eq!((s.state, s.trips), (BreakerState::Open, 1));
    assert!(tracker.is_available(MODEL));
    assert_eq!(tracker.check(MODEL), Admission::Probe);
    tracker.record(MODEL, Err(&Error::new(ErrorKind::Unauthorized)));
    assert_eq!(tracker.check(MODEL), Admission::Probe);
    tracker.record(MODEL, Ok(()));
    assert_eq!(tracker.check(MODEL), Admission::Allowed);
}

#[tokio::test(start_paused = true)]
async fn skip_threshold_makes_a_model_unavailable_below_the_rate() {
    let cfg = || {
        config()
            .without_failure_ratio()
            .consecutive_failures(1000)
            .skip_below_success_rate(0.3)
    };
    let err = provider_error();

    // success, failure, failure, failure, ...: 5 of 20 = 25% < 30%.
    let tracker = HealthTracker::new(cfg());
    for i in 0..20 {
        assert!(tracker.is_available(MODEL), "call {i}");
        let outcome = if i % 4 == 0 { Ok(()) } else { Err(&err) };
        tracker.record(MODEL, outcome);
    }
    assert_eq!(tracker.success_rate(MODEL), Some(0.25));
    assert!(!tracker.is_available(MODEL));
    assert!(matches!(
        tracker.check(MODEL),
        Admission::CoolingDown { until } if until == Instant::now() + secs(15)
    ));

    // 6 of 20 = 30%: not below.
    let tracker = HealthTracker::new(cfg());
    for i in 0..20 {
        let outcome = if i < 6 { Ok(()) } else { Err(&err) };
        tracker.record(MODEL, outcome);
    }
    assert_eq!(tracker.success_rate(MODEL), Some(0.3));
    assert!(tracker.is_available(MODEL));
    // One more failure: 6 of 21 < 30%.
    tracker.record(MODEL, Err(&err));
    assert!(!tracker.is_available(MODEL));

    // The users' config shape: skip below 0.3 over 10 minutes, disabled for 300 s.
    let tracker = HealthTracker::new(cfg().window(secs(600)).disable_duration(secs(300)));
    for i in 0..20 {
        let outcome = if i % 5 == 0 { Ok(()) } else { Err(&err) };
        tracker.record(MODEL, outcome);
        advance(secs(20)).await; // 400 s in all: still within the window
    }
    assert!(!tracker.is_available(MODEL));
    assert_eq!(
        tracker.cooldown_until(MODEL),
        Some(Instant::now() - secs(20) + secs(300))
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_the_slot_back_and_records_nothing() {
    let (tracker, up, svc) = tripped(secs(15)).await;

    up.fail_with(None);
    up.delay(secs(3600));
    let timed_out = tokio::time::timeout(secs(1), svc.clone().oneshot(req(MODEL))).await;
    assert!(timed_out.is_err());
    assert_eq!(up.calls(), 6);
    let s = state(&tracker, MODEL);
    assert_eq!((s.state, s.calls, s.trips), (BreakerState::Open, 5, 1));
    assert!(tracker.is_available(MODEL));

    // The next attempt probes.
    up.delay(Duration::ZERO);
    svc.clone().oneshot(req(MODEL)).await.unwrap();
    assert_eq!(up.calls(), 7);
    assert_eq!(state(&tracker, MODEL).state, BreakerState::Closed);

    // A dropped ordinary attempt records nothing either.
    up.delay(secs(3600));
    let _ = tokio::time::timeout(secs(1), svc.clone().oneshot(req(MODEL))).await;
    assert_eq!(state(&tracker, MODEL).calls, 1);
}

#[tokio::test(start_paused = true)]
async fn check_hands_out_one_probe_and_release_gives_it_back() {
    let tracker = HealthTracker::new(config());
    assert_eq!(tracker.check(MODEL), Admission::Allowed);
    assert_eq!(tracker.cooldown_until(MODEL), None);
    assert_eq!(tracker.success_rate(MODEL), None);
    for _ in 0..5 {
        tracker.record(MODEL, Err(&provider_error()));
    }
    let until = Instant::now() + secs(15);
    assert_eq!(tracker.check(MODEL), Admission::CoolingDown { until });
    advance(secs(15)).await;
    assert_eq!(tracker.cooldown_until(MODEL), None);
    assert_eq!(tracker.check(MODEL), Admission::Probe);
    let now = Instant::now();
    assert_eq!(tracker.check(MODEL), Admission::CoolingDown { until: now });
    assert!(!tracker.is_available(MODEL));
    assert_eq!(tracker.cooldown_until(MODEL), Some(now));
    assert_eq!(state(&tracker, MODEL).state, BreakerState::HalfOpen);
    tracker.release_probe(MODEL);
    assert_eq!(tracker.check(MODEL), Admission::Probe);
    tracker.record(MODEL, Err(&provider_error()));
    assert_eq!(
        tracker.check(MODEL),
        Admission::CoolingDown {
            until: now + secs(30)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn mid_stream_failure_takes_the_success_back() {
    let tracker = HealthTracker::new(config());
    let up = Upstream::new();
    let svc = up.layered(&tracker);
    let interrupted = Error::new(ErrorKind::StreamInterrupted);

    svc.clone().oneshot(req(MODEL)).await.unwrap();
    let hook = up.hooks.lock().unwrap()[0].clone().expect("hook inserted");
    assert_eq!(state(&tracker, MODEL).calls, 1);
    hook.report(&interrupted);
    let s = state(&tracker, MODEL);
    assert_eq!((s.calls, s.failures, s.consecutive_failures), (1, 1, 1));
    // An error that does not count is ignored.
    hook.report(&Error::new(ErrorKind::InvalidRequest));
    assert_eq!(state(&tracker, MODEL).failures, 1);

    // Five streams that die after their first token trip the model.
    for i in 1..5 {
        svc.clone().oneshot(req(MODEL)).await.unwrap();
        let hook = up.hooks.lock().unwrap()[i].clone().unwrap();
        hook.report(&interrupted);
    }
    let s = state(&tracker, MODEL);
    assert_eq!((s.calls, s.failures), (5, 5));
    assert_eq!(s.state, BreakerState::Open);
    let err = svc.clone().oneshot(req(MODEL)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelCoolingDown);

    // The public form does the same.
    let tracker = HealthTracker::new(config());
    tracker.record("m", Ok(()));
    tracker.record_stream_error("m", &interrupted);
    let s = state(&tracker, "m");
    assert_eq!((s.calls, s.failures), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_request_without_attempt_passes_through_untouched() {
    let tracker = HealthTracker::new(config());
    let up = Upstream::new();
    let svc = up.layered(&tracker);
    up.fail_with(Some(provider_error()));
    for _ in 0..10 {
        let plain = Request::new(Full::new(Bytes::new()));
        let err = svc.clone().oneshot(plain).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProviderError);
        assert_eq!(err.model(), None);
    }
    assert_eq!(up.calls(), 10);
    assert!(up.hooks.lock().unwrap().iter().all(Option::is_none));
    assert!(tracker.snapshot().is_empty());
}

#[tokio::test(start_paused = true)]
async fn force_attempt_tries_a_cooling_model() {
    let (tracker, up, svc) = tripped(Duration::ZERO).await;
    let mut forced = req(MODEL);
    forced.extensions_mut().insert(ForceAttempt);
    let err = svc.clone().oneshot(forced).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProviderError);
    assert_eq!(up.calls(), 6);
    // Counted, but still the one trip and its cooldown.
    let s = state(&tracker, MODEL);
    assert_eq!((s.calls, s.trips), (6, 1));
    assert_eq!(s.cooldown_until, Some(Instant::now() + secs(15)));
}

#[tokio::test(start_paused = true)]
async fn models_are_independent_and_capped() {
    let tracker = HealthTracker::new(config().max_models(2));
    let up = Upstream::new();
    let svc = up.layered(&tracker);
    trip(&svc, &up).await;
    up.fail_with(None);
    svc.clone().oneshot(req("b/other")).await.unwrap();
    assert!(tracker.is_available("b/other"));
    assert!(!tracker.is_available(MODEL));
    // A third model is beyond max_models: passed through, not tracked.
    up.fail_with(Some(provider_error()));
    for _ in 0..10 {
        svc.clone().oneshot(req("c/third")).await.unwrap_err();
    }
    assert!(tracker.is_available("c/third"));
    let models: Vec<_> = tracker.snapshot().into_iter().map(|m| m.model).collect();
    assert_eq!(models, vec![Arc::from("b/other"), Arc::from(MODEL)]);
}

#[tokio::test(start_paused = true)]
async fn jitter_shortens_cooldowns_by_at_most_its_fraction() {
    for _ in 0..50 {
        let tracker = HealthTracker::new(HealthConfig::default()); // jitter 0.1
        for _ in 0..5 {
            tracker.record(MODEL, Err(&provider_error()));
        }
        let left = tracker.cooldown_until(MODEL).unwrap() - Instant::now();
        assert!(
            left >= Duration::from_millis(13_500) && left <= secs(15),
            "{left:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_give_exact_totals() {
    let tracker = HealthTracker::new(
        config()
            .without_failure_ratio()
            .consecutive_failures(u32::MAX),
    );
    let err = provider_error();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let tracker = tracker.clone();
            let err = err.clone();
            tokio::spawn(async move {
                let model = if t % 2 == 0 { "a/even" } else { "b/odd" };
                for i in 0..10_000 {
                    let outcome = if i % 4 == 0 { Err(&err) } else { Ok(()) };
                    tracker.record(model, outcome);
                    if i % 1000 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let snap = tracker.snapshot();
    assert_eq!(snap.len(), 2);
    for m in snap {
        assert_eq!((m.calls, m.failures), (40_000, 10_000), "{}", m.model);
        assert_eq!(m.success_rate, Some(0.75));
        assert_eq!(m.state, BreakerState::Closed);
    }
}

#[test]
fn concurrent_failures_trip_exactly_once() {
    let tracker = HealthTracker::new(config());
    let err = provider_error();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..2_000 {
                    tracker.record(MODEL, Err(&err));
                    let _ = tracker.check(MODEL);
                }
            });
        }
    });
    let s = state(&tracker, MODEL);
    assert_eq!(s.trips, 1);
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!((s.calls, s.failures), (16_000, 16_000));
    assert_eq!(s.consecutive_failures, 16_000);
}

#[test]
fn concurrent_checks_after_the_cooldown_hand_out_one_probe() {
    // A 1 ns cooldown is over by the time the threads start (real time, no sleeping).
    let tracker = HealthTracker::new(config().disable_duration(Duration::from_nanos(1)));
    for _ in 0..5 {
        tracker.record(MODEL, Err(&provider_error()));
    }
    let probes = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..5_000 {
                    if tracker.check(MODEL) == Admission::Probe {
                        probes.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(probes.load(Ordering::SeqCst), 1);
    assert_eq!(state(&tracker, MODEL).state, BreakerState::HalfOpen);
}

/// The cooldowns of four trips in a row of one model (the probe after each cooldown
/// fails), then of a second model's first trip, under `config`.
async fn trip_cooldowns(config: HealthConfig) -> Vec<Duration> {
    let tracker = HealthTracker::new(config.consecutive_failures(1));
    let err = provider_error();
    let mut out = Vec::new();
    tracker.record(MODEL, Err(&err));
    for trip in 1..=4 {
        let left = tracker.cooldown_until(MODEL).unwrap() - Instant::now();
        out.push(left);
        if trip < 4 {
            advance(left).await;
            assert_eq!(tracker.check(MODEL), Admission::Probe);
            tracker.record(MODEL, Err(&err));
        }
    }
    tracker.record("b/other", Err(&err));
    out.push(tracker.cooldown_until("b/other").unwrap() - Instant::now());
    out
}

#[tokio::test(start_paused = true)]
async fn seeded_jitter_gives_exact_reproducible_cooldowns() {
    let seeded = |seed| HealthConfig::default().jitter(0.1).jitter_seed(seed);
    let a = trip_cooldowns(seeded(42)).await;
    // Nominal 15 s, 30 s, 45 s, 60 s (trips in a row), then 15 s for the other model; each
    // shortened by 10% x the next splitmix64 draw of seed 42 (golden values).
    assert_eq!(
        a,
        [
            Duration::from_nanos(13_887_652_682),
            Duration::from_nanos(29_520_268_821),
            Duration::from_nanos(43_746_294_914),
            Duration::from_nanos(57_934_855_701),
            Duration::from_nanos(14_942_954_747),
        ]
    );
    for (left, nominal) in a.iter().zip([15, 30, 45, 60, 15]) {
        let nominal = secs(nominal);
        assert!(*left > nominal.mul_f64(0.9) && *left <= nominal, "{left:?}");
    }
    // Same seed, same sequence; another seed, another one.
    assert_eq!(trip_cooldowns(seeded(42)).await, a);
    assert_ne!(trip_cooldowns(seeded(43)).await, a);
    // A seed without jitter changes nothing: exact cooldowns.
    assert_eq!(
        trip_cooldowns(seeded(42).jitter(0.0)).await,
        [secs(15), secs(30), secs(45), secs(60), secs(15)]
    );
}
