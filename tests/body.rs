//! The request buffering layer: limits, validation, pass-through, no upstream call on
//! bad input.

mod counting_upstream;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use counting_upstream::Upstream;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_openrouter::body::{full_bytes, BufferRequestLayer, DEFAULT_BODY_LIMIT};
use tower_openrouter::JsonBody;
use tower_openrouter::{Error, ErrorKind};

const AUTH: &str = "Bearer sk-or-v1-SENTINEL-KEY-0123456789";
const SECRET: &str = "SENTINEL-BODY-CONTENT";

/// A body that yields the given chunks (or an error) and counts how often it was polled.
struct Chunks {
    chunks: VecDeque<Result<Bytes, std::io::Error>>,
    polled: Arc<AtomicUsize>,
}

impl Chunks {
    fn new(chunks: impl IntoIterator<Item = &'static [u8]>) -> (Self, Arc<AtomicUsize>) {
        let polled = Arc::new(AtomicUsize::new(0));
        let chunks = chunks
            .into_iter()
            .map(|c| Ok(Bytes::from_static(c)))
            .collect();
        (
            Chunks {
                chunks,
                polled: polled.clone(),
            },
            polled,
        )
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.polled.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(self.chunks.pop_front().map(|c| c.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn chat<B>(body: B) -> Request<B> {
    Request::post("http://127.0.0.1/api/v1/chat/completions")
        .header("authorization", AUTH)
        .body(body)
        .unwrap()
}

fn full(s: &str) -> Full<Bytes> {
    Full::new(Bytes::copy_from_slice(s.as_bytes()))
}

async fn call<B>(layer: BufferRequestLayer, up: &Upstream, req: Request<B>) -> Result<Bytes, Error>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    layer
        .layer(up.service())
        .oneshot(req)
        .await
        .map(Response::into_body)
}

/// Sends `req` (a valid body in one chunk) through a fresh upstream and asserts the
/// upstream got the same buffer (unchanged, uncopied), the caller's key, and the body's
/// index naming `model`. Returns what the upstream saw.
async fn assert_passes_uncopied(req: Request<Full<Bytes>>, model: &str) -> Request<Full<Bytes>> {
    let up = Upstream::default();
    let bytes = full_bytes(req.body());
    let out = call(BufferRequestLayer::new(), &up, req).await.unwrap();
    assert_eq!(out, bytes);
    assert_eq!(up.calls(), 1);
    let seen = up.seen();
    let got = full_bytes(seen.body());
    assert_eq!(got.as_ptr(), bytes.as_ptr(), "one chunk is not copied");
    assert_eq!(seen.headers()["authorization"], AUTH);
    let json = seen
        .extensions()
        .get::<JsonBody>()
        .expect("index for inner layers");
    assert!(json.is_for(&got));
    assert_eq!(json.model().as_deref(), Some(model));
    assert!(JsonBody::from_request(&seen).unwrap().is_for(&got));
    seen
}

#[tokio::test]
async fn a_valid_body_reaches_the_upstream_unchanged_and_uncopied() {
    let bytes = Bytes::from_static(
        b"{ \"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9\"}],\n \"model\" :\"a/b\" }",
    );
    assert_passes_uncopied(chat(Full::new(bytes)), "a/b").await;
}

#[tokio::test]
async fn chunks_are_concatenated() {
    let up = Upstream::default();
    let (body, polled) = Chunks::new([&b"{\"model\""[..], b"", b":\"a/b\",", b"\"n\":1}"]);
    let out = call(BufferRequestLayer::new(), &up, chat(body))
        .await
        .unwrap();
    assert_eq!(out, &b"{\"model\":\"a/b\",\"n\":1}"[..]);
    assert_eq!(polled.load(Ordering::SeqCst), 5);
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn over_the_limit_is_refused_without_an_upstream_call() {
    let up = Upstream::default();
    let layer = BufferRequestLayer::new().limit(10);
    assert_eq!(BufferRequestLayer::new().max_bytes(), DEFAULT_BODY_LIMIT);
    assert_eq!(DEFAULT_BODY_LIMIT, 16 * 1024 * 1024);

    // Known size (Full's exact size hint): refused before reading.
    let e = call(layer, &up, chat(full(r#"{"model":"a/bc"}"#)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BodyTooLarge);
    assert!(e.detail().unwrap().contains("10 bytes"));

    // Content-Length over the limit: the body is never polled.
    let (body, polled) = Chunks::new([&b"{}"[..]]);
    let mut req = chat(body);
    req.headers_mut().insert("content-length", 11.into());
    let e = call(layer, &up, req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BodyTooLarge);
    assert_eq!(polled.load(Ordering::SeqCst), 0);

    // Unknown size: reading stops at the chunk that passes the limit.
    let (body, polled) = Chunks::new([&b"{\"mod"[..], b"el\":\"", b"a/b\"}", b"never", b"read"]);
    let e = call(layer, &up, chat(body)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BodyTooLarge);
    assert_eq!(polled.load(Ordering::SeqCst), 3);

    // Non-chat requests are bounded too.
    let req = Request::get("http://127.0.0.1/api/v1/models")
        .body(full("01234567890"))
        .unwrap();
    let e = call(layer, &up, req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BodyTooLarge);

    assert_eq!(up.calls(), 0);

    // Exactly the limit is fine.
    let ok = call(
        BufferRequestLayer::new().limit(13),
        &up,
        chat(full(r#"{"model":"a"}"#)),
    )
    .await
    .unwrap();
    assert_eq!(ok.len(), 13);
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn bad_chat_bodies_are_typed_errors_without_an_upstream_call() {
    let up = Upstream::default();
    let cases = [
        (format!("{{\"model\":\"{SECRET}\""), "not valid JSON"),
        (SECRET.to_owned(), "not valid JSON"),
        (String::new(), "not valid JSON"),
        (format!("[\"{SECRET}\"]"), "not an object"),
        (
            format!("{{\"messages\":\"{SECRET}\"}}"),
            "no top-level \"model\"",
        ),
        (
            format!("{{\"model\":{{\"id\":\"{SECRET}\"}}}}"),
            "not a string",
        ),
        ("{\"model\":null}".to_owned(), "not a string"),
    ];
    for path in [
        "/api/v1/chat/completions",
        "/api/v1/completions",
        "/api/v1/messages/",
        "/api/v1/responses",
        "/api/v1/responses/",
    ] {
        for (body, want) in &cases {
            let req = Request::post(format!("http://127.0.0.1{path}"))
                .header("authorization", AUTH)
                .body(full(body))
                .unwrap();
            let e = call(BufferRequestLayer::new(), &up, req).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidBody, "{body}");
            assert!(e.detail().unwrap().contains(want), "{e}");
            let shown = format!("{e} {e:?}");
            assert!(
                !shown.contains(SECRET) && !shown.contains("SENTINEL"),
                "{shown}"
            );
        }
    }
    assert_eq!(up.calls(), 0);
}

fn responses<B>(body: B) -> Request<B> {
    Request::post("http://127.0.0.1/api/v1/responses")
        .header("authorization", AUTH)
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn bad_responses_bodies_are_typed_errors_without_an_upstream_call() {
    let up = Upstream::default();
    let cases = [
        (
            format!("{{\"model\":\"{SECRET}\",\"input\":"),
            "not valid JSON",
        ),
        (SECRET.to_owned(), "not valid JSON"),
        (format!("[\"{SECRET}\"]"), "not an object"),
        (
            format!("{{\"input\":\"{SECRET}\"}}"),
            "no top-level \"model\"",
        ),
        (
            format!("{{\"model\":[\"{SECRET}\"],\"input\":\"hi\"}}"),
            "not a string",
        ),
        (
            "{\"model\":42,\"input\":\"hi\"}".to_owned(),
            "not a string (it is a number)",
        ),
    ];
    for (body, want) in &cases {
        let e = call(BufferRequestLayer::new(), &up, responses(full(body)))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidBody, "{body}");
        assert!(e.detail().unwrap().contains(want), "{e}");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("SENTINEL"), "{shown}");
    }
    assert_eq!(up.calls(), 0);
}

#[tokio::test]
async fn a_valid_responses_body_reaches_the_upstream_unchanged() {
    let bytes = Bytes::from_static(
        b"{\"input\":[{\"role\":\"user\",\"content\":\"h\\u00e9\"}],\n \"model\" : \"openai/o4-mini\" ,\"stream\":true}",
    );
    let seen = assert_passes_uncopied(responses(Full::new(bytes)), "openai/o4-mini").await;
    assert_eq!(seen.uri().path(), "/api/v1/responses");

    // Only a POST is checked: other methods on the path pass through as they are.
    let up = Upstream::default();
    let req = Request::get("http://127.0.0.1/api/v1/responses")
        .body(full("not json"))
        .unwrap();
    assert_eq!(
        call(BufferRequestLayer::new(), &up, req).await.unwrap(),
        "not json"
    );
    assert!(up.seen().extensions().get::<JsonBody>().is_none());
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn a_body_read_error_is_typed() {
    let up = Upstream::default();
    let (mut body, _) = Chunks::new([&b"{\"model\""[..]]);
    body.chunks.push_back(Err(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )));
    let e = call(BufferRequestLayer::new(), &up, chat(body))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidBody);
    assert!(e.detail().unwrap().contains("could not be read"));
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(up.calls(), 0);
}

#[tokio::test]
async fn other_requests_pass_through_untouched() {
    let up = Upstream::default();
    let req = Request::get("http://127.0.0.1/api/v1/models")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(call(BufferRequestLayer::new(), &up, req).await.unwrap(), "");
    assert!(up.seen().extensions().get::<JsonBody>().is_none());
    // Not JSON, but not a chat endpoint (or not a POST): passed on as is.
    let req = Request::post("http://127.0.0.1/api/v1/other")
        .body(full("not json"))
        .unwrap();
    assert_eq!(
        call(BufferRequestLayer::new(), &up, req).await.unwrap(),
        "not json"
    );
    let req = Request::get("http://127.0.0.1/api/v1/chat/completions")
        .body(full("not json"))
        .unwrap();
    assert_eq!(
        call(BufferRequestLayer::new(), &up, req).await.unwrap(),
        "not json"
    );
    assert_eq!(up.calls(), 3);
}

#[tokio::test]
async fn inner_errors_become_crate_errors() {
    let failing = service_fn(|_req: Request<Full<Bytes>>| async {
        Err::<Response<()>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    });
    let e = BufferRequestLayer::new()
        .layer(failing)
        .oneshot(chat(full(r#"{"model":"a"}"#)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transport);
}

#[test]
fn debug_output_never_shows_keys_or_bodies() {
    let layer = BufferRequestLayer::new().limit(1000);
    let mut svc = layer.layer(service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Error>(Response::new(()))
    }));
    let body = format!("{{\"model\":\"{SECRET}\"}}");
    let future = svc.call(chat(full(&body)));
    let json = JsonBody::parse_with_model(Bytes::from(format!(
        "{{\"model\":\"{SECRET}\",\"messages\":[]}}"
    )))
    .unwrap();
    let shown = format!(
        "{layer:?} {svc:?} {future:?} {json:?} {:?}",
        tower_openrouter::body::rewrite_model(json.bytes(), "x").map(|_| ())
    );
    assert!(!shown.contains("SENTINEL"), "{shown}");
    assert!(shown.contains("1000"));
}
