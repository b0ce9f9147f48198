//! The fallback layer over a hand-written upstream that answers like the classify layer.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::Full;
use tower::{service_fn, Layer, ServiceExt};
use tower_openrouter::fallback::{
    Chain, ChainModel, ChainName, Chains, FallbackLayer, ServedBy, UnlistedModel,
};
use tower_openrouter::{Attempt, Error, ErrorKind, UpstreamInfo};

type Calls = Arc<Mutex<Vec<(Attempt, Bytes)>>>;

/// An upstream that records every call and answers with `script(model)`.
fn upstream(
    calls: Calls,
    script: impl Fn(&str) -> Result<(), ErrorKind> + Clone + Send + 'static,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Error,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<Full<Bytes>>| {
        let calls = calls.clone();
        let script = script.clone();
        async move {
            let attempt = req.extensions().get::<Attempt>().cloned().unwrap();
            let body = tower_openrouter::body::full_bytes(req.body());
            calls.lock().unwrap().push((attempt.clone(), body));
            match script(attempt.model()) {
                Ok(()) => {
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                    resp.extensions_mut().insert(UpstreamInfo {
                        model: Some(attempt.model.clone()),
                        ..UpstreamInfo::default()
                    });
                    Ok(resp)
                }
                Err(kind) => Err(Error::new(kind).with_status(status_of(kind))),
            }
        }
    })
}

fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::InvalidRequest | ErrorKind::ContextLengthExceeded => StatusCode::BAD_REQUEST,
        ErrorKind::ContentModerated => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// These tests send a placeholder `model` and mean the default chain, so it replaces the
/// caller's model.
fn layer(chains: impl Into<Chains>) -> FallbackLayer {
    FallbackLayer::new(chains).unlisted_model(UnlistedModel::UseDefaultChain)
}

