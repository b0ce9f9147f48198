//! The reqwest adapter over the loopback stand-in: a plain call is byte-exact both ways,
//! a rate-limited primary falls back, a stream passes through chunk by chunk, a stream
//! that dies halfway is a typed error after the bytes it delivered, a hang is cut by the
//! attempt timeout (ours and reqwest's own), and a request reqwest cannot send is a
//! typed error with no upstream call.
//!
//! Real sockets need real time (paused time would auto-advance while a response is on
//! the wire), so the timeouts here are short and every wait is bounded.
#![cfg(feature = "reqwest")]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::time::{timeout, Instant};
use tower::{ServiceBuilder, ServiceExt};
use tower_openrouter::mock::{MockOpenRouter, MockServer, Reply};
use tower_openrouter::reqwest::ReqwestService;
use tower_openrouter::{ChainModel, Error, ErrorKind, OpenRouterLayer, ServedBy};

const PRIMARY: &str = "anthropic/claude-sonnet-4.5";
const SECONDARY: &str = "openai/gpt-4o";
/// Every wait in this file ends by this, whatever the code under test does.
const BOUND: Duration = Duration::from_secs(20);

fn body(model: &str, stream: bool) -> String {
    // Odd spacing and a non-ASCII prompt: the upstream must see these exact bytes.
    format!(
        r#"{{ "model" : "{model}", "stream": {stream},"messages":[{{"role":"user","content":"grüß dich"}}] }}"#
    )
}

