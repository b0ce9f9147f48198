//! OpenRouter error bodies users posted publicly: 404s caused by the account's own
//! settings or the request's needs (fall back, never count against health), and
//! rate-limit hints that arrive in the body only.
#![cfg(feature = "mock")]

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::classify::{ClassifyOutcome, OpenRouterClassifier, Outcome};
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::health::HealthConfig;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::stack::OpenRouterLayer;
use tower_openrouter::{Action, ErrorKind};

const A: &str = "anthropic/claude-3.5-sonnet";
const B: &str = "openai/gpt-4o";

const UNROUTABLE: [&str; 5] = [
    r#"{"error":{"message":"No endpoints found matching your data policy (Free model publication). Configure: https://openrouter.ai/settings/privacy","code":404}}"#,
    r#"{"error":{"message":"No allowed providers are available for the selected model.","code":404}}"#,
    r#"{"error":{"message":"No endpoints available matching your guardrail restrictions and data policy. Configure: https://openrouter.ai/settings/privacy","code":404}}"#,
    r#"{"error":{"message":"No endpoints found that support tool use. To learn more about provider routing, visit: https://openrouter.ai/docs/provider-routing","code":404}}"#,
    r#"{"error":{"message":"No endpoints found that can handle the requested parameters.","code":404}}"#,
];

const NO_SUCH_MODEL: &str =
    r#"{"error":{"message":"Model vendor/no-such-model not found","code":404}}"#;

fn classify(status: u16, body: &str) -> tower_openrouter::classify::Classification {
    let headers = HeaderMap::new();
    OpenRouterClassifier::new()
        .classify(Outcome::Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: &headers,
            body: body.as_bytes(),
        })
        .unwrap()
}

#[test]
fn a_404_the_account_or_request_caused_falls_back_without_counting() {
    for body in UNROUTABLE {
        let c = classify(404, body);
        assert_eq!(
            (c.kind, c.action),
            (ErrorKind::ModelNotFound, Action::Fallback),
            "{body}"
        );
        assert!(!c.counts_for_health, "{body}");
    }
    // The same inside a 200 (an error object with code 404).
    let c = classify(200, UNROUTABLE[0]);
    assert_eq!(c.action, Action::Fallback);
    assert!(!c.counts_for_health);
    // A model id that does not exist still counts (the chain names a model nobody can use).
    let c = classify(404, NO_SUCH_MODEL);
    assert_eq!(
        (c.kind, c.action),
        (ErrorKind::ModelNotFound, Action::Fallback)
    );
    assert!(c.counts_for_health);
    assert!(classify(404, "").counts_for_health);
}

fn stack(mock: &MockOpenRouter) -> tower_openrouter::stack::OpenRouter<MockOpenRouter> {
    ServiceBuilder::new()
        .layer(
            OpenRouterLayer::builder()
                .chain([A, B])
                .deadline(Duration::from_secs(180))
                .health_config(HealthConfig::default().jitter(0.0))
                .build()
                .unwrap(),
        )
        .service(mock.clone())
}

async fn served(svc: &tower_openrouter::stack::OpenRouter<MockOpenRouter>) -> ServedBy {
    let req = http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"{A}","messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
        .unwrap();
    let resp = svc.clone().oneshot(req).await.unwrap();
    resp.extensions().get::<ServedBy>().cloned().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_data_policy_404_never_cools_the_model() {
    for body in UNROUTABLE {
        let mock = MockOpenRouter::new();
        mock.model(A).respond(Reply::error_body(404, body));
        let svc = stack(&mock);
        for _ in 0..20 {
            let s = served(&svc).await;
            assert_eq!(&*s.model, B);
            assert_eq!(s.attempts[0].kind(), ErrorKind::ModelNotFound);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Every request tried the primary first: it was never benched.
        assert_eq!((mock.calls(A), mock.calls(B)), (20, 20), "{body}");
    }
    // A model that does not exist is benched after a few calls.
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::error_body(404, NO_SUCH_MODEL));
    let svc = stack(&mock);
    for _ in 0..20 {
        assert_eq!(&*served(&svc).await.model, B);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(mock.calls(A) < 20, "{}", mock.calls(A));
    assert_eq!(mock.calls(B), 20);
}

#[test]
fn rate_limit_hints_in_the_body_only_read_like_headers() {
    let cases = [
        (
            r#"{"error":{"code":429,"message":"Rate limit exceeded","metadata":{"headers":{"Retry-After":"7","X-RateLimit-Limit":"20","X-RateLimit-Remaining":"0"}}}}"#,
            Duration::from_secs(7),
        ),
        (
            r#"{"error":{"code":429,"message":"Rate limit exceeded","metadata":{"headers":{"retry-after":12}}}}"#,
            Duration::from_secs(12),
        ),
        (
            r#"{"error":{"code":429,"message":"Provider returned error","metadata":{"retry_after_seconds":2.5,"provider_name":"Chutes"}}}"#,
            Duration::from_millis(2500),
        ),
    ];
    for (body, want) in cases {
        let c = classify(429, body);
        assert_eq!(c.kind, ErrorKind::RateLimited);
        assert_eq!(c.retry_after, Some(want), "{body}");
    }
    // X-RateLimit-Reset in the body (ms since the epoch), 30 s from now.
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 30_000;
    let body = format!(
        r#"{{"error":{{"code":429,"message":"Rate limit exceeded: free-models-per-min","metadata":{{"headers":{{"X-RateLimit-Limit":"20","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"{reset}"}}}}}}}}"#
    );
    let hint = classify(429, &body).retry_after.unwrap();
    assert!(
        hint > Duration::from_secs(28) && hint <= Duration::from_secs(30),
        "{hint:?}"
    );
    // A real header still wins over the body.
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", "3".parse().unwrap());
    let c = OpenRouterClassifier::new()
        .classify(Outcome::Response {
            status: StatusCode::TOO_MANY_REQUESTS,
            headers: &headers,
            body: cases[0].0.as_bytes(),
        })
        .unwrap();
    assert_eq!(c.retry_after, Some(Duration::from_secs(3)));
}

#[tokio::test(start_paused = true)]
async fn a_body_only_hint_reaches_the_attempt_through_the_stack() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::error_body(
        429,
        r#"{"error":{"code":429,"message":"Rate limit exceeded","metadata":{"headers":{"Retry-After":"7"}}}}"#,
    ));
    let s = served(&stack(&mock)).await;
    assert_eq!(&*s.model, B);
    assert_eq!(s.attempts[0].kind(), ErrorKind::RateLimited);
    assert_eq!(
        s.attempts[0].error.retry_after(),
        Some(Duration::from_secs(7))
    );
}
