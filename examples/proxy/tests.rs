//! The gateway over the whole stack over the in-process stand-in (no network).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{HeaderValue, Request, Response, StatusCode};
use tower::Service;
use tower_openrouter::mock::{MockOpenRouter, Reply};
use tower_openrouter::stack::OpenRouterLayer;
use tower_openrouter::{Error, ErrorKind};

use crate::error::{error_response, status_of};
use crate::gateway::Gateway;
use crate::upstream::Shared;
use crate::CHAIN_HEADER;
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt};

const PROXY_KEY: &str = "sk-or-proxy-own-key";
const CALLER_KEY: &str = "sk-caller-key";

fn gateway(
    mock: &MockOpenRouter,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
    gateway_with_keys(mock, &[])
}

fn gateway_with_keys(
    mock: &MockOpenRouter,
    keys: &[String],
) -> Gateway<tower_openrouter::stack::OpenRouter<MockOpenRouter>> {
    let layer = OpenRouterLayer::builder()
        .chain(["a/primary", "b/secondary"])
        .chain_header(CHAIN_HEADER)
        .build()
        .unwrap();
    let mut auth = HeaderValue::try_from(format!("Bearer {PROXY_KEY}")).unwrap();
    auth.set_sensitive(true);
    Gateway {
        inner: layer.layer(mock.clone()),
        shared: Arc::new(Shared::new("http://127.0.0.1:9/api/v1", Some(auth), keys).unwrap()),
        not_ready: None,
    }
}

/// The gateway over `inner`, with no upstream key and no inbound keys.
fn keyless<S>(inner: S) -> Gateway<S> {
    Gateway {
        inner,
        shared: Arc::new(Shared::new("http://127.0.0.1:9/api/v1", None, &[]).unwrap()),
        not_ready: None,
    }
}

fn request(body: &'static str) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {CALLER_KEY}"))
        .header("content-type", "application/json")
        .header("x-title", "gateway test")
        .header("x-stainless-lang", "python")
        .body(Body::from(body))
        .unwrap()
}

const CHAT: &str = r#"{"model":"a/primary","messages":[{"role":"user","content":"hi"}]}"#;
const STREAMED: &str = r#"{"model":"a/primary","stream":true,"messages":[]}"#;

async fn json(resp: Response<Body>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(start_paused = true)]
async fn fails_over_with_its_own_key_and_says_who_served() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary").respond(Reply::status(429));
    let resp = gateway(&mock).oneshot(request(CHAT)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-openrouter-served-by"], "b/secondary");
    assert_eq!(resp.headers()["x-openrouter-attempts"], "2");
    assert!(resp.headers().get("x-openrouter-skipped").is_none());
    assert_eq!(json(resp).await["model"], "b/secondary");

    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        let h = r.headers();
        assert_eq!(h["authorization"], format!("Bearer {PROXY_KEY}").as_str());
        assert_eq!(h["x-title"], "gateway test");
        // Only the listed caller headers go upstream.
        assert!(h.get("x-stainless-lang").is_none());
        assert!(h.values().all(|v| !v
            .as_bytes()
            .windows(CALLER_KEY.len())
            .any(|w| w == CALLER_KEY.as_bytes())));
    }
    assert_eq!(seen[0].model(), Some("a/primary"));
    assert_eq!(seen[1].model(), Some("b/secondary"));
}

#[tokio::test(start_paused = true)]
async fn a_cooled_primary_costs_no_upstream_call() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary")
        .respond(Reply::status(429).retry_after(30));
    let svc = gateway(&mock);
    // A 429 holds back only the request that got it; five in a row bench the primary
    // (for its Retry-After, longer than the trip's 15 s).
    for _ in 0..5 {
        let resp = svc.clone().oneshot(request(CHAT)).await.unwrap();
        assert_eq!(resp.headers()["x-openrouter-attempts"], "2");
    }
    for _ in 0..10 {
        let resp = svc.clone().oneshot(request(CHAT)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-openrouter-served-by"], "b/secondary");
        assert_eq!(resp.headers()["x-openrouter-attempts"], "1");
        assert_eq!(resp.headers()["x-openrouter-skipped"], "1");
    }
    assert_eq!(mock.calls("a/primary"), 5);
    assert_eq!(mock.calls("b/secondary"), 15);
}

