//! The whole stack (`OpenRouterLayer`) against the in-process `MockOpenRouter`.
#![cfg(feature = "mock")]

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_openrouter::fallback::{ChainModel, ChainName, ServedBy, UnlistedModel};
use tower_openrouter::health::HealthConfig;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::retry::RetryPolicy;
use tower_openrouter::stack::{OpenRouter, OpenRouterLayer, OpenRouterLayerBuilder};
use tower_openrouter::{Error, ErrorKind};

const A: &str = "anthropic/claude-3.5-sonnet";
const B: &str = "openai/gpt-4o";
const C: &str = "google/gemini-2.0-flash-001";

type Svc = OpenRouter<MockOpenRouter>;

/// Deterministic health (no jitter) and retries that sleep little. These tests send a
/// placeholder `model` and mean the default chain, so it replaces the caller's model.
fn builder() -> OpenRouterLayerBuilder {
    OpenRouterLayer::builder()
        .unlisted_model(UnlistedModel::UseDefaultChain)
        .deadline(Duration::from_secs(120))
        .attempt_timeout(Duration::from_secs(30))
        .health_config(HealthConfig::default().jitter(0.0))
        .retry_policy(
            RetryPolicy::new()
                .backoff_base(Duration::from_millis(100))
                .backoff_cap(Duration::from_secs(1)),
        )
}

fn stack(b: OpenRouterLayerBuilder, mock: &MockOpenRouter) -> Svc {
    ServiceBuilder::new()
        .layer(b.build().unwrap())
        .service(mock.clone())
}

fn request(body: &str) -> http::Request<String> {
    http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .unwrap()
}

const BODY: &str = r#"{"model":"x/y","messages":[{"role":"user","content":"hi"}]}"#;

async fn send(svc: &Svc, body: &str) -> Result<ServedBy, Error> {
    let resp = svc.clone().oneshot(request(body)).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(resp.extensions().get::<ServedBy>().cloned().unwrap())
}

#[tokio::test(start_paused = true)]
async fn primary_429_secondary_serves() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(429).retry_after(5));
    let svc = stack(builder().chain([A, B]), &mock);
    let served = send(&svc, BODY).await.unwrap();
    assert_eq!(&*served.model, B);
    assert!(served.fell_back);
    assert_eq!(served.attempts.len(), 1);
    assert_eq!(&*served.attempts[0].model, A);
    assert_eq!(served.attempts[0].kind(), ErrorKind::RateLimited);
    assert_eq!(
        served.attempts[0].status(),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!((mock.calls(A), mock.calls(B)), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn failing_primary_cools_down_then_gets_exactly_one_probe() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(503));
    let svc = stack(builder().chain([A, B]), &mock);
    for _ in 0..5 {
        assert_eq!(&*send(&svc, BODY).await.unwrap().model, B);
    }
    assert_eq!(mock.calls(A), 5);
    // Cooling down: 100 requests, not one call to the primary.
    for _ in 0..100 {
        let served = send(&svc, BODY).await.unwrap();
        assert_eq!(&*served.model, B);
        assert_eq!(served.attempts[0].kind(), ErrorKind::ModelCoolingDown);
    }
    assert_eq!(mock.calls(A), 5);
    assert_eq!(mock.calls(B), 105);

    // After the cooldown (15 s, no jitter), 100 concurrent requests: one probe.
    tokio::time::advance(Duration::from_secs(15)).await;
    mock.model(A)
        .respond(Reply::delay(Duration::from_secs(1), Reply::ok()));
    let all = (0..100).map(|_| {
        let svc = svc.clone();
        async move { send(&svc, BODY).await }
    });
    let served = futures_join_all(all).await;
    assert_eq!(mock.calls(A), 6);
    let by_a = served
        .iter()
        .filter(|s| &*s.as_ref().unwrap().model == A)
        .count();
    assert_eq!(by_a, 1);
    assert_eq!(mock.calls(B), 105 + 99);
}

