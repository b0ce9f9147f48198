//! Streaming (`"stream": true`): the SSE parser ([`SseParser`]), and how the classify layer
//! treats a streamed response (the watch itself lives with classification, which it
//! calls for every event).
//!
//! [`ClassifyLayer`](crate::classify::ClassifyLayer) treats a 2xx `text/event-stream`
//! response in two phases:
//!
//! 1. **Before the first content event** the response is held: keep-alive comments
//!    (`: OPENROUTER PROCESSING`), the role-only first chunk and `/messages`
//!    `message_start`/`ping` events are read and kept. An error event there, a stream
//!    that ends, or no content within [`StreamLimits::first_token`] is an ordinary
//!    classified error, so retry and fallback work for streams as for plain calls. When
//!    content arrives, the response is returned and the held bytes are replayed as the
//!    body's prefix, then the rest: the caller receives one clean stream.
//! 2. **After content** the body passes through untouched but watched: an error chunk
//!    (`error` field, `finish_reason: "error"`, a `/messages` `event: error`, a Responses
//!    `response.failed`), a truncated end (below), a read error, or a gap between chunks
//!    longer than [`StreamLimits::idle`] becomes one typed error frame
//!    (`StreamInterrupted`, `StreamTruncated`, `StreamTimeout`; action `Fatal`) where it
//!    happened: the bytes before it are delivered first, the failing event is not. The
//!    request's [`StreamErrorHook`] is called once with that error, so health counts it.
//!
//! **How a stream must end.** Each API has an end marker: `data: [DONE]` (chat
//! completions), `message_stop` (`/messages`), `response.completed` or
//! `response.incomplete` (`/responses`). An end after the marker is a clean end. An end
//! without it but after the answer's finish reason (a chat choice's `finish_reason`, a
//! `/messages` `message_delta` `stop_reason`; not `null`, not `"error"`) has delivered the
//! whole text: it is not an error for the caller and counts as a success for health (a
//! debug log line says so). An end with neither is `StreamTruncated`.
//!
//! Both limits come from the request's [`StreamLimits`] and are clamped to its
//! [`Deadline`]. The attempt timeout wraps only the first phase: a long, healthy stream
//! is never cut by it. [`OpenRouterLayer`](crate::OpenRouterLayer) sets an idle limit of
//! 30 s by default ([`DEFAULT_IDLE_TIMEOUT`](crate::timeout::DEFAULT_IDLE_TIMEOUT)); every
//! chunk resets it, keep-alive comments included, so only a stream that went silent ends.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_openrouter::classify::ClassifyLayer;
//! use tower_openrouter::ErrorKind;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! const SSE: &str = ": OPENROUTER PROCESSING\n\n\
//!     data: {\"model\":\"a/b\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
//!     data: {\"model\":\"a/b\",\"error\":{\"code\":502,\"message\":\"died\"},\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n";
//! let upstream = service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Ok::<_, std::io::Error>(http::Response::builder()
//!         .header("content-type", "text/event-stream")
//!         .body(Full::new(Bytes::from_static(SSE.as_bytes())))
//!         .unwrap())
//! });
//! let resp = ClassifyLayer::new().layer(upstream).oneshot(http::Request::new(Full::default())).await.unwrap();
//! let mut body = resp.into_body();
//! let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
//! assert!(first.ends_with(b"\"Hi\"}}]}\n\n")); // everything before the error event
//! let err = body.frame().await.unwrap().unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::StreamInterrupted);
//! assert!(body.frame().await.is_none());
//! # }
//! ```
//!
//! [`StreamLimits`]: crate::StreamLimits
//! [`StreamLimits::first_token`]: crate::StreamLimits::first_token
//! [`StreamLimits::idle`]: crate::StreamLimits::idle
//! [`StreamErrorHook`]: crate::StreamErrorHook
//! [`Deadline`]: crate::Deadline

mod sse;

pub use sse::{Event, SseParser};
