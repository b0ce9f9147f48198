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

// ---------------------------------------------------------------- streams

mod streams {
    use super::*;
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;
    use tokio::time::Instant;
    use tower_openrouter::{StreamErrorHook, StreamLimits};

    type Kinds = Arc<Mutex<Vec<ErrorKind>>>;

    fn stream_request(path: &str, limits: StreamLimits) -> (http::Request<Full<Bytes>>, Kinds) {
        let mut req = http::Request::post(path)
            .body(Full::new(Bytes::from_static(
                br#"{"model":"a/b","stream":true}"#,
            )))
            .unwrap();
        let kinds = Kinds::default();
        let seen = kinds.clone();
        req.extensions_mut().insert(Attempt::new("a/b"));
        req.extensions_mut().insert(limits);
        req.extensions_mut()
            .insert(StreamErrorHook::new(move |e: &Error| {
                seen.lock().unwrap().push(e.kind())
            }));
        (req, kinds)
    }

    /// The stream through `ClassifyLayer`: the bytes delivered, the error frame that
    /// ended it (if any), and what the stream-error hook saw.
    async fn through_classify(
        reply: Reply,
        path: &str,
        limits: StreamLimits,
    ) -> Result<(Vec<u8>, Option<Error>, Vec<ErrorKind>), Error> {
        let mock = MockOpenRouter::new();
        mock.model("a/b").respond(reply);
        let (req, kinds) = stream_request(path, limits);
        let resp = ClassifyLayer::new().layer(mock).oneshot(req).await?;
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        let mut error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => bytes.extend_from_slice(&f.into_data().unwrap()),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let kinds = kinds.lock().unwrap().clone();
        Ok((bytes, error, kinds))
    }

    /// The mock's own bytes for the reply (first call, so the same ids).
    async fn raw(reply: Reply, path: &str) -> Vec<u8> {
        let mock = MockOpenRouter::new();
        mock.model("a/b").respond(reply);
        let (req, _) = stream_request(path, StreamLimits::default());
        let resp = mock.oneshot(req).await.unwrap();
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_stream_passes_byte_for_byte() {
        for path in [CHAT, MESSAGES] {
            let reply = || Reply::stream(["Hel", "lo"]).keep_alives(2);
            let (bytes, error, kinds) = through_classify(reply(), path, StreamLimits::default())
                .await
                .unwrap();
            assert!(error.is_none(), "{path}: {error:?}");
            assert!(kinds.is_empty());
            assert_eq!(bytes, raw(reply(), path).await, "{path}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_chunk_after_content_is_a_typed_error_frame() {
        for path in [CHAT, MESSAGES] {
            let (bytes, error, kinds) = through_classify(
                Reply::stream(["Hel", "lo"]).error_after(1),
                path,
                StreamLimits::default(),
            )
            .await
            .unwrap();
            let error = error.expect("an error frame");
            assert_eq!(
                error.kind(),
                ErrorKind::StreamInterrupted,
                "{path}: {error}"
            );
            assert_eq!(kinds, [ErrorKind::StreamInterrupted], "{path}");
            let text = String::from_utf8(bytes).unwrap();
            assert!(
                text.contains("Hel") && !text.contains("lo\""),
                "{path}: {text}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_before_content_is_an_ordinary_retryable_error() {
        let err = through_classify(
            Reply::finish_reason_error().keep_alives(3),
            CHAT,
            StreamLimits::default(),
        )
        .await
        .expect_err("classified before the response is returned");
        assert_ne!(err.action(), Action::Fatal, "{err}");
        assert!(err.counts_for_health(), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_without_done_is_whole_after_a_finish_reason_and_truncated_without_one() {
        // The final chunk (finish_reason / stop_reason) came, then the end: the whole text.
        for path in [CHAT, MESSAGES] {
            let reply = || Reply::stream(["x"]).without_done();
            let (bytes, error, kinds) = through_classify(reply(), path, StreamLimits::default())
                .await
                .unwrap();
            assert!(error.is_none(), "{path}: {error:?}");
            assert!(kinds.is_empty(), "{path}");
            assert_eq!(bytes, raw(reply(), path).await, "{path}");
        }
        // Content, then the end: cut short.
        let (_, error, kinds) = through_classify(
            Reply::sse([r#"data: {"choices":[{"delta":{"content":"x"},"finish_reason":null}]}"#]),
            CHAT,
            StreamLimits::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            error.expect("error frame").kind(),
            ErrorKind::StreamTruncated
        );
        assert_eq!(kinds, [ErrorKind::StreamTruncated]);
    }

    #[tokio::test(start_paused = true)]
    async fn stalls_hit_the_first_token_and_idle_limits_exactly() {
        let limits = StreamLimits {
            first_token: Some(Duration::from_secs(5)),
            idle: Some(Duration::from_secs(2)),
        };
        let start = Instant::now();
        let err = through_classify(
            Reply::stream(["x"]).keep_alives(1).stall_after(0),
            CHAT,
            limits,
        )
        .await
        .expect_err("no first token");
        assert_eq!(err.kind(), ErrorKind::StreamTimeout, "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        let start = Instant::now();
        let (_, error, kinds) = through_classify(
            Reply::stream(["x", "y"])
                .chunk_delay(Duration::from_secs(1))
                .stall_after(1),
            CHAT,
            limits,
        )
        .await
        .unwrap();
        assert_eq!(error.expect("error frame").kind(), ErrorKind::StreamTimeout);
        assert_eq!(kinds, [ErrorKind::StreamTimeout]);
        // First chunk at 1 s, then 2 s of silence.
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_but_steady_streams_are_not_cut() {
        let limits = StreamLimits {
            first_token: Some(Duration::from_secs(5)),
            idle: Some(Duration::from_secs(2)),
        };
        let start = Instant::now();
        let (_, error, _) = through_classify(
            Reply::stream(["a", "b", "c", "d"])
                .keep_alives(1)
                .chunk_delay(Duration::from_millis(1900)),
            CHAT,
            limits,
        )
        .await
        .unwrap();
        assert!(error.is_none(), "{error:?}");
        // A keep-alive, 4 chunks, the final chunk and [DONE], 1.9 s apart: 13.3 s in all,
        // the first token at 3.8 s (keep-alives do not count as tokens).
        assert_eq!(start.elapsed(), Duration::from_millis(7 * 1900));

        // Keep-alives alone never satisfy the first-token limit.
        let start = Instant::now();
        let err = through_classify(
            Reply::stream(["a"])
                .keep_alives(3)
                .chunk_delay(Duration::from_millis(1900)),
            CHAT,
            limits,
        )
        .await
        .expect_err("first token at 7.6 s");
        assert_eq!(err.kind(), ErrorKind::StreamTimeout, "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_aborted_stream_fails_the_body() {
        let (_, error, _) = through_classify(
            Reply::stream(["x", "y"]).abort_after(1),
            CHAT,
            StreamLimits::default(),
        )
        .await
        .unwrap();
        assert!(error.is_some(), "the body fails instead of ending cleanly");
    }
}