/// `join_all` without the futures crate: spawn each on the current runtime.
async fn futures_join_all<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn invalid_request_is_one_call_context_length_and_moderation_fall_back() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(400));
    let svc = stack(builder().chain([A, B]), &mock);
    let err = send(&svc, BODY).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(mock.total_calls(), 1);

    for reply in [Reply::context_length(), Reply::moderation()] {
        let mock = MockOpenRouter::new();
        mock.model(A).respond(reply);
        let svc = stack(builder().chain([A, B]), &mock);
        let served = send(&svc, BODY).await.unwrap();
        assert_eq!(&*served.model, B);
        assert_eq!((mock.calls(A), mock.calls(B)), (1, 1));
    }
}

#[tokio::test(start_paused = true)]
async fn every_model_down_exhausted_lists_every_attempt_in_order() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(503));
    mock.model(B).respond(Reply::status(500));
    mock.model(C).respond(Reply::status(429));
    let svc = stack(builder().chain([A, B, C]).max_retries(1), &mock);
    let err = send(&svc, BODY).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted);
    let got: Vec<(&str, u32, ErrorKind, Option<u16>)> = err
        .attempts()
        .iter()
        .map(|a| (&*a.model, a.retry, a.kind(), a.status().map(|s| s.as_u16())))
        .collect();
    assert_eq!(
        got,
        [
            (A, 0, ErrorKind::ModelUnavailable, Some(503)),
            (B, 0, ErrorKind::ProviderError, Some(500)),
            (B, 1, ErrorKind::ProviderError, Some(500)),
            (C, 0, ErrorKind::RateLimited, Some(429)),
        ]
    );
    assert_eq!((mock.calls(A), mock.calls(B), mock.calls(C)), (1, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn rewritten_body_differs_only_inside_the_model_value() {
    // Unusual whitespace, escapes and unicode, `model` not first, a nested "model" key.
    let original = "{ \"messages\" :[ {\"role\":\"user\",\"content\":\"caf\\u00e9 \u{1F600} \\\"model\\\": x\"}],\n\t\"model\"  :\r\n \"x\\/y\\u00e9\" ,\"tools\":[{\"model\":\"nested\"}],  \"max_tokens\" : 5 }";
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(502));
    let svc = stack(builder().chain([A, B]).max_retries(0), &mock);
    let served = send(&svc, original).await.unwrap();
    assert_eq!(&*served.model, B);
    let old_value = "\"x\\/y\\u00e9\"";
    for model in [A, B] {
        let expected = original.replacen(old_value, &format!("\"{model}\""), 1);
        let bodies = mock.bodies(model);
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0], Bytes::from(expected), "{model}");
    }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_with_a_flaky_primary() {
    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(Reply::fail_rate(0.3, Reply::status(500), 0x5eed));
    let svc = stack(builder().chain([A, B, C]), &mock);
    let mut ok = 0u32;
    const N: u32 = 10_000;
    for _ in 0..N {
        if send(&svc, BODY).await.is_ok() {
            ok += 1;
        }
        // Two requests a second: cooldowns end and the primary keeps getting traffic.
        tokio::time::advance(Duration::from_millis(500)).await;
    }
    let calls = mock.total_calls() as f64 / N as f64;
    eprintln!(
        "{ok} of {N} succeeded, {calls:.3} upstream calls per request, by model {:?}",
        mock.calls_by_model()
    );
    // The primary really failed: its failures were retried or fell back.
    assert!(mock.total_calls() > u64::from(N) + 2_000);
    assert!(ok as f64 >= 0.999 * N as f64, "{ok} of {N} succeeded");
    assert!(calls <= 1.5, "{calls} upstream calls per request");
}

