//! Hedging on the first content token, through the whole stack against `MockOpenRouter`
//! (paused time: every figure is exact and repeatable).
#![cfg(feature = "mock")]

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_openrouter::fallback::{HedgePolicy, HedgeRequests, Hedged, ServedBy};
use tower_openrouter::health::{AdaptiveConfig, HealthConfig, HealthTracker};
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::stack::{OpenRouter, OpenRouterLayer, OpenRouterLayerBuilder};
use tower_openrouter::{ErrorKind, RetryPolicy};

const PRIMARY: &str = "openai/gpt-4o";
const FALLBACK: &str = "anthropic/claude-sonnet-4.5";
const SEED: u64 = 15;

type Svc = OpenRouter<MockOpenRouter>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A stream whose first content chunk comes after `ttft`; its text names `who`.
fn stream(who: &str, ttft: Duration) -> Reply {
    Reply::stream([format!("{who} "), "answer".to_owned()]).first_token_delay(ttft)
}

fn builder() -> OpenRouterLayerBuilder {
    OpenRouterLayer::builder()
        .chain([PRIMARY, FALLBACK])
        .deadline(secs(60))
        .attempt_timeout(secs(30))
        .retry_policy(RetryPolicy::new().max_retries(0))
        .health_config(HealthConfig::default().jitter(0.0))
}

fn stack(b: OpenRouterLayerBuilder, mock: &MockOpenRouter) -> (Svc, HealthTracker) {
    let layer = b.build().unwrap();
    let health = layer.health().clone();
    let svc = layer.layer(mock.clone());
    (svc, health)
}

fn request_with(body: &str) -> http::Request<String> {
    http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .unwrap()
}

fn request() -> http::Request<String> {
    request_with(&format!(
        r#"{{"model":"{PRIMARY}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#
    ))
}

/// One call: its time to first content (the response), what served it, and its body.
async fn call(svc: &Svc) -> (Duration, ServedBy, String) {
    let start = Instant::now();
    let resp = svc.clone().oneshot(request()).await.unwrap();
    let ttft = start.elapsed();
    assert_eq!(resp.status(), StatusCode::OK);
    let served = resp.extensions().get::<ServedBy>().unwrap().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (ttft, served, String::from_utf8(body.to_vec()).unwrap())
}

