//! The stand-in's canned answers, through `ClassifyLayer`: every reply other tests script
//! is classified the way the OpenRouter table says, so the mock is a faithful oracle.
#![cfg(feature = "mock")]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_openrouter::classify::ClassifyLayer;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::{Action, Attempt, Error, ErrorKind, UpstreamInfo};

fn request(path: &str, model: &str) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::post(path)
        .body(Full::new(Bytes::from(format!(r#"{{"model":"{model}"}}"#))))
        .unwrap();
    req.extensions_mut().insert(Attempt::new(model));
    req
}

async fn classify(reply: Reply, path: &str) -> Result<UpstreamInfo, Error> {
    let mock = MockOpenRouter::new();
    mock.model("a/b").respond(reply);
    let resp = ClassifyLayer::new()
        .layer(mock)
        .oneshot(request(path, "a/b"))
        .await?;
    Ok(resp
        .extensions()
        .get::<UpstreamInfo>()
        .cloned()
        .unwrap_or_default())
}

/// A reply and what the classifier must say: kind, action, retry_after, health counting.
type Case = (
    &'static str,
    Reply,
    ErrorKind,
    Action,
    Option<Duration>,
    bool,
);

const CHAT: &str = "/api/v1/chat/completions";
const MESSAGES: &str = "/api/v1/messages";

#[tokio::test]
async fn canned_failures_classify_as_the_table_says() {
    let secs = Duration::from_secs;
    let cases: Vec<Case> = vec![
        (
            "429 + Retry-After",
            Reply::status(429).retry_after(2),
            ErrorKind::RateLimited,
            Action::Fallback,
            Some(secs(2)),
            true,
        ),
        (
            "402",
            Reply::status(402),
            ErrorKind::InsufficientCredits,
            Action::Fatal,
            None,
            false,
        ),
        (
            "401",
            Reply::status(401),
            ErrorKind::Unauthorized,
            Action::Fatal,
            None,
            false,
        ),
        (
            "403 moderation",
            Reply::moderation(),
            ErrorKind::ContentModerated,
            Action::Fallback,
            None,
            false,
        ),
        (
            "400 context length",
            Reply::context_length(),
            ErrorKind::ContextLengthExceeded,
            Action::Fallback,
            None,
            false,
        ),
        (
            "400",
            Reply::status(400),
            ErrorKind::InvalidRequest,
            Action::Fatal,
            None,
            false,
        ),
        (
            "404",
            Reply::status(404),
            ErrorKind::ModelNotFound,
            Action::Fallback,
            None,
            true,
        ),
        (
            "503 + availability",
            Reply::unavailable(3),
            ErrorKind::ProviderOverloaded,
            Action::Fallback,
            Some(secs(3)),
            true,
        ),
        (
            "200 with error 429",
            Reply::ok_with_error(429),
            ErrorKind::RateLimited,
            Action::Fallback,
            None,
            true,
        ),
    ];
    for (name, reply, kind, action, retry_after, health) in cases {
        let err = classify(reply, CHAT).await.expect_err(name);
        assert_eq!(err.kind(), kind, "{name}: {err}");
        assert_eq!(err.action(), action, "{name}");
        assert_eq!(err.retry_after(), retry_after, "{name}");
        assert_eq!(err.counts_for_health(), health, "{name}");
        assert_eq!(err.model(), Some("a/b"), "{name}");
    }
}

#[tokio::test]
async fn two_hundred_with_a_failed_choice_is_an_error() {
    let err = classify(Reply::finish_reason_error(), CHAT)
        .await
        .expect_err("finish_reason error");
    assert!(err.counts_for_health(), "{err}");
    assert_ne!(err.action(), Action::Fatal, "{err}");
}

#[tokio::test]
async fn messages_envelope_is_understood() {
    let err = classify(Reply::status(529), MESSAGES)
        .await
        .expect_err("529");
    assert_eq!(err.kind(), ErrorKind::ProviderOverloaded, "{err}");
    assert_eq!(err.action(), Action::Fallback);
    let err = classify(Reply::status(429), MESSAGES)
        .await
        .expect_err("429");
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
}

#[tokio::test]
async fn successes_report_who_answered() {
    let info = classify(Reply::ok().served_by("x/y").provider("OpenAI"), CHAT)
        .await
        .unwrap();
    assert_eq!(info.model.as_deref(), Some("x/y"));
    assert_eq!(info.provider.as_deref(), Some("OpenAI"));
    let info = classify(Reply::ok(), MESSAGES).await.unwrap();
    assert_eq!(info.model.as_deref(), Some("a/b"));
    assert_eq!(info.provider.as_deref(), Some("Mock"));
}

#[tokio::test]
async fn a_dropped_connection_is_a_transport_error() {
    let err = classify(Reply::disconnect(), CHAT).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.counts_for_health());
}