#[tokio::test(start_paused = true)]
async fn hybrid_windows_through_the_stack() {
    // The stand-in routes server-side like OpenRouter: [m/1, m/2, m/3] all fail there (one
    // upstream call, answered with the last failure), then [m/4, m/5, m/6] is served by m/5.
    let mock = MockOpenRouter::new();
    for m in ["m/1", "m/2", "m/3", "m/4"] {
        mock.model(m).respond(Reply::status(503));
    }
    let svc = stack(
        builder()
            .chain(["m/1", "m/2", "m/3", "m/4", "m/5", "m/6"])
            .server_side_window(3),
        &mock,
    );
    let served = send(&svc, BODY).await.unwrap();
    assert_eq!(&*served.model, "m/5");
    assert_eq!(&*served.requested, "m/4");
    assert!(served.fell_back);
    assert_eq!(served.attempts.len(), 1);
    assert_eq!(&*served.attempts[0].model, "m/1");
    assert_eq!(
        served.attempts[0].status(),
        Some(http::StatusCode::SERVICE_UNAVAILABLE)
    );
    let calls: Vec<(String, u64)> = mock.calls_by_model().into_iter().collect();
    let expected: Vec<(String, u64)> = ["m/1", "m/2", "m/3", "m/4", "m/5"]
        .iter()
        .map(|m| (m.to_string(), 1))
        .collect();
    assert_eq!(calls, expected, "m/6 is never tried");
    let bodies: Vec<Bytes> = mock.requests().iter().map(|r| r.body().clone()).collect();
    assert_eq!(
        bodies,
        [
            Bytes::from_static(
                br#"{"model":"m/1","messages":[{"role":"user","content":"hi"}],"models":["m/1","m/2","m/3"]}"#
            ),
            Bytes::from_static(
                br#"{"model":"m/4","messages":[{"role":"user","content":"hi"}],"models":["m/4","m/5","m/6"]}"#
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_chain_and_selection_by_extension_and_header() {
    let mock = MockOpenRouter::new();
    let svc = stack(
        builder()
            .chain([A])
            .named_chain("coding", [B])
            .named_chain("fast", [C])
            .chain_header("x-openrouter-chain"),
        &mock,
    );
    let mut req = request(BODY);
    req.extensions_mut().insert(ChainName::new("poetry"));
    let err = svc.clone().oneshot(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownChain);
    let mut req = request(BODY);
    req.headers_mut()
        .insert("x-openrouter-chain", "poetry".parse().unwrap());
    let err = svc.clone().oneshot(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownChain);
    assert_eq!(mock.total_calls(), 0);

    let mut req = request(BODY);
    req.extensions_mut().insert(ChainName::new("coding"));
    let resp = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(&*resp.extensions().get::<ServedBy>().unwrap().model, B);
    let mut req = request(BODY);
    req.headers_mut()
        .insert("x-openrouter-chain", "fast".parse().unwrap());
    let resp = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(&*resp.extensions().get::<ServedBy>().unwrap().model, C);
    // The header does not reach the upstream.
    assert!(mock.requests()[1]
        .headers()
        .get("x-openrouter-chain")
        .is_none());
    assert_eq!(&*send(&svc, BODY).await.unwrap().model, A);
}

#[tokio::test(start_paused = true)]
async fn all_cooling_sends_one_forced_probe_to_the_earliest() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(429).retry_after(60));
    mock.model(B).respond(Reply::status(429).retry_after(30));
    // One failure trips a model here, so one request cools both.
    let b = builder()
        .chain([A, B])
        .wait_for_rate_limit(false)
        .health_config(HealthConfig::default().jitter(0.0).consecutive_failures(1));
    let svc = stack(b, &mock);
    let err = send(&svc, BODY).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted);
    assert_eq!(mock.total_calls(), 2);
    // Both cool down (for their Retry-After); B's cooldown ends first: one forced attempt
    // to B.
    mock.model(B).respond(Reply::ok());
    let served = send(&svc, BODY).await.unwrap();
    assert_eq!(&*served.model, B);
    let kinds: Vec<_> = served
        .attempts
        .iter()
        .map(|a| (&*a.model, a.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            (A, ErrorKind::ModelCoolingDown),
            (B, ErrorKind::ModelCoolingDown)
        ]
    );
    assert_eq!((mock.calls(A), mock.calls(B)), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn waits_for_retry_after_when_every_model_is_rate_limited() {
    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(Reply::status(429).retry_after(3))
        .once()
        .then(Reply::ok());
    mock.model(B).respond(Reply::status(503));
    // The 429's Retry-After: 3 is waited out, jittered in [3 s, 4.5 s].
    let layer = builder().chain([A, B]).build().unwrap();
    let health = layer.health().clone();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    let start = tokio::time::Instant::now();
    let served = send(&svc, BODY).await.unwrap();
    assert_eq!(&*served.model, A);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited <= Duration::from_millis(4500),
        "{waited:?}"
    );
    assert_eq!((mock.calls(A), mock.calls(B)), (2, 1));
    assert!(health.is_available(A));

    // A Retry-After past the deadline is not waited for.
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(429).retry_after(300));
    mock.model(B).respond(Reply::status(503));
    let svc = stack(builder().chain([A, B]), &mock);
    let start = tokio::time::Instant::now();
    let err = send(&svc, BODY).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn per_model_timeout_moves_on() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::hang());
    let svc = stack(
        builder()
            .chain([ChainModel::new(A).timeout(Duration::from_secs(5)), B.into()])
            .max_retries(0),
        &mock,
    );
    let start = tokio::time::Instant::now();
    let served = send(&svc, BODY).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(&*served.model, B);
    assert_eq!(served.attempts[0].kind(), ErrorKind::AttemptTimeout);
    assert_eq!(served.attempts[0].elapsed, Duration::from_secs(5));
}