fn request(base: &str, body: String) -> http::Request<String> {
    http::Request::post(format!("{base}/chat/completions"))
        .header("authorization", "Bearer sk-or-test")
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn layer(attempt_timeout: Duration) -> OpenRouterLayer {
    OpenRouterLayer::builder()
        .chain([PRIMARY, SECONDARY])
        .attempt_timeout(attempt_timeout)
        .deadline(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A reqwest client. The examples' TLS (reqwest's `rustls-no-provider`, unified into every
/// test build) needs a process-wide crypto provider, as any such user's program does.
fn http() -> reqwest::Client {
    http_builder().build().unwrap()
}

fn http_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

async fn serve(mock: &MockOpenRouter) -> MockServer {
    mock.serve().await.unwrap()
}

async fn call(
    client: reqwest::Client,
    layer: OpenRouterLayer,
    req: http::Request<String>,
) -> Result<http::Response<tower_openrouter::classify::ResponseBody<reqwest::Body>>, Error> {
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(ReqwestService::new(client));
    timeout(BOUND, svc.oneshot(req)).await.expect("bounded")
}

#[tokio::test]
async fn a_plain_call_is_byte_exact_both_ways() {
    let mock = MockOpenRouter::new();
    let server = serve(&mock).await;
    let sent = body(PRIMARY, false);

    let resp = call(
        http(),
        layer(Duration::from_secs(10)),
        request(&server.url(), sent.clone()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let served = resp.extensions().get::<ServedBy>().unwrap().clone();
    let got = resp.into_body().collect().await.unwrap().to_bytes();

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body(), &Bytes::from(sent.clone()));
    assert_eq!(requests[0].headers()["authorization"], "Bearer sk-or-test");
    assert_eq!(&*served.model, PRIMARY);
    assert!(!served.fell_back);

    // The same request answered in process by a fresh stand-in (same response id): the
    // bytes reqwest handed back are exactly the stand-in's.
    let direct = MockOpenRouter::new()
        .oneshot(request("https://openrouter.ai/api/v1", sent).map(|b| b.into()))
        .await
        .unwrap();
    let direct = direct.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, direct);
}

#[tokio::test]
async fn a_rate_limited_primary_falls_back() {
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY)
        .respond(Reply::status(429).retry_after(30));
    let server = serve(&mock).await;

    let resp = call(
        http(),
        layer(Duration::from_secs(10)),
        request(&server.url(), body(PRIMARY, false)),
    )
    .await
    .unwrap();
    let served = resp.extensions().get::<ServedBy>().unwrap();
    assert_eq!(&*served.model, SECONDARY);
    assert_eq!(served.attempts.len(), 1);
    assert_eq!(served.attempts[0].kind(), ErrorKind::RateLimited);
    assert_eq!(mock.calls(PRIMARY), 1);
    assert_eq!(mock.calls(SECONDARY), 1);
    // The fallback's body differs from the caller's only in the model.
    let second = mock.bodies(SECONDARY).pop().unwrap();
    assert_eq!(second, Bytes::from(body(SECONDARY, false)));
}

#[tokio::test]
async fn a_stream_passes_through_chunk_by_chunk() {
    let mock = MockOpenRouter::new();
    // Two content chunks, then nothing, never an end: only a streaming adapter can hand
    // the caller those two chunks.
    mock.model(PRIMARY)
        .respond(Reply::stream(["Hel", "lo"]).stall_after(2));
    let server = serve(&mock).await;

    let resp = call(
        http(),
        layer(Duration::from_secs(10)),
        request(&server.url(), body(PRIMARY, true)),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = String::new();
    while !(seen.contains("\"Hel\"") && seen.contains("\"lo\"")) {
        let frame = timeout(BOUND, body.frame())
            .await
            .expect("both chunks arrive while the stream is still open")
            .expect("the stream is still open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(!seen.contains("[DONE]"));
}

#[tokio::test]
async fn a_stream_that_dies_halfway_ends_with_a_typed_error() {
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY)
        .respond(Reply::stream(["one", "two", "three", "four"]).abort_after(2));
    let server = serve(&mock).await;

    let resp = call(
        http(),
        layer(Duration::from_secs(10)),
        request(&server.url(), body(PRIMARY, true)),
    )
    .await
    .unwrap();
    let mut body = resp.into_body();
    let mut seen = String::new();
    let error = loop {
        match timeout(BOUND, body.frame()).await.expect("bounded") {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Some(Err(e)) => break e,
            None => panic!("the body ended cleanly after: {seen}"),
        }
    };
    assert!(seen.contains("\"one\"") && seen.contains("\"two\""));
    assert!(!seen.contains("\"three\""));
    assert_eq!(error.kind(), ErrorKind::StreamInterrupted);
    // Nothing is replayed after the first token: one call.
    assert_eq!(mock.total_calls(), 1);
}

#[tokio::test]
async fn a_hang_is_cut_by_the_attempt_timeout_and_falls_back() {
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY).respond(Reply::hang());
    let server = serve(&mock).await;
    let layer = OpenRouterLayer::builder()
        .chain([
            ChainModel::new(PRIMARY).timeout(Duration::from_millis(300)),
            ChainModel::new(SECONDARY),
        ])
        .attempt_timeout(Duration::from_secs(10))
        .deadline(Duration::from_secs(15))
        .build()
        .unwrap();

    let start = Instant::now();
    let resp = call(http(), layer, request(&server.url(), body(PRIMARY, false)))
        .await
        .unwrap();
    let took = start.elapsed();
    let served = resp.extensions().get::<ServedBy>().unwrap();
    assert_eq!(&*served.model, SECONDARY);
    assert_eq!(served.attempts[0].kind(), ErrorKind::AttemptTimeout);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn reqwests_own_timeout_is_an_attempt_timeout() {
    let mock = MockOpenRouter::new();
    mock.model(PRIMARY).respond(Reply::hang());
    let server = serve(&mock).await;
    let client = http_builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    let resp = call(
        client,
        layer(Duration::from_secs(10)),
        request(&server.url(), body(PRIMARY, false)),
    )
    .await
    .unwrap();
    let served = resp.extensions().get::<ServedBy>().unwrap();
    assert_eq!(&*served.model, SECONDARY);
    assert_eq!(served.attempts.len(), 1, "a timeout moves on, not retries");
    assert_eq!(served.attempts[0].kind(), ErrorKind::AttemptTimeout);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    // A port nothing listens on: bind one, note it, close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = call(
        http(),
        layer(Duration::from_secs(10)),
        request(&format!("http://{addr}/api/v1"), body(PRIMARY, false)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted);
    let kinds: Vec<_> = err.attempts().iter().map(|a| a.kind()).collect();
    assert!(
        kinds.iter().all(|k| *k == ErrorKind::Transport),
        "{kinds:?}"
    );
    let models: Vec<_> = err.attempts().iter().map(|a| &*a.model).collect();
    assert_eq!(models.first(), Some(&PRIMARY));
    assert_eq!(models.last(), Some(&SECONDARY));
}

#[tokio::test]
async fn a_relative_uri_is_an_invalid_request_with_no_call() {
    let mock = MockOpenRouter::new();
    let svc = ServiceBuilder::new()
        .layer(layer(Duration::from_secs(10)))
        .service(ReqwestService::new(http()));
    let req = http::Request::post("/api/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body(PRIMARY, false))
        .unwrap();
    let err = timeout(BOUND, svc.oneshot(req)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(mock.total_calls(), 0);
}

#[cfg(feature = "reqwest-middleware")]
mod middleware {
    use super::*;
    use reqwest_middleware::{ClientBuilder, Middleware, Next};

    /// Adds a header, as a user's tracing or auth middleware would.
    struct Tag;

    #[async_trait::async_trait]
    impl Middleware for Tag {
        async fn handle(
            &self,
            mut req: reqwest::Request,
            extensions: &mut http::Extensions,
            next: Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            req.headers_mut()
                .insert("x-tag", http::HeaderValue::from_static("mw"));
            next.run(req, extensions).await
        }
    }

    #[tokio::test]
    async fn client_with_middleware_falls_back_and_runs_its_middleware() {
        let mock = MockOpenRouter::new();
        mock.model(PRIMARY).respond(Reply::status(503));
        let server = serve(&mock).await;
        let client = ClientBuilder::new(http()).with(Tag).build();
        let svc = ServiceBuilder::new()
            .layer(layer(Duration::from_secs(10)))
            .service(ReqwestService::new(client));

        let resp = timeout(
            BOUND,
            svc.oneshot(request(&server.url(), body(PRIMARY, false))),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            &*resp.extensions().get::<ServedBy>().unwrap().model,
            SECONDARY
        );
        let requests = mock.requests();
        assert!(requests.iter().all(|r| r.headers()["x-tag"] == "mw"));
        assert_eq!(mock.calls(SECONDARY), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_through_middleware_is_a_transport_error() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = ClientBuilder::new(http()).build();
        let svc = ServiceBuilder::new()
            .layer(layer(Duration::from_secs(10)))
            .service(ReqwestService::new(client));
        let err = timeout(
            BOUND,
            svc.oneshot(request(
                &format!("http://{addr}/api/v1"),
                body(PRIMARY, false),
            )),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert!(err
            .attempts()
            .iter()
            .all(|a| a.kind() == ErrorKind::Transport));
    }
}