/// The stream's events name only `model`, and its text is that model's alone.
fn assert_one_stream(body: &str, who: &str, model: &str) {
    let other = if model == PRIMARY { FALLBACK } else { PRIMARY };
    assert!(!body.contains(other), "{body}");
    assert_eq!(body.matches(&format!(r#""model":"{model}""#)).count(), 3);
    assert!(body.contains(&format!(r#""content":"{who} ""#)), "{body}");
    assert_eq!(body.matches("data: [DONE]").count(), 1);
}

fn hedge(served: &ServedBy) -> Option<&Hedged> {
    served.hedge.as_ref()
}

/// The model and kind of every failed or skipped attempt.
fn kinds(served: &ServedBy) -> Vec<(&str, ErrorKind)> {
    served
        .attempts
        .iter()
        .map(|a| (&*a.model, a.kind()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_token_is_hedged_and_the_hedge_wins() {
    let mock = MockOpenRouter::new();
    // The primary holds its first slot after the first call: a dropped attempt frees it.
    mock.model(PRIMARY)
        .respond(stream("primary", secs(10)))
        .once()
        .then(stream("primary", secs(1)))
        .max_in_flight(1);
    mock.model(FALLBACK).respond(stream("fallback", secs(1)));
    let (svc, health) = stack(
        builder().hedge(HedgePolicy::after(secs(2)).budget(1.0)),
        &mock,
    );

    let (ttft, served, body) = call(&svc).await;
    // Hedged at 2 s; the fallback's first token 1 s later.
    assert_eq!(ttft, secs(3));
    assert_eq!(&*served.model, FALLBACK);
    assert_eq!(served.index, 1);
    assert!(served.fell_back);
    assert!(served.attempts.is_empty(), "{:?}", served.attempts);
    let h = hedge(&served).unwrap();
    assert_eq!(
        (&*h.earlier, &*h.hedge, h.hedge_won),
        (PRIMARY, FALLBACK, true)
    );
    assert_one_stream(&body, "fallback", FALLBACK);
    assert_eq!((mock.calls(PRIMARY), mock.calls(FALLBACK)), (1, 1));
    // The dropped attempt recorded nothing against the primary.
    let primary = health.snapshot().into_iter().find(|m| &*m.model == PRIMARY);
    assert!(
        primary
            .as_ref()
            .is_none_or(|m| m.calls == 0 && m.failures == 0),
        "{primary:?}"
    );

    // Its upstream slot was freed (the connection closed): the next call is not a 429.
    let (ttft, served, body) = call(&svc).await;
    assert_eq!(ttft, secs(1));
    assert_eq!(&*served.model, PRIMARY);
    assert!(served.hedge.is_none());
    assert_one_stream(&body, "primary", PRIMARY);
    assert_eq!(mock.capacity_rejections(PRIMARY), 0);
}

#[tokio::test(start_paused = true)]
async fn the_earlier_attempt_wins_and_the_hedge_is_dropped() {
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY).respond(stream("primary", secs(3)));
    mock.model(FALLBACK).respond(stream("fallback", secs(5)));
    let (svc, health) = stack(
        builder()
            .hedge(HedgePolicy::after(secs(2)).budget(1.0))
            .adaptive_concurrency(AdaptiveConfig::new(4, 1, 4)),
        &mock,
    );
    let (ttft, served, body) = call(&svc).await;
    assert_eq!(ttft, secs(3));
    assert_eq!(&*served.model, PRIMARY);
    assert!(!served.fell_back);
    assert!(served.attempts.is_empty());
    let h = hedge(&served).unwrap();
    assert_eq!(
        (&*h.earlier, &*h.hedge, h.hedge_won),
        (PRIMARY, FALLBACK, false)
    );
    assert_one_stream(&body, "primary", PRIMARY);
    assert_eq!((mock.calls(PRIMARY), mock.calls(FALLBACK)), (1, 1));
    // The dropped hedge gave its adaptive slot back and recorded nothing.
    let snap = health.snapshot();
    let fallback = snap.iter().find(|m| &*m.model == FALLBACK).unwrap();
    assert_eq!((fallback.in_flight, fallback.calls), (Some(0), 0));
    let primary = snap.iter().find(|m| &*m.model == PRIMARY).unwrap();
    assert_eq!((primary.in_flight, primary.calls), (Some(0), 1));
}

#[tokio::test(start_paused = true)]
async fn a_failure_during_the_race_is_an_ordinary_failure_and_the_other_goes_on() {
    // The hedge fails at once: recorded, and the primary still answers.
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY).respond(stream("primary", secs(4)));
    mock.model(FALLBACK).respond(Reply::status(502));
    let (svc, _) = stack(
        builder().hedge(HedgePolicy::after(secs(2)).budget(1.0)),
        &mock,
    );
    let (ttft, served, _) = call(&svc).await;
    assert_eq!(ttft, secs(4));
    assert_eq!(&*served.model, PRIMARY);
    assert_eq!(kinds(&served), [(FALLBACK, ErrorKind::ProviderError)]);
    assert!(!hedge(&served).unwrap().hedge_won);

    // The primary fails while the hedge runs: the hedge answers.
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY)
        .respond(Reply::delay(secs(3), Reply::status(500)));
    mock.model(FALLBACK).respond(stream("fallback", secs(5)));
    let (svc, _) = stack(
        builder().hedge(HedgePolicy::after(secs(2)).budget(1.0)),
        &mock,
    );
    let (ttft, served, body) = call(&svc).await;
    assert_eq!(ttft, secs(7));
    assert_eq!(&*served.model, FALLBACK);
    assert_eq!(kinds(&served), [(PRIMARY, ErrorKind::ProviderError)]);
    assert!(hedge(&served).unwrap().hedge_won);
    assert_one_stream(&body, "fallback", FALLBACK);
    assert_eq!((mock.calls(PRIMARY), mock.calls(FALLBACK)), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_the_hedges() {
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY).respond(stream("primary", secs(10)));
    mock.model(FALLBACK).respond(stream("fallback", secs(1)));
    // 5%: one hedge per 20 calls.
    let (svc, _) = stack(builder().hedge(HedgePolicy::after(secs(2))), &mock);
    let calls: Vec<_> = (0..50)
        .map(|_| tokio::spawn(call_owned(svc.clone())))
        .collect();
    let mut hedged = 0;
    for c in calls {
        let (ttft, served) = c.await.unwrap();
        match served.hedge {
            Some(h) => {
                assert!(h.hedge_won);
                assert_eq!(ttft, secs(3));
                hedged += 1;
            }
            None => assert_eq!(ttft, secs(10)),
        }
    }
    assert_eq!(hedged, 2);
    assert_eq!((mock.calls(PRIMARY), mock.calls(FALLBACK)), (50, 2));
}

async fn call_owned(svc: Svc) -> (Duration, ServedBy) {
    let (ttft, served, _) = call(&svc).await;
    (ttft, served)
}

/// The time to the response of one call with this body, and whether it was hedged.
async fn hedged_after(svc: &Svc, body: &str) -> (Duration, bool) {
    let start = Instant::now();
    let resp = svc.clone().oneshot(request_with(body)).await.unwrap();
    let served = resp.extensions().get::<ServedBy>().unwrap().clone();
    (start.elapsed(), served.hedge.is_some())
}

#[tokio::test(start_paused = true)]
async fn only_the_requests_the_chain_hedges() {
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY)
        .respond(Reply::delay(secs(5), Reply::ok()));
    let plain = format!(r#"{{"model":"{PRIMARY}","messages":[]}}"#);
    let streamed = format!(r#"{{"model":"{PRIMARY}","stream":true,"messages":[]}}"#);
    let with_tools = format!(
        r#"{{"model":"{PRIMARY}","stream":true,"tools":[{{"type":"function","function":{{"name":"f"}}}}],"messages":[]}}"#
    );
    let policy = HedgePolicy::after(secs(2)).budget(1.0);

    // By default streams only.
    let (svc, _) = stack(builder().hedge(policy.clone()), &mock);
    assert_eq!(hedged_after(&svc, &plain).await, (secs(5), false));
    assert_eq!(hedged_after(&svc, &with_tools).await, (secs(2), true));
    // Streams without tools.
    let p = policy.clone().requests(HedgeRequests::StreamsWithoutTools);
    let (svc, _) = stack(builder().hedge(p), &mock);
    assert_eq!(hedged_after(&svc, &with_tools).await, (secs(5), false));
    assert_eq!(hedged_after(&svc, &streamed).await, (secs(2), true));
    // Everything: a non-stream request on the time to its whole answer.
    let (svc, _) = stack(builder().hedge(policy.requests(HedgeRequests::All)), &mock);
    assert_eq!(hedged_after(&svc, &plain).await, (secs(2), true));
    // A chain without a policy is never hedged.
    let (svc, _) = stack(
        builder()
            .chain_hedge("other", HedgePolicy::after(secs(1)).budget(1.0))
            .named_chain("other", [FALLBACK, PRIMARY]),
        &mock,
    );
    assert_eq!(hedged_after(&svc, &streamed).await, (secs(5), false));
    assert_eq!(mock.calls(FALLBACK), 3);
}

#[test]
fn hedging_settings_are_checked() {
    let err = builder()
        .hedge(HedgePolicy::percentile(0.9).min_samples(0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "hedge.min_samples");
    let err = builder()
        .chain_hedge("nope", HedgePolicy::after(secs(1)))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "chain_hedge.nope");
    let err = builder()
        .hedge(HedgePolicy::after(secs(1)).budget(0.0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "hedge.budget");

    let json = |hedging: &str| {
        OpenRouterLayer::from_json(&format!(
            r#"{{"default_chain": ["{PRIMARY}", "{FALLBACK}"], "chains": {{"fast": ["{FALLBACK}", "{PRIMARY}"]}}, "hedging": {hedging}}}"#
        ))
    };
    json(r#"{"default_chain": {"percentile": 0.9, "delay_seconds": 2, "budget_percent": 10, "requests": "all"}, "chains": {"fast": {"delay_seconds": 1}}}"#).unwrap();
    let field = |hedging: &str| json(hedging).unwrap_err().field().to_owned();
    for (hedging, expected) in [
        (r#"{"default_chain": {}}"#, "hedging.default_chain"),
        (
            r#"{"default_chain": {"percentile": 1.5}}"#,
            "hedging.default_chain.percentile",
        ),
        (
            r#"{"chains": {"fast": {"delay_seconds": 1, "budget_percent": 150}}}"#,
            "hedging.chains.fast.budget_percent",
        ),
        (
            r#"{"chains": {"slow": {"delay_seconds": 1}}}"#,
            "hedging.chains.slow",
        ),
        (
            r#"{"default_chain": {"delay_seconds": 0}}"#,
            "hedging.default_chain.delay_seconds",
        ),
        (
            r#"{"default_chain": {"delay_seconds": 1, "requests": "some"}}"#,
            "hedging.default_chain.requests",
        ),
    ] {
        assert_eq!(field(hedging), expected, "{hedging}");
    }
}

/// The issue's figures: the primary's first token comes after 10 s on 10% of requests
/// (1 s otherwise; seeded), the fallback's after 1 s. 12 callers send 50 streamed
/// requests each, one after the other.
async fn tail(b: OpenRouterLayerBuilder) -> (Vec<(Duration, bool)>, u64, HealthTracker) {
    let mock = MockOpenRouter::new();
    mock.keep_requests(0);
    mock.model(PRIMARY).respond(Reply::random(
        0.1,
        stream("primary", secs(10)),
        stream("primary", secs(1)),
        SEED,
    ));
    mock.model(FALLBACK).respond(stream("fallback", secs(1)));
    let (svc, health) = stack(b, &mock);
    let callers: Vec<_> = (0..12)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..50 {
                    let (ttft, served, body) = call(&svc).await;
                    let who = if &*served.model == PRIMARY {
                        "primary"
                    } else {
                        "fallback"
                    };
                    assert_one_stream(&body, who, &served.model);
                    out.push((ttft, served.hedge.is_some()));
                }
                out
            })
        })
        .collect();
    let mut calls = Vec::new();
    for c in callers {
        calls.extend(c.await.unwrap());
    }
    (calls, mock.total_calls(), health)
}

/// The times to first content, sorted, and how many calls were hedged.
fn figures(calls: &[(Duration, bool)]) -> (Vec<Duration>, usize) {
    let mut ttfts: Vec<Duration> = calls.iter().map(|c| c.0).collect();
    ttfts.sort();
    (ttfts, calls.iter().filter(|c| c.1).count())
}

/// The nearest-rank `q` quantile of sorted times.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::test(start_paused = true)]
async fn hedging_after_p90_cuts_the_tail_within_its_budget() {
    let (calls, upstream, _) = tail(builder()).await;
    let (off, hedges) = figures(&calls);
    assert_eq!(off.len(), 600);
    assert_eq!((hedges, upstream), (0, 600));
    let p99_off = quantile(&off, 0.99);
    assert_eq!(p99_off, secs(10));

    let policy = HedgePolicy::percentile(0.9).budget(0.2);
    let b = builder()
        .hedge(policy)
        .adaptive_concurrency(AdaptiveConfig::new(32, 1, 64));
    let (calls, upstream, health) = tail(b).await;
    let (on, hedges) = figures(&calls);
    let p99_on = quantile(&on, 0.99);
    let slow = on.iter().filter(|t| **t > secs(2)).count();
    println!(
        "p50 {:?} / {:?}, p90 {:?} / {:?}, p99 {p99_off:?} / {p99_on:?} (off / on); {hedges} hedges ({:.1}% extra calls), {slow} calls slower than 2 s",
        quantile(&off, 0.5),
        quantile(&on, 0.5),
        quantile(&off, 0.9),
        quantile(&on, 0.9),
        100.0 * hedges as f64 / 600.0,
    );
    assert!(p99_on <= Duration::from_millis(2500), "p99 {p99_on:?}");
    assert_eq!(p99_on, secs(2));
    // A hedged call: the primary's p90 (1 s), then the fallback's first token (1 s). A
    // fast primary answering at its p90 wins the tie: it is not hedged.
    for (ttft, hedged) in &calls {
        let expected: &[Duration] = if *hedged {
            &[secs(2)]
        } else {
            &[secs(1), secs(10)]
        };
        assert!(expected.contains(ttft), "{ttft:?} hedged: {hedged}");
    }
    // Only the calls before the primary had 20 samples waited 10 s.
    assert!(slow <= 6, "{slow}");
    // Each hedge is one extra upstream call, and the budget (20%) bounds them.
    assert_eq!(upstream, 600 + hedges as u64);
    assert!(hedges * 5 <= 600, "{hedges} hedges");
    assert!(hedges >= 50, "{hedges} hedges: the slow 10% are hedged");
    // Dropped attempts neither counted as failures nor kept their slots.
    for m in health.snapshot() {
        assert_eq!((m.failures, m.in_flight), (0, Some(0)), "{m:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hedge_waits_for_the_service_to_be_ready() {
    use bytes::Bytes;
    use futures_util::FutureExt;
    use http_body_util::Full;
    use tower_openrouter::{Attempt, FallbackLayer, LaterAttempt};

    type Req = http::Request<Full<Bytes>>;
    let (client, mut handle) = tower_test::mock::pair::<Req, http::Response<Full<Bytes>>>();
    // The fallback layer on its own (no buffering layer: it reads the body itself).
    let svc = FallbackLayer::new([PRIMARY, FALLBACK])
        .hedge(HedgePolicy::after(secs(2)).budget(1.0))
        .layer(client);
    let body = format!(r#"{{"model":"{PRIMARY}","stream":true,"messages":[]}}"#);
    let req = http::Request::post("http://localhost/api/v1/chat/completions")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let start = Instant::now();
    handle.allow(1);
    let call = tokio::spawn(svc.oneshot(req));
    let (first, _never_answered) = handle.next_request().await.unwrap();
    assert_eq!(
        first.extensions().get::<Attempt>().unwrap().model(),
        PRIMARY
    );

    // The hedge is due at 2 s, but the client is not ready: nothing is sent.
    tokio::time::sleep(secs(3)).await;
    assert!(handle.next_request().now_or_never().is_none());
    handle.allow(1);
    let (hedge, answer) = handle.next_request().await.unwrap();
    assert_eq!(start.elapsed(), secs(3));
    assert_eq!(
        hedge.extensions().get::<Attempt>().unwrap().model(),
        FALLBACK
    );
    // An extra call, not a caller's: it earns no retry budget.
    assert!(hedge.extensions().get::<LaterAttempt>().is_some());
    answer.send_response(http::Response::new(Full::new(Bytes::from_static(b"{}"))));

    let resp = call.await.unwrap().unwrap();
    let served = resp.extensions().get::<ServedBy>().unwrap();
    assert_eq!(&*served.model, FALLBACK);
    assert!(hedge_won(served));
    assert_eq!(start.elapsed(), secs(3));
}

fn hedge_won(served: &ServedBy) -> bool {
    served.hedge.as_ref().is_some_and(|h| h.hedge_won)
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_drawn_on_only_for_a_hedge_that_can_be_sent() {
    let ms = Duration::from_millis;
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY).respond(stream("primary", secs(1)));
    mock.model(FALLBACK)
        .respond(stream("fallback", ms(500)))
        .once()
        .then(stream("fallback", ms(100)));
    // 50%: a hedge takes two calls' deposits.
    let (svc, _) = stack(
        builder()
            .hedge(HedgePolicy::after(ms(200)).budget(0.5))
            .adaptive_concurrency(AdaptiveConfig::new(1, 1, 1)),
        &mock,
    );
    // A call of the fallback alone holds its one slot for 500 ms (deposit 1).
    let body = format!(r#"{{"model":"{FALLBACK}","stream":true,"messages":[]}}"#);
    let busy = tokio::spawn(svc.clone().oneshot(request_with(&body)));
    tokio::task::yield_now().await;
    // Deposit 2. At 200 ms the fallback is at its limit: no hedge, and no withdrawal.
    let (ttft, served, _) = call(&svc).await;
    assert_eq!(ttft, secs(1));
    assert_eq!(&*served.model, PRIMARY);
    assert!(served.hedge.is_none());
    assert_eq!(kinds(&served), []);
    assert_eq!(busy.await.unwrap().unwrap().status(), StatusCode::OK);
    // Deposit 3: the two deposits a hedge takes are there (had the first call withdrawn
    // them, one would be left and this hedge refused).
    let (ttft, served, body) = call(&svc).await;
    assert_eq!(ttft, ms(300));
    assert!(hedge(&served).unwrap().hedge_won);
    assert_one_stream(&body, "fallback", FALLBACK);
    assert_eq!((mock.calls(PRIMARY), mock.calls(FALLBACK)), (2, 2));
}