#[tokio::test]
async fn the_stack_is_a_service_that_can_be_polled_ready() {
    let mock = MockOpenRouter::new();
    let mut svc = stack(builder().chain([A]), &mock);
    std::future::poll_fn(|cx| Service::<http::Request<String>>::poll_ready(&mut svc, cx))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn native_routing_sits_outside_the_chain() {
    use tower_openrouter::routing::{ProviderPreferences, RoutingConfig};
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(503));
    let routing = RoutingConfig::builder()
        .provider(ProviderPreferences::new().allow_fallbacks(false))
        .route("fallback")
        .build()
        .unwrap();
    let svc = stack(builder().chain([A, B]).native_routing(routing), &mock);
    assert_eq!(
        &*send(&svc, r#"{"model":"x","messages":[]}"#)
            .await
            .unwrap()
            .model,
        B
    );
    let bodies: Vec<Bytes> = mock.requests().iter().map(|r| r.body().clone()).collect();
    assert_eq!(
        bodies,
        [
            Bytes::from(format!(
                r#"{{"model":"{A}","messages":[],"provider":{{"allow_fallbacks":false}},"route":"fallback"}}"#
            )),
            Bytes::from(format!(
                r#"{{"model":"{B}","messages":[],"provider":{{"allow_fallbacks":false}},"route":"fallback"}}"#
            )),
        ]
    );
}

#[test]
fn settings_that_cannot_hold_name_their_field() {
    use tower_openrouter::routing::RoutingConfig;
    let field = |b: OpenRouterLayerBuilder| b.build().unwrap_err().field().to_owned();
    let s = Duration::from_secs;
    assert_eq!(field(OpenRouterLayer::builder()), "chain");
    assert_eq!(
        field(
            OpenRouterLayer::builder()
                .chain([A])
                .attempt_timeout(s(90))
                .deadline(s(60))
        ),
        "attempt_timeout"
    );
    assert_eq!(
        field(
            OpenRouterLayer::builder()
                .chain([ChainModel::new(A).timeout(s(400))])
                .deadline(s(300))
        ),
        "default_chain[0].timeout"
    );
    assert_eq!(
        field(OpenRouterLayer::builder().named_chain("fast", Vec::<&str>::new())),
        "chains.fast"
    );
    assert_eq!(
        field(OpenRouterLayer::builder().chain([A]).server_side_window(4)),
        "server_side_window"
    );
    assert_eq!(
        field(
            OpenRouterLayer::builder()
                .chain([A])
                .server_side_window(2)
                .native_routing(RoutingConfig::builder().models([A, B]).build().unwrap())
        ),
        "server_side_window"
    );
    assert_eq!(
        field(
            OpenRouterLayer::builder()
                .chain([A])
                .chain_header("bad header")
        ),
        "chain_header"
    );
    assert_eq!(
        field(
            OpenRouterLayer::builder()
                .chain([A])
                .deadline(Duration::ZERO)
        ),
        "deadline"
    );
    assert_eq!(
        field(OpenRouterLayer::builder().chain([A]).max_body_bytes(0)),
        "max_body_bytes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_per_model_disable_duration_is_the_cooldown_of_that_model() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::status(503));
    let layer = builder()
        .chain([
            ChainModel::new(A).disable_duration(Duration::from_secs(60)),
            B.into(),
        ])
        .health_config(HealthConfig::default().jitter(0.0).consecutive_failures(1))
        .build()
        .unwrap();
    let health = layer.health().clone();
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    send(&svc, BODY).await.unwrap();
    assert!(!health.is_available(A));
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(!health.is_available(A));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(health.is_available(A));
    // A shared tracker must already say the same.
    let err = builder()
        .chain([ChainModel::new(A).disable_duration(Duration::from_secs(60))])
        .health_tracker(tower_openrouter::HealthTracker::default())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "default_chain[0].disable_duration");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_the_chain_with_every_attempt() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::hang());
    mock.model(B).respond(Reply::hang());
    let svc = stack(
        builder()
            .chain([A, B, C])
            .deadline(Duration::from_secs(45))
            .attempt_timeout(Duration::from_secs(30)),
        &mock,
    );
    let start = tokio::time::Instant::now();
    let err = send(&svc, BODY).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(45));
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(&*err.attempts()[0].model, A);
    assert_eq!(err.attempts()[0].kind(), ErrorKind::AttemptTimeout);
    assert_eq!(err.attempts()[0].elapsed, Duration::from_secs(30));
    assert_eq!((mock.calls(A), mock.calls(B), mock.calls(C)), (1, 1, 0));
}

