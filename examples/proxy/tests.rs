//! The gateway over the whole stack over the in-process stand-in (no network).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{HeaderValue, Request, Response, StatusCode};
use tower::Service;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::stack::OpenRouterLayer;
use tower_openrouter::{Error, ErrorKind};

use crate::error::{error_response, status_of};
use crate::gateway::Gateway;
use crate::upstream::Shared;
use crate::CHAIN_HEADER;
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt};

const PROXY_KEY: &str = "sk-or-proxy-own-key";
const CALLER_KEY: &str = "sk-caller-key";

fn gateway(
    mock: &MockOpenRouter,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
    let layer = OpenRouterLayer::builder()
        .chain(["a/primary", "b/secondary"])
        .chain_header(CHAIN_HEADER)
        .build()
        .unwrap();
    let mut auth = HeaderValue::try_from(format!("Bearer {PROXY_KEY}")).unwrap();
    auth.set_sensitive(true);
    Gateway {
        inner: layer.layer(mock.clone()),
        shared: Arc::new(Shared {
            target: "http://127.0.0.1:9/api/v1/chat/completions"
                .parse()
                .unwrap(),
            auth: Some(auth),
        }),
        not_ready: None,
    }
}

fn request(body: &'static str) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {CALLER_KEY}"))
        .header("content-type", "application/json")
        .header("x-title", "gateway test")
        .header("x-stainless-lang", "python")
        .body(Body::from(body))
        .unwrap()
}

const CHAT: &str = r#"{"model":"a/primary","messages":[{"role":"user","content":"hi"}]}"#;

async fn json(resp: Response<Body>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(start_paused = true)]
async fn fails_over_with_its_own_key_and_says_who_served() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary").respond(Reply::status(429));
    let resp = gateway(&mock).oneshot(request(CHAT)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-openrouter-served-by"], "b/secondary");
    assert_eq!(resp.headers()["x-openrouter-attempts"], "2");
    assert!(resp.headers().get("x-openrouter-skipped").is_none());
    assert_eq!(json(resp).await["model"], "b/secondary");

    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        let h = r.headers();
        assert_eq!(h["authorization"], format!("Bearer {PROXY_KEY}").as_str());
        assert_eq!(h["x-title"], "gateway test");
        // Only the listed caller headers go upstream.
        assert!(h.get("x-stainless-lang").is_none());
        assert!(h.values().all(|v| !v
            .as_bytes()
            .windows(CALLER_KEY.len())
            .any(|w| w == CALLER_KEY.as_bytes())));
    }
    assert_eq!(seen[0].model(), Some("a/primary"));
    assert_eq!(seen[1].model(), Some("b/secondary"));
}

#[tokio::test(start_paused = true)]
async fn a_cooled_primary_costs_no_upstream_call() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary")
        .respond(Reply::status(429).retry_after(30));
    let svc = gateway(&mock);
    let first = svc.clone().oneshot(request(CHAT)).await.unwrap();
    assert_eq!(first.headers()["x-openrouter-attempts"], "2");
    for _ in 0..10 {
        let resp = svc.clone().oneshot(request(CHAT)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-openrouter-served-by"], "b/secondary");
        assert_eq!(resp.headers()["x-openrouter-attempts"], "1");
        assert_eq!(resp.headers()["x-openrouter-skipped"], "1");
    }
    assert_eq!(mock.calls("a/primary"), 1);
    assert_eq!(mock.calls("b/secondary"), 11);
}

#[tokio::test(start_paused = true)]
async fn every_model_failing_is_an_openrouter_error_with_the_last_status() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary").respond(Reply::status(429));
    mock.model("b/secondary").respond(Reply::status(503));
    let resp = gateway(&mock).oneshot(request(CHAT)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = json(resp).await;
    let err = &v["error"];
    assert_eq!(err["code"], 503);
    assert!(err["message"]
        .as_str()
        .unwrap()
        .starts_with("all fallbacks exhausted"));
    assert_eq!(err["metadata"]["kind"], "exhausted");
    let attempts = err["metadata"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["model"], "a/primary");
    assert_eq!(attempts[0]["kind"], "rate_limited");
    assert_eq!(attempts[0]["status"], 429);
    assert_eq!(attempts[1]["model"], "b/secondary");
    assert_eq!(attempts[1]["status"], 503);
}

#[tokio::test(start_paused = true)]
async fn a_bad_body_is_a_400_without_an_upstream_call() {
    let mock = MockOpenRouter::new();
    let resp = gateway(&mock).oneshot(request("not json")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = json(resp).await;
    assert_eq!(v["error"]["code"], 400);
    assert_eq!(v["error"]["metadata"]["kind"], "invalid_body");
    assert_eq!(mock.total_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn streams_pass_through() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary").respond(Reply::status(502));
    let resp = gateway(&mock)
        .oneshot(request(
            r#"{"model":"a/primary","stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-openrouter-served-by"], "b/secondary");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains(r#""model":"b/secondary""#));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn statuses_for_failures_without_an_upstream_answer() {
    assert_eq!(
        status_of(&Error::new(ErrorKind::BodyTooLarge)),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        status_of(&Error::new(ErrorKind::Transport)),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        status_of(&Error::new(ErrorKind::DeadlineExceeded)),
        StatusCode::GATEWAY_TIMEOUT
    );
    let resp = error_response(
        &Error::new(ErrorKind::ModelCoolingDown).with_retry_after(Duration::from_millis(2500)),
    );
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "3");
}
