//! Request bodies a generation endpoint cannot read one way only are `InvalidBody` before
//! any upstream call: `"stream"` that is not a boolean, a second top-level `"model"`, a
//! `model` string that does not decode. Through the whole stack over `MockOpenRouter`.
#![cfg(feature = "mock")]

use std::time::Duration;

use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::mock::MockOpenRouter;
use tower_openrouter::stack::OpenRouterLayer;
use tower_openrouter::ErrorKind;
use tower_openrouter::JsonBody;

const MSG: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

async fn rejected(body: String) -> (ErrorKind, String, u64) {
    let mock = MockOpenRouter::new();
    let svc = ServiceBuilder::new()
        .layer(
            OpenRouterLayer::builder()
                .chain(["a/b", "c/d"])
                .deadline(Duration::from_secs(180))
                .build()
                .unwrap(),
        )
        .service(mock.clone());
    let req = http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let e = svc.oneshot(req).await.unwrap_err();
    (
        e.kind(),
        e.detail().unwrap_or_default().to_owned(),
        mock.total_calls(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_is_not_a_boolean_is_invalid_with_no_upstream_call() {
    for (value, kind) in [
        ("\"yes\"", "a string"),
        ("1", "a number"),
        ("null", "null"),
        ("{}", "an object"),
    ] {
        let body = format!(r#"{{"model":"a/b",{MSG},"stream":{value}}}"#);
        let (got, detail, calls) = rejected(body).await;
        assert_eq!(got, ErrorKind::InvalidBody, "{value}");
        assert_eq!(
            detail,
            format!("the request body's \"stream\" is not a boolean (it is {kind})")
        );
        assert_eq!(calls, 0);
    }
    // A second "stream" key that is not a boolean is caught too.
    let body = format!(r#"{{"model":"a/b",{MSG},"stream":true,"stream":"no"}}"#);
    assert_eq!(rejected(body).await.0, ErrorKind::InvalidBody);
}

#[tokio::test(start_paused = true)]
async fn a_duplicated_model_key_is_invalid_with_no_upstream_call() {
    for body in [
        format!(r#"{{"model":"a/b",{MSG},"model":"c/d"}}"#),
        // Keys compare after unescaping: "mod\u0065l" is "model".
        format!(r#"{{"mod\u0065l":"a/b",{MSG},"model":"a/b"}}"#),
    ] {
        let (got, detail, calls) = rejected(body).await;
        assert_eq!(got, ErrorKind::InvalidBody);
        assert_eq!(
            detail,
            "the request body has more than one top-level \"model\" key"
        );
        assert_eq!(calls, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_model_with_a_lone_surrogate_is_invalid_with_no_upstream_call() {
    for model in [r#""\udc00""#, r#""a/\ud800b""#] {
        let body = format!(r#"{{"model":{model},{MSG}}}"#);
        let (got, detail, calls) = rejected(body).await;
        assert_eq!(got, ErrorKind::InvalidBody, "{model}");
        assert!(detail.contains("not a valid Unicode string"), "{detail}");
        assert_eq!(calls, 0);
    }
}

#[test]
fn parse_with_model_accepts_what_it_can_read_one_way() {
    for body in [
        format!(r#"{{"model":"a/b",{MSG},"stream":true}}"#),
        format!(r#"{{"model":"a/b",{MSG},"stream":false}}"#),
        format!(r#"{{"model":"\u0061/b",{MSG}}}"#),
        // A pair of surrogates is one character; nested "model" keys are not top-level.
        format!(r#"{{"model":"a/\ud83d\ude00",{MSG},"tools":[{{"model":"x"}}]}}"#),
    ] {
        let json = JsonBody::parse_with_model(body.clone().into()).unwrap();
        assert!(json.model().is_some(), "{body}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_forwarded_authorization_header_is_marked_sensitive() {
    let mock = MockOpenRouter::new();
    let svc = ServiceBuilder::new()
        .layer(OpenRouterLayer::builder().chain(["a/b"]).build().unwrap())
        .service(mock.clone());
    let key = "Bearer sk-or-v1-0123456789abcdef";
    let req = http::Request::post("http://localhost/api/v1/chat/completions")
        .header("authorization", key)
        .header("x-api-key", "mykey123")
        .body(format!(r#"{{"model":"a/b",{MSG}}}"#))
        .unwrap();
    svc.oneshot(req).await.unwrap();
    let seen = &mock.requests()[0];
    let auth = seen.headers().get("authorization").unwrap();
    assert_eq!(auth, key);
    assert!(auth.is_sensitive());
    // The key header of Anthropic-style clients too.
    let api_key = seen.headers().get("x-api-key").unwrap();
    assert_eq!(api_key, "mykey123");
    assert!(api_key.is_sensitive());
    let shown = format!("{:?}", seen.headers());
    assert!(
        !shown.contains("sk-or-") && !shown.contains("mykey123"),
        "{shown}"
    );
}
