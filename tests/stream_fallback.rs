//! Fallback works for streams: when the first model's stream fails before its first
//! content, the next model serves, and the caller receives exactly one complete stream.

mod chunks;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chunks::Chunks;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_openrouter::classify::ClassifyLayer;
use tower_openrouter::fallback::{FallbackLayer, ServedBy};
use tower_openrouter::{Attempt, ErrorKind};

const PREAMBLE: &[u8] = b": OPENROUTER PROCESSING\n\n";
const ERROR_429: &[u8] = b"data: {\"error\":{\"code\":429,\"message\":\"Rate limit exceeded\",\"metadata\":{\"provider_name\":\"BaseTen\"}}}\n\n";
const ROLE: &[u8] = b"data: {\"id\":\"gen-2\",\"model\":\"openai/gpt-4o\",\"provider\":\"OpenAI\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
const CONTENT: &[u8] = b"data: {\"id\":\"gen-2\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
const STOP: &[u8] = b"data: {\"id\":\"gen-2\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

#[tokio::test(start_paused = true)]
async fn first_event_error_falls_back_and_the_caller_gets_one_clean_stream() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let upstream = service_fn(move |req: Request<Full<Bytes>>| {
        let model = req.extensions().get::<Attempt>().unwrap().model.clone();
        log.lock().unwrap().push(model.to_string());
        let chunks: Vec<&'static [u8]> = if &*model == "anthropic/claude-sonnet-4.5" {
            vec![PREAMBLE, ERROR_429]
        } else {
            vec![PREAMBLE, ROLE, CONTENT, STOP, DONE]
        };
        async move {
            Ok::<_, std::io::Error>(
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Chunks::new(&chunks))
                    .unwrap(),
            )
        }
    });
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new([
            "anthropic/claude-sonnet-4.5",
            "openai/gpt-4o",
        ]))
        .layer(ClassifyLayer::new())
        .service(upstream);
    let req = Request::post("http://127.0.0.1/api/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"anthropic/claude-sonnet-4.5","stream":true,"messages":[]}"#,
        )))
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    let served = resp.extensions().get::<ServedBy>().unwrap().clone();
    assert_eq!(&*served.model, "openai/gpt-4o");
    assert!(served.fell_back);
    assert_eq!(served.attempts.len(), 1);
    assert_eq!(served.attempts[0].kind(), ErrorKind::RateLimited);
    assert_eq!(
        *asked.lock().unwrap(),
        ["anthropic/claude-sonnet-4.5", "openai/gpt-4o"]
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, [PREAMBLE, ROLE, CONTENT, STOP, DONE].concat());
    let text = std::str::from_utf8(&bytes).unwrap();
    assert_eq!(text.matches("OPENROUTER PROCESSING").count(), 1);
    assert_eq!(text.matches("[DONE]").count(), 1);
}