#[test]
fn a_chain_from_a_slice_or_an_iterator() {
    use tower_openrouter::fallback::{Chain, FallbackLayer};
    let models: Vec<&str> = vec![A, B, C];
    let ids = |c: &Chain| c.iter().map(|m| m.model().to_owned()).collect::<Vec<_>>();
    // Builder methods taking `impl Into<Chain>` take an iterator and a slice.
    let layer = OpenRouterLayer::builder()
        .chain(models.iter().copied())
        .named_chain("fast", &models[1..])
        .build()
        .unwrap();
    assert_eq!(ids(layer.chains().default_chain().unwrap()), [A, B, C]);
    assert_eq!(ids(layer.chains().get("fast").unwrap()), [B, C]);
    // `From<&[M]>` for owned ids and chain models, and `FromIterator`.
    let owned: Vec<String> = models.iter().map(|m| m.to_string()).collect();
    assert_eq!(ids(&Chain::from(&owned[..])), [A, B, C]);
    let with_limits = [ChainModel::new(A).max_retries(0), ChainModel::new(B)];
    let chain = Chain::from(&with_limits[..]);
    assert_eq!(chain.models()[0].max_retries, Some(0));
    let collected: Chain = models.iter().rev().copied().collect();
    assert_eq!(ids(&collected), [C, B, A]);
    // The fallback layer alone too.
    let layer = FallbackLayer::new(models.iter().copied());
    assert_eq!(layer.chains().default_chain().unwrap().len(), 3);
}

#[test]
fn only_settings_written_can_conflict() {
    let s = Duration::from_secs;
    // A deadline alone: the attempt timeout not set follows it (default 120 s is longer),
    // and the default retries' backoff (10 s cap, 1.5 s in all) is not held against it.
    let attempt_under = |deadline: u64| {
        let layer = OpenRouterLayer::builder()
            .chain([A])
            .deadline(s(deadline))
            .build()
            .unwrap();
        assert_eq!(layer.deadline(), s(deadline));
        layer.attempt_timeout()
    };
    assert_eq!(attempt_under(30), s(30));
    assert_eq!(attempt_under(1), s(1));
    // A longer deadline keeps the default attempt timeout.
    assert_eq!(attempt_under(200), s(120));
    // Settings written still conflict.
    let field = |b: OpenRouterLayerBuilder| b.build().unwrap_err().field().to_owned();
    let b = || OpenRouterLayer::builder().chain([A]).deadline(s(1));
    assert_eq!(field(b().attempt_timeout(s(2))), "attempt_timeout");
    assert_eq!(field(b().max_retries(2)), "max_retries");
    assert_eq!(
        field(b().chain([ChainModel::new(A).max_retries(2)])),
        "max_retries"
    );
    assert_eq!(field(b().retry_policy(RetryPolicy::new())), "backoff_cap");
    // `validate` checks the same without building.
    assert_eq!(
        b().attempt_timeout(s(2)).validate().unwrap_err().field(),
        "attempt_timeout"
    );
    assert!(b().validate().is_ok());
}