#[tokio::test(start_paused = true)]
async fn every_model_failing_is_an_openrouter_error_with_the_last_status() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary").respond(Reply::status(429));
    mock.model("b/secondary").respond(Reply::status(503));
    let resp = gateway(&mock).oneshot(request(CHAT)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = json(resp).await;
    let err = &v["error"];
    assert_eq!(err["code"], 503);
    assert!(err["message"]
        .as_str()
        .unwrap()
        .starts_with("all fallbacks exhausted"));
    assert_eq!(err["metadata"]["kind"], "exhausted");
    let attempts = err["metadata"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["model"], "a/primary");
    assert_eq!(attempts[0]["kind"], "rate_limited");
    assert_eq!(attempts[0]["status"], 429);
    assert_eq!(attempts[1]["model"], "b/secondary");
    assert_eq!(attempts[1]["status"], 503);
}

#[tokio::test(start_paused = true)]
async fn upstream_200s_that_are_no_answer_are_a_502() {
    // Every model behind an HTML page: a 502, never the upstream's 200.
    let mock = MockOpenRouter::new();
    mock.default_reply(Reply::raw(200, "text/html", ["<html>portal</html>"]));
    let resp = gateway(&mock).oneshot(request(CHAT)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let v = json(resp).await;
    let attempts = v["error"]["metadata"]["attempts"].as_array().unwrap();
    let kinds: Vec<_> = attempts
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["invalid_response", "invalid_response"]);
    // JSON cut short: fatal at the primary, a 502.
    let mock = MockOpenRouter::new();
    mock.model("a/primary").respond(Reply::raw(
        200,
        "application/json",
        [r#"{"id":"gen-1","choices":[{"mess"#],
    ));
    let resp = gateway(&mock).oneshot(request(CHAT)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        json(resp).await["error"]["metadata"]["kind"],
        "response_truncated"
    );
    assert_eq!(mock.calls("b/secondary"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_bad_body_is_a_400_without_an_upstream_call() {
    let mock = MockOpenRouter::new();
    let resp = gateway(&mock).oneshot(request("not json")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = json(resp).await;
    assert_eq!(v["error"]["code"], 400);
    assert_eq!(v["error"]["metadata"]["kind"], "invalid_body");
    assert_eq!(mock.total_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn streams_pass_through() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary").respond(Reply::status(502));
    let resp = gateway(&mock).oneshot(request(STREAMED)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-openrouter-served-by"], "b/secondary");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains(r#""model":"b/secondary""#));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn statuses_for_failures_without_an_upstream_answer() {
    assert_eq!(
        status_of(&Error::new(ErrorKind::BodyTooLarge)),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        status_of(&Error::new(ErrorKind::Transport)),
        StatusCode::BAD_GATEWAY
    );
    // An upstream 200 that was no answer is never passed on as a 200.
    for kind in [
        ErrorKind::InvalidResponse,
        ErrorKind::ResponseTruncated,
        ErrorKind::ResponseTooLarge,
        ErrorKind::ProviderError,
    ] {
        let e = Error::new(kind).with_status(StatusCode::OK);
        assert_eq!(status_of(&e), StatusCode::BAD_GATEWAY, "{kind}");
    }
    assert_eq!(
        status_of(&Error::new(ErrorKind::DeadlineExceeded)),
        StatusCode::GATEWAY_TIMEOUT
    );
    let resp = error_response(
        &Error::new(ErrorKind::ModelCoolingDown).with_retry_after(Duration::from_millis(2500)),
    );
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "3");
}

fn req(method: &str, path: &str, body: &'static str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn unknown_paths_and_wrong_methods_are_answered_here() {
    let mock = MockOpenRouter::new();
    let svc = gateway(&mock);
    let resp = svc
        .clone()
        .oneshot(req("POST", "/v1/nope", CHAT))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    assert_eq!(json(resp).await["error"]["code"], 404);
    for method in ["GET", "PUT", "DELETE"] {
        let resp = svc
            .clone()
            .oneshot(req(method, "/v1/chat/completions", CHAT))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(resp.headers()["allow"], "POST");
        assert_eq!(json(resp).await["error"]["code"], 405);
    }
    let resp = svc
        .clone()
        .oneshot(req("POST", "/api/v1/models", ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(mock.total_calls(), 0, "nothing went upstream");
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_is_served_under_v1_and_api_v1() {
    let mock = MockOpenRouter::new();
    mock.route("/api/v1/models")
        .respond(Reply::json(200, r#"{"data":[]}"#));
    mock.model("e/embed")
        .respond(Reply::json(200, r#"{"object":"list","data":[]}"#));
    let svc = gateway(&mock);
    let resp = svc
        .clone()
        .oneshot(req("GET", "/v1/models?supported_parameters=tools", ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp).await, serde_json::json!({"data": []}));
    let embed = r#"{"model":"e/embed","input":"x"}"#;
    let resp = svc
        .clone()
        .oneshot(req("POST", "/api/v1/embeddings", embed))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let messages =
        r#"{"model":"a/primary","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    mock.model("a/primary").respond(Reply::status(529)).once();
    let resp = svc
        .clone()
        .oneshot(req("POST", "/v1/messages", messages))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-openrouter-served-by"], "b/secondary");
    assert_eq!(json(resp).await["type"], "message");
    let responses = r#"{"model":"a/primary","input":"hi"}"#;
    let resp = svc
        .clone()
        .oneshot(req("POST", "/v1/responses", responses))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.uri().to_string())
        .collect();
    assert_eq!(
        seen,
        [
            "http://127.0.0.1:9/api/v1/models?supported_parameters=tools",
            "http://127.0.0.1:9/api/v1/embeddings",
            "http://127.0.0.1:9/api/v1/messages",
            "http://127.0.0.1:9/api/v1/messages",
            "http://127.0.0.1:9/api/v1/responses",
        ]
    );
    assert_eq!(mock.requests()[1].body(), embed.as_bytes());
}

#[tokio::test(start_paused = true)]
async fn inbound_keys_are_checked_before_anything_goes_upstream() {
    let mock = MockOpenRouter::new();
    let svc = gateway_with_keys(&mock, &["gw-key-1".to_owned(), "gw-key-2".to_owned()]);
    // `request` sends the caller key, which is not one of the gateway's.
    let resp = svc.clone().oneshot(request(CHAT)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(resp).await["error"]["code"], 401);
    let resp = svc
        .clone()
        .oneshot(req("POST", "/v1/chat/completions", CHAT))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(mock.total_calls(), 0);
    let mut ok = req("POST", "/v1/chat/completions", CHAT);
    ok.headers_mut()
        .insert("authorization", "Bearer gw-key-2".parse().unwrap());
    let resp = svc.clone().oneshot(ok).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The gateway's own key goes upstream, never the inbound one.
    assert_eq!(
        mock.requests()[0].headers()["authorization"],
        format!("Bearer {PROXY_KEY}").as_str()
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_retry_is_discouraged_when_the_chain_already_tried() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary").respond(Reply::status(503));
    mock.model("b/secondary").respond(Reply::status(503));
    let resp = gateway(&mock).oneshot(request(CHAT)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    assert!(resp.headers().get("retry-after").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_hint_is_passed_on() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary")
        .respond(Reply::status(429).retry_after(7));
    mock.model("b/secondary")
        .respond(Reply::status(429).retry_after(9));
    let layer = OpenRouterLayer::builder()
        .chain(["a/primary", "b/secondary"])
        .wait_for_rate_limit(false)
        .build()
        .unwrap();
    let svc = keyless(layer.layer(mock.clone()));
    let resp = svc.oneshot(request(CHAT)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // The soonest hint: a model may be called again after 7 s.
    assert_eq!(resp.headers()["retry-after"], "7");
    assert!(resp.headers().get("x-should-retry").is_none());
}

async fn text(resp: Response<Body>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_stream_failing_after_its_first_token_ends_with_an_error_event() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary")
        .respond(Reply::stream(["Hel", "lo"]).error_after(1));
    let svc = gateway(&mock);
    let resp = svc.clone().oneshot(request(STREAMED)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = text(resp).await;
    assert!(body.contains(r#""content":"Hel""#), "{body}");
    let last = body.trim_end().rsplit("\n\n").next().unwrap();
    let event: serde_json::Value =
        serde_json::from_str(last.strip_prefix("data: ").expect(last)).unwrap();
    assert_eq!(event["error"]["code"], 502);
    assert!(event["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stream interrupted"));

    let messages = r#"{"model":"a/primary","stream":true,"max_tokens":5,"messages":[]}"#;
    let resp = svc
        .clone()
        .oneshot(req("POST", "/v1/messages", messages))
        .await
        .unwrap();
    let body = text(resp).await;
    let last = body.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{last}");
    let event: serde_json::Value =
        serde_json::from_str(last.trim_start_matches("event: error\ndata: ")).unwrap();
    assert_eq!(event["type"], "error");
    assert_eq!(event["error"]["type"], "api_error");
}

/// Serves `gateway` on a loopback port, each connection as the gateway serves it.
async fn serve_on_loopback<S>(gateway: S, limits: crate::conn::ConnLimits) -> std::net::SocketAddr
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let app = axum::Router::new().fallback_service(gateway);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(crate::conn::serve_connection(sock, app.clone(), limits));
        }
    });
    addr
}

/// Reads until the server closes; bounded so the test always ends.
async fn read_to_close(sock: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out))
        .await
        .expect("the gateway closed the connection in time")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// The head and body of an answer, the body parsed.
fn parse(answer: &str) -> (&str, serde_json::Value) {
    let (head, body) = answer.split_once("\r\n\r\n").expect(answer);
    (head, serde_json::from_str(body).expect(answer))
}

/// One `POST` over loopback (HTTP/1.0: the answer is not chunked, and the connection ends
/// with it): the status and the body as JSON.
async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    use tokio::io::AsyncWriteExt;
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.0\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut sock).await;
    let status = answer[9..12].parse().expect(&answer);
    (status, parse(&answer).1)
}

/// Over loopback: stalled clients lose their connection.
mod slow_clients {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What the gateway (with these limits) answers to `sent`, until it closes.
    async fn answer(header_timeout: Duration, body_timeout: Duration, sent: &[u8]) -> String {
        let mock = MockOpenRouter::new();
        let limits = crate::conn::ConnLimits {
            header_timeout,
            body_timeout,
        };
        let addr = serve_on_loopback(gateway_with_keys(&mock, &[]), limits).await;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The gateway may close before it has read all of an oversized head.
        let _ = sock.write_all(sent).await;
        read_to_close(&mut sock).await
    }

    /// Short limits for the one being tested, a long one for the other (a loaded machine
    /// must not trip it first).
    const SHORT: Duration = Duration::from_millis(200);
    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_stalled_head_is_closed() {
        let sent = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n";
        // hyper drops the connection without an answer (there is no request to answer).
        assert_eq!(answer(SHORT, LONG, sent).await, "");
    }

    #[tokio::test]
    async fn a_stalled_body_is_a_408_and_closed() {
        let sent = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n{\"model\"";
        let answer = answer(LONG, SHORT, sent).await;
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{answer}"
        );
        let (head, body) = parse(&answer);
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains("\r\nx-should-retry: false"), "{head}");
        assert_eq!(body["error"]["code"], 408);
        assert_eq!(body["error"]["metadata"]["kind"], "invalid_body");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("did not arrive within 0.2 s"), "{message}");
    }

    #[tokio::test]
    async fn an_oversized_head_is_a_431_with_an_error_json() {
        let mut sent = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-big: ".to_vec();
        sent.extend(std::iter::repeat_n(b'a', 300 * 1024));
        sent.extend_from_slice(b"\r\n\r\n");
        let answer = answer(LONG, LONG, &sent).await;
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );
        let (head, body) = parse(&answer);
        assert!(
            head.contains("\r\ncontent-type: application/json"),
            "{head}"
        );
        assert_eq!(body["error"]["code"], 431);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("64 KiB"), "{message}");
    }

    #[tokio::test]
    async fn an_unparsable_head_is_a_400_with_an_error_json() {
        let sent = b"POST /v1/chat/completions HTTP/1.1\r\nbad header\r\n\r\n";
        let answer = answer(LONG, LONG, sent).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert_eq!(parse(&answer).1["error"]["code"], 400);
    }
}

#[test]
fn the_harness_style_start_builds_its_stack() {
    // No --config: the chain from PRIMARY_MODEL / FALLBACK_MODELS (their defaults here),
    // settings from flags.
    let args = crate::args::Args {
        settings: vec![
            ("deadline_seconds", "30".to_owned()),
            ("attempt_timeout_seconds", "10".to_owned()),
        ],
        ..Default::default()
    };
    let layer = crate::upstream::layer(&args, None).unwrap();
    assert_eq!(layer.deadline(), Duration::from_secs(30));
    assert_eq!(layer.attempt_timeout(), Duration::from_secs(10));
    let chain: Vec<&str> = layer
        .chains()
        .default_chain()
        .unwrap()
        .iter()
        .map(|m| m.model())
        .collect();
    assert_eq!(chain.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_model_rate_limited_is_a_429_at_once_without_a_third_call() {
    let mock = MockOpenRouter::new();
    mock.default_reply(Reply::status(429).retry_after(10));
    let layer = OpenRouterLayer::builder()
        .chain(["a/primary", "b/secondary"])
        .max_rate_limit_wait(Duration::from_secs_f64(
            crate::upstream::GATEWAY_MAX_RATE_LIMIT_WAIT_SECONDS,
        ))
        .build()
        .unwrap();
    let svc = keyless(layer.layer(mock.clone()));
    let start = tokio::time::Instant::now();
    let resp = svc.oneshot(request(CHAT)).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "10");
    assert_eq!(mock.total_calls(), 2);
}

#[test]
fn every_kind_of_failure_gets_a_status_that_fits_whose_fault_it_is() {
    use ErrorKind::*;
    // Failures of the caller's own request: 4xx, whatever the attempts were.
    for (kind, status) in [
        (BodyTooLarge, 413),
        (InvalidBody, 400),
        (InvalidRouting, 400),
        (UnknownChain, 400),
        (ModelNotAllowed, 400),
        (NoCapableModel, 422),
        (InvalidRequest, 400),
        (ContextLengthExceeded, 400),
        (PayloadTooLarge, 413),
        (ContentModerated, 403),
        (ModelNotFound, 404),
    ] {
        assert_eq!(status_of(&Error::new(kind)).as_u16(), status, "{kind:?}");
    }
    // The upstream's or the gateway's own trouble: 5xx (and 402 / 429 as OpenRouter says).
    for (kind, status) in [
        (Unauthorized, 502),
        (InsufficientCredits, 402),
        (RateLimited, 429),
        (ModelUnavailable, 503),
        (ProviderOverloaded, 503),
        (ModelCoolingDown, 503),
        (ModelAtCapacity, 503),
        (ProviderError, 502),
        (Transport, 502),
        (StreamInterrupted, 502),
        (StreamTruncated, 502),
        (UnexpectedStatus, 502),
        (Exhausted, 502),
        (AttemptTimeout, 504),
        (StreamTimeout, 504),
        (UpstreamTimeout, 504),
        (DeadlineExceeded, 504),
    ] {
        assert_eq!(status_of(&Error::new(kind)).as_u16(), status, "{kind:?}");
    }
    // The upstream refusing the gateway's own key is not the caller's 401.
    let refused = Error::new(Unauthorized).with_status(StatusCode::UNAUTHORIZED);
    assert_eq!(status_of(&refused), StatusCode::BAD_GATEWAY);
    // Every model skipped: one cooling down says more than one unable to serve.
    let skipped = |kind| tower_openrouter::AttemptRecord {
        model: "a/b".into(),
        index: 0,
        retry: 0,
        elapsed: Duration::ZERO,
        error: Error::new(kind),
    };
    let e =
        Error::new(Exhausted).with_attempts(vec![skipped(ModelCoolingDown), skipped(Incapable)]);
    assert_eq!(status_of(&e), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn no_capable_model_is_the_callers_422_with_the_reasons() {
    let mock = MockOpenRouter::new();
    let catalog = tower_openrouter::catalog::ModelCatalog::from_json(&mock.catalog_json()).unwrap();
    let layer = OpenRouterLayer::builder()
        .chain([
            "meta-llama/llama-3.1-8b-instruct",
            "mistralai/mistral-7b-instruct",
        ])
        .catalog(catalog)
        .build()
        .unwrap();
    let svc = keyless(layer.layer(mock.clone()));
    let tools = r#"{"model":"meta-llama/llama-3.1-8b-instruct","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#;
    let resp = svc.oneshot(request(tools)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let v = json(resp).await;
    assert_eq!(v["error"]["code"], 422);
    assert_eq!(v["error"]["metadata"]["kind"], "no_capable_model");
    let attempts = v["error"]["metadata"]["attempts"].as_array().unwrap();
    let reasons: Vec<(&str, &str)> = attempts
        .iter()
        .map(|a| (a["model"].as_str().unwrap(), a["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("meta-llama/llama-3.1-8b-instruct", "no tools"),
            ("mistralai/mistral-7b-instruct", "no tools"),
        ]
    );
    assert_eq!(mock.total_calls(), 0);
}

/// Over loopback: the allow-list (`--allowed-models`, `--allowed-providers`) refuses what
/// names a model or provider outside it, before anything goes upstream.
mod allow_list {
    use super::*;

    const LIMITS: crate::conn::ConnLimits = crate::conn::ConnLimits {
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
    };

    async fn start(mock: &MockOpenRouter) -> std::net::SocketAddr {
        // The harness-style start: chain and settings from flags, as a user runs it.
        let args = crate::args::Args {
            settings: vec![
                ("allowed_models", "meta-llama/*, x/extra".to_owned()),
                ("allowed_providers", "OpenAI,Anthropic".to_owned()),
            ],
            ..Default::default()
        };
        let layer = crate::upstream::layer(&args, None).unwrap();
        let gateway = keyless(layer.layer(mock.clone()));
        serve_on_loopback(gateway, LIMITS).await
    }

    #[tokio::test]
    async fn what_names_another_model_or_provider_is_a_400_with_no_upstream_call() {
        let mock = MockOpenRouter::new();
        let addr = start(&mock).await;
        for (path, body, named) in [
            (
                "/v1/chat/completions",
                r#"{"model":"evil/a","messages":[]}"#,
                "evil/a",
            ),
            (
                "/v1/chat/completions",
                r#"{"model":"openai/gpt-4o-mini","models":["openai/gpt-4o-mini","evil/a"],"messages":[]}"#,
                "evil/a",
            ),
            (
                "/api/v1/chat/completions",
                r#"{"model":"openai/gpt-4o-mini","messages":[],"provider":{"only":["openai","EvilCloud"]}}"#,
                "EvilCloud",
            ),
            (
                "/v1/responses",
                r#"{"model":"openai/gpt-4o-mini","input":"hi","provider":{"order":["EvilCloud"]}}"#,
                "EvilCloud",
            ),
            (
                "/v1/messages",
                r#"{"model":"openai/gpt-4o-mini","max_tokens":5,"messages":[],"fallbacks":[{"model":"evil/b"}]}"#,
                "evil/b",
            ),
            (
                "/v1/embeddings",
                r#"{"model":"evil/embed","input":"x"}"#,
                "evil/embed",
            ),
            // A duplicated key is checked in each of its values.
            (
                "/v1/chat/completions",
                r#"{"model":"openai/gpt-4o-mini","models":["evil/a"],"models":["openai/gpt-4o-mini"],"messages":[]}"#,
                "evil/a",
            ),
        ] {
            let (status, v) = post(addr, path, body).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(v["error"]["code"], 400);
            assert_eq!(
                v["error"]["metadata"]["kind"], "model_not_allowed",
                "{body}"
            );
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(named), "{message}");
        }
        assert_eq!(mock.total_calls(), 0, "nothing went upstream");
    }

    #[tokio::test]
    async fn the_chains_and_the_list_are_served() {
        let mock = MockOpenRouter::new();
        mock.model("x/extra")
            .respond(Reply::json(200, r#"{"object":"list","data":[]}"#));
        let addr = start(&mock).await;
        for (path, body) in [
            // A chain's model, with a chain model and a listed prefix server-side.
            (
                "/v1/chat/completions",
                r#"{"model":"openai/gpt-4o-mini","models":["anthropic/claude-3-haiku","meta-llama/llama-3.1-8b-instruct"],"messages":[]}"#,
            ),
            // A listed model of its own, listed providers (any case).
            (
                "/v1/chat/completions",
                r#"{"model":"meta-llama/llama-3.1-8b-instruct","messages":[],"provider":{"only":["openai"],"order":["anthropic"]}}"#,
            ),
            ("/v1/embeddings", r#"{"model":"x/extra","input":"x"}"#),
        ] {
            let (status, v) = post(addr, path, body).await;
            assert_eq!(status, 200, "{body}: {v}");
        }
        let models: Vec<Option<String>> = mock
            .requests()
            .iter()
            .map(|r| r.model().map(str::to_owned))
            .collect();
        assert_eq!(
            models,
            [
                Some("openai/gpt-4o-mini".to_owned()),
                Some("meta-llama/llama-3.1-8b-instruct".to_owned()),
                Some("x/extra".to_owned()),
            ]
        );
    }
}

/// The gateway's log lines, captured (its own targets only, WARN and up).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// A subscriber that records nothing but asks every call site to check again each time
/// (so a thread-local subscriber decides).
struct SometimesOfInterest;

impl tracing::Subscriber for SometimesOfInterest {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn one_warn_line_per_failed_request_and_per_mid_stream_failure() {
    use tracing_subscriber::layer::SubscriberExt as _;
    // Both lines' call sites are registered first, with no subscriber: a call site another
    // test's thread registers while this test's subscriber is being set could otherwise
    // be cached as of interest to no one (tracing's interest cache is process-wide).
    error_response(&Error::new(ErrorKind::Transport));
    crate::stream_end::log_failure(&Error::new(ErrorKind::StreamInterrupted));
    // And a global subscriber that calls every call site of passing interest, so no
    // other thread can cache one as of interest to no one while this test's own
    // subscriber is being set (it still failed now and then without).
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(SometimesOfInterest);
    });
    let logs = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(logs.clone())
                .with_ansi(false),
        )
        .with(
            tracing_subscriber::filter::Targets::new().with_target("proxy", tracing::Level::WARN),
        );
    // This test's thread only (a current-thread runtime: the gateway runs here).
    let _guard = tracing::subscriber::set_default(subscriber);
    let mock = MockOpenRouter::new();
    mock.model("a/primary")
        .respond(Reply::status(503))
        .once()
        .then(Reply::stream(["Hel", "lo"]).error_after(1));
    mock.model("b/secondary").respond(Reply::status(503)).once();
    let svc = gateway(&mock);
    let resp = svc.clone().oneshot(request(CHAT)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = svc.clone().oneshot(request(STREAMED)).await.unwrap();
    text(resp).await;
    let out = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (line, words) in lines.iter().zip([
        [
            "WARN",
            "status=503",
            "kind=\"exhausted\"",
            "model=\"b/secondary\"",
            "request failed",
        ],
        [
            "WARN",
            "status=502",
            "kind=\"stream_interrupted\"",
            "model=\"a/primary\"",
            "stream failed after its first token",
        ],
    ]) {
        for w in words {
            assert!(line.contains(w), "{w:?} not in {line}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_responses_stream_failing_after_content_ends_with_an_error_event() {
    let mock = MockOpenRouter::new();
    mock.model("a/primary").respond(Reply::sse([
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\"}}",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"m\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}",
        "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"id\":\"r\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"The provider failed\"}}}",
    ]));
    let body = r#"{"model":"a/primary","input":"hi","stream":true}"#;
    let resp = gateway(&mock)
        .oneshot(req("POST", "/v1/responses", body))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = text(resp).await;
    assert!(body.contains(r#""delta":"Hi""#), "{body}");
    let last = body.trim_end().rsplit("\n\n").next().unwrap();
    let data = last.strip_prefix("event: error\ndata: ").expect(last);
    let event: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["type"], "error");
    assert_eq!(event["code"], "stream_interrupted");
    assert_eq!(mock.total_calls(), 1);
}

#[test]
fn every_flag_setting_is_a_key_of_the_json_settings() {
    // Settings refuses unknown keys: a name here that it does not know fails to parse.
    let settings: serde_json::Map<String, serde_json::Value> = crate::args::SETTINGS
        .iter()
        .map(|k| ((*k).to_owned(), serde_json::Value::Null))
        .collect();
    let config = serde_json::json!({ "default_chain": ["a/b"], "settings": settings });
    tower_openrouter::config::Config::from_json(&config.to_string()).unwrap();
}

/// Waits (bounded: 5 s of wall clock, the refresh runs on a real loopback server) until
/// `catalog` has loaded.
async fn loaded(catalog: &tower_openrouter::catalog::ModelCatalog) {
    for _ in 0..500 {
        if catalog.is_loaded() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the catalog did not load within 5 s");
}

/// The `Authorization` of every catalog request `mock` received.
fn catalog_auth(mock: &MockOpenRouter) -> Vec<Option<String>> {
    mock.requests()
        .iter()
        .filter(|r| r.uri().path().ends_with("/models"))
        .map(|r| {
            r.headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_configured_catalog_is_loaded_from_the_upstream_and_refreshed() {
    let mock = MockOpenRouter::new();
    let server = mock.serve().await.unwrap();
    let layer = OpenRouterLayer::from_json(
        r#"{"default_chain": ["openai/gpt-4o"], "catalog": {"refresh_seconds": 3600}}"#,
    )
    .unwrap();
    let key = HeaderValue::from_static("Bearer sk-or-gateway");
    let client = crate::upstream::SharedClient(Arc::new(crate::upstream::http_client().unwrap()));
    let handle = crate::upstream::refresh_catalog(&layer, &server.url(), Some(&key), client)
        .unwrap()
        .unwrap();
    let catalog = layer.catalog().unwrap();
    assert_eq!(
        catalog.source_uri().to_string(),
        format!("{}/models", server.url())
    );
    // Loaded in the background from the stand-in's catalog, with the upstream key.
    loaded(catalog).await;
    assert!(catalog.get("openai/gpt-4o").unwrap().supports("tools"));
    assert_eq!(
        catalog_auth(&mock),
        [Some("Bearer sk-or-gateway".to_owned())]
    );
    handle.abort();
    // Without a catalog key nothing starts.
    let plain = OpenRouterLayer::from_json(r#"{"default_chain": ["openai/gpt-4o"]}"#).unwrap();
    let client = crate::upstream::SharedClient(Arc::new(crate::upstream::http_client().unwrap()));
    assert!(
        crate::upstream::refresh_catalog(&plain, &server.url(), Some(&key), client)
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_catalog_on_another_host_gets_no_upstream_key() {
    let upstream = MockOpenRouter::new();
    let upstream_server = upstream.serve().await.unwrap();
    let elsewhere = MockOpenRouter::new();
    let elsewhere_server = elsewhere.serve().await.unwrap();
    let config = serde_json::json!({ "default_chain": ["openai/gpt-4o"],
        "catalog": { "url": format!("{}/models", elsewhere_server.url()) } });
    let layer = OpenRouterLayer::from_json(&config.to_string()).unwrap();
    let key = HeaderValue::from_static("Bearer sk-or-gateway");
    let client = crate::upstream::SharedClient(Arc::new(crate::upstream::http_client().unwrap()));
    let handle =
        crate::upstream::refresh_catalog(&layer, &upstream_server.url(), Some(&key), client)
            .unwrap()
            .unwrap();
    let catalog = layer.catalog().unwrap();
    loaded(catalog).await;
    assert_eq!(catalog_auth(&elsewhere), [None]);
    assert!(catalog_auth(&upstream).is_empty());
    handle.abort();
}
