//! A stream that dies after its first token counts against the model's health: the
//! classify layer's body calls the health layer's `StreamErrorHook`.

mod chunks;

use bytes::Bytes;
use chunks::Chunks;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_openrouter::classify::ClassifyLayer;
use tower_openrouter::health::{HealthConfig, HealthLayer, HealthTracker};
use tower_openrouter::{Attempt, ErrorKind};

const CONTENT: &[u8] =
    b"data: {\"model\":\"a/b\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
const ERROR: &[u8] = b"data: {\"model\":\"a/b\",\"error\":{\"code\":502,\"message\":\"x\"},\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n";

fn request() -> Request<Full<Bytes>> {
    let mut req = Request::post("http://127.0.0.1/api/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            b"{\"model\":\"a/b\",\"stream\":true}",
        )))
        .unwrap();
    req.extensions_mut().insert(Attempt::new("a/b"));
    req
}

#[tokio::test(start_paused = true)]
async fn mid_stream_failures_trip_the_breaker() {
    let tracker = HealthTracker::new(HealthConfig::default().consecutive_failures(2));
    let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, std::io::Error>(
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Chunks::new(&[CONTENT, CONTENT, ERROR]))
                .unwrap(),
        )
    });
    let svc = ServiceBuilder::new()
        .layer(HealthLayer::new(tracker.clone()))
        .layer(ClassifyLayer::new())
        .service(upstream);
    for _ in 0..2 {
        // The response itself is a success (the first token came) ...
        let resp = svc.clone().oneshot(request()).await.unwrap();
        // ... and its body ends with the typed error.
        let err = resp.into_body().collect().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StreamInterrupted);
    }
    assert!(!tracker.is_available("a/b"));
    let err = svc.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelCoolingDown);
}
