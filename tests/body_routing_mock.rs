//! Buffering and native routing in front of `MockOpenRouter`: bad input never reaches it,
//! good input reaches it byte for byte.
#![cfg(feature = "mock")]

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::body::BufferRequestLayer;
use tower_openrouter::mock::MockOpenRouter;
use tower_openrouter::routing::{NativeRoutingLayer, ProviderPreferences, RoutingConfig, SortBy};
use tower_openrouter::ErrorKind;

const CHAT: &str = "http://127.0.0.1/api/v1/chat/completions";
const MESSAGES: &str = "http://127.0.0.1/api/v1/messages";

fn post(uri: &str, body: impl Into<String>) -> Request<Full<Bytes>> {
    let body = Bytes::from(body.into());
    Request::post(uri)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Full::new(body))
        .unwrap()
}

fn stack(
    mock: &MockOpenRouter,
    config: RoutingConfig,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = http::Response<tower_openrouter::mock::MockBody>,
    Error = tower_openrouter::Error,
> + Clone {
    ServiceBuilder::new()
        .layer(BufferRequestLayer::new().limit(256))
        .layer(NativeRoutingLayer::new(config))
        .service(mock.clone())
}

#[tokio::test]
async fn bad_input_never_reaches_the_upstream() {
    let mock = MockOpenRouter::new();
    let config = RoutingConfig::builder().fallbacks(["b/1"]).build().unwrap();
    let svc = stack(&mock, config);
    let too_large = format!(r#"{{"model":"a/b","x":"{}"}}"#, "y".repeat(300));
    let cases = [
        (post(CHAT, too_large), ErrorKind::BodyTooLarge),
        (post(CHAT, "not json"), ErrorKind::InvalidBody),
        (post(CHAT, r#"{"messages":[]}"#), ErrorKind::InvalidBody),
        (post(CHAT, r#"{"model":7}"#), ErrorKind::InvalidBody),
        (
            post(CHAT, r#"{"model":"a","models":["a","b","c","d"]}"#),
            ErrorKind::InvalidRouting,
        ),
        (
            post(MESSAGES, r#"{"model":"a","models":["b"]}"#),
            ErrorKind::InvalidRouting,
        ),
        (
            post(
                MESSAGES,
                r#"{"model":"a","fallbacks":[{"model":"b","x":1}]}"#,
            ),
            ErrorKind::InvalidRouting,
        ),
    ];
    for (req, kind) in cases {
        let e = svc.clone().oneshot(req).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
    }
    assert_eq!(mock.total_calls(), 0);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn the_upstream_receives_the_injected_fields_and_the_callers_bytes() {
    let mock = MockOpenRouter::new();
    let config = RoutingConfig::builder()
        .models(["a/b", "c/d"])
        .provider(ProviderPreferences::new().sort(SortBy::Price))
        .build()
        .unwrap();
    let body =
        "{ \"model\" : \"a/b\",\n \"messages\": [{\"role\":\"user\",\"content\":\"h\\u00e9\"}] }";
    let resp = stack(&mock, config)
        .oneshot(post(CHAT, body))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.calls("a/b"), 1);
    let want = "{ \"model\" : \"a/b\",\n \"messages\": [{\"role\":\"user\",\"content\":\"h\\u00e9\"}],\n \"models\": [\"a/b\",\"c/d\"],\n \"provider\": {\"sort\":\"price\"} }";
    assert_eq!(mock.bodies("a/b"), [Bytes::from_static(want.as_bytes())]);
    let sent = &mock.requests()[0];
    assert_eq!(
        sent.headers()["content-length"],
        want.len().to_string().as_str()
    );

    // A messages body gets its fallbacks.
    let mock = MockOpenRouter::new();
    let config = RoutingConfig::builder().fallbacks(["c/d"]).build().unwrap();
    stack(&mock, config)
        .oneshot(post(MESSAGES, r#"{"model":"a/b","max_tokens":5}"#))
        .await
        .unwrap();
    assert_eq!(
        mock.bodies("a/b"),
        [Bytes::from_static(
            br#"{"model":"a/b","max_tokens":5,"fallbacks":[{"model":"c/d"}]}"#
        )]
    );
}
