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
    let resp = gateway(&mock)
        .oneshot(request(
            r#"{"model":"a/primary","stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
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
    let svc = Gateway {
        inner: layer.layer(mock.clone()),
        shared: Arc::new(Shared::new("http://127.0.0.1:9/api/v1", None, &[]).unwrap()),
        not_ready: None,
    };
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
    let resp = svc
        .clone()
        .oneshot(request(
            r#"{"model":"a/primary","stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
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

/// Over loopback: stalled clients lose their connection.
mod slow_clients {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: crate::ConnLimits) -> std::net::SocketAddr {
        let mock = MockOpenRouter::new();
        let app = axum::Router::new().fallback_service(gateway_with_keys(&mock, &[]));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(crate::serve_connection(sock, app.clone(), limits));
            }
        });
        addr
    }

    /// Reads until the server closes; bounded so the test always ends.
    async fn read_to_close(sock: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out))
            .await
            .expect("the gateway closed the connection in time")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    const LIMITS: crate::ConnLimits = crate::ConnLimits {
        header_timeout: Duration::from_millis(200),
        body_timeout: Duration::from_millis(200),
    };

    #[tokio::test]
    async fn a_stalled_head_is_closed() {
        let addr = start(LIMITS).await;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut sock).await;
        assert!(!answer.contains("200 OK"), "{answer}");
    }

    #[tokio::test]
    async fn a_stalled_body_is_refused_and_closed() {
        let addr = start(LIMITS).await;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n{\"model\"",
        )
        .await
        .unwrap();
        let answer = read_to_close(&mut sock).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("invalid_body"), "{answer}");
    }

    #[tokio::test]
    async fn an_oversized_head_is_a_431() {
        let addr = start(LIMITS).await;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 300 * 1024));
        head.extend_from_slice(b"\r\n\r\n");
        let _ = sock.write_all(&head).await;
        let answer = read_to_close(&mut sock).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
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
    let svc = Gateway {
        inner: layer.layer(mock.clone()),
        shared: Arc::new(Shared::new("http://127.0.0.1:9/api/v1", None, &[]).unwrap()),
        not_ready: None,
    };
    let start = tokio::time::Instant::now();
    let resp = svc.oneshot(request(CHAT)).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "10");
    assert_eq!(mock.total_calls(), 2);
}