fn request(body: &'static str) -> Request<Full<Bytes>> {
    Request::post("http://localhost/api/v1/chat/completions")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

const BODY: &str = r#"{"model":"x/y","messages":[{"role":"user","content":"hi"}]}"#;

fn models(calls: &Calls) -> Vec<String> {
    calls
        .lock()
        .unwrap()
        .iter()
        .map(|(a, _)| a.model().to_owned())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn rate_limited_primary_falls_back_to_secondary() {
    let calls = Calls::default();
    let svc = layer([
        ChainModel::new("a/primary").label("primary"),
        ChainModel::new("b/secondary").label("secondary"),
    ])
    .layer(upstream(calls.clone(), |m| {
        if m == "a/primary" {
            Err(ErrorKind::RateLimited)
        } else {
            Ok(())
        }
    }));
    let resp = svc.oneshot(request(BODY)).await.unwrap();
    let served = resp.extensions().get::<ServedBy>().unwrap();
    assert_eq!(&*served.model, "b/secondary");
    assert_eq!(served.index, 1);
    assert_eq!(served.label.as_deref(), Some("secondary"));
    assert!(served.fell_back);
    assert_eq!(served.attempts.len(), 1);
    assert_eq!(&*served.attempts[0].model, "a/primary");
    assert_eq!(served.attempts[0].kind(), ErrorKind::RateLimited);
    assert_eq!(
        served.attempts[0].status(),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(models(&calls), ["a/primary", "b/secondary"]);
    let calls = calls.lock().unwrap();
    assert_eq!(calls[1].0.index, 1);
    assert_eq!(calls[1].0.label.as_deref(), Some("secondary"));
}

#[tokio::test(start_paused = true)]
async fn invalid_request_is_fatal_context_length_and_moderation_fall_back() {
    for (kind, expect_calls) in [
        (ErrorKind::InvalidRequest, 1),
        (ErrorKind::ContextLengthExceeded, 2),
        (ErrorKind::ContentModerated, 2),
    ] {
        let calls = Calls::default();
        let svc = layer(["a/1", "b/2"]).layer(upstream(calls.clone(), move |m| {
            if m == "a/1" {
                Err(kind)
            } else {
                Ok(())
            }
        }));
        let res = svc.oneshot(request(BODY)).await;
        assert_eq!(calls.lock().unwrap().len(), expect_calls, "{kind}");
        match expect_calls {
            1 => assert_eq!(res.unwrap_err().kind(), kind),
            _ => assert_eq!(
                &*res.unwrap().extensions().get::<ServedBy>().unwrap().model,
                "b/2"
            ),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_model_down_lists_every_attempt_in_order() {
    let calls = Calls::default();
    let svc = layer(["a/1", "b/2", "c/3"]).layer(upstream(calls.clone(), |m| {
        Err(match m {
            "a/1" => ErrorKind::RateLimited,
            "b/2" => ErrorKind::ModelUnavailable,
            _ => ErrorKind::ProviderError,
        })
    }));
    let err = svc.oneshot(request(BODY)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted);
    let got: Vec<(&str, usize, ErrorKind)> = err
        .attempts()
        .iter()
        .map(|a| (&*a.model, a.index, a.kind()))
        .collect();
    assert_eq!(
        got,
        [
            ("a/1", 0, ErrorKind::RateLimited),
            ("b/2", 1, ErrorKind::ModelUnavailable),
            ("c/3", 2, ErrorKind::ProviderError),
        ]
    );
    assert_eq!(err.attempts()[2].status(), Some(StatusCode::BAD_GATEWAY));
    assert_eq!(models(&calls), ["a/1", "b/2", "c/3"]);
}

fn named_chains() -> Chains {
    Chains::new(["d/default"])
        .with_chain("coding", ["c/coder", "d/default"])
        .with_cost_tiers([
            ("budget", Chain::new(["t/cheap"])),
            ("standard", Chain::new(["t/mid"])),
            ("premium", Chain::new(["t/top"])),
        ])
}

#[tokio::test(start_paused = true)]
async fn unknown_chain_fails_with_zero_upstream_calls() {
    let calls = Calls::default();
    let layer = layer(named_chains()).chain_header(HeaderName::from_static("x-openrouter-chain"));
    let svc = layer.layer(upstream(calls.clone(), |_| Ok(())));

    let mut req = request(BODY);
    req.extensions_mut().insert(ChainName::new("poetry"));
    let err = svc.clone().oneshot(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownChain);
    assert!(err.to_string().contains("poetry"), "{err}");

    let mut req = request(BODY);
    req.headers_mut()
        .insert("x-openrouter-chain", "poetry".parse().unwrap());
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownChain);
    assert!(calls.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn chain_selected_by_extension_header_and_tier() {
    let calls = Calls::default();
    let layer = layer(named_chains()).chain_header(HeaderName::from_static("x-openrouter-chain"));
    let svc = layer.layer(upstream(calls.clone(), |m| {
        if m == "d/default" || m == "t/mid" {
            Ok(())
        } else {
            Err(ErrorKind::ModelUnavailable)
        }
    }));

    // Extension.
    let mut req = request(BODY);
    req.extensions_mut().insert(ChainName::new("coding"));
    let resp = svc.clone().oneshot(req).await.unwrap();
    let served = resp.extensions().get::<ServedBy>().unwrap();
    assert_eq!(served.chain.as_deref(), Some("coding"));
    assert_eq!(&*served.model, "d/default");

    // Header (removed before the upstream sees it).
    let mut req = request(BODY);
    req.headers_mut()
        .insert("x-openrouter-chain", "tier:standard".parse().unwrap());
    let resp = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(
        resp.extensions()
            .get::<ServedBy>()
            .unwrap()
            .chain
            .as_deref(),
        Some("tier:standard")
    );

    // Default.
    svc.oneshot(request(BODY)).await.unwrap();
    assert_eq!(
        models(&calls),
        ["c/coder", "d/default", "t/cheap", "t/mid", "d/default"]
    );
}

#[tokio::test(start_paused = true)]
async fn per_model_limits_reach_the_attempt_extension() {
    let calls = Calls::default();
    let svc = layer([ChainModel::new("a/1")
        .timeout(std::time::Duration::from_secs(30))
        .max_retries(2)
        .label("primary")])
    .layer(upstream(calls.clone(), |_| Ok(())));
    svc.oneshot(request(BODY)).await.unwrap();
    let a = calls.lock().unwrap()[0].0.clone();
    assert_eq!(a.timeout, Some(std::time::Duration::from_secs(30)));
    assert_eq!(a.max_retries, Some(2));
    assert_eq!(a.label.as_deref(), Some("primary"));
    assert_eq!((a.index, a.retry), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn hybrid_windows_are_sent_attempt_by_attempt() {
    let calls = Calls::default();
    let svc = layer(["a/1", "b/2", "c/3", "d/4", "e/5"])
        .server_side_window(3)
        .layer(upstream(calls.clone(), |m| {
            if m == "d/4" {
                Ok(())
            } else {
                Err(ErrorKind::ModelUnavailable)
            }
        }));
    let resp = svc.oneshot(request(BODY)).await.unwrap();
    let bodies: Vec<Bytes> = calls.lock().unwrap().iter().map(|c| c.1.clone()).collect();
    assert_eq!(bodies.len(), 2);
    let first: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(first["model"], "a/1");
    assert_eq!(first["models"], serde_json::json!(["a/1", "b/2", "c/3"]));
    let second: serde_json::Value = serde_json::from_slice(&bodies[1]).unwrap();
    assert_eq!(second["model"], "d/4");
    assert_eq!(second["models"], serde_json::json!(["d/4", "e/5"]));
    let served = resp.extensions().get::<ServedBy>().unwrap();
    assert_eq!(&*served.model, "d/4");
    assert_eq!(served.attempts.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn hybrid_on_the_messages_api_sends_fallbacks() {
    let calls = Calls::default();
    let svc = layer(["a/1", "b/2", "c/3", "d/4"])
        .server_side_window(3)
        .layer(upstream(calls.clone(), |m| {
            if m == "d/4" {
                Ok(())
            } else {
                Err(ErrorKind::ModelUnavailable)
            }
        }));
    let req = Request::post("http://localhost/api/v1/messages")
        .body(Full::new(Bytes::from_static(
            br#"{"model": "x", "max_tokens": 5, "messages": []}"#,
        )))
        .unwrap();
    svc.oneshot(req).await.unwrap();
    let bodies: Vec<Bytes> = calls.lock().unwrap().iter().map(|c| c.1.clone()).collect();
    assert_eq!(
        bodies,
        [
            Bytes::from_static(
                br#"{"model": "a/1", "max_tokens": 5, "messages": [], "fallbacks": [{"model":"b/2"},{"model":"c/3"}]}"#
            ),
            Bytes::from_static(br#"{"model": "d/4", "max_tokens": 5, "messages": []}"#),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_callers_buffer_is_sent_when_the_model_is_unchanged() {
    let calls = Calls::default();
    let svc = layer(["x/y"]).layer(upstream(calls.clone(), |_| Ok(())));
    let body = Bytes::from_static(BODY.as_bytes());
    let req = Request::post("http://localhost/api/v1/chat/completions")
        .body(Full::new(body.clone()))
        .unwrap();
    svc.oneshot(req).await.unwrap();
    let sent = calls.lock().unwrap()[0].1.clone();
    assert_eq!(sent.as_ptr(), body.as_ptr());
}

mod with_health {
    use super::*;
    use std::time::Duration;
    use tower_openrouter::fallback::Order;
    use tower_openrouter::health::{HealthConfig, HealthLayer, HealthTracker};

    fn tracker() -> HealthTracker {
        HealthTracker::new(HealthConfig::default().consecutive_failures(2).jitter(0.0))
    }

    fn stack(
        chain: &[&'static str],
        tracker: &HealthTracker,
        calls: &Calls,
        script: impl Fn(&str) -> Result<(), ErrorKind> + Clone + Send + 'static,
    ) -> impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Error,
        Future = impl Send,
    > + Clone {
        let fallback = layer(chain.to_vec()).health(tracker.clone());
        fallback.layer(HealthLayer::new(tracker.clone()).layer(upstream(calls.clone(), script)))
    }

    #[tokio::test(start_paused = true)]
    async fn cooled_models_are_skipped_without_a_call() {
        let tracker = tracker();
        let calls = Calls::default();
        let svc = stack(&["a/1", "b/2"], &tracker, &calls, |m| {
            if m == "a/1" {
                Err(ErrorKind::ProviderError)
            } else {
                Ok(())
            }
        });
        for _ in 0..2 {
            svc.clone().oneshot(request(BODY)).await.unwrap();
        }
        assert!(!tracker.is_available("a/1"));
        calls.lock().unwrap().clear();
        let resp = svc.clone().oneshot(request(BODY)).await.unwrap();
        let served = resp.extensions().get::<ServedBy>().unwrap();
        assert_eq!(&*served.model, "b/2");
        assert!(served.fell_back);
        assert_eq!(served.attempts[0].kind(), ErrorKind::ModelCoolingDown);
        assert_eq!(served.attempts[0].elapsed, Duration::ZERO);
        assert_eq!(models(&calls), ["b/2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn every_model_cooling_sends_one_forced_probe_to_the_earliest() {
        let tracker = tracker();
        let calls = Calls::default();
        let svc = stack(&["a/1", "b/2"], &tracker, &calls, |_| {
            Err(ErrorKind::ProviderError)
        });
        // Both trip at the same instant; a tie goes to the chain's order.
        for _ in 0..2 {
            svc.clone().oneshot(request(BODY)).await.unwrap_err();
        }
        assert!(!tracker.is_available("a/1") && !tracker.is_available("b/2"));
        assert!(tracker.cooldown_until("a/1") <= tracker.cooldown_until("b/2"));
        calls.lock().unwrap().clear();
        let err = svc.clone().oneshot(request(BODY)).await.unwrap_err();
        // Both skipped, then one forced attempt to the earliest: a/1.
        assert_eq!(models(&calls), ["a/1"]);
        assert_eq!(err.kind(), ErrorKind::Exhausted);
        let got: Vec<(&str, ErrorKind)> = err
            .attempts()
            .iter()
            .map(|a| (&*a.model, a.kind()))
            .collect();
        assert_eq!(
            got,
            [
                ("a/1", ErrorKind::ModelCoolingDown),
                ("b/2", ErrorKind::ModelCoolingDown),
                ("a/1", ErrorKind::ProviderError),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn health_order_tries_the_best_success_rate_first() {
        let tracker = HealthTracker::new(
            HealthConfig::default()
                .consecutive_failures(100)
                .without_failure_ratio()
                .jitter(0.0),
        );
        // a/1 fails one call in two, b/2 never: b/2 goes first in Order::Health.
        for i in 0..10 {
            let e = Error::new(ErrorKind::ProviderError);
            tracker.record("a/1", if i % 2 == 0 { Ok(()) } else { Err(&e) });
            tracker.record("b/2", Ok(()));
        }
        let calls = Calls::default();
        let svc = layer(["a/1", "b/2", "c/3"])
            .health(tracker.clone())
            .order(Order::Health)
            .layer(upstream(calls.clone(), |_| {
                Err(ErrorKind::ModelUnavailable)
            }));
        let err = svc.oneshot(request(BODY)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Exhausted);
        // c/3 has no data: counted as healthy, after b/2 (chain order breaks the tie).
        assert_eq!(models(&calls), ["b/2", "c/3", "a/1"]);
        let idx: Vec<usize> = err.attempts().iter().map(|a| a.index).collect();
        assert_eq!(idx, [1, 2, 0]);
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_passed_ends_the_walk() {
    use std::time::Duration;
    let calls = Calls::default();
    let inner = upstream(calls.clone(), |_| Err(ErrorKind::ModelUnavailable));
    let slow = tower::ServiceBuilder::new()
        .then(|r: Result<Response<Full<Bytes>>, Error>| async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            r
        })
        .service(inner);
    let svc = layer(["a/1", "b/2", "c/3"]).layer(slow);
    let mut req = request(BODY);
    req.extensions_mut()
        .insert(tower_openrouter::Deadline::after(Duration::from_secs(6)));
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(models(&calls), ["a/1", "b/2"]);
    assert_eq!(err.attempts().len(), 2);
    assert_eq!(err.attempts()[1].elapsed, Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn a_large_body_is_rewritten_byte_exact_for_every_model_of_the_chain() {
    // 128 KiB: large enough that each model's body replaces the caller's in the call.
    let head =
        "{ \"model\" : \"caller/choice\",\n  \"messages\":[{\"role\":\"user\",\"content\":\"";
    let tail = "\"}], \"temperature\" : 0.2 }";
    let fill = "\\u00e9 x".repeat(128 * 1024 / 8);
    let body = format!("{head}{fill}{tail}");
    let calls: Calls = Arc::default();
    let svc = layer(["m/a", "m/bb", "m/c"]).layer(upstream(calls.clone(), |m| {
        if m == "m/c" {
            Ok(())
        } else {
            Err(ErrorKind::ModelUnavailable)
        }
    }));
    let req = Request::post("http://localhost/api/v1/chat/completions")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(&*resp.extensions().get::<ServedBy>().unwrap().model, "m/c");
    let calls = calls.lock().unwrap();
    let models: Vec<&str> = calls.iter().map(|(a, _)| a.model()).collect();
    assert_eq!(models, ["m/a", "m/bb", "m/c"]);
    for (attempt, sent) in calls.iter() {
        let want = body.replacen("\"caller/choice\"", &format!("\"{}\"", attempt.model()), 1);
        assert_eq!(
            std::str::from_utf8(sent).unwrap(),
            want,
            "body for {}",
            attempt.model()
        );
    }
}
