//! Retry works for streams exactly as for plain calls: a stream that fails before its
//! first content is retried, and the caller receives one clean stream.

mod chunks;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chunks::Chunks;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_openrouter::classify::ClassifyLayer;
use tower_openrouter::retry::{RetryLayer, RetryPolicy};
use tower_openrouter::Attempt;

const PREAMBLE: &[u8] = b": OPENROUTER PROCESSING\n\n";
const ROLE: &[u8] = b"data: {\"model\":\"a/b\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
const CONTENT: &[u8] =
    b"data: {\"model\":\"a/b\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
const STOP: &[u8] =
    b"data: {\"model\":\"a/b\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";
const ERROR_500: &[u8] = b"data: {\"error\":{\"code\":500,\"message\":\"Internal\"}}\n\n";

/// Answers call `n` with the stream `scripts[n]`.
async fn call_with(scripts: Vec<Vec<&'static [u8]>>) -> (Vec<u8>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let upstream = service_fn(move |_req: Request<Full<Bytes>>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let chunks = Chunks::new(&scripts[n]);
        async move {
            Ok::<_, std::io::Error>(
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(chunks)
                    .unwrap(),
            )
        }
    });
    let policy = RetryPolicy::new()
        .max_retries(2)
        .backoff_base(Duration::from_millis(100));
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy).unwrap())
        .layer(ClassifyLayer::new())
        .service(upstream);
    let mut req = Request::post("http://127.0.0.1/api/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            b"{\"model\":\"a/b\",\"stream\":true}",
        )))
        .unwrap();
    req.extensions_mut().insert(Attempt::new("a/b"));
    let resp = svc.oneshot(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (body.to_vec(), calls.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn a_stream_ending_before_content_is_retried_and_the_caller_gets_one_clean_stream() {
    let good = vec![PREAMBLE, ROLE, CONTENT, STOP, DONE];
    let (bytes, calls) = call_with(vec![vec![PREAMBLE, ROLE], good.clone()]).await;
    assert_eq!(calls, 2);
    assert_eq!(bytes, good.concat());
}

#[tokio::test(start_paused = true)]
async fn a_first_event_500_is_retried() {
    let good = vec![PREAMBLE, ROLE, CONTENT, STOP, DONE];
    let (bytes, calls) = call_with(vec![
        vec![PREAMBLE, ERROR_500],
        vec![PREAMBLE, PREAMBLE, ERROR_500],
        good.clone(),
    ])
    .await;
    assert_eq!(calls, 3);
    assert_eq!(bytes, good.concat());
    // Exactly one preamble and one [DONE]: nothing of the failed attempts leaked.
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(text.matches("OPENROUTER PROCESSING").count(), 1);
    assert_eq!(text.matches("[DONE]").count(), 1);
}
