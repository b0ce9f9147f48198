//! The OpenRouter stand-in, through its public API: in process (paused time, exact) and
//! over loopback with hyper-util's client.
#![cfg(feature = "mock")]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_openrouter::mock::{MockBody, MockOpenRouter, Reply};

fn post(path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(format!("https://openrouter.ai{path}"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-or-secret")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn chat(model: &str) -> Request<Full<Bytes>> {
    post(
        "/api/v1/chat/completions",
        &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
    )
}

fn chat_stream(model: &str) -> Request<Full<Bytes>> {
    post(
        "/api/v1/chat/completions",
        &format!(r#"{{"model":"{model}","stream":true,"messages":[]}}"#),
    )
}

fn messages(model: &str, stream: bool) -> Request<Full<Bytes>> {
    post(
        "/api/v1/messages",
        &format!(r#"{{"model":"{model}","stream":{stream},"max_tokens":10,"messages":[]}}"#),
    )
}

async fn send(mock: &MockOpenRouter, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, String) {
    let resp = mock.clone().oneshot(req).await.expect("mock answers");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// Every frame of the body with the paused-time offset (from `start`) at which it came.
async fn frames(mut body: MockBody, start: Instant) -> Vec<(Duration, String)> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = frame.expect("frame").into_data().expect("data frame");
        out.push((start.elapsed(), String::from_utf8(data.to_vec()).unwrap()));
    }
    out
}

/// The frames of a streamed answer to `req`, as text.
async fn stream_texts(mock: &MockOpenRouter, req: Request<Full<Bytes>>) -> Vec<String> {
    let resp = mock.clone().oneshot(req).await.expect("mock answers");
    frames(resp.into_body(), Instant::now())
        .await
        .into_iter()
        .map(|f| f.1)
        .collect()
}

const HEAD: &str = r#""id":"gen-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"a/b","provider":"Mock""#;

fn chunk(content: &str) -> String {
    format!(
        r#"data: {{{HEAD},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"{content}"}},"finish_reason":null,"native_finish_reason":null,"logprobs":null}}]}}

"#
    )
}

fn final_chunk() -> String {
    format!(
        r#"data: {{{HEAD},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":"stop","native_finish_reason":"stop","logprobs":null}}],"usage":{{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":0.00042}}}}

"#
    )
}

fn error_chunk() -> String {
    format!(
        r#"data: {{{HEAD},"error":{{"code":502,"message":"Provider returned error"}},"choices":[{{"index":0,"delta":{{"content":""}},"finish_reason":"error","native_finish_reason":"error"}}]}}

"#
    )
}

const KEEP_ALIVE: &str = ": OPENROUTER PROCESSING\n\n";
const DONE: &str = "data: [DONE]\n\n";

// ---------------------------------------------------------------- bodies and statuses

#[tokio::test]
async fn default_success_is_exact() {
    let mock = MockOpenRouter::new();
    let (status, headers, body) = send(&mock, chat("a/b")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        body,
        r#"{"id":"gen-mock-1","object":"chat.completion","created":1700000000,"model":"a/b","provider":"Mock","choices":[{"index":0,"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","message":{"role":"assistant","content":"Hello from a/b","refusal":null}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":0.00042}}"#
    );
    // The id counts every request.
    let (_, _, body) = send(&mock, chat("c/d")).await;
    assert!(body.starts_with(r#"{"id":"gen-mock-2","#), "{body}");
    assert!(body.contains(r#""content":"Hello from c/d""#));
}

#[tokio::test]
async fn success_modifiers() {
    let mock = MockOpenRouter::new();
    mock.model("a/b").respond(
        Reply::ok_text("say \"hi\"")
            .served_by("x/y")
            .provider("OpenAI")
            .usage(100, 20, 0.5)
            .header("x-extra", "1"),
    );
    let (status, headers, body) = send(&mock, chat("a/b")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-extra"], "1");
    assert_eq!(
        body,
        r#"{"id":"gen-mock-1","object":"chat.completion","created":1700000000,"model":"x/y","provider":"OpenAI","choices":[{"index":0,"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","message":{"role":"assistant","content":"say \"hi\"","refusal":null}}],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"cost":0.5}}"#
    );
}

#[tokio::test]
async fn error_statuses_have_openrouter_bodies() {
    let cases: &[(u16, &str)] = &[
        (400, r#"{"error":{"code":400,"message":"Invalid request"}}"#),
        (
            401,
            r#"{"error":{"code":401,"message":"No auth credentials found"}}"#,
        ),
        (
            402,
            r#"{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/settings/credits"}}"#,
        ),
        (403, r#"{"error":{"code":403,"message":"Forbidden"}}"#),
        (
            404,
            r#"{"error":{"code":404,"message":"No endpoints found for a/b."}}"#,
        ),
        (
            408,
            r#"{"error":{"code":408,"message":"Request timed out","metadata":{"provider_name":"Mock"}}}"#,
        ),
        (
            413,
            r#"{"error":{"code":413,"message":"Payload too large"}}"#,
        ),
        (
            422,
            r#"{"error":{"code":422,"message":"Unprocessable entity"}}"#,
        ),
        (
            429,
            r#"{"error":{"code":429,"message":"Rate limit exceeded","metadata":{"provider_name":"Mock"}}}"#,
        ),
        (
            500,
            r#"{"error":{"code":500,"message":"Internal Server Error"}}"#,
        ),
        (
            502,
            r#"{"error":{"code":502,"message":"Provider returned error","metadata":{"provider_name":"Mock"}}}"#,
        ),
        (
            503,
            r#"{"error":{"code":503,"message":"Service unavailable","metadata":{"provider_name":"Mock"}}}"#,
        ),
        (
            504,
            r#"{"error":{"code":504,"message":"Gateway timeout","metadata":{"provider_name":"Mock"}}}"#,
        ),
        (
            524,
            r#"{"error":{"code":524,"message":"Provider timed out","metadata":{"provider_name":"Mock"}}}"#,
        ),
        (
            529,
            r#"{"error":{"code":529,"message":"Provider overloaded","metadata":{"provider_name":"Mock"}}}"#,
        ),
        (418, r#"{"error":{"code":418,"message":"I'm a teapot"}}"#),
    ];
    for (code, expected) in cases {
        let mock = MockOpenRouter::new();
        mock.model("a/b").respond(Reply::status(*code));
        let (status, headers, body) = send(&mock, chat("a/b")).await;
        assert_eq!(status.as_u16(), *code);
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.get("retry-after").is_none());
        assert_eq!(body, *expected, "status {code}");
    }
}

#[tokio::test]
async fn retry_after_message_and_provider() {
    let mock = MockOpenRouter::new();
    mock.model("a/b").respond(
        Reply::status(429)
            .retry_after(2)
            .provider("BaseTen")
            .message("slow down"),
    );
    let (status, headers, body) = send(&mock, chat("a/b")).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(
        body,
        r#"{"error":{"code":429,"message":"slow down","metadata":{"provider_name":"BaseTen"}}}"#
    );
}

#[tokio::test]
async fn error_body_is_verbatim() {
    let raw = r#"{"error":{"code":400,"message":"bad","metadata":{"raw":"{\"x\":1}"}}}"#;
    let mock = MockOpenRouter::new();
    mock.model("a/b").respond(Reply::error_body(400, raw));
    mock.model("c/d")
        .respond(Reply::error_body(503, "not json at all"));
    assert_eq!(
        send(&mock, chat("a/b")).await,
        (
            StatusCode::BAD_REQUEST,
            {
                let mut h = HeaderMap::new();
                h.insert("content-type", "application/json".parse().unwrap());
                h
            },
            raw.to_owned()
        )
    );
    // Verbatim on /messages too.
    let (status, _, body) = send(&mock, messages("a/b", false)).await;
    assert_eq!((status.as_u16(), body.as_str()), (400, raw));
    let (status, _, body) = send(&mock, chat("c/d")).await;
    assert_eq!((status.as_u16(), body.as_str()), (503, "not json at all"));
}

#[tokio::test]
async fn canned_failures_are_exact() {
    let mock = MockOpenRouter::new();
    mock.model("ctx/m").respond(Reply::context_length());
    mock.model("mod/m")
        .respond(Reply::moderation().provider("OpenAI"));
    mock.model("na/m").respond(Reply::unavailable(3));

    let (status, headers, body) = send(&mock, chat("ctx/m")).await;
    assert_eq!(status, 400);
    assert!(headers.get("retry-after").is_none());
    assert_eq!(
        body,
        r#"{"error":{"code":400,"message":"This endpoint's maximum context length is 131072 tokens. However, you requested about 141607 tokens (10535 of text input, 131072 in the output). Please reduce the length of either one, or use the \"middle-out\" transform to compress your prompt automatically.","metadata":{"provider_name":"Mock"}}}"#
    );

    let (status, _, body) = send(&mock, chat("mod/m")).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        r#"{"error":{"code":403,"message":"mod/m requires moderation on OpenRouter. Your input was flagged for \"violence\".","metadata":{"reasons":["violence"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"mod/m"}}}"#
    );

    let (status, headers, body) = send(&mock, chat("na/m")).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(
        body,
        r#"{"error":{"code":503,"message":"No endpoints available","metadata":{"error_type":"provider_overloaded","provider_code":"529"},"availability":{"code":"temporarily_unavailable","retryable":true,"retry_after":3,"requested_models":["na/m"]}}}"#
    );
}

#[tokio::test]
async fn the_crate_parses_every_canned_error_body() {
    use tower_openrouter::error::ErrorBody;
    let mock = MockOpenRouter::new();
    mock.model("na/m").respond(Reply::unavailable(3));
    mock.model("mod/m").respond(Reply::moderation());
    mock.model("rl/m").respond(Reply::status(429));
    let (_, _, body) = send(&mock, chat("na/m")).await;
    let parsed = ErrorBody::parse(body.as_bytes()).expect("parses");
    assert_eq!(parsed.code_number(), Some(503));
    let availability = parsed.availability.expect("availability");
    assert_eq!(availability.retryable, Some(true));
    assert_eq!(availability.retry_after, Some(Duration::from_secs(3)));
    let (_, _, body) = send(&mock, chat("mod/m")).await;
    let parsed = ErrorBody::parse(body.as_bytes()).expect("parses");
    assert_eq!(parsed.metadata.reasons, vec!["violence".to_owned()]);
    let (_, _, body) = send(&mock, chat("rl/m")).await;
    let parsed = ErrorBody::parse(body.as_bytes()).expect("parses");
    assert_eq!(parsed.provider_name(), Some("Mock"));
    let (_, _, body) = send(&mock, messages("x/y", false)).await;
    assert!(
        ErrorBody::parse(body.as_bytes()).is_none(),
        "a success is no error"
    );
}

#[tokio::test]
async fn two_hundred_with_errors() {
    let mock = MockOpenRouter::new();
    mock.model("a/b")
        .respond(Reply::ok_with_error(429))
        .then(Reply::finish_reason_error());
    let (status, _, body) = send(&mock, chat("a/b")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"id":"gen-mock-1","object":"chat.completion","created":1700000000,"model":"a/b","provider":"Mock","error":{"code":429,"message":"Rate limit exceeded","metadata":{"provider_name":"Mock"}},"choices":[{"index":0,"finish_reason":null,"message":{"role":"assistant","content":null}}]}"#
    );
    let (status, _, body) = send(&mock, chat("a/b")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"id":"gen-mock-2","object":"chat.completion","created":1700000000,"model":"a/b","provider":"Mock","choices":[{"index":0,"logprobs":null,"finish_reason":"error","native_finish_reason":"error","message":{"role":"assistant","content":"","refusal":null},"error":{"code":502,"message":"Provider returned error","metadata":{"provider_name":"Mock"}}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":0.00042}}"#
    );
}

#[tokio::test]
async fn messages_endpoint_shapes() {
    let mock = MockOpenRouter::new();
    mock.model("anthropic/claude")
        .respond(Reply::ok_text("hey"))
        .then(Reply::status(529))
        .then(Reply::status(503))
        .then(Reply::status(429))
        .then(Reply::unavailable(1))
        .then(Reply::ok_with_error(500));
    let m = "anthropic/claude";
    let (status, _, body) = send(&mock, messages(m, false)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"id":"msg_mock_1","type":"message","role":"assistant","model":"anthropic/claude","provider":"Mock","content":[{"type":"text","text":"hey"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":5,"cost":0.00042}}"#
    );
    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    assert_eq!(send(&mock, messages(m, false)).await.2, overloaded, "529");
    assert_eq!(send(&mock, messages(m, false)).await.2, overloaded, "503");
    assert_eq!(
        send(&mock, messages(m, false)).await.2,
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"Rate limit exceeded"}}"#
    );
    let (status, headers, body) = send(&mock, messages(m, false)).await;
    assert_eq!(
        (status.as_u16(), headers["retry-after"].to_str().unwrap()),
        (503, "1")
    );
    assert_eq!(body, overloaded);
    let (status, _, body) = send(&mock, messages(m, false)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"type":"error","error":{"type":"api_error","message":"Internal Server Error"}}"#
    );
}

#[tokio::test(start_paused = true)]
async fn messages_streams_are_exact() {
    let mock = MockOpenRouter::new();
    mock.model("a/b")
        .respond(Reply::stream(["Hel", "lo"]).keep_alives(1))
        .then(Reply::stream(["Hel", "lo"]).error_after(1).error_code(529))
        .then(Reply::stream(["x"]).without_done());
    let start = Instant::now();
    let resp = mock.clone().oneshot(messages("a/b", true)).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let got: Vec<String> = frames(resp.into_body(), start)
        .await
        .into_iter()
        .map(|f| f.1)
        .collect();
    let start_ev = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_mock_1","type":"message","role":"assistant","model":"a/b","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":0}}}

"#;
    let block_start = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    let delta = |t: &str| {
        format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{t}\"}}}}\n\n")
    };
    let block_stop =
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n";
    let message_delta = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":5,\"cost\":0.00042}}\n\n";
    let stop = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    assert_eq!(
        got,
        vec![
            KEEP_ALIVE.to_owned(),
            start_ev.to_owned(),
            block_start.to_owned(),
            delta("Hel"),
            delta("lo"),
            block_stop.to_owned(),
            message_delta.to_owned(),
            stop.to_owned(),
        ]
    );

    let got = stream_texts(&mock, messages("a/b", true)).await;
    assert_eq!(got.len(), 4);
    assert_eq!(got[2], delta("Hel"));
    assert_eq!(
        got[3],
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Provider overloaded\"}}\n\n"
    );

    let resp = mock.clone().oneshot(messages("a/b", true)).await.unwrap();
    let got = frames(resp.into_body(), start).await;
    assert_eq!(got.last().unwrap().1, message_delta);
}

// ---------------------------------------------------------------- bad requests

#[tokio::test]
async fn requests_the_script_never_sees() {
    let mock = MockOpenRouter::new();
    mock.model("a/b").respond(Reply::status(500));
    let (status, _, body) = send(&mock, post("/api/v1/chat/completions", "{not json")).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        r#"{"error":{"code":400,"message":"Invalid JSON body"}}"#
    );
    let (status, _, body) = send(
        &mock,
        post("/api/v1/chat/completions", r#"{"messages":[]}"#),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        r#"{"error":{"code":400,"message":"Missing required parameter: 'model'"}}"#
    );
    let (status, _, body) = send(&mock, post("/api/v1/chat/completions", r#"{"model":42}"#)).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (
            400,
            r#"{"error":{"code":400,"message":"Invalid JSON body"}}"#
        )
    );
    let (status, _, body) = send(&mock, post("/api/v1/messages", r#"{"model":""}"#)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"Missing required parameter: 'model'"}}"#
    );
    let (status, _, body) = send(&mock, post("/api/v1/models", r#"{"model":"a/b"}"#)).await;
    assert_eq!(status, 404);
    assert_eq!(body, r#"{"error":{"code":404,"message":"Not Found"}}"#);
    let get = Request::get("/api/v1/chat/completions")
        .body(Full::new(Bytes::from_static(br#"{"model":"a/b"}"#)))
        .unwrap();
    let (status, _, body) = send(&mock, get).await;
    assert_eq!(status, 405);
    assert_eq!(
        body,
        r#"{"error":{"code":405,"message":"Method Not Allowed"}}"#
    );

    assert_eq!(mock.total_calls(), 6);
    assert_eq!(mock.calls("a/b"), 0, "none reached the script");
    assert!(mock.calls_by_model().is_empty());
    assert_eq!(mock.requests().len(), 6);
    assert_eq!(mock.requests()[4].model(), Some("a/b"));
    // The script was not consumed.
    assert_eq!(send(&mock, chat("a/b")).await.0, 500);
}

// ---------------------------------------------------------------- scripts

#[tokio::test]
async fn sequences_then_default() {
    let mock = MockOpenRouter::new();
    mock.model("a/b")
        .respond(Reply::status(429))
        .times(2)
        .then(Reply::status(500))
        .then(Reply::status(502))
        .times(2);
    let mut got = Vec::new();
    for _ in 0..7 {
        got.push(send(&mock, chat("a/b")).await.0.as_u16());
    }
    assert_eq!(got, [429, 429, 500, 502, 502, 200, 200]);

    // The last step without times() answers forever.
    mock.model("c/d")
        .respond(Reply::status(429))
        .once()
        .then(Reply::status(503));
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(send(&mock, chat("c/d")).await.0.as_u16());
    }
    assert_eq!(got, [429, 503, 503, 503]);

    // times(0) skips a step; respond() restarts the script.
    mock.model("c/d")
        .respond(Reply::status(400))
        .times(0)
        .then(Reply::status(401))
        .once();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(send(&mock, chat("c/d")).await.0.as_u16());
    }
    assert_eq!(got, [401, 200]);
}

#[tokio::test]
async fn default_reply_applies_to_unscripted_and_exhausted() {
    let mock = MockOpenRouter::new();
    mock.default_reply(Reply::status(404));
    mock.model("a/b").respond(Reply::ok()).once();
    assert_eq!(send(&mock, chat("a/b")).await.0, 200);
    assert_eq!(send(&mock, chat("a/b")).await.0, 404);
    assert_eq!(send(&mock, chat("z/z")).await.0, 404);
}

#[test]
#[should_panic(expected = "times() must follow respond() or then()")]
fn times_without_a_step_panics() {
    MockOpenRouter::new().model("a/b").times(2);
}

#[test]
#[should_panic(expected = "1000 is not a valid HTTP status")]
fn invalid_status_panics() {
    let _ = Reply::status(1000);
}

// ---------------------------------------------------------------- time

#[tokio::test(start_paused = true)]
async fn delays_are_exact() {
    let mock = MockOpenRouter::new();
    mock.model("a/b").respond(Reply::delay(
        Duration::from_secs(5),
        Reply::delay(Duration::from_millis(250), Reply::status(503)),
    ));
    let start = Instant::now();
    let resp = mock.clone().oneshot(chat("a/b")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(5250));
    assert_eq!(resp.status(), 503);
    // A request is counted when it arrives, not when it is answered.
    let fut = mock.clone().oneshot(chat("a/b"));
    assert_eq!(mock.calls("a/b"), 1, "oneshot has not called yet");
    let mut fut = tokio_test_spawn(fut);
    tokio::task::yield_now().await;
    assert_eq!(mock.calls("a/b"), 2);
    assert!(!fut.is_finished());
    tokio::time::sleep(Duration::from_millis(5249)).await;
    assert!(!fut.is_finished());
    tokio::time::sleep(Duration::from_millis(1)).await;
    tokio::task::yield_now().await;
    assert!(fut.is_finished());
    assert_eq!((&mut fut).await.unwrap().unwrap().status(), 503);
}

fn tokio_test_spawn<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(f)
}

#[tokio::test(start_paused = true)]
async fn hang_never_answers_then_script_moves_on() {
    let mock = MockOpenRouter::new();
    mock.model("a/b").respond(Reply::hang()).once();
    let start = Instant::now();
    let res =
        tokio::time::timeout(Duration::from_secs(3600), mock.clone().oneshot(chat("a/b"))).await;
    assert!(res.is_err(), "still pending after an hour");
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
    assert_eq!(send(&mock, chat("a/b")).await.0, 200);
    assert_eq!(mock.calls("a/b"), 2);
}

#[tokio::test]
async fn disconnect_is_a_transport_error() {
    let mock = MockOpenRouter::new();
    mock.model("a/b").respond(Reply::disconnect());
    let err = mock.clone().oneshot(chat("a/b")).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(mock.calls("a/b"), 1);
}

// ---------------------------------------------------------------- streams

#[tokio::test(start_paused = true)]
async fn ok_streams_when_asked() {
    let mock = MockOpenRouter::new();
    let start = Instant::now();
    let resp = mock.clone().oneshot(chat_stream("a/b")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let got = frames(resp.into_body(), start).await;
    let expected = [chunk("Hello from a/b"), final_chunk(), DONE.to_owned()];
    assert_eq!(
        got,
        expected
            .iter()
            .map(|s| (Duration::ZERO, s.clone()))
            .collect::<Vec<_>>()
    );
    assert!(mock.requests()[0].is_stream());
}

#[tokio::test(start_paused = true)]
async fn stream_timing_is_exact() {
    let mock = MockOpenRouter::new();
    mock.model("a/b").respond(
        Reply::stream(["Hel", "lo"])
            .keep_alives(2)
            .chunk_delay(Duration::from_millis(100))
            .first_token_delay(Duration::from_secs(2)),
    );
    let start = Instant::now();
    let resp = mock.clone().oneshot(chat_stream("a/b")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "headers come at once");
    let got = frames(resp.into_body(), start).await;
    let ms = Duration::from_millis;
    assert_eq!(
        got,
        vec![
            (ms(100), KEEP_ALIVE.to_owned()),
            (ms(200), KEEP_ALIVE.to_owned()),
            (ms(2300), chunk("Hel")),
            (ms(2400), chunk("lo")),
            (ms(2500), final_chunk()),
            (ms(2600), DONE.to_owned()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn stream_error_after_n_chunks() {
    let mock = MockOpenRouter::new();
    mock.model("a/b")
        .respond(Reply::stream(["a", "b", "c"]).error_after(2))
        .then(Reply::stream(["a"]).error_after(5)); // past the end: after all chunks
    let start = Instant::now();
    let got = stream_texts(&mock, chat_stream("a/b")).await;
    assert_eq!(got, vec![chunk("a"), chunk("b"), error_chunk()]);

    let resp = mock.clone().oneshot(chat_stream("a/b")).await.unwrap();
    let got: Vec<String> = frames(resp.into_body(), start)
        .await
        .into_iter()
        .map(|f| f.1.replace("gen-mock-2", "gen-mock-1"))
        .collect();
    assert_eq!(got, vec![chunk("a"), error_chunk()]);
}

#[tokio::test(start_paused = true)]
async fn finish_reason_error_streams_as_an_error_chunk() {
    let mock = MockOpenRouter::new();
    mock.model("a/b")
        .respond(Reply::finish_reason_error().keep_alives(1));
    let got = stream_texts(&mock, chat_stream("a/b")).await;
    assert_eq!(got, vec![KEEP_ALIVE.to_owned(), error_chunk()]);
}

#[tokio::test(start_paused = true)]
async fn stream_without_done() {
    let mock = MockOpenRouter::new();
    mock.model("a/b")
        .respond(Reply::stream(["x"]).without_done());
    let got = stream_texts(&mock, chat_stream("a/b")).await;
    assert_eq!(got, vec![chunk("x"), final_chunk()]);
}

#[tokio::test(start_paused = true)]
async fn stream_stall_after_n_chunks() {
    let mock = MockOpenRouter::new();
    mock.model("a/b")
        .respond(Reply::stream(["x", "y"]).keep_alives(1).stall_after(1));
    let resp = mock.clone().oneshot(chat_stream("a/b")).await.unwrap();
    let mut body = resp.into_body();
    let start = Instant::now();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, KEEP_ALIVE);
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, chunk("x"));
    assert!(!http_body::Body::is_end_stream(&body));
    let stalled = tokio::time::timeout(Duration::from_secs(600), body.frame()).await;
    assert!(stalled.is_err(), "no frame and no end");
    assert_eq!(start.elapsed(), Duration::from_secs(600));
}

#[tokio::test(start_paused = true)]
async fn stream_abort_after_n_chunks() {
    let mock = MockOpenRouter::new();
    mock.model("a/b")
        .respond(Reply::stream(["x", "y"]).abort_after(1));
    let resp = mock.clone().oneshot(chat_stream("a/b")).await.unwrap();
    let mut body = resp.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        chunk("x")
    );
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(body.frame().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn stream_replies_to_non_stream_requests() {
    let mock = MockOpenRouter::new();
    mock.model("a/b")
        .respond(Reply::stream(["Hel", "lo"]))
        .then(Reply::stream(["Hel", "lo"]).error_after(1))
        .then(Reply::stream(["x"]).stall_after(0))
        .then(Reply::stream(["x"]).abort_after(0))
        .then(Reply::stream(["x"]).force_stream());
    let (_, headers, body) = send(&mock, chat("a/b")).await;
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        body.contains(r#""message":{"role":"assistant","content":"Hello","refusal":null}"#),
        "{body}"
    );
    let (status, _, body) = send(&mock, chat("a/b")).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""finish_reason":"error","native_finish_reason":"error","message":{"role":"assistant","content":"Hel","refusal":null},"error":{"code":502"#), "{body}");
    let hung =
        tokio::time::timeout(Duration::from_secs(60), mock.clone().oneshot(chat("a/b"))).await;
    assert!(hung.is_err());
    let err = mock.clone().oneshot(chat("a/b")).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let resp = mock.clone().oneshot(chat("a/b")).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let got = frames(resp.into_body(), Instant::now()).await;
    assert_eq!(got.last().unwrap().1, DONE);
}

#[tokio::test]
async fn errors_answer_stream_requests_as_plain_http_errors() {
    let mock = MockOpenRouter::new();
    mock.model("a/b").respond(Reply::status(429).retry_after(1));
    let (status, headers, body) = send(&mock, chat_stream("a/b")).await;
    assert_eq!(status, 429);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["retry-after"], "1");
    assert!(body.starts_with(r#"{"error":{"code":429"#));
}

// ---------------------------------------------------------------- randomness

async fn statuses(mock: &MockOpenRouter, model: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let resp = mock.clone().oneshot(chat(model)).await.unwrap();
        out.push(resp.status().as_u16());
    }
    out
}

#[tokio::test]
async fn fail_rate_is_seeded_and_accurate() {
    let a = MockOpenRouter::new();
    let b = MockOpenRouter::new();
    let c = MockOpenRouter::new();
    a.model("m/x")
        .respond(Reply::fail_rate(0.3, Reply::status(503), 7));
    b.model("m/x")
        .respond(Reply::fail_rate(0.3, Reply::status(503), 7));
    c.model("m/x")
        .respond(Reply::fail_rate(0.3, Reply::status(503), 8));
    let sa = statuses(&a, "m/x", 10_000).await;
    let sb = statuses(&b, "m/x", 10_000).await;
    let sc = statuses(&c, "m/x", 10_000).await;
    assert_eq!(sa, sb, "same seed, same sequence");
    assert_ne!(sa, sc, "another seed, another sequence");
    for s in [&sa, &sc] {
        let failures = s.iter().filter(|&&x| x == 503).count();
        assert!(s.iter().all(|&x| x == 503 || x == 200));
        // 0.3 * 10_000 = 3000, sd ~ 46: allow about 4.5 sd.
        assert!((2790..=3210).contains(&failures), "{failures} failures");
    }
    // A clone of a reply continues independently from the same state.
    let r = Reply::fail_rate(0.5, Reply::status(500), 99);
    let d = MockOpenRouter::new();
    d.model("one/m").respond(r.clone());
    d.model("two/m").respond(r);
    assert_eq!(
        statuses(&d, "one/m", 200).await,
        statuses(&d, "two/m", 200).await
    );
}

#[tokio::test]
async fn random_picks_between_two_replies() {
    let mock = MockOpenRouter::new();
    mock.model("m/x")
        .respond(Reply::random(0.5, Reply::status(429), Reply::status(503), 1).retry_after(4));
    let s = statuses(&mock, "m/x", 1000).await;
    let n429 = s.iter().filter(|&&x| x == 429).count();
    assert_eq!(n429 + s.iter().filter(|&&x| x == 503).count(), 1000);
    assert!((430..=570).contains(&n429), "{n429}");
    // Modifiers reach both branches.
    let (_, headers, _) = send(&mock, chat("m/x")).await;
    assert_eq!(headers["retry-after"], "4");
}

#[test]
#[should_panic(expected = "probability 1.5 is not within 0.0..=1.0")]
fn bad_probability_panics() {
    let _ = Reply::fail_rate(1.5, Reply::hang(), 0);
}

// ---------------------------------------------------------------- inspection

#[tokio::test]
async fn counters_requests_and_reset() {
    let mock = MockOpenRouter::new();
    let clone = mock.clone();
    send(&mock, chat("a/b")).await;
    send(&clone, chat("a/b")).await;
    send(&mock, chat_stream("c/d")).await;
    assert_eq!(mock.calls("a/b"), 2);
    assert_eq!(clone.calls("c/d"), 1);
    assert_eq!(mock.calls("nobody/m"), 0);
    assert_eq!(mock.total_calls(), 3);
    assert_eq!(
        mock.calls_by_model().into_iter().collect::<Vec<_>>(),
        vec![("a/b".to_owned(), 2), ("c/d".to_owned(), 1)]
    );
    let bodies = mock.bodies("a/b");
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        bodies[0],
        Bytes::from_static(br#"{"model":"a/b","messages":[{"role":"user","content":"hi"}]}"#)
    );
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].model(), Some("c/d"));
    assert!(reqs[2].is_stream());
    assert!(!reqs[0].is_stream());
    assert_eq!(reqs[0].method(), http::Method::POST);
    assert_eq!(reqs[0].uri().path(), "/api/v1/chat/completions");
    assert_eq!(reqs[0].headers()["authorization"], "Bearer sk-or-secret");
    assert_eq!(reqs[0].body(), &bodies[0]);

    // Debug shows neither the key nor the body.
    let debug = format!("{:?} {:?}", reqs[0], mock);
    assert!(!debug.contains("sk-or-secret"), "{debug}");
    assert!(!debug.contains("\"hi\""), "{debug}");
    assert!(debug.contains("<redacted>"));

    mock.reset();
    assert_eq!(mock.total_calls(), 0);
    assert_eq!(mock.calls("a/b"), 0);
    assert!(mock.requests().is_empty());
    let (_, _, body) = send(&mock, chat("a/b")).await;
    assert!(body.starts_with(r#"{"id":"gen-mock-1","#));
}

/// Request `i` of the bound tests: models alternate `a/b` (even) and `c/d` (odd).
fn numbered(i: usize) -> (String, Request<Full<Bytes>>) {
    let model = if i % 2 == 0 { "a/b" } else { "c/d" };
    let body = format!(r#"{{"model":"{model}","messages":[],"n":{i}}}"#);
    (body.clone(), post("/api/v1/chat/completions", &body))
}

fn body_strings(bodies: impl IntoIterator<Item = Bytes>) -> Vec<String> {
    bodies
        .into_iter()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn keep_requests_keeps_the_last_n_and_counters_stay_exact() {
    let mock = MockOpenRouter::new();
    mock.keep_requests(3);
    let mut sent = Vec::new();
    let mut last = String::new();
    for i in 0..10 {
        let (body, req) = numbered(i);
        sent.push(body);
        last = send(&mock, req).await.2;
    }
    // The numbering counts every request, kept or not.
    assert!(last.starts_with(r#"{"id":"gen-mock-10","#), "{last}");

    let kept = body_strings(mock.requests().into_iter().map(|r| r.body().clone()));
    assert_eq!(kept, sent[7..].to_vec());
    assert_eq!(
        mock.requests()
            .iter()
            .map(|r| r.model().unwrap().to_owned())
            .collect::<Vec<_>>(),
        ["c/d", "a/b", "c/d"]
    );
    assert_eq!(mock.calls("a/b"), 5);
    assert_eq!(mock.calls("c/d"), 5);
    assert_eq!(mock.total_calls(), 10);
    assert_eq!(
        mock.calls_by_model().into_iter().collect::<Vec<_>>(),
        vec![("a/b".to_owned(), 5), ("c/d".to_owned(), 5)]
    );
    // `bodies` is the kept requests of that model, in order.
    assert_eq!(body_strings(mock.bodies("a/b")), [sent[8].clone()]);
    assert_eq!(
        body_strings(mock.bodies("c/d")),
        [sent[7].clone(), sent[9].clone()]
    );

    // Requests the script never sees count against the bound too.
    send(&mock, post("/api/v1/models", "{}")).await;
    assert_eq!(mock.total_calls(), 11);
    let kept: Vec<_> = mock
        .requests()
        .iter()
        .map(|r| r.uri().path().to_owned())
        .collect();
    assert_eq!(
        kept,
        [
            "/api/v1/chat/completions",
            "/api/v1/chat/completions",
            "/api/v1/models"
        ]
    );
    assert_eq!(body_strings(mock.bodies("c/d")), [sent[9].clone()]);

    // reset() forgets the requests but keeps the bound.
    mock.reset();
    assert!(mock.requests().is_empty());
    for i in 0..5 {
        send(&mock, numbered(i).1).await;
    }
    assert_eq!(
        body_strings(mock.requests().into_iter().map(|r| r.body().clone())),
        sent[2..5].to_vec()
    );
    assert_eq!(mock.total_calls(), 5);
}

#[tokio::test]
async fn keep_requests_default_keeps_all_and_lowering_drops_the_oldest() {
    let mock = MockOpenRouter::new();
    let mut sent = Vec::new();
    for i in 0..10 {
        let (body, req) = numbered(i);
        sent.push(body);
        send(&mock, req).await;
    }
    // Default: everything is kept.
    assert_eq!(
        body_strings(mock.requests().into_iter().map(|r| r.body().clone())),
        sent
    );
    // Lowering the bound drops the oldest at once.
    mock.keep_requests(2);
    assert_eq!(
        body_strings(mock.requests().into_iter().map(|r| r.body().clone())),
        sent[8..].to_vec()
    );
    // Zero keeps none; the counters go on.
    mock.keep_requests(0);
    assert!(mock.requests().is_empty());
    send(&mock, chat("a/b")).await;
    assert!(mock.requests().is_empty());
    assert!(mock.bodies("a/b").is_empty());
    assert_eq!(mock.calls("a/b"), 6);
    assert_eq!(mock.total_calls(), 11);
}

#[tokio::test]
async fn reset_keeps_scripts_and_their_progress() {
    let mock = MockOpenRouter::new();
    mock.model("a/b")
        .respond(Reply::status(429))
        .once()
        .then(Reply::status(500))
        .once();
    assert_eq!(send(&mock, chat("a/b")).await.0, 429);
    mock.reset();
    assert_eq!(send(&mock, chat("a/b")).await.0, 500);
    assert_eq!(send(&mock, chat("a/b")).await.0, 200);
    assert_eq!(mock.calls("a/b"), 2);
}

#[tokio::test]
async fn size_hints_are_exact_for_json_only() {
    let mock = MockOpenRouter::new();
    let resp = mock.clone().oneshot(chat("a/b")).await.unwrap();
    let hint = http_body::Body::size_hint(resp.body()).exact();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(hint, Some(body.len() as u64));
    // Streams never announce a length (they go out chunked, like OpenRouter's).
    let resp = mock.clone().oneshot(chat_stream("s/s")).await.unwrap();
    assert_eq!(http_body::Body::size_hint(resp.body()).exact(), None);
}

// ---------------------------------------------------------------- loopback

mod loopback {
    use super::*;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

    fn client() -> HttpClient {
        Client::builder(TokioExecutor::new()).build_http()
    }

    fn req(url: &str, body: &str) -> Request<Full<Bytes>> {
        Request::post(format!("{url}/chat/completions"))
            .header("authorization", "Bearer sk-or-secret")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    #[tokio::test]
    async fn success_and_errors_over_http() {
        let mock = MockOpenRouter::new();
        mock.model("a/b")
            .respond(Reply::status(429).retry_after(2))
            .once();
        let server = mock.serve().await.unwrap();
        assert!(server.addr().ip().is_loopback());
        assert_eq!(server.url(), format!("http://{}/api/v1", server.addr()));
        let client = client();

        let resp = client
            .request(req(&server.url(), r#"{"model":"a/b"}"#))
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            r#"{"error":{"code":429,"message":"Rate limit exceeded","metadata":{"provider_name":"Mock"}}}"#
        );

        let resp = client
            .request(req(&server.url(), r#"{"model":"a/b"}"#))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let len: usize = resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), len);
        assert_eq!(
            body,
            r#"{"id":"gen-mock-2","object":"chat.completion","created":1700000000,"model":"a/b","provider":"Mock","choices":[{"index":0,"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","message":{"role":"assistant","content":"Hello from a/b","refusal":null}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":0.00042}}"#
        );

        assert_eq!(mock.calls("a/b"), 2);
        let received = mock.requests();
        assert_eq!(received[0].uri().path(), "/api/v1/chat/completions");
        assert_eq!(
            received[0].headers()["authorization"],
            "Bearer sk-or-secret"
        );
        assert_eq!(
            mock.bodies("a/b")[1],
            Bytes::from_static(br#"{"model":"a/b"}"#)
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn streams_are_byte_exact_over_http() {
        let mock = MockOpenRouter::new();
        mock.model("a/b")
            .respond(Reply::stream(["Hel", "lo"]).keep_alives(2))
            .then(Reply::stream(["Hel", "lo"]).error_after(1));
        let server = mock.serve().await.unwrap();
        let client = client();
        let resp = client
            .request(req(&server.url(), r#"{"model":"a/b","stream":true}"#))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["transfer-encoding"], "chunked");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let expected = [
            KEEP_ALIVE.to_owned(),
            KEEP_ALIVE.to_owned(),
            chunk("Hel"),
            chunk("lo"),
            final_chunk(),
            DONE.to_owned(),
        ]
        .concat();
        assert_eq!(String::from_utf8(body.to_vec()).unwrap(), expected);

        let resp = client
            .request(req(&server.url(), r#"{"model":"a/b","stream":true}"#))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let expected = [chunk("Hel"), error_chunk()]
            .concat()
            .replace("gen-mock-1", "gen-mock-2");
        assert_eq!(String::from_utf8(body.to_vec()).unwrap(), expected);
        drop(server);
    }

    #[tokio::test]
    async fn transport_failures_over_http() {
        let mock = MockOpenRouter::new();
        mock.model("gone/m").respond(Reply::disconnect());
        mock.model("cut/m")
            .respond(Reply::stream(["x", "y"]).abort_after(1));
        let server = mock.serve().await.unwrap();
        let client = client();
        let err = client
            .request(req(&server.url(), r#"{"model":"gone/m"}"#))
            .await
            .unwrap_err();
        assert!(
            !err.is_connect(),
            "the connection was made, then dropped: {err:?}"
        );

        let resp = client
            .request(req(&server.url(), r#"{"model":"cut/m","stream":true}"#))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            first,
            chunk("x")
                .replace("gen-mock-1", "gen-mock-2")
                .replace("a/b", "cut/m")
        );
        let rest = body.collect().await;
        assert!(rest.is_err(), "the body fails instead of ending");
        assert_eq!(mock.calls("gone/m"), 1);
        assert_eq!(mock.calls("cut/m"), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bad_requests_over_http() {
        let mock = MockOpenRouter::new();
        let server = mock.serve().await.unwrap();
        let client = client();
        let resp = client.request(req(&server.url(), "nope")).await.unwrap();
        assert_eq!(resp.status(), 400);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            r#"{"error":{"code":400,"message":"Invalid JSON body"}}"#
        );
        assert_eq!(mock.total_calls(), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn oversized_bodies_get_413() {
        let mock = MockOpenRouter::new();
        let server = mock.serve().await.unwrap();
        let big = format!(
            r#"{{"model":"a/b","pad":"{}"}}"#,
            "x".repeat(16 * 1024 * 1024)
        );
        let resp = client().request(req(&server.url(), &big)).await.unwrap();
        assert_eq!(resp.status(), 413);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            r#"{"error":{"code":413,"message":"Payload too large"}}"#
        );
        assert_eq!(mock.total_calls(), 0, "never reached the script");
        // A large body under the limit is fine.
        let fits = format!(r#"{{"model":"a/b","pad":"{}"}}"#, "x".repeat(1024 * 1024));
        let resp = client().request(req(&server.url(), &fits)).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(mock.bodies("a/b")[0].len(), fits.len());
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_drop_too() {
        let mock = MockOpenRouter::new();
        let client = client();
        let server = mock.serve().await.unwrap();
        let url = server.url();
        server.shutdown().await;
        let err = client
            .request(req(&url, r#"{"model":"a/b"}"#))
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");

        let server = mock.serve().await.unwrap();
        let url = server.url();
        drop(server);
        // The accept loop winds down in the background; give it a few turns.
        let mut refused = false;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if let Err(e) = client.request(req(&url, r#"{"model":"a/b"}"#)).await {
                refused = e.is_connect();
                break;
            }
        }
        assert!(refused);
        assert_eq!(mock.total_calls(), 0);
    }

    #[tokio::test]
    async fn refuses_non_loopback_listeners() {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let err = MockOpenRouter::new().serve_listener(listener).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = MockOpenRouter::new().serve_listener(listener).unwrap();
        assert_eq!(server.addr(), addr);
    }

    #[tokio::test]
    async fn hanging_request_does_not_block_others() {
        let mock = MockOpenRouter::new();
        mock.model("h/m").respond(Reply::hang());
        let server = mock.serve().await.unwrap();
        let client = client();
        let hung = tokio::spawn({
            let client = client.clone();
            let url = server.url();
            async move { client.request(req(&url, r#"{"model":"h/m"}"#)).await }
        });
        let resp = client
            .request(req(&server.url(), r#"{"model":"a/b"}"#))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(!hung.is_finished());
        hung.abort();
        drop(server);
    }
}
