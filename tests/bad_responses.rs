//! Bad 200s and big responses through the whole stack over the stand-in: a 200 that is no
//! answer (an HTML page, not JSON, no event stream for a stream request) falls back and
//! counts against the model; JSON cut short is `ResponseTruncated`, fatal unless set
//! otherwise; a body over the response limit is `ResponseTooLarge`, read no further.
#![cfg(feature = "mock")]

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_openrouter::fallback::ServedBy;
use tower_openrouter::health::{HealthConfig, HealthTracker};
use tower_openrouter::mock::{MockBody, MockOpenRouter, Reply};
use tower_openrouter::stack::{OpenRouterLayer, OpenRouterLayerBuilder};
use tower_openrouter::{Action, Error, ErrorKind};

const A: &str = "anthropic/claude-sonnet-4.5";
const B: &str = "openai/gpt-4o";

fn builder() -> OpenRouterLayerBuilder {
    OpenRouterLayer::builder()
        .chain([A, B])
        .deadline(Duration::from_secs(180))
        .health_config(HealthConfig::default().jitter(0.0))
}

fn request(stream: bool) -> http::Request<String> {
    http::Request::post("http://localhost/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"{A}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
        .unwrap()
}

/// One call through `layer` over `mock`: the response's body and `ServedBy`, or the error.
async fn call(
    layer: OpenRouterLayer,
    mock: &MockOpenRouter,
    stream: bool,
) -> Result<(Bytes, ServedBy), Error> {
    let svc = ServiceBuilder::new().layer(layer).service(mock.clone());
    let resp = svc.oneshot(request(stream)).await?;
    let served = resp.extensions().get::<ServedBy>().cloned().unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((body, served))
}

/// The models tried before the one that served, and how each failed.
fn tried(served: &ServedBy) -> Vec<(&str, ErrorKind)> {
    let attempts = served.attempts.iter();
    attempts.map(|a| (&*a.model, a.kind())).collect()
}

/// The failures the tracker recorded for `model`.
fn failures(health: &HealthTracker, model: &str) -> (u64, u64) {
    let h = health.snapshot();
    let m = h.iter().find(|m| &*m.model == model);
    m.map_or((0, 0), |m| (m.calls, m.failures))
}

/// The primary's reply was no answer: B served, one call each, the primary's failure
/// counted.
async fn falls_back(reply: Reply, stream: bool, what: &str) {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(reply);
    let layer = builder().build().unwrap();
    let health = layer.health().clone();
    let (body, served) = call(layer, &mock, stream).await.expect(what);
    assert_eq!(&*served.model, B, "{what}");
    assert_eq!(tried(&served), [(A, ErrorKind::InvalidResponse)], "{what}");
    assert_eq!(
        served.attempts[0].error.action(),
        Action::Fallback,
        "{what}"
    );
    assert_eq!((mock.calls(A), mock.calls(B)), (1, 1), "{what}");
    assert_eq!(
        failures(&health, A),
        (1, 1),
        "{what}: the primary's failure counts"
    );
    assert_eq!(failures(&health, B), (1, 0), "{what}");
    if stream {
        assert!(body.ends_with(b"data: [DONE]\n\n"), "{what}");
    } else {
        assert!(body.starts_with(br#"{"id":"gen-mock-2""#), "{what}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_200_that_is_not_json_falls_back_and_counts() {
    let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    falls_back(Reply::raw(200, "text/html", [page]), false, "an HTML 200").await;
    falls_back(
        Reply::raw(200, "application/json", [page]),
        false,
        "HTML under a JSON content type",
    )
    .await;
    falls_back(Reply::raw(200, "", [""]), false, "an empty 200").await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_answered_without_an_event_stream_falls_back_and_counts() {
    let completion = r#"{"id":"gen-x","object":"chat.completion","model":"anthropic/claude-sonnet-4.5","provider":"P","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}]}"#;
    falls_back(
        Reply::raw(200, "application/json", [completion]),
        true,
        "a whole completion for a stream request",
    )
    .await;
    falls_back(
        Reply::raw(200, "text/html", ["<html>captive portal</html>"]),
        true,
        "an HTML page for a stream request",
    )
    .await;
    // A JSON error with 200 for a stream request is the error it carries.
    let mock = MockOpenRouter::new();
    mock.model(A).respond(Reply::ok_with_error(503));
    let (_, served) = call(builder().build().unwrap(), &mock, true).await.unwrap();
    assert_eq!(&*served.model, B);
    assert_eq!(served.attempts[0].kind(), ErrorKind::ModelUnavailable);
}

const CUT: &str = r#"{"id":"gen-x","object":"chat.completion","model":"anthropic/claude-sonnet-4.5","provider":"P","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, wor"#;

#[tokio::test(start_paused = true)]
async fn json_cut_short_is_truncated_and_fatal_by_default() {
    let cut_after_a_close = &CUT[..CUT.find(r#","choices"#).unwrap()];
    let replies = [
        ("EOF mid-JSON", Reply::raw(200, "application/json", [CUT])),
        (
            "EOF after a nested close",
            Reply::raw(
                200,
                "application/json",
                [format!("{cut_after_a_close},\"usage\":{{\"cost\":1}}")],
            ),
        ),
        (
            "a read error after part of it",
            Reply::raw(200, "application/json", [&CUT[..40], &CUT[40..]]).abort_after(1),
        ),
    ];
    for (what, reply) in replies {
        let mock = MockOpenRouter::new();
        mock.model(A).respond(reply);
        let layer = builder().build().unwrap();
        let health = layer.health().clone();
        let err = call(layer, &mock, false).await.expect_err(what);
        assert_eq!(
            (err.kind(), err.action(), err.model()),
            (ErrorKind::ResponseTruncated, Action::Fatal, Some(A)),
            "{what}: {err}"
        );
        assert_eq!(
            (mock.calls(A), mock.calls(B)),
            (1, 0),
            "{what}: no other call"
        );
        assert_eq!(failures(&health, A), (1, 1), "{what}");
        assert!(
            err.to_string().contains("tokens may have been billed"),
            "{err}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_truncation_action_is_a_setting() {
    let from_json = OpenRouterLayer::from_json(&format!(
        r#"{{"default_chain": ["{A}", "{B}"], "settings": {{"truncated_response_action": "fallback"}}}}"#
    ))
    .unwrap();
    let layers = [
        builder()
            .truncated_response_action(Action::Fallback)
            .build()
            .unwrap(),
        from_json,
    ];
    for layer in layers {
        let mock = MockOpenRouter::new();
        mock.model(A)
            .respond(Reply::raw(200, "application/json", [CUT]).abort_after(1));
        let (_, served) = call(layer, &mock, false).await.unwrap();
        assert_eq!(&*served.model, B);
        assert_eq!(tried(&served), [(A, ErrorKind::ResponseTruncated)]);
        assert_eq!((mock.calls(A), mock.calls(B)), (1, 1));
    }
    let err = OpenRouterLayer::from_json(&format!(
        r#"{{"default_chain": ["{A}"], "settings": {{"truncated_response_action": "later"}}}}"#
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("truncated_response_action"),
        "{err}"
    );
}

/// How many frames and bytes were pulled from the stand-in's bodies.
#[derive(Clone, Default)]
struct Pulled {
    frames: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Pulled {
    fn get(&self) -> (usize, usize) {
        (
            self.frames.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        )
    }
}

/// A response body that counts what is pulled from it.
struct Counted {
    inner: MockBody,
    pulled: Pulled,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.pulled.frames.fetch_add(1, Ordering::SeqCst);
                self.pulled.bytes.fetch_add(data.len(), Ordering::SeqCst);
            }
        }
        polled
    }
}

/// The stand-in, its bodies counted.
fn counted(
    mock: &MockOpenRouter,
    pulled: &Pulled,
) -> impl Service<
    http::Request<http_body_util::Full<Bytes>>,
    Response = http::Response<Counted>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send {
    let pulled = pulled.clone();
    ServiceBuilder::new()
        .map_response(move |resp: http::Response<MockBody>| {
            resp.map(|inner| Counted {
                inner,
                pulled: pulled.clone(),
            })
        })
        .service(mock.clone())
}

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

#[tokio::test(start_paused = true)]
async fn a_32_mib_body_is_too_large_and_read_only_to_the_limit_plus_one_chunk() {
    // 32 MiB of a JSON answer, in 64 KiB chunks.
    let mut text = format!(
        r#"{{"id":"gen-x","model":"{A}","provider":"P","choices":[{{"message":{{"content":""#
    )
    .into_bytes();
    text.resize(32 * MIB - 5, b'a');
    text.extend_from_slice(br#""}}]}"#);
    let text = Bytes::from(text);
    let chunks: Vec<Bytes> = (0..text.len())
        .step_by(CHUNK)
        .map(|at| text.slice(at..(at + CHUNK).min(text.len())))
        .collect();
    assert_eq!(chunks.len(), 512);
    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(Reply::raw(200, "application/json", chunks));
    let layer = builder().build().unwrap();
    let health = layer.health().clone();
    let pulled = Pulled::default();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(counted(&mock, &pulled));
    let err = svc.oneshot(request(false)).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.action(), err.counts_for_health()),
        (ErrorKind::ResponseTooLarge, Action::Fatal, false),
        "{err}"
    );
    assert_eq!(
        err.detail(),
        Some("the body passed the response body limit of 16777216 bytes")
    );
    // The default limit, 16 MiB = 256 chunks, is reached, not passed: one chunk more.
    assert_eq!(pulled.get(), (257, 16 * MIB + CHUNK));
    assert_eq!((mock.calls(A), mock.calls(B)), (1, 0));
    // Our limit is no failure of the model: nothing is recorded against it.
    assert_eq!(failures(&health, A), (0, 0));
    assert!(health.is_available(A));
}

#[tokio::test(start_paused = true)]
async fn a_body_at_the_limit_is_served_and_one_byte_more_is_not() {
    let limit = MIB;
    let mut text = format!(
        r#"{{"id":"gen-x","model":"{A}","provider":"P","choices":[{{"message":{{"content":""#
    )
    .into_bytes();
    text.resize(limit - 5, b'b');
    text.extend_from_slice(br#""}}]}"#);
    let text = Bytes::from(text);
    assert_eq!(text.len(), limit);
    let chunks = |t: &Bytes| -> Vec<Bytes> {
        (0..t.len())
            .step_by(CHUNK)
            .map(|at| t.slice(at..(at + CHUNK).min(t.len())))
            .collect()
    };
    for (limit, served) in [(limit, true), (limit + 1, true), (limit - 1, false)] {
        let mock = MockOpenRouter::new();
        mock.model(A)
            .respond(Reply::raw(200, "application/json", chunks(&text)));
        let layer = builder().max_response_body_bytes(limit).build().unwrap();
        match call(layer, &mock, false).await {
            Ok((body, by)) => {
                assert!(served, "limit {limit}");
                assert_eq!(body, text, "byte for byte");
                assert_eq!(&*by.model, A);
            }
            Err(e) => {
                assert!(!served, "limit {limit}: {e}");
                assert_eq!(e.kind(), ErrorKind::ResponseTooLarge);
            }
        }
    }
    // From a settings file; zero is refused, naming the key.
    let layer = OpenRouterLayer::from_json(&format!(
        r#"{{"default_chain": ["{A}", "{B}"], "settings": {{"max_response_body_bytes": {}}}}}"#,
        limit - 1
    ))
    .unwrap();
    let mock = MockOpenRouter::new();
    mock.model(A)
        .respond(Reply::raw(200, "application/json", chunks(&text)));
    let err = call(layer, &mock, false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResponseTooLarge);
    let err = OpenRouterLayer::from_json(&format!(
        r#"{{"default_chain": ["{A}"], "settings": {{"max_response_body_bytes": 0}}}}"#
    ))
    .unwrap_err();
    assert_eq!(err.field(), "settings.max_response_body_bytes");
}

#[tokio::test(start_paused = true)]
async fn a_content_length_over_the_limit_is_not_read_at_all() {
    let mock = MockOpenRouter::new();
    mock.model(A).respond(
        Reply::raw(
            200,
            "application/json",
            [r#"{"model":"a/b","provider":"P"}"#],
        )
        .header("content-length", "31"),
    );
    let pulled = Pulled::default();
    let layer = builder().max_response_body_bytes(30).build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(counted(&mock, &pulled));
    let err = svc.oneshot(request(false)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResponseTooLarge);
    assert_eq!(pulled.get(), (0, 0));
}
